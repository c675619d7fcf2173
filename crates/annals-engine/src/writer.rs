//! The single writer and its sync thread: group commit with optimistic concurrency and idempotent
//! retries.
//!
//! The writer thread takes requests as they arrive, checks each against the stream heads it knows
//! (including batches still syncing), assigns revisions and dense positions, and encodes one
//! commit record per request into a batch of its own, then appends that to the open batch (up to
//! [`BATCH_APPENDS_MAX`] requests and [`BATCH_BYTES_MAX`] bytes) under the hand-over lock, which
//! is therefore only held for a copy. The sync thread takes the open batch the moment it is free, writes
//! it with one write and `fdatasync`s it; everything that arrived meanwhile, already checked,
//! forms the next batch. So batches grow with load, and only one batch is ever written but not
//! durable (within [`annals_log::UNSYNCED_BATCHES_MAX`]).
//!
//! Right after the sync the same thread stages the batch in the index (in memory, visible to
//! reads), publishes the new head and only then answers every request of the batch (failures
//! too, so no answer depends on state that might not become durable). While batch N is synced and
//! indexed, N + 1 is gathered. Indexing on the sync thread rather than on a thread of its own
//! costs ~70 µs per batch on the sync path but saves a thread hand-off per batch, which on a
//! 2-core machine took longer: 64 writers got ~30% more appends per second (docs/benchmarks.md).
//! A failed write or sync stops the engine: after an fsync error nothing since the last good sync
//! can be trusted.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use annals_core::{
    AppendResult, DomainError, EventType, ExpectedRevision, METADATA_EVENT_TYPE, NewEvent,
    Position, Revision, StreamMetadata, StreamName, TOMBSTONE_EVENT_TYPE, Timestamp,
};
use annals_index::{
    Index, IndexBatch, IndexCheckpoint, IndexError, IndexRecord, KnownStream, RedbIndex,
};
use annals_log::codec::{RecordKind, encode_commit};
use annals_log::{BATCH_BYTES_MAX, Log, LogWriter, SyncTicket};
use bytes::Bytes;
use parking_lot::{Condvar, Mutex, RwLock};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::config::{BATCH_APPENDS_MAX, Durability};
use crate::error::EngineError;
use crate::head::Head;
use crate::rules::{MetaMap, MetaState};

pub(crate) type Reply = oneshot::Sender<Result<AppendResult, EngineError>>;

/// What a request asks the writer to do to `stream`.
#[derive(Debug)]
pub(crate) enum WriteKind {
    Append(Vec<NewEvent>),
    /// Write `$tb = i64::MAX` to the stream's metadata.
    SoftDelete,
    Tombstone,
}

#[derive(Debug)]
pub(crate) struct WriteRequest {
    pub(crate) stream: StreamName,
    pub(crate) expected: ExpectedRevision,
    pub(crate) kind: WriteKind,
    pub(crate) reply: Reply,
}

impl WriteRequest {
    /// An upper bound of the bytes this request adds to a batch.
    fn encoded_bytes_max(&self) -> usize {
        let name = self.stream.as_str().len() + 2;
        let events = match &self.kind {
            WriteKind::Append(events) => events.iter().map(|e| e.size_bytes() + 28).sum(),
            WriteKind::SoftDelete | WriteKind::Tombstone => 4_096,
        };
        // Room for an undelete metadata record written ahead of the events.
        2 * (16 + 34 + name) + events + 4_096
    }
}

/// What the writer knows of a stream.
#[derive(Clone, Copy, Debug)]
struct StreamState {
    /// The index's id for the stream; `None` until its first record is encoded.
    id: Option<u64>,
    next_revision: u64,
    last_position: u64,
    tombstoned: bool,
}

impl StreamState {
    const NEW: StreamState = StreamState {
        id: None,
        next_revision: 0,
        last_position: 0,
        tombstoned: false,
    };

    fn current(&self) -> Option<u64> {
        self.next_revision.checked_sub(1)
    }
}

/// Where an event id was written, for idempotent retries.
#[derive(Clone, Debug)]
struct IdPlace {
    stream: Arc<str>,
    revision: u64,
    position: u64,
}

/// One batch on its way to durability.
pub(crate) struct SyncJob {
    ticket: Option<SyncTicket>,
    index: IndexBatch,
    replies: Vec<(Reply, Result<AppendResult, EngineError>)>,
    last_position: Position,
    meta_updates: Vec<(Arc<str>, Arc<MetaState>)>,
}

