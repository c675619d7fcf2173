//! [`Index`] kept in a redb database (`index.redb`) in the store's directory.
//!
//! Tables:
//! - `meta`: the checkpoint and the next stream id;
//! - `streams`: name → (id, next revision, last position, flags);
//! - `stream_events`: (stream id, first revision of a record) → (first position, record address,
//!   event count): one entry per record, so a 100-event append costs one insert, not 100;
//! - `categories`: (category, first position of a record) → (record address, event count);
//! - `event_types`: (type, first position of a run of events of that type within a record) →
//!   (record address, run length);
//! - `positions`: first position of a record → its address, sparse (see [`POSITION_BUCKET`]).
//!
//! Each batch is one write transaction committed without fsync; [`Index::flush`] commits durably.
//! redb was chosen over fjall for its faster range reads and lack of background threads (see
//! ARCHITECTURE.md).

use std::collections::HashMap;
use std::sync::Arc;

use annals_core::{Direction, Position, Revision, category_of};
use annals_log::Storage;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};

use crate::error::IndexError;
use crate::redb_backend::Backend;
use crate::types::{
    Entry, Index, IndexBatch, IndexCheckpoint, IndexStats, POSITION_BUCKET, Posting, PostingKind,
    StreamHead,
};

/// The index's file name in the store directory.
pub const INDEX_FILE: &str = "index.redb";

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const STREAMS: TableDefinition<&str, (u64, u64, u64, u64)> = TableDefinition::new("streams");
const STREAM_EVENTS: TableDefinition<(u64, u64), (u64, u64, u64)> =
    TableDefinition::new("stream_events");
const CATEGORIES: TableDefinition<(&str, u64), (u64, u64)> = TableDefinition::new("categories");
const EVENT_TYPES: TableDefinition<(&str, u64), (u64, u64)> = TableDefinition::new("event_types");
const POSITIONS: TableDefinition<u64, u64> = TableDefinition::new("positions");

const META_ADDRESS: &str = "checkpoint_address";
const META_NEXT_POSITION: &str = "checkpoint_next_position";
const META_NEXT_STREAM_ID: &str = "next_stream_id";
const META_LAST_RECORD: &str = "checkpoint_last_record";

const FLAG_TOMBSTONED: u64 = 1;

/// Settings of the redb index.
#[derive(Clone, Debug)]
pub struct RedbIndexConfig {
    /// redb's page cache, in bytes.
    pub cache_bytes: usize,
}

