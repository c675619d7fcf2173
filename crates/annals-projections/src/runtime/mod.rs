//! The projection runtime: [`Projections`], the registry the server and embedders use, and the
//! threads that run each projection.
//!
//! Per projection there is one control thread (`control`), which owns the projection's control
//! connection and its running generations and carries out commands (pause, resume, reset,
//! rebuild, retry parked) and the rebuild's swap; and per running generation a dispatcher and
//! one worker per partition (`runner`, `worker`). Status and `wait_for` read counters the
//! workers update after each commit, without going through the control thread.
//!
//! ## Replay mode: which positions count as replay
//! An event is handed to the handler in [`Mode::Replay`] (and its effects are dropped) exactly
//! when its position is at or below the running generation's *replay boundary*:
//! - the first generation of a new projection has boundary 0: every event is live, history
//!   included (the projection has never delivered anything);
//! - a generation built by `rebuild` has boundary "infinite" until the swap: it never runs
//!   past the serving generation (its dispatcher is held at the serving generation's position),
//!   so everything it applies was already applied live by the serving one. At the swap the
//!   serving generation is drained to a final position `P` (the highest of its partition
//!   checkpoints), the new generation is brought to exactly `P` in replay, and its boundary
//!   becomes `P`: events after `P` are live, once, in the new generation;
//! - a generation created by `reset` has boundary = the store's head when the reset ran, saved
//!   in the target (snapshot key `projection:{name}:g{generation}:replay`) so a restart keeps it;
//! - a restarted worker feeding a stateful handler the events between its snapshot and its
//!   checkpoint (warm-up) discards their statements and effects entirely;
//! - an event re-applied by `retry_parked` follows the boundary of its generation.
//!
//! Effects are delivered after their batch commits, at most once: an effect whose delivery
//! fails, or that was pending when the process died, is not retried.

mod control;
mod runner;
mod worker;

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use annals_core::{Direction, Filter, Position};
use annals_engine::Engine;
use crossbeam_channel::{Sender, bounded};
use parking_lot::{Condvar, Mutex};

use crate::handler::{EffectSink, Mode};
use crate::spec::{PARTITIONS_MAX, ProjectionSpec, Source};
use crate::status::{ProjectionState, ProjectionStatus, RebuildStatus};
use crate::target::{TableRows, Target, TargetError, is_identifier};
use control::{Command, Control};
use runner::RunnerShared;

pub use control::SWAP_LAG_EVENTS_MAX;
pub use worker::IDLE_CHECKPOINT_COMMIT_INTERVAL;
pub use worker::{PROJECTION_BATCH_BYTES_MAX, PROJECTION_BATCH_EVENTS_MAX};

/// Most rows one `read_table` call returns.
pub const TABLE_ROWS_MAX: usize = 1_000;
/// Longest `wait_for` may wait.
pub const WAIT_TIMEOUT_MAX: Duration = Duration::from_secs(60);
/// Longest a projection name may be, in bytes (it prefixes its objects' names).
pub const PROJECTION_NAME_BYTES_MAX: usize = 48;
/// Most failures a status or `failures` call returns.
pub const FAILURES_LISTED_MAX: usize = 100;
/// How long a command waits for its projection's control thread to answer.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// A projection could not be registered or a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    #[error("invalid projection {name:?}: {reason}")]
    InvalidSpec { name: String, reason: String },
    #[error("projection {name:?} is already registered")]
    AlreadyRegistered { name: String },
    #[error("no projection named {name:?}")]
    NotFound { name: String },
    #[error("projection {name:?}: the target rejected the definition: {message}")]
    Definition { name: String, message: String },
    #[error("projection {name:?}: a rebuild is already running")]
    RebuildInProgress { name: String },
    #[error("projection {name:?} is not running ({reason})")]
    NotRunning { name: String, reason: String },
    #[error("projection {name:?}: {source}")]
    Target {
        name: String,
        #[source]
        source: TargetError,
    },
    #[error("projection {name:?}: the control thread did not answer")]
    Unresponsive { name: String },
    #[error("projection {name:?} has no table {table:?} (its tables: {tables:?})")]
    NoSuchTable {
        name: String,
        table: String,
        tables: Vec<String>,
    },
}

/// `wait_for` did not see the position applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitError {
    /// The timeout passed; the projection had applied up to `applied`.
    #[error("projection is stale: applied up to {applied}")]
    Stale { applied: Position },
    #[error("no projection named {name:?}")]
    NotFound { name: String },
}

