//! Comparing engine answers with model answers. Each function returns `Err` with a description of
//! the first difference, so the caller can add its own context (the seed, the operation) before
//! failing.
//!
//! Events compare on every field but `created` (wall-clock time) and, for events the engine writes
//! itself, the id (the model cannot know it).

use std::fmt::Debug;

use annals_core::{EventRecord, Position};
use annals_engine::{AllPage, EngineError};

use crate::model::{ModelError, ModelEvent, ModelPage};

/// Whether one engine event is the model's event.
pub fn same_event(engine: &EventRecord, model: &ModelEvent) -> bool {
    model.id.is_none_or(|id| id == engine.id)
        && engine.stream.as_str() == model.stream
        && engine.revision.0 == model.revision
        && engine.position.0 == model.position
        && engine.event_type.as_str() == model.event_type
        && engine.content_type == model.content_type
        && engine.data == model.data
        && engine.metadata == model.metadata
}

fn brief(e: &EventRecord) -> String {
    format!(
        "{}@r{} p{} {} id {}",
        e.stream, e.revision.0, e.position.0, e.event_type, e.id
    )
}

fn brief_model(e: &ModelEvent) -> String {
    format!(
        "{}@r{} p{} {} id {:?}",
        e.stream, e.revision, e.position, e.event_type, e.id
    )
}

/// The same events in the same order.
pub fn compare_events(engine: &[EventRecord], model: &[ModelEvent]) -> Result<(), String> {
    for (i, pair) in engine.iter().zip(model).enumerate() {
        let (e, m) = pair;
        if !same_event(e, m) {
            return Err(format!(
                "event {i} differs:\n  engine {e:?}\n  model  {m:?}"
            ));
        }
    }
    if engine.len() != model.len() {
        return Err(format!(
            "engine returned {} events, model {}:\n  engine {:?}\n  model  {:?}",
            engine.len(),
            model.len(),
            engine.iter().map(brief).collect::<Vec<_>>(),
            model.iter().map(brief_model).collect::<Vec<_>>()
        ));
    }
    Ok(())
}

/// The same events, next position and end flag.
pub fn compare_page(engine: &AllPage, model: &ModelPage) -> Result<(), String> {
    compare_events(&engine.events, &model.events)?;
    if engine.next != model.next || engine.end_reached != model.end_reached {
        return Err(format!(
            "page ends differ: engine next {:?} end_reached {}, model next {:?} end_reached {}",
            engine.next, engine.end_reached, model.next, model.end_reached
        ));
    }
    Ok(())
}

/// The same error: equal input or domain errors, field for field.
pub fn compare_error(engine: &EngineError, model: &ModelError) -> Result<(), String> {
    let same = match (engine, model) {
        (EngineError::Input(e), ModelError::Input(m)) => e == m,
        (EngineError::Domain(e), ModelError::Domain(m)) => e == m,
        _ => false,
    };
    if same {
        Ok(())
    } else {
        Err(format!("engine error {engine:?}, model error {model:?}"))
    }
}

/// The same success value, or the same error.
pub fn compare_outcome<T: PartialEq + Debug>(
    engine: &Result<T, EngineError>,
    model: &Result<T, ModelError>,
) -> Result<(), String> {
    match (engine, model) {
        (Ok(e), Ok(m)) if e == m => Ok(()),
        (Err(e), Err(m)) => compare_error(e, m),
        _ => Err(format!("engine {engine:?}, model {model:?}")),
    }
}

/// A stream read: the same events or the same error.
pub fn compare_read(
    engine: &Result<Vec<EventRecord>, EngineError>,
    model: &Result<Vec<ModelEvent>, ModelError>,
) -> Result<(), String> {
    match (engine, model) {
        (Ok(e), Ok(m)) => compare_events(e, m),
        (Err(e), Err(m)) => compare_error(e, m),
        (Ok(e), Err(m)) => Err(format!(
            "engine read {} events {:?}, model error {m:?}",
            e.len(),
            e.iter().map(brief).collect::<Vec<_>>()
        )),
        (Err(e), Ok(m)) => Err(format!(
            "engine error {e:?}, model read {} events {:?}",
            m.len(),
            m.iter().map(brief_model).collect::<Vec<_>>()
        )),
    }
}

/// Checks that `events` (a forwards read of the whole of `$all`) hold positions 1, 2, ... with no
/// gap or repeat.
pub fn check_dense(events: &[EventRecord]) -> Result<(), String> {
    for (i, e) in events.iter().enumerate() {
        let want = Position(i as u64 + 1);
        if e.position != want {
            return Err(format!(
                "event {i} has position {:?}, want {want:?}",
                e.position
            ));
        }
    }
    Ok(())
}
