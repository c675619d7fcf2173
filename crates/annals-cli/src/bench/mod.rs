//! `annals bench`: measurements of the engine, each beside a baseline of the same machine taken in
//! the same run (the disk's fsync speed drifts by 10x within minutes, so a figure without its own
//! baseline says little). Latencies go into HDR histograms; progress goes to stderr; the figures go
//! to stdout, with `--json` as exactly one JSON line at the end.

mod append;
mod grpc_append;
mod grpc_replay;
mod probe;
mod project;
mod read_stream;
mod replay;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;

use crate::args::BenchCommand;

pub(crate) fn run(command: BenchCommand) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Append(a) => append::run(&a),
        BenchCommand::Replay(a) => replay::run(&a),
        BenchCommand::ReadStream(a) => read_stream::run(&a),
        BenchCommand::Fill(a) => replay::fill(&a),
        BenchCommand::GrpcAppend(a) => grpc_append::run(&a),
        BenchCommand::GrpcReplay(a) => grpc_replay::run(&a),
        BenchCommand::Project(a) => project::run(&a),
    }
}

/// Size of every benchmark event's data, in bytes.
const EVENT_DATA_BYTES: usize = 200;
/// Type of every benchmark event.
const EVENT_TYPE: &str = "BenchEvent";
/// Longest latency the histograms hold, in microseconds; longer ones are clamped to it.
const LATENCY_US_MAX: u64 = 60_000_000;
/// How often long runs print progress on stderr.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);

/// The data of every benchmark event: a JSON object of exactly [`EVENT_DATA_BYTES`] bytes.
fn event_data() -> Bytes {
    let head = "{\"pad\":\"";
    let tail = "\"}";
    let pad = "x".repeat(EVENT_DATA_BYTES - head.len() - tail.len());
    Bytes::from(format!("{head}{pad}{tail}"))
}

/// A latency histogram in microseconds.
fn latency_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).unwrap_or_else(|_| unreachable!())
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Resident memory of this process in MiB, from `/proc/self/status` (0 where unavailable).
fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Runs `work` while a helper thread prints `label: done/total` on stderr now and then.
fn with_progress<T>(label: &str, total: u64, done: &AtomicU64, work: impl FnOnce() -> T) -> T {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let started = Instant::now();
            let mut last = started;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                if last.elapsed() >= PROGRESS_INTERVAL {
                    last = Instant::now();
                    let n = done.load(Ordering::Relaxed);
                    let secs = started.elapsed().as_secs_f64();
                    eprintln!(
                        "{label}: {n}/{total} ({:.0}/s, {secs:.1} s)",
                        n as f64 / secs
                    );
                }
            }
        });
        let result = work();
        stop.store(true, Ordering::Relaxed);
        result
    })
}

/// The `kurrentdb` connection string for `--server`: a `kurrentdb://` (or `esdb://`) URL as
/// given, or `HOST:PORT` for a cleartext connection.
fn client_url(server: &str) -> String {
    if server.contains("://") {
        server.to_owned()
    } else {
        format!("kurrentdb://{server}?tls=false")
    }
}

/// A `kurrentdb` client for the connection string `url`; connects on first use. Must be called
/// within a tokio runtime, whose tasks carry the client's connection.
fn grpc_client(url: &str) -> anyhow::Result<kurrentdb::Client> {
    let settings: kurrentdb::ClientSettings = url
        .parse()
        .with_context(|| format!("bad server address {url:?}"))?;
    kurrentdb::Client::new(settings).map_err(|e| anyhow::anyhow!("cannot create a client: {e:#}"))
}

/// Annals's lean gRPC client connected to `server` (`HOST:PORT`, cleartext).
async fn lean_client(server: &str) -> anyhow::Result<annals_grpc::client::StreamsClient> {
    if server.contains("://") {
        bail!(
            "--client annals takes the server as HOST:PORT (cleartext); \
             use --client kurrentdb for a connection string"
        );
    }
    Ok(annals_grpc::client::StreamsClient::connect(server).await?)
}

/// A fresh temporary directory for a baseline's store, in `dir` if given (it should be on the
/// same disk as the server's store), else in the system's temporary directory. Removed on drop.
fn baseline_dir(dir: Option<&PathBuf>) -> anyhow::Result<tempfile::TempDir> {
    let builder = tempfile::Builder::new()
        .prefix("annals-bench-baseline-")
        .clone();
    match dir {
        Some(d) => builder
            .tempdir_in(d)
            .with_context(|| format!("cannot create a directory in {}", d.display())),
        None => builder
            .tempdir()
            .context("cannot create a temporary directory"),
    }
}

/// `figure / baseline` to three decimals, 0 without a baseline.
fn ratio(figure: f64, baseline: f64) -> f64 {
    if baseline > 0.0 {
        (figure / baseline * 1000.0).round() / 1000.0
    } else {
        0.0
    }
}

/// Takes up to `want` units from a shared budget; 0 once it is spent.
fn take(remaining: &AtomicU64, want: u64) -> u64 {
    match remaining.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
        (n > 0).then(|| n - n.min(want))
    }) {
        Ok(before) => before.min(want),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_data_is_exact_json() {
        let d = event_data();
        assert_eq!(d.len(), EVENT_DATA_BYTES);
        assert!(serde_json::from_slice::<serde_json::Value>(&d).is_ok());
    }

    #[test]
    fn take_hands_out_the_whole_budget_once() {
        let budget = AtomicU64::new(10);
        assert_eq!(take(&budget, 4), 4);
        assert_eq!(take(&budget, 4), 4);
        assert_eq!(take(&budget, 4), 2);
        assert_eq!(take(&budget, 4), 0);
    }

    #[test]
    fn client_url_defaults_to_cleartext() {
        assert_eq!(
            client_url("127.0.0.1:2113"),
            "kurrentdb://127.0.0.1:2113?tls=false"
        );
        assert_eq!(
            client_url("kurrentdb://localhost:1?tls=true"),
            "kurrentdb://localhost:1?tls=true"
        );
    }

    #[test]
    fn rss_is_read() {
        assert!(rss_mb() > 0.0);
    }
}