impl SyncJob {
    fn new(last_position: Position) -> Self {
        Self {
            ticket: None,
            index: IndexBatch::default(),
            replies: Vec::new(),
            last_position,
            meta_updates: Vec::new(),
        }
    }
}

/// The batch the writer fills while the sync thread writes and syncs the previous one.
#[derive(Default)]
pub(crate) struct OpenBatch {
    buf: Vec<u8>,
    job: Option<SyncJob>,
    /// No more requests fit (the writer's own batch): hand it over before taking more.
    full: bool,
    /// The writer has stopped; the sync thread drains and ends.
    closed: bool,
}

impl OpenBatch {
    /// Whether `other` can be appended: this batch is empty, or both fit in one batch.
    fn takes(&self, other: &OpenBatch) -> bool {
        let (Some(mine), Some(theirs)) = (&self.job, &other.job) else {
            return true;
        };
        self.buf.len() + other.buf.len() <= BATCH_BYTES_MAX
            && mine.replies.len() + theirs.replies.len() <= BATCH_APPENDS_MAX
    }

    /// Appends `other`'s records and answers (leaving it empty), shifting its record addresses,
    /// which are offsets into its own buffer, past this batch's bytes.
    fn absorb(&mut self, other: &mut OpenBatch) {
        other.full = false;
        let Some(mut theirs) = other.job.take() else {
            return;
        };
        let Some(mine) = &mut self.job else {
            std::mem::swap(&mut self.buf, &mut other.buf);
            self.job = Some(theirs);
            return;
        };
        let base = self.buf.len() as u64;
        for r in &mut theirs.index.records {
            r.address += base;
        }
        self.buf.append(&mut other.buf);
        mine.index.records.append(&mut theirs.index.records);
        mine.replies.append(&mut theirs.replies);
        mine.meta_updates.append(&mut theirs.meta_updates);
        mine.last_position = theirs.last_position;
    }
}

/// Hand-over point between the writer and the sync thread.
#[derive(Default)]
pub(crate) struct BatchSlot {
    state: Mutex<OpenBatch>,
    changed: Condvar,
}

impl std::fmt::Debug for BatchSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchSlot").finish_non_exhaustive()
    }
}

/// State shared between the engine and its two threads.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) log: Arc<Log>,
    pub(crate) index: Arc<RedbIndex>,
    pub(crate) head: Head,
    /// Published metadata: what readers apply.
    pub(crate) meta: RwLock<MetaMap>,
    /// Set when the engine stopped taking writes, with the reason.
    pub(crate) stopped: Mutex<Option<String>>,
    pub(crate) has_stopped: AtomicBool,
}

impl Shared {
    pub(crate) fn stop(&self, reason: String) {
        let mut s = self.stopped.lock();
        if s.is_none() {
            tracing::error!(%reason, "engine stopped taking writes");
            *s = Some(reason);
        }
        self.has_stopped.store(true, Ordering::Release);
    }

    pub(crate) fn stopped_error(&self) -> EngineError {
        EngineError::Stopped(
            self.stopped
                .lock()
                .clone()
                .unwrap_or_else(|| "closed".to_owned()),
        )
    }
}

pub(crate) struct WriterSettings {
    pub(crate) stream_cache_entries_max: usize,
    pub(crate) idempotency_window_events: usize,
}

/// The writer thread's state.
pub(crate) struct Writer {
    shared: Arc<Shared>,
    settings: WriterSettings,
    streams: HashMap<Arc<str>, StreamState>,
    /// Metadata as the writer knows it, including batches not yet durable.
    meta: MetaMap,
    recent_ids: HashMap<Uuid, IdPlace>,
    recent_order: VecDeque<Uuid>,
    next_position: u64,
    /// The id the next new stream gets; the index hands them out in the same order when it
    /// stages the records (see `IndexRecord::known`).
    next_stream_id: u64,
    carry: Option<WriteRequest>,
}

