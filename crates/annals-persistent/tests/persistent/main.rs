//! Integration tests of persistent subscriptions, in one test binary: the group state machine
//! against a reference model under random acks, nacks, timeouts and consumer drops, and the
//! runtime over a real engine.

#![expect(
    clippy::panic,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions fail the test by panicking"
)]

mod model;
mod runtime;
