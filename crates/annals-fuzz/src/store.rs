//! Stores for the targets, all in memory: a small seeded store built once per process and copied
//! for each run, the log bytes it holds, and the checks every target runs on a store that opened
//! (read everything, verify, close without a panicked thread).

use std::sync::{Arc, OnceLock};

use annals_core::{Direction, ExpectedRevision, NewEvent, Position, Revision, StreamName};
use annals_engine::{Engine, EngineConfig, EngineError, OpenReport};
use annals_log::{FaultStorage, LogConfig, SEGMENT_SUFFIX};

use crate::Violation;

/// The streams of the seeded store and how many events each holds.
pub(crate) const SEEDED_STREAMS: &[(&str, u64)] = &[("order-1", 3), ("cart-7", 1)];

/// Most pages a full read of a store may take before the target calls it a loop: the stores
/// here hold a few hundred events at most.
const DRAIN_PAGES_MAX: usize = 10_000;
/// Events per page of a full read.
const DRAIN_PAGE_EVENTS: usize = 64;

/// The engine settings of every store here: no preallocated zeros, so images stay small.
pub(crate) fn config() -> EngineConfig {
    EngineConfig {
        log: LogConfig {
            preallocate_bytes: 0,
            ..LogConfig::default()
        },
        ..EngineConfig::default()
    }
}

pub(crate) fn open(storage: &FaultStorage) -> Result<(Engine, OpenReport), EngineError> {
    Engine::open(Arc::new(storage.clone()), config())
}

/// A copy of the seeded store, fresh for each run.
pub(crate) fn seeded(target: &'static str) -> Result<FaultStorage, Violation> {
    static SEEDED: OnceLock<Result<FaultStorage, String>> = OnceLock::new();
    SEEDED
        .get_or_init(build_seeded)
        .as_ref()
        .map(FaultStorage::crash_image)
        .map_err(|e| Violation::new(target, format!("building the seeded store: {e}")))
}

fn build_seeded() -> Result<FaultStorage, String> {
    let storage = FaultStorage::new();
    let (engine, _) = open(&storage).map_err(|e| e.to_string())?;
    for (stream, count) in SEEDED_STREAMS {
        let name = StreamName::new(stream).map_err(|e| e.to_string())?;
        for i in 0..*count {
            let event = NewEvent::json("Seeded", format!("{{\"i\":{i},\"s\":\"{stream}\"}}"))
                .map_err(|e| e.to_string())?;
            engine
                .append(&name, ExpectedRevision::Any, vec![event])
                .map_err(|e| e.to_string())?;
        }
    }
    engine.close_checked().map_err(|e| e.to_string())?;
    Ok(storage)
}

/// The head position of the seeded store.
pub(crate) fn seeded_head() -> Position {
    Position(SEEDED_STREAMS.iter().map(|(_, n)| n).sum())
}

/// The name and bytes of the seeded store's (only) segment.
pub(crate) fn seeded_segment(target: &'static str) -> Result<(String, Vec<u8>), Violation> {
    let image = seeded(target)?;
    image
        .names()
        .into_iter()
        .find(|n| n.ends_with(SEGMENT_SUFFIX))
        .and_then(|name| image.bytes(&name).map(|bytes| (name, bytes)))
        .ok_or_else(|| Violation::new(target, "the seeded store has no segment"))
}

/// Reads every event of `$all` and of the seeded streams, runs `check`, then closes the engine:
/// none of it may fail on a store that opened, and no pipeline thread may have panicked.
pub(crate) fn exercise(target: &'static str, engine: &Engine) -> Result<u64, Violation> {
    let fail =
        |what: &str, e: &dyn std::fmt::Display| Violation::new(target, format!("{what}: {e}"));
    let mut from = Position(1);
    let mut events = 0u64;
    let mut done = false;
    for _ in 0..DRAIN_PAGES_MAX {
        let page = engine
            .read_all(from, Direction::Forwards, DRAIN_PAGE_EVENTS, None)
            .map_err(|e| fail("reading $all of a store that opened", &e))?;
        events += page.events.len() as u64;
        if page.end_reached {
            done = true;
            break;
        }
        if page.next <= from {
            return Err(Violation::new(
                target,
                format!("$all read does not advance at {from:?}"),
            ));
        }
        from = page.next;
    }
    if !done {
        return Err(Violation::new(target, "$all read never reaches the head"));
    }
    for (stream, _) in SEEDED_STREAMS {
        let name = StreamName::new(stream).map_err(|e| fail("stream name", &e))?;
        // A stream that is not there is an answer like any other.
        let _ = engine.read_stream(&name, Revision(0), Direction::Forwards, 1_000);
    }
    let report = engine
        .check(|_| {})
        .map_err(|e| fail("check of a store that opened", &e))?;
    if !report.problems.is_empty() {
        return Err(Violation::new(
            target,
            format!("check of a store that opened: {:?}", report.problems),
        ));
    }
    close(target, engine)?;
    Ok(events)
}

/// Closes `engine`; a pipeline thread that panicked is a violation.
pub(crate) fn close(target: &'static str, engine: &Engine) -> Result<(), Violation> {
    engine
        .close_checked()
        .map_err(|e| Violation::new(target, format!("a pipeline thread panicked: {e}")))
}
