//! `annals bench ui`: what the admin UI's live overview costs the server. One running server
//! (started for the bench with many projections) is loaded by concurrent single-event gRPC
//! appends at a fixed total rate, in rounds of two phases: without any UI client, and with
//! `feeds` open overview pages (each fetches `GET /` once, then holds `GET /status/live`, see
//! [`crate::status_feed`]). The figure is the server process's CPU in % of a core in each phase,
//! read from the kernel's per-thread run time (`/proc/PID/task/*/schedstat`) around it, and
//! their difference. The phases alternate their order from round to round, so neither always
//! runs first.
//!
//! The feed costs the server one snapshot a second (figures, and a row per consumer); at a
//! target of 1% of a core that is 10 ms a second, far below what the load's own CPU varies by on
//! a shared machine. So the caller also measures one snapshot's CPU in its own process
//! (`snapshot_cpu_us`), which resolves it; the end-to-end difference shows nothing else grows.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{BenchError, ensure};
use crate::grpc::{GrpcClient, GrpcServer};
use crate::grpc_append::{BenchClient, GrpcAppendConfig, GrpcAppendRpc, connect, grpc_round};
use crate::grpc_auth::process_cpu_ns;
use crate::measure::{latency_histogram, runtime};
use crate::report::{emit, round2};
use crate::status_feed::{PageSeen, hold_page};

/// Seconds of load before the first round, unmeasured: the projections' first batches and the
/// connections' first calls.
const WARM_UP_SECONDS_MAX: u64 = 2;

/// The settings of `bench ui`.
#[derive(Clone, Debug)]
pub struct UiConfig {
    /// The running server (cleartext), with the projections the caller started it with.
    pub server: GrpcServer,
    /// Its process id, whose CPU time is read.
    pub pid: u32,
    /// Concurrent writers, each appending one event at a time to a stream of its own.
    pub clients: u32,
    /// Appends per second of all writers together, the same in both phases.
    pub rate: u64,
    /// Seconds of load in each phase of a round.
    pub seconds: u64,
    /// Projections the server runs (reported: the caller defined them).
    pub projections: u32,
    /// Open overview pages in the phase with the UI.
    pub feeds: u32,
    pub rounds: u32,
    /// CPU of one status snapshot as the feed makes it (the JSON text included), in µs,
    /// measured in the caller's process with as many projections, each caught up.
    pub snapshot_cpu_us: f64,
    /// The same with every projection a few events behind (each then reads `$all` for the
    /// lag's age).
    pub snapshot_behind_cpu_us: f64,
    pub json: bool,
}

/// One phase of a round.
#[derive(Debug, Default)]
struct Phase {
    events: u64,
    elapsed: Duration,
    cpu_ns: u64,
    seen: PageSeen,
}

impl Phase {
    /// The server's CPU over the phase, in % of one core.
    fn cpu_pct(&self) -> f64 {
        self.cpu_ns as f64 / self.elapsed.as_nanos().max(1) as f64 * 100.0
    }

    fn events_per_s(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

#[derive(Debug, Serialize)]
struct RoundFigures {
    round: u32,
    ui_first: bool,
    no_ui_cpu_pct: f64,
    ui_cpu_pct: f64,
    ui_added_cpu_pct: f64,
    no_ui_events_per_s: f64,
    ui_events_per_s: f64,
    status_events: u64,
    /// The consumers' mean and largest lag (events) in the feed's snapshots.
    feed_lag_events_mean: f64,
    feed_lag_events_max: u64,
}

#[derive(Debug, Serialize)]
struct Figures {
    bench: &'static str,
    clients: u32,
    rate: u64,
    seconds: u64,
    projections: u32,
    feeds: u32,
    rounds: u32,
    per_round: Vec<RoundFigures>,
    /// Medians over the rounds.
    no_ui_cpu_pct: f64,
    ui_cpu_pct: f64,
    ui_added_cpu_pct: f64,
    /// `status` events the feeds delivered in all phases with the UI.
    status_events: u64,
    /// Consumer rows in the last `status` event a feed got.
    consumers_in_feed: u64,
    /// The consumers' mean and largest lag (events) in the feeds' snapshots, over all rounds:
    /// how far behind the head the projections were when a snapshot looked, which is what a
    /// snapshot reads for each (the in-process "behind" figure has each 64 events behind).
    feed_lag_events_mean: f64,
    feed_lag_events_max: u64,
    page_bytes: u64,
    snapshot_cpu_us: f64,
    snapshot_behind_cpu_us: f64,
    /// The feeds' cost from the in-process figure: one snapshot a second per feed (the slower,
    /// behind one), in % of a core.
    feeds_cpu_pct_in_process: f64,
    target_cpu_pct: f64,
}

/// The median of `values` (0 for none).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    match (values.get(mid.wrapping_sub(1)), values.get(mid)) {
        (Some(a), Some(b)) if values.len().is_multiple_of(2) => (a + b) / 2.0,
        (_, Some(m)) => *m,
        _ => 0.0,
    }
}

/// The consumers' mean lag over the snapshots `seen` holds.
fn lag_mean(seen: &PageSeen) -> f64 {
    seen.lag_events_sum as f64 / seen.lag_rows.max(1) as f64
}