impl Default for RedbIndexConfig {
    fn default() -> Self {
        Self {
            cache_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The redb-backed index.
#[derive(Debug)]
pub struct RedbIndex {
    db: Database,
}

type HeadTuple = (u64, u64, u64, u64);

fn head_from(t: HeadTuple) -> StreamHead {
    let (id, next_revision, last_position, flags) = t;
    StreamHead {
        id,
        last_revision: next_revision.checked_sub(1),
        last_position: Position(last_position),
        tombstoned: flags & FLAG_TOMBSTONED != 0,
    }
}

impl RedbIndex {
    /// Opens (or creates) the index file in `storage`.
    pub fn open(storage: &dyn Storage, config: &RedbIndexConfig) -> Result<Self, IndexError> {
        let file = storage
            .open(INDEX_FILE, true)
            .map_err(|e| IndexError::Store(redb::StorageError::Io(e).into()))?;
        let db = Database::builder()
            .set_cache_size(config.cache_bytes)
            .create_with_backend(Backend(file))?;
        let mut txn = db.begin_write()?;
        txn.set_quick_repair(true);
        {
            txn.open_table(META)?;
            txn.open_table(STREAMS)?;
            txn.open_table(STREAM_EVENTS)?;
            txn.open_table(CATEGORIES)?;
            txn.open_table(EVENT_TYPES)?;
            txn.open_table(POSITIONS)?;
        }
        txn.commit()?;
        Ok(Self { db })
    }

    /// Removes the index file so the next open starts empty (used when the index is damaged or
    /// ahead of the log).
    pub fn destroy(storage: &dyn Storage) -> Result<(), IndexError> {
        match storage.remove(INDEX_FILE) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(IndexError::Store(redb::StorageError::Io(e).into())),
        }
        storage
            .sync_dir()
            .map_err(|e| IndexError::Store(redb::StorageError::Io(e).into()))
    }
}

fn needs_position_entry(first: u64, last: u64) -> bool {
    first == 1 || last / POSITION_BUCKET > first.saturating_sub(1) / POSITION_BUCKET
}

/// The end (exclusive) of a run of `count` numbers from `first`, as stored in an entry of `table`
/// keyed by `key`: an end past `u64::MAX` means the index file is damaged.
fn run_end(
    table: &str,
    key: impl std::fmt::Debug,
    first: u64,
    count: u64,
) -> Result<u64, IndexError> {
    first.checked_add(count).ok_or_else(|| {
        IndexError::Inconsistent(format!(
            "{table} entry {key:?}: {count} from {first} passes the largest number"
        ))
    })
}

impl Index for RedbIndex {
    fn checkpoint(&self) -> Result<IndexCheckpoint, IndexError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let get = |k| -> Result<Option<u64>, IndexError> { Ok(meta.get(k)?.map(|v| v.value())) };
        Ok(IndexCheckpoint {
            address: get(META_ADDRESS)?.unwrap_or(0),
            next_position: Position(get(META_NEXT_POSITION)?.unwrap_or(1)),
            last_record_address: get(META_LAST_RECORD)?.unwrap_or(0),
        })
    }

    fn apply(&self, batch: &IndexBatch) -> Result<(), IndexError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::None)?;
        {
            let mut meta = txn.open_table(META)?;
            let mut streams = txn.open_table(STREAMS)?;
            let mut events = txn.open_table(STREAM_EVENTS)?;
            let mut categories = txn.open_table(CATEGORIES)?;
            let mut types = txn.open_table(EVENT_TYPES)?;
            let mut positions = txn.open_table(POSITIONS)?;
            let mut next_id = meta
                .get(META_NEXT_STREAM_ID)?
                .map(|v| v.value())
                .unwrap_or(1);
            // Heads touched in this batch, written once at the end.
            let mut heads: HashMap<&str, HeadTuple> = HashMap::new();
            for rec in &batch.records {
                let name: &str = &rec.stream;
                let head = match heads.get(name) {
                    Some(h) => *h,
                    None => match streams.get(name)? {
                        Some(h) => h.value(),
                        None => {
                            let id = next_id;
                            next_id = run_end("meta", META_NEXT_STREAM_ID, id, 1)?;
                            (id, 0, 0, 0)
                        }
                    },
                };
                let (id, mut next_revision, _, mut flags) = head;
                let count = rec.event_types.len() as u64;
                if count == 0 {
                    return Err(IndexError::Inconsistent(format!(
                        "record at {} has no events",
                        rec.address
                    )));
                }
                let first = rec.first_position.0;
                let last = run_end("record", rec.address, first, count)? - 1;
                if rec.tombstone {
                    flags |= FLAG_TOMBSTONED;
                } else {
                    if rec.first_revision.0 != next_revision {
                        return Err(IndexError::Inconsistent(format!(
                            "stream {name}: record at {} starts at revision {}, expected {next_revision}",
                            rec.address, rec.first_revision.0
                        )));
                    }
                    events.insert((id, next_revision), (first, rec.address, count))?;
                    categories.insert((category_of(name), first), (rec.address, count))?;
                    let mut run_start = 0usize;
                    for (i, ty) in rec.event_types.iter().enumerate() {
                        let next_differs = rec.event_types.get(i + 1).is_none_or(|n| n != ty);
                        if next_differs {
                            let run = (i + 1 - run_start) as u64;
                            types.insert((&**ty, first + run_start as u64), (rec.address, run))?;
                            run_start = i + 1;
                        }
                    }
                    next_revision = run_end("streams", name, next_revision, count)?;
                }
                if needs_position_entry(first, last) {
                    positions.insert(first, rec.address)?;
                }
                heads.insert(name, (id, next_revision, last, flags));
            }
            for (name, head) in heads {
                streams.insert(name, head)?;
            }
            meta.insert(META_NEXT_STREAM_ID, next_id)?;
            meta.insert(META_ADDRESS, batch.checkpoint.address)?;
            meta.insert(META_NEXT_POSITION, batch.checkpoint.next_position.0)?;
            meta.insert(META_LAST_RECORD, batch.checkpoint.last_record_address)?;
        }
        txn.commit()?;
        Ok(())
    }

    fn flush(&self) -> Result<(), IndexError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.set_quick_repair(true);
        txn.commit()?;
        Ok(())
    }

    fn stream_head(&self, stream: &str) -> Result<Option<StreamHead>, IndexError> {
        let txn = self.db.begin_read()?;
        let streams = txn.open_table(STREAMS)?;
        Ok(streams.get(stream)?.map(|h| head_from(h.value())))
    }

    fn stream_entries(
        &self,
        id: u64,
        from: Revision,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<Entry>, IndexError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(STREAM_EVENTS)?;
        let mut out = Vec::with_capacity(limit.min(1024));
        // The record holding `from` starts at or before it.
        let start = table
            .range((id, 0)..=(id, from.0))?
            .next_back()
            .transpose()?
            .map_or(from.0, |(k, _)| k.value().1);
        let expand = |out: &mut Vec<Entry>, k: (u64, u64), v: (u64, u64, u64)| {
            let (first_rev, (first_pos, address, count)) = (k.1, v);
            let room = limit.saturating_sub(out.len());
            let revs = first_rev..run_end("stream_events", k, first_rev, count)?;
            // The positions run alongside the revisions, so their end must fit too.
            run_end("stream_events", k, first_pos, count)?;
            let entry = |r: u64| Entry {
                revision: Revision(r),
                position: Position(first_pos + (r - first_rev)),
                address,
            };
            // Clamp the run to `from` first, so a huge count from a damaged entry costs nothing.
            match direction {
                Direction::Forwards => {
                    out.extend((revs.start.max(from.0)..revs.end).take(room).map(entry))
                }
                Direction::Backwards => out.extend(
                    (revs.start..revs.end.min(from.0.saturating_add(1)))
                        .rev()
                        .take(room)
                        .map(entry),
                ),
            }
            Ok::<(), IndexError>(())
        };
        match direction {
            Direction::Forwards => {
                for item in table.range((id, start)..=(id, u64::MAX))? {
                    if out.len() >= limit {
                        break;
                    }
                    let (k, v) = item?;
                    expand(&mut out, k.value(), v.value())?;
                }
            }
            Direction::Backwards => {
                for item in table.range((id, 0)..=(id, from.0))?.rev() {
                    if out.len() >= limit {
                        break;
                    }
                    let (k, v) = item?;
                    expand(&mut out, k.value(), v.value())?;
                }
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    fn postings(
        &self,
        kind: PostingKind,
        key: &str,
        from: Position,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<Posting>, IndexError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(match kind {
            PostingKind::Category => CATEGORIES,
            PostingKind::EventType => EVENT_TYPES,
        })?;
        let mut out = Vec::with_capacity(limit.min(1024));
        // The run holding `from` starts at or before it.
        let start = table
            .range((key, 0)..=(key, from.0))?
            .next_back()
            .transpose()?
            .map_or(from.0, |(k, _)| k.value().1);
        let expand = |out: &mut Vec<Posting>, first: u64, (address, count): (u64, u64)| {
            let room = limit.saturating_sub(out.len());
            let positions = first..run_end("postings", (key, first), first, count)?;
            let mut push = |p: u64| {
                out.push(Posting {
                    position: Position(p),
                    address,
                })
            };
            // Clamp the run to `from` first, so a huge count from a damaged entry costs nothing.
            match direction {
                Direction::Forwards => (positions.start.max(from.0)..positions.end)
                    .take(room)
                    .for_each(&mut push),
                Direction::Backwards => (positions.start
                    ..positions.end.min(from.0.saturating_add(1)))
                    .rev()
                    .take(room)
                    .for_each(&mut push),
            }
            Ok::<(), IndexError>(())
        };
        match direction {
            Direction::Forwards => {
                for item in table.range((key, start)..=(key, u64::MAX))? {
                    if out.len() >= limit {
                        break;
                    }
                    let (k, v) = item?;
                    expand(&mut out, k.value().1, v.value())?;
                }
            }
            Direction::Backwards => {
                for item in table.range((key, 0)..=(key, from.0))?.rev() {
                    if out.len() >= limit {
                        break;
                    }
                    let (k, v) = item?;
                    expand(&mut out, k.value().1, v.value())?;
                }
            }
        }
        Ok(out)
    }

    fn seek(&self, position: Position) -> Result<Option<Posting>, IndexError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(POSITIONS)?;
        let found = table.range(..=position.0)?.next_back().transpose()?;
        Ok(found.map(|(k, v)| Posting {
            position: Position(k.value()),
            address: v.value(),
        }))
    }

    fn stats(&self) -> Result<IndexStats, IndexError> {
        let txn = self.db.begin_read()?;
        Ok(IndexStats {
            streams: txn.open_table(STREAMS)?.len()?,
            stream_entries: txn.open_table(STREAM_EVENTS)?.len()?,
            category_postings: txn.open_table(CATEGORIES)?.len()?,
            type_postings: txn.open_table(EVENT_TYPES)?.len()?,
            position_entries: txn.open_table(POSITIONS)?.len()?,
        })
    }

    fn streams(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, StreamHead)>, IndexError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(STREAMS)?;
        let mut out = Vec::new();
        let iter = match after {
            Some(a) => {
                table.range::<&str>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))?
            }
            None => table.range::<&str>(..)?,
        };
        for item in iter.take(limit) {
            let (k, v) = item?;
            out.push((k.value().to_owned(), head_from(v.value())));
        }
        Ok(out)
    }
}

