//! The UI's pages: each handler gathers what its page shows (checking what the user may see, as
//! the API would) and renders its template; live values then come from the page's script.

use annals_core::{ALL_STREAM, Direction, Revision, StreamName, StreamRight, SubsecondDigits};
use annals_http::HttpState;
use annals_http::status::{ConsumerRow, consumers, figures, history, sees_consumers};
use annals_server::Principal;
use askama::Template;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;

use crate::assets::UPLOT_VERSION;
use crate::format;

/// Streams a search page lists.
const STREAMS_PAGE: usize = 100;
/// Events a stream page lists.
const EVENTS_PAGE: usize = 50;
/// Parked events a projection page lists.
const FAILURES_SHOWN: usize = 50;

/// What every page's frame shows.
struct Nav {
    title: String,
    active: &'static str,
    user: Option<String>,
    operator: bool,
    uplot: &'static str,
}

impl Nav {
    fn new(state: &HttpState, who: &Principal, title: String, active: &'static str) -> Self {
        Nav {
            title,
            active,
            user: match who {
                Principal::User(_) => Some(who.name().to_owned()),
                _ => None,
            },
            operator: sees_consumers(state, who),
            uplot: UPLOT_VERSION,
        }
    }
}

fn who(state: &HttpState, req: &Request) -> Principal {
    state.server.principal(req.extensions())
}

fn render(page: impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a UI page failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page failed to render",
            )
                .into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "problem.html")]
struct Problem {
    nav: Nav,
    message: String,
}

/// The page of jobs (`what`) that another node runs now: names that node, when known.
fn elsewhere(nav: Nav, what: &str, at: Option<String>) -> Response {
    let message = match at {
        Some(at) => format!("{what} run on another node now: {at}"),
        None => format!("{what} run on another node now"),
    };
    problem(nav, StatusCode::SERVICE_UNAVAILABLE, message)
}

fn problem(nav: Nav, status: StatusCode, message: impl Into<String>) -> Response {
    let mut response = render(Problem {
        nav,
        message: message.into(),
    });
    *response.status_mut() = status;
    response
}

/// A consumer row as the templates show it.
struct RowView {
    kind: &'static str,
    name: String,
    link: String,
    state: String,
    position: u64,
    lag_events: u64,
    lag_seconds: String,
    rate: String,
    parked: u64,
    error: String,
    health: &'static str,
    health_reason: String,
}

fn link_of(row: &ConsumerRow) -> String {
    match row.kind {
        "projection" => format!("/ui/projections/{}", url_segment(&row.name)),
        "subscription" => "/ui/subscriptions".to_owned(),
        _ => "/ui/relays".to_owned(),
    }
}

fn row_view(row: &ConsumerRow) -> RowView {
    RowView {
        kind: row.kind,
        name: row.name.clone(),
        link: link_of(row),
        state: row.state.clone(),
        position: row.position,
        lag_events: row.lag_events,
        lag_seconds: format::seconds(row.lag_seconds),
        rate: format::rate(row.rate),
        parked: row.parked,
        error: row.last_error.clone().unwrap_or_default(),
        health: row.health.as_str(),
        health_reason: row.health_reason.clone(),
    }
}

/// Percent-encodes a path segment (stream names hold anything).
fn url_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b));
            }
            _ => out += &format!("%{b:02X}"),
        }
    }
    out
}

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview {
    nav: Nav,
    head: u64,
    append_rate: String,
    read_rate: String,
    store_size: String,
    connections: i64,
    started_at: u64,
    version: &'static str,
    read_only: Option<String>,
    jobs_elsewhere: Option<String>,
    rows: Vec<RowView>,
    /// `[[unix ms, append rate, read rate], …]`: numbers only.
    history_json: String,
}

