//! Integration tests of projections, in one test binary so the stack links once: declarative
//! definitions, the runtime against SQLite and a real engine, the PostgreSQL target against a
//! throwaway server, and a PostgreSQL outage mid-run.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions fail the test by panicking"
)]

mod definition;
mod postgres_outage;
mod postgres_target;
mod runtime;
mod support;
