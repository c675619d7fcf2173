//! Crash consistency of the whole engine, through [`FaultStorage`]:
//!
//! - a power loss at every sync of a run of concurrent appends keeps exactly what was
//!   acknowledged, with the acknowledged positions and revisions, dense positions, contiguous
//!   revisions, no duplicate and no half append, and a clean `check`; retried appends then answer
//!   as first acknowledged (or are written once), and the store takes more appends and reopens
//!   again. Run with the default segment size, with 8 KiB segments (crashes around rollovers), and
//!   without fsync (acknowledged appends may go, consistency may not);
//! - a crash at every sync of an open that cuts a torn tail or rebuilds the index;
//! - a segment is fully durable before the next one is created (design invariant 6);
//! - the last write torn at every byte (cut short, zero-filled or followed by garbage) loses that
//!   append whole or keeps it whole and nothing else;
//! - a bit flip in the last record is a torn tail (cut and reported); one in a sealed segment or
//!   more than the torn-tail window before the end refuses to open, naming file and offset; one
//!   below the index checkpoint is found by reads and by `check`;
//! - a failed `fdatasync` fails its append and stops the engine, and nothing unacknowledged is left
//!   half-written;
//! - a deleted or damaged index is rebuilt on open and answers as before.

use std::sync::Arc;
use std::time::Duration;

use annals_core::{
    Direction, DomainError, EventRecord, ExpectedRevision, NewEvent, Position, Revision, StreamName,
};
use annals_engine::{Durability, Engine, EngineConfig, EngineError, OpenReport};
use annals_index::INDEX_FILE;
use annals_log::{FaultStorage, LogConfig, LogError, SEGMENT_HEADER_BYTES, Storage};
use annals_testkit::random;
use annals_testkit::storage::SealCheckingStorage;
use annals_testkit::verify::{Attempt, read_everything, verify_appends};
use rand::Rng;
use uuid::Uuid;

fn name(s: &str) -> StreamName {
    StreamName::new(s).unwrap()
}

fn open(
    storage: &FaultStorage,
    config: &EngineConfig,
) -> Result<(Engine, OpenReport), EngineError> {
    Engine::open(Arc::new(storage.clone()), config.clone())
}

fn small_segments() -> EngineConfig {
    EngineConfig {
        log: LogConfig {
            segment_bytes_max: 8192,
            ..Default::default()
        },
        ..EngineConfig::default()
    }
}

/// A config whose index is made durable only on open and close, so a crash image taken while
/// the engine runs has an index checkpoint at a known place.
fn lazy_index(config: EngineConfig) -> EngineConfig {
    EngineConfig {
        index_flush_interval: Duration::from_secs(3600),
        ..config
    }
}

const THREADS: usize = 4;
const APPENDS_PER_THREAD: usize = 30;

