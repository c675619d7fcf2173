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
//! Batches are staged in memory first ([`crate::staged`]) and committed to redb without fsync,
//! several per transaction; [`Index::flush`] commits durably.
//! redb was chosen over fjall for its faster range reads and lack of background threads (see
//! ARCHITECTURE.md).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use annals_core::{Direction, Position, Revision};
use annals_log::Storage;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};

use crate::error::IndexError;
use crate::redb_backend::Backend;
use crate::staged::{HeadTuple, Staged, StagedBatch, StagedRecord};
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
const META_GENERATION: &str = "staged_generation";

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
    staged: RwLock<Staged>,
    /// One commit at a time, so committed heads and generations only move forwards.
    commit_lock: Mutex<()>,
}

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
        let (next_id, generation) = {
            let meta = txn.open_table(META)?;
            txn.open_table(STREAMS)?;
            txn.open_table(STREAM_EVENTS)?;
            txn.open_table(CATEGORIES)?;
            txn.open_table(EVENT_TYPES)?;
            txn.open_table(POSITIONS)?;
            let get =
                |k| -> Result<Option<u64>, IndexError> { Ok(meta.get(k)?.map(|v| v.value())) };
            (
                get(META_NEXT_STREAM_ID)?.unwrap_or(1),
                get(META_GENERATION)?.unwrap_or(0),
            )
        };
        txn.commit()?;
        Ok(Self {
            db,
            staged: RwLock::new(Staged {
                batches: Vec::new(),
                heads: HashMap::new(),
                next_generation: generation.saturating_add(1),
                next_id,
            }),
            commit_lock: Mutex::new(()),
        })
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

    /// A consistent view: the staged batches a fresh redb snapshot does not yet hold, and that
    /// snapshot. The staged list is taken first, so a commit in between is seen exactly once.
    fn view(&self) -> Result<(Vec<Arc<StagedBatch>>, redb::ReadTransaction), IndexError> {
        let mut staged = self.staged.read().batches.clone();
        let txn = self.db.begin_read()?;
        let committed = txn
            .open_table(META)?
            .get(META_GENERATION)?
            .map_or(0, |v| v.value());
        staged.retain(|b| b.generation > committed);
        Ok((staged, txn))
    }

    /// Writes every staged batch to redb in one transaction; the caller holds `commit_lock`.
    fn commit_staged_locked(&self) -> Result<(), IndexError> {
        let batches = self.staged.read().batches.clone();
        let Some(newest) = batches.last() else {
            return Ok(());
        };
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::None)?;
        {
            let mut meta = txn.open_table(META)?;
            let mut streams = txn.open_table(STREAMS)?;
            let mut events = txn.open_table(STREAM_EVENTS)?;
            let mut categories = txn.open_table(CATEGORIES)?;
            let mut types = txn.open_table(EVENT_TYPES)?;
            let mut positions = txn.open_table(POSITIONS)?;
            // Entries are inserted in key order: neighbours land in the same B-tree pages, which
            // redb then copies and hashes once per transaction instead of once per entry.
            let mut heads: HashMap<&str, HeadTuple> = HashMap::new();
            let mut stream_entries = Vec::new();
            for batch in &batches {
                for r in &batch.records {
                    let count = r.count();
                    if !r.tombstone {
                        stream_entries.push((
                            (r.id, r.first_revision),
                            (r.first_position, r.address, count),
                        ));
                        categories.insert((r.category(), r.first_position), (r.address, count))?;
                        for (ty, first, run) in r.type_runs() {
                            types.insert((&**ty, first), (r.address, run))?;
                        }
                    }
                    let last = r.first_position.saturating_add(count.saturating_sub(1));
                    if needs_position_entry(r.first_position, last) {
                        positions.insert(r.first_position, r.address)?;
                    }
                }
                for (name, head) in &batch.heads {
                    heads.insert(name, *head);
                }
            }
            stream_entries.sort_unstable_by_key(|(k, _)| *k);
            for (k, v) in stream_entries {
                events.insert(k, v)?;
            }
            let mut heads: Vec<(&str, HeadTuple)> = heads.into_iter().collect();
            heads.sort_unstable_by_key(|(name, _)| *name);
            for (name, head) in heads {
                streams.insert(name, head)?;
            }
            meta.insert(META_NEXT_STREAM_ID, newest.next_id)?;
            meta.insert(META_ADDRESS, newest.checkpoint.address)?;
            meta.insert(META_NEXT_POSITION, newest.checkpoint.next_position.0)?;
            meta.insert(META_LAST_RECORD, newest.checkpoint.last_record_address)?;
            meta.insert(META_GENERATION, newest.generation)?;
        }
        txn.commit()?;
        self.staged.write().committed(newest.generation);
        Ok(())
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

