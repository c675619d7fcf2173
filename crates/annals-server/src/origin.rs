//! Cross-site requests are refused at the edge: a middleware in front of every handler (and of
//! authentication) that turns away a state-changing request a browser sends on behalf of a page
//! of another origin. Without it any web page a user opens could POST to
//! `http://127.0.0.1:2113/…` (append, delete, reset a projection, manage users) and the browser
//! would deliver it, with the user's credentials if it holds any.
//!
//! The decision ([`check`]) reads only what browsers set and pages cannot forge:
//! - Safe methods (GET, HEAD, OPTIONS) pass: they change nothing. So do gRPC requests
//!   (`content-type: application/grpc…`): a browser sends that content type cross-site only after
//!   a CORS preflight the server never grants.
//! - `Sec-Fetch-Site`, sent by every current browser, decides when present: `same-origin` and
//!   `none` (the user's own navigation) pass, anything else (`same-site`, `cross-site`) is refused.
//!   It is trusted over `Origin` because it stays right behind a reverse proxy that rewrites
//!   `Host`.
//! - Otherwise `Origin`, when present, must name the request's own origin: its host and port
//!   those of the request's authority (`:authority` in HTTP/2, `Host` in HTTP/1.1), a missing
//!   port being the default of its scheme (http 80, https 443). `Origin: null` (sandboxed frames,
//!   local files) and anything that is not an http(s) origin are refused.
//! - Requests with neither header (curl, the CLI, KurrentDB clients) pass unchanged.
//!
//! A refused request gets HTTP 403 with the API's JSON error `cross_site_request` and never
//! reaches a handler, so it changes nothing; the refusal is logged to the audit target.

use annals_auth::AUDIT_TARGET;
use axum::extract::Request;
use axum::http::uri::Authority;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::listen::PeerAddr;

/// The request header in which browsers say how the page that made a request relates to its
/// target.
const SEC_FETCH_SITE: &str = "sec-fetch-site";

/// What the refusal says, for people reading it in a browser's console or a proxy's log.
const REFUSAL_MESSAGE: &str = "cross-site request refused: a web page of another origin may not \
    change anything here (only GET, HEAD and OPTIONS are served cross-site); send the request \
    from the server's own origin, or from a client that is not a browser";

/// Why a request was taken for a cross-site one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CrossSite {
    /// `Sec-Fetch-Site` names another site (or a value other than `same-origin` and `none`).
    FetchSite,
    /// `Origin: null`: an opaque origin (sandboxed frame, local file, some redirects).
    OpaqueOrigin,
    /// `Origin` names another origin, or none the server can have (not http(s), unparsable).
    OtherOrigin,
    /// `Origin` is there but the request names no authority (`Host`) to compare it with.
    NoAuthority,
}

impl CrossSite {
    /// The reason, as audit lines give it.
    fn reason(self) -> &'static str {
        match self {
            Self::FetchSite => "Sec-Fetch-Site is not same-origin",
            Self::OpaqueOrigin => "Origin is null",
            Self::OtherOrigin => "Origin is not the request's own",
            Self::NoAuthority => "Origin without a Host to compare it with",
        }
    }
}

/// The middleware: passes the request on, or answers 403 `cross_site_request` without running
/// anything behind it.
pub(crate) async fn refuse_cross_site(req: Request, next: Next) -> Response {
    match check(req.method(), req.uri(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(why) => {
            let headers = req.headers();
            // Header text is visible ASCII once `to_str` accepts it, so it prints as it is.
            let text = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_owned()
            };
            tracing::info!(
                target: AUDIT_TARGET,
                method = %req.method(),
                path = req.uri().path(),
                origin = %text(header::ORIGIN.as_str()),
                sec_fetch_site = %text(SEC_FETCH_SITE),
                peer = ?req.extensions().get::<PeerAddr>().map(|p| p.0),
                reason = why.reason(),
                "cross-site request refused"
            );
            refused()
        }
    }
}

/// The answer to a refused request: 403 with the API's JSON error shape.
fn refused() -> Response {
    let body = serde_json::json!({
        "error": "cross_site_request",
        "message": REFUSAL_MESSAGE,
    });
    (StatusCode::FORBIDDEN, axum::Json(body)).into_response()
}

/// Whether a request with `method`, `uri` and `headers` may go on, or why it is taken for a
/// cross-site one.
pub(crate) fn check(method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<(), CrossSite> {
    // What a request that changes nothing costs: one comparison.
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) || grpc(headers) {
        return Ok(());
    }
    let mut fetch_sites = headers.get_all(SEC_FETCH_SITE).iter().peekable();
    if fetch_sites.peek().is_some() {
        return if fetch_sites.all(|v| {
            let v = v.as_bytes();
            v.eq_ignore_ascii_case(b"same-origin") || v.eq_ignore_ascii_case(b"none")
        }) {
            Ok(())
        } else {
            Err(CrossSite::FetchSite)
        };
    }
    for origin in headers.get_all(header::ORIGIN) {
        same_origin(origin, uri, headers)?;
    }
    Ok(())
}

