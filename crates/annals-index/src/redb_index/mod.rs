//! [`Index`] kept in a redb database (`index.redb`) in the store's directory.
//!
//! Tables:
//! - `meta`: the checkpoint and the next stream id;
//! - `streams`: name → (id, next revision, last position, flags);
//! - `stream_events`: (stream id, first revision of a record) → (first position, record address,
//!   event count): one entry per record, so a 100-event append costs one insert, not 100;
//! - `category_links`: (category, the category revision of a record's first event) → (first
//!   position, record address, event count): a category's events are numbered densely from 0 in
//!   position order, which is the revision they have in stream `$ce-{category}`;
//! - `event_type_links`: (type, the type revision of the first event of a run of that type within
//!   a record) → (first position, record address, run length), numbered likewise for `$et-{type}`;
//! - `positions`: first position of a record → its address, sparse (see [`crate::POSITION_BUCKET`]).
//!
//! `meta` records the format ([`INDEX_FORMAT`]). Format 1 keyed categories and event types by
//! position and numbered nothing; a file of another format fails to open with
//! [`IndexError::Format`], and the engine rebuilds it from the log (the log is the truth, and its
//! record order gives every event the same revisions again).
//!
//! Opening checks the file before it is trusted: redb's integrity check (every page against its
//! checksum; [`RedbIndexConfig::check_integrity_at_open`]) and one entry in `streams` per stream id
//! handed out. A failure is [`IndexError::Damaged`], and the engine rebuilds the file from the log
//! (it also compares the index with the log's last records, which this crate cannot read).
//!
//! Batches are staged in memory first ([`crate::staged`]) and committed to redb without fsync,
//! several per transaction; [`Index::flush`] commits durably. A committed batch stays in memory
//! until it is durable: after a failed write or sync redb fails every later call, and
//! [`Index::reopen`] opens the file again at its last durable commit and stages those batches
//! again, so nothing the engine published leaves the index.
//! redb was chosen over fjall for its faster range reads and lack of background threads (see
//! ARCHITECTURE.md).
//!
//! Each job has a file of its own: staging a batch (resolving its streams) in [`stage`], writing
//! staged batches to redb in [`commit`], and reads, which merge staged batches with a redb
//! snapshot, in [`read`]. The [`Index`] implementation below only routes to them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use annals_core::{Direction, Position, Revision};
use annals_log::{Storage, StorageFile};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::error::{IndexError, IntegrityCheck};
use crate::redb_backend::Backend;
use crate::staged::{HeadTuple, Staged};
use crate::types::{
    Entry, Index, IndexBatch, IndexCheckpoint, IndexStats, Posting, PostingKind, RecordStart,
    StreamHead,
};

mod commit;
mod read;
#[cfg(test)]
mod reopen_tests;
mod stage;

/// The index's file name in the store directory.
pub const INDEX_FILE: &str = "index.redb";

const META_TABLE: TableDefinition<&str, u64> = TableDefinition::new("meta");
const STREAMS_TABLE: TableDefinition<&str, (u64, u64, u64, u64)> = TableDefinition::new("streams");
const STREAM_EVENTS_TABLE: TableDefinition<(u64, u64), (u64, u64, u64)> =
    TableDefinition::new("stream_events");
/// A posting table: (key, first revision of a run) → (first position, record address, length).
type LinksTable = TableDefinition<'static, (&'static str, u64), (u64, u64, u64)>;
const CATEGORY_LINKS_TABLE: LinksTable = TableDefinition::new("category_links");
const EVENT_TYPE_LINKS_TABLE: LinksTable = TableDefinition::new("event_type_links");
const POSITIONS_TABLE: TableDefinition<u64, u64> = TableDefinition::new("positions");

const META_ADDRESS: &str = "checkpoint_address";
const META_NEXT_POSITION: &str = "checkpoint_next_position";
const META_NEXT_STREAM_ID: &str = "next_stream_id";
const META_LAST_RECORD: &str = "checkpoint_last_record";
const META_GENERATION: &str = "staged_generation";
const META_FORMAT: &str = "format";

/// The index file format this version writes and reads: 2 numbers category and event-type
/// postings densely (format 1, unnumbered, had no `format` entry).
pub const INDEX_FORMAT: u64 = 2;

const FLAG_TOMBSTONED: u64 = 1;

