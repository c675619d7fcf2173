//! The API's errors and how each becomes an HTTP answer: a status code and a JSON body
//! `{"error": "<code>", "message": "<text>", ...}` with a stable, machine-readable `error` code.

use annals_core::{DomainError, ExpectedRevision, FilterError, InputError};
use annals_engine::EngineError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::wire::{expected_json, revision_json};

/// Why a request failed. Every variant but [`ApiError::Engine`] with a storage error means
/// nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed request: bad JSON, bad parameter, bad stream name, bad event type...
    #[error("{0}")]
    BadRequest(String),
    /// Over one of the server's bounds (body, event, append sizes or event count).
    #[error("{0}")]
    TooLarge(String),
    /// A header and the body disagree on the expected revision.
    #[error(
        "the Expected-Revision header ({header}) and the body's expectedRevision ({body}) differ"
    )]
    ExpectedRevisionConflict {
        header: ExpectedRevision,
        body: ExpectedRevision,
    },
    /// Every subscription slot is taken.
    #[error("{active} live subscriptions are open, the limit is {max}; retry later")]
    SubscriptionsFull { active: i64, max: usize },
    /// No route for this path.
    #[error("no route for {0}")]
    NoRoute(String),
    /// A failure of the server itself (a task that died).
    #[error("{0}")]
    Internal(String),
    /// This server runs no persistent subscriptions.
    #[error("this server runs no persistent subscriptions")]
    PersistentDisabled,
    #[error(transparent)]
    Persistent(annals_persistent::PersistentError),
    /// This server runs no relays.
    #[error("this server runs no relays")]
    RelaysDisabled,
    /// Another node runs the jobs (it holds the jobs lease); its address when known.
    #[error("{}", elsewhere_message(.0.as_deref()))]
    JobsElsewhere(Option<String>),
    #[error(transparent)]
    Relay(annals_relay::RelayError),
    /// This server runs without users (no `--auth`).
    #[error("this server runs without users; start it with --auth")]
    AuthDisabled,
    #[error(transparent)]
    Auth(annals_server::AuthError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// What a node that does not hold the jobs lease says about the jobs.
pub(crate) fn elsewhere_message(holder: Option<&str>) -> String {
    match holder {
        Some(at) => format!(
            "another node runs projections, relays and persistent subscriptions now: {at}; send this request there"
        ),
        None => "another node runs projections, relays and persistent subscriptions now (which one is not known yet); retry".to_owned(),
    }
}

/// The jobs of `slot`, or why this node cannot reach them (`disabled` when it runs none).
pub(crate) fn held<T>(
    slot: &annals_server::JobSlot<T>,
    disabled: ApiError,
) -> Result<std::sync::Arc<T>, ApiError> {
    match slot.held() {
        annals_server::Held::Here(t) => Ok(t),
        annals_server::Held::Off => Err(disabled),
        annals_server::Held::Elsewhere(at) => Err(ApiError::JobsElsewhere(at)),
    }
}

impl From<annals_server::AuthError> for ApiError {
    fn from(e: annals_server::AuthError) -> Self {
        match e {
            annals_server::AuthError::Engine(e) => ApiError::Engine(e),
            other => ApiError::Auth(other),
        }
    }
}

impl From<InputError> for ApiError {
    fn from(e: InputError) -> Self {
        ApiError::Engine(EngineError::Input(e))
    }
}

impl From<FilterError> for ApiError {
    fn from(e: FilterError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

impl ApiError {
    /// The `outcome` label of the append metric this error counts as.
    pub(crate) fn append_outcome(&self) -> &'static str {
        match self {
            ApiError::Engine(EngineError::Domain(DomainError::WrongExpectedRevision {
                ..
            })) => "wrong_expected_version",
            ApiError::Internal(_)
            | ApiError::Engine(
                EngineError::Log(_) | EngineError::Index(_) | EngineError::Stopped(_),
            ) => "error",
            _ => "rejected",
        }
    }

    fn status_and_body(&self) -> (StatusCode, serde_json::Value) {
        let message = self.to_string();
        let simple =
            |status: StatusCode, code: &str| (status, json!({ "error": code, "message": message }));
        match self {
            ApiError::BadRequest(_) => simple(StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::TooLarge(_) => simple(StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::ExpectedRevisionConflict { .. } => {
                simple(StatusCode::BAD_REQUEST, "expected_revision_conflict")
            }
            ApiError::SubscriptionsFull { .. } => {
                simple(StatusCode::SERVICE_UNAVAILABLE, "too_many_subscriptions")
            }
            ApiError::NoRoute(_) => simple(StatusCode::NOT_FOUND, "no_route"),
            ApiError::Internal(_) => simple(StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ApiError::PersistentDisabled => {
                simple(StatusCode::SERVICE_UNAVAILABLE, "persistent_disabled")
            }
            ApiError::RelaysDisabled => simple(StatusCode::SERVICE_UNAVAILABLE, "relays_disabled"),
            ApiError::JobsElsewhere(_) => simple(StatusCode::SERVICE_UNAVAILABLE, "jobs_elsewhere"),
            ApiError::Relay(e) => {
                use annals_relay::RelayError as R;
                match e {
                    R::Definition(_) => simple(StatusCode::BAD_REQUEST, "invalid_relay"),
                    R::NotFound(_) => simple(StatusCode::NOT_FOUND, "relay_not_found"),
                    R::Stopping => simple(StatusCode::SERVICE_UNAVAILABLE, "stopping"),
                    _ => simple(StatusCode::INTERNAL_SERVER_ERROR, "internal"),
                }
            }
            ApiError::Persistent(e) => {
                use annals_persistent::PersistentError as P;
                let group = |status: StatusCode, code: &str, stream: &str, group: &str| {
                    (
                        status,
                        json!({ "error": code, "message": message, "stream": stream, "group": group }),
                    )
                };
                match e {
                    P::NotFound { stream, group: g } => {
                        group(StatusCode::NOT_FOUND, "group_not_found", stream, g)
                    }
                    P::AlreadyExists { stream, group: g } => {
                        group(StatusCode::CONFLICT, "group_exists", stream, g)
                    }
                    P::MaxSubscribersReached { stream, group: g } => {
                        group(StatusCode::CONFLICT, "max_subscribers_reached", stream, g)
                    }
                    P::InvalidSettings {
                        stream, group: g, ..
                    } => group(StatusCode::BAD_REQUEST, "invalid_settings", stream, g),
                    P::Invalid(_) => simple(StatusCode::BAD_REQUEST, "bad_request"),
                    P::Dropped { .. } => simple(StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
                    P::Engine(e) => engine_answer(e, message),
                    // Corrupt stored state, and anything new, is the server's fault.
                    _ => simple(StatusCode::INTERNAL_SERVER_ERROR, "internal"),
                }
            }
            ApiError::AuthDisabled => simple(StatusCode::CONFLICT, "auth_disabled"),
            ApiError::Auth(e) => {
                use annals_server::AuthError as A;
                match e {
                    A::Unauthenticated(_) => simple(StatusCode::UNAUTHORIZED, "not_authenticated"),
                    A::AccessDenied => simple(StatusCode::FORBIDDEN, "access_denied"),
                    A::UserNotFound(_) => simple(StatusCode::NOT_FOUND, "user_not_found"),
                    A::UserExists(_) => simple(StatusCode::CONFLICT, "user_exists"),
                    A::Invalid(_) | A::Input(_) => simple(StatusCode::BAD_REQUEST, "bad_request"),
                    _ => simple(StatusCode::INTERNAL_SERVER_ERROR, "internal"),
                }
            }
            ApiError::Engine(e) => engine_answer(e, message),
        }
    }
}

/// The answer to an engine error.
fn engine_answer(e: &EngineError, message: String) -> (StatusCode, serde_json::Value) {
    let simple =
        |status: StatusCode, code: &str| (status, json!({ "error": code, "message": message }));
    match e {
        EngineError::Domain(DomainError::WrongExpectedRevision {
            stream,
            expected,
            actual,
        }) => (
            StatusCode::CONFLICT,
            json!({
                "error": "wrong_expected_revision",
                "message": message,
                "stream": stream,
                "expected": expected_json(*expected),
                "actual": revision_json(*actual),
            }),
        ),
        EngineError::Domain(DomainError::StreamDeleted { stream }) => (
            StatusCode::GONE,
            json!({ "error": "stream_deleted", "message": message, "stream": stream }),
        ),
        EngineError::Domain(DomainError::StreamNotFound { stream }) => (
            StatusCode::NOT_FOUND,
            json!({ "error": "stream_not_found", "message": message, "stream": stream }),
        ),
        EngineError::Input(
            InputError::EventTooLarge { .. }
            | InputError::AppendTooLarge { .. }
            | InputError::TooManyEvents { .. },
        ) => simple(StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        EngineError::Input(_) | EngineError::Filter(_) => {
            simple(StatusCode::BAD_REQUEST, "bad_request")
        }
        EngineError::Stopped(_) => simple(StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        EngineError::Fenced(_) => simple(StatusCode::SERVICE_UNAVAILABLE, "fenced"),
        EngineError::Log(_) | EngineError::Index(_) => {
            simple(StatusCode::INTERNAL_SERVER_ERROR, "internal")
        }
        // The engine's error is non-exhaustive: anything new is the server's fault.
        _ => simple(StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = self.status_and_body();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        } else {
            tracing::debug!(error = %self, %status, "request refused");
        }
        let mut resp = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Basic realm=\"annals\""),
            );
        }
        resp
    }
}

/// axum's `Path`, with a path that does not parse (not UTF-8, say) answered as the API's JSON
/// `bad_request` rather than axum's plain text.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(t)| ApiPath(t))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

/// axum's `Query`, with a query string that does not parse answered as the API's JSON
/// `bad_request` rather than axum's plain text.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(t)| ApiQuery(t))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}
