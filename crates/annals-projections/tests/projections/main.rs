//! Integration tests of projections, in one test binary so the stack links once: declarative
//! definitions, the runtime against SQLite and a real engine, the PostgreSQL target against a
//! throwaway server, a PostgreSQL outage mid-run, fencing, and the catalog of registered
//! definitions (in files, or shared in the log in multi-node mode).

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions fail the test by panicking"
)]

mod catalog_files;
mod definition;
mod fencing;
mod postgres_outage;
mod postgres_target;
mod runtime;
mod shared_catalog;
mod support;
