//! Prometheus metrics of the network APIs (served as text at `/metrics` by the HTTP API): appends
//! and their latency, reads, subscriptions, connections and the head position (all prefixed
//! `annals_`), and the standard process metrics (`process_…`, [`crate::process`]).

use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::EncodeLabelValue;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Which API served a request.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Api {
    Grpc,
    Http,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabel {
    api: Api,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    api: Api,
    outcome: &'static str,
}

/// The outcomes of an append the metrics know; each has its counter looked up once.
const APPEND_OUTCOMES: [&str; 4] = ["ok", "wrong_expected_version", "rejected", "error"];

/// One API's series, looked up in their families once: counting an append or a read is then a
/// few atomic adds, with no label hashing or family lock on the request path.
#[derive(Clone, Debug)]
struct ApiSeries {
    appends: [(&'static str, Counter); 4],
    append_events: Counter,
    append_seconds: Histogram,
    reads: Counter,
    read_events: Counter,
}

impl ApiSeries {
    fn new(
        api: Api,
        appends: &Family<OutcomeLabel, Counter>,
        append_events: &Family<ApiLabel, Counter>,
        append_seconds: &Family<ApiLabel, Histogram>,
        reads: &Family<ApiLabel, Counter>,
        read_events: &Family<ApiLabel, Counter>,
    ) -> Self {
        let label = ApiLabel { api };
        Self {
            appends: APPEND_OUTCOMES.map(|outcome| {
                (
                    outcome,
                    appends
                        .get_or_create(&OutcomeLabel { api, outcome })
                        .clone(),
                )
            }),
            append_events: append_events.get_or_create(&label).clone(),
            append_seconds: append_seconds.get_or_create(&label).clone(),
            reads: reads.get_or_create(&label).clone(),
            read_events: read_events.get_or_create(&label).clone(),
        }
    }
}

/// Counters, gauges and histograms; every method is cheap and never fails.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// For an outcome outside [`APPEND_OUTCOMES`] (the registry holds the other families).
    appends: Family<OutcomeLabel, Counter>,
    subscriptions_active: Family<ApiLabel, Gauge>,
    subscriptions: Family<ApiLabel, Counter>,
    connections_active: Gauge,
    connections_refused: Counter,
    connections_accepted: Counter,
    connections_closed_silent: Counter,
    connections_closed_idle: Counter,
    head_position: Gauge,
    read_only: Gauge,
    grpc: ApiSeries,
    http: ApiSeries,
    /// Serializes rendering (the registry encodes through `&self`, the head is set just before).
    render: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut root = Registry::default();
        root.register_collector(Box::new(crate::process::ProcessCollector));
        let registry = root.sub_registry_with_prefix("annals");
        let appends = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "appends",
            "Appends answered, by API and outcome (ok, wrong_expected_version, rejected, error)",
            appends.clone(),
        );
        let append_events = Family::<ApiLabel, Counter>::default();
        registry.register("append_events", "Events appended", append_events.clone());
        let append_seconds = Family::<ApiLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
        });
        registry.register(
            "append_duration_seconds",
            "Time from an append's arrival to its answer",
            append_seconds.clone(),
        );
        let reads = Family::<ApiLabel, Counter>::default();
        registry.register("reads", "Read requests", reads.clone());
        let read_events = Family::<ApiLabel, Counter>::default();
        registry.register(
            "read_events",
            "Events returned by reads",
            read_events.clone(),
        );
        let subscriptions_active = Family::<ApiLabel, Gauge>::default();
        registry.register(
            "subscriptions_active",
            "Live subscriptions",
            subscriptions_active.clone(),
        );
        let subscriptions = Family::<ApiLabel, Counter>::default();
        registry.register(
            "subscriptions",
            "Subscriptions started",
            subscriptions.clone(),
        );
        let connections_active = Gauge::default();
        registry.register(
            "connections_active",
            "Open client connections",
            connections_active.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "Connections closed at once because the connection limit was reached",
            connections_refused.clone(),
        );
        let connections_accepted = Counter::default();
        registry.register(
            "connections_accepted",
            "Connections accepted (within the connection limit)",
            connections_accepted.clone(),
        );
        let connections_closed_silent = Counter::default();
        registry.register(
            "connections_closed_silent",
            "Connections closed for sending no request within the first-request timeout",
            connections_closed_silent.clone(),
        );
        let connections_closed_idle = Counter::default();
        registry.register(
            "connections_closed_idle",
            "Connections closed for moving no byte within the idle timeout",
            connections_closed_idle.clone(),
        );
        let head_position = Gauge::default();
        registry.register(
            "head_position",
            "Global position of the last durable event",
            head_position.clone(),
        );
        let read_only = Gauge::default();
        registry.register(
            "read_only",
            "1 once the store stopped taking writes after a failed write or sync, else 0",
            read_only.clone(),
        );
        let [grpc, http] = [Api::Grpc, Api::Http].map(|api| {
            ApiSeries::new(
                api,
                &appends,
                &append_events,
                &append_seconds,
                &reads,
                &read_events,
            )
        });
        Self {
            grpc,
            http,
            registry: root,
            appends,
            subscriptions_active,
            subscriptions,
            connections_active,
            connections_refused,
            connections_accepted,
            connections_closed_silent,
            connections_closed_idle,
            head_position,
            read_only,
            render: Mutex::new(()),
        }
    }

    fn series(&self, api: Api) -> &ApiSeries {
        match api {
            Api::Grpc => &self.grpc,
            Api::Http => &self.http,
        }
    }

    /// One append answered: `outcome` is `ok`, `wrong_expected_version`, `rejected` (bad input,
    /// deleted stream, limits) or `error`.
    pub fn append(&self, api: Api, outcome: &'static str, events: u64, took: Duration) {
        let series = self.series(api);
        match series.appends.iter().find(|(o, _)| *o == outcome) {
            Some((_, counter)) => {
                counter.inc();
            }
            None => {
                self.appends
                    .get_or_create(&OutcomeLabel { api, outcome })
                    .inc();
            }
        }
        if outcome == "ok" {
            series.append_events.inc_by(events);
        }
        series.append_seconds.observe(took.as_secs_f64());
    }

    /// One read returned `events` events.
    pub fn read(&self, api: Api, events: u64) {
        let series = self.series(api);
        series.reads.inc();
        series.read_events.inc_by(events);
    }

    /// Events sent to a subscriber.
    pub fn subscription_events(&self, api: Api, events: u64) {
        self.series(api).read_events.inc_by(events);
    }

    /// A subscription started; the guard counts it as active until dropped.
    pub fn subscription_started(&self, api: Api) -> ActiveGuard {
        self.subscriptions.get_or_create(&ApiLabel { api }).inc();
        let gauge = self
            .subscriptions_active
            .get_or_create(&ApiLabel { api })
            .clone();
        gauge.inc();
        ActiveGuard { gauge }
    }

    /// Live subscriptions over every API.
    pub fn subscriptions_active(&self) -> i64 {
        [Api::Grpc, Api::Http]
            .iter()
            .map(|&api| {
                self.subscriptions_active
                    .get_or_create(&ApiLabel { api })
                    .get()
            })
            .sum()
    }

    /// Events read and sent to subscribers so far, over every API.
    pub fn read_events_total(&self) -> u64 {
        self.grpc.read_events.get() + self.http.read_events.get()
    }

    /// Open connections.
    pub fn connections_active(&self) -> i64 {
        self.connections_active.get()
    }

    pub(crate) fn connection_opened(&self) -> ActiveGuard {
        self.connections_accepted.inc();
        let gauge = self.connections_active.clone();
        gauge.inc();
        ActiveGuard { gauge }
    }

    pub(crate) fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// A connection closed by its watchdog: `idle` after requests, else for sending none.
    pub(crate) fn connection_timed_out(&self, idle: bool) {
        if idle {
            self.connections_closed_idle.inc();
        } else {
            self.connections_closed_silent.inc();
        }
    }

    /// The Prometheus text exposition of every metric, with the head position as of now.
    pub fn render(&self, head_position: u64, read_only: bool) -> String {
        let _guard = self.render.lock();
        self.head_position
            .set(i64::try_from(head_position).unwrap_or(i64::MAX));
        self.read_only.set(i64::from(read_only));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Keeps a gauge one higher while alive.
#[derive(Debug)]
pub struct ActiveGuard {
    gauge: Gauge,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_counts_appends_and_active_subscriptions() {
        let m = Metrics::new();
        m.append(Api::Grpc, "ok", 3, Duration::from_millis(1));
        m.append(
            Api::Http,
            "wrong_expected_version",
            1,
            Duration::from_millis(1),
        );
        let guard = m.subscription_started(Api::Http);
        let text = m.render(42, false);
        assert!(
            text.contains("annals_append_events_total{api=\"Grpc\"} 3"),
            "{text}"
        );
        assert!(
            text.contains(
                "annals_appends_total{api=\"Http\",outcome=\"wrong_expected_version\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("annals_head_position 42"), "{text}");
        assert_eq!(m.subscriptions_active(), 1);
        drop(guard);
        assert_eq!(m.subscriptions_active(), 0);
    }
}
