//! The sync thread: takes the open batch as soon as it is free, writes it with one write and
//! `fdatasync`s it, makes it readable, then stages it in the index ([`Indexer`]), publishes the
//! new head and answers the batch's callers, failures included, only after all of that. After a
//! failed write or sync (of the log or of the index store) it repairs both when nothing is in
//! flight ([`super`] says how).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use annals_core::Position;
use annals_index::{Index, IndexBatch, IndexCheckpoint, IndexError};
use annals_log::LogWriter;
use parking_lot::Mutex;

use super::batch::{BatchSlot, SyncJob};
use super::index_store_thread::{FlushState, STAGED_RECORDS_MAX};
use super::{REPAIR_RETRY, Repair, Shared};
use crate::config::Durability;
use crate::rules::MetaState;

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
                    parking_lot::MutexGuard::unlocked(&mut open, || {
                        try_repair(&shared, &mut log, &mut indexer);
                    });
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

/// One attempt at repairing the store after a failed write or sync: reopen the index store if
/// it failed (reads answer again), cut the log back to the end of the last good sync and check
/// there is room, commit the index durably if it failed (and stage and publish the batch whose
/// indexing failed), then start a new epoch.
fn try_repair(shared: &Shared, log: &mut LogWriter, indexer: &mut Indexer) {
    let index_failed = shared.index_failed.load(Ordering::Acquire);
    if index_failed && let Err(e) = shared.index.reopen() {
        tracing::warn!(error = %e, retry = ?REPAIR_RETRY, "index store not reopened yet");
        return;
    }
    let good_end = shared.log.readable_end();
    match log.repair(good_end) {
        Ok(()) => {}
        Err(e @ annals_log::LogError::NotRepairable { .. }) => {
            tracing::error!(error = %e, "the log cannot be repaired in place; reopen the store");
            *shared.repair.lock() = Repair::None;
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, retry = ?REPAIR_RETRY, "log not repaired yet");
            return;
        }
    }
    if index_failed {
        if let Err(e) = indexer.finish_unpublished() {
            tracing::warn!(error = %e, retry = ?REPAIR_RETRY, "index store not writing yet");
            // The failed commit failed redb again: reopened now, it answers reads meanwhile.
            if let Err(e) = shared.index.reopen() {
                tracing::warn!(error = %e, "index store not reopened");
            }
            return;
        }
        shared.index_failed.store(false, Ordering::Release);
    }
    shared.epoch.fetch_add(1, Ordering::AcqRel);
    let mut repair = shared.repair.lock();
    if *repair == Repair::Pending && !shared.unrepairable.load(Ordering::Acquire) {
        *repair = Repair::Done;
        tracing::warn!(
            good_end,
            index_reopened = index_failed,
            "store repaired after a failed write or sync; writes resume at the next request"
        );
    }
}

/// A batch durable in the log whose indexing failed: the repair stages it (if it is not yet) and
/// publishes it.
struct Unpublished {
    /// The batch, when staging it failed.
    unstaged: Option<IndexBatch>,
    last_position: Position,
    meta_updates: Vec<(Arc<str>, Arc<MetaState>)>,
}