/// One entry of `stream_events` as a range yields it.
type StreamEventItem<'a> = Result<
    (
        redb::AccessGuard<'a, (u64, u64)>,
        redb::AccessGuard<'a, (u64, u64, u64)>,
    ),
    redb::StorageError,
>;

/// Appends the part of one run (`count` numbers from `first`, the matching positions from
/// `first_pos`) at or beyond `from` in `direction`, up to `limit` items in `out`.
#[allow(clippy::too_many_arguments)]
fn push_run<T>(
    out: &mut Vec<T>,
    first: u64,
    first_pos: u64,
    count: u64,
    from: u64,
    direction: Direction,
    limit: usize,
    make: impl Fn(u64, u64) -> T,
) -> Result<(), IndexError> {
    let end = run_end("run", first, first, count)?;
    // The positions run alongside, so their end must fit too.
    run_end("run", first_pos, first_pos, count)?;
    let room = limit.saturating_sub(out.len());
    let item = |n: u64| make(n, first_pos + (n - first));
    // Clamp the run to `from` first, so a huge count from a damaged entry costs nothing.
    match direction {
        Direction::Forwards => out.extend((first.max(from)..end).take(room).map(item)),
        Direction::Backwards => out.extend(
            (first..end.min(from.saturating_add(1)))
                .rev()
                .take(room)
                .map(item),
        ),
    }
    Ok(())
}

/// Items of the staged runs, in `direction` order, appended to `out` up to `limit`.
#[allow(clippy::too_many_arguments)]
fn push_staged<T>(
    out: &mut Vec<T>,
    runs: &[(u64, u64, u64, u64)],
    from: u64,
    direction: Direction,
    limit: usize,
    make: impl Fn(u64, u64, u64) -> T,
) -> Result<(), IndexError> {
    let mut push = |&(first, first_pos, count, address): &(u64, u64, u64, u64)| {
        push_run(
            out,
            first,
            first_pos,
            count,
            from,
            direction,
            limit,
            |n, p| make(n, p, address),
        )
    };
    match direction {
        Direction::Forwards => runs.iter().try_for_each(&mut push),
        Direction::Backwards => runs.iter().rev().try_for_each(&mut push),
    }
}

impl Index for RedbIndex {
    fn checkpoint(&self) -> Result<IndexCheckpoint, IndexError> {
        if let Some(b) = self.staged.read().batches.last() {
            return Ok(b.checkpoint);
        }
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let get = |k| -> Result<Option<u64>, IndexError> { Ok(meta.get(k)?.map(|v| v.value())) };
        Ok(IndexCheckpoint {
            address: get(META_ADDRESS)?.unwrap_or(0),
            next_position: Position(get(META_NEXT_POSITION)?.unwrap_or(1)),
            last_record_address: get(META_LAST_RECORD)?.unwrap_or(0),
        })
    }

