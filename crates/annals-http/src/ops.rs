//! Operational routes: `GET /health`, `GET /metrics` (Prometheus text) and `GET /openapi.json`
//! (the hand-written OpenAPI 3.1 description of every route, `openapi.json` in this crate).

use annals_server::ServerState;
use axum::Json;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The OpenAPI 3.1 document served at `/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// Content type of the Prometheus text exposition format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// `ok` while the store takes writes; `read_only` (503, with the reason) once it stopped taking
/// them after a failed write or sync: reads go on, appends are refused.
pub(crate) async fn health(State(state): State<ServerState>) -> Response {
    let head = state.engine.head().0;
    match state.engine.write_failure() {
        None => Json(json!({ "status": "ok", "head": head })).into_response(),
        Some(reason) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "read_only", "head": head, "reason": reason })),
        )
            .into_response(),
    }
}

pub(crate) async fn metrics(State(state): State<crate::HttpState>) -> Response {
    let engine = &state.server.engine;
    let mut text = state
        .server
        .metrics
        .render(engine.head().0, engine.write_failure().is_some());
    if let Some(relays) = state.relays.get() {
        // The relays' families go before the exposition's closing `# EOF`.
        let families = crate::relays::metrics_text(&relays.list().await);
        match text.rfind("# EOF") {
            Some(at) => text.insert_str(at, &families),
            None => text.push_str(&families),
        }
    }
    ([(CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)], text).into_response()
}

pub(crate) async fn openapi() -> Response {
    ([(CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}
