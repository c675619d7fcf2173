//! Integration tests of the gRPC API, in one test binary so the stack links once: the official
//! Rust `kurrentdb` client end to end, BatchAppend pipelining with held syncs, and raw requests
//! (unknown services and methods, persistent-subscription List, gossip); persistent subscriptions
//! through the official client; `$ce-`/`$et-` streams read and followed through it.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions fail the test by panicking"
)]

mod batch_append;
mod category;
mod kurrentdb_client;
mod persistent;
mod raw_grpc;
mod slow_reader;
