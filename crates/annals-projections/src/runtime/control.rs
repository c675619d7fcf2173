//! A projection's control thread: starts and stops its generations, carries out commands, and
//! drives a rebuild to its swap.
//!
//! Rebuild, step by step (generation `g` serving, `n = g + 1` building):
//! 1. `n` is created (its setup run, recorded as building) and runs from 0 in replay mode, its
//!    dispatcher held at `g`'s position (the ceiling), which the control thread raises every
//!    [`CONTROL_TICK`].
//! 2. Once `n` has reached `g`'s position and `g` is within [`SWAP_LAG_EVENTS_MAX`] of the head
//!    (or `g` is faulted, so it cannot get further), `g` is drained: its dispatcher stops and
//!    its workers apply what was queued, so all its partitions end at `P`.
//! 3. `n`'s ceiling and replay boundary become `P`; once `n` is at `P`, [`Target::swap`]
//!    repoints the views, marks `n` serving and drops `g` in one transaction.
//! 4. `n`'s ceiling is lifted and it goes on live. Readers saw `g`'s rows until the swap and
//!    `n`'s after it, never a partial view. If a step fails, `g` is started again and the swap
//!    is tried later. After a restart, the building generation found in the target resumes.
//!
//! A fenced target ([`TargetError::Fenced`]: another node holds the projection's lease now),
//! met by a worker or while starting a generation, stops every generation of the projection,
//! faulted with that error; it is not retried, since every retry would be fenced again (a
//! `resume` tries once more).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use annals_core::{Filter, Position};
use annals_engine::Engine;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::runner::{NO_CEILING, Runner, RunnerConfig, RunnerShared, wait_until};
use super::{
    FAILURES_LISTED_MAX, ProjectionError, ProjectionShared, RetryReport, check_definition,
};
use crate::bookkeeping::generation_snapshot_prefix;
use crate::handler::{EffectSink, resolve_objects};
use crate::spec::ProjectionSpec;
use crate::target::{Failure, SnapshotRecord, StoredProjection, Target, TargetError};

/// Commands waiting for a control thread.
pub(crate) const COMMAND_QUEUE_MAX: usize = 64;
/// How often the control thread looks at its generations (faults, restarts, rebuild progress).
pub(crate) const CONTROL_TICK: Duration = Duration::from_millis(10);
/// How far behind the head the serving generation may be for a rebuild to swap.
pub const SWAP_LAG_EVENTS_MAX: u64 = 4_096;
/// How long the swap waits for the new generation to reach the old one's final position.
const SWAP_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest pause between attempts to start a generation whose target is unreachable.
const START_RETRY_MAX: Duration = Duration::from_secs(5);

type Reply<T> = Sender<Result<T, ProjectionError>>;

/// What the registry asks of a control thread.
pub(crate) enum Command {
    Pause(Reply<()>),
    Resume(Reply<()>),
    Reset(Reply<()>),
    Rebuild(Box<ProjectionSpec>, Reply<()>),
    RetryParked(Reply<RetryReport>),
    Failures(Reply<Vec<Failure>>),
    Shutdown,
}

/// The key of a generation's saved replay boundary (see `runtime`'s module doc).
fn replay_key(projection: &str, generation: u32) -> String {
    format!(
        "{}replay",
        generation_snapshot_prefix(projection, generation)
    )
}

pub(crate) struct Control {
    engine: Engine,
    spec: Arc<ProjectionSpec>,
    target: Box<dyn Target>,
    effects: Option<Arc<dyn EffectSink>>,
    shared: Arc<ProjectionShared>,
    serving_generation: u32,
    serving: Option<Runner>,
    building: Option<(u32, Arc<ProjectionSpec>)>,
    building_runner: Option<Runner>,
    /// Status counters of the building generation while its runner is not running.
    building_idle: Option<Arc<RunnerShared>>,
    paused: bool,
    serving_fault: Option<String>,
    building_fault: Option<String>,
    start_retry: Duration,
    next_start: Instant,
}

