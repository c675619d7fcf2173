//! Every named bound on what a client may send, in one place, in two groups.
//!
//! - **The store's bounds** hold for every caller of the engine (the CLI, projections, the network
//!   APIs). The engine checks them once at its entrance, and the record format is sized for them,
//!   so a request that passes the engine's validation also fits on disk.
//! - **The network's defaults** (`NETWORK_*`) are what a server accepts from a client unless it is
//!   configured otherwise (`annals_server::Limits`). Where they are tighter than the store's, it
//!   is so that one request from the network cannot make the server hold much memory; each is
//!   checked below, at compile time, to be within the store's bound where one applies.
//!
//! A request over any of them is refused with an [`crate::InputError`] that names the bound, and
//! changes nothing.

// The store's bounds.

/// Longest stream name, in UTF-8 bytes. Stream names are stored once per commit record with a `u16`
/// length, so this must stay below 65,536.
pub const STREAM_NAME_BYTES_MAX: usize = 1_024;

/// Longest event type, in UTF-8 bytes (stored with a `u16` length).
pub const EVENT_TYPE_BYTES_MAX: usize = 1_024;

/// Largest single event: data plus metadata plus type, in bytes.
pub const STORE_EVENT_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Largest append: the sum of its events' sizes, in bytes.
pub const STORE_APPEND_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Most events in one append.
pub const APPEND_EVENTS_MAX: usize = 10_000;

/// Most events one read call of the engine returns; larger requests are clamped, not refused.
/// An HTTP read is one engine read, so this is also the most one HTTP read returns.
pub const STORE_READ_EVENTS_MAX: usize = 65_536;

/// Longest filter regex accepted, in bytes.
pub const FILTER_REGEX_BYTES_MAX: usize = 4_096;
/// Most backtracks one filter regex match may take before it gives up (and counts as no match).
pub const FILTER_REGEX_BACKTRACK_MAX: usize = 100_000;
/// Most instructions of the backtracking program a filter regex compiles to.
pub const FILTER_REGEX_PROGRAM_MAX: usize = 10_000;
/// Largest compiled size, in bytes, of each part of a filter regex handed to the `regex` crate,
/// and of the cache of its lazy DFA.
pub const FILTER_REGEX_COMPILED_BYTES_MAX: usize = 1 << 20;
/// Most prefixes one prefix filter may list.
pub const FILTER_PREFIXES_MAX: usize = 1_000;

// The network's defaults.

/// Most bytes of one event (data + metadata + type) a client may send.
pub const NETWORK_EVENT_BYTES_MAX: usize = 1024 * 1024;
/// Most bytes of one append (all its events) a client may send.
pub const NETWORK_APPEND_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Most events in one append a client may send: the store's bound.
pub const NETWORK_APPEND_EVENTS_MAX: usize = APPEND_EVENTS_MAX;
/// Most bytes of one request body or gRPC message.
pub const NETWORK_REQUEST_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Most open connections; further connections are closed at once, with a warning logged.
/// `annals serve` raises its soft file-descriptor limit at start so that this many fit.
pub const NETWORK_CONNECTIONS_MAX: usize = 10_000;
/// Longest a new connection may take to finish its TLS handshake and send its first request;
/// then it is closed, so connections that send nothing cannot hold every slot.
pub const NETWORK_FIRST_REQUEST_SECS: u64 = 5;
/// Longest an established connection may go without a byte read or written before it is
/// closed. HTTP/2 connections are pinged every [`NETWORK_PING_SECS`], so a live peer's
/// answers keep them open however long they wait; server-sent event feeds write keep-alives.
pub const NETWORK_IDLE_SECS: u64 = 15 * 60;
/// How often the server pings an HTTP/2 connection that has gone quiet; a peer that does not
/// answer within the same time again is gone, and its connection is closed.
pub const NETWORK_PING_SECS: u64 = 60;
/// Longest a live subscription waits for its client to take the next page (a client reading
/// slower than events arrive); then the subscription ends with an error saying so, and what it
/// held is freed.
pub const NETWORK_SUBSCRIBER_BLOCKED_SECS: u64 = 60;
/// Shortest time between two pages sent to one live subscriber at the head, in microseconds:
/// events published meanwhile go out together in the next page. An event after a quiet spell
/// goes out at once; under load, each subscriber costs the server one wake-up and one write per
/// interval instead of one per group commit. 0 sends every group commit as it is published.
pub const NETWORK_LIVE_PAGE_INTERVAL_MICROS: u64 = 2_000;
/// Most live subscriptions (gRPC and server-sent events together).
pub const NETWORK_SUBSCRIPTIONS_MAX: usize = 1_024;
/// Most events one gRPC read returns, whatever count it asks for. A gRPC read pages through the
/// engine, so this may exceed [`STORE_READ_EVENTS_MAX`]; an HTTP read is one engine read and
/// returns at most [`STORE_READ_EVENTS_MAX`].
pub const NETWORK_READ_EVENTS_MAX: u64 = 100_000;

const _: () = assert!(STREAM_NAME_BYTES_MAX < u16::MAX as usize);
const _: () = assert!(EVENT_TYPE_BYTES_MAX < u16::MAX as usize);
const _: () = assert!(STORE_EVENT_BYTES_MAX <= STORE_APPEND_BYTES_MAX);
const _: () = assert!(NETWORK_EVENT_BYTES_MAX <= STORE_EVENT_BYTES_MAX);
const _: () = assert!(NETWORK_EVENT_BYTES_MAX <= NETWORK_APPEND_BYTES_MAX);
const _: () = assert!(NETWORK_APPEND_BYTES_MAX <= STORE_APPEND_BYTES_MAX);
const _: () = assert!(NETWORK_APPEND_EVENTS_MAX <= APPEND_EVENTS_MAX);
// A request carries a whole append plus its framing.
const _: () = assert!(NETWORK_APPEND_BYTES_MAX < NETWORK_REQUEST_BYTES_MAX);
