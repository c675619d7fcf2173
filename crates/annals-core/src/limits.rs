//! The named bounds on what a client may send. Every layer checks against these constants, so a
//! request that passes the engine's validation also fits the on-disk record format.

/// Longest stream name, in UTF-8 bytes. Stream names are stored once per commit record with a `u16`
/// length, so this must stay below 65,536.
pub const STREAM_NAME_BYTES_MAX: usize = 1_024;

/// Longest event type, in UTF-8 bytes (stored with a `u16` length).
pub const EVENT_TYPE_BYTES_MAX: usize = 1_024;

/// Largest single event: data plus metadata plus type, in bytes.
pub const EVENT_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Largest append: the sum of its events' sizes, in bytes.
pub const APPEND_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Most events in one append.
pub const APPEND_EVENTS_MAX: usize = 10_000;

/// Most events one read call may return; larger requests are clamped, not refused.
pub const READ_EVENTS_MAX: usize = 65_536;

const _: () = assert!(STREAM_NAME_BYTES_MAX < u16::MAX as usize);
const _: () = assert!(EVENT_TYPE_BYTES_MAX < u16::MAX as usize);
const _: () = assert!(EVENT_BYTES_MAX <= APPEND_BYTES_MAX);
