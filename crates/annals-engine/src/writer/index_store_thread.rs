//! The index store thread: commits what the sync thread staged in the index to the index store
//! every [`INDEX_COMMIT_INTERVAL`] (one transaction for all of it) and makes the store durable
//! every flush interval, all off the path of answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use annals_index::Index;
use annals_log::SyncTicket;
use parking_lot::Mutex;

use super::Shared;

/// Most records staged and not yet committed before the sync thread commits them itself.
pub(super) const STAGED_RECORDS_MAX: usize = 65_536;

/// How often staged index batches are committed to the store. Reads scan the staged records, so
/// this also bounds that scan.
const INDEX_COMMIT_INTERVAL: Duration = Duration::from_millis(20);

/// What the index store thread should do next.
#[derive(Default)]
pub(crate) struct FlushState {
    /// Records staged since the last commit to the store.
    pub(super) uncommitted: usize,
    /// The index changed since the last durable commit.
    pub(super) dirty: bool,
    /// Without per-batch syncs: the newest written batch, to sync before the index commit, so a
    /// durable index checkpoint never points past durable log data.
    pub(super) unsynced: Option<SyncTicket>,
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
        #[cfg(test)]
        shared.panic_hook.check(crate::threads::INDEX_STORE_THREAD);
        // While the engine is stopped (a full or failing disk), the index store is left alone:
        // the repair reopens it when it failed and ends with a durable commit, and nothing new
        // is staged meanwhile. What is staged waits for the repair, or for the close.
        if !stopping
            && shared
                .has_stopped
                .load(std::sync::atomic::Ordering::Acquire)
        {
            continue;
        }
        let uncommitted = std::mem::take(&mut state.lock().uncommitted);
        if uncommitted > 0
            && let Err(e) = shared.index.commit_staged()
        {
            shared.stop_for_index_repair(format!("index commit failed: {e}"));
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
        shared.stop_for_repair(format!("log sync failed: {e}"));
        return;
    }
    if let Err(e) = shared.index.flush() {
        // redb fails every later call after a failed write or sync: the repair reopens it.
        shared.stop_for_index_repair(format!("index flush failed: {e}"));
    }
}
