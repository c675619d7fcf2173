//! The staged layer of the index: batches applied in memory, visible to every read at once, and
//! written to redb later, several in one transaction.
//!
//! A redb transaction has a fixed cost (copying and hashing the pages it touches in every table),
//! which dominated when each small batch had to be committed before its appends could be answered.
//! Staging is cheap, so the engine answers after staging and commits while the next batch syncs.
//!
//! Each staged batch carries a generation; a redb commit records the last generation it holds. A
//! reader first takes the staged list, then a redb snapshot, and uses only staged batches newer
//! than the snapshot's generation: whatever happens in between, it sees every batch exactly once.

use std::collections::HashMap;
use std::sync::Arc;

use annals_core::category_of;

use crate::types::IndexCheckpoint;

/// A stream head as stored: (id, next revision, last position, flags).
pub(crate) type HeadTuple = (u64, u64, u64, u64);

/// One record with its stream id resolved.
#[derive(Debug)]
pub(crate) struct StagedRecord {
    pub(crate) id: u64,
    pub(crate) address: u64,
    pub(crate) stream: Arc<str>,
    pub(crate) first_position: u64,
    pub(crate) first_revision: u64,
    pub(crate) tombstone: bool,
    pub(crate) event_types: Vec<Arc<str>>,
}

impl StagedRecord {
    pub(crate) fn count(&self) -> u64 {
        self.event_types.len() as u64
    }

    pub(crate) fn category(&self) -> &str {
        category_of(&self.stream)
    }

    /// Runs of consecutive events of one type: (type, first position, length).
    pub(crate) fn type_runs(&self) -> impl Iterator<Item = (&Arc<str>, u64, u64)> {
        let mut run_start = 0usize;
        self.event_types
            .iter()
            .enumerate()
            .filter_map(move |(i, ty)| {
                let next_differs = self.event_types.get(i + 1).is_none_or(|n| n != ty);
                if !next_differs {
                    return None;
                }
                let run = (run_start, i + 1 - run_start);
                run_start = i + 1;
                Some((ty, self.first_position + run.0 as u64, run.1 as u64))
            })
    }
}

/// One staged batch, resolved against the index as it was when staged.
#[derive(Debug)]
pub(crate) struct StagedBatch {
    pub(crate) generation: u64,
    pub(crate) records: Vec<StagedRecord>,
    /// Heads of the streams this batch touched, after it.
    pub(crate) heads: HashMap<Arc<str>, HeadTuple>,
    /// The next stream id after this batch.
    pub(crate) next_id: u64,
    pub(crate) checkpoint: IndexCheckpoint,
}

/// Staged batches not yet committed to redb, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Staged {
    pub(crate) batches: Vec<Arc<StagedBatch>>,
    /// The newest staged head of each stream and the generation that wrote it, so a head is one
    /// lookup however many batches are staged.
    pub(crate) heads: HashMap<Arc<str>, (HeadTuple, u64)>,
    pub(crate) next_generation: u64,
    pub(crate) next_id: u64,
}

impl Staged {
    /// The newest staged head of `stream` with its generation.
    pub(crate) fn head(&self, stream: &str) -> Option<(HeadTuple, u64)> {
        self.heads.get(stream).copied()
    }

    /// Forgets what generations up to `committed` staged: redb holds it now.
    pub(crate) fn committed(&mut self, committed: u64) {
        self.batches.retain(|b| b.generation > committed);
        self.heads
            .retain(|_, (_, generation)| *generation > committed);
    }
}
