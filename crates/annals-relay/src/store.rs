//! A relay's state in the log: the definitions of every relay (`$relays`), each relay's
//! checkpoint (`$relay-{name}-checkpoint`, its newest event only) and its parked events
//! (`$relay-{name}-parked`, links to the events with why they were parked). Everything goes
//! through the engine's ordinary appends, so it is durable before it is acknowledged and
//! survives a crash like any event.

use annals_core::{
    Direction, DomainError, EventRecord, ExpectedRevision, LINK_EVENT_TYPE, NewEvent, Revision,
    StreamName,
};
use annals_engine::{Engine, EngineError};
use serde::{Deserialize, Serialize};

use crate::error::RelayError;

const DEFINITIONS_STREAM: &str = "$relays";
const DEFINITIONS_EVENT_TYPE: &str = "$relaysDefined";
const RELAY_CHECKPOINT_EVENT_TYPE: &str = "$relayCheckpoint";
/// Most parked events read at a time.
pub(crate) const RELAY_PARKED_READ_MAX: usize = 1_024;

fn stream(name: &str) -> Result<StreamName, RelayError> {
    StreamName::new(name).map_err(|e| RelayError::Definition(e.to_string()))
}

fn checkpoint_stream(relay: &str) -> Result<StreamName, RelayError> {
    stream(&format!("$relay-{relay}-checkpoint"))
}

pub(crate) fn parked_stream(relay: &str) -> Result<StreamName, RelayError> {
    stream(&format!("$relay-{relay}-parked"))
}

fn event(event_type: &str, data: Vec<u8>) -> Result<NewEvent, RelayError> {
    NewEvent::json(event_type, data).map_err(|e| RelayError::Definition(e.to_string()))
}

