//! The engine facade: opening a store (recovering the log, catching the index up), the write API
//! in front of the writer thread, and shutdown.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;

use annals_core::{
    AppendResult, Direction, EventRecord, ExpectedRevision, InputError, METADATA_EVENT_TYPE,
    NewEvent, Position, StreamMetadata, StreamName,
    limits::{APPEND_EVENTS_MAX, STORE_APPEND_BYTES_MAX},
};
use annals_index::{Index, IndexBatch, IndexCheckpoint, IndexError, IndexRecord};
use annals_log::codec::{Interner, RecordKind, decode_events};
use annals_log::{FileStorage, Log, LogError, RecoveryReport, RecoveryStart, Storage};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, oneshot};

use crate::config::{EngineConfig, REINDEX_BATCH_RECORDS_MAX, WRITER_QUEUE_APPENDS_MAX};
use crate::error::EngineError;
use crate::head::Head;
use crate::index_store::{check_log_tail, destroy_index, index_missing, open_index};
use crate::rules::{MetaMap, MetaState};
use crate::threads::{self, INDEX_STORE_THREAD, SYNC_THREAD, ThreadPanic, WRITER_THREAD};
use crate::writer::{
    BatchSlot, FlushState, Indexer, RecentEvent, Shared, WriteKind, WriteRequest, Writer,
    WriterSettings, run_index_flusher, run_syncer,
};

/// What opening a store did.
#[derive(Clone, Debug, Default)]
pub struct OpenReport {
    pub log: RecoveryReport,
    /// The index was missing, damaged or ahead of the log and was rebuilt from the log.
    pub index_rebuilt: bool,
    /// Records applied to the index from the log while opening.
    pub records_reindexed: u64,
    /// The head position after opening.
    pub head: Position,
}

/// An open store. Cheap to clone; all clones share one writer. The last clone dropped closes it.
#[derive(Clone, Debug)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
    /// The lease this handle's writes are fenced by, on a replica ([`Engine::fenced`]).
    pub(crate) fence: Option<Arc<str>>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) shared: Arc<Shared>,
    requests: RwLock<Option<mpsc::Sender<WriteRequest>>>,
    /// Where appends go when this store is a replica (`upstream.rs`).
    pub(crate) upstream: RwLock<Option<Arc<dyn crate::upstream::Upstream>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Pipeline threads that ended in a panic, found when they were joined.
    panics: Mutex<Vec<ThreadPanic>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Inner {
    fn shutdown(&self) {
        self.requests.write().take();
        // Joined under the lock, so a concurrent `close` waits for the same threads instead of
        // finding the list empty and returning (and closing the head) while they still drain.
        let mut threads = self.threads.lock();
        let panics = threads::join(threads.drain(..).collect());
        self.panics.lock().extend(panics);
        drop(threads);
        // Every acknowledged append is published by now; subscribers waiting for more stop.
        self.shared.head.close();
    }
}

impl Engine {
    /// Opens (creating if needed) the store in directory `dir`.
    pub fn open_dir(dir: &Path, config: EngineConfig) -> Result<(Engine, OpenReport), EngineError> {
        let storage = FileStorage::open(dir).map_err(|e| LogError::Io {
            op: "open",
            file: dir.display().to_string(),
            source: e,
        })?;
        Self::open(Arc::new(storage), config)
    }

