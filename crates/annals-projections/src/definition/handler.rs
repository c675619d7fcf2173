//! The runtime side of a declarative projection: [`DeclarativeHandler`] looks each event's type
//! up, binds the statements' parameters from the event, and declares the effects.
//!
//! What it runs was fixed and checked by the compile step; this file only reads events, so it
//! keeps no state and needs no database.

use std::collections::HashMap;
use std::sync::Arc;

use annals_core::{EventJson, EventRecord, SubsecondDigits};

use super::json_path::{Documents, lookup, parse_document};
use super::param_source::ParamSource;
use crate::handler::{Effect, Handler, HandlerContext, HandlerError, Mode};
use crate::target::Value;

/// One statement of a handler entry.
#[derive(Clone, Debug)]
pub(super) struct CompiledStatement {
    pub(super) sql: String,
    pub(super) params: Vec<ParamSource>,
}

/// A declared effect, filled in per event.
#[derive(Clone, Debug)]
pub(super) enum EffectTemplate {
    Http { method: String, url: String },
    Message { subject: String },
}

/// What one event type does.
#[derive(Clone, Debug, Default)]
pub(super) struct Entry {
    pub(super) statements: Vec<CompiledStatement>,
    pub(super) effects: Vec<EffectTemplate>,
}

/// Runs a declarative projection: looks the event's type up, binds each statement's parameters
/// from the event, executes the statements, declares the effects. Events of types it has no
/// entry for are passed over. Keeps no state.
#[derive(Clone, Debug)]
pub struct DeclarativeHandler {
    pub(super) entries: Arc<HashMap<String, Entry>>,
}

impl Handler for DeclarativeHandler {
    fn handle(
        &mut self,
        event: &EventRecord,
        ctx: &mut HandlerContext<'_>,
    ) -> Result<(), HandlerError> {
        let Some(entry) = self.entries.get(event.event_type.as_str()) else {
            return Ok(());
        };
        let mut documents = Documents::default();
        for statement in &entry.statements {
            let params = statement
                .params
                .iter()
                .map(|source| param_value(source, event, &mut documents))
                .collect::<Result<Vec<_>, _>>()?;
            ctx.execute(&statement.sql, params);
        }
        if !entry.effects.is_empty() && ctx.mode() == Mode::Live {
            // Serializing strings, numbers and JSON values cannot fail.
            let body = serde_json::to_vec(&EventJson::from_record(event)).unwrap_or_default();
            for effect in &entry.effects {
                ctx.effect(match effect {
                    EffectTemplate::Http { method, url } => Effect::Http {
                        method: method.clone(),
                        url: url.clone(),
                        content_type: "application/json".to_owned(),
                        body: body.clone(),
                    },
                    EffectTemplate::Message { subject } => Effect::Message {
                        subject: subject.clone(),
                        payload: body.clone(),
                    },
                });
            }
        }
        Ok(())
    }
}

/// The value `source` names in `event`; `documents` parses data and metadata at most once.
fn param_value<'e>(
    source: &ParamSource,
    event: &'e EventRecord,
    documents: &mut Documents<'e>,
) -> Result<Value, HandlerError> {
    Ok(match source {
        ParamSource::Stream => Value::Text(event.stream.as_str().to_owned()),
        ParamSource::Category => Value::Text(event.stream.category().to_owned()),
        ParamSource::Revision => {
            Value::Integer(i64::try_from(event.revision.0).unwrap_or(i64::MAX))
        }
        ParamSource::Position => Value::Integer(
            i64::try_from(event.position.0)
                .map_err(|_| HandlerError(format!("position {} out of range", event.position)))?,
        ),
        ParamSource::EventType => Value::Text(event.event_type.as_str().to_owned()),
        ParamSource::EventId => Value::Text(event.id.to_string()),
        ParamSource::CreatedMs => Value::Integer(event.created.0.div_euclid(1_000_000)),
        ParamSource::CreatedRfc3339 => Value::Text(event.created.rfc3339(SubsecondDigits::Micros)),
        ParamSource::Data(path) => {
            if documents.data.is_none() {
                documents.data = Some(parse_document(&event.data, "data")?);
            }
            lookup(documents.data.as_ref(), path)
        }
        ParamSource::Metadata(path) => {
            if documents.metadata.is_none() {
                documents.metadata = Some(parse_document(&event.metadata, "metadata")?);
            }
            lookup(documents.metadata.as_ref(), path)
        }
    })
}
