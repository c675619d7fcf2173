//! The network targets: one request through the real gRPC or HTTP router, in process (tower's
//! `oneshot`), against a fresh copy of the seeded store with persistent subscriptions running.
//!
//! A response is read frame by frame. A long-lived one (a subscription, the live feed) goes quiet
//! once it has caught up; after [`QUIET`] without a frame the run begins the server's shutdown,
//! which ends such responses, and the rest must then arrive within [`SHUTDOWN_WAIT`] or the call
//! counts as hung. Then: a failed call that could write must have written nothing (the head has
//! not moved), and an HTTP error must be the API's JSON error shape.

use std::time::Duration;

use annals_engine::Engine;
use annals_log::FaultStorage;
use annals_persistent::Subscriptions;
use annals_server::{Limits, ServerState};
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::runtime::runtime;
use crate::{Violation, store};

/// How long a response may stay quiet before the run shuts the server down.
const QUIET: Duration = Duration::from_millis(20);
/// How long a response may take to end once shutdown has begun.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);
/// Most response bytes read; the seeded store's answers are far smaller.
const RESPONSE_BYTES_MAX: usize = 16 << 20;
/// Separates the messages of one gRPC call in the input.
pub(crate) const GRPC_MESSAGE_SEPARATOR: &[u8] = b"#MSG";

/// The gRPC methods, by the first input byte (modulo their number), and whether a failed call
/// must leave the store as it was. BatchAppend answers each batch on its own, so one call may
/// both store batches and fail: it is checked for panics and hangs only.
const GRPC_METHODS: &[(&str, bool)] = &[
    ("/event_store.client.streams.Streams/Read", false),
    ("/event_store.client.streams.Streams/Append", true),
    ("/event_store.client.streams.Streams/Delete", true),
    ("/event_store.client.streams.Streams/Tombstone", true),
    ("/event_store.client.streams.Streams/BatchAppend", false),
    (
        "/event_store.client.persistent_subscriptions.PersistentSubscriptions/Create",
        true,
    ),
    (
        "/event_store.client.persistent_subscriptions.PersistentSubscriptions/Update",
        true,
    ),
    (
        "/event_store.client.persistent_subscriptions.PersistentSubscriptions/Delete",
        true,
    ),
    (
        "/event_store.client.persistent_subscriptions.PersistentSubscriptions/Read",
        false,
    ),
    (
        "/event_store.client.persistent_subscriptions.PersistentSubscriptions/GetInfo",
        true,
    ),
    (
        "/event_store.client.persistent_subscriptions.PersistentSubscriptions/ReplayParked",
        true,
    ),
    (
        "/event_store.client.persistent_subscriptions.PersistentSubscriptions/List",
        true,
    ),
    (
        "/event_store.client.persistent_subscriptions.PersistentSubscriptions/RestartSubsystem",
        true,
    ),
    (
        "/event_store.client.server_features.ServerFeatures/GetSupportedMethods",
        true,
    ),
    ("/event_store.client.gossip.Gossip/Read", true),
];

/// The HTTP routes, by the first input byte (modulo their number): method, path template
/// (`{a}` and `{b}` filled from the input), whether the body is sent, and whether a failed call
/// must leave the store as it was.
const HTTP_ROUTES: &[(&str, &str, bool)] = &[
    ("POST", "/streams/{a}", true),
    ("GET", "/streams/{a}", false),
    ("GET", "/all", false),
    ("PUT", "/subscriptions/{a}/{b}", true),
    ("POST", "/subscriptions/{a}/{b}", true),
    ("DELETE", "/subscriptions/{a}/{b}", false),
    ("POST", "/subscriptions/{a}/{b}/replay-parked", false),
    ("GET", "/subscriptions/{a}/{b}", false),
    ("GET", "/subscriptions/{a}", false),
    ("POST", "/projections", true),
    ("GET", "/all/live", false),
    ("GET", "/health", false),
];