fn read(
    engine: &Engine,
    stream: &StreamName,
    from: Revision,
    direction: Direction,
    limit: usize,
) -> Result<Vec<EventRecord>, EngineError> {
    match engine.read_stream(stream, from, direction, limit) {
        Ok(events) => Ok(events),
        Err(EngineError::Domain(
            DomainError::StreamNotFound { .. } | DomainError::StreamDeleted { .. },
        )) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The definition texts of every relay, as last saved.
pub(crate) fn load_definitions(engine: &Engine) -> Result<Vec<String>, RelayError> {
    match engine.last_event(&stream(DEFINITIONS_STREAM)?)? {
        Some(e) => serde_json::from_slice(&e.data)
            .map_err(|err| RelayError::Corrupt(format!("{DEFINITIONS_STREAM}: {err}"))),
        None => Ok(Vec::new()),
    }
}

/// Saves every relay's definition text, as one event.
pub(crate) async fn save_definitions(engine: &Engine, texts: &[String]) -> Result<(), RelayError> {
    let data = serde_json::to_vec(texts).map_err(|e| RelayError::Corrupt(e.to_string()))?;
    engine
        .append_async(
            &stream(DEFINITIONS_STREAM)?,
            ExpectedRevision::Any,
            vec![event(DEFINITIONS_EVENT_TYPE, data)?],
        )
        .await?;
    Ok(())
}

#[derive(Serialize, Deserialize)]
struct Checkpoint {
    position: u64,
}

/// The relay's checkpoint: every position up to it arrived (0: none yet).
pub(crate) fn load_checkpoint(engine: &Engine, relay: &str) -> Result<u64, RelayError> {
    match engine.last_event(&checkpoint_stream(relay)?)? {
        Some(e) => serde_json::from_slice::<Checkpoint>(&e.data)
            .map(|c| c.position)
            .map_err(|err| RelayError::Corrupt(format!("checkpoint of relay {relay}: {err}"))),
        None => Ok(0),
    }
}

/// Writes the relay's checkpoint. The stream keeps only its newest event.
pub(crate) async fn save_checkpoint(
    engine: &Engine,
    relay: &str,
    position: u64,
) -> Result<(), RelayError> {
    let stream = checkpoint_stream(relay)?;
    let data = serde_json::to_vec(&Checkpoint { position })
        .map_err(|e| RelayError::Corrupt(e.to_string()))?;
    let written = engine
        .append_async(
            &stream,
            ExpectedRevision::Any,
            vec![event(RELAY_CHECKPOINT_EVENT_TYPE, data)?],
        )
        .await?;
    if written.next_revision == Revision(0) {
        engine
            .set_metadata_async(&stream, &serde_json::json!({ "$maxCount": 1 }))
            .await
            .map(|_| ())?;
    }
    Ok(())
}

/// Why and where an event was parked, in its parked link's metadata.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ParkedInfo {
    pub reason: String,
    pub position: u64,
}

/// Parks `event` with `reason`: a link to it in the relay's parked stream.
pub(crate) async fn park(
    engine: &Engine,
    relay: &str,
    target: &EventRecord,
    reason: &str,
) -> Result<(), RelayError> {
    let data = format!("{}@{}", target.revision.0, target.stream.as_str());
    let mut link = event(LINK_EVENT_TYPE, data.into_bytes())?;
    link.content_type = annals_core::ContentType::Binary;
    link.metadata = serde_json::to_vec(&ParkedInfo {
        reason: reason.to_owned(),
        position: target.position.0,
    })
    .map_err(|e| RelayError::Corrupt(e.to_string()))?
    .into();
    engine
        .append_async(&parked_stream(relay)?, ExpectedRevision::Any, vec![link])
        .await?;
    Ok(())
}

/// A parked event: its link's revision in the parked stream, why it was parked, and the event
/// (`None` if it is gone from its stream).
#[derive(Clone, Debug)]
pub struct ParkedEvent {
    pub revision: u64,
    pub info: ParkedInfo,
    pub event: Option<EventRecord>,
}

/// The relay's parked events, oldest first, at most `limit`.
pub(crate) fn read_parked(
    engine: &Engine,
    relay: &str,
    limit: usize,
) -> Result<Vec<ParkedEvent>, RelayError> {
    let links = read(
        engine,
        &parked_stream(relay)?,
        Revision(0),
        Direction::Forwards,
        limit.min(RELAY_PARKED_READ_MAX),
    )?;
    Ok(links
        .into_iter()
        .map(|link| {
            let info = serde_json::from_slice(&link.metadata).unwrap_or(ParkedInfo {
                reason: String::new(),
                position: 0,
            });
            let event = resolve(engine, &link);
            ParkedEvent {
                revision: link.revision.0,
                info,
                event,
            }
        })
        .collect())
}

fn resolve(engine: &Engine, link: &EventRecord) -> Option<EventRecord> {
    let text = std::str::from_utf8(&link.data).ok()?;
    let (revision, stream) = text.split_once('@')?;
    let stream = StreamName::new(stream).ok()?;
    let revision: u64 = revision.parse().ok()?;
    read(engine, &stream, Revision(revision), Direction::Forwards, 1)
        .ok()?
        .into_iter()
        .next()
        .filter(|e| e.revision.0 == revision)
}

/// Marks every parked event before `revision` as handled (the parked stream is truncated).
pub(crate) async fn truncate_parked(
    engine: &Engine,
    relay: &str,
    revision: u64,
) -> Result<(), RelayError> {
    engine
        .set_metadata_async(
            &parked_stream(relay)?,
            &serde_json::json!({ "$tb": revision }),
        )
        .await?;
    Ok(())
}

/// Parked events not yet handled.
pub(crate) fn parked_count(engine: &Engine, relay: &str) -> Result<u64, RelayError> {
    let stream = parked_stream(relay)?;
    let newest = engine.last_event(&stream)?;
    let oldest = read(engine, &stream, Revision(0), Direction::Forwards, 1)?
        .into_iter()
        .next();
    Ok(match (oldest, newest) {
        (Some(o), Some(n)) => n.revision.0 - o.revision.0 + 1,
        _ => 0,
    })
}

/// Removes a relay's checkpoint and parked events (the relay was removed).
pub(crate) async fn delete_state(engine: &Engine, relay: &str) -> Result<(), RelayError> {
    for stream in [checkpoint_stream(relay)?, parked_stream(relay)?] {
        match engine.delete_async(&stream, ExpectedRevision::Any).await {
            Ok(_) | Err(EngineError::Domain(DomainError::StreamNotFound { .. })) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
