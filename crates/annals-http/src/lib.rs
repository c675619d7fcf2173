//! Annals's own HTTP/JSON API: append to a stream, read a stream or `$all`, follow `$all` live as
//! server-sent events, and the operational routes (health, Prometheus metrics, the OpenAPI
//! document). Every answer is JSON (but `/metrics` and the event feed); every error is
//! `{"error": "<code>", "message": "..."}` with a 4xx or 5xx status, and a refused request writes
//! nothing.
//!
//! | Route | What |
//! |---|---|
//! | `POST /streams/{stream}` | append ([`append`]) |
//! | `GET /streams/{stream}` | read a stream ([`read`]) |
//! | `GET /all` | read `$all` ([`read`]) |
//! | `GET /all/live` | `$all` as server-sent events ([`live`]) |
//! | `GET /health`, `GET /metrics`, `GET /openapi.json` | operations ([`ops`]) |
//! | `/projections…` | projections: register, status, commands, read-your-writes ([`projections`]) |
//! | `/subscriptions…` | persistent-subscription groups: list, info, create, update, delete, replay parked ([`persistent`]) |
//! | `/relays…` | relays: list, apply a definition file, status, remove, pause, resume, reset, parked events, re-send them ([`relays`]) |
//! | `/users…` | users: list, create, details, update, delete, enable, disable, change and reset password ([`users`]) |
//! | `GET /status`, `GET /status/live` | the server's status for the admin UI: figures, rates and every consumer of the log, once or as server-sent events ([`status`]) |
//!
//! Access: [`guard`] says what each route needs when the server runs with `--auth`.

pub mod append;
mod error;
pub mod guard;
pub mod live;
pub mod ops;
pub mod persistent;
pub mod projections;
pub mod read;
pub mod relays;
pub mod status;
pub mod users;
pub mod wire;

use std::sync::Arc;

use annals_projections::Catalog;
use annals_server::{JobSlot, ServerState};
use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::http::Uri;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};

pub use error::{ApiError, ApiPath, ApiQuery};

/// Every route the router serves, as (method, path template); the OpenAPI document lists the
/// same.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/streams/{stream}"),
    ("get", "/streams/{stream}"),
    ("get", "/all"),
    ("get", "/all/live"),
    ("get", "/health"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("get", "/projections"),
    ("post", "/projections"),
    ("get", "/projections/{name}"),
    ("get", "/projections/{name}/failures"),
    ("get", "/projections/{name}/definition"),
    ("get", "/projections/{name}/wait"),
    ("get", "/projections/{name}/tables/{table}"),
    ("post", "/projections/{name}/{command}"),
    ("get", "/subscriptions"),
    ("get", "/subscriptions/{stream}"),
    ("get", "/subscriptions/{stream}/{group}"),
    ("put", "/subscriptions/{stream}/{group}"),
    ("post", "/subscriptions/{stream}/{group}"),
    ("delete", "/subscriptions/{stream}/{group}"),
    ("post", "/subscriptions/{stream}/{group}/replay-parked"),
    ("get", "/relays"),
    ("post", "/relays"),
    ("get", "/relays/{name}"),
    ("delete", "/relays/{name}"),
    ("get", "/relays/{name}/parked"),
    ("post", "/relays/{name}/{command}"),
    ("get", "/users"),
    ("post", "/users"),
    ("get", "/users/{login}"),
    ("put", "/users/{login}"),
    ("delete", "/users/{login}"),
    ("post", "/users/{login}/{command}"),
    ("get", "/status"),
    ("get", "/status/live"),
];

/// What the HTTP handlers share: the server's state and, when the server runs projections, their
/// catalog. The catalog is this API's alone (gRPC has no projection routes), which is why
/// `annals-server`'s [`ServerState`] does not carry it.
#[derive(Clone, Debug)]
pub struct HttpState {
    pub server: ServerState,
    pub projections: JobSlot<Catalog>,
    /// The relays this server runs (HTTP only, like projections).
    pub relays: JobSlot<annals_relay::Relays>,
    /// The rates the status routes report.
    pub status: Arc<status::StatusSampler>,
}

impl HttpState {
    /// The state of a server's HTTP routes (and of the admin UI, which shares it).
    pub fn new(
        server: ServerState,
        projections: Option<Arc<Catalog>>,
        relays: Option<Arc<annals_relay::Relays>>,
    ) -> Self {
        Self::with_slots(
            server,
            projections.map_or_else(JobSlot::default, JobSlot::here),
            relays.map_or_else(JobSlot::default, JobSlot::here),
        )
    }

