//! Tests of [`Index::reopen`]: the index file fails (no space left, a failed sync) while batches
//! are committed but not yet durable; after the reopen, reads answer exactly as an index that
//! never failed, and once the disk answers again the same index commits and survives a crash.

use std::collections::HashMap;
use std::sync::Arc;

use annals_core::{Direction, Position, Revision};
use annals_log::{FaultStorage, Storage};

use super::tests::rec;
use super::{INDEX_FILE, RedbIndex, RedbIndexConfig};
use crate::types::{Index, IndexBatch, IndexCheckpoint, PostingKind};

const STREAMS: [&str; 5] = ["order-1", "order-2", "cart-1", "cart-2", "user-1"];

/// Batches of `records` records each over [`STREAMS`], continuing each other from `from`.
struct Batches {
    next_position: u64,
    next_address: u64,
    made: usize,
    revisions: HashMap<&'static str, u64>,
}

impl Batches {
    fn new() -> Self {
        Self {
            next_position: 1,
            next_address: 64,
            made: 0,
            revisions: HashMap::new(),
        }
    }

    fn next(&mut self, records: usize) -> IndexBatch {
        let mut out = Vec::with_capacity(records);
        for _ in 0..records {
            self.made += 1;
            let stream = STREAMS[self.made % STREAMS.len()];
            let revision = self.revisions.entry(stream).or_insert(0);
            let events = 1 + (self.next_position % 3) as usize;
            let mut r = rec(
                self.next_address,
                stream,
                self.next_position,
                *revision,
                events,
            );
            r.event_types = (0..events)
                .map(|e| Arc::from(if e % 2 == 0 { "Placed" } else { "Paid" }))
                .collect();
            out.push(r);
            *revision += events as u64;
            self.next_position += events as u64;
            self.next_address += 100;
        }
        IndexBatch {
            checkpoint: IndexCheckpoint {
                address: self.next_address,
                next_position: Position(self.next_position),
                last_record_address: self.next_address - 100,
            },
            records: out,
        }
    }
}

/// Everything the index answers about [`STREAMS`], their categories, their event types and the
/// position map.
fn answers(idx: &RedbIndex) -> String {
    try_answers(idx).unwrap()
}

fn try_answers(idx: &RedbIndex) -> Result<String, crate::IndexError> {
    let mut out = format!("{:?}\n", idx.checkpoint()?);
    for stream in STREAMS {
        let head = idx.stream_head(stream)?;
        out += &format!("{stream}: {head:?}\n");
        if let Some(head) = head {
            for direction in [Direction::Forwards, Direction::Backwards] {
                let from = match direction {
                    Direction::Forwards => Revision(0),
                    Direction::Backwards => Revision::END,
                };
                let entries = idx.stream_entries(head.id, from, direction, 100_000)?;
                out += &format!("{entries:?}\n");
            }
        }
    }
    for (kind, key) in [
        (PostingKind::Category, "order"),
        (PostingKind::Category, "cart"),
        (PostingKind::EventType, "Placed"),
        (PostingKind::EventType, "Paid"),
    ] {
        let postings = idx.postings(kind, key, Revision(0), Direction::Forwards, 1_000_000)?;
        out += &format!("{kind:?} {key}: {postings:?}\n");
    }
    Ok(out)
}

/// Every position of `batches` leads the position map to the start of a record at or before it
/// (staged and committed batches may answer with different ones).
fn assert_seeks(idx: &RedbIndex, batches: &[IndexBatch]) {
    let starts: HashMap<u64, u64> = batches
        .iter()
        .flat_map(|b| &b.records)
        .map(|r| (r.first_position.0, r.address))
        .collect();
    let end = idx.checkpoint().unwrap().next_position.0;
    for p in (1..end).step_by(37) {
        let found = idx.seek(Position(p)).unwrap().unwrap();
        assert!(found.position.0 <= p, "seek {p}: {found:?}");
        assert_eq!(
            starts.get(&found.position.0),
            Some(&found.address),
            "seek {p}"
        );
    }
}

/// Asserts two sets of answers are equal, showing the first lines that differ.
fn assert_same(found: &str, expected: &str) {
    for (i, (f, e)) in found.lines().zip(expected.lines()).enumerate() {
        assert_eq!(
            f.chars().take(300).collect::<String>(),
            e.chars().take(300).collect::<String>(),
            "line {i}"
        );
        assert_eq!(f, e, "line {i}");
    }
    assert_eq!(found.lines().count(), expected.lines().count());
}

/// The same batches applied to an index that never fails.
fn reference(batches: &[IndexBatch]) -> String {
    let idx = RedbIndex::open(&FaultStorage::new(), &RedbIndexConfig::default()).unwrap();
    for b in batches {
        idx.apply(b).unwrap();
    }
    answers(&idx)
}

