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
/// Most event bytes one import request carries (a run larger than this goes alone), so a
/// request stays well inside one group commit's bytes.
pub const IMPORT_REQUEST_BYTES_MAX: usize = 4 * 1024 * 1024;

/// The import's runs (consecutive events of one stream, at consecutive revisions, created at
/// the same time, since a record holds one time; a tombstone alone), up to
/// [`IMPORT_RUNS_PER_REQUEST_MAX`] and [`IMPORT_REQUEST_BYTES_MAX`] per request.
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
    let mut page: Vec<ImportRun> = Vec::new();
    let mut page_bytes = 0usize;
    let mut send = |page: Vec<ImportRun>| {
        if let Some(first) = page.first() {
            let stream = first.stream.clone();
            let (req, rx) =
                Engine::request(&stream, ExpectedRevision::Any, WriteKind::Import(page));
            out.push(req);
            replies.push(rx);
        }
    };
    for run in runs {
        let bytes: usize = run.events.iter().map(NewEvent::size_bytes).sum();
        if !page.is_empty()
            && (page.len() == IMPORT_RUNS_PER_REQUEST_MAX
                || page_bytes + bytes > IMPORT_REQUEST_BYTES_MAX)
        {
            send(std::mem::take(&mut page));
            page_bytes = 0;
        }
        page_bytes += bytes;
        page.push(run);
    }
    send(page);
    out
}

#[cfg(test)]
mod tests {
    use annals_core::{ContentType, EventType, StreamName, Timestamp};
    use bytes::Bytes;

    use super::*;

    fn record(i: u64, stream: &str, bytes: usize) -> EventRecord {
        EventRecord {
            id: uuid::Uuid::new_v4(),
            stream: StreamName::new(stream).unwrap(),
            revision: Revision(i),
            position: Position(i + 1),
            event_type: EventType::new("E").unwrap(),
            content_type: ContentType::Binary,
            created: Timestamp(1),
            data: Bytes::from(vec![0u8; bytes]),
            metadata: Bytes::new(),
        }
    }

    fn runs_per_request(reqs: &[WriteRequest]) -> Vec<usize> {
        reqs.iter()
            .map(|r| match &r.kind {
                WriteKind::Import(runs) => runs.len(),
                _ => 0,
            })
            .collect()
    }

    /// A page's runs go in as few requests as the bounds allow: one run per stream turn, at
    /// most `IMPORT_RUNS_PER_REQUEST_MAX` runs and `IMPORT_REQUEST_BYTES_MAX` bytes a request
    /// (a run larger than that alone), in order.
    #[test]
    fn an_import_is_split_into_requests_by_runs_and_bytes() {
        // Streams taking turns: every event a run of its own.
        let turns: Vec<EventRecord> = (0..5_000u64)
            .map(|i| record(i / 2, if i % 2 == 0 { "a-1" } else { "b-1" }, 10))
            .collect();
        let mut replies = Vec::new();
        let reqs = requests(&turns, &mut replies);
        assert_eq!(
            runs_per_request(&reqs),
            vec![IMPORT_RUNS_PER_REQUEST_MAX, 5_000 - 4_096]
        );
        assert_eq!(replies.len(), reqs.len());
        // Three large events of three streams: each over half the byte bound, so one a request.
        let large = IMPORT_REQUEST_BYTES_MAX / 2 + 1;
        let big: Vec<EventRecord> = (0..3u64)
            .map(|i| {
                let mut e = record(0, &format!("s-{i}"), large);
                e.position = Position(i + 1);
                e
            })
            .collect();
        let reqs = requests(&big, &mut Vec::new());
        assert_eq!(runs_per_request(&reqs), vec![1, 1, 1]);
        // One stream, one time, consecutive revisions: a single run.
        let one: Vec<EventRecord> = (0..10u64).map(|i| record(i, "c-1", 10)).collect();
        assert_eq!(runs_per_request(&requests(&one, &mut Vec::new())), vec![1]);
    }
}
