//! The contract between the projection runtime and a target database (SQLite, PostgreSQL).
//!
//! The runtime turns events into [`Statement`]s; a [`Target`] runs them. Everything a target
//! must make atomic goes through one call: [`Target::commit`] writes a partition's statements,
//! its new checkpoint, the failures it recorded, the events it parked or released and an
//! optional snapshot in **one** database transaction. Either all of it is in the view afterwards
//! or none of it is; the runtime never keeps progress anywhere else.
//!
//! ## Names and generations
//! A projection's objects (tables, indexes) are written `{name}` in its SQL. Generation `g` of
//! the projection owns the real objects `name__g{g}`; the runtime resolves the braces before a
//! statement reaches the target (see [`generation_object`]). Readers use a view per table, named
//! as the table without the suffix, pointing at the serving generation. A rebuild builds
//! generation `g + 1` beside `g`; [`Target::swap`] repoints the views, marks the new generation
//! serving and drops the old tables in one transaction.
//!
//! ## Parameters
//! Statements use `$1`, `$2`, … for parameters on both targets; values are always bound, never
//! spliced into SQL text.
//!
//! ## Bookkeeping tables (created by [`Target::install`], all prefixed `annals_`)
//! - `annals_projections(projection, generation, state)`: `state` is `building` or `serving`.
//! - `annals_checkpoints(projection, generation, partition, position)`.
//! - `annals_failures(projection, generation, position, stream, revision, event_type, message,
//!   action, recorded_at)`.
//! - `annals_parked(projection, generation, position, stream, revision, reason)`.
//! - `annals_snapshots(key, position, state)`: projection snapshots use the key
//!   `projection:{name}:g{generation}:p{partition}`; aggregate snapshots any other key.
//! - `annals_fences(name, token)` (PostgreSQL only): the newest fencing token of each lease that
//!   claimed the database; see [`crate::Fence`].

use std::sync::Arc;

use annals_core::Position;

/// Which database a target is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TargetKind {
    Sqlite,
    Postgres,
}

/// A value bound to a statement parameter. A target converts it to the parameter's declared or
/// inferred type and answers [`TargetError::Statement`] when it cannot (a text into an integer
/// column, say), never by splicing it into SQL.
#[derive(Clone, PartialEq, Debug)]
pub enum Value {
    Null,
    Bool(bool),
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
    /// A JSON document (bound as `jsonb` on PostgreSQL where the parameter is `json`/`jsonb`,
    /// as text elsewhere).
    Json(String),
}

/// One SQL statement with its bound parameters; the SQL is final (generation resolved).
#[derive(Clone, PartialEq, Debug)]
pub struct Statement {
    pub sql: Arc<str>,
    pub params: Vec<Value>,
}

/// What the runtime did about a failed event.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FailureAction {
    /// Retries ran out and the projection stopped (faulted) before this event.
    Stopped,
    /// The event was skipped; the projection went on.
    Skipped,
    /// The event and every later event of its stream are parked until released.
    Parked,
}

impl FailureAction {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureAction::Stopped => "stopped",
            FailureAction::Skipped => "skipped",
            FailureAction::Parked => "parked",
        }
    }
    /// The action stored as [`FailureAction::as_str`] wrote it; anything else is a damaged
    /// bookkeeping row.
    pub fn parse(stored: &str) -> Result<Self, TargetError> {
        match stored {
            "stopped" => Ok(FailureAction::Stopped),
            "skipped" => Ok(FailureAction::Skipped),
            "parked" => Ok(FailureAction::Parked),
            other => Err(TargetError::Other(format!(
                "unknown failure action {other:?} in annals_failures"
            ))),
        }
    }
}

/// A failure recorded with the batch that follows it.
#[derive(Clone, PartialEq, Debug)]
pub struct Failure {
    pub position: Position,
    pub stream: String,
    pub revision: u64,
    pub event_type: String,
    pub message: String,
    pub action: FailureAction,
    /// Unix milliseconds.
    pub recorded_at_ms: i64,
}

/// An event held back because its stream is parked.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Parked {
    pub position: Position,
    pub stream: String,
    pub revision: u64,
    /// Why: the failure message for the first event of a stream, "stream parked" for the rest.
    pub reason: String,
}

/// Saved state at a position: of a projection partition (for Rust handlers that keep state in
/// memory) or of an aggregate.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SnapshotRecord {
    pub key: String,
    pub position: Position,
    pub state: Vec<u8>,
}

/// Everything one partition commits in one transaction.
#[derive(Clone, Copy, Debug)]
pub struct PartitionCommit<'a> {
    pub projection: &'a str,
    pub generation: u32,
    pub partition: u32,
    pub statements: &'a [Statement],
    /// Every event of this partition up to here is applied, skipped or parked.
    pub checkpoint: Position,
    pub failures: &'a [Failure],
    pub parked: &'a [Parked],
    /// Parked events released by this commit (applied again or given up), by position.
    pub released: &'a [Position],
    pub snapshot: Option<&'a SnapshotRecord>,
}

/// One generation of a projection as the target stores it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StoredGeneration {
    pub generation: u32,
    /// True for the generation readers see; false while it is being built.
    pub serving: bool,
    /// Checkpoint per partition; a partition that never committed is absent (resume at 1).
    pub checkpoints: Vec<(u32, Position)>,
}

/// A projection's state in its target.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct StoredProjection {
    pub generations: Vec<StoredGeneration>,
}

/// Rows read from a reader view: column names and, per row, one value per column.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct TableRows {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