/// Shares one index between the engine's threads.
impl<T: Index + ?Sized> Index for Arc<T> {
    fn checkpoint(&self) -> Result<IndexCheckpoint, IndexError> {
        (**self).checkpoint()
    }
    fn apply(&self, batch: &IndexBatch) -> Result<(), IndexError> {
        (**self).apply(batch)
    }
    fn flush(&self) -> Result<(), IndexError> {
        (**self).flush()
    }
    fn stream_head(&self, stream: &str) -> Result<Option<StreamHead>, IndexError> {
        (**self).stream_head(stream)
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
        from: Position,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<Posting>, IndexError> {
        (**self).postings(kind, key, from, direction, limit)
    }
    fn seek(&self, position: Position) -> Result<Option<Posting>, IndexError> {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use super::*;
    use crate::types::IndexRecord;
    use annals_log::FaultStorage;

    fn rec(addr: u64, stream: &str, pos: u64, rev: u64, n: usize) -> IndexRecord {
        IndexRecord {
            address: addr,
            stream: Arc::from(stream),
            first_position: Position(pos),
            first_revision: Revision(rev),
            tombstone: false,
            event_types: (0..n).map(|_| Arc::from("Ty")).collect(),
        }
    }

    #[test]
    fn apply_and_query() {
        let storage = FaultStorage::new();
        let idx = RedbIndex::open(&storage, &RedbIndexConfig::default()).unwrap();
        let batch = IndexBatch {
            records: vec![
                rec(64, "order-1", 1, 0, 2),
                rec(200, "order-2", 3, 0, 1),
                rec(300, "order-1", 4, 2, 1),
            ],
            checkpoint: IndexCheckpoint {
                address: 400,
                next_position: Position(5),
                last_record_address: 300,
            },
        };
        idx.apply(&batch).unwrap();
        let head = idx.stream_head("order-1").unwrap().unwrap();
        assert_eq!(head.last_revision, Some(2));
        assert_eq!(head.last_position, Position(4));
        let fwd = idx
            .stream_entries(head.id, Revision(1), Direction::Forwards, 10)
            .unwrap();
        assert_eq!(
            fwd.iter()
                .map(|e| (e.revision.0, e.position.0, e.address))
                .collect::<Vec<_>>(),
            vec![(1, 2, 64), (2, 4, 300)]
        );
        let back = idx
            .stream_entries(head.id, Revision(1), Direction::Backwards, 10)
            .unwrap();
        assert_eq!(
            back.iter().map(|e| e.revision.0).collect::<Vec<_>>(),
            vec![1, 0]
        );
        let cat = idx
            .postings(
                PostingKind::Category,
                "order",
                Position(2),
                Direction::Forwards,
                10,
            )
            .unwrap();
        assert_eq!(
            cat.iter().map(|p| p.position.0).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        assert_eq!(idx.seek(Position(4)).unwrap().unwrap().address, 64);
        assert_eq!(idx.checkpoint().unwrap().next_position, Position(5));
        // A record that skips revisions is refused.
        let bad = IndexBatch {
            records: vec![rec(500, "order-2", 5, 5, 1)],
            checkpoint: IndexCheckpoint::default(),
        };
        assert!(matches!(idx.apply(&bad), Err(IndexError::Inconsistent(_))));
    }

    #[test]
    fn damaged_counts_are_errors_not_overflows() {
        let storage = FaultStorage::new();
        let idx = RedbIndex::open(&storage, &RedbIndexConfig::default()).unwrap();
        // Entries whose runs pass u64::MAX, as a damaged index file could hold them.
        let txn = idx.db.begin_write().unwrap();
        {
            let mut events = txn.open_table(STREAM_EVENTS).unwrap();
            events.insert((7, 0), (u64::MAX, 64, 2)).unwrap();
            let mut categories = txn.open_table(CATEGORIES).unwrap();
            categories.insert(("order", u64::MAX), (64, 2)).unwrap();
        }
        txn.commit().unwrap();
        for direction in [Direction::Forwards, Direction::Backwards] {
            let entries = idx.stream_entries(7, Revision(0), direction, 10);
            assert!(matches!(entries, Err(IndexError::Inconsistent(_))));
            let postings =
                idx.postings(PostingKind::Category, "order", Position::END, direction, 10);
            assert!(matches!(postings, Err(IndexError::Inconsistent(_))));
        }
        // A record whose positions would pass u64::MAX is refused too.
        let bad = IndexBatch {
            records: vec![rec(64, "order-1", u64::MAX, 0, 2)],
            checkpoint: IndexCheckpoint::default(),
        };
        assert!(matches!(idx.apply(&bad), Err(IndexError::Inconsistent(_))));
        assert!(!needs_position_entry(0, 5));
    }
}