/// Event ids and places of recent events, to seed the idempotency window on open.
pub(crate) type RecentEvent = (Uuid, Arc<str>, u64, u64);

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        settings: WriterSettings,
        next_position: Position,
        next_stream_id: u64,
        recent: Vec<RecentEvent>,
    ) -> Self {
        let meta = shared.meta.read().clone();
        let mut w = Self {
            shared,
            settings,
            streams: HashMap::new(),
            meta,
            recent_ids: HashMap::new(),
            recent_order: VecDeque::new(),
            next_position: next_position.0,
            next_stream_id,
            carry: None,
        };
        for (id, stream, revision, position) in recent {
            w.remember(id, stream, revision, position);
        }
        w
    }

    fn remember(&mut self, id: Uuid, stream: Arc<str>, revision: u64, position: u64) {
        if self.settings.idempotency_window_events == 0 {
            return;
        }
        if self.recent_order.len() >= self.settings.idempotency_window_events
            && let Some(old) = self.recent_order.pop_front()
        {
            self.recent_ids.remove(&old);
        }
        self.recent_ids.insert(
            id,
            IdPlace {
                stream,
                revision,
                position,
            },
        );
        self.recent_order.push_back(id);
    }

    /// Runs until every request sender is gone, then lets the sync thread drain.
    ///
    /// Requests are checked and encoded into a batch of the writer's own, outside the slot's
    /// lock, and only then appended to the open batch under it: the sync thread, done with a
    /// sync, takes the open batch at once instead of waiting for the writer to finish encoding
    /// whatever arrived meanwhile (with 64 writers that wait was ~150 µs per group commit).
    pub(crate) fn run(mut self, mut requests: mpsc::Receiver<WriteRequest>, slot: Arc<BatchSlot>) {
        let mut local = OpenBatch::default();
        loop {
            let first = match self.carry.take() {
                Some(r) => r,
                None => match requests.blocking_recv() {
                    Some(r) => r,
                    None => break,
                },
            };
            self.add(first, &mut local);
            while !local.full {
                let Ok(req) = requests.try_recv() else { break };
                self.add(req, &mut local);
            }
            let mut open = slot.state.lock();
            while !open.takes(&local) {
                slot.changed.wait(&mut open);
            }
            open.absorb(&mut local);
            drop(open);
            slot.changed.notify_all();
            self.evict();
        }
        slot.state.lock().closed = true;
        slot.changed.notify_all();
    }

    /// Checks and encodes one request into the open batch, or keeps it for the next batch if
    /// this one is full.
    fn add(&mut self, req: WriteRequest, open: &mut OpenBatch) {
        if self.shared.has_stopped.load(Ordering::Acquire) {
            let _ = req.reply.send(Err(self.shared.stopped_error()));
            return;
        }
        if !open.buf.is_empty() && open.buf.len() + req.encoded_bytes_max() > BATCH_BYTES_MAX {
            self.carry = Some(req);
            open.full = true;
            return;
        }
        let last = Position(self.next_position - 1);
        let job = open.job.get_or_insert_with(|| SyncJob::new(last));
        // Record addresses are offsets into the batch until the sync thread writes it.
        self.process(req, &mut open.buf, job, 0);
        job.last_position = Position(self.next_position - 1);
        if job.replies.len() >= BATCH_APPENDS_MAX {
            open.full = true;
        }
    }

    /// Forgets streams already durable and indexed once the cache is over its bound.
    fn evict(&mut self) {
        if self.streams.len() > self.settings.stream_cache_entries_max {
            let indexed = self.shared.head.get().0;
            self.streams.retain(|_, s| s.last_position > indexed);
        }
    }

    fn state(&mut self, stream: &StreamName) -> Result<StreamState, EngineError> {
        if let Some(s) = self.streams.get(stream.as_str()) {
            return Ok(*s);
        }
        let s = match self.shared.index.stream_head(stream.as_str())? {
            // Revisions stay below the tombstone's; a head at or past it is damage, and counting
            // on from it could overflow.
            Some(h) if h.last_revision.is_some_and(|r| r >= Revision::TOMBSTONE.0) => {
                return Err(IndexError::Inconsistent(format!(
                    "stream {stream}: head {h:?} is past the tombstone revision"
                ))
                .into());
            }
            Some(h) => StreamState {
                id: Some(h.id),
                next_revision: h.last_revision.map_or(0, |r| r + 1),
                last_position: h.last_position.0,
                tombstoned: h.tombstoned,
            },
            None => StreamState::NEW,
        };
        self.streams.insert(Arc::clone(stream.as_arc()), s);
        Ok(s)
    }

    fn process(
        &mut self,
        req: WriteRequest,
        buf: &mut Vec<u8>,
        job: &mut SyncJob,
        batch_start: u64,
    ) {
        let result = self.check_and_encode(&req, buf, job, batch_start);
        job.replies.push((req.reply, result));
    }

    fn check_and_encode(
        &mut self,
        req: &WriteRequest,
        buf: &mut Vec<u8>,
        job: &mut SyncJob,
        batch_start: u64,
    ) -> Result<AppendResult, EngineError> {
        let stream = &req.stream;
        let state = self.state(stream)?;
        if state.tombstoned {
            return Err(DomainError::StreamDeleted {
                stream: stream.to_string(),
            }
            .into());
        }
        if let Some(target) = stream.metadata_target()
            && self.state(&target)?.tombstoned
        {
            return Err(DomainError::StreamDeleted {
                stream: target.to_string(),
            }
            .into());
        }
        if let WriteKind::Append(events) = &req.kind
            && let Some(result) = self.idempotent_result(stream, req.expected, events)?
        {
            return Ok(result);
        }
        if !req.expected.is_satisfied_by(state.current()) {
            return Err(DomainError::WrongExpectedRevision {
                stream: stream.to_string(),
                expected: req.expected,
                actual: state.current(),
            }
            .into());
        }
        match &req.kind {
            WriteKind::Append(events) => {
                let soft_deleted = self
                    .meta
                    .get(stream.as_str())
                    .is_some_and(|m| m.rules.is_soft_deleted());
                if soft_deleted && !stream.is_metadata_stream() {
                    // Appending to a soft-deleted stream restores it from here on, as KurrentDB
                    // does: its metadata gets `$tb` = the first new revision.
                    let json = undelete_json(
                        self.meta.get(stream.as_str()).map(|m| &m.json[..]),
                        state.next_revision,
                    );
                    self.write_metadata(stream, json, buf, job, batch_start)?;
                }
                let result = self.encode(
                    stream,
                    RecordKind::Events,
                    events,
                    state,
                    buf,
                    job,
                    batch_start,
                );
                if let Some(target) = stream.metadata_target()
                    && let Some(last) = events.last()
                {
                    let m = Arc::new(MetaState::from_event(last.data.clone()));
                    self.meta
                        .insert(Arc::clone(target.as_arc()), Arc::clone(&m));
                    job.meta_updates.push((Arc::clone(target.as_arc()), m));
                }
                Ok(result)
            }
            WriteKind::SoftDelete => {
                let json = Bytes::from(StreamMetadata::soft_delete_json(
                    self.meta.get(stream.as_str()).map(|m| &m.json[..]),
                ));
                let position = self.write_metadata(stream, json, buf, job, batch_start)?;
                Ok(AppendResult {
                    next_revision: Revision(state.next_revision.saturating_sub(1)),
                    position,
                })
            }
            WriteKind::Tombstone => {
                let event = NewEvent {
                    id: Uuid::new_v4(),
                    event_type: EventType::new(TOMBSTONE_EVENT_TYPE)?,
                    content_type: annals_core::ContentType::Binary,
                    data: Bytes::new(),
                    metadata: Bytes::new(),
                };
                let result = self.encode(
                    stream,
                    RecordKind::Tombstone,
                    std::slice::from_ref(&event),
                    state,
                    buf,
                    job,
                    batch_start,
                );
                Ok(result)
            }
        }
    }

    /// Appends one `$metadata` event to `$$stream`; returns its position.
    fn write_metadata(
        &mut self,
        stream: &StreamName,
        json: Bytes,
        buf: &mut Vec<u8>,
        job: &mut SyncJob,
        batch_start: u64,
    ) -> Result<Position, EngineError> {
        let meta_stream = stream.metadata_stream()?;
        let meta_state = self.state(&meta_stream)?;
        let event = NewEvent {
            id: Uuid::new_v4(),
            event_type: EventType::new(METADATA_EVENT_TYPE)?,
            content_type: annals_core::ContentType::Json,
            data: json.clone(),
            metadata: Bytes::new(),
        };
        let r = self.encode(
            &meta_stream,
            RecordKind::Events,
            std::slice::from_ref(&event),
            meta_state,
            buf,
            job,
            batch_start,
        );
        let m = Arc::new(MetaState::from_event(json));
        self.meta
            .insert(Arc::clone(stream.as_arc()), Arc::clone(&m));
        job.meta_updates.push((Arc::clone(stream.as_arc()), m));
        Ok(r.position)
    }

    /// A retry of an append already written at its place returns the original result.
    fn idempotent_result(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: &[NewEvent],
    ) -> Result<Option<AppendResult>, EngineError> {
        let Some(first) = events.first().and_then(|e| self.recent_ids.get(&e.id)) else {
            return Ok(None);
        };
        if *first.stream != *stream.as_str()
            || !expected.is_satisfied_by(first.revision.checked_sub(1))
        {
            return Ok(None);
        }
        let mut last = first;
        for (i, e) in events.iter().enumerate() {
            match self.recent_ids.get(&e.id) {
                Some(p)
                    if *p.stream == *stream.as_str()
                        && first.revision.checked_add(i as u64) == Some(p.revision) =>
                {
                    last = p;
                }
                _ => {
                    // Part of the append was written before: neither a clean retry nor new.
                    return Err(DomainError::WrongExpectedRevision {
                        stream: stream.to_string(),
                        expected,
                        actual: self.streams.get(stream.as_str()).and_then(|s| s.current()),
                    }
                    .into());
                }
            }
        }
        Ok(Some(AppendResult {
            next_revision: Revision(last.revision),
            position: Position(last.position),
        }))
    }

    #[allow(clippy::too_many_arguments)]
    fn encode(
        &mut self,
        stream: &StreamName,
        kind: RecordKind,
        events: &[NewEvent],
        state: StreamState,
        buf: &mut Vec<u8>,
        job: &mut SyncJob,
        batch_start: u64,
    ) -> AppendResult {
        let first_position = Position(self.next_position);
        let tombstone = kind == RecordKind::Tombstone;
        let first_revision = if tombstone {
            Revision::TOMBSTONE
        } else {
            Revision(state.next_revision)
        };
        let address = batch_start + buf.len() as u64;
        encode_commit(
            buf,
            kind,
            stream,
            first_position,
            first_revision,
            Timestamp::now(),
            events,
        );
        let n = events.len() as u64;
        self.next_position += n;
        let last_position = self.next_position - 1;
        let arc = Arc::clone(stream.as_arc());
        let id = match state.id {
            Some(id) => id,
            None => {
                let id = self.next_stream_id;
                self.next_stream_id += 1;
                id
            }
        };
        let new_state = if tombstone {
            StreamState {
                id: Some(id),
                next_revision: state.next_revision,
                last_position,
                tombstoned: true,
            }
        } else {
            for (i, e) in events.iter().enumerate() {
                let i = i as u64;
                self.remember(
                    e.id,
                    Arc::clone(&arc),
                    state.next_revision + i,
                    first_position.0 + i,
                );
            }
            StreamState {
                id: Some(id),
                next_revision: state.next_revision + n,
                last_position,
                tombstoned: false,
            }
        };
        self.streams.insert(Arc::clone(&arc), new_state);
        job.index.records.push(IndexRecord {
            address,
            stream: arc,
            first_position,
            first_revision,
            tombstone,
            event_types: events
                .iter()
                .map(|e| Arc::clone(e.event_type.as_arc()))
                .collect(),
            known: Some(KnownStream {
                id,
                next_revision: state.next_revision,
            }),
        });
        AppendResult {
            next_revision: if tombstone {
                Revision(state.next_revision.saturating_sub(1))
            } else {
                Revision(new_state.next_revision - 1)
            },
            position: Position(last_position),
        }
    }
}

