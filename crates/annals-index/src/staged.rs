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

/// Most records kept in memory after their commit to redb and before a durable commit (see
/// [`Staged::undurable`]): a few tens of MB. A commit that would pass it is made durable itself,
/// which bounds the memory of a rebuild from the log (it commits 20,000 records at a time and
/// flushes at the end); the engine's durable flush every second stays below it up to ~130,000
/// records a second, the writer's in-process peak.
pub const UNDURABLE_RECORDS_MAX: usize = 1 << 17;

/// Staged batches not yet committed to redb, oldest first, and those committed but not yet
/// durable.
#[derive(Debug, Default)]
pub(crate) struct Staged {
    pub(crate) batches: Vec<Arc<StagedBatch>>,
    /// Batches committed to redb without fsync, oldest first, kept until a durable commit holds
    /// them. Reads never use them; they are what a reopen after a failed write or sync puts back
    /// in `batches`, since the reopened store holds only what was durable.
    pub(crate) undurable: Vec<Arc<StagedBatch>>,
    /// Records in `undurable`.
    pub(crate) undurable_records: usize,
    /// The newest generation committed to redb.
    pub(crate) committed: u64,
    /// The newest generation durable in redb.
    pub(crate) durable: u64,
    /// The newest staged head of each stream and the generation that wrote it, so a head is one
    /// lookup however many batches are staged.
    pub(crate) heads: HashMap<Arc<str>, (HeadTuple, u64)>,
    /// The next revision of each posting list staging has touched, with the generation that
    /// moved it last: always the newest (only staging writes it), and kept after the durable
    /// commit of that generation up to [`LINK_HEADS_CACHED_MAX`] entries. Reads never use it.
    pub(crate) link_heads: HashMap<LinkKey, (u64, u64)>,
    pub(crate) next_generation: u64,
    pub(crate) next_id: u64,
}

impl Staged {
    /// The newest staged head of `stream` with its generation.
    pub(crate) fn head(&self, stream: &str) -> Option<(HeadTuple, u64)> {
        self.heads.get(stream).copied()
    }

    /// What generations up to `committed` staged is in redb now: reads find it there, and it is
    /// kept aside until it is durable.
    pub(crate) fn committed(&mut self, committed: u64) {
        let split = self.batches.partition_point(|b| b.generation <= committed);
        for b in self.batches.drain(..split) {
            self.undurable_records += b.records.len();
            self.undurable.push(b);
        }
        self.committed = self.committed.max(committed);
        self.heads
            .retain(|_, (_, generation)| *generation > committed);
    }

    /// Forgets what generations up to `durable` staged: redb holds it durably now.
    pub(crate) fn made_durable(&mut self, durable: u64) {
        let split = self.undurable.partition_point(|b| b.generation <= durable);
        for b in self.undurable.drain(..split) {
            self.undurable_records -= b.records.len();
        }
        self.durable = self.durable.max(durable);
        // Only heads redb holds durably may go: a head whose batch could be lost by a reopen is
        // the one place its next revision is known.
        if self.link_heads.len() > LINK_HEADS_CACHED_MAX {
            let durable = self.durable;
            self.link_heads
                .retain(|_, (_, generation)| *generation > durable);
        }
    }

    /// After the store was reopened at generation `durable` (what it held durably): every batch
    /// newer than that is staged again, with the stream heads it wrote, so reads and staging see
    /// exactly what they saw before.
    pub(crate) fn reopened(&mut self, durable: u64) {
        let mut restored: Vec<Arc<StagedBatch>> = std::mem::take(&mut self.undurable);
        self.undurable_records = 0;
        restored.retain(|b| b.generation > durable);
        for b in &restored {
            for (name, head) in &b.heads {
                let newer = self
                    .heads
                    .get(name)
                    .is_none_or(|(_, generation)| *generation < b.generation);
                if newer {
                    self.heads.insert(Arc::clone(name), (*head, b.generation));
                }
            }
        }
        restored.append(&mut self.batches);
        self.batches = restored;
        self.committed = durable;
        self.durable = durable;
    }
}