/// Opens a store on `storage` and appends from [`THREADS`] threads at once, each to its own
/// stream (with exact expected revisions) and to one shared stream. Stops a thread at its first
/// failure. Returns every append sent, acknowledged or not (none if the open failed).
fn concurrent_run(storage: &FaultStorage, config: &EngineConfig, seed: u64) -> Vec<Attempt> {
    let Ok((engine, _)) = open(storage, config) else {
        return Vec::new();
    };
    let attempts: Vec<Attempt> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let engine = engine.clone();
                scope.spawn(move || {
                    let mut rng = random::rng(seed * 100 + t as u64);
                    let own = name(&format!("thread-{t}"));
                    let shared = name("shared");
                    let mut own_last: Option<u64> = None;
                    let mut out = Vec::new();
                    for j in 0..APPENDS_PER_THREAD {
                        let (stream, expected) = if j % 3 == 0 {
                            (shared.clone(), ExpectedRevision::Any)
                        } else {
                            let e = own_last
                                .map_or(ExpectedRevision::NoStream, ExpectedRevision::Exact);
                            (own.clone(), e)
                        };
                        let events = random::random_events(&mut rng, 3, 120);
                        let result = engine.append(&stream, expected, events.clone());
                        let acked = result.as_ref().ok().copied();
                        if let Some(r) = acked
                            && stream == own
                        {
                            own_last = Some(r.next_revision.0);
                        }
                        out.push(Attempt {
                            stream,
                            events,
                            acked,
                        });
                        if acked.is_none() {
                            break;
                        }
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    engine.close();
    attempts
}

/// After a verified reopen: every append is retried (a client that lost its answer in the crash
/// sends it again): an acknowledged one answers as it did, one that reached the disk answers with
/// its place, one that did not is written now. More appends are taken at the next positions, and
/// everything survives another reopen with no event twice.
fn append_more_and_reopen(
    storage: &FaultStorage,
    config: &EngineConfig,
    engine: Engine,
    mut attempts: Vec<Attempt>,
) -> Result<(), String> {
    for (i, a) in attempts.iter_mut().enumerate() {
        let r = engine
            .append(&a.stream, ExpectedRevision::Any, a.events.clone())
            .map_err(|e| format!("retry of append {i}: {e}"))?;
        if a.acked.is_some_and(|acked| acked != r) {
            return Err(format!(
                "retry of append {i} answered {r:?}, first acknowledged as {:?}",
                a.acked
            ));
        }
        a.acked = Some(r);
    }
    let mut rng = random::rng(7);
    for stream in ["shared", "thread-0", "after-crash"] {
        let stream = name(stream);
        let head = engine.head();
        let events = random::random_events(&mut rng, 3, 60);
        let n = events.len() as u64;
        let result = engine
            .append(&stream, ExpectedRevision::Any, events.clone())
            .map_err(|e| format!("append after reopen: {e}"))?;
        if result.position != Position(head.0 + n) {
            return Err(format!(
                "append after reopen at {result:?}, head was {head:?}"
            ));
        }
        attempts.push(Attempt {
            stream,
            events,
            acked: Some(result),
        });
    }
    engine.close();
    drop(engine);
    let (engine, report) = open(storage, config).map_err(|e| format!("second reopen: {e}"))?;
    if report.log.truncated.is_some() || report.index_rebuilt {
        return Err(format!("second reopen after a clean close: {report:?}"));
    }
    verify_appends(&engine, &attempts)
}

/// Crashes a concurrent run at its 1st, 2nd, ... sync, through one sync more than a full run
/// makes, and checks every crash image.
fn crash_at_every_sync(config: &EngineConfig, stride: u64) {
    let full = FaultStorage::new();
    let attempts = concurrent_run(&full, config, 0);
    assert!(attempts.iter().all(|a| a.acked.is_some()));
    let syncs = full.syncs();
    assert!(syncs > 10, "a full run made only {syncs} syncs");
    let mut crashed_runs = 0;
    for n in (1..=syncs + 1).step_by(stride as usize) {
        let storage = FaultStorage::new();
        storage.crash_at_sync(n);
        let attempts = concurrent_run(&storage, config, n);
        crashed_runs += u32::from(storage.has_crashed());
        let image = storage.crash_image();
        let (engine, _) = open(&image, config)
            .unwrap_or_else(|e| panic!("crash at sync {n}: reopen failed: {e}"));
        if let Err(e) = verify_appends(&engine, &attempts) {
            panic!("crash at sync {n} of {syncs}: {e}");
        }
        if let Err(e) = append_more_and_reopen(&image, config, engine, attempts) {
            panic!("crash at sync {n} of {syncs}, after reopening: {e}");
        }
    }
    assert!(crashed_runs > 0);
}

#[test]
fn crash_at_every_sync_keeps_exactly_the_acknowledged_appends() {
    crash_at_every_sync(&EngineConfig::default(), 1);
}

/// Without fsync a machine crash may lose acknowledged appends, but never leaves half an append,
/// a gap, or a store that does not open.
#[test]
fn crash_at_every_sync_without_fsync_stays_consistent() {
    let config = EngineConfig {
        durability: Durability::None,
        ..small_segments()
    };
    let full = FaultStorage::new();
    concurrent_run(&full, &config, 0);
    let syncs = full.syncs();
    for n in 1..=syncs + 1 {
        let storage = FaultStorage::new();
        storage.crash_at_sync(n);
        let mut attempts = concurrent_run(&storage, &config, n);
        for a in &mut attempts {
            a.acked = None;
        }
        let image = storage.crash_image();
        let (engine, _) = open(&image, &config)
            .unwrap_or_else(|e| panic!("crash at sync {n}: reopen failed: {e}"));
        if let Err(e) = verify_appends(&engine, &attempts) {
            panic!("crash at sync {n} of {syncs}: {e}");
        }
        if let Err(e) = append_more_and_reopen(&image, &config, engine, attempts) {
            panic!("crash at sync {n} of {syncs}, after reopening: {e}");
        }
    }
}

#[test]
fn crash_at_every_sync_across_segment_rollovers() {
    let config = small_segments();
    // The runs do cross segments.
    let storage = FaultStorage::new();
    concurrent_run(&storage, &config, 0);
    let segments = storage
        .names()
        .iter()
        .filter(|n| n.ends_with(".seg"))
        .count();
    assert!(segments >= 3, "only {segments} segments");
    crash_at_every_sync(&config, 1);
}

/// Design invariant 6: a segment is synced in full before the next one is created, so only the
/// last segment can hold a torn write. Checked at every rollover of a run of many concurrent
/// clients whose syncs are slow, so batches are large and the writer works while one syncs.
#[test]
fn segment_is_durable_before_the_next_is_created() {
    let inner = FaultStorage::new();
    let storage = SealCheckingStorage::new(inner.clone());
    let violations = storage.violations();
    let config = small_segments();
    let (engine, _) = Engine::open(Arc::new(storage), config.clone()).unwrap();
    // Many clients, so a batch is gathered and written while the one before it syncs.
    std::thread::scope(|s| {
        for t in 0..16 {
            let engine = engine.clone();
            s.spawn(move || {
                let mut rng = random::rng(t);
                for _ in 0..20 {
                    engine
                        .append(
                            &name(&format!("seal-{t}")),
                            ExpectedRevision::Any,
                            random::random_events(&mut rng, 3, 300),
                        )
                        .unwrap();
                }
            });
        }
    });
    engine.close();
    let segments = inner.names().iter().filter(|n| n.ends_with(".seg")).count();
    assert!(segments >= 15, "only {segments} segments");
    assert!(violations.lock().is_empty(), "{:?}", violations.lock());
}

/// A crash at any sync of an open that has work to do (cut a torn tail, re-index the whole log,
/// rebuild a damaged index) loses nothing: the next open finishes the job.
#[test]
fn crash_while_opening_is_recovered_by_the_next_open() {
    let config = lazy_index(small_segments());
    let storage = FaultStorage::new();
    let (engine, _) = open(&storage, &config).unwrap();
    let mut rng = random::rng(31);
    let mut attempts = Vec::new();
    for i in 0..40 {
        let stream = name(&format!("o-{}", i % 3));
        let events = random::random_events(&mut rng, 3, 100);
        let r = engine
            .append(&stream, ExpectedRevision::Any, events.clone())
            .unwrap();
        attempts.push(Attempt {
            stream,
            events,
            acked: Some(r),
        });
    }
    // The index durably covers nothing (it was flushed only when the store was new).
    let image = storage.crash_image();
    let segment = engine.log().segment_names().last().unwrap().clone();
    engine.close();
    let mut torn = image.bytes(&segment).unwrap();
    torn.extend((0..150).map(|_| rng.random::<u8>()));
    image.set_bytes(&segment, torn);
    let index_garbage: Vec<u8> = (0..image.bytes(INDEX_FILE).unwrap().len())
        .map(|_| rng.random())
        .collect();
    for damaged_index in [false, true] {
        let base = image.crash_image();
        if damaged_index {
            base.set_bytes(INDEX_FILE, index_garbage.clone());
        }
        let probe = base.crash_image();
        let (engine, report) = open(&probe, &config).unwrap();
        assert!(report.log.truncated.is_some());
        assert_eq!(report.index_rebuilt, damaged_index);
        let syncs = probe.syncs();
        drop(engine);
        assert!(syncs >= 2, "open made {syncs} syncs");
        for k in 1..=syncs {
            let crashing = base.crash_image();
            crashing.crash_at_sync(k);
            assert!(
                open(&crashing, &config).is_err(),
                "open survived a crash at its sync {k} of {syncs}"
            );
            let after = crashing.crash_image();
            let (engine, _) = open(&after, &config).unwrap_or_else(|e| {
                panic!("index damaged {damaged_index}, crash at sync {k}: reopen failed: {e}")
            });
            if let Err(e) = verify_appends(&engine, &attempts) {
                panic!("index damaged {damaged_index}, crash at sync {k} of {syncs}: {e}");
            }
        }
    }
}

/// The name of the store's last segment and its bytes.
fn last_segment(engine: &Engine, storage: &FaultStorage) -> (String, Vec<u8>) {
    let seg = engine.log().segment_names().last().unwrap().clone();
    let mut bytes = storage.bytes(&seg).unwrap();
    // Past the log's end the writer leaves only preallocated zeros.
    let base: u64 = seg.strip_suffix(".seg").unwrap().parse().unwrap();
    let end = usize::try_from(engine.log().readable_end() - base).unwrap();
    // Compared as slices (a `memcmp`): a byte-at-a-time check of the megabytes of zeros took
    // most of this file's run time in unoptimized test builds.
    assert!(
        bytes[end..] == vec![0u8; bytes.len() - end][..],
        "non-zero bytes past the log end of {seg}"
    );
    bytes.truncate(end);
    (seg, bytes)
}

/// A store with some appends, reopened so its index durably covers them, then one last
/// acknowledged append. Returns the storage, the crash image taken right after the last append,
/// the events before it, the last append, and the segment bytes before and after it.
struct TornSetup {
    image: FaultStorage,
    closed: FaultStorage,
    prefix: Vec<EventRecord>,
    last: Attempt,
    segment: String,
    before: Vec<u8>,
    after: Vec<u8>,
}

fn torn_setup(config: &EngineConfig) -> TornSetup {
    let storage = FaultStorage::new();
    let mut rng = random::rng(42);
    {
        let (engine, _) = open(&storage, config).unwrap();
        for i in 0..8 {
            let stream = name(&format!("s-{}", i % 3));
            engine
                .append(
                    &stream,
                    ExpectedRevision::Any,
                    random::random_events(&mut rng, 3, 80),
                )
                .unwrap();
        }
        engine.close();
    }
    let (engine, _) = open(&storage, config).unwrap();
    let prefix = read_everything(&engine);
    let (segment, before) = last_segment(&engine, &storage);
    let stream = name("s-last");
    let events = random::random_events(&mut rng, 2, 60);
    let result = engine
        .append(&stream, ExpectedRevision::NoStream, events.clone())
        .unwrap();
    let (segment_after, after) = last_segment(&engine, &storage);
    assert_eq!(
        segment, segment_after,
        "the last append stays in its segment"
    );
    assert!(after.len() > before.len() + 60);
    let image = storage.crash_image();
    engine.close();
    let closed = storage.crash_image();
    TornSetup {
        image,
        closed,
        prefix,
        last: Attempt {
            stream,
            events,
            acked: Some(result),
        },
        segment,
        before,
        after,
    }
}

/// Opens `storage` with its segment replaced by `bytes` and checks: the prefix is intact, the
/// last append is there exactly when `whole`, the truncation report, a clean check, and that the
/// store takes an append and reopens cleanly.
fn check_torn(
    setup: &TornSetup,
    base: &FaultStorage,
    bytes: Vec<u8>,
    whole: bool,
    config: &EngineConfig,
) -> Result<OpenReport, String> {
    let storage = base.crash_image();
    let data_end = bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i as u64 + 1);
    storage.set_bytes(&setup.segment, bytes);
    let (engine, report) = open(&storage, config).map_err(|e| format!("open: {e}"))?;
    let all = read_everything(&engine);
    let n = setup.prefix.len();
    if all.get(..n.min(all.len())) != Some(&setup.prefix[..]) {
        return Err("the acknowledged prefix changed".to_owned());
    }
    let want_len = if whole {
        n + setup.last.events.len()
    } else {
        n
    };
    if all.len() != want_len {
        return Err(format!("{} events, want {want_len}", all.len()));
    }
    // Zeros after the last non-zero byte are preallocated space, dropped without a report.
    let before = setup.before.len() as u64;
    let data_end = data_end.max(before);
    let cut_expected = !whole && data_end > before;
    match (&report.log.truncated, cut_expected) {
        (None, false) => {}
        (Some(t), true)
            if t.file == setup.segment
                && t.offset == before
                && t.bytes_dropped == data_end - before => {}
        (t, _) => {
            return Err(format!(
                "truncation report {t:?}, expected a cut: {cut_expected}"
            ));
        }
    }
    // The last append, if there, is whole and where it was acknowledged.
    let tail: Vec<(Uuid, &str, Position)> = all[n..]
        .iter()
        .map(|e| (e.id, e.stream.as_str(), e.position))
        .collect();
    let want_tail: Vec<(Uuid, &str, Position)> = if whole {
        let last = setup.last.acked.unwrap().position.0;
        let k = setup.last.events.len() as u64;
        setup
            .last
            .events
            .iter()
            .zip(last + 1 - k..)
            .map(|(e, p)| (e.id, setup.last.stream.as_str(), Position(p)))
            .collect()
    } else {
        Vec::new()
    };
    if tail != want_tail {
        return Err(format!("after the prefix: {tail:?}, want {want_tail:?}"));
    }
    let check = engine.check(|_| {}).map_err(|e| format!("check: {e}"))?;
    if !check.problems.is_empty() {
        return Err(format!("check: {:?}", check.problems));
    }
    let r = engine
        .append(
            &name("s-after"),
            ExpectedRevision::NoStream,
            vec![random::random_event(&mut random::rng(1), 10)],
        )
        .map_err(|e| format!("append after tear: {e}"))?;
    if r.position != Position(want_len as u64 + 1) {
        return Err(format!("append after tear at {r:?}"));
    }
    engine.close();
    drop(engine);
    let (engine, again) = open(&storage, config).map_err(|e| format!("reopen: {e}"))?;
    if again.log.truncated.is_some() || again.index_rebuilt || engine.head() != r.position {
        return Err(format!("second open {again:?}"));
    }
    Ok(report)
}

#[test]
fn torn_last_write_at_every_byte_is_all_or_nothing() {
    let config = lazy_index(EngineConfig::default());
    let setup = torn_setup(&config);
    let (lo, hi) = (setup.before.len(), setup.after.len());
    let mut garbage_rng = random::rng(3);
    for cut in lo..=hi {
        let whole = cut == hi;
        let ctx = |what: &str, e: String| format!("cut at {cut} of {lo}..{hi}, {what}: {e}");
        // The write stopped at `cut`.
        let report = check_torn(
            &setup,
            &setup.image,
            setup.after[..cut].to_vec(),
            whole,
            &config,
        )
        .unwrap_or_else(|e| panic!("{}", ctx("cut short", e)));
        assert!(
            !report.index_rebuilt,
            "cut at {cut}: the index checkpoint was still good"
        );
        // The write stopped at `cut` inside preallocated zeros.
        let mut preallocated = setup.after[..cut].to_vec();
        preallocated.resize(hi + 4096, 0);
        check_torn(&setup, &setup.image, preallocated, whole, &config)
            .unwrap_or_else(|e| panic!("{}", ctx("cut short in zeros", e)));
        // The file grew but the rest of the write never landed.
        if !whole {
            let mut zeroed = setup.after.clone();
            zeroed[cut..].fill(0);
            check_torn(&setup, &setup.image, zeroed, false, &config)
                .unwrap_or_else(|e| panic!("{}", ctx("zero-filled", e)));
            let mut garbage = setup.after[..cut].to_vec();
            let extra = garbage_rng.random_range(1..=(hi - cut) + 40);
            garbage.extend((0..extra).map(|_| garbage_rng.random::<u8>()));
            check_torn(&setup, &setup.image, garbage, false, &config)
                .unwrap_or_else(|e| panic!("{}", ctx("garbage after", e)));
        }
        // The index was made durable past the tear (impossible with fsync, but the index must
        // then be rebuilt rather than trusted).
        let report = check_torn(
            &setup,
            &setup.closed,
            setup.after[..cut].to_vec(),
            whole,
            &config,
        )
        .unwrap_or_else(|e| panic!("{}", ctx("index ahead of the log", e)));
        assert_eq!(report.index_rebuilt, !whole, "cut at {cut}");
    }
}

/// A store of several appends whose crash image's index covers nothing (a fresh store with a
/// lazy index), with the address of each record.
struct Flips {
    image: FaultStorage,
    /// (segment, offset in file, length) of every record, in log order.
    records: Vec<(String, u64, u64)>,
    /// Events before each record.
    events_before: Vec<usize>,
    all: Vec<EventRecord>,
}

fn flips_setup(config: &EngineConfig, appends: usize, payload_bytes: usize) -> Flips {
    let storage = FaultStorage::new();
    let (engine, _) = open(&storage, config).unwrap();
    let mut rng = random::rng(9);
    let mut records = Vec::new();
    let mut events_before = Vec::new();
    for i in 0..appends {
        let (seg_before, bytes_before) = last_segment(&engine, &storage);
        let events = if payload_bytes > 0 {
            vec![
                random::event_with_payload(&mut rng, payload_bytes),
                random::event_with_payload(&mut rng, payload_bytes),
            ]
        } else {
            random::random_events(&mut rng, 3, 100)
        };
        events_before.push(engine.head().0 as usize);
        engine
            .append(
                &name(&format!("f-{}", i % 4)),
                ExpectedRevision::Any,
                events,
            )
            .unwrap();
        let (seg, bytes) = last_segment(&engine, &storage);
        let start = if seg == seg_before {
            bytes_before.len() as u64
        } else {
            SEGMENT_HEADER_BYTES
        };
        records.push((seg, start, bytes.len() as u64 - start));
    }
    let all = read_everything(&engine);
    let image = storage.crash_image();
    engine.close();
    Flips {
        image,
        records,
        events_before,
        all,
    }
}

fn flip(storage: &FaultStorage, file: &str, offset: u64, bit: u8) {
    let mut bytes = storage.bytes(file).unwrap();
    bytes[offset as usize] ^= 1 << bit;
    storage.set_bytes(file, bytes);
}

#[test]
fn bit_flip_in_the_last_record_is_cut_as_a_torn_tail() {
    let config = lazy_index(EngineConfig::default());
    let f = flips_setup(&config, 10, 0);
    let (seg, start, len) = f.records.last().unwrap().clone();
    let kept = *f.events_before.last().unwrap();
    for offset in start..start + len {
        let storage = f.image.crash_image();
        flip(&storage, &seg, offset, (offset % 8) as u8);
        let (engine, report) = open(&storage, &config)
            .unwrap_or_else(|e| panic!("flip at {offset}: open failed: {e}"));
        let t = report
            .log
            .truncated
            .as_ref()
            .unwrap_or_else(|| panic!("flip at {offset}: not reported"));
        assert_eq!(
            (t.file.as_str(), t.offset, t.bytes_dropped),
            (seg.as_str(), start, len)
        );
        assert_eq!(read_everything(&engine), f.all[..kept], "flip at {offset}");
        let check = engine.check(|_| {}).unwrap();
        assert!(check.problems.is_empty(), "{:?}", check.problems);
    }
}

/// The error of opening `storage`, which must be a corrupt record at `file` and `offset`.
fn assert_corrupt_at(storage: &FaultStorage, config: &EngineConfig, file: &str, offset: u64) {
    match open(storage, config) {
        Err(EngineError::Log(LogError::Corrupt {
            file: f, offset: o, ..
        })) => assert_eq!((f.as_str(), o), (file, offset)),
        Err(e) => panic!("open failed with {e:?}, want corrupt record in {file} at {offset}"),
        Ok((_, report)) => {
            panic!("open succeeded ({report:?}); want corrupt record in {file} at {offset}")
        }
    }
}

#[test]
fn bit_flip_in_a_sealed_segment_refuses_to_open() {
    let config = lazy_index(small_segments());
    let f = flips_setup(&config, 60, 0);
    let last_segment = f.records.last().unwrap().0.clone();
    let sealed: Vec<_> = f
        .records
        .iter()
        .filter(|(seg, _, _)| *seg != last_segment)
        .collect();
    assert!(sealed.len() > 10, "the run must fill several segments");
    let mut rng = random::rng(5);
    for (seg, start, len) in sealed.iter().step_by(3) {
        let offset = start + rng.random_range(0..*len);
        let storage = f.image.crash_image();
        flip(&storage, seg, offset, rng.random_range(0..8));
        assert_corrupt_at(&storage, &config, seg, *start);
    }
}

#[test]
fn bit_flip_far_from_the_tail_refuses_to_open() {
    // Five appends of 2 × 3.9 MB: the first record is more than the torn-tail window (16 MiB) from
    // the end of the one segment.
    let config = lazy_index(EngineConfig::default());
    let f = flips_setup(&config, 5, 3_900_000);
    let (seg, start, _) = f.records[0].clone();
    let (_, last_start, last_len) = f.records.last().unwrap().clone();
    assert!(last_start + last_len - start > annals_log::TORN_TAIL_WINDOW_BYTES);
    let storage = f.image.crash_image();
    flip(&storage, &seg, start + 100, 2);
    assert_corrupt_at(&storage, &config, &seg, start);
}

#[test]
fn bit_flip_below_the_index_checkpoint_is_found_by_reads_and_check() {
    // Enough events that the damaged record is more than a position-map bucket (128 events)
    // below the last few.
    let f = flips_setup(&EngineConfig::default(), 120, 0);
    assert!(f.all.len() > 200);
    // Reopen and close so the index durably covers every record; then damage record 2.
    let storage = f.image.crash_image();
    open(&storage, &EngineConfig::default()).unwrap().0.close();
    let (seg, start, _) = f.records[2].clone();
    flip(&storage, &seg, start + 40, 0);
    // Recovery does not rescan below the checkpoint, but open reads the idempotency window
    // (here the whole log) and refuses the damage it finds there.
    assert_corrupt_at(&storage, &EngineConfig::default(), &seg, start);
    // With the damage outside that window (and outside the position-map bucket its reads start
    // from), open succeeds; reads and `check` find it.
    let config = EngineConfig {
        idempotency_window_events: 3,
        ..EngineConfig::default()
    };
    let (engine, report) = open(&storage, &config).unwrap();
    assert!(report.log.truncated.is_none() && !report.index_rebuilt);
    let victim = &f.all[f.events_before[2]];
    let err = engine
        .read_stream(&victim.stream, victim.revision, Direction::Forwards, 1)
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::Log(LogError::Corrupt { file, offset, .. }) if *file == seg && *offset == start),
        "{err:?}"
    );
    match engine.check(|_| {}) {
        Err(EngineError::Log(LogError::Corrupt { file, offset, .. })) => {
            assert_eq!((file.as_str(), offset), (seg.as_str(), start));
        }
        other => panic!("check: {other:?}"),
    }
}