/// What `retry_parked` did.
#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize)]
pub struct RetryReport {
    /// Parked events applied and released.
    pub released: u64,
    /// Parked events that still fail (or wait behind one of their stream that does).
    pub still_parked: u64,
}

/// What the control thread publishes for status readers.
#[derive(Debug)]
pub(crate) struct View {
    pub(crate) stopped: bool,
    pub(crate) paused: bool,
    pub(crate) serving_fault: Option<String>,
    pub(crate) building_fault: Option<String>,
    pub(crate) control_error: Option<String>,
    pub(crate) serving: Arc<RunnerShared>,
    pub(crate) building: Option<Arc<RunnerShared>>,
}

/// A projection's state shared by its control thread, its workers and the registry.
#[derive(Debug)]
pub(crate) struct ProjectionShared {
    pub(crate) name: String,
    filter: Filter,
    pub(crate) view: Mutex<View>,
    progress: Mutex<u64>,
    progressed: Condvar,
    /// The serving generation's tables (what readers may read).
    pub(crate) tables: Mutex<Vec<String>>,
}

impl ProjectionShared {
    /// A projection's state before any of its generations runs: running, no errors, and
    /// `serving` as the generation status reads until a runner replaces it.
    pub(crate) fn new(
        name: String,
        filter: Filter,
        serving: Arc<RunnerShared>,
        tables: Vec<String>,
    ) -> Self {
        Self {
            name,
            filter,
            view: Mutex::new(View {
                stopped: false,
                paused: false,
                serving_fault: None,
                building_fault: None,
                control_error: None,
                serving,
                building: None,
            }),
            progress: Mutex::new(0),
            progressed: Condvar::new(),
            tables: Mutex::new(tables),
        }
    }

    /// Wakes `wait_for` callers: some checkpoint moved.
    pub(crate) fn notify(&self) {
        *self.progress.lock() += 1;
        self.progressed.notify_all();
    }

    fn position(&self) -> Position {
        self.view.lock().serving.position()
    }
}

struct Entry {
    shared: Arc<ProjectionShared>,
    commands: Sender<Command>,
    thread: Option<JoinHandle<()>>,
    /// A connection of its own for reads of the views, so reads never queue behind commands.
    reader: Arc<Mutex<Box<dyn Target>>>,
}

