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

use crate::types::{IndexCheckpoint, PostingKind};

/// A stream head as stored: (id, next revision, last position, flags).
pub(crate) type HeadTuple = (u64, u64, u64, u64);

/// One record with its stream id and its category and event-type revisions resolved.
#[derive(Debug)]
pub(crate) struct StagedRecord {
    pub(crate) id: u64,
    pub(crate) address: u64,
    pub(crate) stream: Arc<str>,
    pub(crate) first_position: u64,
    pub(crate) first_revision: u64,
    pub(crate) tombstone: bool,
    pub(crate) count: u64,
    /// The revision of the record's first event in its category (unused for a tombstone, which
    /// no posting list holds).
    pub(crate) category_revision: u64,
    /// Runs of consecutive events of one type, each with its revisions in its type.
    pub(crate) type_runs: Vec<TypeRun>,
}

impl StagedRecord {
    pub(crate) fn category(&self) -> &str {
        category_of(&self.stream)
    }
}

/// Consecutive events of one type within a record.
#[derive(Debug)]
pub(crate) struct TypeRun {
    pub(crate) event_type: Arc<str>,
    pub(crate) first_position: u64,
    pub(crate) count: u64,
    /// The type revision of the run's first event.
    pub(crate) first_revision: u64,
}

/// Splits a record's event types into runs of one type: (type, first position, length).
pub(crate) fn type_runs(
    event_types: &[Arc<str>],
    first_position: u64,
) -> impl Iterator<Item = (&Arc<str>, u64, u64)> {
    let mut run_start = 0usize;
    event_types.iter().enumerate().filter_map(move |(i, ty)| {
        let next_differs = event_types.get(i + 1).is_none_or(|n| n != ty);
        if !next_differs {
            return None;
        }
        let run = (run_start, i + 1 - run_start);
        run_start = i + 1;
        Some((ty, first_position + run.0 as u64, run.1 as u64))
    })
}

/// A posting list: its kind and key.
pub(crate) type LinkKey = (PostingKind, Arc<str>);

/// Most posting-list heads (next revision per category or event type) kept in memory once the
/// batches that wrote them are committed, so staging rarely reads them from redb. Past it,
/// committed heads are dropped and read again when next needed.
pub const LINK_HEADS_CACHED_MAX: usize = 65_536;

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
    /// The next revision of each posting list staging has touched, with the generation that
    /// moved it last: always the newest (only staging writes it), and kept after the commit of
    /// that generation up to [`LINK_HEADS_CACHED_MAX`] entries. Reads never use it.
    pub(crate) link_heads: HashMap<LinkKey, (u64, u64)>,
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
        // Only heads redb already holds may go: a head whose batch is still staged is the one
        // place its next revision is known.
        if self.link_heads.len() > LINK_HEADS_CACHED_MAX {
            self.link_heads
                .retain(|_, (_, generation)| *generation > committed);
        }
    }
}