impl Control {
    /// Creates the first generation if the projection is new and prepares the control state;
    /// the generations start on the thread's first tick.
    pub(crate) fn open(
        engine: Engine,
        spec: Arc<ProjectionSpec>,
        building_spec: Option<Arc<ProjectionSpec>>,
        mut target: Box<dyn Target>,
        effects: Option<Arc<dyn EffectSink>>,
        filter: Filter,
    ) -> Result<(Control, Arc<ProjectionShared>), ProjectionError> {
        let name = spec.name.clone();
        let target_err = |source| ProjectionError::Target {
            name: name.clone(),
            source,
        };
        let mut stored = target.load(&name).map_err(target_err)?;
        if stored.generations.is_empty() {
            target
                .create_generation(
                    &name,
                    1,
                    &resolved(&spec.setup, &spec, 1),
                    true,
                    &spec.tables,
                )
                .map_err(|e| definition_or_target(&name, e))?;
            stored = target.load(&name).map_err(target_err)?;
        }
        let serving = stored
            .generations
            .iter()
            .filter(|g| g.serving)
            .max_by_key(|g| g.generation)
            .or_else(|| stored.generations.first())
            .cloned()
            .ok_or_else(|| {
                target_err(TargetError::Other(
                    "no generation after creating one".into(),
                ))
            })?;
        let building = stored
            .generations
            .iter()
            .filter(|g| !g.serving && g.generation > serving.generation)
            .max_by_key(|g| g.generation)
            .map(|g| {
                let spec = building_spec.clone().unwrap_or_else(|| Arc::clone(&spec));
                (g.generation, spec)
            });
        if let Some((generation, _)) = &building {
            tracing::info!(projection = %name, generation, "resuming a rebuild");
        }
        let placeholder = Arc::new(placeholder_shared(&spec, &stored, serving.generation));
        let building_idle = building
            .as_ref()
            .map(|(g, b)| Arc::new(placeholder_shared(b, &stored, *g)));
        let shared = Arc::new(ProjectionShared::new(
            name.clone(),
            filter,
            placeholder,
            spec.tables.clone(),
        ));
        let control = Control {
            engine,
            spec,
            target,
            effects,
            shared: Arc::clone(&shared),
            serving_generation: serving.generation,
            serving: None,
            building,
            building_runner: None,
            building_idle,
            paused: false,
            serving_fault: None,
            building_fault: None,
            start_retry: CONTROL_TICK,
            next_start: Instant::now(),
        };
        Ok((control, shared))
    }

    pub(crate) fn run(mut self, rx: Receiver<Command>) {
        loop {
            match rx.recv_timeout(CONTROL_TICK) {
                Ok(Command::Shutdown) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(command) => self.command(command),
                Err(RecvTimeoutError::Timeout) => {}
            }
            self.tick();
        }
        if let Some(r) = self.building_runner.take() {
            r.stop(false);
        }
        if let Some(r) = self.serving.take() {
            r.stop(false);
        }
        self.shared.view.lock().stopped = true;
        self.shared.notify();
        tracing::info!(projection = %self.spec.name, "projection stopped");
    }

    fn name(&self) -> &str {
        &self.spec.name
    }

    fn err(&self, source: TargetError) -> ProjectionError {
        ProjectionError::Target {
            name: self.spec.name.clone(),
            source,
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Pause(reply) => {
                self.paused = true;
                // Workers stop after their current commit; what they had queued is read again
                // on resume.
                self.stop_all();
                self.publish();
                let _ = reply.send(Ok(()));
            }
            Command::Resume(reply) => {
                self.paused = false;
                self.serving_fault = None;
                self.building_fault = None;
                self.next_start = Instant::now();
                self.start_retry = CONTROL_TICK;
                self.publish();
                let _ = reply.send(Ok(()));
            }
            Command::Reset(reply) => {
                let _ = reply.send(self.reset());
            }
            Command::Rebuild(spec, reply) => {
                let _ = reply.send(self.rebuild(*spec));
            }
            Command::RetryParked(reply) => {
                let answer = match &self.serving {
                    Some(runner) => runner
                        .retry_parked()
                        .map(|(released, still_parked)| RetryReport {
                            released,
                            still_parked,
                        })
                        .map_err(|reason| ProjectionError::NotRunning {
                            name: self.name().to_owned(),
                            reason,
                        }),
                    None => Err(ProjectionError::NotRunning {
                        name: self.name().to_owned(),
                        reason: "paused, faulted or not started".to_owned(),
                    }),
                };
                let _ = reply.send(answer);
            }
            Command::Failures(reply) => {
                let answer = self
                    .target
                    .failures(
                        &self.spec.name,
                        self.serving_generation,
                        FAILURES_LISTED_MAX,
                    )
                    .map_err(|e| self.err(e));
                let _ = reply.send(answer);
            }
            Command::Shutdown => {}
        }
    }