/// `fail` makes the index file fail, `heal` makes it answer again; `fails` is what fails first.
/// With `reopens_while_failing`, the reopen works before the disk answers again (it needs no
/// free space); without, it fails until then (redb syncs its header as it opens), and reads
/// fail meanwhile, never answering wrong.
fn fails_then_reopens(
    fail: impl Fn(&FaultStorage),
    heal: impl Fn(&FaultStorage),
    fails: impl Fn(&RedbIndex) -> bool,
    reopens_while_failing: bool,
) {
    let storage = FaultStorage::new();
    let idx = RedbIndex::open(&storage, &RedbIndexConfig::default()).unwrap();
    storage.sync_dir().unwrap();
    let mut gen_batches = Batches::new();
    let mut batches = Vec::new();
    // Durable, then committed without sync, then only staged.
    batches.push(gen_batches.next(200));
    idx.apply(&batches[0]).unwrap();
    idx.flush().unwrap();
    for _ in 0..3 {
        batches.push(gen_batches.next(300));
        idx.apply(batches.last().unwrap()).unwrap();
    }
    let staged = gen_batches.next(5_000);
    idx.stage(&staged).unwrap();
    batches.push(staged);
    let expected = reference(&batches);
    assert_same(&answers(&idx), &expected);

    storage.scope_faults(Some(INDEX_FILE));
    fail(&storage);
    assert!(fails(&idx), "the injected fault did not fail the index");
    // redb fails every later call after a failed write or sync: the reopen brings reads back,
    // with every batch committed or staged since the durable one.
    for _ in 0..2 {
        match reopens_while_failing {
            true => {
                idx.reopen().unwrap();
                assert_same(&answers(&idx), &expected);
                assert_seeks(&idx, &batches);
            }
            false => {
                assert!(idx.reopen().is_err());
                // What redb has cached still answers, with the staged batches; the rest fails.
                if let Ok(found) = try_answers(&idx) {
                    assert_same(&found, &expected);
                }
            }
        }
        assert!(idx.flush().is_err(), "the disk still fails");
    }

    // The disk answers again: the same index reopens, commits everything and goes on.
    heal(&storage);
    idx.reopen().unwrap();
    assert_same(&answers(&idx), &expected);
    idx.flush().unwrap();
    assert_same(&answers(&idx), &expected);
    batches.push(gen_batches.next(100));
    idx.apply(batches.last().unwrap()).unwrap();
    idx.flush().unwrap();
    let expected = reference(&batches);
    assert_same(&answers(&idx), &expected);
    drop(idx);
    // What the flush made durable survives a power loss.
    let image = storage.crash_image();
    let reopened = RedbIndex::open(&image, &RedbIndexConfig::default()).unwrap();
    assert_same(&answers(&reopened), &expected);
    assert_seeks(&reopened, &batches);
}

#[test]
fn a_full_disk_under_the_index_is_survived_by_a_reopen() {
    fails_then_reopens(
        |s| s.set_full(true),
        |s| s.set_full(false),
        |idx| idx.commit_staged().is_err(),
        true,
    );
}

#[test]
fn a_failed_sync_of_the_index_is_survived_by_a_reopen() {
    fails_then_reopens(
        |s| s.fail_syncs(true),
        |s| s.fail_syncs(false),
        |idx| idx.flush().is_err(),
        false,
    );
}

/// Without the reopen, a failed write leaves redb failing every later call: what the reopen is
/// for.
#[test]
fn without_a_reopen_the_index_keeps_failing() {
    let storage = FaultStorage::new();
    let idx = RedbIndex::open(&storage, &RedbIndexConfig::default()).unwrap();
    let mut batches = Batches::new();
    idx.apply(&batches.next(10)).unwrap();
    idx.flush().unwrap();
    idx.stage(&batches.next(5_000)).unwrap();
    storage.scope_faults(Some(INDEX_FILE));
    storage.set_full(true);
    assert!(idx.commit_staged().is_err());
    storage.set_full(false);
    assert!(idx.commit_staged().is_err());
    assert!(idx.flush().is_err());
    idx.reopen().unwrap();
    idx.flush().unwrap();
    assert!(idx.stream_head("order-1").unwrap().is_some());
}

/// A run of commits without a flush (a rebuild from the log) keeps at most
/// [`crate::UNDURABLE_RECORDS_MAX`] records in memory: the commit that would pass it is durable,
/// so a power loss keeps what it committed.
#[test]
fn commits_without_a_flush_become_durable_past_the_memory_bound() {
    let storage = FaultStorage::new();
    let idx = RedbIndex::open(&storage, &RedbIndexConfig::default()).unwrap();
    storage.sync_dir().unwrap();
    let mut batches = Batches::new();
    let per_batch = 20_000;
    let mut applied = Vec::new();
    while applied.len() * per_batch <= crate::UNDURABLE_RECORDS_MAX {
        let b = batches.next(per_batch);
        idx.apply(&b).unwrap();
        applied.push(b);
        assert!(idx.staged.read().undurable_records <= crate::UNDURABLE_RECORDS_MAX);
    }
    let durable = idx.staged.read().durable;
    assert!(durable > 0, "a commit was made durable");
    drop(idx);
    let image = storage.crash_image();
    let reopened = RedbIndex::open(&image, &RedbIndexConfig::default()).unwrap();
    let kept = reopened.checkpoint().unwrap().next_position.0;
    assert!(
        kept > 1 && kept <= batches.next_position,
        "the durable commits survive a power loss: {kept}"
    );
}
