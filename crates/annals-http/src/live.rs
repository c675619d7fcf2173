//! `GET /all/live`: the global log as server-sent events, catching up from a position and then
//! following new events live, with no gap or duplicate (the engine's [`Subscription`] is one
//! cursor over both phases).
//!
//! Each event is sent as `id: <position>`, `event: <type>`, `data: <the event's JSON>`, so a
//! browser `EventSource` resumes by itself: its `Last-Event-ID` header wins over `from` and
//! resumes strictly after that position. When a filtered page delivers nothing, a
//! `checkpoint` event (`id:` = the last position looked at, `data: {"checkpoint": p}`) keeps the
//! resume point moving. With `eventNames=false` events come without the `event:` line (as
//! `message` events), so a browser's `EventSource` sees every type with one listener. A feed
//! ends when the server shuts down or the client goes away.
//!
//! Frames are written by hand, a page's as one chunk. Feeds at the head take their pages from
//! the engine's live tail, and each event's frame is made once and kept with the shared page
//! (`SharedFrames`), so a hundred feeds cost one encoding per event, not a hundred.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::time::Duration;

use annals_core::{Direction, EventRecord, Position};
use annals_engine::{EngineError, Subscription, SubscriptionPage};
use annals_server::{Api, ServerState};
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures::Stream;

use crate::error::ApiError;
use crate::wire::{EventJson, ReadFrom, ReadParams, parse_from};

/// How often an idle feed sends a keep-alive comment.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// The comment an idle feed sends.
const KEEP_ALIVE: &[u8] = b":keep-alive\n\n";

/// The header a reconnecting `EventSource` sends.
const LAST_EVENT_ID: &str = "last-event-id";

pub(crate) async fn live(
    State(state): State<ServerState>,
    headers: HeaderMap,
    params: Result<Query<ReadParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) =
        params.map_err(|e| ApiError::BadRequest(format!("bad query string: {}", e.body_text())))?;
    if params.direction()? != Direction::Forwards {
        return Err(ApiError::BadRequest(
            "a live feed only goes forwards".to_owned(),
        ));
    }
    let filter = params.filter()?;
    let named = match params.event_names.as_deref() {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "eventNames {other:?} must be \"true\" or \"false\""
            )));
        }
    };
    let from = match headers.get(LAST_EVENT_ID) {
        Some(v) => {
            let id = v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::BadRequest(
                        "the Last-Event-ID header must be a position (a non-negative integer)"
                            .to_owned(),
                    )
                })?;
            Position(id).next()
        }
        None => match params.from.as_deref().map(parse_from).transpose()? {
            None | Some(ReadFrom::End) => state.engine.head().next(),
            Some(ReadFrom::Start) => Position(1),
            Some(ReadFrom::At(p)) => Position(p),
        },
    };
    let max = state.limits.subscriptions_max;
    let active = state.metrics.subscriptions_active();
    if usize::try_from(active).unwrap_or(0) >= max {
        return Err(ApiError::SubscriptionsFull { active, max });
    }
    let guard = state.metrics.subscription_started(Api::Http);
    tracing::debug!(from = from.0, "live feed started");
    let stopping_state = state.clone();
    let feed = Feed {
        sub: state.engine.subscribe_all(from, filter),
        pending: None,
        stopping: Box::pin(async move { stopping_state.stopping().await }),
        state,
        last_sent: Position(from.0.saturating_sub(1)),
        live_sent_at: None,
        done: false,
        named,
        _guard: guard,
    };
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(frames(feed)),
    )
        .into_response())
}

/// One open feed; dropping it (client gone) drops the subscription and its metric guard.
struct Feed<G> {
    sub: Subscription,
    /// What to send next: one page's frames, written as one chunk.
    pending: Option<Bytes>,
    stopping: Pin<Box<dyn Future<Output = ()> + Send>>,
    state: ServerState,
    /// The last position the client was told about (event or checkpoint).
    last_sent: Position,
    /// When the last page was sent, if it was live (events, and caught up with the head): the
    /// next waits for [`annals_server::Limits::live_page_interval`] after it.
    live_sent_at: Option<tokio::time::Instant>,
    /// Nothing more after `pending`.
    done: bool,
    /// Events carry their type as the SSE event name.
    named: bool,
    _guard: G,
}

