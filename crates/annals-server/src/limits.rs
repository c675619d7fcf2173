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
