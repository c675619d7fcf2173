//! Persistent-subscription groups over HTTP: list, describe, create, update, delete and replay
//! parked events; the admin UI's way in, and the only way to set what KurrentDB's protocol has
//! no field for (`conflateBehind`). Consuming a group stays gRPC's (`Read`). Every rule is
//! `annals_persistent::Subscriptions`'s; this module owns the JSON.
//!
//! | Route | What |
//! |---|---|
//! | `GET /subscriptions` | every group |
//! | `GET /subscriptions/{stream}` | the groups of one stream (`$all` for `$all`'s) |
//! | `GET /subscriptions/{stream}/{group}` | one group's settings and state |
//! | `PUT /subscriptions/{stream}/{group}` | create; absent settings take KurrentDB's defaults |
//! | `POST /subscriptions/{stream}/{group}` | update; absent settings keep their values |
//! | `DELETE /subscriptions/{stream}/{group}` | delete, with its checkpoint and parked events |
//! | `POST /subscriptions/{stream}/{group}/replay-parked` | replay parked events (`?stopAt=N`) |

use std::sync::Arc;
use std::time::Duration;

use annals_persistent::{
    FilterDefinition, GroupDefinition, GroupInfo, GroupKey, GroupSettings, PersistentError, Source,
    StartFrom, Strategy, Subscriptions,
};
use annals_server::ServerState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};

use crate::ApiError;
use crate::error::{ApiPath, ApiQuery};

/// `startFrom` in JSON: `"start"`, `"end"`, or a revision (stream groups) or commit position
/// (`$all` groups).
#[derive(Clone, Copy, Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum StartJson {
    Named(StartName),
    At(u64),
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum StartName {
    Start,
    End,
}

impl From<StartJson> for StartFrom {
    fn from(s: StartJson) -> Self {
        match s {
            StartJson::Named(StartName::Start) => StartFrom::Start,
            StartJson::Named(StartName::End) => StartFrom::End,
            StartJson::At(n) => StartFrom::At(n),
        }
    }
}

impl From<StartFrom> for StartJson {
    fn from(s: StartFrom) -> Self {
        match s {
            StartFrom::Start => StartJson::Named(StartName::Start),
            StartFrom::End => StartJson::Named(StartName::End),
            StartFrom::At(n) => StartJson::At(n),
        }
    }
}

/// A `$all` group's filter in JSON: on stream names or event types, a regex or prefixes.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterJson {
    /// `"streamName"` or `"eventType"`.
    pub on: FilterOn,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefixes: Vec<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum FilterOn {
    StreamName,
    EventType,
}

/// Settings as a request gives them: each field optional (create fills defaults, update keeps
/// the current value); unknown fields are refused, so a misspelt setting is not silently lost.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SettingsRequest {
    start_from: Option<StartJson>,
    resolve_links: Option<bool>,
    extra_statistics: Option<bool>,
    filter: Option<FilterJson>,
    strategy: Option<String>,
    message_timeout_ms: Option<u64>,
    max_retry_count: Option<u32>,
    live_buffer_size: Option<usize>,
    read_batch_size: Option<usize>,
    history_buffer_size: Option<usize>,
    checkpoint_after_ms: Option<u64>,
    min_checkpoint_count: Option<u64>,
    max_checkpoint_count: Option<u64>,
    max_subscriber_count: Option<usize>,
    /// Absent: unchanged (update) or off (create); `null`: off; a number: on.
    #[serde(default, deserialize_with = "present")]
    conflate_behind: Option<Option<u64>>,
}

/// A present field, even `null`, is `Some`; an absent one stays `None` (the default).
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

