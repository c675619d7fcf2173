//! Projection routes: register definitions, list and inspect projections, send commands, and
//! wait for a projection to apply a position (read-your-writes), and read its tables.
//!
//! | Route | What |
//! |---|---|
//! | `GET /projections` | every projection's status |
//! | `POST /projections` | apply a TOML definition file (register, keep or rebuild) |
//! | `GET /projections/{name}` | one projection's status |
//! | `GET /projections/{name}/failures` | its newest recorded failures |
//! | `GET /projections/{name}/definition` | its newest definition, as TOML |
//! | `POST /projections/{name}/{pause,resume,reset,rebuild,retry-parked}` | commands |
//! | `GET /projections/{name}/wait?position=P&timeoutMs=T` | 200 once applied, 409 `stale` |
//! | `GET /projections/{name}/tables/{table}?position=P&timeoutMs=T&limit=N&offset=K` | rows of a view, read after waiting for `P` if given |
//!
//! The runtime's calls block (they talk to a projection's control thread), so each runs on
//! tokio's blocking pool.

use std::sync::Arc;
use std::time::Duration;

use annals_core::Position;
use annals_projections::{Catalog, CatalogError, ProjectionError, Projections, WaitError};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::HttpState;
use crate::error::{ApiPath, ApiQuery};

/// Why a projection request failed.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionApiError {
    #[error("this server runs no projections")]
    Disabled,
    /// Another node runs the projections (it holds the jobs lease).
    #[error("{}", crate::error::elsewhere_message(.0.as_deref()))]
    Elsewhere(Option<String>),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("projection is stale: it has applied up to {applied}, not yet {wanted}")]
    Stale { applied: u64, wanted: u64 },
    #[error("{0}")]
    Internal(String),
}

impl From<ProjectionError> for ProjectionApiError {
    fn from(e: ProjectionError) -> Self {
        ProjectionApiError::Catalog(CatalogError::Projection(e))
    }
}

impl IntoResponse for ProjectionApiError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let (status, code) = match &self {
            ProjectionApiError::Disabled => (StatusCode::NOT_FOUND, "projections_disabled"),
            ProjectionApiError::Elsewhere(_) => (StatusCode::SERVICE_UNAVAILABLE, "jobs_elsewhere"),
            ProjectionApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ProjectionApiError::Stale { .. } => (StatusCode::CONFLICT, "stale"),
            ProjectionApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ProjectionApiError::Catalog(e) => match e {
                CatalogError::Definition(_) => (StatusCode::BAD_REQUEST, "bad_definition"),
                CatalogError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
                CatalogError::Target { .. } => {
                    (StatusCode::SERVICE_UNAVAILABLE, "target_unavailable")
                }
                CatalogError::Io(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
                CatalogError::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
                CatalogError::Store { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
                CatalogError::CatalogTooLarge { .. } => {
                    (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
                }
                CatalogError::Projection(p) => match p {
                    ProjectionError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
                    ProjectionError::NoSuchTable { .. } => (StatusCode::NOT_FOUND, "no_such_table"),
                    ProjectionError::InvalidSpec { .. } | ProjectionError::Definition { .. } => {
                        (StatusCode::BAD_REQUEST, "bad_definition")
                    }
                    ProjectionError::AlreadyRegistered { .. }
                    | ProjectionError::RebuildInProgress { .. }
                    | ProjectionError::NotRunning { .. } => (StatusCode::CONFLICT, "conflict"),
                    _ => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
                },
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            },
        };
        let mut body = json!({ "error": code, "message": message });
        if let (ProjectionApiError::Stale { applied, wanted }, Some(map)) =
            (&self, body.as_object_mut())
        {
            map.insert("applied".to_owned(), json!(applied));
            map.insert("position".to_owned(), json!(wanted));
        }
        (status, axum::Json(body)).into_response()
    }
}

type Result<T> = std::result::Result<T, ProjectionApiError>;

fn catalog(state: &HttpState) -> Result<Arc<Catalog>> {
    match state.projections.held() {
        annals_server::Held::Here(c) => Ok(c),
        annals_server::Held::Off => Err(ProjectionApiError::Disabled),
        annals_server::Held::Elsewhere(at) => Err(ProjectionApiError::Elsewhere(at)),
    }
}

/// Runs a blocking runtime call off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ProjectionApiError::Internal(format!("projection task failed: {e}")))?
}

/// `GET /projections`
pub async fn list(State(state): State<HttpState>) -> Result<axum::Json<Value>> {
    let catalog = catalog(&state)?;
    let statuses = blocking(move || Ok(catalog.projections().list())).await?;
    Ok(axum::Json(json!({ "projections": statuses })))
}

/// `POST /projections`: the body is a TOML definition file.
pub async fn apply(State(state): State<HttpState>, body: String) -> Result<axum::Json<Value>> {
    let catalog = catalog(&state)?;
    let applied = blocking(move || Ok(catalog.apply(&body)?)).await?;
    Ok(axum::Json(json!({ "applied": applied })))
}

/// `GET /projections/{name}`
pub async fn status(
    State(state): State<HttpState>,
    ApiPath(name): ApiPath<String>,
) -> Result<axum::Json<Value>> {
    let catalog = catalog(&state)?;
    let status = blocking(move || Ok(catalog.projections().status(&name)?)).await?;
    Ok(axum::Json(json!(status)))
}

