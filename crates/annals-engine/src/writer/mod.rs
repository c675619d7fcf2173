//! The append pipeline: the writer thread, the sync thread and the index store thread, and what
//! they share. Each thread lives in a file of its own:
//! - [`writer_thread`]: checks each request, assigns revisions and positions, encodes records;
//! - [`batch`]: the open batch the writer fills and the sync thread takes;
//! - [`sync_thread`]: writes and `fdatasync`s a batch, stages it in the index, answers;
//! - [`index_store_thread`]: commits what is staged to the index store, and makes it durable.
//!
//! The writer thread takes requests as they arrive, checks each against the stream heads it knows
//! (including batches still syncing), assigns revisions and dense positions, and encodes one commit
//! record per request into a batch of its own, then appends that to the open batch (up to
//! [`crate::GROUP_COMMIT_APPENDS_MAX`] requests and [`annals_log::GROUP_COMMIT_BYTES_MAX`] bytes)
//! under the hand-over lock, which is therefore only held for a copy. The sync thread takes the
//! open batch the moment it is free, writes it with one write and `fdatasync`s it; everything that
//! arrived meanwhile, already checked, forms the next batch. So batches grow with load, and only
//! one batch is ever written but not durable (within [`annals_log::UNSYNCED_BATCHES_MAX`]).
//!
//! Right after the sync the same thread stages the batch in the index (in memory, visible to
//! reads), publishes the new head and only then answers every request of the batch (failures
//! too, so no answer depends on state that might not become durable). While batch N is synced and
//! indexed, N + 1 is gathered. Indexing on the sync thread rather than on a thread of its own
//! costs ~70 µs per batch on the sync path but saves a thread hand-off per batch, which on a
//! 2-core machine took longer: 64 writers got ~30% more appends per second (docs/benchmarks.md).
//! A failed log write or sync stops the engine taking writes: after an fsync error nothing since
//! the last good sync can be trusted, and after `ENOSPC` part of a batch may be on disk. Every
//! request in flight is answered with the error. The sync thread then repairs the log in place
//! ([`annals_log::LogWriter::repair`]): it cuts the log back to the end of the last good sync
//! (so nothing unacknowledged can come back), checks that the next batch has room on disk, and
//! retries every [`REPAIR_RETRY`] until that works (space freed, the disk answering again). It
//! then starts a new *epoch*: batches made before it are never written, and the writer thread,
//! at its next request, drops its caches back to what is durable and published (stream heads,
//! metadata, the idempotency window, the next position and stream id) and takes writes again.
//! What readers see never changed, since nothing of a failed batch was published.
//!
//! A failed write or sync of the index store (redb then fails every later call, reads too)
//! stops writes the same way, and the same repair first reopens the store
//! ([`annals_index::Index::reopen`]): redb goes back to its last durable commit, and the index
//! stages again every batch committed since, so reads answer as before even while the disk
//! stays full. The repair ends with a durable commit of the index, so writes resume only once
//! the store writes and syncs again; each failed attempt reopens it again for the reads. A
//! batch whose indexing failed is already durable in the log: its callers were answered with
//! the stop (the outcome of their write unknown to them, as with a timeout), and the repair
//! stages it and publishes it with the head, so a retry with the same event ids finds it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use annals_core::{AppendResult, ExpectedRevision, NewEvent, StreamName};
use annals_index::Index;
use annals_log::Log;
use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;

use crate::error::EngineError;
use crate::head::Head;
use crate::rules::MetaMap;

mod batch;
mod index_store_thread;
mod sync_thread;
mod writer_thread;

pub(crate) use batch::BatchSlot;
pub(crate) use index_store_thread::{FlushState, run_index_flusher};
pub(crate) use sync_thread::{Indexer, run_syncer};
pub(crate) use writer_thread::{RecentEvent, Writer, WriterSettings};

pub(crate) type Reply = oneshot::Sender<Result<AppendResult, EngineError>>;

/// How often the sync thread tries to repair the log (and the index store) after a failed write
/// or sync.
pub(crate) const REPAIR_RETRY: Duration = Duration::from_secs(1);

/// Where the repair of a failed log write or sync stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Repair {
    /// Nothing to repair (the engine runs, or stopped for a reason not repaired in place).
    None,
    /// The sync thread is trying to repair the log.
    Pending,
    /// The log is repaired: the writer resets and takes writes at its next request.
    Done,
}

