//! The KurrentDB (EventStoreDB) gRPC client protocol over the Annals engine, so the official
//! KurrentDB clients work unchanged.
//!
//! [`router`] builds every service as routes of one [`axum::Router`], which `annals-server`
//! serves next to the HTTP API on the same port. The messages and service stubs are generated in
//! `annals-proto`; the benches' client of the same protocol is in `annals-bench`.
//!
//! Positions: the commit and the prepare position a client sees are both the Annals global
//! [`Position`](annals_core::Position) itself (the first event is at 1). Reading `$all` forwards
//! from P includes P, backwards from P excludes it, and subscribing from P starts after P, so a
//! position read back from an event or a checkpoint round-trips.

mod convert;
mod error;
mod features;
mod persistent;
mod read;
mod read_items;
mod read_route;
mod read_tx;
mod stream_cursor;
mod streams;
mod users;

use std::time::Duration;

use annals_server::ServerState;
use axum::extract::Request;
use axum::response::Response;
use tonic::server::NamedService;

pub use error::GrpcError;

use annals_proto::gossip::gossip_server::GossipServer;
use annals_proto::persistent_subscriptions::persistent_subscriptions_server::PersistentSubscriptionsServer;
use annals_proto::server_features::server_features_server::ServerFeaturesServer;
use annals_proto::streams::streams_server::StreamsServer;
use annals_proto::users::users_server::UsersServer;

/// The version reported to clients by `ServerFeatures.GetSupportedMethods`. Clients parse it as
/// semver and gate features on it, so it names the KurrentDB release whose protocol we follow.
pub const SERVER_VERSION: &str = "25.0.0";

/// How often an idle filtered `$all` subscription reports a checkpoint.
pub const IDLE_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);

/// The host and port the client addressed (from `:authority` or `Host`), for gossip answers.
#[derive(Clone, Debug)]
pub(crate) struct Authority(pub(crate) String);

/// The gRPC services as routes, with a fallback that answers any other path UNIMPLEMENTED (for
/// gRPC requests) or 404. To merge with another router that has its own fallback, use
/// [`routes`] and call [`unimplemented_fallback`] from that fallback for gRPC requests.
pub fn router(state: ServerState) -> axum::Router {
    routes(state).fallback(unimplemented_fallback)
}

/// The gRPC services as routes, without a fallback.
pub fn routes(state: ServerState) -> axum::Router {
    let max = state.limits.request_bytes_max;
    let streams = StreamsServer::new(streams::StreamsService::new(state.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(usize::MAX);
    let features = ServerFeaturesServer::new(features::FeaturesService);
    let gossip = GossipServer::new(features::GossipService);
    let persistent =
        PersistentSubscriptionsServer::new(persistent::PersistentService::new(state.clone()))
            .max_decoding_message_size(max);
    let persistent_read = persistent::read_route::ReadRoute::new(state.clone(), max);
    let users =
        UsersServer::new(users::UsersService::new(state.clone())).max_decoding_message_size(max);
    let read = read_route::ReadRoute::new(state, max);
    axum::Router::new()
        .route_service(read_route::PATH, read)
        .route_service(persistent::read_route::PATH, persistent_read)
        .route_service(&service_path(&streams), streams)
        .route_service(&service_path(&features), features)
        .route_service(&service_path(&gossip), gossip)
        .route_service(&service_path(&persistent), persistent)
        .route_service(&service_path(&users), users)
        .layer(axum::middleware::map_request(capture_authority))
}

fn service_path<S: NamedService>(_: &S) -> String {
    format!("/{}/{{*rest}}", S::NAME)
}

async fn capture_authority(mut req: Request) -> Request {
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            req.headers()
                .get(axum::http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        });
    if let Some(a) = authority {
        req.extensions_mut().insert(Authority(a));
    }
    req
}

/// Answers a request no route took: UNIMPLEMENTED for gRPC requests, 404 otherwise.
pub async fn unimplemented_fallback(req: Request) -> Response {
    let is_grpc = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if is_grpc {
        tracing::debug!(path = %req.uri().path(), "unknown gRPC method");
        let (parts, ()) =
            tonic::Status::unimplemented(format!("{} is not implemented", req.uri().path()))
                .into_http::<()>()
                .into_parts();
        Response::from_parts(parts, axum::body::Body::empty())
    } else {
        let mut resp = Response::new(axum::body::Body::from("not found"));
        *resp.status_mut() = axum::http::StatusCode::NOT_FOUND;
        resp
    }
}
