//! The status of the whole server in one value, for the admin UI's overview: the head, the
//! append and read rates, store size, connections, and one row per consumer of the log (every
//! projection, persistent-subscription group and relay) with its state, position, lag, rate,
//! parked count, last error and health, the unhealthy first.
//!
//! | Route | What |
//! |---|---|
//! | `GET /status` | one snapshot, with the rates of the last [`HISTORY_SAMPLES`] seconds |
//! | `GET /status/live` | server-sent `status` events: a snapshot whenever it changed, checked every [`STATUS_FEED_INTERVAL`] |
//!
//! One feed carries everything a page shows, so a page holds one connection (browsers allow six
//! per origin over HTTP/1.1). Consumer rows are for operators (`$admins`, `$ops`); other users
//! get the store's figures only. The rates come from one sampler per server, which reads the
//! head and the read counter once a second ([`StatusSampler`]); a snapshot costs one list of
//! each kind of consumer, made at most twice a second and shared by every open feed (operators'
//! and other users' apart), so the feeds cost the server a few of those a second however many
//! pages are open and however fast the store is written.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use annals_server::{Principal, ServerState};
use axum::Json;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::HttpState;
use crate::error::ApiError;
use crate::live::KEEP_ALIVE_INTERVAL;

/// How often a status feed looks for a change.
pub const STATUS_FEED_INTERVAL: Duration = Duration::from_secs(1);

/// Samples of the rates kept (one a second): the charts' ten minutes.
pub const HISTORY_SAMPLES: usize = 600;

/// The seconds a rate is averaged over.
const RATE_SECONDS: usize = 5;

/// Lag past which a consumer that applies nothing counts as stalled.
const STALLED_SECONDS: f64 = 60.0;

/// Lag past which a consumer is shown as behind.
const BEHIND_SECONDS: f64 = 10.0;

/// One sample of the store's counters.
#[derive(Clone, Copy, Debug)]
struct Sample {
    unix_ms: u64,
    head: u64,
    reads: u64,
}

/// Samples the head and the read counter once a second, for the rates and their history. One
/// per server; its task starts with the first request that asks for a status.
#[derive(Debug)]
pub struct StatusSampler {
    samples: Mutex<VecDeque<Sample>>,
    started_ms: u64,
    task: OnceLock<()>,
    /// The last snapshot text the feeds sent, for operators and for other users, with when it
    /// was made: every open feed shares it, so open pages cost the server at most two
    /// snapshots a second in all, not two each.
    shared: tokio::sync::Mutex<[Option<SharedSnapshot>; 2]>,
}

/// A snapshot's JSON text and when it was made.
type SharedSnapshot = (std::time::Instant, Arc<str>);

impl Default for StatusSampler {
    fn default() -> Self {
        Self {
            samples: Mutex::new(VecDeque::with_capacity(HISTORY_SAMPLES)),
            started_ms: unix_ms(),
            task: OnceLock::new(),
            shared: tokio::sync::Mutex::new([None, None]),
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl StatusSampler {
    /// Starts sampling `server` (once; later calls do nothing).
    fn start(self: &Arc<Self>, server: &ServerState) {
        self.task.get_or_init(|| {
            let sampler = Arc::downgrade(self);
            let server = server.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    // The sampler goes with the router that holds it.
                    let Some(sampler) = sampler.upgrade() else {
                        return;
                    };
                    sampler.sample(&server);
                }
            });
        });
        if self.samples.lock().is_empty() {
            self.sample(server);
        }
    }

    fn sample(&self, server: &ServerState) {
        let sample = Sample {
            unix_ms: unix_ms(),
            head: server.engine.head().0,
            reads: server.metrics.read_events_total(),
        };
        let mut samples = self.samples.lock();
        if samples.len() == HISTORY_SAMPLES {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// Append and read rates (events a second) over the last [`RATE_SECONDS`].
    fn rates(&self) -> (f64, f64) {
        let samples = self.samples.lock();
        let (Some(last), Some(first)) = (
            samples.back(),
            samples.get(samples.len().saturating_sub(RATE_SECONDS + 1)),
        ) else {
            return (0.0, 0.0);
        };
        rates_between(first, last)
    }

    /// (unix ms, append rate, read rate) a second over the history.
    fn history(&self) -> Vec<(u64, f64, f64)> {
        let samples = self.samples.lock();
        samples
            .iter()
            .zip(samples.iter().skip(1))
            .map(|(a, b)| {
                let (w, r) = rates_between(a, b);
                (b.unix_ms, w, r)
            })
            .collect()
    }
}

fn rates_between(first: &Sample, last: &Sample) -> (f64, f64) {
    let seconds = last.unix_ms.saturating_sub(first.unix_ms) as f64 / 1_000.0;
    if seconds <= 0.0 {
        return (0.0, 0.0);
    }
    (
        last.head.saturating_sub(first.head) as f64 / seconds,
        last.reads.saturating_sub(first.reads) as f64 / seconds,
    )
}

/// How a consumer is doing, worst first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Health {
    Error,
    Warning,
    Paused,
    Ok,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Error => "error",
            Health::Warning => "warning",
            Health::Paused => "paused",
            Health::Ok => "ok",
        }
    }
}