/// Stages synced batches in the index, publishes metadata and the head, and answers the batches'
/// callers.
pub(crate) struct Indexer {
    shared: Arc<Shared>,
    flush: Arc<Mutex<FlushState>>,
    durability: Durability,
    /// The batch whose indexing failed, until the repair publishes it. Nothing is written after
    /// it meanwhile (the engine is stopped), so there is at most one.
    unpublished: Option<Unpublished>,
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
            unpublished: None,
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
        if ticket.is_none() {
            // Nothing was written (every request of the batch failed its checks).
            self.publish(last_position, meta_updates);
            for (reply, result) in replies.drain(..) {
                let _ = reply.send(result);
            }
            return;
        }
        #[cfg(test)]
        let staged = match shared.fail_next_stage.swap(false, Ordering::AcqRel) {
            true => Err(IndexError::Inconsistent(
                "injected staging failure".to_owned(),
            )),
            false => shared.index.stage(&batch),
        };
        #[cfg(not(test))]
        let staged = shared.index.stage(&batch);
        let failure = match staged {
            Err(e) => Some((format!("index update failed: {e}"), Some(batch))),
            Ok(()) => self.staged(ticket, batch.records.len()).map(|e| (e, None)),
        };
        if let Some((reason, unstaged)) = failure {
            shared.stop_for_index_repair(reason);
            self.unpublished = Some(Unpublished {
                unstaged,
                last_position,
                meta_updates,
            });
            for (reply, _) in replies.drain(..) {
                let _ = reply.send(Err(shared.stopped_error()));
            }
            return;
        }
        self.publish(last_position, meta_updates);
        for (reply, result) in replies.drain(..) {
            let _ = reply.send(result);
        }
    }

    /// Notes a staged batch for the index store thread; commits here if that thread fell behind.
    /// Returns why the commit failed, if it did.
    fn staged(&self, ticket: Option<annals_log::SyncTicket>, records: usize) -> Option<String> {
        let mut f = self.flush.lock();
        f.dirty = true;
        f.uncommitted += records;
        if self.durability == Durability::None {
            f.unsynced = ticket;
        }
        // Reads scan what is staged: if the store thread falls behind, commit here.
        if f.uncommitted > STAGED_RECORDS_MAX {
            f.uncommitted = 0;
            drop(f);
            if let Err(e) = self.shared.index.commit_staged() {
                return Some(format!("index commit failed: {e}"));
            }
        }
        None
    }

    fn publish(&self, last_position: Position, meta_updates: Vec<(Arc<str>, Arc<MetaState>)>) {
        let shared = &self.shared;
        if !meta_updates.is_empty() {
            let mut meta = shared.meta.write();
            for (stream, m) in meta_updates {
                meta.insert(stream, m);
            }
        }
        shared.head.publish(last_position);
    }

    /// For the repair, once the index store is reopened: stages the batch whose indexing failed
    /// (if staging was what failed), commits the index durably (which fails while the disk
    /// does), and publishes that batch.
    fn finish_unpublished(&mut self) -> Result<(), IndexError> {
        if let Some(u) = &mut self.unpublished
            && let Some(batch) = &u.unstaged
        {
            self.shared.index.stage(batch)?;
            u.unstaged = None;
        }
        self.shared.index.flush()?;
        if let Some(u) = self.unpublished.take() {
            self.publish(u.last_position, u.meta_updates);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    use annals_core::{Direction, ExpectedRevision, NewEvent, Revision, StreamName};
    use annals_log::FaultStorage;

    use crate::{Engine, EngineConfig, EngineError};

    /// A batch durable in the log whose staging in the index failed: its callers get the stop,
    /// the repair publishes it, and a retry with the same event ids answers where it was written
    /// (once); the store checks clean and reopens the same.
    #[test]
    fn a_batch_whose_indexing_failed_is_published_by_the_repair() {
        let storage = FaultStorage::new();
        let engine = Engine::open(Arc::new(storage.clone()), EngineConfig::default())
            .unwrap()
            .0;
        let stream = StreamName::new("order-1").unwrap();
        let events = |n: usize| -> Vec<NewEvent> {
            (0..n)
                .map(|i| NewEvent::json("Placed", format!("{{\"i\":{i}}}")).unwrap())
                .collect()
        };
        let first = engine
            .append(&stream, ExpectedRevision::NoStream, events(2))
            .unwrap();
        engine
            .inner
            .shared
            .fail_next_stage
            .store(true, Ordering::Release);
        let second = events(3);
        match engine.append(&stream, ExpectedRevision::Any, second.clone()) {
            Err(EngineError::Stopped(reason)) => {
                assert!(reason.contains("injected staging failure"), "{reason}")
            }
            other => panic!("append with staging failing: {other:?}"),
        }
        // The repair runs at once (the disk is fine); the retry finds the batch written.
        let deadline = Instant::now() + Duration::from_secs(10);
        let retried = loop {
            match engine.append(&stream, ExpectedRevision::Any, second.clone()) {
                Ok(r) => break r,
                Err(EngineError::Stopped(_)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("writes did not resume: {e}"),
            }
        };
        assert_eq!(retried.position.0, first.position.0 + 3);
        assert_eq!(retried.next_revision, Revision(4));
        assert_eq!(engine.head().0, 5, "the retry wrote nothing again");
        let read = |engine: &Engine| {
            engine
                .read_stream(&stream, Revision(0), Direction::Forwards, 100)
                .unwrap()
                .iter()
                .map(|e| (e.id, e.revision.0, e.position.0))
                .collect::<Vec<_>>()
        };
        let ids: Vec<_> = read(&engine).iter().map(|(id, _, _)| *id).collect();
        assert_eq!(ids.len(), 5);
        assert_eq!(
            ids[2..],
            second.iter().map(|e| e.id).collect::<Vec<_>>()[..]
        );
        let third = engine
            .append(&stream, ExpectedRevision::Exact(4), events(1))
            .unwrap();
        assert_eq!(third.position.0, 6);
        let check = engine.check(|_| {}).unwrap();
        assert!(check.problems.is_empty(), "{check:?}");
        let live = read(&engine);
        engine.close();
        drop(engine);
        let engine = Engine::open(Arc::new(storage.crash_image()), EngineConfig::default())
            .unwrap()
            .0;
        assert_eq!(read(&engine), live);
    }
}
