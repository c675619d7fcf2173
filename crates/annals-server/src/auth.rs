//! Authentication at the edge: a middleware every request passes on its way to a handler. It
//! reads the `Authorization` header (HTTP basic, as KurrentDB clients send it in gRPC metadata
//! and HTTP clients as a header), checks it with [`annals_auth::Auth`] and puts the resulting
//! [`Principal`] in the request's extensions, where handlers find it to ask for access
//! ([`ServerState::check_stream`], [`ServerState::check_operator`]).
//!
//! Credentials that are wrong are refused here, before any handler runs: gRPC requests with
//! status UNAUTHENTICATED (what clients map to "not authenticated"), others with 401. A request
//! without credentials goes on as [`Principal::Anonymous`], which every access check refuses
//! the same way; the paths anyone may use ([`open_path`]) do not look at credentials at all.
//! Without `--auth` every request runs as [`Principal::Open`].

use annals_auth::{AuthError, Principal};
use annals_core::StreamRight;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::listen::PeerAddr;
use crate::state::ServerState;

/// gRPC status code UNAUTHENTICATED.
const GRPC_UNAUTHENTICATED: &str = "16";

/// Paths served to anyone, whatever credentials the request carries: health, the API's
/// description, and the gRPC services clients call while connecting.
pub fn open_path(path: &str) -> bool {
    matches!(path, "/health" | "/openapi.json")
        || path.starts_with("/event_store.client.server_features.ServerFeatures/")
        || path.starts_with("/event_store.client.gossip.Gossip/")
}

/// Whether a request speaks gRPC.
pub fn is_grpc(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// The middleware: finds who the request runs as, or refuses it.
pub async fn authenticate(
    State(state): State<ServerState>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(auth) = state.auth.as_ref() else {
        req.extensions_mut().insert(Principal::Open);
        return next.run(req).await;
    };
    if open_path(req.uri().path()) {
        req.extensions_mut().insert(Principal::Anonymous);
        return next.run(req).await;
    }
    let addr = req.extensions().get::<PeerAddr>().map(|p| p.0.ip());
    let checked = {
        let header = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|h| h.as_bytes());
        auth.authenticate(header, addr).await
    };
    match checked {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(e) => refusal(is_grpc(&req), &e),
    }
}

/// The answer to a request refused for `err`, in the request's protocol.
pub fn refusal(grpc: bool, err: &AuthError) -> Response {
    let (http_status, grpc_status, message) = match err {
        AuthError::Unauthenticated(_) => (
            StatusCode::UNAUTHORIZED,
            GRPC_UNAUTHENTICATED,
            err.to_string(),
        ),
        AuthError::AccessDenied => (StatusCode::FORBIDDEN, "7", "Access denied".to_owned()),
        other => {
            tracing::error!(error = %other, "authentication failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "13", other.to_string())
        }
    };
    if grpc {
        // A trailers-only gRPC response: HTTP 200 with the status in the headers.
        let mut resp = Response::new(axum::body::Body::empty());
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert("grpc-status", HeaderValue::from_static(grpc_status));
        if let Ok(v) = HeaderValue::from_str(&percent_encode(&message)) {
            headers.insert("grpc-message", v);
        }
        if grpc_status == "7" {
            headers.insert("exception", HeaderValue::from_static("access-denied"));
        }
        return resp;
    }
    let body = serde_json::json!({
        "error": if http_status == StatusCode::UNAUTHORIZED { "not_authenticated" } else if http_status == StatusCode::FORBIDDEN { "access_denied" } else { "internal" },
        "message": message,
    });
    let mut resp = (http_status, axum::Json(body)).into_response();
    if http_status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"annals\""),
        );
    }
    resp
}

/// gRPC's percent-encoding of `grpc-message`: printable ASCII but `%` as is, the rest escaped.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl ServerState {
    /// Who a request runs as, from its extensions: what [`authenticate`] put there, or (for a
    /// request that did not pass it) [`Principal::Open`] without auth and
    /// [`Principal::Anonymous`] with it.
    pub fn principal(&self, extensions: &axum::http::Extensions) -> Principal {
        match extensions.get::<Principal>() {
            Some(p) => p.clone(),
            None if self.auth.is_none() => Principal::Open,
            None => Principal::Anonymous,
        }
    }

    /// Whether `who` holds `right` on `stream` (always, without auth).
    pub fn check_stream(
        &self,
        who: &Principal,
        stream: &str,
        right: StreamRight,
    ) -> Result<(), AuthError> {
        match &self.auth {
            None => Ok(()),
            Some(auth) => auth.check_stream(who, stream, right),
        }
    }

    /// Whether `who` may run the admin operation `what` (always, without auth).
    pub fn check_operator(&self, who: &Principal, what: &str) -> Result<(), AuthError> {
        match &self.auth {
            None => Ok(()),
            Some(auth) => auth.check_operator(who, what),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_paths_are_the_ones_clients_need_before_credentials() {
        assert!(open_path("/health"));
        assert!(open_path(
            "/event_store.client.server_features.ServerFeatures/GetSupportedMethods"
        ));
        assert!(!open_path("/event_store.client.streams.Streams/Read"));
        assert!(!open_path("/metrics"));
        assert!(!open_path("/all"));
    }

    #[test]
    fn grpc_messages_are_percent_encoded() {
        assert_eq!(percent_encode("a b%c\u{e9}"), "a b%25c%C3%A9");
    }
}
