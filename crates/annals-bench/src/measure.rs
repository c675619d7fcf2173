//! The measuring every bench shares: latency histograms in microseconds, figure/baseline ratios,
//! resident memory, progress logged while long work runs, and the async runtime the workers run
//! on.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::error::{BenchError, Context};

/// Longest latency the histograms hold, in microseconds; longer ones are clamped to it.
const LATENCY_US_MAX: u64 = 60_000_000;
/// How often long runs log progress.
const BENCH_PROGRESS_INTERVAL: Duration = Duration::from_secs(2);
/// Worker threads of the benches' async runtimes: one per core of the machine the targets are
/// set for. Many writers are tasks on these rather than OS threads, whose wake-ups would dominate
/// on 2 cores.
const RUNTIME_THREADS: usize = 2;

/// A latency histogram in microseconds.
#[expect(
    clippy::expect_used,
    reason = "the bounds are constants hdrhistogram accepts (low >= 1, high >= 2 * low, 3 digits)"
)]
pub(crate) fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("constant histogram bounds")
}

/// Adds `part` to `total`; both come from [`latency_histogram`], so they always fit.
pub(crate) fn merge(total: &mut Histogram<u64>, part: &Histogram<u64>) -> Result<(), BenchError> {
    total
        .add(part)
        .map_err(|e| BenchError::Check(format!("merging latency histograms: {e}")))
}

pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// `figure / baseline` to three decimals, 0 without a baseline.
pub(crate) fn ratio(figure: f64, baseline: f64) -> f64 {
    if baseline > 0.0 {
        (figure / baseline * 1000.0).round() / 1000.0
    } else {
        0.0
    }
}

/// Resident memory of this process in MiB, from `/proc/self/status` (0 where unavailable).
pub(crate) fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU time this process has used so far (user and system, every thread), from
/// `/proc/self/stat`; zero where unavailable. Its unit is the kernel's clock tick (10 ms on
/// Linux), so only phases of a second or more are measured well.
pub(crate) fn process_cpu() -> Duration {
    /// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), 100 on every Linux this runs on.
    const TICKS_PER_S: u64 = 100;
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name (field 2) may hold spaces; the fields after it follow its `)`.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let ticks = tick(11) + tick(12);
    Duration::from_millis(ticks * 1_000 / TICKS_PER_S)
}

/// A multi-threaded tokio runtime of [`RUNTIME_THREADS`] workers for `what`.
pub(crate) fn runtime(what: &str) -> Result<tokio::runtime::Runtime, BenchError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(RUNTIME_THREADS)
        .enable_all()
        .build()
        .context(|| format!("starting the runtime of {what}"))
}

/// Runs `work` while a helper thread logs `label: done/total` now and then.
pub(crate) fn with_progress<T>(
    label: &str,
    total: u64,
    done: &AtomicU64,
    work: impl FnOnce() -> T,
) -> T {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let started = Instant::now();
            let mut last = started;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                if last.elapsed() >= BENCH_PROGRESS_INTERVAL {
                    last = Instant::now();
                    let n = done.load(Ordering::Relaxed);
                    let secs = started.elapsed().as_secs_f64();
                    tracing::info!(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_read() {
        assert!(rss_mb() > 0.0);
    }

    #[test]
    fn ratio_is_rounded_and_zero_without_a_baseline() {
        assert_eq!(ratio(1.0, 3.0), 0.333);
        assert_eq!(ratio(1.0, 0.0), 0.0);
    }
}