fn undelete_json(previous: Option<&[u8]>, truncate_before: u64) -> Bytes {
    let mut obj = previous
        .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default();
    obj.insert("$tb".to_owned(), serde_json::Value::from(truncate_before));
    Bytes::from(serde_json::to_vec(&serde_json::Value::Object(obj)).unwrap_or_default())
}

/// The sync thread: takes the open batch as soon as it is free, writes it with one write,
/// `fdatasync`s it, makes it readable, then indexes it and answers its callers.
pub(crate) fn run_syncer(
    shared: Arc<Shared>,
    slot: Arc<BatchSlot>,
    mut log: LogWriter,
    mut indexer: Indexer,
    durability: Durability,
) {
    loop {
        let (buf, mut job) = {
            let mut open = slot.state.lock();
            let job = loop {
                if let Some(job) = open.job.take() {
                    break job;
                }
                if open.closed {
                    return;
                }
                slot.changed.wait(&mut open);
            };
            let buf = std::mem::take(&mut open.buf);
            drop(open);
            slot.changed.notify_all();
            (buf, job)
        };
        let mut failure: Option<String> = None;
        if shared.has_stopped.load(Ordering::Acquire) {
            failure = Some("an earlier batch failed".to_owned());
        } else if !buf.is_empty() {
            match log.append(&buf) {
                Ok((address, ticket)) => {
                    for r in &mut job.index.records {
                        r.address += address;
                    }
                    job.index.checkpoint = IndexCheckpoint {
                        address: ticket.end,
                        next_position: job.last_position.next(),
                        last_record_address: job.index.records.last().map_or(0, |r| r.address),
                    };
                    if durability == Durability::Fsync
                        && let Err(e) = ticket.sync(&shared.log)
                    {
                        failure = Some(format!("sync failed: {e}"));
                    } else {
                        shared.log.publish(ticket.end);
                    }
                    job.ticket = Some(ticket);
                }
                Err(e) => failure = Some(format!("log write failed: {e}")),
            }
        }
        if let Some(reason) = failure {
            shared.stop(reason);
            for (reply, _) in job.replies.drain(..) {
                let _ = reply.send(Err(shared.stopped_error()));
            }
            continue;
        }
        indexer.index(job);
    }
}