/// Settings of the redb index.
#[derive(Clone, Debug)]
pub struct RedbIndexConfig {
    /// redb's page cache, in bytes.
    pub cache_bytes: usize,
    /// Run redb's integrity check (every page's checksum) at open. On by default; see the
    /// module comment for its cost.
    pub check_integrity_at_open: bool,
}

impl Default for RedbIndexConfig {
    fn default() -> Self {
        Self {
            cache_bytes: 64 * 1024 * 1024,
            check_integrity_at_open: true,
        }
    }
}

/// The redb-backed index.
#[derive(Debug)]
pub struct RedbIndex {
    /// The open database: replaced by [`Index::reopen`]. Taken (a clone of the `Arc`) while
    /// holding `staged`, so a reader sees a staged list and a database of the same open.
    db: RwLock<Arc<Database>>,
    /// The fence of the open database's backend, raised when it is replaced.
    fence: Mutex<Arc<AtomicBool>>,
    /// Counts reopens: a read that fails because the database it read was replaced under it
    /// (redb closes a dropped database's file) is tried again on the new one.
    reopens: AtomicU64,
    file: Arc<dyn StorageFile>,
    cache_bytes: usize,
    staged: RwLock<Staged>,
    /// One commit at a time, so committed heads and generations only move forwards.
    commit_lock: Mutex<()>,
}

/// What `meta` says when a file is opened.
struct OpenedMeta {
    next_id: u64,
    generation: u64,
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
        // A damaged file can make redb panic ("unreachable code") instead of failing; the index
        // is derived from the log, so a panic while opening is an error like any other and the
        // engine rebuilds the file.
        catch_panic(|| Self::open_inner(storage, config))
    }

    fn open_inner(storage: &dyn Storage, config: &RedbIndexConfig) -> Result<Self, IndexError> {
        let file = storage
            .open(INDEX_FILE, true)
            .map_err(|e| IndexError::Store(redb::StorageError::Io(e).into()))?;
        let fence = Arc::new(AtomicBool::new(false));
        let mut db = open_database(&file, &fence, config.cache_bytes)?;
        if config.check_integrity_at_open {
            check_integrity(&mut db)?;
        }
        let mut txn = db.begin_write()?;
        txn.set_quick_repair(true);
        let found = {
            let mut meta = txn.open_table(META_TABLE)?;
            let get =
                |k| -> Result<Option<u64>, IndexError> { Ok(meta.get(k)?.map(|v| v.value())) };
            match get(META_FORMAT)? {
                Some(INDEX_FORMAT) => {}
                Some(found) => {
                    return Err(IndexError::Format {
                        found,
                        current: INDEX_FORMAT,
                    });
                }
                // A file that covers part of the log but names no format was written by
                // format 1. Checked before any table is created, so such a file is left as it is.
                None if get(META_ADDRESS)?.is_some() => {
                    return Err(IndexError::Format {
                        found: 1,
                        current: INDEX_FORMAT,
                    });
                }
                None => {}
            }
            let found = OpenedMeta {
                next_id: get(META_NEXT_STREAM_ID)?.unwrap_or(1),
                generation: get(META_GENERATION)?.unwrap_or(0),
            };
            meta.insert(META_FORMAT, INDEX_FORMAT)?;
            check_stream_count(txn.open_table(STREAMS_TABLE)?.len()?, found.next_id)?;
            txn.open_table(STREAM_EVENTS_TABLE)?;
            txn.open_table(CATEGORY_LINKS_TABLE)?;
            txn.open_table(EVENT_TYPE_LINKS_TABLE)?;
            txn.open_table(POSITIONS_TABLE)?;
            found
        };
        txn.commit()?;
        Ok(Self {
            db: RwLock::new(Arc::new(db)),
            fence: Mutex::new(fence),
            reopens: AtomicU64::new(0),
            file,
            cache_bytes: config.cache_bytes,
            staged: RwLock::new(Staged {
                next_generation: found.generation.saturating_add(1),
                next_id: found.next_id,
                committed: found.generation,
                durable: found.generation,
                ..Staged::default()
            }),
            commit_lock: Mutex::new(()),
        })
    }

    /// The open database (for a read that needs no staged batch, or for a commit).
    fn db(&self) -> Arc<Database> {
        Arc::clone(&self.db.read())
    }

    /// Opens the file again after a failed write or sync: redb goes back to its last durable
    /// commit and every batch committed since is staged again. It writes nothing but redb's own
    /// header (a full disk does not stop it), and reads answer as before once it returns.
    /// A file that does not open leaves the index failing every call until the next try.
    fn reopen_store(&self) -> Result<(), IndexError> {
        let _one_at_a_time = self.commit_lock.lock();
        let mut staged = self.staged.write();
        let fence = Arc::new(AtomicBool::new(false));
        std::mem::replace(&mut *self.fence.lock(), Arc::clone(&fence))
            .store(true, Ordering::Release);
        let db = catch_panic(|| open_database(&self.file, &fence, self.cache_bytes))?;
        let found = {
            let txn = db.begin_read()?;
            let meta = txn.open_table(META_TABLE)?;
            let get =
                |k| -> Result<Option<u64>, IndexError> { Ok(meta.get(k)?.map(|v| v.value())) };
            let found = OpenedMeta {
                next_id: get(META_NEXT_STREAM_ID)?.unwrap_or(1),
                generation: get(META_GENERATION)?.unwrap_or(0),
            };
            check_stream_count(txn.open_table(STREAMS_TABLE)?.len()?, found.next_id)?;
            found
        };
        if found.generation < staged.durable || found.generation > staged.committed {
            return Err(IndexError::Inconsistent(format!(
                "reopened at generation {}, but generation {} was durable and {} the newest \
                 committed",
                found.generation, staged.durable, staged.committed
            )));
        }
        staged.reopened(found.generation);
        *self.db.write() = Arc::new(db);
        self.reopens.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Runs read `f`, once more if it failed while a reopen replaced the database it read.
    fn read<T>(&self, f: impl Fn() -> Result<T, IndexError>) -> Result<T, IndexError> {
        let reopens = self.reopens.load(Ordering::Acquire);
        f().or_else(|e| match self.reopens.load(Ordering::Acquire) == reopens {
            true => Err(e),
            false => f(),
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
}

/// Opens redb on `file` through a backend closed once `fence` is raised.
fn open_database(
    file: &Arc<dyn StorageFile>,
    fence: &Arc<AtomicBool>,
    cache_bytes: usize,
) -> Result<Database, IndexError> {
    Ok(Database::builder()
        .set_cache_size(cache_bytes)
        .create_with_backend(Backend::new(Arc::clone(file), Arc::clone(fence)))?)
}

/// Runs `open`, turning a panic inside redb (a damaged file can make it panic instead of
/// failing) into an error.
fn catch_panic<T>(open: impl FnOnce() -> Result<T, IndexError>) -> Result<T, IndexError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(open)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(IndexError::Inconsistent(format!(
            "the index store failed while opening the file: {what}"
        )))
    })
}