/// One consumer of the log, as the overview lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct ConsumerRow {
    /// `projection`, `subscription` or `relay`.
    pub kind: &'static str,
    pub name: String,
    pub state: String,
    pub position: u64,
    pub lag_events: u64,
    pub lag_seconds: f64,
    pub rate: f64,
    pub parked: u64,
    pub last_error: Option<String>,
    pub health: Health,
    /// Why the health is what it is, in words.
    pub health_reason: String,
    /// A projection's serving generation.
    pub generation: Option<u32>,
    /// A projection's rebuild under way: (generation, position, events behind the serving one).
    pub rebuild: Option<(u32, u64, u64)>,
}

impl ConsumerRow {
    fn to_json(&self) -> Value {
        json!({
            "kind": self.kind,
            "name": self.name,
            "state": self.state,
            "position": self.position,
            "lagEvents": self.lag_events,
            "lagSeconds": self.lag_seconds,
            "rate": self.rate,
            "parked": self.parked,
            "lastError": self.last_error,
            "health": self.health.as_str(),
            "healthReason": self.health_reason,
            "generation": self.generation,
            "rebuild": self.rebuild.map(|(generation, position, behind)| json!({
                "generation": generation,
                "position": position,
                "behindServing": behind,
            })),
        })
    }
}

/// Health from what every consumer reports.
fn judge(
    state: &str,
    lag_events: u64,
    lag_seconds: f64,
    rate: f64,
    parked: u64,
    last_error: Option<&str>,
) -> (Health, String) {
    match state {
        "faulted" => return (Health::Error, "faulted".to_owned()),
        "stopped" => return (Health::Error, "stopped".to_owned()),
        "paused" => return (Health::Paused, "paused".to_owned()),
        "backing_off" => return (Health::Warning, "every endpoint is down".to_owned()),
        "failed_over" => return (Health::Warning, "failed over".to_owned()),
        _ => {}
    }
    if lag_events > 0 && rate == 0.0 && lag_seconds > STALLED_SECONDS {
        return (
            Health::Error,
            format!("stalled: nothing applied for {lag_seconds:.0} s"),
        );
    }
    if let Some(e) = last_error {
        return (Health::Warning, format!("error: {e}"));
    }
    if parked > 0 {
        return (Health::Warning, format!("{parked} parked"));
    }
    if lag_seconds > BEHIND_SECONDS {
        return (Health::Warning, format!("{lag_seconds:.0} s behind"));
    }
    (Health::Ok, "ok".to_owned())
}