/// `GET /projections/{name}/failures`
pub async fn failures(
    State(state): State<HttpState>,
    ApiPath(name): ApiPath<String>,
) -> Result<axum::Json<Value>> {
    let catalog = catalog(&state)?;
    let failures = blocking(move || Ok(catalog.projections().failures(&name)?)).await?;
    let failures: Vec<Value> = failures
        .iter()
        .map(|f| {
            json!({
                "position": f.position.0,
                "stream": f.stream,
                "revision": f.revision,
                "eventType": f.event_type,
                "message": f.message,
                "action": f.action.as_str(),
                "recordedAtMs": f.recorded_at_ms,
            })
        })
        .collect();
    Ok(axum::Json(json!({ "failures": failures })))
}

/// `GET /projections/{name}/definition`
pub async fn definition(
    State(state): State<HttpState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Response> {
    let catalog = catalog(&state)?;
    let text = catalog
        .definitions()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| t)
        .ok_or_else(|| ProjectionError::NotFound { name: name.clone() })?;
    Ok(([("content-type", "application/toml")], text).into_response())
}

/// `POST /projections/{name}/{command}`
pub async fn command(
    State(state): State<HttpState>,
    ApiPath((name, command)): ApiPath<(String, String)>,
) -> Result<axum::Json<Value>> {
    let catalog = catalog(&state)?;
    let answer = blocking(move || {
        let p = catalog.projections();
        Ok(match command.as_str() {
            "pause" => {
                p.pause(&name)?;
                json!({ "ok": true })
            }
            "resume" => {
                p.resume(&name)?;
                json!({ "ok": true })
            }
            "reset" => {
                p.reset(&name)?;
                json!({ "ok": true })
            }
            "rebuild" => json!({ "applied": catalog.rebuild(&name)? }),
            "retry-parked" => json!(p.retry_parked(&name)?),
            other => {
                return Err(ProjectionApiError::BadRequest(format!(
                    "unknown command {other:?} (pause, resume, reset, rebuild, retry-parked)"
                )));
            }
        })
    })
    .await?;
    Ok(axum::Json(answer))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WaitQuery {
    position: u64,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// How long a wait lasts when the request names no timeout.
pub const WAIT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);

/// `GET /projections/{name}/wait?position=P&timeoutMs=T`: answers once the projection has
/// applied position `P` (an append's position), or 409 `stale` at the timeout (capped by the
/// runtime's maximum).
pub async fn wait(
    State(state): State<HttpState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<WaitQuery>,
) -> Result<axum::Json<Value>> {
    let catalog = catalog(&state)?;
    let timeout = query
        .timeout_ms
        .map_or(WAIT_TIMEOUT_DEFAULT, Duration::from_millis);
    let wanted = query.position;
    let applied =
        blocking(move || wait_applied(catalog.projections(), &name, wanted, timeout)).await?;
    Ok(axum::Json(json!({ "position": applied })))
}

/// Waits until projection `name` has applied `wanted`; 409 `stale` at the timeout.
fn wait_applied(
    projections: &Projections,
    name: &str,
    wanted: u64,
    timeout: Duration,
) -> Result<u64> {
    match projections.wait_for(name, Position(wanted), timeout) {
        Ok(p) => Ok(p.0),
        Err(WaitError::Stale { applied }) => Err(ProjectionApiError::Stale {
            applied: applied.0,
            wanted,
        }),
        Err(WaitError::NotFound { name }) => Err(ProjectionError::NotFound { name }.into()),
        Err(e) => Err(ProjectionApiError::Internal(e.to_string())),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TableQuery {
    #[serde(default)]
    position: Option<u64>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    offset: Option<usize>,
}

/// Rows a table read returns when the request names no limit.
pub const TABLE_ROWS_DEFAULT: usize = 100;

/// `GET /projections/{name}/tables/{table}`: rows of one of the projection's tables as readers
/// see it, ordered by its first column. With `position`, the read waits until the projection
/// has applied it (as `/wait` does; 409 `stale` at the timeout), so the rows include that
/// append. Values come as JSON: numbers, strings, booleans, nested JSON as itself, SQLite blobs
/// as lowercase hex, PostgreSQL values as its `row_to_json` gives them.
pub async fn table(
    State(state): State<HttpState>,
    ApiPath((name, table)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<TableQuery>,
) -> Result<axum::Json<Value>> {
    let catalog = catalog(&state)?;
    let timeout = query
        .timeout_ms
        .map_or(WAIT_TIMEOUT_DEFAULT, Duration::from_millis);
    let limit = query
        .limit
        .unwrap_or(TABLE_ROWS_DEFAULT)
        .min(annals_projections::TABLE_ROWS_MAX);
    let offset = query.offset.unwrap_or(0);
    let answer = blocking(move || {
        let projections = catalog.projections();
        if let Some(wanted) = query.position {
            wait_applied(projections, &name, wanted, timeout)?;
        }
        let (position, rows) = projections.read_table(&name, &table, limit, offset)?;
        let objects: Vec<Value> = rows
            .rows
            .iter()
            .map(|row| {
                let object: serde_json::Map<String, Value> = rows
                    .columns
                    .iter()
                    .zip(row)
                    .map(|(column, value)| (column.clone(), json_of(value)))
                    .collect();
                Value::Object(object)
            })
            .collect();
        Ok(json!({
            "position": position.0,
            "columns": rows.columns,
            "rows": objects,
            "limit": limit,
            "offset": offset,
        }))
    })
    .await?;
    Ok(axum::Json(answer))
}

fn json_of(value: &annals_projections::Value) -> Value {
    use annals_projections::Value as V;
    match value {
        V::Null => Value::Null,
        V::Bool(b) => json!(b),
        V::Integer(n) => json!(n),
        V::Real(r) => json!(r),
        V::Text(t) => json!(t),
        V::Json(text) => serde_json::from_str(text).unwrap_or_else(|_| json!(text)),
        V::Blob(b) => json!(b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
    }
}
