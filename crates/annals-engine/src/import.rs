//! Importing another store's events exactly as they were there (`annals migrate` from
//! PostgreSQL, and the replica a node keeps of a store in Postgres): positions, streams,
//! revisions, ids, types, times and bytes. The events go through the writer like appends, so
//! group commit, `fdatasync`, the index and the head signal apply to them unchanged, but every
//! check is replaced by one: each run must go on exactly at this store's next position and its
//! stream's next revision. Metadata events take effect as they did there.

use annals_core::{EventRecord, ExpectedRevision, NewEvent, Position, Revision};
use tokio::sync::oneshot;

use crate::engine::Engine;
use crate::error::EngineError;
use crate::writer::{ImportRun, WriteKind, WriteRequest};

impl Engine {
    /// Imports `events` (consecutive positions from this store's head + 1). Returns the new
    /// head. A run refused ([`EngineError::ImportRefused`]) is not written, nor anything after
    /// it; what came before it is, durably.
    pub async fn import_async(&self, events: &[EventRecord]) -> Result<Position, EngineError> {
        let sender = self.sender()?;
        let mut replies = Vec::new();
        for req in requests(events, &mut replies) {
            sender
                .send(req)
                .await
                .map_err(|_| self.inner.shared.stopped_error())?;
        }
        self.await_imports(replies).await
    }

    /// Blocking form of [`Engine::import_async`].
    pub fn import(&self, events: &[EventRecord]) -> Result<Position, EngineError> {
        let sender = self.sender()?;
        let mut replies = Vec::new();
        for req in requests(events, &mut replies) {
            sender
                .blocking_send(req)
                .map_err(|_| self.inner.shared.stopped_error())?;
        }
        let mut head = self.head();
        for rx in replies {
            let done = rx
                .blocking_recv()
                .map_err(|_| self.inner.shared.stopped_error())??;
            head = head.max(done.position);
        }
        Ok(head)
    }

    async fn await_imports(&self, replies: Vec<Reply>) -> Result<Position, EngineError> {
        let mut head = self.head();
        for rx in replies {
            let done = rx.await.map_err(|_| self.inner.shared.stopped_error())??;
            head = head.max(done.position);
        }
        Ok(head)
    }
}

type Reply = oneshot::Receiver<Result<annals_core::AppendResult, EngineError>>;

/// Most runs one import request carries; a larger import is sent as several requests.
pub const IMPORT_RUNS_PER_REQUEST_MAX: usize = 4_096;

/// The import's runs (consecutive events of one stream, at consecutive revisions, created at
/// the same time, since a record holds one time; a tombstone alone), up to
/// [`IMPORT_RUNS_PER_REQUEST_MAX`] per request.
fn requests(events: &[EventRecord], replies: &mut Vec<Reply>) -> Vec<WriteRequest> {
    let mut runs: Vec<ImportRun> = Vec::new();
    for e in events {
        let goes_on = runs.last().is_some_and(|r| {
            let n = r.events.len() as u64;
            r.stream == e.stream
                && r.created == e.created
                && r.first_revision != Revision::TOMBSTONE
                && e.revision != Revision::TOMBSTONE
                && r.first_revision.0.checked_add(n) == Some(e.revision.0)
                && r.first_position.0.checked_add(n) == Some(e.position.0)
        });
        if !goes_on {
            runs.push(ImportRun {
                stream: e.stream.clone(),
                first_position: e.position,
                first_revision: e.revision,
                created: e.created,
                events: Vec::new(),
            });
        }
        if let Some(r) = runs.last_mut() {
            r.events.push(NewEvent {
                id: e.id,
                event_type: e.event_type.clone(),
                content_type: e.content_type,
                data: e.data.clone(),
                metadata: e.metadata.clone(),
            });
        }
    }
    let mut out = Vec::new();
    let mut runs = runs.into_iter().peekable();
    while let Some(first) = runs.peek() {
        let stream = first.stream.clone();
        let page: Vec<ImportRun> = runs.by_ref().take(IMPORT_RUNS_PER_REQUEST_MAX).collect();
        let (req, rx) = Engine::request(&stream, ExpectedRevision::Any, WriteKind::Import(page));
        out.push(req);
        replies.push(rx);
    }
    out
}