/// The SSE frames of a shared page's events, with and without the event name, made on first
/// use and shared by every feed that sends them.
struct SharedFrames {
    named: Box<[OnceLock<Bytes>]>,
    unnamed: Box<[OnceLock<Bytes>]>,
}

impl SharedFrames {
    fn new(events: &[EventRecord]) -> Self {
        let cells = || events.iter().map(|_| OnceLock::new()).collect();
        Self {
            named: cells(),
            unnamed: cells(),
        }
    }
}

impl<G> Feed<G> {
    fn push_page(&mut self, page: SubscriptionPage) {
        self.state
            .metrics
            .subscription_events(Api::Http, page.events.len() as u64);
        if let Some(last) = page.events.last() {
            self.last_sent = last.position;
        }
        let named = self.named;
        let mut out = BytesMut::new();
        match page.events.shared_page() {
            Some((shared, indices)) => {
                let frames = shared.cache(SharedFrames::new);
                let cells = if named {
                    &frames.named
                } else {
                    &frames.unnamed
                };
                for &i in indices {
                    let i = i as usize;
                    if let (Some(cell), Some(e)) = (cells.get(i), shared.events().get(i)) {
                        out.extend_from_slice(cell.get_or_init(|| sse_event(e, named)));
                    }
                }
            }
            None => {
                for e in page.events.iter() {
                    out.extend_from_slice(&sse_event(e, named));
                }
            }
        }
        if page.checkpoint > self.last_sent {
            self.last_sent = page.checkpoint;
            let p = page.checkpoint.0;
            out.extend_from_slice(
                format!("event: checkpoint\nid: {p}\ndata: {{\"checkpoint\":{p}}}\n\n").as_bytes(),
            );
        }
        self.live_sent_at =
            (page.caught_up && !page.events.is_empty()).then(tokio::time::Instant::now);
        if !out.is_empty() {
            self.pending = Some(out.freeze());
        }
    }
}

fn frames<G: Send + 'static>(feed: Feed<G>) -> impl Stream<Item = Result<Bytes, Infallible>> {
    futures::stream::unfold(feed, |mut feed| async move {
        loop {
            if let Some(chunk) = feed.pending.take() {
                return Some((Ok(chunk), feed));
            }
            if feed.done {
                return None;
            }
            if let Some(at) = feed.live_sent_at.take() {
                let limits = std::sync::Arc::clone(&feed.state.limits);
                tokio::select! {
                    biased;
                    () = &mut feed.stopping => return None,
                    () = limits.live_page_pause(at) => {}
                }
            }
            let page = tokio::select! {
                biased;
                () = &mut feed.stopping => {
                    tracing::debug!("server stopping; ending live feed");
                    return None;
                }
                page = tokio::time::timeout(KEEP_ALIVE_INTERVAL, feed.sub.next_page()) => page,
            };
            match page {
                Err(_idle) => feed.pending = Some(Bytes::from_static(KEEP_ALIVE)),
                Ok(Ok(page)) => feed.push_page(page),
                Ok(Err(EngineError::Stopped(reason))) => {
                    tracing::debug!(%reason, "engine stopped; ending live feed");
                    return None;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "live feed failed");
                    let data = serde_json::json!({"error": "internal", "message": e.to_string()});
                    feed.pending = Some(Bytes::from(format!("event: error\ndata: {data}\n\n")));
                    feed.done = true;
                }
            }
        }
    })
}

/// An event as one SSE frame: `id` = position, `event` = type when `named` (left out if the
/// type has a line break, which SSE cannot carry; the data still names it), `data` = its JSON
/// (one line: JSON text escapes line breaks in strings).
fn sse_event(e: &EventRecord, named: bool) -> Bytes {
    let mut out = Vec::with_capacity(64 + e.data.len() + e.metadata.len());
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(e.position.0.to_string().as_bytes());
    out.push(b'\n');
    let ty = e.event_type.as_str();
    if named && !ty.contains(['\r', '\n']) {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(ty.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    if let Err(err) = serde_json::to_writer(&mut out, &EventJson::from_record(e)) {
        tracing::warn!(error = %err, position = e.position.0, "cannot encode event");
        out.extend_from_slice(format!("{{\"position\":{}}}", e.position.0).as_bytes());
    }
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}
