//! A group's state in the log: the definitions of every group (the config stream), each group's
//! checkpoint and its parked events. Everything goes through the engine's ordinary appends, so
//! it is durable before it is acknowledged, survives a crash like any event, and is readable as
//! streams (the parked stream above all, as KurrentDB's clients expect).

use annals_core::Direction;
use annals_core::{
    DomainError, EventRecord, ExpectedRevision, NewEvent, Revision, StreamMetadata, StreamName,
};
use annals_engine::{Engine, EngineError};

use crate::definition::{GroupDefinition, decode_config, encode_config};
use crate::error::PersistentError;
use crate::group::Parked;
use crate::names::{
    CHECKPOINT_EVENT_TYPE, CONFIG_EVENT_TYPE, CONFIG_STREAM, GroupKey, LINK_EVENT_TYPE, Source,
};
use crate::runtime::Payload;

/// Most parked events one replay reads at a time.
pub(crate) const PARKED_READ_EVENTS_MAX: usize = 1_024;

fn config_stream() -> Result<StreamName, PersistentError> {
    StreamName::new(CONFIG_STREAM).map_err(|e| PersistentError::Invalid(e.to_string()))
}

fn event(event_type: &str, data: Vec<u8>) -> Result<NewEvent, PersistentError> {
    NewEvent::json(event_type, data).map_err(|e| PersistentError::Invalid(e.to_string()))
}

/// Every group's definition, as last saved.
pub(crate) fn load_definitions(engine: &Engine) -> Result<Vec<GroupDefinition>, PersistentError> {
    match engine.last_event(&config_stream()?)? {
        Some(e) => decode_config(&e.data),
        None => Ok(Vec::new()),
    }
}

/// Saves every group's definition, as one event.
pub(crate) async fn save_definitions(
    engine: &Engine,
    groups: &[GroupDefinition],
) -> Result<(), PersistentError> {
    let e = event(CONFIG_EVENT_TYPE, encode_config(groups))?;
    engine
        .append_async(&config_stream()?, ExpectedRevision::Any, vec![e])
        .await?;
    Ok(())
}

/// A checkpoint as text: a revision for a stream group, `C:{p}/P:{p}` for an `$all` group.
fn checkpoint_text(source: &Source, seq: u64) -> String {
    match source {
        Source::Stream(_) => seq.to_string(),
        Source::All => format!("C:{seq}/P:{seq}"),
    }
}

/// Reads a checkpoint's text back.
fn parse_checkpoint(text: &str) -> Option<u64> {
    if let Ok(n) = text.parse::<u64>() {
        return Some(n);
    }
    let commit = text.strip_prefix("C:")?.split('/').next()?;
    commit.parse().ok()
}

/// The group's last checkpoint.
pub(crate) fn load_checkpoint(
    engine: &Engine,
    key: &GroupKey,
) -> Result<Option<u64>, PersistentError> {
    let Some(e) = engine.last_event(&key.checkpoint_stream()?)? else {
        return Ok(None);
    };
    let value: serde_json::Value = serde_json::from_slice(&e.data)
        .map_err(|err| PersistentError::Corrupt(format!("checkpoint of {key}: {err}")))?;
    let seq = match &value {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => parse_checkpoint(s),
        _ => None,
    };
    seq.map(Some)
        .ok_or_else(|| PersistentError::Corrupt(format!("checkpoint of {key}: {value}")))
}

/// Writes the group's checkpoint. The stream keeps only its last event.
pub(crate) async fn save_checkpoint(
    engine: &Engine,
    key: &GroupKey,
    seq: u64,
) -> Result<(), PersistentError> {
    let stream = key.checkpoint_stream()?;
    let text = serde_json::Value::String(checkpoint_text(&key.source, seq));
    let data = match key.source {
        Source::Stream(_) => serde_json::Value::from(seq),
        Source::All => text,
    };
    let e = event(CHECKPOINT_EVENT_TYPE, data.to_string().into_bytes())?;
    let written = engine
        .append_async(&stream, ExpectedRevision::Any, vec![e])
        .await?;
    if written.next_revision == Revision(0) {
        // The first checkpoint: from now on the stream keeps only its newest event.
        engine
            .set_metadata_async(&stream, &serde_json::json!({ "$maxCount": 1 }))
            .await
            .map(|_| ())?;
    }
    Ok(())
}

/// Appends parked events to the group's parked stream as links to the originals.
/// The place in the group's source a parked link's event had (written since links carry it).
pub(crate) fn parked_seq(link: &EventRecord) -> Option<u64> {
    let meta: serde_json::Value = serde_json::from_slice(&link.metadata).ok()?;
    meta.get("seq")?.as_u64()
}

