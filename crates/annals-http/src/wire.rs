//! The JSON shapes of the API (what a client sends and gets back) and the parsing of query
//! parameters and headers, kept apart from the handlers so every route speaks the same dialect.
//!
//! Shapes (field names are camelCase):
//! - an event as read: [`EventJson`], the shape `annals-core` defines for every surface.
//! - an expected revision: `"any"`, `"no_stream"`, `"stream_exists"` or a revision number.

pub use annals_core::EventJson;
use annals_core::{Direction, ExpectedRevision, NewEvent};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use crate::error::ApiError;

/// Events returned by a read when the client does not say how many.
pub const READ_COUNT_DEFAULT: u64 = 100;

/// The body of `POST /streams/{stream}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppendBody {
    #[serde(default)]
    pub expected_revision: Option<Value>,
    pub events: Vec<NewEventJson>,
}

/// An event as a client proposes it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewEventJson {
    /// A UUID; a fresh one is generated when absent. Retrying an append with the same ids
    /// returns the first append's result without writing again.
    #[serde(default)]
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub event_type: String,
    /// `true` (the default): `data` is any JSON. `false`: `data` is a base64 string of bytes.
    #[serde(default)]
    pub is_json: Option<bool>,
    pub data: Value,
    #[serde(default)]
    pub metadata: Option<Value>,
}

impl NewEventJson {
    /// The engine's event; `index` names the event in error messages.
    pub fn into_event(self, index: usize) -> Result<NewEvent, ApiError> {
        let bad = |what: String| ApiError::BadRequest(format!("event {index}: {what}"));
        let id = match self.id.as_deref() {
            None => Uuid::new_v4(),
            Some(s) => {
                Uuid::parse_str(s).map_err(|e| bad(format!("id {s:?} is not a UUID: {e}")))?
            }
        };
        let event_type =
            annals_core::EventType::new(&self.event_type).map_err(|e| bad(e.to_string()))?;
        let (content_type, data) = if self.is_json.unwrap_or(true) {
            (
                annals_core::ContentType::Json,
                serde_json::to_vec(&self.data).map_err(|e| bad(format!("data: {e}")))?,
            )
        } else {
            let Value::String(s) = &self.data else {
                return Err(bad(
                    "data must be a base64 string when isJson is false".to_owned()
                ));
            };
            let bytes = BASE64
                .decode(s)
                .map_err(|e| bad(format!("data is not valid base64: {e}")))?;
            (annals_core::ContentType::Binary, bytes)
        };
        let metadata = match self.metadata {
            None | Some(Value::Null) => Vec::new(),
            Some(m) => serde_json::to_vec(&m).map_err(|e| bad(format!("metadata: {e}")))?,
        };
        Ok(NewEvent {
            id,
            event_type,
            content_type,
            data: data.into(),
            metadata: metadata.into(),
        })
    }
}

/// Parses an expected revision given as JSON (the body's `expectedRevision`).
pub fn parse_expected_json(v: &Value) -> Result<ExpectedRevision, ApiError> {
    match v {
        Value::String(s) => parse_expected_str(s),
        Value::Number(n) => n.as_u64().map(ExpectedRevision::Exact).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "expectedRevision {n} is not a revision (a non-negative integer)"
            ))
        }),
        other => Err(ApiError::BadRequest(format!(
            "expectedRevision must be \"any\", \"no_stream\", \"stream_exists\" or a revision number, not {other}"
        ))),
    }
}

/// Parses an expected revision given as text (the `Expected-Revision` header).
pub fn parse_expected_str(s: &str) -> Result<ExpectedRevision, ApiError> {
    match s.trim() {
        "any" => Ok(ExpectedRevision::Any),
        "no_stream" => Ok(ExpectedRevision::NoStream),
        "stream_exists" => Ok(ExpectedRevision::StreamExists),
        other => other.parse::<u64>().map(ExpectedRevision::Exact).map_err(|_| {
            ApiError::BadRequest(format!(
                "expected revision {other:?} must be \"any\", \"no_stream\", \"stream_exists\" or a revision number"
            ))
        }),
    }
}

/// An expected revision as JSON, the way clients send it.
pub fn expected_json(e: ExpectedRevision) -> Value {
    match e {
        ExpectedRevision::Exact(r) => Value::from(r),
        other => Value::String(other.to_string()),
    }
}

/// A stream's actual revision as JSON: its last revision, or `"no_stream"`.
pub fn revision_json(actual: Option<u64>) -> Value {
    match actual {
        Some(r) => Value::from(r),
        None => Value::String("no_stream".to_owned()),
    }
}