    /// Opens the store held by `storage`.
    pub fn open(
        storage: Arc<dyn Storage>,
        config: EngineConfig,
    ) -> Result<(Engine, OpenReport), EngineError> {
        let mut report = OpenReport::default();
        let index_missing = index_missing(storage.as_ref());
        let (index, checkpoint) = match open_index(storage.as_ref(), &config.index) {
            Ok(found) => found,
            Err(e) => {
                warn_rebuild(&e);
                report.index_rebuilt = true;
                destroy_index(storage.as_ref())?;
                open_index(storage.as_ref(), &config.index)?
            }
        };
        let start = if checkpoint.address == 0 {
            RecoveryStart::BEGINNING
        } else {
            RecoveryStart {
                address: checkpoint.address,
                next_position: checkpoint.next_position,
                previous_record: (checkpoint.last_record_address != 0)
                    .then_some(checkpoint.last_record_address),
            }
        };
        let (index, log, log_writer, log_report) = match Log::open(
            Arc::clone(&storage),
            config.log.clone(),
            start,
        ) {
            Ok((log, writer, r)) => (index, log, writer, r),
            Err(LogError::BadRecoveryStart { address, reason }) => {
                // The index covers more than the log holds (the log's tail was lost or cut)
                // or its checkpoint is garbage: it cannot be trusted, so rebuild it.
                tracing::warn!(address, %reason, "index checkpoint does not match the log; rebuilding the index");
                drop(index);
                report.index_rebuilt = true;
                destroy_index(storage.as_ref())?;
                let (index, _) = open_index(storage.as_ref(), &config.index)?;
                let (log, writer, r) = Log::open(
                    Arc::clone(&storage),
                    config.log.clone(),
                    RecoveryStart::BEGINNING,
                )?;
                (index, log, writer, r)
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(t) = &log_report.truncated {
            tracing::warn!(file = %t.file, offset = t.offset, bytes_dropped = t.bytes_dropped, reason = %t.reason, "recovered log: torn tail dropped");
        }
        let from = if report.index_rebuilt {
            RecoveryStart::BEGINNING
        } else {
            start
        };
        report.records_reindexed = reindex(&log, index.as_ref(), from, &log_report)?;
        // A missing or empty index file opens as a new, empty index, which the line above just
        // rebuilt from the whole log.
        if index_missing && report.records_reindexed > 0 {
            report.index_rebuilt = true;
        }
        index.flush()?;
        // An index redb accepts can still be wrong about the newest events: compare it with the
        // log's tail, and rebuild it if they disagree.
        let index = match report.index_rebuilt || index_missing {
            true => index,
            false => match check_log_tail(
                &log,
                index.as_ref(),
                log_report.end_address,
                log_report.next_position,
            ) {
                Ok(()) => index,
                Err(e) => {
                    warn_rebuild(&e.into());
                    drop(index);
                    report.index_rebuilt = true;
                    destroy_index(storage.as_ref())?;
                    let (index, _) = open_index(storage.as_ref(), &config.index)?;
                    report.records_reindexed =
                        reindex(&log, index.as_ref(), RecoveryStart::BEGINNING, &log_report)?;
                    index.flush()?;
                    index
                }
            },
        };
        let head = Position(log_report.next_position.0.saturating_sub(1));
        report.head = head;
        report.log = log_report;

        let meta = load_metadata(&log, index.as_ref())?;
        let slot = Arc::new(BatchSlot::default());
        let shared = Arc::new(Shared {
            slot: Arc::clone(&slot),
            log: Arc::clone(&log),
            index,
            head: Head::new(head),
            meta: RwLock::new(meta),
            stopped: Mutex::new(None),
            has_stopped: AtomicBool::new(false),
            repair: Mutex::new(crate::writer::Repair::None),
            unrepairable: AtomicBool::new(false),
            index_failed: AtomicBool::new(false),
            epoch: std::sync::atomic::AtomicU64::new(0),
            live: crate::live_tail::LiveTail::default(),
            #[cfg(test)]
            panic_hook: crate::threads::PanicHook::default(),
            #[cfg(test)]
            fail_next_stage: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::channel(WRITER_QUEUE_APPENDS_MAX);
        let inner = Arc::new(Inner {
            shared: Arc::clone(&shared),
            requests: RwLock::new(Some(tx)),
            upstream: RwLock::new(None),
            threads: Mutex::new(Vec::new()),
            panics: Mutex::new(Vec::new()),
        });
        let engine = Engine { inner, fence: None };
        let recent = engine.recent_events(config.idempotency_window_events)?;
        let writer = Writer::new(
            Arc::clone(&shared),
            WriterSettings {
                stream_cache_entries_max: config.stream_cache_entries_max,
                idempotency_window_events: config.idempotency_window_events,
            },
            log_report_next(&report),
            shared.index.next_stream_id()?,
            recent,
        );
        let durability = config.durability;
        let flush = config.index_flush_interval;
        let syncer_shared = Arc::clone(&shared);
        let indexer_shared = Arc::clone(&shared);
        let flusher_shared = Arc::clone(&shared);
        let flush_state = Arc::new(Mutex::new(FlushState::default()));
        let indexer_flush = Arc::clone(&flush_state);
        // Never sent on: the flush thread ends when the sync thread drops its end.
        let (flush_stop_tx, flush_stop_rx) = crossbeam_channel::bounded::<()>(0);
        // Should a thread panic, `threads::spawn` stops the engine and runs the second closure,
        // which releases what the other threads wait for from that one.
        let (writer_slot, closing_slot) = (Arc::clone(&slot), Arc::clone(&slot));
        let w = threads::spawn(
            WRITER_THREAD,
            &shared,
            move || writer.run(rx, writer_slot),
            move || closing_slot.close(),
        )?;
        let indexer = Indexer::new(indexer_shared, indexer_flush, durability);
        let (gone_slot, gone_shared) = (Arc::clone(&slot), Arc::clone(&shared));
        let s = threads::spawn(
            SYNC_THREAD,
            &shared,
            move || {
                run_syncer(syncer_shared, slot, log_writer, indexer, durability);
                drop(flush_stop_tx);
            },
            move || gone_slot.sync_gone(&gone_shared),
        )?;
        let f = threads::spawn(
            INDEX_STORE_THREAD,
            &shared,
            move || run_index_flusher(flusher_shared, flush_state, flush_stop_rx, flush),
            || {},
        )?;
        engine.inner.threads.lock().extend([w, s, f]);
        tracing::info!(
            head = head.0,
            reindexed = report.records_reindexed,
            "store open"
        );
        Ok((engine, report))
    }

    /// Stops taking writes, finishes those in flight, flushes the index and waits for the
    /// writer threads. Other clones see [`EngineError::Stopped`] afterwards. A pipeline thread
    /// that panicked is logged; [`Engine::close_checked`] also returns it.
    pub fn close(&self) {
        self.inner.shutdown();
    }

    /// Whether [`Engine::close`] was called (by any clone): the head signal says nothing more.
    pub fn is_closed(&self) -> bool {
        self.inner.shared.head.is_closed()
    }

    /// Why the store stopped taking writes after a failure (a failed log write or sync, a failed
    /// index update; on a replica, an upstream that cannot be reached), or `None` while it takes
    /// them. Reads go on either way.
    pub fn write_failure(&self) -> Option<String> {
        self.local_write_failure()
            .or_else(|| self.upstream().and_then(|u| u.unavailable()))
    }

    /// [`Engine::write_failure`] of this store's own log and index.
    pub(crate) fn local_write_failure(&self) -> Option<String> {
        let shared = &self.inner.shared;
        // A repaired log takes writes at the next request.
        if !shared
            .has_stopped
            .load(std::sync::atomic::Ordering::Acquire)
            || *shared.repair.lock() == crate::writer::Repair::Done
        {
            return None;
        }
        shared.stopped.lock().clone()
    }

    /// [`Engine::close`], then [`EngineError::ThreadPanicked`] for the first pipeline thread that
    /// ended in a panic during the engine's life (every call, from every clone, says so).
    pub fn close_checked(&self) -> Result<(), EngineError> {
        self.inner.shutdown();
        match self.inner.panics.lock().first() {
            Some(p) => Err(p.clone().into()),
            None => Ok(()),
        }
    }

    /// The last durable position (0 when empty).
    pub fn head(&self) -> Position {
        self.inner.shared.head.get()
    }

    /// The log, for tools that verify or measure it.
    pub fn log(&self) -> &Arc<Log> {
        &self.inner.shared.log
    }

    /// Appends `events` to `stream` if it satisfies `expected`. Blocks until durable. Must not be
    /// called from async code; use [`Engine::append_async`] there.
    pub fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, EngineError> {
        validate_append(stream, &events)?;
        if let Some(up) = self.upstream() {
            return self.write_upstream_blocking(up.append(
                stream.clone(),
                expected,
                events,
                self.fence.clone(),
            ));
        }
        self.submit_blocking(stream, expected, WriteKind::Append(events))
    }

    /// Async form of [`Engine::append`].
    pub async fn append_async(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, EngineError> {
        validate_append(stream, &events)?;
        if let Some(up) = self.upstream() {
            return self
                .write_upstream(up.append(stream.clone(), expected, events, self.fence.clone()))
                .await;
        }
        self.submit(stream, expected, WriteKind::Append(events))
            .await
    }

    /// Soft-deletes `stream`: reads say not found; a later append restores it with revisions
    /// continuing. Returns the position of the metadata event written.
    /// Replaces `stream`'s metadata with `metadata` (a JSON object: `{"$maxCount": 1}`, say):
    /// one `$metadata` event appended to its `$$` stream. Keeps the servers' own bookkeeping
    /// streams (checkpoints, parked events) in one shape.
    pub async fn set_metadata_async(
        &self,
        stream: &StreamName,
        metadata: &serde_json::Value,
    ) -> Result<AppendResult, EngineError> {
        let meta_stream = stream.metadata_stream()?;
        let event = NewEvent::json(METADATA_EVENT_TYPE, metadata.to_string().into_bytes())?;
        self.append_async(&meta_stream, ExpectedRevision::Any, vec![event])
            .await
    }

    pub fn delete(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
    ) -> Result<AppendResult, EngineError> {
        deletable(stream)?;
        if let Some(up) = self.upstream() {
            return self.write_upstream_blocking(up.soft_delete(
                stream.clone(),
                expected,
                self.fence.clone(),
            ));
        }
        self.submit_blocking(stream, expected, WriteKind::SoftDelete)
    }

    pub async fn delete_async(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
    ) -> Result<AppendResult, EngineError> {
        deletable(stream)?;
        if let Some(up) = self.upstream() {
            return self
                .write_upstream(up.soft_delete(stream.clone(), expected, self.fence.clone()))
                .await;
        }
        self.submit(stream, expected, WriteKind::SoftDelete).await
    }

    /// Deletes `stream` forever: reads and appends fail with stream-deleted.
    pub fn tombstone(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
    ) -> Result<AppendResult, EngineError> {
        deletable(stream)?;
        if let Some(up) = self.upstream() {
            return self.write_upstream_blocking(up.tombstone(
                stream.clone(),
                expected,
                self.fence.clone(),
            ));
        }
        self.submit_blocking(stream, expected, WriteKind::Tombstone)
    }

    pub async fn tombstone_async(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
    ) -> Result<AppendResult, EngineError> {
        deletable(stream)?;
        if let Some(up) = self.upstream() {
            return self
                .write_upstream(up.tombstone(stream.clone(), expected, self.fence.clone()))
                .await;
        }
        self.submit(stream, expected, WriteKind::Tombstone).await
    }

    pub(crate) fn sender(&self) -> Result<mpsc::Sender<WriteRequest>, EngineError> {
        self.inner
            .requests
            .read()
            .clone()
            .ok_or_else(|| self.inner.shared.stopped_error())
    }

    pub(crate) fn request(
        stream: &StreamName,
        expected: ExpectedRevision,
        kind: WriteKind,
    ) -> (
        WriteRequest,
        oneshot::Receiver<Result<AppendResult, EngineError>>,
    ) {
        let (reply, rx) = oneshot::channel();
        (
            WriteRequest {
                stream: stream.clone(),
                expected,
                kind,
                reply,
            },
            rx,
        )
    }

    fn submit_blocking(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        kind: WriteKind,
    ) -> Result<AppendResult, EngineError> {
        if self.upstream().is_some() && !matches!(kind, WriteKind::Import(_)) {
            return Err(crate::upstream::not_on_a_replica("this write"));
        }
        let (req, rx) = Self::request(stream, expected, kind);
        self.sender()?
            .blocking_send(req)
            .map_err(|_| self.inner.shared.stopped_error())?;
        rx.blocking_recv()
            .map_err(|_| self.inner.shared.stopped_error())?
    }

    async fn submit(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        kind: WriteKind,
    ) -> Result<AppendResult, EngineError> {
        if self.upstream().is_some() && !matches!(kind, WriteKind::Import(_)) {
            return Err(crate::upstream::not_on_a_replica("this write"));
        }
        let (req, rx) = Self::request(stream, expected, kind);
        self.sender()?
            .send(req)
            .await
            .map_err(|_| self.inner.shared.stopped_error())?;
        rx.await.map_err(|_| self.inner.shared.stopped_error())?
    }

    /// The last `count` events of `$all` with their places, for the idempotency window.
    fn recent_events(&self, count: usize) -> Result<Vec<RecentEvent>, EngineError> {
        let mut out = Vec::new();
        if count == 0 {
            return Ok(out);
        }
        let head = self.head();
        let from = Position(head.0.saturating_sub(count as u64 - 1).max(1));
        let mut next = from;
        while next <= head {
            let page = self.read_all(next, Direction::Forwards, 65_536, None)?;
            if page.events.is_empty() {
                break;
            }
            for e in &page.events {
                if !e.is_tombstone() {
                    out.push((
                        e.id,
                        Arc::clone(e.stream.as_arc()),
                        e.revision.0,
                        e.position.0,
                    ));
                }
            }
            next = page.next;
        }
        Ok(out)
    }
}

/// The warning for an index file opening refuses: it is deleted and rebuilt from the log.
fn warn_rebuild(e: &EngineError) {
    match e {
        EngineError::Index(IndexError::Format { .. }) => {
            tracing::warn!(error = %e, "index file of another format; deleting it and rebuilding the index from the log");
        }
        _ => {
            tracing::warn!(error = %e, "index damaged; deleting it and rebuilding the index from the log");
        }
    }
}

fn log_report_next(report: &OpenReport) -> Position {
    report.log.next_position
}

/// Applies every record from `from` to the end of the log to the index.
fn reindex(
    log: &Arc<Log>,
    index: &dyn Index,
    from: RecoveryStart,
    report: &RecoveryReport,
) -> Result<u64, EngineError> {
    let start = if from.address == 0 {
        log.start_address()
    } else {
        from.address
    };
    let mut scan = log.scan(start, report.end_address);
    let mut batch = IndexBatch::default();
    let mut interner = Interner::default();
    let mut total = 0u64;
    let mut last_report = std::time::Instant::now();
    while let Some(rec) = scan.next()? {
        let mut types = Vec::with_capacity(rec.header.event_count as usize);
        let mut stream = None;
        decode_events(
            &rec.frame,
            &rec.header,
            &mut interner,
            (rec.header.first_position, rec.header.last_position()),
            |e| {
                stream.get_or_insert_with(|| Arc::clone(e.stream.as_arc()));
                types.push(Arc::clone(e.event_type.as_arc()));
            },
        )
        .map_err(|e| LogError::Corrupt {
            file: "log".to_owned(),
            offset: rec.address,
            reason: e.to_string(),
        })?;
        let Some(stream) = stream else { continue };
        batch.records.push(IndexRecord {
            address: rec.address,
            stream,
            first_position: rec.header.first_position,
            first_revision: rec.header.first_revision,
            tombstone: rec.header.kind == RecordKind::Tombstone,
            event_types: types,
            known: None,
        });
        batch.checkpoint = IndexCheckpoint {
            address: rec.end(),
            next_position: rec.header.last_position().next(),
            last_record_address: rec.address,
        };
        total += 1;
        if batch.records.len() >= REINDEX_BATCH_RECORDS_MAX {
            index.apply(&batch)?;
            batch.records.clear();
            if last_report.elapsed().as_secs() >= 2 {
                tracing::info!(records = total, "re-indexing the log");
                last_report = std::time::Instant::now();
            }
        }
    }
    if !batch.records.is_empty() {
        index.apply(&batch)?;
    }
    Ok(total)
}

/// Reads the current metadata of every stream that has any (`$$` streams).
fn load_metadata(log: &Arc<Log>, index: &dyn Index) -> Result<MetaMap, EngineError> {
    let mut meta = MetaMap::new();
    let mut after = Some("$$".to_owned());
    let mut interner = Interner::default();
    loop {
        let page = index.streams(after.as_deref(), 1_024)?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        let mut done = false;
        for (name, head) in page {
            if !name.starts_with("$$") {
                done = true;
                break;
            }
            let Ok(stream) = StreamName::new(&name) else {
                continue;
            };
            let Some(target) = stream.metadata_target() else {
                continue;
            };
            let Some(last_rev) = head.last_revision else {
                continue;
            };
            let entries = index.stream_entries(
                head.id,
                annals_core::Revision(last_rev),
                Direction::Backwards,
                1,
            )?;
            let Some(entry) = entries.first() else {
                continue;
            };
            let record = log.read_record(entry.address)?;
            let mut found: Option<EventRecord> = None;
            decode_events(
                &record.frame,
                &record.header,
                &mut interner,
                (entry.position, entry.position),
                |e| found = Some(e),
            )
            .map_err(|e| LogError::Corrupt {
                file: "log".to_owned(),
                offset: entry.address,
                reason: e.to_string(),
            })?;
            if let Some(e) = found {
                meta.insert(
                    Arc::clone(target.as_arc()),
                    Arc::new(MetaState::from_event(e.data)),
                );
            }
        }
        if done {
            break;
        }
    }
    Ok(meta)
}

/// Metadata streams are deleted with their stream, never on their own; streams the index serves
/// are never deleted.
fn deletable(stream: &StreamName) -> Result<(), EngineError> {
    if stream.is_metadata_stream() {
        return Err(InputError::CannotDeleteMetadataStream.into());
    }
    writable(stream)
}

/// `$ce-` and `$et-` streams are served from the index: nothing may be written to them, nor to
/// their metadata streams (`$$$ce-…`), which would give them rules of their own.
fn writable(stream: &StreamName) -> Result<(), EngineError> {
    let target = stream.metadata_target();
    if stream.indexed().is_some() || target.is_some_and(|t| t.indexed().is_some()) {
        return Err(InputError::IndexedStreamWrite {
            stream: stream.to_string(),
        }
        .into());
    }
    Ok(())
}

/// Checks an append against the input limits before it reaches the writer.
fn validate_append(stream: &StreamName, events: &[NewEvent]) -> Result<(), EngineError> {
    writable(stream)?;
    // Names are any UTF-8 text, as KurrentDB clients expect, but control characters: they
    // break logs, terminals and the subjects and keys names are put in. Checked on appends only,
    // so a stream stored with one before stays readable (and deletable).
    if stream.as_str().chars().any(char::is_control) {
        return Err(InputError::StreamNameControlCharacter {
            stream: stream.to_string(),
        }
        .into());
    }
    if events.is_empty() {
        return Err(InputError::EmptyAppend.into());
    }
    if events.len() > APPEND_EVENTS_MAX {
        return Err(InputError::TooManyEvents {
            count: events.len(),
            max: APPEND_EVENTS_MAX,
        }
        .into());
    }
    let mut size = 0usize;
    for (index, e) in events.iter().enumerate() {
        e.validate(index)?;
        size += e.size_bytes();
    }
    if size > STORE_APPEND_BYTES_MAX {
        return Err(InputError::AppendTooLarge {
            size,
            max: STORE_APPEND_BYTES_MAX,
        }
        .into());
    }
    if events.len() > 1 {
        let mut ids = HashSet::with_capacity(events.len());
        if !events.iter().all(|e| ids.insert(e.id)) {
            return Err(InputError::DuplicateEventId.into());
        }
    }
    if stream.is_metadata_stream() {
        for e in events {
            if e.event_type.as_str() != METADATA_EVENT_TYPE {
                return Err(InputError::InvalidMetadataAppend.into());
            }
            StreamMetadata::parse(&e.data)?;
        }
    }
    Ok(())
}