/// Most records staged and not yet committed before the sync thread commits them itself.
pub(crate) const STAGED_RECORDS_MAX: usize = 65_536;

/// How often staged index batches are committed to the store. Reads scan the staged records, so
/// this also bounds that scan.
pub(crate) const INDEX_COMMIT_INTERVAL: Duration = Duration::from_millis(20);

/// What the index store thread should do next.
#[derive(Default)]
pub(crate) struct FlushState {
    /// Records staged since the last commit to the store.
    uncommitted: usize,
    /// The index changed since the last durable commit.
    dirty: bool,
    /// Without per-batch syncs: the newest written batch, to sync before the index commit, so a
    /// durable index checkpoint never points past durable log data.
    unsynced: Option<SyncTicket>,
}

/// The index store thread: every [`INDEX_COMMIT_INTERVAL`] commits what the sync thread staged
/// to the store (one transaction for all of it), and every `interval` makes the index durable;
/// all off the path of answers. A final flush when the sync thread ends.
pub(crate) fn run_index_flusher(
    shared: Arc<Shared>,
    state: Arc<Mutex<FlushState>>,
    stop: crossbeam_channel::Receiver<()>,
    interval: Duration,
) {
    let mut last_flush = Instant::now();
    loop {
        let stopping = matches!(
            stop.recv_timeout(INDEX_COMMIT_INTERVAL),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected)
        );
        let uncommitted = std::mem::take(&mut state.lock().uncommitted);
        if uncommitted > 0
            && let Err(e) = shared.index.commit_staged()
        {
            shared.stop(format!("index commit failed: {e}"));
        }
        if stopping || last_flush.elapsed() >= interval {
            let (dirty, unsynced) = {
                let mut s = state.lock();
                (std::mem::take(&mut s.dirty), s.unsynced.take())
            };
            if dirty {
                flush_index(&shared, unsynced);
            }
            last_flush = Instant::now();
        }
        if stopping {
            return;
        }
    }
}