/// redb's own check of the file: every page of the committed trees against its checksum. A file
/// redb had to repair (it fell back to an older commit, or rebuilt its allocator state) counts as
/// damaged too: it was changed behind redb's back, and the log can rebuild it exactly.
fn check_integrity(db: &mut Database) -> Result<(), IndexError> {
    let detail = match db.check_integrity() {
        Ok(true) => return Ok(()),
        Ok(false) => "redb found the file damaged and repaired it".to_owned(),
        Err(e) => e.to_string(),
    };
    Err(IndexError::Damaged {
        check: IntegrityCheck::Redb,
        detail,
    })
}

/// Stream ids are handed out from 1 without gaps and every id handed out has its entry in
/// `streams`, committed with `next_stream_id`: an entry missing (or one too many) means damage.
/// redb keeps each table's length with its root, so this costs no scan.
fn check_stream_count(streams: u64, next_stream_id: u64) -> Result<(), IndexError> {
    let ids = next_stream_id.saturating_sub(1);
    if streams == ids {
        return Ok(());
    }
    Err(IndexError::Damaged {
        check: IntegrityCheck::StreamCount,
        detail: format!("{streams} streams in the index, {ids} stream ids handed out"),
    })
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

/// The name of `kind`'s table, for errors.
fn links_table(kind: PostingKind) -> &'static str {
    match kind {
        PostingKind::Category => "category_links",
        PostingKind::EventType => "event_type_links",
    }
}

impl Index for RedbIndex {
    fn checkpoint(&self) -> Result<IndexCheckpoint, IndexError> {
        self.read(|| self.read_checkpoint())
    }

