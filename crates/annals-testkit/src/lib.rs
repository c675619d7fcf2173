//! Test support for Annals, used by the engine's integration tests and nowhere else.
//!
//! - [`Model`]: a plain in-memory reference model of the store — a `Vec` of events in `$all` order
//!   and a map of stream states — that applies the same rules as the engine (expected revisions,
//!   idempotent retries, soft delete and undelete, tombstones, max-count metadata). Tests run the
//!   same random operations against both and demand the same answers.
//! - [`random`]: seeded random events, so a failing run is reproduced from its seed alone.
//! - [`compare`]: compares engine answers (events, `$all` pages, errors) with model answers and
//!   says exactly where they differ.
//! - [`verify`]: checks a store reopened after a crash against the appends sent to it.
//! - [`storage`]: storage wrappers that check the order of writes and syncs.
//! - [`nats`]: a throwaway NATS server with JetStream ([`nats::TempNats`]) for relay tests.
//! - [`rabbitmq`]: a throwaway RabbitMQ broker ([`rabbitmq::TempRabbit`]) for relay tests.
//! - [`postgres`]: a throwaway PostgreSQL server ([`postgres::TempPostgres`]) for target tests.
//! - `tidy` (tests only): hygiene checks over the workspace's sources (module comments, file
//!   sizes, constants defined in two crates).
//!
//! The model is written from the engine's documented and implemented semantics, not from its code
//! paths: it is deliberately naive (linear scans, no index), so a bug in the engine's indexes,
//! caches or recovery shows up as a difference.

#![expect(
    clippy::panic,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test support: a setup that fails fails the test that asked for it"
)]

pub mod compare;
mod model;
pub mod nats;
pub mod postgres;
pub mod rabbitmq;
pub mod random;
pub mod storage;
#[cfg(feature = "replica")]
pub mod store;
#[cfg(test)]
mod tidy;
pub mod verify;

pub use model::{Model, ModelError, ModelEvent, ModelPage};