impl SettingsRequest {
    /// The definition `current` becomes with this request's fields.
    fn apply(self, mut d: GroupDefinition) -> Result<GroupDefinition, ApiError> {
        if let Some(v) = self.start_from {
            d.start = v.into();
        }
        if let Some(v) = self.resolve_links {
            d.resolve_links = v;
        }
        if let Some(v) = self.extra_statistics {
            d.extra_statistics = v;
        }
        if let Some(f) = self.filter {
            if f.regex.is_some() != f.prefixes.is_empty() {
                return Err(ApiError::BadRequest(
                    "a filter has either a regex or prefixes".to_owned(),
                ));
            }
            d.filter = Some(FilterDefinition {
                on_stream: matches!(f.on, FilterOn::StreamName),
                regex: f.regex,
                prefixes: f.prefixes,
            });
        }
        let s = &mut d.settings;
        if let Some(v) = self.strategy {
            s.strategy = Strategy::parse(&v).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        }
        if let Some(v) = self.message_timeout_ms {
            s.message_timeout = Duration::from_millis(v);
        }
        if let Some(v) = self.max_retry_count {
            s.max_retry_count = v;
        }
        if let Some(v) = self.live_buffer_size {
            s.live_buffer_size = v;
        }
        if let Some(v) = self.read_batch_size {
            s.read_batch_size = v;
        }
        if let Some(v) = self.history_buffer_size {
            s.history_buffer_size = v;
        }
        if let Some(v) = self.checkpoint_after_ms {
            s.checkpoint_after = Duration::from_millis(v);
        }
        if let Some(v) = self.min_checkpoint_count {
            s.min_checkpoint_count = v;
        }
        if let Some(v) = self.max_checkpoint_count {
            s.max_checkpoint_count = v;
        }
        if let Some(v) = self.max_subscriber_count {
            s.max_subscriber_count = v;
        }
        if let Some(v) = self.conflate_behind {
            s.conflate_behind = v;
        }
        Ok(d)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A definition's settings as JSON, every field present (the shape a request takes).
fn settings_json(d: &GroupDefinition) -> Value {
    let s = &d.settings;
    let filter = d.filter.as_ref().map(|f| FilterJson {
        on: if f.on_stream {
            FilterOn::StreamName
        } else {
            FilterOn::EventType
        },
        regex: f.regex.clone(),
        prefixes: f.prefixes.clone(),
    });
    json!({
        "startFrom": StartJson::from(d.start),
        "resolveLinks": d.resolve_links,
        "extraStatistics": d.extra_statistics,
        "filter": filter,
        "strategy": s.strategy.name(),
        "messageTimeoutMs": millis(s.message_timeout),
        "maxRetryCount": s.max_retry_count,
        "liveBufferSize": s.live_buffer_size,
        "readBatchSize": s.read_batch_size,
        "historyBufferSize": s.history_buffer_size,
        "checkpointAfterMs": millis(s.checkpoint_after),
        "minCheckpointCount": s.min_checkpoint_count,
        "maxCheckpointCount": s.max_checkpoint_count,
        "maxSubscriberCount": s.max_subscriber_count,
        "conflateBehind": s.conflate_behind,
    })
}

/// One group as JSON: names, settings and, while it runs, its state.
fn info_json(info: &GroupInfo) -> Value {
    let d = &info.definition;
    let mut out = serde_json::Map::new();
    out.insert("stream".into(), json!(d.key.source.to_string()));
    out.insert("group".into(), json!(d.key.group));
    out.insert("settings".into(), settings_json(d));
    let Some(state) = &info.state else {
        out.insert("status".into(), json!("stopped"));
        return Value::Object(out);
    };
    let c = &state.counts;
    let connections: Vec<Value> = state
        .connections
        .iter()
        .map(|conn| {
            json!({
                "from": conn.label.from,
                "name": conn.label.name,
                "inFlight": conn.in_flight,
                "availableSlots": conn.capacity.saturating_sub(conn.in_flight),
                "delivered": conn.delivered,
            })
        })
        .collect();
    let fields = [
        (
            "status",
            json!(if state.live { "live" } else { "catchingUp" }),
        ),
        ("connections", Value::Array(connections)),
        ("lastKnown", json!(state.last_known)),
        ("lastCheckpointed", json!(state.last_checkpoint)),
        ("inFlight", json!(state.in_flight)),
        ("waiting", json!(state.waiting)),
        ("parked", json!(state.parked)),
        (
            "counts",
            json!({
                "offered": c.offered,
                "delivered": c.delivered,
                "acked": c.acked,
                "skipped": c.skipped,
                "parked": c.parked,
                "conflated": c.conflated,
                "retried": c.retried,
            }),
        ),
    ];
    for (name, value) in fields {
        out.insert(name.into(), value);
    }
    Value::Object(out)
}

fn subscriptions(state: &ServerState) -> Result<Arc<Subscriptions>, ApiError> {
    crate::error::held(&state.persistent, ApiError::PersistentDisabled)
}

fn key(stream: &str, group: &str) -> Result<GroupKey, ApiError> {
    Ok(GroupKey::new(Source::parse(stream)?, group)?)
}

/// `GET /subscriptions`
pub async fn list(State(state): State<ServerState>) -> Result<Json<Value>, ApiError> {
    let groups = subscriptions(&state)?.list(None).await;
    Ok(Json(
        json!({ "groups": groups.iter().map(info_json).collect::<Vec<_>>() }),
    ))
}

/// `GET /subscriptions/{stream}`
pub async fn list_stream(
    State(state): State<ServerState>,
    ApiPath(stream): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let source = Source::parse(&stream)?;
    let groups = subscriptions(&state)?.list(Some(&source)).await;
    Ok(Json(
        json!({ "groups": groups.iter().map(info_json).collect::<Vec<_>>() }),
    ))
}

/// `GET /subscriptions/{stream}/{group}`
pub async fn info(
    State(state): State<ServerState>,
    ApiPath((stream, group)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let info = subscriptions(&state)?.info(&key(&stream, &group)?).await?;
    Ok(Json(info_json(&info)))
}

/// The body as settings; an empty body is no settings.
fn parse_settings(body: &[u8]) -> Result<SettingsRequest, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(SettingsRequest::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("settings: {e}")))
}

/// `PUT /subscriptions/{stream}/{group}`
pub async fn create(
    State(state): State<ServerState>,
    ApiPath((stream, group)): ApiPath<(String, String)>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let subs = subscriptions(&state)?;
    let key = key(&stream, &group)?;
    let request = parse_settings(&body)?;
    let definition = request.apply(GroupDefinition {
        key: key.clone(),
        start: StartFrom::End,
        resolve_links: false,
        extra_statistics: false,
        filter: None,
        settings: GroupSettings::default(),
    })?;
    subs.create(definition).await?;
    let info = subs.info(&key).await?;
    Ok((StatusCode::CREATED, Json(info_json(&info))))
}

/// `POST /subscriptions/{stream}/{group}`
pub async fn update(
    State(state): State<ServerState>,
    ApiPath((stream, group)): ApiPath<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let subs = subscriptions(&state)?;
    let key = key(&stream, &group)?;
    let request = parse_settings(&body)?;
    let current = subs.info(&key).await?.definition;
    subs.update(request.apply(current)?).await?;
    let info = subs.info(&key).await?;
    Ok(Json(info_json(&info)))
}

/// `DELETE /subscriptions/{stream}/{group}`
pub async fn delete(
    State(state): State<ServerState>,
    ApiPath((stream, group)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let key = key(&stream, &group)?;
    subscriptions(&state)?.delete(&key).await?;
    Ok(Json(
        json!({ "stream": key.source.to_string(), "group": key.group, "deleted": true }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplayQuery {
    /// Replay at most this many parked events; all when absent.
    stop_at: Option<u64>,
}

/// `POST /subscriptions/{stream}/{group}/replay-parked`
pub async fn replay_parked(
    State(state): State<ServerState>,
    ApiPath((stream, group)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<ReplayQuery>,
) -> Result<Json<Value>, ApiError> {
    let key = key(&stream, &group)?;
    let replayed = subscriptions(&state)?
        .replay_parked(&key, query.stop_at)
        .await?;
    Ok(Json(json!({ "replayed": replayed })))
}

impl From<PersistentError> for ApiError {
    fn from(e: PersistentError) -> Self {
        ApiError::Persistent(e)
    }
}