/// `GET /`
pub(crate) async fn overview(State(state): State<HttpState>, req: Request) -> Response {
    let who = who(&state, &req);
    let nav = Nav::new(&state, &who, "Overview".to_owned(), "overview");
    let f = figures(&state);
    let rows = match nav.operator {
        true => consumers(&state).await.iter().map(row_view).collect(),
        false => Vec::new(),
    };
    let history_json = json!(
        history(&state)
            .into_iter()
            .map(|(t, w, r)| json!([t, w, r]))
            .collect::<Vec<_>>()
    )
    .to_string();
    render(Overview {
        nav,
        head: f.head,
        append_rate: format::rate(f.append_rate),
        read_rate: format::rate(f.read_rate),
        store_size: format::bytes(f.store_bytes),
        connections: f.connections,
        started_at: f.started_unix_ms,
        version: f.version,
        read_only: f.read_only,
        jobs_elsewhere: f.jobs_elsewhere,
        rows,
        history_json,
    })
}

struct FailureView {
    position: u64,
    stream: String,
    revision: u64,
    event_type: String,
    message: String,
}

#[derive(Template)]
#[template(path = "projection.html")]
struct ProjectionPage {
    nav: Nav,
    name: String,
    url_name: String,
    state: String,
    generation: u32,
    partitions: u32,
    position: u64,
    head: u64,
    lag_events: u64,
    lag_seconds: String,
    rate: String,
    parked: u64,
    last_error: String,
    rebuild: Option<(u32, u64, u64)>,
    failures: Vec<FailureView>,
    tables: Vec<String>,
}