/// Whether the content type is gRPC's (what [`crate::is_grpc`] asks of a whole request).
fn grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Whether `origin` is the origin the request was sent to.
fn same_origin(origin: &HeaderValue, uri: &Uri, headers: &HeaderMap) -> Result<(), CrossSite> {
    if origin.as_bytes().eq_ignore_ascii_case(b"null") {
        return Err(CrossSite::OpaqueOrigin);
    }
    let origin: Uri = origin
        .to_str()
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(CrossSite::OtherOrigin)?;
    // An origin is `scheme://host[:port]`: nothing else may be in it.
    let default_port = match origin.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("http") => 80,
        Some(s) if s.eq_ignore_ascii_case("https") => 443,
        _ => return Err(CrossSite::OtherOrigin),
    };
    let theirs = origin.authority().ok_or(CrossSite::OtherOrigin)?;
    let path = origin.path_and_query().map_or("", |p| p.as_str());
    if theirs.as_str().contains('@') || !matches!(path, "" | "/") {
        return Err(CrossSite::OtherOrigin);
    }
    let ours = request_authority(uri, headers).ok_or(CrossSite::NoAuthority)?;
    // A browser leaves the port out of `Host` exactly when it is the default of the target's
    // scheme, which for a same-origin request is the origin's scheme.
    let same = theirs.host().eq_ignore_ascii_case(ours.host())
        && theirs.port_u16().unwrap_or(default_port) == ours.port_u16().unwrap_or(default_port);
    if same {
        Ok(())
    } else {
        Err(CrossSite::OtherOrigin)
    }
}

