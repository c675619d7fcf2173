//! The index store fails under the engine (no space left for `index.redb`, or its `fsync`
//! failing) while appends go on: the engine stops taking writes with a clear reason, reads go on
//! answering (with a full disk; with failing syncs they may fail, never answer wrong), and once
//! the disk answers again the engine reopens the index store in place, publishes what was
//! written, and takes writes again: nothing acknowledged is lost or moved, before or after a
//! restart or a power loss, and the store check is clean.

use std::sync::Arc;
use std::time::{Duration, Instant};

use annals_core::{ExpectedRevision, StreamName};
use annals_engine::{Engine, EngineConfig, EngineError};
use annals_index::INDEX_FILE;
use annals_log::FaultStorage;
use annals_testkit::random;
use annals_testkit::verify::{Attempt, read_everything, verify_appends, verify_reads};

fn name(s: &str) -> StreamName {
    StreamName::new(s).unwrap()
}

fn open(storage: &FaultStorage, config: &EngineConfig) -> Engine {
    Engine::open(Arc::new(storage.clone()), config.clone())
        .unwrap()
        .0
}

/// Appends from `threads` threads, each to a stream of its own and to a shared one, until the
/// engine refuses one with [`EngineError::Stopped`] (the index store failed); returns every
/// append sent.
fn append_until_stopped(engine: &Engine, threads: u64, seed: u64) -> Vec<Attempt> {
    let deadline = Instant::now() + Duration::from_secs(30);
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let engine = engine.clone();
                s.spawn(move || {
                    let mut rng = random::rng(seed + t);
                    let mut sent = Vec::new();
                    for i in 0.. {
                        assert!(Instant::now() < deadline, "the index store never failed");
                        let stream = match i % 2 {
                            0 => name(&format!("own-{t}")),
                            _ => name("shared"),
                        };
                        let events = random::random_events(&mut rng, 8, 400);
                        let r = engine.append(&stream, ExpectedRevision::Any, events.clone());
                        let acked = match r {
                            Ok(r) => Some(r),
                            Err(EngineError::Stopped(reason)) => {
                                assert!(reason.contains("index"), "{reason}");
                                None
                            }
                            Err(e) => panic!("append failed otherwise: {e}"),
                        };
                        let stopped = acked.is_none();
                        sent.push(Attempt {
                            stream,
                            events,
                            acked,
                        });
                        if stopped {
                            return sent;
                        }
                    }
                    sent
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    })
}

