//! Integration tests of the engine, in one test binary so the stack links once: smoke tests of
//! the API, expected revisions around deletes, crash and fault tests (a crash at every sync keeps
//! exactly the acknowledged appends), random operations against the reference model,
//! subscriptions switching from catch-up to live, shutdown with appends in flight, a data
//! directory written by format version 1, the `$ce-`/`$et-` streams served from the index, and
//! index files damaged in ways redb accepts at open, and the index store failing under
//! appends (reopened in place).

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions fail the test by panicking"
)]

mod crash;
mod damaged_index;
mod deletes;
mod format_fixture;
mod import;
mod index_failure;
mod indexed_streams;
mod model;
mod shutdown;
mod smoke;
mod subscription;
