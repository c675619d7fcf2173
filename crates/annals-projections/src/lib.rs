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

pub mod handler;
pub mod spec;
pub mod target;

pub use handler::{
    Effect, EffectSink, Handler, HandlerContext, HandlerError, Mode, Resolver, resolve_objects,
};
pub use spec::{ErrorPolicy, HandlerFactory, OnFailure, PARTITIONS_MAX, ProjectionSpec, Source};
pub use target::{
    Failure, FailureAction, Parked, PartitionCommit, SnapshotRecord, Statement, StoredGeneration,
    StoredProjection, Target, TargetError, TargetKind, Value, generation_object,
};
