//! The work the benches hand out: the benchmark event (its type, its 200-byte JSON data, a fast
//! random id) and a shared budget of events that concurrent workers take from.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use rand::Rng;

/// Size of every benchmark event's data, in bytes.
pub(crate) const EVENT_DATA_BYTES: usize = 200;
/// Type of every benchmark event.
pub(crate) const EVENT_TYPE: &str = "BenchEvent";

/// The data of every benchmark event: a JSON object of exactly [`EVENT_DATA_BYTES`] bytes.
pub(crate) fn event_data() -> Bytes {
    let head = "{\"pad\":\"";
    let tail = "\"}";
    let pad = "x".repeat(EVENT_DATA_BYTES - head.len() - tail.len());
    Bytes::from(format!("{head}{pad}{tail}"))
}

/// A v4 id from the thread's fast generator: a getrandom syscall per event would load the cores
/// the engine or server uses.
pub(crate) fn random_id() -> uuid::Uuid {
    uuid::Builder::from_random_bytes(rand::rng().random()).into_uuid()
}

/// Takes up to `want` units from a shared budget; 0 once it is spent.
pub(crate) fn take(remaining: &AtomicU64, want: u64) -> u64 {
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
}