    fn stop_all(&mut self) {
        if let Some(r) = self.building_runner.take() {
            self.building_idle = Some(r.stop(false));
        }
        if let Some(r) = self.serving.take() {
            r.stop(false);
        }
    }

    /// Publishes the control state for status readers.
    fn publish(&self) {
        let mut view = self.shared.view.lock();
        view.paused = self.paused;
        view.serving_fault = self.serving_fault.clone();
        view.building_fault = self.building_fault.clone();
        if let Some(r) = &self.serving {
            view.serving = Arc::clone(&r.shared);
        }
        view.building = match (&self.building_runner, &self.building) {
            (Some(r), _) => Some(Arc::clone(&r.shared)),
            (None, Some(_)) => self.building_idle.clone(),
            (None, None) => None,
        };
        drop(view);
        self.shared.notify();
    }

    fn set_control_error(&self, error: Option<String>) {
        self.shared.view.lock().control_error = error;
    }

    /// This node lost the projection's lease (a target answered [`TargetError::Fenced`]):
    /// stops every generation, faulted with `message`, so nothing starts them again on its own.
    fn fence_lost(&mut self, message: String) {
        tracing::error!(projection = %self.spec.name, error = %message,
            "projection stopped: another node holds its lease");
        if let Some(r) = self.building_runner.take() {
            self.building_idle = Some(r.stop(false));
        }
        if let Some(r) = self.serving.take() {
            r.stop(false);
        }
        if self.building.is_some() {
            self.building_fault = Some(message.clone());
        }
        self.serving_fault = Some(message);
        self.set_control_error(None);
        self.publish();
    }

    fn tick(&mut self) {
        // Faults: a worker stopped under the `stop` policy; stop the rest of its generation. A
        // fenced target stops the whole projection.
        if let Some(fault) = self
            .serving
            .as_ref()
            .and_then(|r| r.shared.fault.lock().clone())
        {
            let stopped = self.serving.take().map(|r| r.stop(false));
            if stopped.is_some_and(|s| s.fenced()) {
                self.fence_lost(fault);
            } else {
                tracing::error!(projection = %self.spec.name, error = %fault, "projection faulted");
                self.serving_fault = Some(fault);
                self.publish();
            }
        }
        if let Some(fault) = self
            .building_runner
            .as_ref()
            .and_then(|r| r.shared.fault.lock().clone())
        {
            let stopped = self.building_runner.take().map(|r| r.stop(false));
            let fenced = stopped.as_ref().is_some_and(|s| s.fenced());
            self.building_idle = stopped;
            if fenced {
                self.fence_lost(fault);
            } else {
                tracing::error!(projection = %self.spec.name, error = %fault, "rebuild faulted");
                self.building_fault = Some(fault);
                self.publish();
            }
        }
        if self.paused {
            return;
        }
        let missing = (self.serving.is_none() && self.serving_fault.is_none())
            || (self.building.is_some()
                && self.building_runner.is_none()
                && self.building_fault.is_none());
        if missing && Instant::now() >= self.next_start {
            match self.start_missing() {
                Ok(()) => {
                    self.start_retry = CONTROL_TICK;
                    self.set_control_error(None);
                }
                Err(e @ TargetError::Fenced(_)) => self.fence_lost(e.to_string()),
                Err(e) => {
                    tracing::warn!(projection = %self.spec.name, error = %e,
                        "cannot start projection; retrying");
                    self.set_control_error(Some(e.to_string()));
                    self.next_start = Instant::now() + self.start_retry;
                    self.start_retry = (self.start_retry * 2).min(START_RETRY_MAX);
                }
            }
            self.publish();
        }
        self.advance_rebuild();
    }

