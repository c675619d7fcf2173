//! The index's vocabulary and the [`Index`] trait the engine uses.

use std::fmt::Debug;
use std::sync::Arc;

use annals_core::{Direction, Position, Revision};

use crate::error::IndexError;

/// The sparse position map has an entry for the first record and for every record holding a
/// multiple of this position, so finding position p scans at most this many events.
pub const POSITION_BUCKET: u64 = 128;

/// What the index covers: every record before `address` (exclusive), whose last position is
/// `next_position - 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct IndexCheckpoint {
    pub address: u64,
    pub next_position: Position,
    /// Address of the last record covered (the one ending at `address`), 0 if none. Lets
    /// recovery prove `address` is a record boundary.
    pub last_record_address: u64,
}

/// A stream's state as indexed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamHead {
    /// Dense id used in index keys.
    pub id: u64,
    /// Last revision written, `None` if only a tombstone was.
    pub last_revision: Option<u64>,
    /// Position of the stream's last record.
    pub last_position: Position,
    pub tombstoned: bool,
}

/// One committed record, reduced to what the index needs.
#[derive(Clone, Debug)]
pub struct IndexRecord {
    pub address: u64,
    pub stream: Arc<str>,
    pub first_position: Position,
    pub first_revision: Revision,
    pub tombstone: bool,
    /// The type of each event, in order.
    pub event_types: Vec<Arc<str>>,
    /// The stream as the single writer knew it before this record, so staging need not look it
    /// up; `None` (recovery, reindexing) makes staging look it up.
    pub known: Option<KnownStream>,
}

/// A stream's id and next revision before a record, as the writer knows them. A stream the
/// index has not seen gets the id [`Index::next_stream_id`] would give it; the writer hands out
/// ids for new streams in record order, as staging would.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KnownStream {
    pub id: u64,
    pub next_revision: u64,
}

/// Records applied together, with the checkpoint they bring the index to.
#[derive(Clone, Debug, Default)]
pub struct IndexBatch {
    pub records: Vec<IndexRecord>,
    pub checkpoint: IndexCheckpoint,
}

/// Where one stream revision is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub revision: Revision,
    pub position: Position,
    /// Address of the record holding it.
    pub address: u64,
}

/// One event in a posting list: its revision in the list (dense from 0, in position order, never
/// changing), its position and the address of its record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Posting {
    pub revision: Revision,
    pub position: Position,
    pub address: u64,
}

/// Where a record starts: its first position and its address (an entry of the sparse position
/// map).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordStart {
    pub position: Position,
    pub address: u64,
}

/// Which posting list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PostingKind {
    Category,
    EventType,
}

/// Entry counts, for `annals check`. Stream entries and postings are counted per record (or
/// per run of one event type), as stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IndexStats {
    pub streams: u64,
    pub stream_entries: u64,
    pub category_postings: u64,
    pub type_postings: u64,
    pub position_entries: u64,
}

// The engine holds the index as `Arc<dyn Index>`: this stops compiling if the trait stops being
// dyn compatible (a generic method, `Self` by value, an associated constant).
const _: Option<&dyn Index> = None;

/// The index as the engine sees it. Reads see every applied batch; only [`Index::flush`] makes
/// them durable, which is safe because they can be re-derived from the log.
pub trait Index: Send + Sync + Debug {
    fn checkpoint(&self) -> Result<IndexCheckpoint, IndexError>;
    /// Adds a batch of records (all after the current checkpoint) in memory, visible to reads at
    /// once, and moves the checkpoint; [`Index::commit_staged`] writes it to the store.
    fn stage(&self, batch: &IndexBatch) -> Result<(), IndexError>;
    /// Writes every staged batch to the store, in one transaction (not durable).
    fn commit_staged(&self) -> Result<(), IndexError>;
    /// Like [`Index::commit_staged`], unless a commit or flush is under way: then it returns
    /// `false` at once and the batches stay staged.
    fn try_commit_staged(&self) -> Result<bool, IndexError> {
        self.commit_staged().map(|()| true)
    }
    /// Stages and commits a batch.
    fn apply(&self, batch: &IndexBatch) -> Result<(), IndexError> {
        self.stage(batch)?;
        self.commit_staged()
    }
    /// Commits what is staged and makes everything durable.
    fn flush(&self) -> Result<(), IndexError>;
    /// After a failed write or sync of the store (which then fails every call): opens it again
    /// at its last durable state, with every batch staged or committed since kept visible, so
    /// reads answer as before. It needs no free space; what it could not commit is committed by
    /// the next [`Index::commit_staged`] or [`Index::flush`].
    fn reopen(&self) -> Result<(), IndexError>;
    fn stream_head(&self, stream: &str) -> Result<Option<StreamHead>, IndexError>;
    /// The id the next stream new to the index (staged batches included) will get.
    fn next_stream_id(&self) -> Result<u64, IndexError>;
    /// Up to `limit` entries of stream `id` from revision `from` (inclusive) in `direction`.
    fn stream_entries(
        &self,
        id: u64,
        from: Revision,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<Entry>, IndexError>;
    /// Up to `limit` postings of `key` from revision `from` (inclusive) in `direction`.
    fn postings(
        &self,
        kind: PostingKind,
        key: &str,
        from: Revision,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<Posting>, IndexError>;
    /// The start of the record holding `position`, or of an earlier one: the greatest entry of the
    /// sparse position map at or below `position`.
    fn seek(&self, position: Position) -> Result<Option<RecordStart>, IndexError>;
    /// Counts of committed entries (call [`Index::commit_staged`] first to count everything).
    fn stats(&self) -> Result<IndexStats, IndexError>;
    /// Every committed stream name with its head, in name order, starting after `after`.
    fn streams(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, StreamHead)>, IndexError>;
}

/// Shares one index between the engine's threads.
impl<T: Index + ?Sized> Index for Arc<T> {
    fn checkpoint(&self) -> Result<IndexCheckpoint, IndexError> {
        (**self).checkpoint()
    }
    fn apply(&self, batch: &IndexBatch) -> Result<(), IndexError> {
        (**self).apply(batch)
    }
    fn stage(&self, batch: &IndexBatch) -> Result<(), IndexError> {
        (**self).stage(batch)
    }
    fn commit_staged(&self) -> Result<(), IndexError> {
        (**self).commit_staged()
    }
    fn try_commit_staged(&self) -> Result<bool, IndexError> {
        (**self).try_commit_staged()
    }
    fn flush(&self) -> Result<(), IndexError> {
        (**self).flush()
    }
    fn reopen(&self) -> Result<(), IndexError> {
        (**self).reopen()
    }
    fn stream_head(&self, stream: &str) -> Result<Option<StreamHead>, IndexError> {
        (**self).stream_head(stream)
    }
    fn next_stream_id(&self) -> Result<u64, IndexError> {
        (**self).next_stream_id()
    }
    fn stream_entries(
        &self,
        id: u64,
        from: Revision,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<Entry>, IndexError> {
        (**self).stream_entries(id, from, direction, limit)
    }
    fn postings(
        &self,
        kind: PostingKind,
        key: &str,
        from: Revision,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<Posting>, IndexError> {
        (**self).postings(kind, key, from, direction, limit)
    }
    fn seek(&self, position: Position) -> Result<Option<RecordStart>, IndexError> {
        (**self).seek(position)
    }
    fn stats(&self) -> Result<IndexStats, IndexError> {
        (**self).stats()
    }
    fn streams(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, StreamHead)>, IndexError> {
        (**self).streams(after, limit)
    }
}
