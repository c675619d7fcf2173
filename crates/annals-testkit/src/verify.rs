//! Checking a store after a crash against the appends sent to it: each append is all there or
//! not at all, acknowledged ones are where they were acknowledged, positions are dense and stream
//! revisions contiguous, nothing is stored twice and the store check is clean.

use std::collections::{BTreeMap, HashMap};

use annals_core::{AppendResult, Direction, EventRecord, NewEvent, Position, Revision, StreamName};
use annals_engine::Engine;
use uuid::Uuid;

use crate::compare::check_dense;

/// One append a test sent, and its answer if it was acknowledged.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub stream: StreamName,
    pub events: Vec<NewEvent>,
    pub acked: Option<AppendResult>,
}

/// Every event of `$all`, forwards.
pub fn read_everything(engine: &Engine) -> Vec<EventRecord> {
    let mut out = Vec::new();
    let mut from = Position::START;
    loop {
        let page = engine
            .read_all(from, Direction::Forwards, 10_000, None)
            .unwrap();
        out.extend(page.events);
        if page.end_reached {
            return out;
        }
        from = page.next;
    }
}

/// Checks a reopened store against the appends sent to it: dense positions, every event from
/// exactly one append, each append whole or absent and, if acknowledged, present where it was
/// acknowledged; contiguous stream revisions; a clean check.
pub fn verify_appends(engine: &Engine, attempts: &[Attempt]) -> Result<(), String> {
    let all = verify_reads(engine, attempts)?;
    let check = engine.check(|_| {}).map_err(|e| format!("check: {e}"))?;
    if !check.problems.is_empty() || check.events != all.len() as u64 {
        return Err(format!("check: {check:?}"));
    }
    Ok(())
}

/// [`verify_appends`] through reads only, without the store check (which a stopped engine
/// refuses); returns `$all`.
pub fn verify_reads(engine: &Engine, attempts: &[Attempt]) -> Result<Vec<EventRecord>, String> {
    let all = read_everything(engine);
    check_dense(&all)?;
    if engine.head() != Position(all.len() as u64) {
        return Err(format!(
            "head {:?}, $all holds {}",
            engine.head(),
            all.len()
        ));
    }
    let mut by_id: HashMap<Uuid, &EventRecord> = HashMap::new();
    for e in &all {
        if by_id.insert(e.id, e).is_some() {
            return Err(format!("event {} is in the log twice", e.id));
        }
    }
    let mut sent: HashMap<Uuid, usize> = HashMap::new();
    for (i, a) in attempts.iter().enumerate() {
        for e in &a.events {
            sent.insert(e.id, i);
        }
    }
    if let Some(e) = all.iter().find(|e| !sent.contains_key(&e.id)) {
        return Err(format!("{e:?} was never sent"));
    }
    for (i, a) in attempts.iter().enumerate() {
        let found: Vec<&EventRecord> = a
            .events
            .iter()
            .filter_map(|e| by_id.get(&e.id).copied())
            .collect();
        if !found.is_empty() && found.len() != a.events.len() {
            return Err(format!(
                "append {i} to {} is half there: {} of {} events",
                a.stream,
                found.len(),
                a.events.len()
            ));
        }
        if let Some(result) = a.acked
            && found.is_empty()
        {
            return Err(format!(
                "acknowledged append {i} to {} ({result:?}) is lost",
                a.stream
            ));
        }
        let (Some(first), Some(last)) = (found.first(), found.last()) else {
            continue;
        };
        for (k, (got, want)) in found.iter().zip(&a.events).enumerate() {
            let k = k as u64;
            if got.stream != a.stream
                || got.position.0 != first.position.0 + k
                || got.revision.0 != first.revision.0 + k
                || got.event_type != want.event_type
                || got.data != want.data
                || got.metadata != want.metadata
            {
                return Err(format!("append {i}: event {k} is {got:?}, sent {want:?}"));
            }
        }
        if let Some(result) = a.acked
            && (last.position != result.position || last.revision != result.next_revision)
        {
            return Err(format!(
                "append {i} acknowledged as {result:?}, stored at {:?} {:?}",
                last.position, last.revision
            ));
        }
    }
    let mut streams: BTreeMap<&str, Vec<&EventRecord>> = BTreeMap::new();
    for e in &all {
        streams.entry(e.stream.as_str()).or_default().push(e);
    }
    for (stream, in_all) in streams {
        let read = engine
            .read_stream(
                &StreamName::new(stream).map_err(|e| e.to_string())?,
                Revision(0),
                Direction::Forwards,
                100_000,
            )
            .map_err(|e| format!("read {stream}: {e}"))?;
        let revisions: Vec<u64> = read.iter().map(|e| e.revision.0).collect();
        if revisions != (0..in_all.len() as u64).collect::<Vec<_>>() {
            return Err(format!("{stream} has revisions {revisions:?}"));
        }
        if read.iter().zip(&in_all).any(|(a, b)| a != *b) {
            return Err(format!("{stream}: stream read and $all disagree"));
        }
    }
    Ok(all)
}