    fn start_missing(&mut self) -> Result<(), TargetError> {
        let stored = self.target.load(&self.spec.name)?;
        let checkpoints = |generation: u32| {
            stored
                .generations
                .iter()
                .find(|g| g.generation == generation)
                .map(|g| g.checkpoints.clone())
                .unwrap_or_default()
        };
        if self.serving.is_none() && self.serving_fault.is_none() {
            let replay_until = self
                .target
                .load_snapshot(&replay_key(&self.spec.name, self.serving_generation))?
                .map_or(Position(0), |s| s.position);
            let cps = checkpoints(self.serving_generation);
            let runner = Runner::start(RunnerConfig {
                engine: &self.engine,
                spec: &self.spec,
                generation: self.serving_generation,
                target: self.target.as_ref(),
                stored_checkpoints: &cps,
                replay_until,
                ceiling: NO_CEILING,
                projection: &self.shared,
                effects: self.effects.clone(),
            })?;
            self.serving = Some(runner);
        }
        if let Some((generation, spec)) = self.building.clone()
            && self.building_runner.is_none()
            && self.building_fault.is_none()
        {
            let ceiling = self.serving_position().0;
            let cps = checkpoints(generation);
            let runner = Runner::start(RunnerConfig {
                engine: &self.engine,
                spec: &spec,
                generation,
                target: self.target.as_ref(),
                stored_checkpoints: &cps,
                replay_until: Position(u64::MAX),
                ceiling,
                projection: &self.shared,
                effects: self.effects.clone(),
            })?;
            self.building_runner = Some(runner);
        }
        Ok(())
    }

    fn serving_position(&self) -> Position {
        match &self.serving {
            Some(r) => r.shared.position(),
            None => self.shared.view.lock().serving.position(),
        }
    }

    fn advance_rebuild(&mut self) {
        let Some(building) = &self.building_runner else {
            return;
        };
        let serving_pos = self.serving_position();
        building
            .shared
            .ceiling
            .store(serving_pos.0, Ordering::Release);
        let caught_up = building.shared.position() >= serving_pos;
        let serving_ready = match &self.serving {
            Some(_) => self.engine.head().0.saturating_sub(serving_pos.0) <= SWAP_LAG_EVENTS_MAX,
            // A faulted serving generation cannot get further; a rebuild is how it is fixed.
            None => self.serving_fault.is_some(),
        };
        if caught_up && serving_ready {
            if let Err(e) = self.swap() {
                tracing::warn!(projection = %self.spec.name, error = %e,
                    "rebuild swap failed; trying again later");
                self.set_control_error(Some(format!("rebuild swap: {e}")));
            }
            self.publish();
        }
    }

    /// Steps 2–4 of the module doc.
    fn swap(&mut self) -> Result<(), String> {
        let Some((to, new_spec)) = self.building.clone() else {
            return Ok(());
        };
        let from = self.serving_generation;
        if self.building_runner.is_none() {
            return Err("the new generation is not running".to_owned());
        }
        let old: Arc<RunnerShared> = match self.serving.take() {
            Some(r) => r.stop(true),
            None => Arc::clone(&self.shared.view.lock().serving),
        };
        let final_position = old.position_max();
        let Some(building) = &self.building_runner else {
            return Err("the new generation is not running".to_owned());
        };
        building
            .shared
            .replay_until
            .store(final_position.0, Ordering::Release);
        building
            .shared
            .ceiling
            .store(final_position.0, Ordering::Release);
        let reached = wait_until(SWAP_CATCH_UP_TIMEOUT, || {
            building.shared.position() >= final_position || building.finished()
        });
        // On failure the old generation is started again on the next tick; until the swap, the
        // new one must stay below it and in replay.
        let abandon = |building: &Runner, why: String| {
            building
                .shared
                .replay_until
                .store(u64::MAX, Ordering::Release);
            why
        };
        if !reached || building.shared.position() < final_position {
            return Err(abandon(
                building,
                format!("generation {to} did not reach position {final_position} in time"),
            ));
        }
        if let Err(e) = self
            .target
            .swap(&self.spec.name, Some(from), to, &new_spec.tables)
        {
            return Err(abandon(building, e.to_string()));
        }
        // Tables and views of the old definition that the new one no longer has.
        let gone: Vec<String> = self
            .spec
            .tables
            .iter()
            .filter(|t| !new_spec.tables.contains(t))
            .cloned()
            .collect();
        if !gone.is_empty()
            && let Err(e) = self
                .target
                .drop_generation(&self.spec.name, from, &gone, true)
        {
            tracing::warn!(projection = %self.spec.name, error = %e,
                "cannot drop tables the new definition no longer has");
        }
        building.shared.ceiling.store(NO_CEILING, Ordering::Release);
        tracing::info!(projection = %self.spec.name, from, to, position = final_position.0,
            "rebuild swapped in");
        self.serving = self.building_runner.take();
        self.serving_generation = to;
        *self.shared.tables.lock() = new_spec.tables.clone();
        self.spec = new_spec;
        self.building = None;
        self.serving_fault = None;
        self.building_fault = None;
        self.set_control_error(None);
        Ok(())
    }

