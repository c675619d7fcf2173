//! Staging a batch: resolving each record's stream (id, next revision, flags) against what is
//! staged, what the writer says it knows, or a redb snapshot, checking that the record continues
//! its stream, and adding the batch to the staged layer, visible to reads at once.

use std::collections::HashMap;
use std::sync::Arc;

use annals_core::category_of;
use redb::ReadableDatabase;

use super::{
    CATEGORY_LINKS_TABLE, EVENT_TYPE_LINKS_TABLE, FLAG_TOMBSTONED, META_NEXT_STREAM_ID, RedbIndex,
    STREAMS_TABLE, links_table, run_end,
};
use crate::error::IndexError;
use crate::staged::{HeadTuple, LinkKey, Staged, StagedBatch, StagedRecord, TypeRun, type_runs};
use crate::types::{IndexBatch, PostingKind};

/// A posting table as staging reads it: (key, first revision) → (first position, address, length).
type LinksSnapshot = redb::ReadOnlyTable<(&'static str, u64), (u64, u64, u64)>;

/// The next revisions of the posting lists one batch touches, found in the batch itself, in the
/// staged layer, or (for a list not touched since its last commit dropped from memory) in redb.
struct LinkHeads<'a> {
    staged: &'a Staged,
    db: &'a redb::Database,
    batch: HashMap<LinkKey, u64>,
    snapshot: Option<redb::ReadTransaction>,
    tables: [Option<LinksSnapshot>; 2],
}

impl LinkHeads<'_> {
    /// Hands out `count` revisions of list (`kind`, `key`), returning the first.
    fn take(&mut self, kind: PostingKind, key: &str, count: u64) -> Result<u64, IndexError> {
        let lookup = (kind, Arc::<str>::from(key));
        let next = match self.batch.get(&lookup) {
            Some(n) => *n,
            None => match self.staged.link_heads.get(&lookup) {
                Some((n, _)) => *n,
                None => self.committed_next(kind, key)?,
            },
        };
        let after = run_end(links_table(kind), key, next, count)?;
        self.batch.insert(lookup, after);
        Ok(next)
    }

    /// The next revision of a list as redb holds it: after its last run, or 0.
    fn committed_next(&mut self, kind: PostingKind, key: &str) -> Result<u64, IndexError> {
        let slot = usize::from(kind == PostingKind::EventType);
        let table = match self.tables.get_mut(slot) {
            Some(Some(t)) => t,
            Some(slot) => {
                let txn = match &self.snapshot {
                    Some(t) => t,
                    None => self.snapshot.insert(self.db.begin_read()?),
                };
                slot.insert(txn.open_table(match kind {
                    PostingKind::Category => CATEGORY_LINKS_TABLE,
                    PostingKind::EventType => EVENT_TYPE_LINKS_TABLE,
                })?)
            }
            None => return Ok(0),
        };
        match table.range((key, 0)..=(key, u64::MAX))?.next_back() {
            Some(item) => {
                let (k, v) = item?;
                let (_, first) = k.value();
                let (_, _, count) = v.value();
                run_end(links_table(kind), key, first, count)
            }
            None => Ok(0),
        }
    }
}

impl RedbIndex {
    /// Stages `batch` (all after the current checkpoint) and moves the checkpoint; refuses a
    /// record that contradicts the index.
    pub(super) fn stage_batch(&self, batch: &IndexBatch) -> Result<(), IndexError> {
        let mut staged = self.staged.write();
        let db = self.db();
        // Opened only for a stream neither staged nor known to the writer (recovery, reindex).
        let mut snapshot: Option<redb::ReadOnlyTable<&str, HeadTuple>> = None;
        let mut next_id = staged.next_id;
        let mut heads: HashMap<Arc<str>, HeadTuple> = HashMap::new();
        let mut records = Vec::with_capacity(batch.records.len());
        let mut links = LinkHeads {
            staged: &staged,
            db: &db,
            batch: HashMap::new(),
            snapshot: None,
            tables: [None, None],
        };
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
                        None => snapshot.insert(db.begin_read()?.open_table(STREAMS_TABLE)?),
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
            let mut category_revision = 0;
            let mut runs = Vec::new();
            if rec.tombstone {
                flags |= FLAG_TOMBSTONED;
            } else {
                // Every event but a tombstone is in its category's and its type's lists, each
                // numbered on from the list's last revision in record (position) order.
                category_revision = links.take(PostingKind::Category, category_of(name), count)?;
                for (ty, first_position, run) in type_runs(&rec.event_types, first) {
                    runs.push(TypeRun {
                        event_type: Arc::clone(ty),
                        first_position,
                        count: run,
                        first_revision: links.take(PostingKind::EventType, ty, run)?,
                    });
                }
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
                count,
                category_revision,
                type_runs: runs,
            });
            heads.insert(Arc::clone(&rec.stream), (id, next_revision, last, flags));
        }
        let link_heads = links.batch;
        let generation = staged.next_generation;
        for (key, next) in link_heads {
            staged.link_heads.insert(key, (next, generation));
        }
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
}

#[cfg(test)]
mod tests {
    use super::super::tests::{batch_of, known, rec};
    use super::*;
    use crate::redb_index::RedbIndexConfig;
    use crate::types::Index;
    use annals_core::{Direction, Position, Revision};
    use annals_log::FaultStorage;

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
}