/// What a request asks the writer to do to `stream`.
#[derive(Debug)]
pub(crate) enum WriteKind {
    Append(Vec<NewEvent>),
    /// Write `$tb = i64::MAX` to the stream's metadata.
    SoftDelete,
    Tombstone,
    /// Events of another store, written exactly as they were there (`Engine::import`): the
    /// runs of one page, in order, in one request (a page's runs are mostly one event each, of
    /// streams taking turns, so a request per run would cost a hand-off per event).
    Import(Vec<ImportRun>),
}

/// A run of another store's events for one stream, written as one record: at consecutive
/// positions from `first_position` and revisions from `first_revision` (or one tombstone), all
/// created at `created`.
#[derive(Debug)]
pub(crate) struct ImportRun {
    pub(crate) stream: StreamName,
    pub(crate) first_position: annals_core::Position,
    pub(crate) first_revision: annals_core::Revision,
    pub(crate) created: annals_core::Timestamp,
    pub(crate) events: Vec<NewEvent>,
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
    pub(super) fn encoded_bytes_max(&self) -> usize {
        let name = self.stream.as_str().len() + 2;
        let events = match &self.kind {
            WriteKind::Append(events) => events.iter().map(|e| e.size_bytes() + 28).sum(),
            WriteKind::Import(runs) => {
                return runs
                    .iter()
                    .map(|run| {
                        let events: usize = run.events.iter().map(|e| e.size_bytes() + 28).sum();
                        16 + 34 + run.stream.as_str().len() + 2 + events
                    })
                    .sum::<usize>()
                    + 4_096;
            }
            WriteKind::SoftDelete | WriteKind::Tombstone => 4_096,
        };
        // Room for an undelete metadata record written ahead of the events.
        2 * (16 + 34 + name) + events + 4_096
    }
}

/// State shared between the engine and its pipeline threads.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) log: Arc<Log>,
    /// The index, behind its trait: the engine names its implementation only while opening
    /// (`index_store.rs`).
    pub(crate) index: Arc<dyn Index>,
    pub(crate) head: Head,
    /// Published metadata: what readers apply.
    pub(crate) meta: RwLock<MetaMap>,
    /// Set when the engine stopped taking writes, with the reason.
    pub(crate) stopped: Mutex<Option<String>>,
    pub(crate) has_stopped: AtomicBool,
    /// The repair of a failed log write or sync, if one is under way.
    pub(crate) repair: Mutex<Repair>,
    /// Set by a stop that is not repaired in place (a thread panicked).
    pub(crate) unrepairable: AtomicBool,
    /// The index store failed a write or sync: the repair reopens it.
    pub(crate) index_failed: AtomicBool,
    /// The hand-over point of the writer and the sync thread, for waking the sync thread to a
    /// repair no request asked for (the index store failed while nothing was written).
    pub(crate) slot: Arc<BatchSlot>,
    /// Counts log repairs: a batch made in an earlier epoch is never written.
    pub(crate) epoch: AtomicU64,
    /// The pages just published, shared by the subscriptions at the head.
    pub(crate) live: crate::live_tail::LiveTail,
    /// Makes a pipeline thread panic, for the tests of panic reporting.
    #[cfg(test)]
    pub(crate) panic_hook: crate::threads::PanicHook,
    /// Fails the next staging of a batch in the index, for the tests of the repair.
    #[cfg(test)]
    pub(crate) fail_next_stage: AtomicBool,
}

impl Shared {
    /// Stops taking writes for good (until the store is reopened).
    pub(crate) fn stop(&self, reason: String) {
        self.unrepairable.store(true, Ordering::Release);
        *self.repair.lock() = Repair::None;
        self.stop_with(reason);
    }

    /// Stops taking writes until the sync thread has reopened the index store (which failed a
    /// write or sync) and repaired the log.
    pub(crate) fn stop_for_index_repair(&self, reason: String) {
        self.index_failed.store(true, Ordering::Release);
        self.stop_for_repair(reason);
        // Reads fail until the store is reopened: the sync thread starts at once, not at the
        // next write.
        self.slot.wake();
    }

    /// Stops taking writes until the sync thread has repaired the log.
    pub(crate) fn stop_for_repair(&self, reason: String) {
        if !self.unrepairable.load(Ordering::Acquire) {
            *self.repair.lock() = Repair::Pending;
        }
        self.stop_with(reason);
    }

    fn stop_with(&self, reason: String) {
        let mut s = self.stopped.lock();
        if s.is_none() {
            tracing::error!(%reason, "engine stopped taking writes");
            *s = Some(reason);
        }
        self.has_stopped.store(true, Ordering::Release);
    }

    /// Whether the sync thread has a log repair to try.
    pub(crate) fn repair_pending(&self) -> bool {
        *self.repair.lock() == Repair::Pending
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