/// Every consumer of the log this server runs, unhealthy first, then by kind and name.
pub async fn consumers(state: &HttpState) -> Vec<ConsumerRow> {
    let mut rows = Vec::new();
    if let Some(catalog) = state.projections.get() {
        let list = tokio::task::spawn_blocking(move || catalog.projections().list())
            .await
            .unwrap_or_default();
        for p in list {
            let state_name = serde_json::to_value(p.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let (health, reason) = judge(
                &state_name,
                p.lag_events,
                p.lag_seconds,
                p.rate_events_per_second,
                p.parked,
                p.last_error.as_deref(),
            );
            rows.push(ConsumerRow {
                kind: "projection",
                name: p.name,
                state: state_name,
                position: p.position,
                lag_events: p.lag_events,
                lag_seconds: p.lag_seconds,
                rate: p.rate_events_per_second,
                parked: p.parked,
                last_error: p.last_error,
                health,
                health_reason: reason,
                generation: Some(p.generation),
                rebuild: p
                    .rebuild
                    .map(|r| (r.generation, r.position, r.behind_serving_events)),
            });
        }
    }
    if let Some(subs) = state.server.persistent.get() {
        for g in subs.list(None).await {
            let d = &g.definition;
            let name = format!("{}::{}", d.key.source, d.key.group);
            let Some(s) = &g.state else {
                rows.push(ConsumerRow {
                    kind: "subscription",
                    name,
                    state: "stopped".to_owned(),
                    position: 0,
                    lag_events: 0,
                    lag_seconds: 0.0,
                    rate: 0.0,
                    parked: 0,
                    last_error: None,
                    health: Health::Warning,
                    health_reason: "stopped".to_owned(),
                    generation: None,
                    rebuild: None,
                });
                continue;
            };
            let position = s.last_checkpoint.unwrap_or(0);
            let known = s.last_known.unwrap_or(position);
            let lag = known.saturating_sub(position);
            let parked = s.parked;
            let (health, reason) = judge(
                if s.live { "live" } else { "catching up" },
                lag,
                0.0,
                1.0,
                parked,
                None,
            );
            rows.push(ConsumerRow {
                kind: "subscription",
                name,
                state: if s.live { "live" } else { "catching up" }.to_owned(),
                position,
                lag_events: lag,
                lag_seconds: 0.0,
                rate: 0.0,
                parked,
                last_error: None,
                health,
                health_reason: reason,
                generation: None,
                rebuild: None,
            });
        }
    }
    if let Some(relays) = state.relays.get() {
        for r in relays.list().await {
            let state_name = serde_json::to_value(r.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let (health, reason) = judge(
                &state_name,
                r.lag_events,
                r.lag_seconds,
                r.rate,
                r.parked,
                r.last_error.as_deref(),
            );
            rows.push(ConsumerRow {
                kind: "relay",
                name: r.name,
                state: state_name,
                position: r.position,
                lag_events: r.lag_events,
                lag_seconds: r.lag_seconds,
                rate: r.rate,
                parked: r.parked,
                last_error: r.last_error,
                health,
                health_reason: reason,
                generation: None,
                rebuild: None,
            });
        }
    }
    rows.sort_by(|a, b| {
        (a.health, a.kind, &a.name)
            .partial_cmp(&(b.health, b.kind, &b.name))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    rows
}

/// The store's own figures.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreFigures {
    pub head: u64,
    pub append_rate: f64,
    pub read_rate: f64,
    pub store_bytes: u64,
    pub connections: i64,
    pub started_unix_ms: u64,
    pub version: &'static str,
    pub read_only: Option<String>,
    /// With the store in PostgreSQL: the node that runs the projections, relays and persistent
    /// subscriptions when it is not this one (its address, or "another node" while unknown).
    pub jobs_elsewhere: Option<String>,
}

/// The store's figures now (starting the sampler if need be).
pub fn figures(state: &HttpState) -> StoreFigures {
    state.status.start(&state.server);
    let (append_rate, read_rate) = state.status.rates();
    let engine = &state.server.engine;
    StoreFigures {
        head: engine.head().0,
        append_rate,
        read_rate,
        store_bytes: engine.log().bytes(),
        connections: state.server.metrics.connections_active(),
        started_unix_ms: state.status.started_ms,
        version: env!("CARGO_PKG_VERSION"),
        read_only: engine.write_failure(),
        jobs_elsewhere: match state.projections.held() {
            annals_server::Held::Elsewhere(at) => {
                Some(at.unwrap_or_else(|| "another node".to_owned()))
            }
            annals_server::Held::Here(_) | annals_server::Held::Off => None,
        },
    }
}

/// The rates of the last [`HISTORY_SAMPLES`] seconds: (unix ms, append rate, read rate).
pub fn history(state: &HttpState) -> Vec<(u64, f64, f64)> {
    state.status.start(&state.server);
    state.status.history()
}

/// Whether `who` sees the consumers (operators do; everyone without auth).
pub fn sees_consumers(state: &HttpState, who: &Principal) -> bool {
    state
        .server
        .check_operator(who, "status of consumers")
        .is_ok()
}

/// A snapshot as JSON: the figures, and the consumers for an operator.
pub async fn snapshot(state: &HttpState, operator: bool) -> Value {
    let f = figures(state);
    let consumers: Vec<Value> = match operator {
        true => consumers(state)
            .await
            .iter()
            .map(ConsumerRow::to_json)
            .collect(),
        false => Vec::new(),
    };
    json!({
        "head": f.head,
        "appendRate": f.append_rate,
        "readRate": f.read_rate,
        "storeBytes": f.store_bytes,
        "connections": f.connections,
        "startedAt": f.started_unix_ms,
        "version": f.version,
        "readOnly": f.read_only,
        "jobsElsewhere": f.jobs_elsewhere,
        "consumers": consumers,
    })
}

fn principal(state: &HttpState, parts: &axum::http::Extensions) -> Principal {
    state.server.principal(parts)
}

/// `GET /status`
pub(crate) async fn status(
    State(state): State<HttpState>,
    req: axum::extract::Request,
) -> Result<Json<Value>, ApiError> {
    let operator = sees_consumers(&state, &principal(&state, req.extensions()));
    let mut value = snapshot(&state, operator).await;
    let history: Vec<Value> = history(&state)
        .into_iter()
        .map(|(t, w, r)| json!([t, w, r]))
        .collect();
    if let Some(map) = value.as_object_mut() {
        map.insert("history".to_owned(), Value::Array(history));
    }
    Ok(Json(value))
}

/// `GET /status/live`
pub(crate) async fn live(State(state): State<HttpState>, req: axum::extract::Request) -> Response {
    let operator = sees_consumers(&state, &principal(&state, req.extensions()));
    Sse::new(feed(state, operator))
        .keep_alive(
            KeepAlive::new()
                .interval(KEEP_ALIVE_INTERVAL)
                .text("keep-alive"),
        )
        .into_response()
}

/// How long a snapshot the feeds share is reused.
const SHARED_SNAPSHOT_FRESH: Duration = Duration::from_millis(500);

/// The snapshot text for a feed: the one another feed made in the last
/// [`SHARED_SNAPSHOT_FRESH`], or a new one (made by one feed while the others wait for it).
async fn shared_snapshot(state: &HttpState, operator: bool) -> Arc<str> {
    let mut shared = state.status.shared.lock().await;
    let slot = shared.get_mut(usize::from(operator));
    if let Some(Some((made, text))) = slot.as_deref()
        && made.elapsed() < SHARED_SNAPSHOT_FRESH
    {
        return Arc::clone(text);
    }
    let text: Arc<str> = Arc::from(snapshot(state, operator).await.to_string());
    if let Some(slot) = slot {
        *slot = Some((std::time::Instant::now(), Arc::clone(&text)));
    }
    text
}

/// Snapshots that differ from the one sent before, looked for every [`STATUS_FEED_INTERVAL`].
fn feed(state: HttpState, operator: bool) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(
        (state, None::<Arc<str>>, true),
        move |(state, last, first)| async move {
            if !first {
                tokio::time::sleep(STATUS_FEED_INTERVAL).await;
            }
            let mut last = last;
            loop {
                let text = shared_snapshot(&state, operator).await;
                if last.as_deref() != Some(&*text) {
                    let event = Event::default().event("status").data(&*text);
                    return Some((Ok(event), (state, Some(text), false)));
                }
                last = Some(text);
                tokio::time::sleep(STATUS_FEED_INTERVAL).await;
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_puts_faults_and_stalls_first() {
        assert_eq!(judge("faulted", 0, 0.0, 0.0, 0, None).0, Health::Error);
        assert_eq!(judge("stopped", 0, 0.0, 0.0, 0, None).0, Health::Error);
        assert_eq!(
            judge("backing_off", 0, 0.0, 0.0, 0, None).0,
            Health::Warning
        );
        assert_eq!(judge("running", 10, 120.0, 0.0, 0, None).0, Health::Error);
        assert_eq!(judge("running", 10, 120.0, 5.0, 0, None).0, Health::Warning);
        assert_eq!(judge("running", 0, 0.0, 0.0, 2, None).0, Health::Warning);
        assert_eq!(
            judge("running", 0, 0.0, 0.0, 0, Some("target down")).0,
            Health::Warning
        );
        assert_eq!(judge("paused", 5, 500.0, 0.0, 0, None).0, Health::Paused);
        assert_eq!(judge("running", 3, 0.5, 10.0, 0, None).0, Health::Ok);
        assert!(Health::Error < Health::Warning && Health::Warning < Health::Ok);
    }

    /// Feeds open at once share one snapshot (the same text, made once) until it is
    /// [`SHARED_SNAPSHOT_FRESH`] old; operators' and other users' are apart.
    #[tokio::test]
    async fn open_feeds_share_one_snapshot() {
        let engine = annals_engine::Engine::open(
            Arc::new(annals_log::FaultStorage::new()),
            annals_engine::EngineConfig::default(),
        )
        .unwrap()
        .0;
        let server = ServerState::new(engine.clone(), annals_server::Limits::default());
        let state = HttpState::new(server, None, None);
        let a = shared_snapshot(&state, true).await;
        let b = shared_snapshot(&state, true).await;
        assert!(Arc::ptr_eq(&a, &b));
        let other = shared_snapshot(&state, false).await;
        assert!(!Arc::ptr_eq(&a, &other));
        tokio::time::sleep(SHARED_SNAPSHOT_FRESH + Duration::from_millis(50)).await;
        let c = shared_snapshot(&state, true).await;
        assert!(!Arc::ptr_eq(&a, &c), "made again once stale");
        engine.close();
    }

    #[test]
    fn rates_come_from_the_samples_around_them() {
        let a = Sample {
            unix_ms: 1_000,
            head: 100,
            reads: 0,
        };
        let b = Sample {
            unix_ms: 3_000,
            head: 300,
            reads: 1_000,
        };
        assert_eq!(rates_between(&a, &b), (100.0, 500.0));
        assert_eq!(rates_between(&b, &b), (0.0, 0.0));
    }
}
