//! Aggregate snapshots: an aggregate's state saved at a stream revision in the target's
//! `annals_snapshots` table, and loading it back together with the events written since.
//!
//! The stored record's key is `aggregate:{stream}`; its state is the revision (8 bytes,
//! big-endian) followed by the caller's bytes, because [`SnapshotRecord`] carries a position but
//! a stream is read by revision.

use annals_core::{Direction, DomainError, EventRecord, Position, Revision, StreamName};
use annals_engine::{Engine, EngineError};

use crate::target::{SnapshotRecord, Target, TargetError};

/// Most events one stream read returns while loading an aggregate.
pub const AGGREGATE_READ_PAGE_EVENTS_MAX: usize = 1_024;

/// An aggregate's state as of `revision` of `stream` (at `position` in `$all`).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AggregateSnapshot {
    pub stream: StreamName,
    pub revision: u64,
    pub position: Position,
    pub state: Vec<u8>,
}

/// An aggregate loaded from its snapshot (if any) and the events after it.
#[derive(Clone, Debug)]
pub struct LoadedAggregate {
    pub snapshot: Option<AggregateSnapshot>,
    /// Events after the snapshot's revision (all events when there is no snapshot), in order.
    pub events: Vec<EventRecord>,
}

/// Saving or loading an aggregate snapshot failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("snapshot {key:?} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("stream {stream} has more than {max} events after its snapshot")]
    TooManyEvents { stream: String, max: usize },
}

fn key(stream: &StreamName) -> String {
    format!("aggregate:{stream}")
}

/// Saves (replacing) the snapshot of `snapshot.stream`.
pub fn save_aggregate_snapshot(
    target: &mut dyn Target,
    snapshot: &AggregateSnapshot,
) -> Result<(), SnapshotError> {
    let mut state = Vec::with_capacity(8 + snapshot.state.len());
    state.extend_from_slice(&snapshot.revision.to_be_bytes());
    state.extend_from_slice(&snapshot.state);
    target.save_snapshot(&SnapshotRecord {
        key: key(&snapshot.stream),
        position: snapshot.position,
        state,
    })?;
    Ok(())
}

/// The snapshot of `stream`, if one was saved.
pub fn load_aggregate_snapshot(
    target: &mut dyn Target,
    stream: &StreamName,
) -> Result<Option<AggregateSnapshot>, SnapshotError> {
    let key = key(stream);
    let Some(record) = target.load_snapshot(&key)? else {
        return Ok(None);
    };
    let (revision, state) =
        record
            .state
            .split_first_chunk::<8>()
            .ok_or_else(|| SnapshotError::Corrupt {
                key: key.clone(),
                reason: format!("{} bytes, shorter than its revision", record.state.len()),
            })?;
    Ok(Some(AggregateSnapshot {
        stream: stream.clone(),
        revision: u64::from_be_bytes(*revision),
        position: record.position,
        state: state.to_vec(),
    }))
}

/// Loads `stream`'s snapshot and reads the stream from the revision after it (from the start
/// when there is none), at most `events_max` events. A stream that does not exist yields no
/// events.
pub fn load_aggregate(
    engine: &Engine,
    target: &mut dyn Target,
    stream: &StreamName,
    events_max: usize,
) -> Result<LoadedAggregate, SnapshotError> {
    let snapshot = load_aggregate_snapshot(target, stream)?;
    let mut next = snapshot
        .as_ref()
        .map_or(0, |s| s.revision.saturating_add(1));
    let mut events = Vec::new();
    loop {
        let page = match engine.read_stream(
            stream,
            Revision(next),
            Direction::Forwards,
            AGGREGATE_READ_PAGE_EVENTS_MAX,
        ) {
            Ok(page) => page,
            Err(EngineError::Domain(DomainError::StreamNotFound { .. })) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let full = page.len() >= AGGREGATE_READ_PAGE_EVENTS_MAX;
        let Some(last) = page.last() else { break };
        next = last.revision.0.saturating_add(1);
        events.extend(page);
        if events.len() > events_max {
            return Err(SnapshotError::TooManyEvents {
                stream: stream.to_string(),
                max: events_max,
            });
        }
        if !full {
            break;
        }
    }
    Ok(LoadedAggregate { snapshot, events })
}