    fn rebuild(&mut self, spec: ProjectionSpec) -> Result<(), ProjectionError> {
        if self.building.is_some() {
            return Err(ProjectionError::RebuildInProgress {
                name: self.name().to_owned(),
            });
        }
        check_definition(&spec, self.target.as_mut())?;
        let stored = self.target.load(&spec.name).map_err(|e| self.err(e))?;
        let generation = next_generation(&stored, self.serving_generation);
        self.target
            .create_generation(
                &spec.name,
                generation,
                &resolved(&spec.setup, &spec, generation),
                false,
                &spec.tables,
            )
            .map_err(|e| definition_or_target(&spec.name, e))?;
        tracing::info!(projection = %spec.name, generation, "rebuild started");
        self.building_idle = Some(Arc::new(placeholder_shared(
            &spec,
            &StoredProjection::default(),
            generation,
        )));
        self.building = Some((generation, Arc::new(spec)));
        self.building_fault = None;
        self.next_start = Instant::now();
        if !self.paused
            && let Err(e) = self.start_missing()
        {
            self.set_control_error(Some(e.to_string()));
        }
        self.publish();
        Ok(())
    }

    fn reset(&mut self) -> Result<(), ProjectionError> {
        self.stop_all();
        let name = self.spec.name.clone();
        let stored = self.target.load(&name).map_err(|e| self.err(e))?;
        let generation = next_generation(&stored, self.serving_generation);
        // The boundary is saved before anything is dropped, so a crash half-way cannot start
        // the new generation without it.
        let head = self.engine.head();
        self.target
            .save_snapshot(&SnapshotRecord {
                key: replay_key(&name, generation),
                position: head,
                state: Vec::new(),
            })
            .map_err(|e| self.err(e))?;
        let mut tables = self.spec.tables.clone();
        if let Some((_, b)) = &self.building {
            tables.extend(
                b.tables
                    .iter()
                    .filter(|t| !self.spec.tables.contains(t))
                    .cloned(),
            );
        }
        for g in &stored.generations {
            self.target
                .drop_generation(&name, g.generation, &tables, true)
                .map_err(|e| self.err(e))?;
        }
        self.target
            .create_generation(
                &name,
                generation,
                &resolved(&self.spec.setup, &self.spec, generation),
                true,
                &self.spec.tables,
            )
            .map_err(|e| definition_or_target(&name, e))?;
        tracing::info!(projection = %name, generation, replay_until = head.0, "projection reset");
        self.serving_generation = generation;
        self.building = None;
        self.serving_fault = None;
        self.building_fault = None;
        let placeholder = placeholder_shared(&self.spec, &StoredProjection::default(), generation);
        self.shared.view.lock().serving = Arc::new(placeholder);
        self.next_start = Instant::now();
        if !self.paused
            && let Err(e) = self.start_missing()
        {
            self.set_control_error(Some(e.to_string()));
        }
        self.publish();
        Ok(())
    }
}

fn next_generation(stored: &StoredProjection, serving: u32) -> u32 {
    stored
        .generations
        .iter()
        .map(|g| g.generation)
        .max()
        .unwrap_or(0)
        .max(serving)
        + 1
}

fn resolved(list: &[String], spec: &ProjectionSpec, generation: u32) -> Vec<String> {
    list.iter()
        .map(|s| resolve_objects(s, &spec.objects, generation))
        .collect()
}

fn definition_or_target(name: &str, e: TargetError) -> ProjectionError {
    match e {
        TargetError::Definition(message) => ProjectionError::Definition {
            name: name.to_owned(),
            message,
        },
        source => ProjectionError::Target {
            name: name.to_owned(),
            source,
        },
    }
}

/// Status counters for a generation before its runner starts (its stored checkpoints).
fn placeholder_shared(
    spec: &ProjectionSpec,
    stored: &StoredProjection,
    generation: u32,
) -> RunnerShared {
    let partitions = spec.partitions.max(1);
    let cps: Vec<Position> = (0..partitions)
        .map(|p| {
            stored
                .generations
                .iter()
                .find(|g| g.generation == generation)
                .and_then(|g| g.checkpoints.iter().find(|(q, _)| *q == p))
                .map_or(Position(0), |(_, pos)| *pos)
        })
        .collect();
    RunnerShared::new(generation, partitions, &cps, Position(0), NO_CEILING)
}