/// One phase: `events` appends at `pace` per client, with `feeds` pages open meanwhile; the
/// server's CPU read around all of it (the pages' fetches included).
async fn phase(
    config: &UiConfig,
    clients: &[BenchClient],
    events: u64,
    pace: Duration,
    feeds: u32,
) -> Result<Phase, BenchError> {
    let cpu = process_cpu_ns(config.pid)?;
    let started = Instant::now();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let pages: Vec<_> = (0..feeds)
        .map(|_| tokio::spawn(hold_page(config.server.authority.clone(), stopped.clone())))
        .collect();
    let mut latency_us = latency_histogram();
    let appended = grpc_round(clients, events, Some(pace), &mut latency_us).await;
    // The pages close whether or not the appends went well.
    let _ = stop.send(true);
    let mut seen = PageSeen::default();
    for page in pages {
        let page = page.await.map_err(|e| BenchError::Worker {
            what: "an overview page",
            reason: e.to_string(),
        })??;
        seen.add(&page);
    }
    let events = appended?;
    let elapsed = started.elapsed();
    let cpu_ns = process_cpu_ns(config.pid)?.saturating_sub(cpu);
    Ok(Phase {
        events,
        elapsed,
        cpu_ns,
        seen,
    })
}

pub(crate) fn run(config: &UiConfig) -> Result<(), BenchError> {
    if config.clients == 0 || config.rounds == 0 || config.rate == 0 || config.seconds == 0 {
        return Err(BenchError::Options(
            "--clients, --rounds, --rate and --seconds must be at least 1".to_owned(),
        ));
    }
    if config.feeds == 0 {
        return Err(BenchError::Options("--feeds must be at least 1".to_owned()));
    }
    let load = GrpcAppendConfig {
        server: config.server.clone(),
        clients: config.clients,
        connections: config.clients,
        client: GrpcClient::Annals,
        rpc: GrpcAppendRpc::Append,
        events: config.rate.saturating_mul(config.seconds),
        rounds: config.rounds,
        baseline_dir: None,
        json: config.json,
    };
    let runtime = runtime("the clients")?;
    let clients = runtime.block_on(connect(&load, config.clients))?;
    let pace = Duration::from_secs_f64(f64::from(config.clients) / config.rate as f64);
    let events = config.rate.saturating_mul(config.seconds);
    // The status sampler starts with the first status request and then runs for good: started
    // here, it runs in both phases alike.
    let warm_up = config
        .rate
        .saturating_mul(config.seconds.min(WARM_UP_SECONDS_MAX));
    let warmed = runtime.block_on(phase(config, &clients, warm_up, pace, 1))?;
    ensure(warmed.seen.status_events > 0, || {
        "the status feed delivered nothing in the warm-up".to_owned()
    })?;
    let mut per_round = Vec::new();
    let mut all_seen = PageSeen::default();
    let mut consumers_in_feed = warmed.seen.consumers;
    let mut page_bytes = warmed.seen.page_bytes;
    for round in 0..config.rounds {
        let ui_first = !round.is_multiple_of(2);
        let (no_ui, ui) = if ui_first {
            let ui = runtime.block_on(phase(config, &clients, events, pace, config.feeds))?;
            let no_ui = runtime.block_on(phase(config, &clients, events, pace, 0))?;
            (no_ui, ui)
        } else {
            let no_ui = runtime.block_on(phase(config, &clients, events, pace, 0))?;
            let ui = runtime.block_on(phase(config, &clients, events, pace, config.feeds))?;
            (no_ui, ui)
        };
        consumers_in_feed = ui.seen.consumers;
        page_bytes = ui.seen.page_bytes / u64::from(config.feeds);
        let figures = RoundFigures {
            round: round + 1,
            ui_first,
            no_ui_cpu_pct: round2(no_ui.cpu_pct()),
            ui_cpu_pct: round2(ui.cpu_pct()),
            ui_added_cpu_pct: round2(ui.cpu_pct() - no_ui.cpu_pct()),
            no_ui_events_per_s: round2(no_ui.events_per_s()),
            ui_events_per_s: round2(ui.events_per_s()),
            status_events: ui.seen.status_events,
            feed_lag_events_mean: round2(lag_mean(&ui.seen)),
            feed_lag_events_max: ui.seen.lag_events_max,
        };
        all_seen.add(&ui.seen);
        tracing::info!(
            "bench ui: round {}/{}: server CPU {:.1}% of a core without the UI, {:.1}% with {} feed(s) ({:+.2}), {} status events",
            round + 1,
            config.rounds,
            figures.no_ui_cpu_pct,
            figures.ui_cpu_pct,
            config.feeds,
            figures.ui_added_cpu_pct,
            figures.status_events,
        );
        per_round.push(figures);
    }
    let pick = |f: fn(&RoundFigures) -> f64| round2(median(per_round.iter().map(f).collect()));
    let figures = Figures {
        bench: "ui",
        clients: config.clients,
        rate: config.rate,
        seconds: config.seconds,
        projections: config.projections,
        feeds: config.feeds,
        rounds: config.rounds,
        no_ui_cpu_pct: pick(|r| r.no_ui_cpu_pct),
        ui_cpu_pct: pick(|r| r.ui_cpu_pct),
        ui_added_cpu_pct: pick(|r| r.ui_added_cpu_pct),
        status_events: per_round.iter().map(|r| r.status_events).sum(),
        consumers_in_feed,
        feed_lag_events_mean: round2(lag_mean(&all_seen)),
        feed_lag_events_max: all_seen.lag_events_max,
        page_bytes,
        snapshot_cpu_us: round2(config.snapshot_cpu_us),
        snapshot_behind_cpu_us: round2(config.snapshot_behind_cpu_us),
        // One snapshot a second per feed: 10,000 µs a second is 1% of a core.
        feeds_cpu_pct_in_process: (config.snapshot_cpu_us.max(config.snapshot_behind_cpu_us)
            * f64::from(config.feeds)
            / 10_000.0
            * 1_000.0)
            .round()
            / 1_000.0,
        target_cpu_pct: 1.0,
        per_round,
    };
    emit(&figures, config.json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_the_middle_or_the_mean_of_the_two() {
        assert_eq!(median(vec![]), 0.0);
        assert_eq!(median(vec![3.0]), 3.0);
        assert_eq!(median(vec![5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