/// Query parameters of the read routes; all optional, parsed by hand for clear errors.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadParams {
    pub from: Option<String>,
    pub direction: Option<String>,
    pub count: Option<String>,
    pub stream_prefix: Option<String>,
    pub type_prefix: Option<String>,
    pub stream_regex: Option<String>,
    pub type_regex: Option<String>,
    pub resolve_links: Option<String>,
    /// `GET /all/live` only: `false` sends every event as a plain `message` (no `event:` line),
    /// for a browser `EventSource`, which can only listen for names it knows.
    pub event_names: Option<String>,
}

/// Where a read starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFrom {
    Start,
    End,
    At(u64),
}

impl ReadParams {
    pub fn direction(&self) -> Result<Direction, ApiError> {
        match self.direction.as_deref() {
            None | Some("forwards") => Ok(Direction::Forwards),
            Some("backwards") => Ok(Direction::Backwards),
            Some(other) => Err(ApiError::BadRequest(format!(
                "direction {other:?} must be \"forwards\" or \"backwards\""
            ))),
        }
    }

    /// Whether to resolve links (`resolveLinks=true`); false when absent.
    pub fn resolve_links(&self) -> Result<bool, ApiError> {
        match self.resolve_links.as_deref() {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(ApiError::BadRequest(format!(
                "resolveLinks {other:?} must be \"true\" or \"false\""
            ))),
        }
    }

    /// The start; when absent, the start for forwards reads and the end for backwards ones.
    pub fn from(&self, direction: Direction) -> Result<ReadFrom, ApiError> {
        match self.from.as_deref() {
            None => Ok(match direction {
                Direction::Forwards => ReadFrom::Start,
                Direction::Backwards => ReadFrom::End,
            }),
            Some(s) => parse_from(s),
        }
    }

    /// The count asked for, at least 1, clamped to `max` and to what one engine read returns.
    pub fn count(&self, max: u64) -> Result<u64, ApiError> {
        let engine_max =
            u64::try_from(annals_core::limits::STORE_READ_EVENTS_MAX).unwrap_or(u64::MAX);
        let max = max.min(engine_max).max(1);
        let Some(s) = self.count.as_deref() else {
            return Ok(READ_COUNT_DEFAULT.min(max));
        };
        match s.parse::<u64>() {
            Ok(0) | Err(_) => Err(ApiError::BadRequest(format!(
                "count {s:?} must be a positive integer"
            ))),
            Ok(n) => Ok(n.min(max)),
        }
    }

    /// The `$all` filter, if one of the four filter parameters is given (at most one may be).
    pub fn filter(&self) -> Result<Option<annals_core::Filter>, ApiError> {
        use annals_core::{Filter, FilterTarget};
        let given = [
            &self.stream_prefix,
            &self.type_prefix,
            &self.stream_regex,
            &self.type_regex,
        ]
        .iter()
        .filter(|p| p.is_some())
        .count();
        if given > 1 {
            return Err(ApiError::BadRequest(
                "give at most one of streamPrefix, typePrefix, streamRegex, typeRegex".to_owned(),
            ));
        }
        let prefixes = |s: &str| -> Vec<String> {
            s.split(',')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let filter = if let Some(p) = &self.stream_prefix {
            Filter::prefixes(FilterTarget::StreamName, prefixes(p))?
        } else if let Some(p) = &self.type_prefix {
            Filter::prefixes(FilterTarget::EventType, prefixes(p))?
        } else if let Some(r) = &self.stream_regex {
            Filter::regex(FilterTarget::StreamName, r)?
        } else if let Some(r) = &self.type_regex {
            Filter::regex(FilterTarget::EventType, r)?
        } else {
            return Ok(None);
        };
        Ok(Some(filter))
    }
}

/// Parses `start`, `end` or a number.
pub fn parse_from(s: &str) -> Result<ReadFrom, ApiError> {
    match s {
        "start" => Ok(ReadFrom::Start),
        "end" => Ok(ReadFrom::End),
        other => other.parse::<u64>().map(ReadFrom::At).map_err(|_| {
            ApiError::BadRequest(format!(
                "from {other:?} must be \"start\", \"end\" or a non-negative integer"
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_revision_forms() {
        assert_eq!(parse_expected_str("any").ok(), Some(ExpectedRevision::Any));
        assert_eq!(
            parse_expected_json(&Value::from(7)).ok(),
            Some(ExpectedRevision::Exact(7))
        );
        assert!(parse_expected_json(&Value::from(-1)).is_err());
        assert!(parse_expected_str("seven").is_err());
        assert_eq!(
            expected_json(ExpectedRevision::NoStream),
            Value::from("no_stream")
        );
    }
}
