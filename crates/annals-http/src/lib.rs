//! Annals's own HTTP/JSON API.

use annals_server::ServerState;

/// The HTTP routes, to be merged with the gRPC API's.
pub fn router(state: ServerState) -> axum::Router {
    let _ = state;
    axum::Router::new()
}