/// The projections of one store. Cheap to share behind an `Arc`; dropping it stops them all
/// (each keeps what it committed and resumes there when registered again).
pub struct Projections {
    engine: Engine,
    effects: Option<Arc<dyn EffectSink>>,
    entries: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for Projections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projections")
            .field(
                "projections",
                &self.entries.lock().keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Checks a projection's name and shape (not its SQL: the target does that).
pub fn validate_spec(spec: &ProjectionSpec) -> Result<(), ProjectionError> {
    let invalid = |reason: String| ProjectionError::InvalidSpec {
        name: spec.name.clone(),
        reason,
    };
    let name = spec.name.as_bytes();
    let name_ok = name.first().is_some_and(u8::is_ascii_lowercase)
        && name
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
        && name.len() <= PROJECTION_NAME_BYTES_MAX;
    if !name_ok {
        return Err(invalid(format!(
            "the name must match [a-z][a-z0-9_]* and be at most {PROJECTION_NAME_BYTES_MAX} bytes"
        )));
    }
    if spec.partitions == 0 || spec.partitions > PARTITIONS_MAX {
        return Err(invalid(format!(
            "partitions must be between 1 and {PARTITIONS_MAX}, not {}",
            spec.partitions
        )));
    }
    if spec.policy.attempts == 0 {
        return Err(invalid("policy.attempts must be at least 1".to_owned()));
    }
    if spec.snapshot_every == Some(0) {
        return Err(invalid("snapshot_every must be at least 1".to_owned()));
    }
    for object in &spec.objects {
        if !is_identifier(object) {
            return Err(invalid(format!(
                "object name {object:?} is not an identifier"
            )));
        }
    }
    for table in &spec.tables {
        if !spec.objects.contains(table) {
            return Err(invalid(format!(
                "table {table:?} is not among the objects {:?}",
                spec.objects
            )));
        }
    }
    match &spec.source {
        Source::EventTypes(v) | Source::Streams(v) if v.is_empty() => {
            return Err(invalid("the source lists nothing".to_owned()));
        }
        Source::Category(c) if c.is_empty() => {
            return Err(invalid("the source category is empty".to_owned()));
        }
        _ => {}
    }
    for sql in spec.setup.iter().chain(&spec.statements) {
        if let Some(unknown) = unknown_object(sql, &spec.objects) {
            return Err(invalid(format!(
                "`{{{unknown}}}` is not a declared object (objects: {:?})",
                spec.objects
            )));
        }
    }
    runner::source_filter(&spec.source).map_err(invalid)?;
    Ok(())
}

/// A `{name}` in `sql` that looks like an object reference but is not declared.
fn unknown_object(sql: &str, objects: &[String]) -> Option<String> {
    let mut rest = sql;
    while let Some(open) = rest.find('{') {
        let after = rest.get(open + 1..).unwrap_or("");
        let close = after.find('}');
        if let Some(close) = close {
            let name = after.get(..close).unwrap_or("");
            if is_identifier(name) && !objects.iter().any(|o| o == name) {
                return Some(name.to_owned());
            }
        }
        rest = after;
    }
    None
}

/// The generation number used to check a definition without touching real objects.
pub(crate) const SCRATCH_GENERATION: u32 = 999_999_999;

/// Checks `spec`'s SQL against `target` in a rolled-back transaction.
pub(crate) fn check_definition(
    spec: &ProjectionSpec,
    target: &mut dyn Target,
) -> Result<(), ProjectionError> {
    let resolve = |list: &[String]| -> Vec<String> {
        list.iter()
            .map(|s| crate::handler::resolve_objects(s, &spec.objects, SCRATCH_GENERATION))
            .collect()
    };
    target
        .check(&resolve(&spec.setup), &resolve(&spec.statements))
        .map_err(|e| match e {
            TargetError::Definition(message) | TargetError::Statement { message, .. } => {
                ProjectionError::Definition {
                    name: spec.name.clone(),
                    message,
                }
            }
            other => ProjectionError::Target {
                name: spec.name.clone(),
                source: other,
            },
        })
}

impl Projections {
    /// A registry for `engine`'s projections; effects are dropped.
    pub fn new(engine: Engine) -> Self {
        Self {
            engine,
            effects: None,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// A registry that delivers live effects to `sink`.
    pub fn with_effect_sink(engine: Engine, sink: Arc<dyn EffectSink>) -> Self {
        Self {
            engine,
            effects: Some(sink),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Validates `spec`, checks its SQL against `target` (a bad definition is rejected here and
    /// nothing is created), creates its first generation if it is new, and starts it from its
    /// checkpoints. A rebuild found in progress in the target resumes, with `spec` for the new
    /// generation.
    pub fn register(
        &self,
        spec: ProjectionSpec,
        target: Box<dyn Target>,
    ) -> Result<(), ProjectionError> {
        self.register_resuming(spec, None, target)
    }

    /// [`Projections::register`] for a caller that knows both definitions of a projection
    /// whose rebuild may be in progress: `spec` runs the serving generation and `building` (if
    /// given; `spec` otherwise) the generation being built, when the target has one. Both are
    /// checked as at registration.
    pub fn register_resuming(
        &self,
        spec: ProjectionSpec,
        building: Option<ProjectionSpec>,
        mut target: Box<dyn Target>,
    ) -> Result<(), ProjectionError> {
        validate_spec(&spec)?;
        let name = spec.name.clone();
        if let Some(b) = &building {
            validate_spec(b)?;
            if b.name != name {
                return Err(ProjectionError::InvalidSpec {
                    name,
                    reason: format!("the building definition is named {:?}", b.name),
                });
            }
        }
        if self.entries.lock().contains_key(&name) {
            return Err(ProjectionError::AlreadyRegistered { name });
        }
        let target_err = |source| ProjectionError::Target {
            name: name.clone(),
            source,
        };
        target.install().map_err(target_err)?;
        check_definition(&spec, target.as_mut())?;
        let reader = target.connect_another().map_err(target_err)?;
        if let Some(b) = &building {
            check_definition(b, target.as_mut())?;
        }
        let filter =
            runner::source_filter(&spec.source).map_err(|reason| ProjectionError::InvalidSpec {
                name: name.clone(),
                reason,
            })?;
        let (control, shared) = Control::open(
            self.engine.clone(),
            Arc::new(spec),
            building.map(Arc::new),
            target,
            self.effects.clone(),
            filter,
        )?;
        let (tx, rx) = bounded(control::COMMAND_QUEUE_MAX);
        let thread = std::thread::Builder::new()
            .name(format!("proj-{name}-control"))
            .spawn(move || control.run(rx))
            .map_err(|e| ProjectionError::NotRunning {
                name: name.clone(),
                reason: format!("cannot start its thread: {e}"),
            })?;
        let mut entries = self.entries.lock();
        if entries.contains_key(&name) {
            let _ = tx.send(Command::Shutdown);
            let _ = thread.join();
            return Err(ProjectionError::AlreadyRegistered { name });
        }
        entries.insert(
            name,
            Entry {
                shared,
                commands: tx,
                thread: Some(thread),
                reader: Arc::new(Mutex::new(reader)),
            },
        );
        Ok(())
    }

    fn command<T>(
        &self,
        name: &str,
        make: impl FnOnce(Sender<Result<T, ProjectionError>>) -> Command,
    ) -> Result<T, ProjectionError> {
        let commands = self
            .entries
            .lock()
            .get(name)
            .map(|e| e.commands.clone())
            .ok_or_else(|| ProjectionError::NotFound {
                name: name.to_owned(),
            })?;
        let (tx, rx) = bounded(1);
        let unresponsive = || ProjectionError::Unresponsive {
            name: name.to_owned(),
        };
        commands.send(make(tx)).map_err(|_| unresponsive())?;
        rx.recv_timeout(COMMAND_TIMEOUT)
            .map_err(|_| unresponsive())?
    }

    /// Stops applying events (after the batches in flight) until [`Projections::resume`].
    pub fn pause(&self, name: &str) -> Result<(), ProjectionError> {
        self.command(name, Command::Pause)
    }

    /// Resumes a paused or faulted projection (a faulted one retries the failed event).
    pub fn resume(&self, name: &str) -> Result<(), ProjectionError> {
        self.command(name, Command::Resume)
    }

    /// Drops every generation (tables, views, checkpoints, failures, parked events) and starts
    /// again from the beginning as a new generation; events up to the current head replay
    /// without effects. A rebuild in progress is abandoned.
    pub fn reset(&self, name: &str) -> Result<(), ProjectionError> {
        self.command(name, Command::Reset)
    }

    /// Builds a new generation from `spec` beside the serving one and swaps to it once it has
    /// caught up; readers see the old view until then.
    pub fn rebuild(&self, name: &str, spec: ProjectionSpec) -> Result<(), ProjectionError> {
        if spec.name != name {
            return Err(ProjectionError::InvalidSpec {
                name: name.to_owned(),
                reason: format!("the new definition is named {:?}", spec.name),
            });
        }
        validate_spec(&spec)?;
        self.command(name, |reply| Command::Rebuild(Box::new(spec), reply))
    }

    /// Re-applies the serving generation's parked events in stream order; releases those that
    /// apply.
    pub fn retry_parked(&self, name: &str) -> Result<RetryReport, ProjectionError> {
        self.command(name, Command::RetryParked)
    }

    /// Recorded failures of the serving generation, newest first.
    pub fn failures(&self, name: &str) -> Result<Vec<crate::target::Failure>, ProjectionError> {
        self.command(name, Command::Failures)
    }

    /// The status of one projection.
    pub fn status(&self, name: &str) -> Result<ProjectionStatus, ProjectionError> {
        let shared = self
            .entries
            .lock()
            .get(name)
            .map(|e| Arc::clone(&e.shared))
            .ok_or_else(|| ProjectionError::NotFound {
                name: name.to_owned(),
            })?;
        Ok(self.status_of(&shared))
    }

    /// The status of every projection, by name.
    pub fn list(&self) -> Vec<ProjectionStatus> {
        let mut shared: Vec<Arc<ProjectionShared>> = self
            .entries
            .lock()
            .values()
            .map(|e| Arc::clone(&e.shared))
            .collect();
        shared.sort_by(|a, b| a.name.cmp(&b.name));
        shared.iter().map(|s| self.status_of(s)).collect()
    }

    fn status_of(&self, shared: &ProjectionShared) -> ProjectionStatus {
        let now = Instant::now();
        let view = shared.view.lock();
        let serving = Arc::clone(&view.serving);
        let building = view.building.clone();
        let state = if view.stopped {
            ProjectionState::Stopped
        } else if view.paused {
            ProjectionState::Paused
        } else if view.serving_fault.is_some() || view.building_fault.is_some() {
            ProjectionState::Faulted
        } else if building.is_some() {
            ProjectionState::Rebuilding
        } else {
            ProjectionState::Running
        };
        let last_error = view
            .serving_fault
            .clone()
            .or_else(|| view.building_fault.clone())
            .or_else(|| view.control_error.clone())
            .or_else(|| serving.retrying.lock().clone())
            .or_else(|| building.as_ref().and_then(|b| b.retrying.lock().clone()));
        drop(view);
        let position = serving.position();
        let head = self.engine.head();
        let lag_seconds = if position < head {
            self.engine
                .read_all(
                    position.next(),
                    Direction::Forwards,
                    1,
                    Some(&shared.filter),
                )
                .ok()
                .and_then(|page| page.events.into_iter().next())
                .map_or(0.0, |e| {
                    let now_ns = annals_core::Timestamp::now().0;
                    (now_ns.saturating_sub(e.created.0)).max(0) as f64 / 1e9
                })
        } else {
            0.0
        };
        let rate = serving.rate.lock().per_second(now);
        ProjectionStatus {
            name: shared.name.clone(),
            state,
            generation: serving.generation,
            partitions: serving.partitions,
            position: position.0,
            head: head.0,
            lag_events: head.0.saturating_sub(position.0),
            lag_seconds,
            rate_events_per_second: rate,
            parked: serving.parked.load(std::sync::atomic::Ordering::Acquire),
            last_error,
            rebuild: building.map(|b| RebuildStatus {
                generation: b.generation,
                position: b.position().0,
                behind_serving_events: position.0.saturating_sub(b.position().0),
            }),
        }
    }

    /// Waits until projection `name` has applied everything up to `position` (read-your-writes:
    /// pass an append's position), at most `timeout` (capped at [`WAIT_TIMEOUT_MAX`]). Returns
    /// the projection's position, or [`WaitError::Stale`] with it at the timeout.
    pub fn wait_for(
        &self,
        name: &str,
        position: Position,
        timeout: Duration,
    ) -> Result<Position, WaitError> {
        let shared = self
            .entries
            .lock()
            .get(name)
            .map(|e| Arc::clone(&e.shared))
            .ok_or_else(|| WaitError::NotFound {
                name: name.to_owned(),
            })?;
        let deadline = Instant::now() + timeout.min(WAIT_TIMEOUT_MAX);
        let mut progress = shared.progress.lock();
        loop {
            let applied = shared.position();
            if applied >= position {
                return Ok(applied);
            }
            if shared
                .progressed
                .wait_until(&mut progress, deadline)
                .timed_out()
            {
                let applied = shared.position();
                return if applied >= position {
                    Ok(applied)
                } else {
                    Err(WaitError::Stale { applied })
                };
            }
        }
    }

    /// Reads up to `limit` (at most [`TABLE_ROWS_MAX`]) rows of one of a projection's tables
    /// as readers see it (the serving generation), after `offset` rows, ordered by the first
    /// column. Answers the projection's position taken before the read: the rows reflect every
    /// event up to it (a caller that needs a position applied first calls
    /// [`Projections::wait_for`]).
    pub fn read_table(
        &self,
        name: &str,
        table: &str,
        limit: usize,
        offset: usize,
    ) -> Result<(Position, TableRows), ProjectionError> {
        let (shared, reader) = self
            .entries
            .lock()
            .get(name)
            .map(|e| (Arc::clone(&e.shared), Arc::clone(&e.reader)))
            .ok_or_else(|| ProjectionError::NotFound {
                name: name.to_owned(),
            })?;
        let tables = shared.tables.lock().clone();
        if !tables.iter().any(|t| t == table) {
            return Err(ProjectionError::NoSuchTable {
                name: name.to_owned(),
                table: table.to_owned(),
                tables,
            });
        }
        let position = shared.position();
        let rows = reader
            .lock()
            .read_table(table, limit.min(TABLE_ROWS_MAX), offset)
            .map_err(|source| ProjectionError::Target {
                name: name.to_owned(),
                source,
            })?;
        Ok((position, rows))
    }

    /// Stops every projection (each keeps what it committed). Also done on drop.
    pub fn shutdown(&self) {
        let entries: Vec<Entry> = self.entries.lock().drain().map(|(_, e)| e).collect();
        for e in &entries {
            let _ = e.commands.send(Command::Shutdown);
        }
        for mut e in entries {
            if let Some(t) = e.thread.take() {
                let _ = t.join();
            }
        }
    }

    /// Whether events at `position` would be delivered to a handler of `name` in replay mode
    /// by its serving generation (for tools and tests).
    pub fn mode_at(&self, name: &str, position: Position) -> Option<Mode> {
        let shared = self
            .entries
            .lock()
            .get(name)
            .map(|e| Arc::clone(&e.shared))?;
        let until = shared
            .view
            .lock()
            .serving
            .replay_until
            .load(std::sync::atomic::Ordering::Acquire);
        Some(if position.0 <= until {
            Mode::Replay
        } else {
            Mode::Live
        })
    }
}

impl Drop for Projections {
    fn drop(&mut self) {
        self.shutdown();
    }
}