    fn stage(&self, batch: &IndexBatch) -> Result<(), IndexError> {
        self.stage_batch(batch)
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
        self.commit_durably_locked()
    }

    fn reopen(&self) -> Result<(), IndexError> {
        self.reopen_store()
    }

    fn next_stream_id(&self) -> Result<u64, IndexError> {
        Ok(self.staged.read().next_id)
    }

    fn stream_head(&self, stream: &str) -> Result<Option<StreamHead>, IndexError> {
        self.read(|| self.read_stream_head(stream))
    }

    fn stream_entries(
        &self,
        id: u64,
        from: Revision,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<Entry>, IndexError> {
        self.read(|| self.read_stream_entries(id, from, direction, limit))
    }

    fn postings(
        &self,
        kind: PostingKind,
        key: &str,
        from: Revision,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<Posting>, IndexError> {
        self.read(|| self.read_postings(kind, key, from, direction, limit))
    }

    fn seek(&self, position: Position) -> Result<Option<RecordStart>, IndexError> {
        self.read(|| self.read_seek(position))
    }

    fn stats(&self) -> Result<IndexStats, IndexError> {
        self.read(|| self.read_stats())
    }

    fn streams(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, StreamHead)>, IndexError> {
        self.read(|| self.read_streams(after, limit))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::types::{IndexRecord, KnownStream};

    pub(crate) fn rec(addr: u64, stream: &str, pos: u64, rev: u64, n: usize) -> IndexRecord {
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

    pub(super) fn known(mut r: IndexRecord, id: u64, next_revision: u64) -> IndexRecord {
        r.known = Some(KnownStream { id, next_revision });
        r
    }

    /// An index of three streams, durably written to `storage` and closed.
    fn three_streams(storage: &annals_log::FaultStorage) {
        let idx = RedbIndex::open(storage, &RedbIndexConfig::default()).unwrap();
        let records = vec![
            rec(64, "order-1", 1, 0, 2),
            rec(128, "cart-1", 3, 0, 1),
            rec(192, "order-2", 4, 0, 1),
        ];
        idx.apply(&batch_of(records, 5)).unwrap();
        idx.flush().unwrap();
    }

    fn damaged_by(result: Result<RedbIndex, IndexError>) -> Option<IntegrityCheck> {
        match result {
            Err(IndexError::Damaged { check, .. }) => Some(check),
            _ => None,
        }
    }

    /// A stream name changed inside a page (redb trusts a cleanly closed file at open): without
    /// the integrity check the stream is gone; with it, the file is refused as damaged.
    #[test]
    fn a_byte_changed_in_a_page_fails_redbs_check() {
        let storage = annals_log::FaultStorage::new();
        three_streams(&storage);
        let mut bytes = storage.bytes(INDEX_FILE).unwrap();
        let at = bytes.windows(7).position(|w| w == b"order-1").unwrap();
        bytes[at + 6] = b'9';
        storage.set_bytes(INDEX_FILE, bytes.clone());
        let unchecked = RedbIndexConfig {
            check_integrity_at_open: false,
            ..RedbIndexConfig::default()
        };
        let idx = RedbIndex::open(&storage, &unchecked).unwrap();
        assert_eq!(idx.stream_head("order-1").unwrap(), None);
        drop(idx);
        storage.set_bytes(INDEX_FILE, bytes);
        let opened = RedbIndex::open(&storage, &RedbIndexConfig::default());
        assert_eq!(damaged_by(opened), Some(IntegrityCheck::Redb));
    }

    /// A stream's entry removed through redb itself (every checksum right): the stream count no
    /// longer matches the ids handed out.
    #[test]
    fn a_stream_entry_removed_through_redb_fails_the_stream_count_check() {
        let storage = annals_log::FaultStorage::new();
        three_streams(&storage);
        {
            let idx = RedbIndex::open(&storage, &RedbIndexConfig::default()).unwrap();
            let txn = idx.db().begin_write().unwrap();
            txn.open_table(STREAMS_TABLE)
                .unwrap()
                .remove("cart-1")
                .unwrap();
            txn.commit().unwrap();
        }
        let opened = RedbIndex::open(&storage, &RedbIndexConfig::default());
        assert_eq!(damaged_by(opened), Some(IntegrityCheck::StreamCount));
    }

    pub(super) fn batch_of(records: Vec<IndexRecord>, next_position: u64) -> IndexBatch {
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
}