/// `GET /ui/projections/{name}`
pub(crate) async fn projection(
    State(state): State<HttpState>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    let who = who(&state, &req);
    let nav = Nav::new(&state, &who, format!("Projection {name}"), "overview");
    if !nav.operator {
        return problem(
            nav,
            StatusCode::FORBIDDEN,
            "projections are for $admins and $ops",
        );
    }
    let catalog = match state.projections.held() {
        annals_server::Held::Here(catalog) => catalog,
        annals_server::Held::Off => {
            return problem(
                nav,
                StatusCode::NOT_FOUND,
                "this server runs no projections",
            );
        }
        annals_server::Held::Elsewhere(at) => return elsewhere(nav, "projections", at),
    };
    let wanted = name.clone();
    let found = tokio::task::spawn_blocking(move || {
        let projections = catalog.projections();
        let status = projections.status(&wanted)?;
        let failures = projections.failures(&wanted).unwrap_or_default();
        let tables = catalog
            .definitions()
            .into_iter()
            .find(|(n, _)| *n == wanted)
            .and_then(|(_, text)| annals_projections::parse_definitions(&text).ok())
            .and_then(|defs| defs.into_iter().find(|d| d.spec.name == wanted))
            .map(|d| d.spec.tables)
            .unwrap_or_default();
        Ok::<_, annals_projections::ProjectionError>((status, failures, tables))
    })
    .await;
    let (status, failures, tables) = match found {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => return problem(nav, StatusCode::NOT_FOUND, e.to_string()),
        Err(e) => return problem(nav, StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let state_name = serde_json::to_value(status.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    render(ProjectionPage {
        nav,
        url_name: url_segment(&name),
        name,
        state: state_name,
        generation: status.generation,
        partitions: status.partitions,
        position: status.position,
        head: status.head,
        lag_events: status.lag_events,
        lag_seconds: format::seconds(status.lag_seconds),
        rate: format::rate(status.rate_events_per_second),
        parked: status.parked,
        last_error: status.last_error.unwrap_or_default(),
        rebuild: status
            .rebuild
            .map(|r| (r.generation, r.position, r.behind_serving_events)),
        failures: failures
            .into_iter()
            .take(FAILURES_SHOWN)
            .map(|f| FailureView {
                position: f.position.0,
                stream: f.stream,
                revision: f.revision,
                event_type: f.event_type,
                message: f.message,
            })
            .collect(),
        tables,
    })
}

struct GroupView {
    source: String,
    url_source: String,
    group: String,
    url_group: String,
    status: String,
    checkpoint: String,
    in_flight: usize,
    parked: u64,
    connections: Vec<(String, usize)>,
}

#[derive(Template)]
#[template(path = "subscriptions.html")]
struct SubscriptionsPage {
    nav: Nav,
    enabled: bool,
    groups: Vec<GroupView>,
}

/// `GET /ui/subscriptions`
pub(crate) async fn subscriptions(State(state): State<HttpState>, req: Request) -> Response {
    let who = who(&state, &req);
    let nav = Nav::new(
        &state,
        &who,
        "Persistent subscriptions".to_owned(),
        "subscriptions",
    );
    if !nav.operator {
        return problem(
            nav,
            StatusCode::FORBIDDEN,
            "this page is for $admins and $ops",
        );
    }
    if let annals_server::Held::Elsewhere(at) = state.server.persistent.held() {
        return elsewhere(nav, "persistent subscriptions", at);
    }
    let Some(subs) = state.server.persistent.get() else {
        return render(SubscriptionsPage {
            nav,
            enabled: false,
            groups: Vec::new(),
        });
    };
    let groups = subs
        .list(None)
        .await
        .into_iter()
        .map(|g| {
            let source = g.definition.key.source.to_string();
            let group = g.definition.key.group.clone();
            let (status, checkpoint, in_flight, parked, connections) = match &g.state {
                None => ("stopped".to_owned(), String::new(), 0, 0, Vec::new()),
                Some(s) => (
                    if s.live { "live" } else { "catching up" }.to_owned(),
                    s.last_checkpoint.map(|c| c.to_string()).unwrap_or_default(),
                    s.in_flight,
                    s.parked,
                    s.connections
                        .iter()
                        .map(|c| (c.label.name.clone(), c.in_flight))
                        .collect(),
                ),
            };
            GroupView {
                url_source: url_segment(&source),
                url_group: url_segment(&group),
                source,
                group,
                status,
                checkpoint,
                in_flight,
                parked,
                connections,
            }
        })
        .collect();
    render(SubscriptionsPage {
        nav,
        enabled: true,
        groups,
    })
}

struct RelayView {
    name: String,
    url_name: String,
    sink: String,
    endpoint: String,
    state: String,
    position: u64,
    lag_events: u64,
    parked: u64,
    last_error: String,
}

#[derive(Template)]
#[template(path = "relays.html")]
struct RelaysPage {
    nav: Nav,
    relays: Vec<RelayView>,
}

/// `GET /ui/relays`
pub(crate) async fn relays(State(state): State<HttpState>, req: Request) -> Response {
    let who = who(&state, &req);
    let nav = Nav::new(&state, &who, "Relays".to_owned(), "relays");
    if !nav.operator {
        return problem(
            nav,
            StatusCode::FORBIDDEN,
            "this page is for $admins and $ops",
        );
    }
    if let annals_server::Held::Elsewhere(at) = state.relays.held() {
        return elsewhere(nav, "relays", at);
    }
    let mut relays = Vec::new();
    if let Some(r) = state.relays.get() {
        for s in r.list().await {
            relays.push(RelayView {
                url_name: url_segment(&s.name),
                name: s.name,
                sink: s.sink.to_owned(),
                endpoint: s.endpoint,
                state: serde_json::to_value(s.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                position: s.position,
                lag_events: s.lag_events,
                parked: s.parked,
                last_error: s.last_error.unwrap_or_default(),
            });
        }
    }
    render(RelaysPage { nav, relays })
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    nav: Nav,
    auth: bool,
}

/// `GET /ui/users`: the list itself is fetched by the script from `GET /users`, which decides
/// who may see it.
pub(crate) async fn users(State(state): State<HttpState>, req: Request) -> Response {
    let who = who(&state, &req);
    let nav = Nav::new(&state, &who, "Users".to_owned(), "users");
    let auth = state.server.auth.is_some();
    render(UsersPage { nav, auth })
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct StreamsQuery {
    #[serde(default)]
    prefix: String,
    after: Option<String>,
}

struct StreamView {
    name: String,
    link: String,
    last_revision: String,
    last_position: u64,
}

#[derive(Template)]
#[template(path = "streams.html")]
struct StreamsPage {
    nav: Nav,
    prefix: String,
    streams: Vec<StreamView>,
    /// The link to the next page, when there may be one.
    next: Option<String>,
    error: Option<String>,
}

/// `GET /ui/streams?prefix=&after=`
pub(crate) async fn streams(
    State(state): State<HttpState>,
    Query(query): Query<StreamsQuery>,
    req: Request,
) -> Response {
    let who = who(&state, &req);
    let nav = Nav::new(&state, &who, "Streams".to_owned(), "streams");
    let engine = state.server.engine.clone();
    let (prefix, after) = (query.prefix.clone(), query.after.clone());
    let listed = tokio::task::spawn_blocking(move || {
        engine.list_streams(&prefix, after.as_deref(), STREAMS_PAGE)
    })
    .await;
    let (listed, error) = match listed {
        Ok(Ok(l)) => (l, None),
        Ok(Err(e)) => (Vec::new(), Some(e.to_string())),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let next = (listed.len() == STREAMS_PAGE)
        .then(|| listed.last())
        .flatten()
        .map(|s| {
            format!(
                "/ui/streams?prefix={}&after={}",
                url_segment(&query.prefix),
                url_segment(&s.name)
            )
        });
    let streams = listed
        .into_iter()
        .filter(|s| {
            state
                .server
                .check_stream(&who, &s.name, StreamRight::Read)
                .is_ok()
        })
        .map(|s| StreamView {
            link: format!("/ui/streams/{}", url_segment(&s.name)),
            last_revision: s
                .last_revision
                .map_or_else(|| "deleted".to_owned(), |r| r.to_string()),
            last_position: s.last_position.0,
            name: s.name,
        })
        .collect();
    render(StreamsPage {
        nav,
        prefix: query.prefix,
        streams,
        next,
        error,
    })
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct StreamQuery {
    /// The revision to start from; the newest when absent.
    from: Option<u64>,
    /// `backwards` (the default) or `forwards`.
    direction: Option<String>,
}

struct EventView {
    revision: u64,
    position: u64,
    event_type: String,
    id: String,
    created: String,
    link: String,
}

#[derive(Template)]
#[template(path = "stream.html")]
struct StreamPage {
    nav: Nav,
    /// The stream's metadata (`$$stream`), pretty-printed, when it has any the user may read.
    metadata: Option<String>,
    events: Vec<EventView>,
    older: Option<String>,
    newer: Option<String>,
}

/// `GET /ui/streams/{stream}?from=&direction=`
pub(crate) async fn stream(
    State(state): State<HttpState>,
    Path(stream): Path<String>,
    Query(query): Query<StreamQuery>,
    req: Request,
) -> Response {
    let who = who(&state, &req);
    let nav = Nav::new(&state, &who, format!("Stream {stream}"), "streams");
    if let Err(e) = state.server.check_stream(&who, &stream, StreamRight::Read) {
        return problem(nav, StatusCode::FORBIDDEN, e.to_string());
    }
    let name = match StreamName::new(&stream) {
        Ok(n) => n,
        Err(e) => return problem(nav, StatusCode::BAD_REQUEST, e.to_string()),
    };
    let forwards = query.direction.as_deref() == Some("forwards");
    let (direction, from) = match (forwards, query.from) {
        (true, from) => (Direction::Forwards, Revision(from.unwrap_or(0))),
        (false, Some(from)) => (Direction::Backwards, Revision(from)),
        (false, None) => (Direction::Backwards, Revision::END),
    };
    let engine = state.server.engine.clone();
    let meta_stream = format!("$${stream}");
    let may_read_meta = state
        .server
        .check_stream(&who, &meta_stream, StreamRight::Read)
        .is_ok();
    let read = tokio::task::spawn_blocking(move || {
        let metadata = match (may_read_meta, StreamName::new(&meta_stream)) {
            (true, Ok(meta)) => engine
                .last_event(&meta)
                .ok()
                .flatten()
                .map(|e| format::payload(&e.data).0),
            _ => None,
        };
        engine
            .read_stream(&name, from, direction, EVENTS_PAGE)
            .map(|events| (events, metadata))
    })
    .await;
    let (mut events, metadata) = match read {
        Ok(Ok(events)) => events,
        Ok(Err(e)) => return problem(nav, StatusCode::NOT_FOUND, e.to_string()),
        Err(e) => return problem(nav, StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    if forwards {
        events.reverse();
    }
    let url_stream = url_segment(&stream);
    let (newest, oldest) = (
        events.first().map(|e| e.revision.0),
        events.last().map(|e| e.revision.0),
    );
    let older = oldest
        .filter(|r| *r > 0 && (forwards || events.len() == EVENTS_PAGE))
        .map(|r| format!("/ui/streams/{url_stream}?from={}", r - 1));
    let newer = newest
        .filter(|_| query.from.is_some())
        .map(|r| format!("/ui/streams/{url_stream}?direction=forwards&from={}", r + 1));
    let events = events
        .iter()
        .map(|e| EventView {
            revision: e.revision.0,
            position: e.position.0,
            event_type: e.event_type.as_str().to_owned(),
            id: e.id.to_string(),
            created: e.created.rfc3339(SubsecondDigits::Micros),
            link: format!("/ui/streams/{url_stream}/events/{}", e.revision.0),
        })
        .collect();
    render(StreamPage {
        nav,
        metadata,
        events,
        older,
        newer,
    })
}

#[derive(Template)]
#[template(path = "event.html")]
struct EventPage {
    nav: Nav,
    stream: String,
    stream_link: String,
    revision: u64,
    position: u64,
    id: String,
    event_type: String,
    content_type: String,
    created: String,
    data: String,
    data_is_json: bool,
    metadata: String,
}

/// `GET /ui/streams/{stream}/events/{revision}`
pub(crate) async fn event(
    State(state): State<HttpState>,
    Path((stream, revision)): Path<(String, u64)>,
    req: Request,
) -> Response {
    let who = who(&state, &req);
    let nav = Nav::new(
        &state,
        &who,
        format!("Event {revision} of {stream}"),
        "streams",
    );
    if let Err(e) = state.server.check_stream(&who, &stream, StreamRight::Read) {
        return problem(nav, StatusCode::FORBIDDEN, e.to_string());
    }
    let name = match StreamName::new(&stream) {
        Ok(n) => n,
        Err(e) => return problem(nav, StatusCode::BAD_REQUEST, e.to_string()),
    };
    let engine = state.server.engine.clone();
    let read = tokio::task::spawn_blocking(move || {
        engine.read_stream(&name, Revision(revision), Direction::Forwards, 1)
    })
    .await;
    let event = match read {
        Ok(Ok(mut events)) => match events.pop().filter(|e| e.revision.0 == revision) {
            Some(e) => e,
            None => {
                return problem(
                    nav,
                    StatusCode::NOT_FOUND,
                    format!("{stream} has no event {revision}"),
                );
            }
        },
        Ok(Err(e)) => return problem(nav, StatusCode::NOT_FOUND, e.to_string()),
        Err(e) => return problem(nav, StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let (data, data_is_json) = format::payload(&event.data);
    let (metadata, _) = format::payload(&event.metadata);
    render(EventPage {
        nav,
        stream_link: format!("/ui/streams/{}", url_segment(&stream)),
        stream,
        revision,
        position: event.position.0,
        id: event.id.to_string(),
        event_type: event.event_type.as_str().to_owned(),
        content_type: format!("{:?}", event.content_type),
        created: event.created.rfc3339(SubsecondDigits::Micros),
        data,
        data_is_json,
        metadata,
    })
}

#[derive(Template)]
#[template(path = "all.html")]
struct AllPage {
    nav: Nav,
    head: u64,
}

/// `GET /ui/all`
pub(crate) async fn all(State(state): State<HttpState>, req: Request) -> Response {
    let who = who(&state, &req);
    let nav = Nav::new(&state, &who, "$all, live".to_owned(), "all");
    if let Err(e) = state
        .server
        .check_stream(&who, ALL_STREAM, StreamRight::Read)
    {
        return problem(nav, StatusCode::FORBIDDEN, e.to_string());
    }
    let head = state.server.engine.head().0;
    render(AllPage { nav, head })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(url_segment("order-1"), "order-1");
        assert_eq!(url_segment("a b/c?"), "a%20b%2Fc%3F");
        assert_eq!(url_segment("$all"), "%24all");
        assert_eq!(url_segment("é"), "%C3%A9");
    }
}
