//! Field numbers of the `Streams.Read` answer, as `streams.proto` and `shared.proto` give them,
//! and of a persistent subscription's `Read` answer, which shares the event's shape
//! (`persistent.proto`: the same numbers for the event, its recorded events and the position).
//!
//! The server encodes read events by hand (`annals-grpc`) and the benches' client decodes them by
//! hand (`annals-bench`), both skipping prost on the hot path; they take the numbers from here so
//! they agree with each other. Both are checked against prost on the same bytes in their tests.

/// `ReadResp.event`.
pub const RESP_EVENT: u32 = 1;
/// `ReadResp.ReadEvent.event`.
pub const READ_EVENT_EVENT: u32 = 1;
/// `ReadResp.ReadEvent.commit_position`.
pub const READ_EVENT_COMMIT_POSITION: u32 = 3;
/// `ReadResp.ReadEvent.link` (the link an event was reached through).
pub const READ_EVENT_LINK: u32 = 2;
/// `persistent_subscriptions.ReadResp.ReadEvent.retry_count`.
pub const PERSISTENT_READ_EVENT_RETRY_COUNT: u32 = 5;

// `ReadResp.ReadEvent.RecordedEvent`.
pub const ID: u32 = 1;
pub const STREAM: u32 = 2;
pub const REVISION: u32 = 3;
pub const PREPARE: u32 = 4;
pub const COMMIT: u32 = 5;
pub const METADATA: u32 = 6;
pub const CUSTOM_METADATA: u32 = 7;
pub const DATA: u32 = 8;

// `UUID`: either two fixed-width halves or a string.
pub const UUID_STRUCTURED: u32 = 1;
pub const UUID_STRING: u32 = 2;
pub const UUID_MSB: u32 = 1;
pub const UUID_LSB: u32 = 2;

/// `StreamIdentifier.stream_name`.
pub const STREAM_NAME: u32 = 3;

// An entry of a protobuf `map<string, string>` (the recorded event's `metadata`).
pub const MAP_KEY: u32 = 1;
pub const MAP_VALUE: u32 = 2;