    /// [`HttpState::new`] with projections and relays wherever their slots say (on the node
    /// holding the jobs lease, when several nodes serve one store).
    pub fn with_slots(
        server: ServerState,
        projections: JobSlot<Catalog>,
        relays: JobSlot<annals_relay::Relays>,
    ) -> Self {
        Self {
            server,
            projections,
            relays,
            status: Arc::default(),
        }
    }
}

impl FromRef<HttpState> for ServerState {
    fn from_ref(state: &HttpState) -> Self {
        state.server.clone()
    }
}

/// The HTTP routes, to be merged with the gRPC API's. `projections` is the catalog of the
/// projections this server runs; without one, the projection routes answer
/// `projections_disabled`.
pub fn router(state: ServerState, projections: Option<Arc<Catalog>>) -> Router {
    router_with_relays(state, projections, None)
}

/// [`router`], with the relays the server runs; without them, the relay routes answer
/// `relays_disabled`.
pub fn router_with_relays(
    state: ServerState,
    projections: Option<Arc<Catalog>>,
    relays: Option<Arc<annals_relay::Relays>>,
) -> Router {
    routes(HttpState::new(state, projections, relays))
}

/// [`router_with_relays`] over a state made with [`HttpState::new`].
pub fn routes(state: HttpState) -> Router {
    let body_max = state.server.limits.request_bytes_max;
    let server = state.server.clone();
    let streams = Router::new()
        .route(
            "/streams/{stream}",
            post(append::append).get(read::read_stream),
        )
        .route_layer(from_fn_with_state(server.clone(), guard::stream));
    let all = Router::new()
        .route("/all", get(read::read_all))
        .route("/all/live", get(live::live))
        .route_layer(from_fn_with_state(server.clone(), guard::all));
    let metrics = Router::new()
        .route("/metrics", get(ops::metrics))
        .route_layer(from_fn_with_state(server.clone(), guard::metrics));
    let tables = Router::new()
        .route(
            "/projections/{name}/tables/{table}",
            get(projections::table),
        )
        .route_layer(from_fn_with_state(server.clone(), guard::table));
    let admin = Router::new()
        .route(
            "/projections",
            get(projections::list).post(projections::apply),
        )
        .route("/projections/{name}", get(projections::status))
        .route("/projections/{name}/failures", get(projections::failures))
        .route(
            "/projections/{name}/definition",
            get(projections::definition),
        )
        .route("/projections/{name}/wait", get(projections::wait))
        .route("/projections/{name}/{command}", post(projections::command))
        .route("/subscriptions", get(persistent::list))
        .route("/subscriptions/{stream}", get(persistent::list_stream))
        .route(
            "/subscriptions/{stream}/{group}",
            get(persistent::info)
                .put(persistent::create)
                .post(persistent::update)
                .delete(persistent::delete),
        )
        .route(
            "/subscriptions/{stream}/{group}/replay-parked",
            post(persistent::replay_parked),
        )
        .route("/relays", get(relays::list).post(relays::apply))
        .route("/relays/{name}", get(relays::status).delete(relays::remove))
        .route("/relays/{name}/parked", get(relays::parked))
        .route("/relays/{name}/{command}", post(relays::command))
        .route_layer(from_fn_with_state(server.clone(), guard::operator));
    let status = Router::new()
        .route("/status", get(status::status))
        .route("/status/live", get(status::live))
        .route_layer(from_fn_with_state(server, guard::user));
    Router::new()
        .route("/health", get(ops::health))
        .route("/openapi.json", get(ops::openapi))
        .merge(streams)
        .merge(all)
        .merge(metrics)
        .merge(tables)
        .merge(admin)
        .merge(status)
        // Who may manage users is the auth layer's to decide (a user changes its own password).
        .route("/users", get(users::list).post(users::create))
        .route(
            "/users/{login}",
            get(users::details).put(users::update).delete(users::delete),
        )
        .route("/users/{login}/{command}", post(users::command))
        .layer(DefaultBodyLimit::max(body_max))
        .with_state(state)
}

/// The answer for paths no route serves; for the server to install as the merged router's
/// fallback (a fallback here would clash with the gRPC router's when they are merged).
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::NoRoute(uri.path().to_owned())
}