/// Appends until the engine takes writes again (it repairs every second or so).
fn append_once_writes_resume(engine: &Engine, stream: &StreamName, seed: u64) -> Attempt {
    let mut rng = random::rng(seed);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events = random::random_events(&mut rng, 2, 50);
        match engine.append(stream, ExpectedRevision::Any, events.clone()) {
            Ok(r) => {
                return Attempt {
                    stream: stream.clone(),
                    events,
                    acked: Some(r),
                };
            }
            Err(EngineError::Stopped(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("writes did not resume: {e}"),
        }
    }
}

/// `fail` makes the index file fail. With `sync_fails` (its syncs fail) nothing can be made
/// durable until the disk answers, so the stop lasts; without (no space to grow it), the reopened
/// store may find room inside its own file (what the non-durable commits had taken is free again
/// at the last durable commit), and the repair may then succeed before the disk has room: either
/// is right, and the test takes both.
fn index_fails_then_recovers(fail: impl Fn(&FaultStorage, bool), sync_fails: bool) {
    let storage = FaultStorage::new();
    // Made durable often, so the failing disk is met by a flush as well as by commits.
    let config = EngineConfig {
        index_flush_interval: Duration::from_millis(50),
        ..EngineConfig::default()
    };
    let engine = open(&storage, &config);
    let mut attempts = Vec::new();
    for i in 0..20 {
        let mut rng = random::rng(i);
        let stream = name(&format!("before-{}", i % 3));
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
    std::thread::sleep(Duration::from_millis(200));

    storage.scope_faults(Some(INDEX_FILE));
    fail(&storage, true);
    // (`append_until_stopped` checked that the refusal names the index.)
    attempts.extend(append_until_stopped(&engine, 4, 100));
    if sync_fails {
        let reason = engine.write_failure().unwrap();
        assert!(reason.contains("index"), "{reason}");
    }
    // While the disk still fails, the repair retries; with failing syncs, writes stay refused.
    std::thread::sleep(Duration::from_millis(1_500));
    let mut rng = random::rng(7);
    let (stream, events) = (name("own-0"), random::random_events(&mut rng, 1, 10));
    let probe = engine.append(&stream, ExpectedRevision::Any, events.clone());
    match (&probe, sync_fails) {
        (Err(EngineError::Stopped(_)), _) | (Ok(_), false) => {}
        other => panic!("an append while the index disk fails: {other:?}"),
    }
    attempts.push(Attempt {
        stream,
        events,
        acked: probe.ok(),
    });
    let acked_events: usize = attempts
        .iter()
        .filter(|a| a.acked.is_some())
        .map(|a| a.events.len())
        .sum();
    if !sync_fails {
        // The index store was reopened: every acknowledged event reads as before. (The repair
        // retries every second, and its commit fails the store again until it reopens it, a
        // moment later: a read in that moment fails, and is tried again here.)
        let mut tries = 0;
        let read = loop {
            match verify_reads(&engine, &attempts) {
                Ok(read) => break read,
                Err(e) if tries < 5 && e.contains("index store") => tries += 1,
                Err(e) => panic!("while failing: {e}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        // (A batch whose indexing failed is published by a repair that succeeded.)
        assert!(
            read.len() >= acked_events,
            "{} < {acked_events}",
            read.len()
        );
    }
    // The store check commits the index store: it waits for the repair.
    match engine.check(|_| {}) {
        Err(EngineError::Stopped(_)) => {}
        Ok(report) if !sync_fails => assert!(report.problems.is_empty(), "{report:?}"),
        other => panic!("check while the index disk fails: {other:?}"),
    }

    // The disk answers again: writes resume, and everything written is published.
    fail(&storage, false);
    let resumed = append_once_writes_resume(&engine, &name("after"), 9);
    assert!(engine.write_failure().is_none());
    attempts.push(resumed);
    attempts.extend(
        (0..3u64).map(|i| append_once_writes_resume(&engine, &name(&format!("own-{i}")), 20 + i)),
    );
    verify_appends(&engine, &attempts).unwrap_or_else(|e| panic!("after the repair: {e}"));
    let live = read_everything(&engine);
    engine.close();
    drop(engine);
    // After a power loss, and after a plain restart: everything stays as the live engine had it.
    for (what, image) in [
        ("crash", storage.crash_image()),
        ("restart", storage.clone()),
    ] {
        let engine = open(&image, &config);
        verify_appends(&engine, &attempts).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(read_everything(&engine), live, "{what}");
    }
}

#[test]
fn a_full_disk_under_the_index_stops_writes_and_they_resume_once_space_is_freed() {
    index_fails_then_recovers(FaultStorage::set_full, false);
}

#[test]
fn a_failed_fsync_of_the_index_stops_writes_and_they_resume_once_the_disk_answers() {
    index_fails_then_recovers(FaultStorage::fail_syncs, true);
}

/// The index store fails while nothing is written (its durable flush, every 50 ms while there is
/// something to flush): the repair starts without waiting for a write, and once the disk answers
/// the store is reopened and reads answer, before any write comes.
#[test]
fn an_index_store_failing_while_idle_is_repaired_without_a_write() {
    let storage = FaultStorage::new();
    let config = EngineConfig {
        index_flush_interval: Duration::from_millis(50),
        ..EngineConfig::default()
    };
    let engine = open(&storage, &config);
    let mut attempts = Vec::new();
    storage.scope_faults(Some(INDEX_FILE));
    storage.fail_syncs(true);
    for i in 0..20 {
        let mut rng = random::rng(i);
        let stream = name(&format!("idle-{i}"));
        let events = random::random_events(&mut rng, 3, 100);
        match engine.append(&stream, ExpectedRevision::Any, events.clone()) {
            Ok(r) => attempts.push(Attempt {
                stream,
                events,
                acked: Some(r),
            }),
            Err(EngineError::Stopped(_)) => {
                attempts.push(Attempt {
                    stream,
                    events,
                    acked: None,
                });
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while engine.write_failure().is_none() {
        assert!(
            Instant::now() < deadline,
            "the failing flush did not stop writes"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    storage.fail_syncs(false);
    while engine.write_failure().is_some() {
        assert!(Instant::now() < deadline, "no repair without a write");
        std::thread::sleep(Duration::from_millis(10));
    }
    verify_reads(&engine, &attempts).unwrap();
    attempts.push(append_once_writes_resume(&engine, &name("after"), 3));
    verify_appends(&engine, &attempts).unwrap();
}
