//! Access checks for the HTTP routes, as route layers: each route says what it needs and the
//! layer refuses the request (401 `not_authenticated`, 403 `access_denied`) before the handler
//! runs, so a refused request changes nothing. Who the request runs as was settled by
//! `annals_server::authenticate`.
//!
//! | Routes | Need |
//! |---|---|
//! | `POST /streams/{stream}` / `GET` | write / read on the stream (`$$s`: `s`'s metadata rights) |
//! | `/all`, `/all/live` | read on `$all` |
//! | `/projections/{name}/tables/{table}` | `$admins`/`$ops`, or read on `$projection-{name}` |
//! | other `/projections…`, `/subscriptions…`, `/relays…` | `$admins` or `$ops` |
//! | `/users…` | `$admins` (a user reads its own details and changes its own password); decided by `annals_auth::Auth` in the handlers |
//! | `/metrics` | `$admins` or `$ops`, unless the server runs with `--metrics-open` |
//! | `/status`, `/status/live` | any user (consumers shown to `$admins`/`$ops` only) |
//! | `/health`, `/openapi.json` | nothing |

use std::collections::HashMap;

use annals_core::{ALL_STREAM, StreamRight};
use annals_server::{AuthError, Principal, ServerState};
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use crate::error::ApiPath;

/// The stream whose read right lets a user read a projection's tables: `$projection-{name}`,
/// set in the metadata of `$$$projection-{name}`.
pub const PROJECTION_STREAM_PREFIX: &str = "$projection-";

/// Runs the request on if `check` allows who sends it, else answers the refusal. Without auth
/// nothing is checked (or formatted) at all.
async fn guarded(
    state: &ServerState,
    req: Request,
    next: Next,
    check: impl FnOnce(&Principal) -> Result<(), AuthError>,
) -> Response {
    if state.auth.is_none() {
        return next.run(req).await;
    }
    match check(&state.principal(req.extensions())) {
        Ok(()) => next.run(req).await,
        Err(e) => annals_server::refusal(false, &e),
    }
}

/// Read or write on the `{stream}` of the path, by the request's method.
pub(crate) async fn stream(
    State(state): State<ServerState>,
    ApiPath(params): ApiPath<HashMap<String, String>>,
    req: Request,
    next: Next,
) -> Response {
    let right = if req.method() == Method::GET {
        StreamRight::Read
    } else {
        StreamRight::Write
    };
    let stream = params.get("stream").map_or("", String::as_str);
    guarded(&state, req, next, |who| {
        state.check_stream(who, stream, right)
    })
    .await
}

/// Any user: the request carries credentials (the authentication layer checked them).
pub(crate) async fn user(State(state): State<ServerState>, req: Request, next: Next) -> Response {
    guarded(&state, req, next, |who| match who {
        Principal::Anonymous => Err(AuthError::Unauthenticated(
            "this needs a user: send credentials".to_owned(),
        )),
        _ => Ok(()),
    })
    .await
}

/// Read on `$all`.
pub(crate) async fn all(State(state): State<ServerState>, req: Request, next: Next) -> Response {
    guarded(&state, req, next, |who| {
        state.check_stream(who, ALL_STREAM, StreamRight::Read)
    })
    .await
}

/// `$admins` or `$ops`; the audit line names the method and path.
pub(crate) async fn operator(
    State(state): State<ServerState>,
    req: Request,
    next: Next,
) -> Response {
    let what = format!("{} {}", req.method(), req.uri().path());
    guarded(&state, req, next, |who| state.check_operator(who, &what)).await
}

/// `/metrics`: operators, or anyone with `--metrics-open`.
pub(crate) async fn metrics(
    State(state): State<ServerState>,
    req: Request,
    next: Next,
) -> Response {
    if state.metrics_open {
        return next.run(req).await;
    }
    operator(State(state), req, next).await
}

/// A projection's tables: operators, or a user with read on `$projection-{name}`.
pub(crate) async fn table(
    State(state): State<ServerState>,
    ApiPath(params): ApiPath<HashMap<String, String>>,
    req: Request,
    next: Next,
) -> Response {
    let name = params.get("name").map_or("", String::as_str);
    let stream = format!("{PROJECTION_STREAM_PREFIX}{name}");
    guarded(&state, req, next, |who| match who {
        Principal::User(u) if u.is_operator() => Ok(()),
        _ => state.check_stream(who, &stream, StreamRight::Read),
    })
    .await
}
