//! The sync thread: takes the open batch as soon as it is free, writes it with one write and
//! `fdatasync`s it, makes it readable, then stages it in the index ([`Indexer`]), publishes the
//! new head and answers the batch's callers, failures included, only after all of that. After a
//! failed write or sync it repairs the log when nothing is in flight ([`super`] says how).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use annals_index::{Index, IndexCheckpoint};
use annals_log::LogWriter;
use parking_lot::Mutex;

use super::batch::{BatchSlot, SyncJob};
use super::index_store_thread::{FlushState, STAGED_RECORDS_MAX};
use super::{REPAIR_RETRY, Repair, Shared};
use crate::config::Durability;

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
        #[cfg(test)]
        shared.panic_hook.check(crate::threads::SYNC_THREAD);
        let (buf, mut job) = {
            let mut open = slot.state.lock();
            let job = loop {
                if let Some(job) = open.job.take() {
                    break job;
                }
                if open.closed {
                    return;
                }
                if shared.repair_pending() {
                    // Nothing is in flight: a good moment to try the repair.
                    parking_lot::MutexGuard::unlocked(&mut open, || try_repair(&shared, &mut log));
                    if shared.repair_pending() {
                        slot.changed.wait_for(&mut open, REPAIR_RETRY);
                    }
                    continue;
                }
                slot.changed.wait(&mut open);
            };
            let buf = std::mem::take(&mut open.buf);
            drop(open);
            slot.changed.notify_all();
            (buf, job)
        };
        // A batch made before the last repair, or while stopped: its positions may be taken
        // by the batches made since, so it is answered with the stop reason, never written.
        if shared.has_stopped.load(Ordering::Acquire)
            || job.epoch != shared.epoch.load(Ordering::Acquire)
        {
            for (reply, _) in job.replies.drain(..) {
                let _ = reply.send(Err(shared.stopped_error()));
            }
            continue;
        }
        let mut failure: Option<String> = None;
        if !buf.is_empty() {
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
            shared.stop_for_repair(reason);
            for (reply, _) in job.replies.drain(..) {
                let _ = reply.send(Err(shared.stopped_error()));
            }
            continue;
        }
        indexer.index(job);
    }
}

/// One attempt at repairing the log after a failed write or sync: cut back to the end of the
/// last good sync, check there is room, and start a new epoch.
fn try_repair(shared: &Shared, log: &mut LogWriter) {
    let good_end = shared.log.readable_end();
    match log.repair(good_end) {
        Ok(()) => {
            shared.epoch.fetch_add(1, Ordering::AcqRel);
            let mut repair = shared.repair.lock();
            if *repair == Repair::Pending && !shared.unrepairable.load(Ordering::Acquire) {
                *repair = Repair::Done;
                tracing::warn!(
                    good_end,
                    "log repaired after a failed write or sync; writes resume at the next request"
                );
            }
        }
        Err(e @ annals_log::LogError::NotRepairable { .. }) => {
            tracing::error!(error = %e, "the log cannot be repaired in place; reopen the store");
            *shared.repair.lock() = Repair::None;
        }
        Err(e) => tracing::warn!(error = %e, retry = ?REPAIR_RETRY, "log not repaired yet"),
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
            epoch: _,
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
