//! The hand-over between the writer thread and the sync thread: the open batch ([`OpenBatch`])
//! the writer appends its checked and encoded requests to, under a lock held only for that copy,
//! and the sync thread takes whole the moment it is free.

use std::sync::Arc;

use annals_core::{AppendResult, Position};
use annals_index::IndexBatch;
use annals_log::{GROUP_COMMIT_BYTES_MAX, SyncTicket};
use parking_lot::{Condvar, Mutex};

use super::{Reply, Shared};
use crate::config::GROUP_COMMIT_APPENDS_MAX;
use crate::error::EngineError;
use crate::rules::MetaState;

/// One batch on its way to durability.
pub(crate) struct SyncJob {
    pub(super) ticket: Option<SyncTicket>,
    pub(super) index: IndexBatch,
    pub(super) replies: Vec<(Reply, Result<AppendResult, EngineError>)>,
    pub(super) last_position: Position,
    pub(super) meta_updates: Vec<(Arc<str>, Arc<MetaState>)>,
    /// The repair epoch the writer made it in: one from an earlier epoch is never written.
    pub(super) epoch: u64,
}

impl SyncJob {
    /// Answers every request of the job with the engine's stop reason.
    pub(super) fn fail(self, shared: &Shared) {
        for (reply, _) in self.replies {
            let _ = reply.send(Err(shared.stopped_error()));
        }
    }

    pub(super) fn new(last_position: Position, epoch: u64) -> Self {
        Self {
            ticket: None,
            index: IndexBatch::default(),
            replies: Vec::new(),
            last_position,
            meta_updates: Vec::new(),
            epoch,
        }
    }
}

/// The batch the writer fills while the sync thread writes and syncs the previous one.
#[derive(Default)]
pub(crate) struct OpenBatch {
    pub(super) buf: Vec<u8>,
    pub(super) job: Option<SyncJob>,
    /// No more requests fit (the writer's own batch): hand it over before taking more.
    pub(super) full: bool,
    /// The writer has stopped; the sync thread drains and ends.
    pub(super) closed: bool,
    /// The sync thread has ended (it panicked): nothing handed over would be written or answered.
    pub(super) sync_gone: bool,
}

impl OpenBatch {
    /// Whether `other` can be appended: this batch is empty, or both fit in one batch.
    pub(super) fn takes(&self, other: &OpenBatch) -> bool {
        let (Some(mine), Some(theirs)) = (&self.job, &other.job) else {
            return true;
        };
        mine.epoch == theirs.epoch
            && self.buf.len() + other.buf.len() <= GROUP_COMMIT_BYTES_MAX
            && mine.replies.len() + theirs.replies.len() <= GROUP_COMMIT_APPENDS_MAX
    }

    /// Appends `other`'s records and answers (leaving it empty), shifting its record addresses,
    /// which are offsets into its own buffer, past this batch's bytes.
    pub(super) fn absorb(&mut self, other: &mut OpenBatch) {
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
    pub(super) state: Mutex<OpenBatch>,
    pub(super) changed: Condvar,
}

impl BatchSlot {
    /// Says the writer has stopped: the sync thread writes what is open and ends.
    pub(crate) fn close(&self) {
        self.state.lock().closed = true;
        self.changed.notify_all();
    }

    /// Wakes the sync thread to look at the repair (the lock orders the wake-up after its last
    /// look, so it is not lost).
    pub(crate) fn wake(&self) {
        drop(self.state.lock());
        self.changed.notify_all();
    }

    /// Says the sync thread has ended without draining (it panicked, and `shared` is stopped):
    /// the open batch is answered with the stop reason, and the writer hands nothing over again.
    pub(crate) fn sync_gone(&self, shared: &Shared) {
        let job = {
            let mut open = self.state.lock();
            open.sync_gone = true;
            open.buf.clear();
            open.job.take()
        };
        self.changed.notify_all();
        if let Some(job) = job {
            job.fail(shared);
        }
    }
}

impl std::fmt::Debug for BatchSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchSlot").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use annals_core::Revision;
    use annals_index::IndexRecord;
    use tokio::sync::oneshot;

    /// A batch as the writer builds it: one record of `len` bytes per position in `positions`,
    /// addresses counted from the start of its own buffer.
    fn batch(positions: std::ops::Range<u64>, len: usize, fill: u8) -> OpenBatch {
        let mut b = OpenBatch::default();
        let mut job = SyncJob::new(Position(positions.start - 1), 0);
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
        let mut big = batch(1..2, GROUP_COMMIT_BYTES_MAX - 5, 0);
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