pub(crate) async fn park(
    engine: &Engine,
    key: &GroupKey,
    parked: &[Parked<Payload>],
) -> Result<(), PersistentError> {
    if parked.is_empty() {
        return Ok(());
    }
    let stream = key.parked_stream()?;
    let mut events = Vec::with_capacity(parked.len());
    for p in parked {
        let target = p.message.payload.event();
        let data = format!("{}@{}", target.revision.0, target.stream);
        let reason = match &p.reason {
            crate::group::ParkReason::Nacked(r) => r.clone(),
            crate::group::ParkReason::MaxRetries => "max retry count reached".to_owned(),
        };
        let metadata = serde_json::json!({
            "reason": reason,
            "retryCount": p.retry_count,
            "position": target.position.0,
            "seq": p.message.seq,
        });
        let mut e = event(LINK_EVENT_TYPE, data.into_bytes())?;
        e.content_type = annals_core::ContentType::Binary;
        e.metadata = metadata.to_string().into_bytes().into();
        events.push(e);
    }
    engine
        .append_async(&stream, ExpectedRevision::Any, events)
        .await?;
    Ok(())
}

/// Up to `limit` of the group's parked events, oldest first (replayed ones are truncated away).
pub(crate) fn read_parked(
    engine: &Engine,
    key: &GroupKey,
    limit: usize,
) -> Result<Vec<EventRecord>, PersistentError> {
    match engine.read_stream(
        &key.parked_stream()?,
        Revision(0),
        Direction::Forwards,
        limit,
    ) {
        Ok(events) => Ok(events),
        Err(EngineError::Domain(
            DomainError::StreamNotFound { .. } | DomainError::StreamDeleted { .. },
        )) => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// Marks parked events before `revision` as replayed: they are no longer read from the parked
/// stream.
pub(crate) async fn truncate_parked(
    engine: &Engine,
    key: &GroupKey,
    revision: u64,
) -> Result<(), PersistentError> {
    engine
        .set_metadata_async(
            &key.parked_stream()?,
            &serde_json::json!({ "$tb": revision }),
        )
        .await?;
    Ok(())
}

/// How many parked events the group has (not yet replayed).
pub(crate) fn parked_count(engine: &Engine, key: &GroupKey) -> Result<u64, PersistentError> {
    let stream = key.parked_stream()?;
    let Some(last) = engine.last_event(&stream)? else {
        return Ok(0);
    };
    let meta_stream = stream
        .metadata_stream()
        .map_err(|e| PersistentError::Invalid(e.to_string()))?;
    let truncate_before = match engine.last_event(&meta_stream)? {
        Some(m) => StreamMetadata::parse(&m.data)
            .ok()
            .and_then(|m| m.truncate_before)
            .unwrap_or(0),
        None => 0,
    };
    Ok((last.revision.0 + 1).saturating_sub(truncate_before))
}

/// The event a link (`{revision}@{stream}`) points at, if it still exists.
pub(crate) fn resolve_link(engine: &Engine, link: &EventRecord) -> Option<EventRecord> {
    let text = std::str::from_utf8(&link.data).ok()?;
    let (revision, stream) = text.split_once('@')?;
    let revision: u64 = revision.parse().ok()?;
    let stream = StreamName::new(stream).ok()?;
    engine
        .read_stream(&stream, Revision(revision), Direction::Forwards, 1)
        .ok()?
        .into_iter()
        .find(|e| e.revision.0 == revision)
}

/// Deletes the group's checkpoint and parked streams (a group that is deleted leaves nothing).
/// A stream that never had events is refused a soft delete (actual revision none): nothing to do.
pub(crate) async fn delete_state(engine: &Engine, key: &GroupKey) -> Result<(), PersistentError> {
    for stream in [key.checkpoint_stream()?, key.parked_stream()?] {
        match engine.delete_async(&stream, ExpectedRevision::Any).await {
            Ok(_)
            | Err(EngineError::Domain(
                DomainError::StreamNotFound { .. }
                | DomainError::StreamDeleted { .. }
                | DomainError::WrongExpectedRevision { actual: None, .. },
            )) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The source's last seq now: the head for `$all`, the last revision for a stream (`None` if
/// the stream has no events).
pub(crate) fn source_end(engine: &Engine, source: &Source) -> Result<Option<u64>, PersistentError> {
    match source {
        Source::All => Ok(Some(engine.head().0).filter(|h| *h > 0)),
        Source::Stream(s) => Ok(engine.last_event(s)?.map(|e| e.revision.0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_read_back_in_both_forms() {
        assert_eq!(parse_checkpoint("17"), Some(17));
        assert_eq!(parse_checkpoint("C:42/P:42"), Some(42));
        assert_eq!(parse_checkpoint("C:x/P:1"), None);
        assert_eq!(checkpoint_text(&Source::All, 5), "C:5/P:5");
    }
}
