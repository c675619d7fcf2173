//! Reads of the index: each takes a consistent view (the staged batches a redb snapshot does not
//! hold yet, and that snapshot) and merges the two, staged entries always following committed
//! ones in revision and position order.

use std::sync::Arc;

use annals_core::{Direction, Position, Revision};
use redb::{ReadableDatabase, ReadableTableMetadata};

use super::{
    CATEGORY_LINKS_TABLE, EVENT_TYPE_LINKS_TABLE, META_ADDRESS, META_GENERATION, META_LAST_RECORD,
    META_NEXT_POSITION, META_TABLE, POSITIONS_TABLE, RedbIndex, STREAM_EVENTS_TABLE, STREAMS_TABLE,
    head_from, run_end,
};
use crate::error::IndexError;
use crate::staged::StagedBatch;
use crate::types::{
    Entry, IndexCheckpoint, IndexStats, Posting, PostingKind, RecordStart, StreamHead,
};

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
#[expect(
    clippy::too_many_arguments,
    reason = "one run's numbers and the read's bounds; a struct for them would live one call"
)]
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

impl RedbIndex {
    /// A consistent view: the staged batches a fresh redb snapshot does not yet hold, and that
    /// snapshot. The staged list is taken first, so a commit in between is seen exactly once;
    /// the snapshot is begun before the staged list is let go, so both come from the same open
    /// of the store (a reopen changes both at once).
    fn view(&self) -> Result<(Vec<Arc<StagedBatch>>, redb::ReadTransaction), IndexError> {
        let (mut staged, txn) = {
            let staged = self.staged.read();
            (staged.batches.clone(), self.db().begin_read()?)
        };
        let committed = txn
            .open_table(META_TABLE)?
            .get(META_GENERATION)?
            .map_or(0, |v| v.value());
        staged.retain(|b| b.generation > committed);
        Ok((staged, txn))
    }

    pub(super) fn read_checkpoint(&self) -> Result<IndexCheckpoint, IndexError> {
        let txn = {
            let staged = self.staged.read();
            if let Some(b) = staged.batches.last() {
                return Ok(b.checkpoint);
            }
            self.db().begin_read()?
        };
        let meta = txn.open_table(META_TABLE)?;
        let get = |k| -> Result<Option<u64>, IndexError> { Ok(meta.get(k)?.map(|v| v.value())) };
        Ok(IndexCheckpoint {
            address: get(META_ADDRESS)?.unwrap_or(0),
            next_position: Position(get(META_NEXT_POSITION)?.unwrap_or(1)),
            last_record_address: get(META_LAST_RECORD)?.unwrap_or(0),
        })
    }

    pub(super) fn read_stream_head(&self, stream: &str) -> Result<Option<StreamHead>, IndexError> {
        // As in `view`: the staged head first, then the snapshot, which wins if it already holds
        // the generation that wrote the staged head.
        let (staged, txn) = {
            let staged = self.staged.read();
            (staged.head(stream), self.db().begin_read()?)
        };
        if let Some((head, generation)) = staged {
            let committed = txn
                .open_table(META_TABLE)?
                .get(META_GENERATION)?
                .map_or(0, |v| v.value());
            if generation > committed {
                return Ok(Some(head_from(head)));
            }
        }
        let streams = txn.open_table(STREAMS_TABLE)?;
        Ok(streams.get(stream)?.map(|h| head_from(h.value())))
    }

