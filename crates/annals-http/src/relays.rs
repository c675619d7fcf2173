//! Relays over HTTP: list, apply a definition file, describe, remove, and command one (pause,
//! resume, reset to a position, re-send parked events); the CLI's and the admin UI's way in.
//! Every rule is `annals_relay::Relays`'s; this module owns the JSON.
//!
//! | Route | What |
//! |---|---|
//! | `GET /relays` | every relay's status |
//! | `POST /relays` | apply a TOML definition file (the body) |
//! | `GET /relays/{name}` | one relay's status |
//! | `DELETE /relays/{name}` | stop and forget it, with its checkpoint and parked events |
//! | `GET /relays/{name}/parked` | its parked events |
//! | `POST /relays/{name}/{command}` | `pause`, `resume`, `reset?position=N`, `retry-parked` |

use std::sync::Arc;

use annals_core::EventJson;
use annals_relay::{RelayError, RelayState, RelayStatus, Relays};
use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{ApiPath, ApiQuery};
use crate::{ApiError, HttpState};

fn relays(state: &HttpState) -> Result<Arc<Relays>, ApiError> {
    crate::error::held(&state.relays, ApiError::RelaysDisabled)
}

impl From<RelayError> for ApiError {
    fn from(e: RelayError) -> Self {
        ApiError::Relay(e)
    }
}

/// `GET /relays`
pub async fn list(State(state): State<HttpState>) -> Result<Json<Value>, ApiError> {
    let statuses = relays(&state)?.list().await;
    Ok(Json(json!({ "relays": statuses })))
}

/// `POST /relays`: the body is a relay definition file.
pub async fn apply(State(state): State<HttpState>, body: String) -> Result<Json<Value>, ApiError> {
    let applied = relays(&state)?.apply(&body).await?;
    Ok(Json(json!({ "applied": applied })))
}

/// `GET /relays/{name}`
pub async fn status(
    State(state): State<HttpState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let status = relays(&state)?.status(&name).await?;
    Ok(Json(json!(status)))
}

/// `DELETE /relays/{name}`
pub async fn remove(
    State(state): State<HttpState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    relays(&state)?.remove(&name).await?;
    Ok(Json(json!({ "removed": name })))
}

/// `GET /relays/{name}/parked`
pub async fn parked(
    State(state): State<HttpState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let parked = relays(&state)?.parked(&name).await?;
    let events: Vec<Value> = parked
        .iter()
        .map(|p| {
            json!({
                "parkedRevision": p.revision,
                "reason": p.info.reason,
                "position": p.info.position,
                "event": p.event.as_ref().map(EventJson::from_record),
            })
        })
        .collect();
    Ok(Json(json!({ "parked": events })))
}

/// The relays' metric families in the text exposition format, one sample per relay, labelled
/// with its name and sink (relay names are `[a-z0-9_-]`, so they need no escaping).
pub(crate) fn metrics_text(statuses: &[RelayStatus]) -> String {
    type Sample = fn(&RelayStatus) -> f64;
    let families: [(&str, &str, &str, Sample); 7] = [
        (
            "annals_relay_position",
            "gauge",
            "every position up to here reached the broker",
            |s| s.position as f64,
        ),
        (
            "annals_relay_lag_events",
            "gauge",
            "positions of $all written after the relay's position",
            |s| s.lag_events as f64,
        ),
        (
            "annals_relay_lag_seconds",
            "gauge",
            "age of the oldest event not yet acknowledged",
            |s| s.lag_seconds,
        ),
        (
            "annals_relay_sent",
            "counter",
            "events the broker acknowledged since the relay started",
            |s| s.sent as f64,
        ),
        (
            "annals_relay_in_flight",
            "gauge",
            "sends waiting for the broker",
            |s| s.in_flight as f64,
        ),
        ("annals_relay_parked", "gauge", "parked events", |s| {
            s.parked as f64
        }),
        (
            "annals_relay_running",
            "gauge",
            "1 while sending (running or failed over), else 0",
            |s| {
                f64::from(u8::from(matches!(
                    s.state,
                    RelayState::Running | RelayState::FailedOver
                )))
            },
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, sample) in families {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        let suffix = if kind == "counter" { "_total" } else { "" };
        for s in statuses {
            out.push_str(&format!(
                "{name}{suffix}{{relay=\"{}\",sink=\"{}\"}} {}\n",
                s.name,
                s.sink,
                sample(s)
            ));
        }
    }
    out
}

#[derive(Debug, Deserialize)]
pub struct CommandQuery {
    position: Option<u64>,
}

/// `POST /relays/{name}/{command}`
pub async fn command(
    State(state): State<HttpState>,
    ApiPath((name, command)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<CommandQuery>,
) -> Result<Json<Value>, ApiError> {
    let relays = relays(&state)?;
    match command.as_str() {
        "pause" => relays.pause(&name).await?,
        "resume" => relays.resume(&name).await?,
        "reset" => {
            let position = query.position.ok_or_else(|| {
                ApiError::BadRequest("reset needs ?position=N (0: from the start)".to_owned())
            })?;
            relays.reset(&name, position).await?;
        }
        "retry-parked" => {
            let n = relays.retry_parked(&name).await?;
            return Ok(Json(json!({ "relay": name, "resent": n })));
        }
        other => {
            return Err(ApiError::BadRequest(format!(
                "`{other}` is not one of pause, resume, reset, retry-parked"
            )));
        }
    }
    Ok(Json(json!({ "relay": name, "done": command })))
}