/// One run's server: a copy of the seeded store, its persistent subscriptions and the state the
/// routers take.
struct Server {
    engine: Engine,
    state: ServerState,
}

async fn server(target: &'static str, storage: FaultStorage) -> Result<Server, Violation> {
    let (engine, _) = store::open(&storage)
        .map_err(|e| Violation::new(target, format!("opening the seeded store: {e}")))?;
    let persistent = Subscriptions::open(engine.clone())
        .await
        .map_err(|e| Violation::new(target, format!("starting persistent subscriptions: {e}")))?;
    let state = ServerState::new(engine.clone(), Limits::default()).with_persistent(persistent);
    Ok(Server { engine, state })
}

/// The answer to one call, read to its end.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    trailers: Option<HeaderMap>,
    body: Vec<u8>,
}

async fn call(
    target: &'static str,
    router: axum::Router,
    state: &ServerState,
    request: Request<Body>,
) -> Result<Answer, Violation> {
    let response = match router.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let (parts, mut body) = response.into_parts();
    let mut bytes = Vec::new();
    let mut trailers = None;
    let mut stopping = false;
    loop {
        let wait = if stopping { SHUTDOWN_WAIT } else { QUIET };
        let frame = match tokio::time::timeout(wait, body.frame()).await {
            Ok(Some(Ok(frame))) => frame,
            // The body ended, or failed: either way the answer is what arrived.
            Ok(Some(Err(_)) | None) => break,
            Err(_) if stopping => {
                return Err(Violation::new(
                    target,
                    "the response did not end after shutdown began",
                ));
            }
            Err(_) => {
                state.begin_shutdown();
                stopping = true;
                continue;
            }
        };
        match frame.into_data() {
            Ok(data) => {
                if bytes.len() + data.len() > RESPONSE_BYTES_MAX {
                    return Err(Violation::new(
                        target,
                        "the response is larger than any answer",
                    ));
                }
                bytes.extend_from_slice(&data);
            }
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        trailers,
        body: bytes,
    })
}

/// Runs one call on a fresh server, then checks that a failed call that could write did not.
fn run_call(
    target: &'static str,
    must_not_write_on_error: bool,
    make: impl FnOnce(&ServerState) -> Result<(axum::Router, Request<Body>), Violation>,
    failed: impl FnOnce(&Answer) -> Result<bool, Violation>,
) -> Result<(), Violation> {
    // Built outside the runtime: building the seeded store the first time appends blocking.
    let storage = store::seeded(target)?;
    let rt = runtime(target)?;
    let result = rt.block_on(async {
        let server = server(target, storage).await?;
        let before = server.engine.head();
        let (router, request) = make(&server.state)?;
        let answer = call(target, router, &server.state, request).await?;
        let after = server.engine.head();
        if failed(&answer)? && must_not_write_on_error && after != before {
            return Err(Violation::new(
                target,
                format!(
                    "a failed call (status {}) moved the head from {before:?} to {after:?}",
                    answer.status
                ),
            ));
        }
        Ok(server.engine)
    });
    // Dropping the runtime ends every task of the run, so nothing holds the store any more.
    drop(rt);
    let engine = result?;
    store::close(target, &engine)
}

