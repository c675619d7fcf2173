//! `annals bench`: measurements of the engine, each beside a baseline of the same machine taken in
//! the same run (the disk's fsync speed drifts by 10x within minutes, so a figure without its own
//! baseline says little). Latencies go into HDR histograms; progress goes to stderr; the figures go
//! to stdout, with `--json` as exactly one JSON line at the end.

mod append;
mod probe;
mod read_stream;
mod replay;
mod report;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;

use crate::args::BenchCommand;

pub(crate) fn run(command: BenchCommand) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Append(a) => append::run(&a),
        BenchCommand::Replay(a) => replay::run(&a),
        BenchCommand::ReadStream(a) => read_stream::run(&a),
        BenchCommand::Fill(a) => replay::fill(&a),
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
    fn rss_is_read() {
        assert!(rss_mb() > 0.0);
    }
}
