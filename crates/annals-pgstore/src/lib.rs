//! Annals's store on PostgreSQL (see `docs/design/postgres-store.md`): the versioned schema
//! (`schema.rs`), the group-commit writer that assigns dense positions under one head row lock so
//! that no reader can ever see a gap (`writer.rs`), reads of `$all` and of a stream (`read.rs`),
//! the head signal every node follows through `LISTEN`/`NOTIFY` (`store.rs`), and the leases
//! that give each job to one node, with fenced writes (`lease.rs`); `check.rs` verifies a store, `import.rs` copies
//! another store's events in unchanged. Any number of
//! [`PgStore`]s (nodes) may share one database.

mod check;
mod error;
mod import;
mod lease;
mod read;
mod schema;
mod store;
mod writer;

pub use check::{PgCheckReport, check_url};
pub use error::PgStoreError;
pub use lease::{LEASE_RENEW_INTERVAL, LEASE_TTL, Lease, LeaseKeeper};
pub use schema::SCHEMA_VERSION;
pub use store::{PG_HEAD_POLL_INTERVAL, PgStore};
pub use tokio_postgres::Config;
pub use writer::PG_GROUP_COMMIT_APPENDS_MAX;
