//! The bounds every network API enforces. Their defaults are the `NETWORK_*` constants of
//! [`annals_core::limits`], which says how each relates to the store's own bound. A request over
//! a bound gets a clear error naming the bound and changes nothing.

use annals_core::InputError;
use std::time::Duration;

use annals_core::limits::{
    NETWORK_APPEND_BYTES_MAX, NETWORK_APPEND_EVENTS_MAX, NETWORK_CONNECTIONS_MAX,
    NETWORK_EVENT_BYTES_MAX, NETWORK_FIRST_REQUEST_SECS, NETWORK_IDLE_SECS,
    NETWORK_LIVE_PAGE_INTERVAL_MICROS, NETWORK_PING_SECS, NETWORK_READ_EVENTS_MAX,
    NETWORK_REQUEST_BYTES_MAX, NETWORK_SUBSCRIBER_BLOCKED_SECS, NETWORK_SUBSCRIPTIONS_MAX,
};

/// The bounds of one server.
#[derive(Clone, Debug)]
pub struct Limits {
    pub event_bytes_max: usize,
    pub append_bytes_max: usize,
    pub events_per_append_max: usize,
    pub request_bytes_max: usize,
    pub connections_max: usize,
    pub subscriptions_max: usize,
    pub read_count_max: u64,
    /// A new connection's TLS handshake and first request must arrive within this.
    pub first_request_timeout: Duration,
    /// An established connection with no byte read or written for this long is closed.
    pub idle_timeout: Duration,
    /// How often a quiet HTTP/2 connection is pinged (and how long the answer may take).
    pub ping_interval: Duration,
    /// A live subscription whose client takes no page for this long is ended.
    pub subscriber_blocked_max: Duration,
    /// Shortest time between two pages sent to one live subscriber at the head.
    pub live_page_interval: Duration,
}

impl Limits {
    /// Waits, if need be, until a live subscriber that was sent a page at `sent_at` may be sent
    /// the next ([`Limits::live_page_interval`]).
    pub async fn live_page_pause(&self, sent_at: tokio::time::Instant) {
        tokio::time::sleep_until(sent_at + self.live_page_interval).await;
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            event_bytes_max: NETWORK_EVENT_BYTES_MAX,
            append_bytes_max: NETWORK_APPEND_BYTES_MAX,
            events_per_append_max: NETWORK_APPEND_EVENTS_MAX,
            request_bytes_max: NETWORK_REQUEST_BYTES_MAX,
            connections_max: NETWORK_CONNECTIONS_MAX,
            subscriptions_max: NETWORK_SUBSCRIPTIONS_MAX,
            read_count_max: NETWORK_READ_EVENTS_MAX,
            first_request_timeout: Duration::from_secs(NETWORK_FIRST_REQUEST_SECS),
            idle_timeout: Duration::from_secs(NETWORK_IDLE_SECS),
            ping_interval: Duration::from_secs(NETWORK_PING_SECS),
            subscriber_blocked_max: Duration::from_secs(NETWORK_SUBSCRIBER_BLOCKED_SECS),
            live_page_interval: Duration::from_micros(NETWORK_LIVE_PAGE_INTERVAL_MICROS),
        }
    }
}

/// An append's events counted against the [`Limits`] as they arrive, so every API checks the
/// same bounds the same way before the engine sees anything.
#[derive(Debug, Default)]
pub struct AppendBudget {
    events: usize,
    bytes: usize,
}

impl AppendBudget {
    /// Bytes of the events admitted so far.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Counts one more event of `size` bytes (`NewEvent::size_bytes`).
    pub fn admit(&mut self, limits: &Limits, size: usize) -> Result<(), InputError> {
        let index = self.events;
        self.events += 1;
        if self.events > limits.events_per_append_max {
            return Err(InputError::TooManyEvents {
                count: self.events,
                max: limits.events_per_append_max,
            });
        }
        if size > limits.event_bytes_max {
            return Err(InputError::EventTooLarge {
                index,
                size,
                max: limits.event_bytes_max,
            });
        }
        self.bytes = self.bytes.saturating_add(size);
        if self.bytes > limits.append_bytes_max {
            return Err(InputError::AppendTooLarge {
                size: self.bytes,
                max: limits.append_bytes_max,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_names_the_bound_it_hits() {
        let limits = Limits {
            events_per_append_max: 3,
            event_bytes_max: 100,
            append_bytes_max: 150,
            ..Limits::default()
        };
        let mut b = AppendBudget::default();
        b.admit(&limits, 60).unwrap();
        assert!(matches!(
            b.admit(&limits, 101),
            Err(InputError::EventTooLarge {
                index: 1,
                size: 101,
                max: 100
            })
        ));
        let mut b = AppendBudget::default();
        b.admit(&limits, 80).unwrap();
        assert!(matches!(
            b.admit(&limits, 80),
            Err(InputError::AppendTooLarge {
                size: 160,
                max: 150
            })
        ));
        let mut b = AppendBudget::default();
        for _ in 0..3 {
            b.admit(&limits, 1).unwrap();
        }
        let e = b.admit(&limits, 1).unwrap_err();
        assert_eq!(
            e.to_string(),
            "append has 4 events, over the limit of 3 events per append"
        );
    }
}