    fn stage(&self, batch: &IndexBatch) -> Result<(), IndexError> {
        let mut staged = self.staged.write();
        // Opened only for a stream neither staged nor known to the writer (recovery, reindex).
        let mut snapshot: Option<redb::ReadOnlyTable<&str, HeadTuple>> = None;
        let mut next_id = staged.next_id;
        let mut heads: HashMap<Arc<str>, HeadTuple> = HashMap::new();
        let mut records = Vec::with_capacity(batch.records.len());
        for rec in &batch.records {
            let name: &str = &rec.stream;
            let found = heads
                .get(name)
                .copied()
                .or_else(|| staged.head(name).map(|(h, _)| h));
            let head = match (found, rec.known) {
                (Some(h), Some(known)) if h.0 != known.id => {
                    return Err(IndexError::Inconsistent(format!(
                        "stream {name}: the writer knows it as id {}, the index as id {}",
                        known.id, h.0
                    )));
                }
                (Some(h), _) => h,
                // A stream the index has not seen: the writer handed out the next id.
                (None, Some(known)) if known.id >= next_id => {
                    if known.id != next_id || known.next_revision != 0 {
                        return Err(IndexError::Inconsistent(format!(
                            "stream {name}: the writer made it new with id {} at revision {}, \
                             the next id is {next_id}",
                            known.id, known.next_revision
                        )));
                    }
                    next_id = run_end("meta", META_NEXT_STREAM_ID, next_id, 1)?;
                    (known.id, 0, 0, 0)
                }
                // Known to the writer, committed to the store: the writer never appends to a
                // tombstoned stream, so its flags are clear.
                (None, Some(known)) => (known.id, known.next_revision, 0, 0),
                (None, None) => {
                    let table = match &mut snapshot {
                        Some(t) => t,
                        None => snapshot.insert(self.db.begin_read()?.open_table(STREAMS)?),
                    };
                    match table.get(name)? {
                        Some(h) => h.value(),
                        None => {
                            let id = next_id;
                            next_id = run_end("meta", META_NEXT_STREAM_ID, id, 1)?;
                            (id, 0, 0, 0)
                        }
                    }
                }
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
            let first_revision = next_revision;
            if rec.tombstone {
                flags |= FLAG_TOMBSTONED;
            } else {
                if rec.first_revision.0 != next_revision {
                    return Err(IndexError::Inconsistent(format!(
                        "stream {name}: record at {} starts at revision {}, expected {next_revision}",
                        rec.address, rec.first_revision.0
                    )));
                }
                next_revision = run_end("streams", name, next_revision, count)?;
            }
            records.push(StagedRecord {
                id,
                address: rec.address,
                stream: Arc::clone(&rec.stream),
                first_position: first,
                first_revision,
                tombstone: rec.tombstone,
                event_types: rec.event_types.clone(),
            });
            heads.insert(Arc::clone(&rec.stream), (id, next_revision, last, flags));
        }
        let generation = staged.next_generation;
        for (name, head) in &heads {
            staged.heads.insert(Arc::clone(name), (*head, generation));
        }
        staged.batches.push(Arc::new(StagedBatch {
            generation,
            records,
            heads,
            next_id,
            checkpoint: batch.checkpoint,
        }));
        staged.next_generation = generation.saturating_add(1);
        staged.next_id = next_id;
        Ok(())
    }

    fn commit_staged(&self) -> Result<(), IndexError> {
        let _one_at_a_time = self.commit_lock.lock();
        self.commit_staged_locked()
    }

    fn try_commit_staged(&self) -> Result<bool, IndexError> {
        match self.commit_lock.try_lock() {
            Some(_one_at_a_time) => self.commit_staged_locked().map(|()| true),
            None => Ok(false),
        }
    }

    fn flush(&self) -> Result<(), IndexError> {
        let _one_at_a_time = self.commit_lock.lock();
        self.commit_staged_locked()?;
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.set_quick_repair(true);
        txn.commit()?;
        Ok(())
    }

    fn next_stream_id(&self) -> Result<u64, IndexError> {
        Ok(self.staged.read().next_id)
    }

    fn stream_head(&self, stream: &str) -> Result<Option<StreamHead>, IndexError> {
        // As in `view`: the staged head first, then the snapshot, which wins if it already holds
        // the generation that wrote the staged head.
        let staged = self.staged.read().head(stream);
        let txn = self.db.begin_read()?;
        if let Some((head, generation)) = staged {
            let committed = txn
                .open_table(META)?
                .get(META_GENERATION)?
                .map_or(0, |v| v.value());
            if generation > committed {
                return Ok(Some(head_from(head)));
            }
        }
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
        let (staged, txn) = self.view()?;
        // Staged records of this stream: (first revision, first position, count, address).
        let runs: Vec<(u64, u64, u64, u64)> = staged
            .iter()
            .flat_map(|b| b.records.iter())
            .filter(|r| r.id == id && !r.tombstone)
            .map(|r| (r.first_revision, r.first_position, r.count(), r.address))
            .collect();
        let make = |revision, position, address| Entry {
            revision: Revision(revision),
            position: Position(position),
            address,
        };
        let mut out = Vec::with_capacity(limit.min(1024));
        // Staged revisions all follow the committed ones.
        if direction == Direction::Backwards {
            push_staged(&mut out, &runs, from.0, direction, limit, make)?;
        }
        let table = txn.open_table(STREAM_EVENTS)?;
        // The record holding `from` starts at or before it.
        let start = table
            .range((id, 0)..=(id, from.0))?
            .next_back()
            .transpose()?
            .map_or(from.0, |(k, _)| k.value().1);
        let committed =
            |item: StreamEventItem<'_>, out: &mut Vec<Entry>| -> Result<(), IndexError> {
                let (k, v) = item?;
                let ((_, first_rev), (first_pos, address, count)) = (k.value(), v.value());
                push_run(
                    out,
                    first_rev,
                    first_pos,
                    count,
                    from.0,
                    direction,
                    limit,
                    |r, p| make(r, p, address),
                )
            };
        match direction {
            Direction::Forwards => {
                for item in table.range((id, start)..=(id, u64::MAX))? {
                    if out.len() >= limit {
                        break;
                    }
                    committed(item, &mut out)?;
                }
                push_staged(&mut out, &runs, from.0, direction, limit, make)?;
            }
            Direction::Backwards => {
                for item in table.range((id, 0)..=(id, from.0))?.rev() {
                    if out.len() >= limit {
                        break;
                    }
                    committed(item, &mut out)?;
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
        let (staged, txn) = self.view()?;
        // Staged runs of this key: (first position, first position, count, address).
        let mut runs: Vec<(u64, u64, u64, u64)> = Vec::new();
        for r in staged
            .iter()
            .flat_map(|b| b.records.iter())
            .filter(|r| !r.tombstone)
        {
            match kind {
                PostingKind::Category => {
                    if r.category() == key {
                        runs.push((r.first_position, r.first_position, r.count(), r.address));
                    }
                }
                PostingKind::EventType => {
                    for (ty, first, run) in r.type_runs() {
                        if &**ty == key {
                            runs.push((first, first, run, r.address));
                        }
                    }
                }
            }
        }
        let make = |position, _, address| Posting {
            position: Position(position),
            address,
        };
        let mut out = Vec::with_capacity(limit.min(1024));
        if direction == Direction::Backwards {
            push_staged(&mut out, &runs, from.0, direction, limit, make)?;
        }
        let table = txn.open_table(match kind {
            PostingKind::Category => CATEGORIES,
            PostingKind::EventType => EVENT_TYPES,
        })?;
        // The run holding `from` starts at or before it.
        let start = table
            .range((key, 0)..=(key, from.0))?
            .next_back()
            .transpose()?
            .map_or(from.0, |(k, _)| k.value().1);
        let committed = |first: u64, (address, count): (u64, u64), out: &mut Vec<Posting>| {
            push_run(
                out,
                first,
                first,
                count,
                from.0,
                direction,
                limit,
                |p, _| make(p, p, address),
            )
        };
        match direction {
            Direction::Forwards => {
                for item in table.range((key, start)..=(key, u64::MAX))? {
                    if out.len() >= limit {
                        break;
                    }
                    let (k, v) = item?;
                    committed(k.value().1, v.value(), &mut out)?;
                }
                push_staged(&mut out, &runs, from.0, direction, limit, make)?;
            }
            Direction::Backwards => {
                for item in table.range((key, 0)..=(key, from.0))?.rev() {
                    if out.len() >= limit {
                        break;
                    }
                    let (k, v) = item?;
                    committed(k.value().1, v.value(), &mut out)?;
                }
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    fn seek(&self, position: Position) -> Result<Option<Posting>, IndexError> {
        let (staged, txn) = self.view()?;
        // Any staged record start at or below `position` is a valid place to scan from.
        let from_staged = staged
            .iter()
            .flat_map(|b| b.records.iter())
            .filter(|r| r.first_position <= position.0)
            .map(|r| Posting {
                position: Position(r.first_position),
                address: r.address,
            })
            .max_by_key(|p| p.position);
        let table = txn.open_table(POSITIONS)?;
        let committed = table
            .range(..=position.0)?
            .next_back()
            .transpose()?
            .map(|(k, v)| Posting {
                position: Position(k.value()),
                address: v.value(),
            });
        Ok(match (committed, from_staged) {
            (Some(c), Some(s)) => Some(if s.position > c.position { s } else { c }),
            (c, s) => c.or(s),
        })
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
    use crate::types::{IndexRecord, KnownStream};
    use annals_log::FaultStorage;

    fn rec(addr: u64, stream: &str, pos: u64, rev: u64, n: usize) -> IndexRecord {
        IndexRecord {
            address: addr,
            stream: Arc::from(stream),
            first_position: Position(pos),
            first_revision: Revision(rev),
            tombstone: false,
            event_types: (0..n).map(|_| Arc::from("Ty")).collect(),
            known: None,
        }
    }

    fn known(mut r: IndexRecord, id: u64, next_revision: u64) -> IndexRecord {
        r.known = Some(KnownStream { id, next_revision });
        r
    }

    fn batch_of(records: Vec<IndexRecord>, next_position: u64) -> IndexBatch {
        let last = records.last().map_or(0, |r| r.address);
        IndexBatch {
            records,
            checkpoint: IndexCheckpoint {
                address: last + 10,
                next_position: Position(next_position),
                last_record_address: last,
            },
        }
    }

    /// Records the writer describes stage exactly as looked-up ones do, and a description that
    /// contradicts the index is refused, not trusted.
    #[test]
    fn writer_known_streams_match_lookups() {
        let storage = FaultStorage::new();
        let idx = RedbIndex::open(&storage, &RedbIndexConfig::default()).unwrap();
        assert_eq!(idx.next_stream_id().unwrap(), 1);
        idx.apply(&batch_of(vec![rec(10, "a-1", 1, 0, 2)], 3))
            .unwrap();
        assert_eq!(idx.next_stream_id().unwrap(), 2);
        // Committed (not staged) stream known by id, and a new one with the next id.
        idx.stage(&batch_of(
            vec![
                known(rec(20, "a-1", 3, 2, 1), 1, 2),
                known(rec(30, "b-1", 4, 0, 1), 2, 0),
            ],
            5,
        ))
        .unwrap();
        assert_eq!(idx.next_stream_id().unwrap(), 3);
        let a = idx.stream_head("a-1").unwrap().unwrap();
        assert_eq!(
            (a.id, a.last_revision, a.last_position),
            (1, Some(2), Position(3))
        );
        let b = idx.stream_head("b-1").unwrap().unwrap();
        assert_eq!((b.id, b.last_revision), (2, Some(0)));
        idx.commit_staged().unwrap();
        let entries = idx
            .stream_entries(1, Revision(0), Direction::Forwards, 10)
            .unwrap();
        assert_eq!(
            entries.iter().map(|e| e.position.0).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        // A staged stream under another id, and a new stream skipping an id: refused.
        let wrong_id = idx.stage(&batch_of(vec![known(rec(40, "b-1", 5, 1, 1), 7, 1)], 6));
        assert!(
            matches!(wrong_id, Err(IndexError::Inconsistent(_))),
            "{wrong_id:?}"
        );
        let skipped = idx.stage(&batch_of(vec![known(rec(40, "c-1", 5, 0, 1), 4, 0)], 6));
        assert!(
            matches!(skipped, Err(IndexError::Inconsistent(_))),
            "{skipped:?}"
        );
        assert!(idx.stream_head("c-1").unwrap().is_none());
        assert_eq!(idx.next_stream_id().unwrap(), 3);
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

    /// Reads give the same answers whether a batch is only staged or committed, and never see a
    /// staged batch twice once it is committed.
    #[test]
    fn staged_batches_read_like_committed_ones() {
        let storage = FaultStorage::new();
        let idx = RedbIndex::open(&storage, &RedbIndexConfig::default()).unwrap();
        let cp = |address, next| IndexCheckpoint {
            address,
            next_position: Position(next),
            last_record_address: 0,
        };
        idx.apply(&IndexBatch {
            records: vec![rec(64, "order-1", 1, 0, 2), rec(200, "cart-1", 3, 0, 1)],
            checkpoint: cp(300, 4),
        })
        .unwrap();
        let mut second = rec(300, "order-1", 4, 2, 3);
        second.event_types = vec![Arc::from("Ty"), Arc::from("Other"), Arc::from("Ty")];
        idx.stage(&IndexBatch {
            records: vec![second, rec(400, "order-2", 7, 0, 1)],
            checkpoint: cp(500, 8),
        })
        .unwrap();
        let answers = |idx: &RedbIndex| {
            let head = idx.stream_head("order-1").unwrap().unwrap();
            let fwd = idx
                .stream_entries(head.id, Revision(1), Direction::Forwards, 10)
                .unwrap();
            let back = idx
                .stream_entries(head.id, Revision(3), Direction::Backwards, 3)
                .unwrap();
            let cat = idx
                .postings(
                    PostingKind::Category,
                    "order",
                    Position(2),
                    Direction::Forwards,
                    10,
                )
                .unwrap();
            let ty_back = idx
                .postings(
                    PostingKind::EventType,
                    "Ty",
                    Position::END,
                    Direction::Backwards,
                    10,
                )
                .unwrap();
            let new_stream = idx.stream_head("order-2").unwrap().map(|h| h.last_position);
            (
                head.last_revision,
                fwd.iter()
                    .map(|e| (e.revision.0, e.position.0, e.address))
                    .collect::<Vec<_>>(),
                back.iter().map(|e| e.revision.0).collect::<Vec<_>>(),
                cat.iter().map(|p| p.position.0).collect::<Vec<_>>(),
                ty_back.iter().map(|p| p.position.0).collect::<Vec<_>>(),
                new_stream,
                idx.checkpoint().unwrap().next_position,
            )
        };
        let staged = answers(&idx);
        assert_eq!(staged.0, Some(4));
        assert_eq!(
            staged.1,
            vec![(1, 2, 64), (2, 4, 300), (3, 5, 300), (4, 6, 300)]
        );
        assert_eq!(staged.2, vec![3, 2, 1]);
        assert_eq!(staged.3, vec![2, 4, 5, 6, 7]);
        assert_eq!(staged.4, vec![7, 6, 4, 3, 2, 1]);
        assert_eq!(staged.5, Some(Position(7)));
        assert_eq!(staged.6, Position(8));
        // A staged record start is a tighter place to scan from than the sparse map's.
        assert_eq!(idx.seek(Position(6)).unwrap().map(|p| p.address), Some(300));
        idx.commit_staged().unwrap();
        assert_eq!(answers(&idx), staged);
        assert_eq!(idx.seek(Position(6)).unwrap().map(|p| p.address), Some(64));
        // Committing again with nothing staged changes nothing.
        idx.commit_staged().unwrap();
        assert_eq!(answers(&idx), staged);
        assert_eq!(idx.stats().unwrap().streams, 3);
    }
}
