//! The writer thread: takes requests as they arrive, checks each against the stream heads it
//! knows (including batches still syncing) and the idempotency window, assigns revisions and dense
//! positions, and encodes one commit record per request into a batch of its own before handing
//! that to the open batch.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use annals_core::{
    AppendResult, DomainError, EventType, ExpectedRevision, METADATA_EVENT_TYPE, NewEvent,
    Position, Revision, StreamMetadata, StreamName, TOMBSTONE_EVENT_TYPE, Timestamp,
};
use annals_index::{Index, IndexError, IndexRecord, KnownStream};
use annals_log::GROUP_COMMIT_BYTES_MAX;
use annals_log::codec::{RecordKind, encode_commit};
use bytes::Bytes;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::batch::{BatchSlot, OpenBatch, SyncJob};
use super::{ImportRun, Repair, Shared, WriteKind, WriteRequest};
use crate::config::GROUP_COMMIT_APPENDS_MAX;
use crate::error::EngineError;
use crate::rules::{MetaMap, MetaState};

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
    /// The repair epoch this writer's batches belong to.
    epoch: u64,
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
            epoch: 0,
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
            while !open.sync_gone && !open.takes(&local) {
                slot.changed.wait(&mut open);
            }
            if open.sync_gone {
                // Nothing would write or answer these (the engine is stopped already).
                drop(open);
                if let Some(job) = local.job.take() {
                    job.fail(&self.shared);
                }
                local = OpenBatch::default();
                continue;
            }
            open.absorb(&mut local);
            drop(open);
            slot.changed.notify_all();
            self.evict();
        }
        slot.close();
    }

    /// Checks and encodes one request into the open batch, or keeps it for the next batch if
    /// this one is full.
    fn add(&mut self, req: WriteRequest, open: &mut OpenBatch) {
        #[cfg(test)]
        self.shared.panic_hook.check(crate::threads::WRITER_THREAD);
        if self.shared.has_stopped.load(Ordering::Acquire) && !self.resume(open) {
            let _ = req.reply.send(Err(self.shared.stopped_error()));
            return;
        }
        if !open.buf.is_empty() && open.buf.len() + req.encoded_bytes_max() > GROUP_COMMIT_BYTES_MAX
        {
            self.carry = Some(req);
            open.full = true;
            return;
        }
        let last = Position(self.next_position - 1);
        let epoch = self.epoch;
        let job = open.job.get_or_insert_with(|| SyncJob::new(last, epoch));
        // Record addresses are offsets into the batch until the sync thread writes it.
        self.process(req, &mut open.buf, job, 0);
        job.last_position = Position(self.next_position - 1);
        if job.replies.len() >= GROUP_COMMIT_APPENDS_MAX {
            open.full = true;
        }
    }

    /// Takes writes again once the sync thread has repaired the log: drops every cached state
    /// past what is durable and published (the failed batches' stream heads, metadata, event
    /// ids, positions and stream ids), and the requests of `open`, made before the failure,
    /// with the stop reason. Returns whether writes resume.
    fn resume(&mut self, open: &mut OpenBatch) -> bool {
        let mut repair = self.shared.repair.lock();
        if *repair != Repair::Done {
            return false;
        }
        let next_stream_id = match self.shared.index.next_stream_id() {
            Ok(id) => id,
            Err(e) => {
                tracing::error!(error = %e, "cannot resume writes: the index does not answer");
                return false;
            }
        };
        if let Some(job) = open.job.take() {
            job.fail(&self.shared);
        }
        open.buf.clear();
        open.full = false;
        let published = self.shared.head.get().0;
        self.next_position = published + 1;
        self.next_stream_id = next_stream_id;
        self.streams.retain(|_, s| s.last_position <= published);
        self.meta = self.shared.meta.read().clone();
        self.recent_ids
            .retain(|_, place| place.position <= published);
        let ids = &self.recent_ids;
        self.recent_order.retain(|id| ids.contains_key(id));
        self.epoch = self.shared.epoch.load(Ordering::Acquire);
        *repair = Repair::None;
        *self.shared.stopped.lock() = None;
        self.shared.has_stopped.store(false, Ordering::Release);
        tracing::warn!(head = published, "the store takes writes again");
        true
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
        if let WriteKind::Import(runs) = &req.kind {
            // Each run is checked as it comes: one refused is not written, nor anything after
            // it in the page; the runs before it are.
            let mut last = Err(EngineError::ImportRefused("an empty import".to_owned()));
            for run in runs {
                let state = self.state(&run.stream)?;
                last = Ok(self.import_run(run, state, buf, job, batch_start)?);
            }
            return last;
        }
        let stream = &req.stream;
        let state = self.state(stream)?;
        if state.tombstoned {
            return Err(DomainError::StreamDeleted {
                stream: stream.to_string(),
            }
            .into());
        }
        // `$$stream` of a tombstoned stream still takes metadata, as in KurrentDB: the tombstone
        // is the stream's own record, which no metadata can undo.
        if let WriteKind::Append(events) = &req.kind
            && let Some(result) = self.idempotent_result(stream, req.expected, events)?
        {
            return Ok(result);
        }
        let soft_deleted = !stream.is_metadata_stream()
            && self
                .meta
                .get(stream.as_str())
                .is_some_and(|m| m.rules.is_soft_deleted());
        check_expected(
            stream,
            &req.kind,
            req.expected,
            state.current(),
            soft_deleted,
        )?;
        match &req.kind {
            WriteKind::Append(events) => {
                if soft_deleted {
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
                    Timestamp::now(),
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
                    Timestamp::now(),
                    buf,
                    job,
                    batch_start,
                );
                Ok(result)
            }
            // Taken before the checks above.
            WriteKind::Import(_) => Err(EngineError::ImportRefused(
                "an import reached the append path".to_owned(),
            )),
        }
    }

    /// Writes one run of another store's events exactly as they were: refused unless it goes on
    /// at this store's next position and its stream's next revision (or is one tombstone).
    fn import_run(
        &mut self,
        run: &ImportRun,
        state: StreamState,
        buf: &mut Vec<u8>,
        job: &mut SyncJob,
        batch_start: u64,
    ) -> Result<AppendResult, EngineError> {
        let stream = &run.stream;
        let refuse = |why: String| -> EngineError {
            EngineError::ImportRefused(format!("position {}: {why}", run.first_position.0))
        };
        if state.tombstoned {
            return Err(refuse(format!("stream {stream} is deleted")));
        }
        if run.first_position.0 != self.next_position {
            return Err(refuse(format!(
                "this store goes on at position {}",
                self.next_position
            )));
        }
        let tombstone = run.first_revision == Revision::TOMBSTONE;
        if tombstone && run.events.len() != 1 {
            return Err(refuse("a tombstone is one event".to_owned()));
        }
        if !tombstone && run.first_revision.0 != state.next_revision {
            return Err(refuse(format!(
                "stream {stream} goes on at revision {}, not {}",
                state.next_revision, run.first_revision.0
            )));
        }
        let kind = if tombstone {
            RecordKind::Tombstone
        } else {
            RecordKind::Events
        };
        let result = self.encode(
            stream,
            kind,
            &run.events,
            state,
            run.created,
            buf,
            job,
            batch_start,
        );
        if !tombstone
            && let Some(target) = stream.metadata_target()
            && let Some(last) = run.events.last()
        {
            let m = Arc::new(MetaState::from_event(last.data.clone()));
            self.meta
                .insert(Arc::clone(target.as_arc()), Arc::clone(&m));
            job.meta_updates.push((Arc::clone(target.as_arc()), m));
        }
        Ok(result)
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
            Timestamp::now(),
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
        let placed = events.iter().map(|e| {
            self.recent_ids
                .get(&e.id)
                .map(|p| (&*p.stream, p.revision, p.position))
        });
        let current = self.streams.get(stream.as_str()).and_then(|s| s.current());
        Ok(expected.retry_of(stream.as_str(), placed, current)?)
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "the fields of one commit record, passed apart so the hot path builds no struct"
    )]
    fn encode(
        &mut self,
        stream: &StreamName,
        kind: RecordKind,
        events: &[NewEvent],
        state: StreamState,
        created: Timestamp,
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
            created,
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
    Bytes::from(StreamMetadata::undelete_json(previous, truncate_before))
}

/// Judges `expected` by the rules every store applies ([`ExpectedRevision::check`]).
fn check_expected(
    stream: &StreamName,
    kind: &WriteKind,
    expected: ExpectedRevision,
    current: Option<u64>,
    soft_deleted: bool,
) -> Result<(), EngineError> {
    let soft_delete = matches!(kind, WriteKind::SoftDelete);
    Ok(expected.check(stream.as_str(), current, soft_deleted, soft_delete)?)
}