/// A target failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// The database cannot be reached or dropped the connection, or the transaction must be
    /// retried (serialization failure, deadlock, busy). Nothing of the call took effect. The
    /// runtime retries these without end, with backoff; they never count against an event.
    #[error("target unavailable: {0}")]
    Unavailable(String),
    /// A statement failed for reasons of its own or of its values (constraint, type, syntax).
    /// Nothing of the call took effect. `index` is the failing statement's place in
    /// [`PartitionCommit::statements`] when known.
    #[error("statement failed: {message}")]
    Statement {
        index: Option<usize>,
        message: String,
    },
    /// A definition's SQL did not prepare, or its setup failed (from [`Target::check`] and
    /// [`Target::create_generation`]).
    #[error("{0}")]
    Definition(String),
    /// Anything else (a corrupt bookkeeping row, say).
    #[error("target: {0}")]
    Other(String),
    /// This node's lease on the projection ended: a later holder of the lease claimed the
    /// target's fence (see [`crate::Fence`]), and the target now refuses every write of this
    /// one. Nothing of the call took effect, and retrying cannot help, so the runtime stops the
    /// projection (faulted, with this message) instead of retrying as for `Unavailable`.
    #[error("{0}")]
    Fenced(String),
}

/// A target database. Blocking: the runtime calls it from its own worker threads, one target
/// (one connection) per partition worker, obtained with [`Target::connect_another`].
pub trait Target: Send + std::fmt::Debug {
    fn kind(&self) -> TargetKind;

    /// A new connection to the same database.
    fn connect_another(&self) -> Result<Box<dyn Target>, TargetError>;

    /// Creates the bookkeeping tables if missing. Idempotent.
    fn install(&mut self) -> Result<(), TargetError>;

    /// Validates a definition without changing anything: in one transaction that is rolled
    /// back, runs `setup` (already resolved for a scratch generation) and prepares every
    /// statement of `statements`. The error names the statement and the database's message.
    fn check(&mut self, setup: &[String], statements: &[String]) -> Result<(), TargetError>;

    /// In one transaction: runs `setup` (resolved for `generation`) and records the generation
    /// as building (or serving when `serving`, for a projection's first generation, creating the
    /// reader views `views` → `{view}__g{generation}`). A generation that already exists is
    /// left alone (returns Ok), so a restart mid-rebuild resumes.
    fn create_generation(
        &mut self,
        projection: &str,
        generation: u32,
        setup: &[String],
        serving: bool,
        views: &[String],
    ) -> Result<(), TargetError>;

    /// The projection's generations and checkpoints; empty if it was never created.
    fn load(&mut self, projection: &str) -> Result<StoredProjection, TargetError>;

    /// Commits one partition's batch; see [`PartitionCommit`]. All or nothing.
    fn commit(&mut self, commit: &PartitionCommit<'_>) -> Result<(), TargetError>;

    /// In one transaction: points every view `v` in `views` at `v__g{to}`, marks `to` serving,
    /// and deletes generation `from` (its tables `t__g{from}` for `t` in `views`, its
    /// checkpoints, failures, parked rows and snapshots). Readers see the old rows or the new,
    /// never a mixture or nothing.
    fn swap(
        &mut self,
        projection: &str,
        from: Option<u32>,
        to: u32,
        views: &[String],
    ) -> Result<(), TargetError>;

    /// Drops a generation that is not serving (an abandoned rebuild) or, with `views`, a whole
    /// projection (reset): its tables, views and bookkeeping rows, in one transaction.
    fn drop_generation(
        &mut self,
        projection: &str,
        generation: u32,
        tables: &[String],
        drop_views: bool,
    ) -> Result<(), TargetError>;

    /// Parked events of a generation, in position order.
    fn parked(&mut self, projection: &str, generation: u32) -> Result<Vec<Parked>, TargetError>;

    /// The newest `limit` failures of a generation, newest first.
    fn failures(
        &mut self,
        projection: &str,
        generation: u32,
        limit: usize,
    ) -> Result<Vec<Failure>, TargetError>;

    /// Reads up to `limit` rows of reader view `view` (a projection's table as readers see it,
    /// whatever generation serves), skipping `offset`, ordered by the first column. `view` must
    /// be a plain identifier; callers check it is one of the projection's tables.
    fn read_table(
        &mut self,
        view: &str,
        limit: usize,
        offset: usize,
    ) -> Result<TableRows, TargetError>;

    /// Saves a snapshot (replacing the key's previous one) in its own transaction.
    fn save_snapshot(&mut self, snapshot: &SnapshotRecord) -> Result<(), TargetError>;

    /// The snapshot stored under `key`, if any.
    fn load_snapshot(&mut self, key: &str) -> Result<Option<SnapshotRecord>, TargetError>;
}

/// The real name of object `name` in `generation`: `name__g{generation}`.
pub fn generation_object(name: &str, generation: u32) -> String {
    format!("{name}__g{generation}")
}

/// Whether `name` is a plain SQL identifier (`[A-Za-z_][A-Za-z0-9_]*`), safe to put in SQL text.
pub(crate) fn is_identifier(name: &str) -> bool {
    name.bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Refuses anything but a plain SQL identifier, for names that end up in SQL text.
pub(crate) fn check_identifier(name: &str) -> Result<(), TargetError> {
    if is_identifier(name) {
        Ok(())
    } else {
        Err(TargetError::Definition(format!(
            "{name:?} is not a plain identifier"
        )))
    }
}
