//! Projections: view tables in SQLite or PostgreSQL that follow the log and never miss an event.
//!
//! A projection is a source (a filter over `$all`), a handler that turns events into SQL
//! statements, a [`Target`] database, and checkpoints kept in that database. Each batch's rows
//! and its checkpoint commit in one target transaction, so after any crash the view resumes
//! exactly where its rows end.
//!
//! Module map:
//! - [`target`]: the contract every target database implements, the values bound to statements,
//!   and the bookkeeping records (checkpoints, failures, parked events, snapshots).
//! - [`handler`]: the handler contract (events → statements and declared effects), replay mode.
//! - [`spec`]: what a projection is (source, objects, setup, error policy, partitions).
//! - `runtime`: [`Projections`], the registry that runs projections (partitioned workers, error
//!   policies, rebuilds with a swap, replay mode, read-your-writes waits).
//! - `sqlite`: [`SqliteTarget`].
//! - `postgres`: [`PostgresTarget`], and [`Fence`], the lease token a target in multi-node mode
//!   writes under.
//! - `catalog`: [`Catalog`], the server's registered declarative projections, kept per
//!   generation in the data directory or, in multi-node mode ([`Catalog::open_shared`]), in
//!   the store's log.
//! - `definition`: declarative projections from TOML ([`parse_definitions`]).
//! - `status`: [`ProjectionStatus`], what a projection reports.
//! - `snapshot`: aggregate snapshots ([`load_aggregate`]).

mod bookkeeping;
mod catalog;
mod definition;
pub mod handler;
mod postgres;
mod runtime;
mod snapshot;
pub mod spec;
mod sql_text;
mod sqlite;
mod status;
pub mod target;

pub use catalog::{
    Applied, CATALOG_DIR, Catalog, CatalogError, DEFAULT_SQLITE_FILE, DEFINITION_TEXT_BYTES_MAX,
    SHARED_CATALOG_EVENT_TYPE, SHARED_CATALOG_EVENTS_KEPT, SHARED_CATALOG_STREAM, SharedCatalog,
};
pub use definition::{
    DEFINITION_ATTEMPTS_MAX, DEFINITION_BACKOFF_MAX, DEFINITION_PARAMS_MAX, DeclarativeHandler,
    Definition, DefinitionError, DefinitionTarget, ParamSource, PathStep, parse_definitions,
};
pub use handler::{
    Effect, EffectSink, Handler, HandlerContext, HandlerError, Mode, Resolver, resolve_objects,
};
pub use postgres::{Fence, POSTGRES_STATEMENT_CACHE_MAX, PostgresTarget};
pub use runtime::{
    FAILURES_LISTED_MAX, IDLE_CHECKPOINT_COMMIT_INTERVAL, PROJECTION_BATCH_BYTES_MAX,
    PROJECTION_BATCH_EVENTS_MAX, PROJECTION_NAME_BYTES_MAX, ProjectionError, Projections,
    RetryReport, SWAP_LAG_EVENTS_MAX, TABLE_ROWS_MAX, WAIT_TIMEOUT_MAX, WaitError, validate_spec,
};
pub use snapshot::{
    AGGREGATE_READ_PAGE_EVENTS_MAX, AggregateSnapshot, LoadedAggregate, SnapshotError,
    load_aggregate, load_aggregate_snapshot, save_aggregate_snapshot,
};
pub use spec::{ErrorPolicy, HandlerFactory, OnFailure, PARTITIONS_MAX, ProjectionSpec, Source};
pub use sqlite::{SQLITE_BUSY_TIMEOUT, SQLITE_CACHE_KIB, SqliteTarget};
pub use status::{ProjectionState, ProjectionStatus, RATE_WINDOW, RebuildStatus};
pub use target::{
    Failure, FailureAction, Parked, PartitionCommit, SnapshotRecord, Statement, StoredGeneration,
    StoredProjection, TableRows, Target, TargetError, TargetKind, Value, generation_object,
};