/// The authority a request was sent to: the URI's (HTTP/2's `:authority`, or an HTTP/1.1
/// request in absolute form, which then wins over `Host`), else the `Host` header.
fn request_authority(uri: &Uri, headers: &HeaderMap) -> Option<Authority> {
    if let Some(authority) = uri.authority() {
        return Some(authority.clone());
    }
    headers.get(header::HOST)?.to_str().ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::body::Body;
    use axum::routing::post;
    use tower::ServiceExt;

    use super::*;

    /// The decision on a request built from `method`, `uri` and `headers`.
    fn decide(method: &str, uri: &str, headers: &[(&str, &str)]) -> Result<(), CrossSite> {
        let mut req = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(()).unwrap();
        check(req.method(), req.uri(), req.headers())
    }

    fn post_with(headers: &[(&str, &str)]) -> Result<(), CrossSite> {
        decide("POST", "/streams/s", headers)
    }

    #[test]
    fn requests_without_browser_headers_pass() {
        assert_eq!(post_with(&[]), Ok(()));
        assert_eq!(post_with(&[("host", "127.0.0.1:2113")]), Ok(()));
        assert_eq!(decide("DELETE", "/relays/r", &[]), Ok(()));
    }

    #[test]
    fn same_origin_with_and_without_port_passes() {
        let host = ("host", "127.0.0.1:2113");
        assert_eq!(
            post_with(&[host, ("origin", "http://127.0.0.1:2113")]),
            Ok(())
        );
        assert_eq!(
            post_with(&[host, ("origin", "https://127.0.0.1:2113")]),
            Ok(())
        );
        // Default ports, left out or written.
        for (host, origin) in [
            ("annals.example", "https://annals.example"),
            ("annals.example", "http://annals.example"),
            ("annals.example:443", "https://annals.example"),
            ("annals.example", "https://annals.example:443"),
            ("annals.example:80", "http://annals.example"),
            ("Annals.Example", "https://annals.example"),
            ("[::1]:2113", "http://[::1]:2113"),
        ] {
            assert_eq!(
                post_with(&[("host", host), ("origin", origin)]),
                Ok(()),
                "{host} {origin}"
            );
        }
    }

    #[test]
    fn another_port_or_host_is_refused() {
        for (host, origin) in [
            ("127.0.0.1:2113", "http://127.0.0.1:8080"),
            ("127.0.0.1:2113", "http://127.0.0.1"),
            ("127.0.0.1:2113", "http://evil.example"),
            ("127.0.0.1:2113", "http://evil.example:2113"),
            ("127.0.0.1:2113", "http://localhost:2113"),
            ("annals.example", "https://annals.example:8443"),
            ("annals.example:443", "http://annals.example"),
            ("annals.example", "https://annals.example.evil.example"),
            ("[::1]:2113", "http://[::2]:2113"),
        ] {
            assert_eq!(
                post_with(&[("host", host), ("origin", origin)]),
                Err(CrossSite::OtherOrigin),
                "{host} {origin}"
            );
        }
    }

    #[test]
    fn origins_that_are_not_http_origins_are_refused() {
        let host = ("host", "127.0.0.1:2113");
        assert_eq!(
            post_with(&[host, ("origin", "null")]),
            Err(CrossSite::OpaqueOrigin)
        );
        for origin in [
            "file://",
            "chrome-extension://abcdef",
            "ftp://127.0.0.1:2113",
            "127.0.0.1:2113",
            "http://user@127.0.0.1:2113",
            "http://127.0.0.1:2113/path",
            "http://",
            "not an origin",
        ] {
            assert_eq!(
                post_with(&[host, ("origin", origin)]),
                Err(CrossSite::OtherOrigin),
                "{origin}"
            );
        }
        // Nothing to compare with.
        assert_eq!(
            post_with(&[("origin", "http://127.0.0.1:2113")]),
            Err(CrossSite::NoAuthority)
        );
        // One good and one bad: refused.
        let mut req = Request::builder()
            .method("POST")
            .uri("/streams/s")
            .header("host", "127.0.0.1:2113")
            .header("origin", "http://127.0.0.1:2113")
            .body(())
            .unwrap();
        req.headers_mut()
            .append("origin", HeaderValue::from_static("http://evil.example"));
        assert_eq!(
            check(req.method(), req.uri(), req.headers()),
            Err(CrossSite::OtherOrigin)
        );
    }

    #[test]
    fn the_authority_of_an_http2_request_is_its_uri() {
        // HTTP/2 carries `:authority` in the URI and no Host header.
        let uri = "https://annals.example:2113/streams/s";
        assert_eq!(
            decide("POST", uri, &[("origin", "https://annals.example:2113")]),
            Ok(())
        );
        assert_eq!(
            decide("POST", uri, &[("origin", "https://evil.example")]),
            Err(CrossSite::OtherOrigin)
        );
        // The URI's authority wins over a Host header.
        assert_eq!(
            decide(
                "POST",
                uri,
                &[("host", "evil.example"), ("origin", "https://evil.example")]
            ),
            Err(CrossSite::OtherOrigin)
        );
    }

    #[test]
    fn sec_fetch_site_decides_when_present() {
        for site in ["same-origin", "none"] {
            assert_eq!(post_with(&[("sec-fetch-site", site)]), Ok(()), "{site}");
        }
        for site in ["cross-site", "same-site", "something-new", ""] {
            assert_eq!(
                post_with(&[("sec-fetch-site", site)]),
                Err(CrossSite::FetchSite),
                "{site}"
            );
        }
        // A cross-site fetch is refused even with a matching Origin.
        assert_eq!(
            post_with(&[
                ("host", "127.0.0.1:2113"),
                ("origin", "http://127.0.0.1:2113"),
                ("sec-fetch-site", "cross-site"),
            ]),
            Err(CrossSite::FetchSite)
        );
        // The browser's word wins over a Host a reverse proxy rewrote.
        assert_eq!(
            post_with(&[
                ("host", "127.0.0.1:2113"),
                ("origin", "https://annals.example"),
                ("sec-fetch-site", "same-origin"),
            ]),
            Ok(())
        );
    }

    #[test]
    fn safe_methods_pass_and_every_other_is_checked() {
        let cross = [
            ("host", "127.0.0.1:2113"),
            ("origin", "http://evil.example"),
            ("sec-fetch-site", "cross-site"),
        ];
        for method in ["GET", "HEAD", "OPTIONS"] {
            assert_eq!(decide(method, "/streams/s", &cross), Ok(()), "{method}");
        }
        for method in ["POST", "PUT", "PATCH", "DELETE", "TRACE", "PURGE"] {
            assert_eq!(
                decide(method, "/streams/s", &cross),
                Err(CrossSite::FetchSite),
                "{method}"
            );
        }
    }

    #[test]
    fn grpc_requests_pass() {
        for content_type in ["application/grpc", "application/grpc+proto"] {
            let headers = [
                ("content-type", content_type),
                ("host", "127.0.0.1:2113"),
                ("origin", "http://evil.example"),
                ("sec-fetch-site", "cross-site"),
            ];
            assert_eq!(
                decide(
                    "POST",
                    "/event_store.client.streams.Streams/Append",
                    &headers
                ),
                Ok(()),
                "{content_type}"
            );
        }
        assert_eq!(
            post_with(&[
                ("content-type", "application/json"),
                ("sec-fetch-site", "cross-site")
            ]),
            Err(CrossSite::FetchSite)
        );
    }

    #[tokio::test]
    async fn a_refused_request_never_reaches_its_handler() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let router = axum::Router::new()
            .route(
                "/streams/{stream}",
                post(move || {
                    counted.fetch_add(1, Ordering::SeqCst);
                    async { "appended" }
                }),
            )
            .layer(axum::middleware::from_fn(refuse_cross_site));
        let request = |origin: &str| {
            Request::builder()
                .method("POST")
                .uri("/streams/s")
                .header("host", "127.0.0.1:2113")
                .header("origin", origin)
                .body(Body::empty())
                .unwrap()
        };

        let refused = router
            .clone()
            .oneshot(request("http://evil.example"))
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        let body = axum::body::to_bytes(refused.into_body(), usize::MAX)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "cross_site_request");
        assert!(body["message"].as_str().unwrap().contains("cross-site"));
        assert_eq!(calls.load(Ordering::SeqCst), 0);

        let passed = router
            .oneshot(request("http://127.0.0.1:2113"))
            .await
            .unwrap();
        assert_eq!(passed.status(), StatusCode::OK);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
