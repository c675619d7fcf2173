//! What a projection reports about itself: position, lag, rate, state, errors, rebuild progress.
//!
//! These are plain serializable values so the server can answer them as JSON; the runtime fills
//! them from counters its workers update after every commit (see `runtime`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

/// What a projection is doing.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ProjectionState {
    /// Following the log.
    Running,
    /// Paused by a command; resumes where it stopped.
    Paused,
    /// Serving, while a new generation is built beside it.
    Rebuilding,
    /// An event failed under the `stop` policy (or a rebuild did); `resume` retries it.
    Faulted,
    /// The runtime shut down.
    Stopped,
}

/// A generation being built by a rebuild.
#[derive(Clone, PartialEq, Debug, Serialize)]
pub struct RebuildStatus {
    pub generation: u32,
    /// Low-watermark of the new generation's partitions.
    pub position: u64,
    /// Events between the new generation and the serving one.
    pub behind_serving_events: u64,
}

/// One projection's status.
#[derive(Clone, PartialEq, Debug, Serialize)]
pub struct ProjectionStatus {
    pub name: String,
    pub state: ProjectionState,
    /// The serving generation.
    pub generation: u32,
    pub partitions: u32,
    /// Every event up to here is applied, skipped or parked (the lowest partition checkpoint).
    pub position: u64,
    /// The store's head when the status was taken.
    pub head: u64,
    /// `head - position`: positions of `$all` not yet considered (filtered-out ones included).
    pub lag_events: u64,
    /// Age of the oldest event the projection has not yet applied; 0 when caught up.
    pub lag_seconds: f64,
    /// Events applied per second over the last [`RATE_WINDOW`].
    pub rate_events_per_second: f64,
    /// Events parked in the serving generation.
    pub parked: u64,
    /// The last error: a fault, or the error being retried (target unavailable).
    pub last_error: Option<String>,
    pub rebuild: Option<RebuildStatus>,
}

/// How far back the rate looks.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);
/// Commit samples the rate keeps (oldest dropped first).
const RATE_SAMPLES_MAX: usize = 256;

/// Events applied over time, sampled at each commit.
#[derive(Debug, Default)]
pub(crate) struct Rate {
    total: u64,
    samples: VecDeque<(Instant, u64)>,
}

impl Rate {
    pub(crate) fn record(&mut self, events: u64, now: Instant) {
        if self.samples.is_empty() {
            self.samples.push_back((now, self.total));
        }
        self.total += events;
        while self.samples.len() >= RATE_SAMPLES_MAX
            || self
                .samples
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        self.samples.push_back((now, self.total));
    }

    /// Events per second within the window ending now.
    pub(crate) fn per_second(&self, now: Instant) -> f64 {
        let Some(&(first_at, first_total)) = self
            .samples
            .iter()
            .find(|(t, _)| now.duration_since(*t) <= RATE_WINDOW)
        else {
            return 0.0;
        };
        let elapsed = now.duration_since(first_at).as_secs_f64();
        if elapsed <= 0.0 {
            return 0.0;
        }
        (self.total - first_total) as f64 / elapsed.max(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_counts_recent_events_only() {
        let start = Instant::now();
        let mut rate = Rate::default();
        rate.record(100, start);
        rate.record(100, start + Duration::from_secs(2));
        let r = rate.per_second(start + Duration::from_secs(2));
        assert!((r - 100.0).abs() < 1e-9, "{r}");
        assert_eq!(rate.per_second(start + Duration::from_secs(60)), 0.0);
    }
}
