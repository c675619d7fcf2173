//! An index file damaged in a way redb accepts at open (a clean shutdown, so redb trusts the file
//! without reading it) is found at open and rebuilt from the log, so every stream reads every
//! event again: by redb's integrity check wherever the damage is, and by the comparison with the
//! log's tail when that check is turned off and the damage is in the newest streams.

use std::collections::HashMap;
use std::path::Path;

use annals_core::{Direction, ExpectedRevision, NewEvent, Revision, StreamName};
use annals_engine::{Engine, EngineConfig};
use annals_index::INDEX_FILE;
use uuid::Uuid;

fn name(s: &str) -> StreamName {
    StreamName::new(s).unwrap()
}

fn events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| NewEvent::json("Ty", format!("{{\"i\":{i}}}")).unwrap())
        .collect()
}

/// Writes 20 `old-*` streams of 15 events, then 1,500 events in 5 `new-*` streams, so the log's
/// last 1,024 events (the tail checked at open) hold only `new-*` streams; closes cleanly.
fn fill(dir: &Path) -> HashMap<String, Vec<Uuid>> {
    let (engine, _) = Engine::open_dir(dir, EngineConfig::default()).unwrap();
    let mut written: HashMap<String, Vec<Uuid>> = HashMap::new();
    let mut append = |stream: String, n: usize| {
        let batch = events(n);
        written
            .entry(stream.clone())
            .or_default()
            .extend(batch.iter().map(|e| e.id));
        engine
            .append(&name(&stream), ExpectedRevision::Any, batch)
            .unwrap();
    };
    for round in 0..3 {
        for i in 0..20 {
            append(format!("old-{i}"), 5 + round % 2);
        }
    }
    for i in 0..30 {
        append(format!("new-{}", i % 5), 50);
    }
    engine.close();
    written
}

/// Every stream reads exactly the events written to it, in order.
fn check_streams(engine: &Engine, written: &HashMap<String, Vec<Uuid>>) -> Result<(), String> {
    for (stream, ids) in written {
        let read = engine
            .read_stream(&name(stream), Revision(0), Direction::Forwards, 10_000)
            .map_err(|e| format!("{stream}: {e}"))?;
        let got: Vec<Uuid> = read.iter().map(|e| e.id).collect();
        if &got != ids {
            return Err(format!(
                "{stream} reads {} events, {} were written",
                got.len(),
                ids.len()
            ));
        }
    }
    Ok(())
}

/// Changes the last character of every copy of stream name `stream` in the index file (copies in
/// pages redb freed as well as the live entry), as the fuzzer's finding did: the stream's entry
/// now names another stream. Returns how many copies were changed.
fn rename_in_index(dir: &Path, stream: &str) -> usize {
    let file = dir.join(INDEX_FILE);
    let mut bytes = std::fs::read(&file).unwrap();
    let needle = stream.as_bytes();
    let mut changed = 0;
    let mut at = 0;
    while let Some(found) = bytes[at..].windows(needle.len()).position(|w| w == needle) {
        let last = at + found + needle.len() - 1;
        bytes[last] = b'X';
        changed += 1;
        at = last + 1;
    }
    std::fs::write(&file, &bytes).unwrap();
    changed
}

fn reopen_and_check(dir: &Path, config: EngineConfig, written: &HashMap<String, Vec<Uuid>>) {
    let opened = std::panic::catch_unwind(|| Engine::open_dir(dir, config));
    let (engine, report) = opened
        .unwrap_or_else(|_| panic!("opening panicked"))
        .unwrap();
    assert!(
        report.index_rebuilt,
        "the damage went unnoticed: {report:?}"
    );
    check_streams(&engine, written).unwrap();
    assert!(engine.check(|_| {}).unwrap().problems.is_empty());
    engine.close();
    drop(engine);
    // The rebuilt index is durable and passes every check: the next open trusts it.
    let (engine, report) = Engine::open_dir(dir, EngineConfig::default()).unwrap();
    assert!(!report.index_rebuilt, "{report:?}");
    check_streams(&engine, written).unwrap();
    engine.close();
}

/// Damage to an old stream, far from the log's tail: only redb's page checksums see it.
#[test]
fn a_renamed_stream_entry_is_found_by_the_integrity_check() {
    let dir = tempfile::tempdir().unwrap();
    let written = fill(dir.path());
    assert!(rename_in_index(dir.path(), "old-7") > 0);
    reopen_and_check(dir.path(), EngineConfig::default(), &written);
}

/// Damage to a stream of the log's tail, with redb's check turned off: the comparison of the
/// index with the log's last records sees it.
#[test]
fn a_renamed_stream_entry_of_the_tail_is_found_without_the_integrity_check() {
    let dir = tempfile::tempdir().unwrap();
    let written = fill(dir.path());
    assert!(rename_in_index(dir.path(), "new-3") > 0);
    let mut config = EngineConfig::default();
    config.index.check_integrity_at_open = false;
    reopen_and_check(dir.path(), config, &written);
}