fn flush_index(shared: &Shared, unsynced: Option<SyncTicket>) {
    if let Some(ticket) = unsynced
        && let Err(e) = ticket.sync(&shared.log)
    {
        tracing::warn!(error = %e, "log sync before index flush failed");
        return;
    }
    if let Err(e) = shared.index.flush() {
        // The index is derived: a lost flush only means more re-indexing on the next open.
        tracing::warn!(error = %e, "index flush failed");
    }
}

/// Stages synced batches in the index, publishes metadata and the head, and answers the batches'
/// callers.
pub(crate) struct Indexer {
    shared: Arc<Shared>,
    flush: Arc<Mutex<FlushState>>,
    durability: Durability,
    failed: bool,
}

impl Indexer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        flush: Arc<Mutex<FlushState>>,
        durability: Durability,
    ) -> Self {
        Self {
            shared,
            flush,
            durability,
            failed: false,
        }
    }

    /// Stages a synced batch in the index and answers its callers.
    pub(crate) fn index(&mut self, job: SyncJob) {
        let SyncJob {
            ticket,
            index: batch,
            mut replies,
            last_position,
            meta_updates,
        } = job;
        let shared = &self.shared;
        if !self.failed && ticket.is_some() {
            if let Err(e) = shared.index.stage(&batch) {
                self.failed = true;
                shared.stop(format!("index update failed: {e}"));
            } else {
                let mut f = self.flush.lock();
                f.dirty = true;
                f.uncommitted += batch.records.len();
                // Reads scan what is staged: if the store thread falls behind, commit here.
                if f.uncommitted > STAGED_RECORDS_MAX {
                    f.uncommitted = 0;
                    drop(f);
                    if let Err(e) = shared.index.commit_staged() {
                        self.failed = true;
                        shared.stop(format!("index commit failed: {e}"));
                    }
                    f = self.flush.lock();
                }
                if self.durability == Durability::None {
                    f.unsynced = ticket;
                }
            }
        }
        if self.failed {
            for (reply, _) in replies.drain(..) {
                let _ = reply.send(Err(shared.stopped_error()));
            }
            return;
        }
        if !meta_updates.is_empty() {
            let mut meta = shared.meta.write();
            for (stream, m) in meta_updates {
                meta.insert(stream, m);
            }
        }
        shared.head.publish(last_position);
        for (reply, result) in replies.drain(..) {
            let _ = reply.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::indexing_slicing,
        reason = "a test fails by panicking"
    )]

    use super::*;

    /// A batch as the writer builds it: one record of `len` bytes per position in `positions`,
    /// addresses counted from the start of its own buffer.
    fn batch(positions: std::ops::Range<u64>, len: usize, fill: u8) -> OpenBatch {
        let mut b = OpenBatch::default();
        let mut job = SyncJob::new(Position(positions.start - 1));
        for p in positions {
            job.index.records.push(IndexRecord {
                address: b.buf.len() as u64,
                stream: Arc::from(format!("s-{p}")),
                first_position: Position(p),
                first_revision: Revision(0),
                tombstone: false,
                event_types: vec![Arc::from("E")],
                known: None,
            });
            b.buf.extend(std::iter::repeat_n(fill, len));
            let (reply, _) = oneshot::channel();
            job.replies
                .push((reply, Err(EngineError::Stopped("test".to_owned()))));
            job.last_position = Position(p);
        }
        b.job = Some(job);
        b
    }

    #[test]
    fn absorbed_batches_keep_order_and_point_at_their_bytes() {
        let mut open = OpenBatch::default();
        let mut first = batch(1..4, 10, 0xaa);
        assert!(open.takes(&first));
        open.absorb(&mut first);
        assert!(first.job.is_none() && first.buf.is_empty());
        let mut second = batch(4..6, 7, 0xbb);
        assert!(open.takes(&second));
        open.absorb(&mut second);
        assert!(second.job.is_none() && second.buf.is_empty());

        let job = open.job.as_ref().unwrap();
        assert_eq!(open.buf.len(), 3 * 10 + 2 * 7);
        assert_eq!(job.replies.len(), 5);
        assert_eq!(job.last_position, Position(5));
        let positions: Vec<u64> = job
            .index
            .records
            .iter()
            .map(|r| r.first_position.0)
            .collect();
        assert_eq!(positions, [1, 2, 3, 4, 5]);
        // Every record's address still finds its own bytes in the merged buffer.
        for r in &job.index.records {
            let fill = if r.first_position.0 < 4 { 0xaa } else { 0xbb };
            assert_eq!(open.buf[r.address as usize], fill, "{r:?}");
        }
        let addresses: Vec<u64> = job.index.records.iter().map(|r| r.address).collect();
        assert_eq!(addresses, [0, 10, 20, 30, 37]);
    }

    #[test]
    fn a_batch_that_would_overflow_waits_for_the_sync_thread() {
        let mut open = OpenBatch::default();
        let mut big = batch(1..2, BATCH_BYTES_MAX - 5, 0);
        open.absorb(&mut big);
        let small = batch(2..3, 10, 1);
        assert!(!open.takes(&small));
        // Once the sync thread has taken the open batch, it takes anything.
        open.job = None;
        open.buf.clear();
        assert!(open.takes(&small));
        assert!(open.takes(&OpenBatch::default()));
    }
}