/// `data[0]` picks the method (its high bit: send the rest as the raw body, no gRPC framing);
/// the rest, split at [`GRPC_MESSAGE_SEPARATOR`], is the call's messages, each framed.
pub fn grpc_request(data: &[u8]) -> Result<(), Violation> {
    const TARGET: &str = "grpc_request";
    let Some((&first, rest)) = data.split_first() else {
        return Ok(());
    };
    let Some(&(path, checked)) = GRPC_METHODS.get(usize::from(first & 0x7f) % GRPC_METHODS.len())
    else {
        return Ok(());
    };
    let body = if first & 0x80 != 0 {
        rest.to_vec()
    } else {
        grpc_frames(rest)
    };
    run_call(
        TARGET,
        checked,
        |state| {
            let request = Request::post(format!("http://localhost{path}"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(Body::from(body))
                .map_err(|e| Violation::new(TARGET, format!("building the request: {e}")))?;
            Ok((annals_grpc::router(state.clone()), request))
        },
        |answer| {
            let status = answer
                .trailers
                .as_ref()
                .and_then(|t| t.get("grpc-status"))
                .or_else(|| answer.headers.get("grpc-status"))
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            // No grpc-status at all: the call did not complete, which counts as a failure.
            Ok(status.as_deref() != Some("0"))
        },
    )
}

/// Each message with gRPC's frame: not compressed, a big-endian length.
fn grpc_frames(messages: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(messages.len() + 5);
    for message in split(messages, GRPC_MESSAGE_SEPARATOR) {
        out.push(0);
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
    }
    out
}

fn split<'a>(mut data: &'a [u8], separator: &[u8]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    while let Some(at) = data.windows(separator.len()).position(|w| w == separator) {
        parts.push(data.get(..at).unwrap_or_default());
        data = data.get(at + separator.len()..).unwrap_or_default();
    }
    parts.push(data);
    parts
}

/// `data[0]` picks the route; the rest is four lines: `{a}`, `{b}` (also the `Expected-Revision`
/// header when it is a valid header value), the query string, then the body (the rest, newlines
/// included). Path and query bytes are percent-encoded, so every input is a valid URI.
pub fn http_body(data: &[u8]) -> Result<(), Violation> {
    const TARGET: &str = "http_body";
    let Some((&first, rest)) = data.split_first() else {
        return Ok(());
    };
    let Some(&(method, template, with_body)) =
        HTTP_ROUTES.get(usize::from(first) % HTTP_ROUTES.len())
    else {
        return Ok(());
    };
    let mut fields = rest.splitn(4, |b| *b == b'\n');
    let a = fields.next().unwrap_or_default();
    let b = fields.next().unwrap_or_default();
    let query = fields.next().unwrap_or_default();
    let body = fields.next().unwrap_or_default();
    let mut uri = template
        .replace("{a}", &percent_encode(a, b""))
        .replace("{b}", &percent_encode(b, b""));
    if !query.is_empty() {
        uri.push('?');
        uri.push_str(&percent_encode(query, b"=&"));
    }
    let writes = method != "GET";
    run_call(
        TARGET,
        writes,
        |state| {
            let mut request = Request::builder()
                .method(method)
                .uri(format!("http://localhost{uri}"))
                .header("content-type", "application/json");
            if let Ok(value) = axum::http::HeaderValue::from_bytes(b)
                && !b.is_empty()
            {
                request = request.header(annals_http::append::EXPECTED_REVISION_HEADER, value);
            }
            let body = if with_body {
                Body::from(body.to_vec())
            } else {
                Body::empty()
            };
            let request = request
                .body(body)
                .map_err(|e| Violation::new(TARGET, format!("building the request: {e}")))?;
            // As `annals serve` installs it: a path no route serves answers the JSON 404.
            let router = annals_http::router(state.clone(), None)
                .fallback(|uri: axum::http::Uri| annals_http::not_found(uri));
            Ok((router, request))
        },
        |answer| {
            if !(answer.status.is_client_error() || answer.status.is_server_error()) {
                return Ok(false);
            }
            let shaped = serde_json::from_slice::<serde_json::Value>(&answer.body)
                .ok()
                .is_some_and(|v| v.get("error").is_some_and(serde_json::Value::is_string));
            if !shaped {
                return Err(Violation::new(
                    TARGET,
                    format!(
                        "{method} {uri}: error {} is not the API's JSON error: {:?}",
                        answer.status,
                        String::from_utf8_lossy(&answer.body)
                    ),
                ));
            }
            Ok(true)
        },
    )
}

/// `bytes` with every byte but unreserved ones and `keep` as `%XX`.
fn percent_encode(bytes: &[u8], keep: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for b in bytes {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(b) || keep.contains(b) {
            out.push(char::from(*b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
