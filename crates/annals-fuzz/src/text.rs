//! The text targets: projection definitions (TOML), stream names and source declarations, and
//! filters with their regexes.

use annals_core::limits::STREAM_NAME_BYTES_MAX;
use annals_core::{
    ContentType, EventRecord, EventType, Filter, FilterError, FilterTarget, Position, Revision,
    Source, SourceSpec, StreamName, Timestamp, category_of,
};
use annals_projections::{HandlerContext, Mode, Resolver, parse_definitions};
use bytes::Bytes;

use crate::Violation;

/// Event types the projection target's events carry; the seeds' handlers name them.
const PROJECTION_EVENT_TYPES: &[&str] = &["OrderPlaced", "e"];

/// The text (up to a NUL) is a definition file; what follows is the JSON data of the events its
/// handlers then run on. Parsing may refuse; a definition it accepts must handle any event
/// without a panic (a handler error is an answer).
pub fn projection_toml(data: &[u8]) -> Result<(), Violation> {
    const TARGET: &str = "projection_toml";
    let (text, event_data) = split_nul(data);
    let Ok(text) = std::str::from_utf8(text) else {
        return Ok(());
    };
    let Ok(definitions) = parse_definitions(text) else {
        return Ok(());
    };
    for definition in definitions {
        let spec = &definition.spec;
        let mut handler = (spec.handler)();
        let mut resolver = Resolver::new(spec.objects.clone().into(), 1);
        for (i, event_type) in PROJECTION_EVENT_TYPES.iter().enumerate() {
            let event = event(event_type, i as u64, Bytes::copy_from_slice(event_data))
                .map_err(|e| Violation::new(TARGET, e))?;
            let (mut statements, mut effects) = (Vec::new(), Vec::new());
            let mut ctx =
                HandlerContext::new(Mode::Live, &mut resolver, &mut statements, &mut effects);
            let _ = handler.handle(&event, &mut ctx);
        }
        if let Some(state) = handler.snapshot() {
            let _ = handler.restore(&state);
        }
    }
    Ok(())
}

fn event(event_type: &str, i: u64, data: Bytes) -> Result<EventRecord, String> {
    Ok(EventRecord {
        id: uuid::Uuid::from_u128(u128::from(i) + 1),
        stream: StreamName::new("order-1").map_err(|e| e.to_string())?,
        revision: Revision(i),
        position: Position(i + 1),
        event_type: EventType::new(event_type).map_err(|e| e.to_string())?,
        content_type: ContentType::Json,
        created: Timestamp(1_700_000_000_000_000_000),
        metadata: data.clone(),
        data,
    })
}

/// A name is valid or refused, the same way by every constructor; a valid one reads back as
/// written. Text starting with `{` is also read as a source declaration, whose filter must
/// compile whenever the declaration is accepted.
pub fn stream_name(data: &[u8]) -> Result<(), Violation> {
    const TARGET: &str = "stream_name";
    let Ok(text) = std::str::from_utf8(data) else {
        return Ok(());
    };
    let _ = category_of(text);
    let by_new = StreamName::new(text);
    let by_arc = StreamName::from_arc(text.into());
    if by_new.is_ok() != by_arc.is_ok() {
        return Err(Violation::new(
            TARGET,
            format!("constructors disagree on {text:?}"),
        ));
    }
    if let Ok(name) = by_new {
        if name.as_str() != text || text.len() > STREAM_NAME_BYTES_MAX {
            return Err(Violation::new(
                TARGET,
                format!("{text:?} accepted as {name:?}"),
            ));
        }
        let _ = (name.category(), name.is_system(), name.metadata_target());
        if let Ok(meta) = name.metadata_stream()
            && meta.metadata_target().as_ref() != Some(&name)
        {
            return Err(Violation::new(
                TARGET,
                format!("{meta:?} is not the metadata stream of {name:?}"),
            ));
        }
    }
    let _ = EventType::new(text);
    if text.starts_with('{')
        && let Ok(spec) = serde_json::from_str::<SourceSpec>(text)
        && let Ok(source) = Source::from_spec(&spec)
        && let Err(e) = source.filter()
    {
        return Err(Violation::new(
            TARGET,
            format!("source {source:?} accepted, its filter refused: {e}"),
        ));
    }
    Ok(())
}

/// `data[0]` picks the target (bit 0) and the kind (bit 1: prefixes, one per line); the pattern
/// runs up to a NUL, the subject (a name, at most a name's length) after it. Compiling may refuse;
/// a match ends, or gives up with [`FilterError::MatchLimit`] (libFuzzer's `-timeout` catches a
/// match that does neither).
pub fn filter_regex(data: &[u8]) -> Result<(), Violation> {
    const TARGET: &str = "filter_regex";
    let Some((&mode, rest)) = data.split_first() else {
        return Ok(());
    };
    let (pattern, subject) = split_nul(rest);
    let Ok(pattern) = std::str::from_utf8(pattern) else {
        return Ok(());
    };
    let subject = String::from_utf8_lossy(subject.get(..STREAM_NAME_BYTES_MAX).unwrap_or(subject));
    let target = if mode & 1 == 0 {
        FilterTarget::StreamName
    } else {
        FilterTarget::EventType
    };
    let filter = if mode & 2 == 0 {
        Filter::regex(target, pattern)
    } else {
        Filter::prefixes(target, pattern.lines().map(str::to_owned).collect())
    };
    let Ok(filter) = filter else {
        return Ok(());
    };
    match filter.try_matches_str(&subject) {
        Ok(matched) if matched != filter.matches_str(&subject) => Err(Violation::new(
            TARGET,
            format!("{pattern:?} on {subject:?}: two answers"),
        )),
        Err(FilterError::MatchLimit { .. }) if filter.matches_str(&subject) => Err(Violation::new(
            TARGET,
            format!("{pattern:?} gave up on {subject:?} yet matched"),
        )),
        _ => Ok(()),
    }
}

/// The bytes before the first NUL and those after it (all and nothing without one).
fn split_nul(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == 0) {
        Some(at) => (
            data.get(..at).unwrap_or_default(),
            data.get(at + 1..).unwrap_or_default(),
        ),
        None => (data, &[]),
    }
}
