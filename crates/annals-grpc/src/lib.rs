//! The KurrentDB (EventStoreDB) gRPC client protocol over the Annals engine.

use annals_server::ServerState;

/// The gRPC services as routes, to be merged with the HTTP API's.
pub fn router(state: ServerState) -> axum::Router {
    let _ = state;
    axum::Router::new()
}
