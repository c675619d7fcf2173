//! The bounds every network API enforces, with their defaults. A request over a bound gets a clear
//! error naming the bound and changes nothing.

/// Most bytes of one event (data + metadata + type).
pub const EVENT_BYTES_MAX: usize = 1024 * 1024;
/// Most bytes of one append (all its events). Below the log's 16 MiB batch bound.
pub const APPEND_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Most events in one append.
pub const EVENTS_PER_APPEND_MAX: usize = 10_000;
/// Most bytes of one request body or gRPC message.
pub const REQUEST_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Most open connections; further connections are closed at once, with a warning logged.
pub const CONNECTIONS_MAX: usize = 1_024;
/// Most live subscriptions (gRPC and server-sent events together).
pub const SUBSCRIPTIONS_MAX: usize = 1_024;
/// Most events one read returns, whatever count it asks for.
pub const READ_COUNT_MAX: u64 = 100_000;

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
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            event_bytes_max: EVENT_BYTES_MAX,
            append_bytes_max: APPEND_BYTES_MAX,
            events_per_append_max: EVENTS_PER_APPEND_MAX,
            request_bytes_max: REQUEST_BYTES_MAX,
            connections_max: CONNECTIONS_MAX,
            subscriptions_max: SUBSCRIPTIONS_MAX,
            read_count_max: READ_COUNT_MAX,
        }
    }
}

/// An append over one of the [`Limits`]; the message names the bound.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("append has {events} events, over the limit of {max} events per append")]
    TooManyEvents { events: usize, max: usize },
    #[error(
        "event {index} is {size} bytes (data + metadata + type), over the limit of {max} bytes per event"
    )]
    EventTooLarge {
        index: usize,
        size: usize,
        max: usize,
    },
    #[error("append is {size} bytes, over the limit of {max} bytes per append")]
    AppendTooLarge { size: usize, max: usize },
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
    pub fn admit(&mut self, limits: &Limits, size: usize) -> Result<(), LimitError> {
        let index = self.events;
        self.events += 1;
        if self.events > limits.events_per_append_max {
            return Err(LimitError::TooManyEvents {
                events: self.events,
                max: limits.events_per_append_max,
            });
        }
        if size > limits.event_bytes_max {
            return Err(LimitError::EventTooLarge {
                index,
                size,
                max: limits.event_bytes_max,
            });
        }
        self.bytes = self.bytes.saturating_add(size);
        if self.bytes > limits.append_bytes_max {
            return Err(LimitError::AppendTooLarge {
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
            Err(LimitError::EventTooLarge {
                index: 1,
                size: 101,
                max: 100
            })
        ));
        let mut b = AppendBudget::default();
        b.admit(&limits, 80).unwrap();
        assert!(matches!(
            b.admit(&limits, 80),
            Err(LimitError::AppendTooLarge {
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
