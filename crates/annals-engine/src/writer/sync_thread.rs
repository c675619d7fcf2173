//! The sync thread: takes the open batch as soon as it is free, writes it with one write and
//! `fdatasync`s it, makes it readable, then stages it in the index ([`Indexer`]), publishes the
//! new head and answers the batch's callers, failures included, only after all of that.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use annals_index::{Index, IndexCheckpoint};
use annals_log::LogWriter;
use parking_lot::Mutex;

use super::Shared;
use super::batch::{BatchSlot, SyncJob};
use super::index_store_thread::{FlushState, STAGED_RECORDS_MAX};
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