    pub(super) fn read_stream_entries(
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
            .map(|r| (r.first_revision, r.first_position, r.count, r.address))
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
        let table = txn.open_table(STREAM_EVENTS_TABLE)?;
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

    pub(super) fn read_postings(
        &self,
        kind: PostingKind,
        key: &str,
        from: Revision,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<Posting>, IndexError> {
        let (staged, txn) = self.view()?;
        // Staged runs of this key: (first revision, first position, count, address).
        let mut runs: Vec<(u64, u64, u64, u64)> = Vec::new();
        for r in staged
            .iter()
            .flat_map(|b| b.records.iter())
            .filter(|r| !r.tombstone)
        {
            match kind {
                PostingKind::Category => {
                    if r.category() == key {
                        runs.push((r.category_revision, r.first_position, r.count, r.address));
                    }
                }
                PostingKind::EventType => {
                    for run in r.type_runs.iter().filter(|run| &*run.event_type == key) {
                        runs.push((run.first_revision, run.first_position, run.count, r.address));
                    }
                }
            }
        }
        let make = |revision, position, address| Posting {
            revision: Revision(revision),
            position: Position(position),
            address,
        };
        let mut out = Vec::with_capacity(limit.min(1024));
        // Staged revisions all follow the committed ones.
        if direction == Direction::Backwards {
            push_staged(&mut out, &runs, from.0, direction, limit, make)?;
        }
        let table = txn.open_table(match kind {
            PostingKind::Category => CATEGORY_LINKS_TABLE,
            PostingKind::EventType => EVENT_TYPE_LINKS_TABLE,
        })?;
        // The run holding `from` starts at or before it.
        let start = table
            .range((key, 0)..=(key, from.0))?
            .next_back()
            .transpose()?
            .map_or(from.0, |(k, _)| k.value().1);
        let committed =
            |first: u64, (first_pos, address, count): (u64, u64, u64), out: &mut Vec<Posting>| {
                push_run(
                    out,
                    first,
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

    pub(super) fn read_seek(&self, position: Position) -> Result<Option<RecordStart>, IndexError> {
        let (staged, txn) = self.view()?;
        // Any staged record start at or below `position` is a valid place to scan from.
        let from_staged = staged
            .iter()
            .flat_map(|b| b.records.iter())
            .filter(|r| r.first_position <= position.0)
            .map(|r| RecordStart {
                position: Position(r.first_position),
                address: r.address,
            })
            .max_by_key(|p| p.position);
        let table = txn.open_table(POSITIONS_TABLE)?;
        let committed = table
            .range(..=position.0)?
            .next_back()
            .transpose()?
            .map(|(k, v)| RecordStart {
                position: Position(k.value()),
                address: v.value(),
            });
        Ok(match (committed, from_staged) {
            (Some(c), Some(s)) => Some(if s.position > c.position { s } else { c }),
            (c, s) => c.or(s),
        })
    }

    pub(super) fn read_stats(&self) -> Result<IndexStats, IndexError> {
        let txn = self.db().begin_read()?;
        Ok(IndexStats {
            streams: txn.open_table(STREAMS_TABLE)?.len()?,
            stream_entries: txn.open_table(STREAM_EVENTS_TABLE)?.len()?,
            category_postings: txn.open_table(CATEGORY_LINKS_TABLE)?.len()?,
            type_postings: txn.open_table(EVENT_TYPE_LINKS_TABLE)?.len()?,
            position_entries: txn.open_table(POSITIONS_TABLE)?.len()?,
        })
    }

    pub(super) fn read_streams(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, StreamHead)>, IndexError> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(STREAMS_TABLE)?;
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

#[cfg(test)]
mod tests {
    use super::super::commit::needs_position_entry;
    use super::super::tests::rec;
    use super::*;
    use crate::redb_index::RedbIndexConfig;
    use crate::types::{Index, IndexBatch};
    use annals_log::FaultStorage;

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
                Revision(1),
                Direction::Forwards,
                10,
            )
            .unwrap();
        assert_eq!(
            cat.iter()
                .map(|p| (p.revision.0, p.position.0, p.address))
                .collect::<Vec<_>>(),
            vec![(1, 2, 64), (2, 3, 200), (3, 4, 300)]
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
        let txn = idx.db().begin_write().unwrap();
        {
            let mut events = txn.open_table(STREAM_EVENTS_TABLE).unwrap();
            events.insert((7, 0), (u64::MAX, 64, 2)).unwrap();
            let mut categories = txn.open_table(CATEGORY_LINKS_TABLE).unwrap();
            categories.insert(("order", u64::MAX), (1, 64, 2)).unwrap();
        }
        txn.commit().unwrap();
        for direction in [Direction::Forwards, Direction::Backwards] {
            let entries = idx.stream_entries(7, Revision(0), direction, 10);
            assert!(matches!(entries, Err(IndexError::Inconsistent(_))));
            let postings =
                idx.postings(PostingKind::Category, "order", Revision::END, direction, 10);
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
                    Revision(1),
                    Direction::Forwards,
                    10,
                )
                .unwrap();
            let ty_back = idx
                .postings(
                    PostingKind::EventType,
                    "Ty",
                    Revision::END,
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
                cat.iter()
                    .map(|p| (p.revision.0, p.position.0))
                    .collect::<Vec<_>>(),
                ty_back
                    .iter()
                    .map(|p| (p.revision.0, p.position.0))
                    .collect::<Vec<_>>(),
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
        // Category and type revisions are dense in position order, across both batches.
        assert_eq!(staged.3, vec![(1, 2), (2, 4), (3, 5), (4, 6), (5, 7)]);
        assert_eq!(
            staged.4,
            vec![(5, 7), (4, 6), (3, 4), (2, 3), (1, 2), (0, 1)]
        );
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

    /// Revisions continue from what redb holds when nothing of a list is in memory (a reopened
    /// index), and a type's runs within one record each get their own revisions.
    #[test]
    fn revisions_continue_after_reopen() {
        let storage = FaultStorage::new();
        let cp = |address, next| IndexCheckpoint {
            address,
            next_position: Position(next),
            last_record_address: 0,
        };
        {
            let idx = RedbIndex::open(&storage, &RedbIndexConfig::default()).unwrap();
            idx.apply(&IndexBatch {
                records: vec![rec(64, "order-1", 1, 0, 2), rec(200, "cart-1", 3, 0, 1)],
                checkpoint: cp(300, 4),
            })
            .unwrap();
            idx.flush().unwrap();
        }
        let idx = RedbIndex::open(&storage, &RedbIndexConfig::default()).unwrap();
        let mut mixed = rec(300, "order-2", 4, 0, 3);
        mixed.event_types = vec![Arc::from("Other"), Arc::from("Ty"), Arc::from("Other")];
        idx.stage(&IndexBatch {
            records: vec![mixed],
            checkpoint: cp(400, 7),
        })
        .unwrap();
        let read = |kind, key| {
            idx.postings(kind, key, Revision(0), Direction::Forwards, 10)
                .unwrap()
                .iter()
                .map(|p| (p.revision.0, p.position.0))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            read(PostingKind::Category, "order"),
            vec![(0, 1), (1, 2), (2, 4), (3, 5), (4, 6)]
        );
        assert_eq!(
            read(PostingKind::EventType, "Ty"),
            vec![(0, 1), (1, 2), (2, 3), (3, 5)]
        );
        assert_eq!(read(PostingKind::EventType, "Other"), vec![(0, 4), (1, 6)]);
        assert_eq!(read(PostingKind::Category, "none"), vec![]);
    }

    /// A file of format 1 (a checkpoint but no format entry) is refused, and left unchanged.
    #[test]
    fn format_1_files_are_refused() {
        let storage = FaultStorage::new();
        {
            let idx = RedbIndex::open(&storage, &RedbIndexConfig::default()).unwrap();
            let txn = idx.db().begin_write().unwrap();
            {
                let mut meta = txn.open_table(META_TABLE).unwrap();
                meta.remove(super::super::META_FORMAT).unwrap();
                meta.insert(META_ADDRESS, 128).unwrap();
            }
            txn.commit().unwrap();
        }
        for _ in 0..2 {
            let err = RedbIndex::open(&storage, &RedbIndexConfig::default()).unwrap_err();
            assert!(
                matches!(
                    err,
                    IndexError::Format {
                        found: 1,
                        current: 2
                    }
                ),
                "{err:?}"
            );
        }
    }
}