/// Regression: a missing index file was re-indexed from the whole log without saying so
/// (`OpenReport::index_rebuilt` stayed false), although the report documents it.
#[test]
fn missing_index_file_is_reported_as_rebuilt() {
    let config = EngineConfig::default();
    let storage = FaultStorage::new();
    let (engine, report) = open(&storage, &config).unwrap();
    assert!(!report.index_rebuilt, "a new store has nothing to rebuild");
    engine
        .append(
            &name("m-1"),
            ExpectedRevision::NoStream,
            random::random_events(&mut random::rng(1), 2, 10),
        )
        .unwrap();
    engine.close();
    drop(engine);
    storage.remove(INDEX_FILE).unwrap();
    let (_, report) = open(&storage, &config).unwrap();
    assert!(report.index_rebuilt, "{report:?}");
    assert_eq!(report.records_reindexed, 1);
}

/// Appends `events` to `stream` until the engine takes writes again (it repairs the log every
/// second or so once the disk answers); every refusal meanwhile is a clean stop.
fn append_once_writes_resume(
    engine: &Engine,
    stream: &StreamName,
    events: Vec<NewEvent>,
) -> Attempt {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match engine.append(stream, ExpectedRevision::Any, events.clone()) {
            Ok(r) => {
                return Attempt {
                    stream: stream.clone(),
                    events,
                    acked: Some(r),
                };
            }
            Err(EngineError::Stopped(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("writes did not resume: {e}"),
        }
    }
}

/// The disk fails under the appends in flight (a failed fsync, or no space left); they fail
/// cleanly, reads go on, and once the disk answers again the engine repairs the log in place
/// and takes writes: nothing of the failed appends is ever visible, before or after a restart
/// or a power loss, and every acknowledged append is where it was acknowledged. The index store
/// is idle meanwhile (nothing new to commit, no durable flush due), so the log alone fails here;
/// `index_failure.rs` fails the index store.
fn disk_fails_then_recovers(fail: impl Fn(&FaultStorage, bool), reason_says: &str) {
    for concurrent in [false, true] {
        let storage = FaultStorage::new();
        // No zeros written ahead: every batch grows the file, so a full disk fails the next one.
        let mut config = EngineConfig::default();
        config.log.preallocate_bytes = 0;
        config.index_flush_interval = Duration::from_secs(3_600);
        let (engine, _) = open(&storage, &config).unwrap();
        let mut rng = random::rng(11);
        let mut attempts = Vec::new();
        for i in 0..5 {
            let stream = name(&format!("a-{}", i % 2));
            let events = random::random_events(&mut rng, 3, 50);
            let r = engine
                .append(&stream, ExpectedRevision::Any, events.clone())
                .unwrap();
            attempts.push(Attempt {
                stream,
                events,
                acked: Some(r),
            });
        }
        // The index store has committed what was staged.
        std::thread::sleep(Duration::from_millis(200));
        fail(&storage, true);
        let failed: Vec<Attempt> = if concurrent {
            std::thread::scope(|s| {
                let hs: Vec<_> = (0..4u64)
                    .map(|t| {
                        let engine = engine.clone();
                        s.spawn(move || {
                            let mut rng = random::rng(100 + t);
                            let stream = name(&format!("c-{t}"));
                            let events = random::random_events(&mut rng, 3, 50);
                            let r = engine.append(&stream, ExpectedRevision::Any, events.clone());
                            assert!(matches!(r, Err(EngineError::Stopped(_))), "{r:?}");
                            Attempt {
                                stream,
                                events,
                                acked: None,
                            }
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            })
        } else {
            let stream = name("a-0");
            let events = random::random_events(&mut rng, 3, 50);
            match engine.append(&stream, ExpectedRevision::Any, events.clone()) {
                Err(EngineError::Stopped(reason)) => {
                    assert!(reason.contains(reason_says), "{reason}")
                }
                other => panic!("append on a failing disk: {other:?}"),
            }
            vec![Attempt {
                stream,
                events,
                acked: None,
            }]
        };
        assert!(engine.write_failure().is_some());
        // While the disk still fails, writes stay refused and reads answer.
        std::thread::sleep(std::time::Duration::from_millis(1_500));
        let refused = engine.append(
            &name("a-1"),
            ExpectedRevision::Any,
            random::random_events(&mut rng, 1, 10),
        );
        assert!(
            matches!(refused, Err(EngineError::Stopped(_))),
            "{refused:?}"
        );
        let acked_events: usize = attempts.iter().map(|a| a.events.len()).sum();
        assert_eq!(read_everything(&engine).len(), acked_events);
        attempts.extend(failed);

        // The disk answers again: writes resume, where the last good append left off.
        fail(&storage, false);
        let resumed = append_once_writes_resume(
            &engine,
            &name("a-1"),
            random::random_events(&mut rng, 2, 10),
        );
        assert!(engine.write_failure().is_none());
        let acked = resumed.acked.unwrap();
        assert_eq!(
            acked.position.0,
            (acked_events + resumed.events.len()) as u64,
            "positions stay dense"
        );
        attempts.push(resumed);
        for i in 0..3 {
            let stream = name(&format!("c-{i}"));
            let events = random::random_events(&mut rng, 2, 20);
            let r = engine
                .append(&stream, ExpectedRevision::Any, events.clone())
                .unwrap();
            attempts.push(Attempt {
                stream,
                events,
                acked: Some(r),
            });
        }
        let live = read_everything(&engine);
        let acked_now: usize = attempts
            .iter()
            .filter(|a| a.acked.is_some())
            .map(|a| a.events.len())
            .sum();
        assert_eq!(
            live.len(),
            acked_now,
            "only acknowledged appends are visible"
        );
        verify_appends(&engine, &attempts)
            .unwrap_or_else(|e| panic!("live, concurrent {concurrent}: {e}"));
        engine.close();
        drop(engine);
        // After a power loss, and after a plain restart: the failed appends never come back.
        for (what, image) in [
            ("crash", storage.crash_image()),
            ("restart", storage.clone()),
        ] {
            let (engine, _) = open(&image, &config).unwrap();
            verify_appends(&engine, &attempts)
                .unwrap_or_else(|e| panic!("{what}, concurrent {concurrent}: {e}"));
            assert_eq!(read_everything(&engine).len(), acked_now, "{what}");
        }
    }
}

#[test]
fn failed_fsync_fails_the_appends_in_flight_and_writes_resume_once_the_disk_answers() {
    disk_fails_then_recovers(FaultStorage::fail_syncs, "sync failed");
}

#[test]
fn a_full_disk_fails_appends_cleanly_and_writes_resume_once_space_is_freed() {
    disk_fails_then_recovers(FaultStorage::set_full, "log write failed");
}

/// A store with appends, metadata, a soft delete, an undelete and a tombstone; returns it closed.
fn store_with_history(config: &EngineConfig) -> FaultStorage {
    let storage = FaultStorage::new();
    let (engine, _) = open(&storage, config).unwrap();
    let mut rng = random::rng(21);
    for i in 0..40 {
        let stream = name(&format!("h-{}", i % 5));
        engine
            .append(
                &stream,
                ExpectedRevision::Any,
                random::random_events(&mut rng, 3, 60),
            )
            .unwrap();
    }
    let meta = name("h-0").metadata_stream().unwrap();
    engine
        .append(
            &meta,
            ExpectedRevision::Any,
            vec![NewEvent::json("$metadata", r#"{"$maxCount":2}"#).unwrap()],
        )
        .unwrap();
    engine.delete(&name("h-1"), ExpectedRevision::Any).unwrap();
    engine.delete(&name("h-2"), ExpectedRevision::Any).unwrap();
    engine
        .append(
            &name("h-2"),
            ExpectedRevision::Any,
            random::random_events(&mut rng, 2, 10),
        )
        .unwrap();
    engine
        .tombstone(&name("h-3"), ExpectedRevision::Any)
        .unwrap();
    engine.close();
    storage
}

/// Everything a reader can see: `$all` and each stream's read (or its error).
fn snapshot(engine: &Engine) -> (Vec<EventRecord>, Vec<Result<Vec<EventRecord>, String>>) {
    let all = read_everything(engine);
    let streams = ["h-0", "h-1", "h-2", "h-3", "h-4", "$$h-0", "$$h-2"]
        .iter()
        .map(|s| {
            engine
                .read_stream(&name(s), Revision(0), Direction::Forwards, 1_000)
                .map_err(|e| e.to_string())
        })
        .collect();
    (all, streams)
}

/// Something done to a store's files.
type Damage<'a> = Box<dyn Fn(&FaultStorage) + 'a>;

#[test]
fn deleted_or_damaged_index_is_rebuilt_and_reads_the_same() {
    let config = EngineConfig::default();
    let storage = store_with_history(&config);
    let (engine, _) = open(&storage, &config).unwrap();
    let want = snapshot(&engine);
    let records = engine.check(|_| {}).unwrap().records;
    assert!(matches!(
        engine
            .read_stream(&name("h-1"), Revision(0), Direction::Forwards, 10)
            .unwrap_err()
            .domain(),
        Some(DomainError::StreamNotFound { .. })
    ));
    engine.close();
    drop(engine);
    let index = storage.bytes(INDEX_FILE).unwrap();
    let damages: Vec<(&str, Damage<'_>)> = vec![
        (
            "deleted",
            Box::new(|s: &FaultStorage| {
                s.remove(INDEX_FILE).unwrap();
                s.sync_dir().unwrap();
            }),
        ),
        (
            "emptied",
            Box::new(|s: &FaultStorage| s.set_bytes(INDEX_FILE, Vec::new())),
        ),
        (
            "header zeroed",
            Box::new(|s: &FaultStorage| {
                let mut b = index.clone();
                b[..4096].fill(0);
                s.set_bytes(INDEX_FILE, b);
            }),
        ),
        (
            "cut in half",
            Box::new(|s: &FaultStorage| s.set_bytes(INDEX_FILE, index[..index.len() / 2].to_vec())),
        ),
        (
            "garbage",
            Box::new(|s: &FaultStorage| {
                let mut rng = random::rng(8);
                s.set_bytes(INDEX_FILE, (0..index.len()).map(|_| rng.random()).collect());
            }),
        ),
    ];
    for (what, damage) in damages {
        let storage = storage.crash_image();
        damage(&storage);
        let (engine, report) =
            open(&storage, &config).unwrap_or_else(|e| panic!("index {what}: open failed: {e}"));
        assert!(report.index_rebuilt, "index {what}: {report:?}");
        assert_eq!(report.records_reindexed, records, "index {what}");
        assert_eq!(snapshot(&engine), want, "index {what}");
        let check = engine.check(|_| {}).unwrap();
        assert!(
            check.problems.is_empty(),
            "index {what}: {:?}",
            check.problems
        );
        // The rebuilt index is durable: the next open re-indexes nothing.
        engine.close();
        drop(engine);
        let (engine, report) = open(&storage, &config).unwrap();
        assert!(
            !report.index_rebuilt && report.records_reindexed == 0,
            "index {what}: {report:?}"
        );
        assert_eq!(snapshot(&engine), want, "index {what}, reopened");
    }
}

/// Random bytes written over part of a real index file (not just its header), as a disk fault or
/// a stray write would: opening must not panic inside the index store; the index is rebuilt from
/// the log and every event reads back.
#[test]
fn an_index_file_overwritten_in_the_middle_is_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = random::rng(77);
    let mut attempts = Vec::new();
    {
        let (engine, _) = Engine::open_dir(dir.path(), EngineConfig::default()).unwrap();
        for i in 0..600 {
            let stream = name(&format!("order-{}", i % 50));
            let events = random::random_events(&mut rng, 5, 200);
            let r = engine
                .append(&stream, ExpectedRevision::Any, events.clone())
                .unwrap();
            attempts.push(Attempt {
                stream,
                events,
                acked: Some(r),
            });
        }
        engine.close();
    }
    let file = dir.path().join(INDEX_FILE);
    let mut bytes = std::fs::read(&file).unwrap();
    assert!(
        bytes.len() > 64 * 1024,
        "the index is {} bytes",
        bytes.len()
    );
    for seed in 0..4u64 {
        let mut damaged = bytes.clone();
        let from = 4096 + (seed as usize * 8192) % (damaged.len() / 2);
        let to = (from + 300 * 1024).min(damaged.len());
        for b in &mut damaged[from..to] {
            *b = rng.random();
        }
        std::fs::write(&file, &damaged).unwrap();
        let opened =
            std::panic::catch_unwind(|| Engine::open_dir(dir.path(), EngineConfig::default()));
        let (engine, report) = opened
            .unwrap_or_else(|_| panic!("opening panicked (damage at {from}..{to})"))
            .unwrap();
        assert!(
            report.index_rebuilt,
            "damage at {from}..{to} went unnoticed"
        );
        verify_appends(&engine, &attempts).unwrap();
        engine.close();
        bytes = std::fs::read(&file).unwrap();
    }
}
