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

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use annals_core::{Direction, EventRecord, Position};
use annals_engine::{EngineError, Subscription, SubscriptionPage};
use annals_server::{Api, ServerState};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;

use crate::error::ApiError;
use crate::wire::{EventJson, ReadFrom, ReadParams, parse_from};

/// How often an idle feed sends a keep-alive comment.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(15);

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
        pending: VecDeque::new(),
        stopping: Box::pin(async move { stopping_state.stopping().await }),
        state,
        last_sent: Position(from.0.saturating_sub(1)),
        done: false,
        named,
        _guard: guard,
    };
    Ok(Sse::new(events(feed))
        .keep_alive(
            KeepAlive::new()
                .interval(KEEP_ALIVE_INTERVAL)
                .text("keep-alive"),
        )
        .into_response())
}

/// One open feed; dropping it (client gone) drops the subscription and its metric guard.
struct Feed<G> {
    sub: Subscription,
    pending: VecDeque<Event>,
    stopping: Pin<Box<dyn Future<Output = ()> + Send>>,
    state: ServerState,
    /// The last position the client was told about (event or checkpoint).
    last_sent: Position,
    /// Nothing more after `pending`.
    done: bool,
    /// Events carry their type as the SSE event name.
    named: bool,
    _guard: G,
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
        self.pending
            .extend(page.events.iter().map(|e| sse_event(e, named)));
        if page.checkpoint > self.last_sent {
            self.last_sent = page.checkpoint;
            self.pending.push_back(
                Event::default()
                    .event("checkpoint")
                    .id(page.checkpoint.0.to_string())
                    .data(format!("{{\"checkpoint\":{}}}", page.checkpoint.0)),
            );
        }
    }
}

fn events<G: Send + 'static>(feed: Feed<G>) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(feed, |mut feed| async move {
        loop {
            if let Some(event) = feed.pending.pop_front() {
                return Some((Ok(event), feed));
            }
            if feed.done {
                return None;
            }
            let page = tokio::select! {
                biased;
                () = &mut feed.stopping => {
                    tracing::debug!("server stopping; ending live feed");
                    return None;
                }
                page = feed.sub.next_page() => page,
            };
            match page {
                Ok(page) => feed.push_page(page),
                Err(EngineError::Stopped(reason)) => {
                    tracing::debug!(%reason, "engine stopped; ending live feed");
                    return None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "live feed failed");
                    feed.pending.push_back(
                        Event::default().event("error").data(
                            serde_json::json!({"error": "internal", "message": e.to_string()})
                                .to_string(),
                        ),
                    );
                    feed.done = true;
                }
            }
        }
    })
}

/// An event as SSE: `id` = position, `event` = type when `named` (left out if the type has a
/// line break, which SSE cannot carry; the data still names it), `data` = its JSON.
fn sse_event(e: &EventRecord, named: bool) -> Event {
    let mut event = Event::default().id(e.position.0.to_string());
    let ty = e.event_type.as_str();
    if named && !ty.contains(['\r', '\n']) {
        event = event.event(ty);
    }
    match serde_json::to_string(&EventJson::from_record(e)) {
        Ok(json) => event.data(json),
        Err(err) => {
            tracing::warn!(error = %err, position = e.position.0, "cannot encode event");
            event.data(format!("{{\"position\":{}}}", e.position.0))
        }
    }
}
