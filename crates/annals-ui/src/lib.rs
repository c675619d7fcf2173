//! The admin web UI, served by `annals serve` on its port (off with `--no-ui`): server-rendered
//! HTML pages ([`pages`], templates in `templates/`) over the same state as the HTTP API, a
//! small script of our own (`assets/app.js`) that keeps them live from one server-sent event
//! feed (`GET /status/live`, or `GET /all/live` on the `$all` tail) and sends commands to the
//! HTTP API, and uPlot (one pinned, MIT-licensed file in `assets/vendor/`) for the charts.
//!
//! | Page | What |
//! |---|---|
//! | `/` | overview: the store's figures, append and read rates, every consumer of the log |
//! | `/ui/projections/{name}` | a projection: status, rebuild progress, commands, parked events, view tables |
//! | `/ui/subscriptions`, `/ui/relays` | persistent-subscription groups and relays with their commands |
//! | `/ui/users` | users (for `$admins`) |
//! | `/ui/streams`, `/ui/streams/{stream}`, `/ui/streams/{stream}/events/{revision}` | stream search, a stream page by page, one event |
//! | `/ui/all` | `$all` followed live |
//! | `/ui/assets/{file}` | the script, the style sheet and uPlot |
//!
//! Everything shown that comes from clients is escaped by the templates (or set as text by the
//! script); every page is sent with a Content-Security-Policy that allows scripts, styles and
//! connections from this origin only, so no inline script runs. Commands are the HTTP API's
//! own routes, which refuse cross-site requests. With `--auth` every page needs a user (the
//! browser asks for one), and each shows only what that user may read.

mod assets;
mod format;
mod pages;

use annals_http::HttpState;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::Response;
use axum::routing::get;

/// The Content-Security-Policy of every page: this origin only, no inline script or style.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// The UI's routes, to merge with the API's; `state` is the one the API's routes were made with
/// (`annals_http::routes`), so both report the same rates.
pub fn router(state: HttpState) -> Router {
    let server = state.server.clone();
    let pages = Router::new()
        .route("/", get(pages::overview))
        .route("/ui/projections/{name}", get(pages::projection))
        .route("/ui/subscriptions", get(pages::subscriptions))
        .route("/ui/relays", get(pages::relays))
        .route("/ui/users", get(pages::users))
        .route("/ui/streams", get(pages::streams))
        .route("/ui/streams/{stream}", get(pages::stream))
        .route("/ui/streams/{stream}/events/{revision}", get(pages::event))
        .route("/ui/all", get(pages::all))
        .route_layer(from_fn_with_state(server, signed_in))
        .with_state(state);
    Router::new()
        .route("/ui/assets/{file}", get(assets::asset))
        .merge(pages)
        .layer(from_fn(security_headers))
}

/// With `--auth`, a page needs a user: without credentials the answer is a 401 with
/// `WWW-Authenticate`, on which the browser asks for them.
async fn signed_in(
    State(server): State<annals_server::ServerState>,
    req: Request,
    next: Next,
) -> Response {
    if server.auth.is_some()
        && matches!(
            server.principal(req.extensions()),
            annals_server::Principal::Anonymous
        )
    {
        let refused =
            annals_server::AuthError::Unauthenticated("sign in to use the admin UI".to_owned());
        return annals_server::refusal(false, &refused);
    }
    next.run(req).await
}

/// The headers every UI answer carries.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}
