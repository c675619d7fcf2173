//! A partition worker: turns queued pages into batches, runs the handler, commits statements and
//! checkpoint together, and applies the error policy.
//!
//! A batch is whatever is queued, up to [`PROJECTION_BATCH_EVENTS_MAX`] events: while catching up that is
//! many pages, when live it is the one page that just arrived, so an append reaches the view
//! after one commit. Events at or below the partition's checkpoint are skipped (they were
//! committed before a restart).
//!
//! Failures: [`TargetError::Unavailable`] (and other non-statement target errors) are retried
//! without end with capped backoff and never count against an event. [`TargetError::Fenced`]
//! (another node holds the projection's lease) is never retried: the worker ends with it as the
//! generation's fault, and the control thread stops the projection. A handler error or a
//! [`TargetError::Statement`] is pinned to one event (by the statement's index, or by applying
//! the batch's events one by one); the events before it are committed, the event is retried
//! `attempts` times with exponential backoff, and then the policy decides: stop (fault, checkpoint
//! before the event), skip, or park the event and every later event of its stream.
//!
//! Handler state: a handler that keeps state (`snapshot_every` set) has its state taken before
//! each batch and restored if the batch does not commit, so a retried event is not folded in
//! twice; its snapshot is committed with the checkpoint every `snapshot_every` events, and on
//! start the events between the snapshot and the checkpoint are fed to it again with their
//! statements and effects discarded (warm-up).

use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use annals_core::{Direction, EventRecord, Position};
use annals_engine::Engine;
use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::ProjectionShared;
use super::runner::{RunnerShared, WorkerMsg, partition_of};
use crate::bookkeeping::generation_snapshot_prefix;
use crate::handler::{Effect, EffectSink, Handler, HandlerContext, Mode, Resolver};
use crate::spec::{OnFailure, ProjectionSpec};
use crate::target::{
    Failure, FailureAction, Parked, PartitionCommit, SnapshotRecord, Statement, Target, TargetError,
};

/// Most events one batch (one target transaction) holds. While catching up a batch takes several
/// subscription pages: each commit rewrites and syncs the index pages it touched, so with random
/// keys fewer, larger commits rebuild views faster (`annals bench project`, SQLite: one page per
/// commit 0.18–0.21 of the bulk-insert baseline, 16 Ki events 0.40–0.50, 64 Ki events ~14%
/// faster again). A batch starts as soon as one page is queued, so live latency is unaffected.
pub const PROJECTION_BATCH_EVENTS_MAX: usize = 65_536;
/// Most event bytes (data and metadata) one batch holds, so large events keep a batch's memory
/// bounded whatever [`PROJECTION_BATCH_EVENTS_MAX`] allows.
pub const PROJECTION_BATCH_BYTES_MAX: usize = 32 * 1024 * 1024;
/// How long an idle worker waits for a page before looking at its stop flag.
const WORKER_IDLE_WAIT: Duration = Duration::from_millis(50);
/// First and longest pause while the target is unavailable.
const UNAVAILABLE_BACKOFF_INITIAL: Duration = Duration::from_millis(10);
const UNAVAILABLE_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Least time between commits of a checkpoint alone. A page with no events for a partition moves
/// its checkpoint in memory at once (status and `wait_for` see it); the checkpoint is committed
/// with the partition's next events, or once this long has passed, or when the worker ends.
/// Until then a restart reads those event-less positions again, which applies nothing.
pub const IDLE_CHECKPOINT_COMMIT_INTERVAL: Duration = Duration::from_millis(500);
/// Slice a backoff sleep is cut into so a stop is noticed quickly.
const SLEEP_SLICE: Duration = Duration::from_millis(20);

/// The snapshot key of a projection partition (see `target`'s module doc).
pub(crate) fn partition_snapshot_key(projection: &str, generation: u32, partition: u32) -> String {
    format!(
        "{}p{partition}",
        generation_snapshot_prefix(projection, generation)
    )
}

/// What a worker knows before its thread starts.
#[derive(Debug)]
pub(crate) struct WorkerSetup {
    partition: u32,
    target: Box<dyn Target>,
    handler: HandlerBox,
    checkpoint: Position,
    /// Events at or below this are already in the handler's state (its snapshot).
    skip_until: Position,
    parked_streams: HashSet<String>,
}

struct HandlerBox(Box<dyn Handler>);

impl std::fmt::Debug for HandlerBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handler")
    }
}

impl WorkerSetup {
    pub(crate) fn prepare(
        mut target: Box<dyn Target>,
        spec: &ProjectionSpec,
        generation: u32,
        partition: u32,
        checkpoint: Position,
        shared: &RunnerShared,
    ) -> Result<Self, TargetError> {
        let parked = target.parked(&spec.name, generation)?;
        let mut parked_streams = HashSet::new();
        let mut parked_here = 0;
        for p in parked {
            if partition_of(&p.stream, shared.partitions) == partition {
                parked_here += 1;
                parked_streams.insert(p.stream);
            }
        }
        shared.parked.fetch_add(parked_here, Ordering::AcqRel);
        let mut handler = (spec.handler)();
        let mut skip_until = checkpoint;
        if spec.snapshot_every.is_some() {
            let key = partition_snapshot_key(&spec.name, generation, partition);
            skip_until = Position(0);
            if let Some(snapshot) = target.load_snapshot(&key)? {
                match handler.restore(&snapshot.state) {
                    Ok(()) => skip_until = snapshot.position.min(checkpoint),
                    Err(e) => {
                        tracing::warn!(projection = %spec.name, partition, error = %e,
                            "snapshot does not restore; rebuilding handler state from the start");
                        handler = (spec.handler)();
                    }
                }
            }
        }
        Ok(Self {
            partition,
            target,
            handler: HandlerBox(handler),
            checkpoint,
            skip_until,
            parked_streams,
        })
    }

    /// The position after which this partition needs events (warm-up included).
    pub(crate) fn resume_from(&self) -> Position {
        self.skip_until.min(self.checkpoint)
    }
}

/// Why a batch did not commit.
enum BatchError {
    /// The event at this index of the batch failed (handler or statement).
    Event { index: usize, message: String },
    /// A statement failed but the target could not say which.
    Unknown(String),
    /// The worker is stopping.
    Stopped,
}

/// The worker must end (abort, or a fault under the `stop` policy).
struct Stopped;

/// A commit given up because the worker is stopping while the target is unavailable; holds the
/// target's last answer.
struct Interrupted(TargetError);

pub(crate) struct Worker {
    setup: WorkerSetup,
    spec: Arc<ProjectionSpec>,
    shared: Arc<RunnerShared>,
    projection: Arc<ProjectionShared>,
    engine: Engine,
    effects: Option<Arc<dyn EffectSink>>,
    resolver: Resolver,
    since_snapshot: u64,
    /// The checkpoint last committed (the in-memory one may be ahead, see
    /// [`IDLE_CHECKPOINT_COMMIT_INTERVAL`]).
    durable: Position,
    last_commit: Instant,
}

impl Worker {
    pub(crate) fn new(
        setup: WorkerSetup,
        spec: Arc<ProjectionSpec>,
        shared: Arc<RunnerShared>,
        projection: Arc<ProjectionShared>,
        engine: Engine,
        effects: Option<Arc<dyn EffectSink>>,
    ) -> Self {
        let resolver = Resolver::new(spec.objects.clone().into(), shared.generation);
        let durable = setup.checkpoint;
        Self {
            setup,
            spec,
            shared,
            projection,
            engine,
            effects,
            resolver,
            since_snapshot: 0,
            durable,
            last_commit: Instant::now(),
        }
    }

    pub(crate) fn partition(&self) -> u32 {
        self.setup.partition
    }

    pub(crate) fn run(mut self, rx: Receiver<WorkerMsg>) {
        self.run_pages(&rx);
        self.flush_checkpoint();
    }

    /// Makes a checkpoint that advanced in memory only durable before the worker ends. If that
    /// fails nothing is lost (the next start reads those positions again, and they held no
    /// events of this partition), but the projection is behind where its status said, so the
    /// failure is logged and kept as the generation's last error rather than dropped.
    fn flush_checkpoint(&mut self) {
        if self.durable >= self.setup.checkpoint || self.shared.fault.lock().is_some() {
            return;
        }
        let checkpoint = self.setup.checkpoint;
        if let Err(e) = self.try_commit_bookkeeping(checkpoint, &[], &[]) {
            tracing::warn!(projection = %self.spec.name, partition = self.setup.partition,
                checkpoint = checkpoint.0, durable = self.durable.0, error = %e,
                "checkpoint not committed before the worker ended; the next start reads from the last committed one");
            *self.shared.retrying.lock() = Some(format!(
                "partition {}: checkpoint {} not committed before the worker ended (committed: {}): {e}",
                self.setup.partition, checkpoint.0, self.durable.0
            ));
        }
    }

    fn run_pages(&mut self, rx: &Receiver<WorkerMsg>) {
        loop {
            if self.shared.stopping() {
                return;
            }
            let first = match rx.recv_timeout(WORKER_IDLE_WAIT) {
                Ok(msg) => msg,
                Err(RecvTimeoutError::Timeout) => {
                    if self.durable < self.setup.checkpoint
                        && self.last_commit.elapsed() >= IDLE_CHECKPOINT_COMMIT_INTERVAL
                        && self
                            .commit_bookkeeping(self.setup.checkpoint, &[], &[])
                            .is_err()
                    {
                        return;
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut batch = Vec::new();
            let mut batch_bytes = 0usize;
            let mut checkpoint = self.setup.checkpoint;
            let mut deferred = None;
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    WorkerMsg::Page {
                        events,
                        checkpoint: cp,
                    } => {
                        for event in events {
                            batch_bytes += event.data.len() + event.metadata.len();
                            self.admit(event, &mut batch);
                        }
                        checkpoint = checkpoint.max(cp);
                    }
                    WorkerMsg::RetryParked(reply) => {
                        deferred = Some(reply);
                        break;
                    }
                }
                if batch.len() >= PROJECTION_BATCH_EVENTS_MAX
                    || batch_bytes >= PROJECTION_BATCH_BYTES_MAX
                {
                    break;
                }
                next = rx.try_recv().ok();
            }
            if (checkpoint > self.setup.checkpoint || !batch.is_empty())
                && self.process(&batch, checkpoint).is_err()
            {
                return;
            }
            if let Some(reply) = deferred {
                let answer = self.retry_parked();
                let _ = reply.send(answer);
            }
        }
    }

    /// Puts an event in the batch, or feeds it to the handler's warm-up, or drops it as done.
    fn admit(&mut self, event: EventRecord, batch: &mut Vec<EventRecord>) {
        if event.position > self.setup.checkpoint {
            batch.push(event);
        } else if event.position > self.setup.skip_until {
            // Applied before the restart, but after the handler's snapshot: rebuild its state.
            if !self.setup.parked_streams.contains(event.stream.as_str()) {
                let mut statements = Vec::new();
                let mut effects = Vec::new();
                let mut ctx = HandlerContext::new(
                    Mode::Replay,
                    &mut self.resolver,
                    &mut statements,
                    &mut effects,
                );
                if let Err(e) = self.setup.handler.0.handle(&event, &mut ctx) {
                    tracing::debug!(position = event.position.0, error = %e,
                        "event failed during warm-up (it failed before too)");
                }
            }
            self.setup.skip_until = event.position;
        }
    }

    fn mode(&self, position: Position) -> Mode {
        if position.0 <= self.shared.replay_until.load(Ordering::Acquire) {
            Mode::Replay
        } else {
            Mode::Live
        }
    }

    /// Applies `events` and commits `checkpoint`, pinning and handling failures.
    fn process(&mut self, events: &[EventRecord], checkpoint: Position) -> Result<(), Stopped> {
        if events.is_empty() && self.last_commit.elapsed() < IDLE_CHECKPOINT_COMMIT_INTERVAL {
            // Nothing of this partition to apply: no transaction needed to move on.
            self.advance(checkpoint);
            return Ok(());
        }
        let mut rest = events;
        let mut one_by_one = false;
        loop {
            if one_by_one {
                for event in rest {
                    match self.apply(std::slice::from_ref(event), event.position, &[], false) {
                        Ok(()) => {}
                        Err(BatchError::Stopped) => return Err(Stopped),
                        Err(BatchError::Event { message, .. } | BatchError::Unknown(message)) => {
                            self.failing_event(event, message)?;
                        }
                    }
                }
                return match self.apply(&[], checkpoint, &[], false) {
                    Ok(()) => Ok(()),
                    Err(_) => Err(Stopped),
                };
            }
            match self.apply(rest, checkpoint, &[], false) {
                Ok(()) => return Ok(()),
                Err(BatchError::Stopped) => return Err(Stopped),
                Err(BatchError::Unknown(_)) => one_by_one = true,
                Err(BatchError::Event { index, message }) => {
                    let Some(event) = rest.get(index) else {
                        one_by_one = true;
                        continue;
                    };
                    let before = rest.get(..index).unwrap_or_default();
                    // Commit what precedes the failing event (it may itself fail: go again).
                    self.process(before, Position(event.position.0 - 1))?;
                    self.failing_event(event, message)?;
                    rest = rest.get(index + 1..).unwrap_or_default();
                }
            }
        }
    }

    /// Retries one failing event, then applies the policy.
    fn failing_event(&mut self, event: &EventRecord, mut message: String) -> Result<(), Stopped> {
        let policy = self.spec.policy;
        let mut delay = policy.backoff_initial;
        for attempt in 2..=policy.attempts.max(1) {
            tracing::debug!(projection = %self.spec.name, position = event.position.0,
                attempt, error = %message, "retrying a failed event");
            self.sleep(delay)?;
            delay = (delay * 2).min(policy.backoff_max);
            match self.apply(std::slice::from_ref(event), event.position, &[], false) {
                Ok(()) => return Ok(()),
                Err(BatchError::Stopped) => return Err(Stopped),
                Err(BatchError::Event { message: m, .. } | BatchError::Unknown(m)) => message = m,
            }
        }
        let action = match policy.on_failure {
            OnFailure::Stop => FailureAction::Stopped,
            OnFailure::Skip => FailureAction::Skipped,
            OnFailure::Park => FailureAction::Parked,
        };
        tracing::warn!(projection = %self.spec.name, generation = self.shared.generation,
            position = event.position.0, stream = %event.stream, action = action.as_str(),
            error = %message, "projection event failed");
        let failure = Failure {
            position: event.position,
            stream: event.stream.to_string(),
            revision: event.revision.0,
            event_type: event.event_type.to_string(),
            message: message.clone(),
            action,
            recorded_at_ms: now_ms(),
        };
        match policy.on_failure {
            OnFailure::Stop => {
                let before = Position(event.position.0 - 1);
                self.commit_bookkeeping(before, &[failure], &[])?;
                *self.shared.fault.lock() = Some(format!(
                    "event {} of {} (position {}) failed: {message}",
                    event.revision.0, event.stream, event.position.0
                ));
                self.projection.notify();
                Err(Stopped)
            }
            OnFailure::Skip => self.commit_bookkeeping(event.position, &[failure], &[]),
            OnFailure::Park => {
                let parked = Parked {
                    position: event.position,
                    stream: event.stream.to_string(),
                    revision: event.revision.0,
                    reason: message,
                };
                self.commit_bookkeeping(event.position, &[failure], &[parked])?;
                self.setup.parked_streams.insert(event.stream.to_string());
                self.shared.parked.fetch_add(1, Ordering::AcqRel);
                Ok(())
            }
        }
    }

    /// Commits a checkpoint with failures and parked rows only.
    fn commit_bookkeeping(
        &mut self,
        checkpoint: Position,
        failures: &[Failure],
        parked: &[Parked],
    ) -> Result<(), Stopped> {
        self.try_commit_bookkeeping(checkpoint, failures, parked)
            .map_err(|_| Stopped)
    }

    /// As [`Worker::commit_bookkeeping`], answering why nothing was committed: the target
    /// refused the rows (recorded as the generation's fault too) or was still unavailable when
    /// the worker was told to stop.
    fn try_commit_bookkeeping(
        &mut self,
        checkpoint: Position,
        failures: &[Failure],
        parked: &[Parked],
    ) -> Result<(), TargetError> {
        let commit = PartitionCommit {
            projection: &self.spec.name,
            generation: self.shared.generation,
            partition: self.setup.partition,
            statements: &[],
            checkpoint: checkpoint.max(self.setup.checkpoint),
            failures,
            parked,
            released: &[],
            snapshot: None,
        };
        match commit_retrying(self.setup.target.as_mut(), &commit, &self.shared) {
            Ok(Ok(())) => {
                self.committed(commit.checkpoint, 0);
                Ok(())
            }
            Ok(Err(e)) => {
                // Bookkeeping rows never fail for their values; treat it as a fault.
                *self.shared.fault.lock() = Some(format!("recording a failure failed: {e}"));
                Err(e)
            }
            Err(Interrupted(e)) => Err(e),
        }
    }

    /// Runs the handler over `events` and commits their statements with `checkpoint` (and
    /// `released`) in one transaction. On failure the handler's state is as before the call.
    fn apply(
        &mut self,
        events: &[EventRecord],
        checkpoint: Position,
        released: &[Position],
        ignore_parked: bool,
    ) -> Result<(), BatchError> {
        let stateful = self.spec.snapshot_every.is_some();
        let before = if stateful {
            self.setup.handler.0.snapshot()
        } else {
            None
        };
        let mut statements: Vec<Statement> = Vec::new();
        let mut ranges: Vec<Range<usize>> = Vec::with_capacity(events.len());
        let mut effects: Vec<Effect> = Vec::new();
        let mut parked = Vec::new();
        let mut applied = 0u64;
        for (index, event) in events.iter().enumerate() {
            let start = statements.len();
            if !ignore_parked && self.setup.parked_streams.contains(event.stream.as_str()) {
                parked.push(Parked {
                    position: event.position,
                    stream: event.stream.to_string(),
                    revision: event.revision.0,
                    reason: "stream parked".to_owned(),
                });
                ranges.push(start..start);
                continue;
            }
            let mode = self.mode(event.position);
            let mut event_effects = Vec::new();
            let mut ctx = HandlerContext::new(
                mode,
                &mut self.resolver,
                &mut statements,
                &mut event_effects,
            );
            if let Err(e) = self.setup.handler.0.handle(event, &mut ctx) {
                self.restore(before.as_deref());
                return Err(BatchError::Event {
                    index,
                    message: format!("handler: {e}"),
                });
            }
            if mode == Mode::Live {
                effects.extend(event_effects);
            }
            applied += 1;
            ranges.push(start..statements.len());
        }
        let checkpoint = checkpoint.max(self.setup.checkpoint);
        let snapshot = match self.spec.snapshot_every {
            Some(every) if self.since_snapshot + applied >= every && applied > 0 => {
                self.setup.handler.0.snapshot().map(|state| SnapshotRecord {
                    key: partition_snapshot_key(
                        &self.spec.name,
                        self.shared.generation,
                        self.setup.partition,
                    ),
                    position: checkpoint,
                    state,
                })
            }
            _ => None,
        };
        let failures: [Failure; 0] = [];
        let commit = PartitionCommit {
            projection: &self.spec.name,
            generation: self.shared.generation,
            partition: self.setup.partition,
            statements: &statements,
            checkpoint,
            failures: &failures,
            parked: &parked,
            released,
            snapshot: snapshot.as_ref(),
        };
        match commit_retrying(self.setup.target.as_mut(), &commit, &self.shared) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.restore(before.as_deref());
                return Err(match e {
                    TargetError::Statement {
                        index: Some(i),
                        message,
                    } => match ranges.iter().position(|r| r.contains(&i)) {
                        Some(index) => BatchError::Event { index, message },
                        None => BatchError::Unknown(message),
                    },
                    other => BatchError::Unknown(other.to_string()),
                });
            }
            Err(Interrupted(_)) => {
                self.restore(before.as_deref());
                return Err(BatchError::Stopped);
            }
        }
        if snapshot.is_some() {
            self.since_snapshot = 0;
        } else {
            self.since_snapshot += applied;
        }
        self.shared
            .parked
            .fetch_add(parked.len() as u64, Ordering::AcqRel);
        // Effects go out before the position is published, so a reader that waited for the
        // position also sees the effects' consequences started.
        if let Some(sink) = &self.effects {
            for effect in &effects {
                if let Err(e) = sink.deliver(&self.spec.name, effect) {
                    tracing::warn!(projection = %self.spec.name, error = %e,
                        "effect delivery failed");
                }
            }
        }
        self.committed(checkpoint, applied);
        Ok(())
    }

    fn restore(&mut self, state: Option<&[u8]>) {
        if let Some(state) = state
            && let Err(e) = self.setup.handler.0.restore(state)
        {
            tracing::error!(projection = %self.spec.name, error = %e,
                "handler state does not restore after a failed batch");
        }
    }

    fn committed(&mut self, checkpoint: Position, applied: u64) {
        self.durable = checkpoint;
        self.last_commit = Instant::now();
        if applied > 0 {
            self.shared.rate.lock().record(applied, Instant::now());
        }
        *self.shared.retrying.lock() = None;
        // Last: publishing the position wakes `wait_for`, whose caller may read the status.
        self.advance(checkpoint);
        self.projection.notify();
    }

    /// Moves the in-memory checkpoint (what status and `wait_for` see).
    fn advance(&mut self, checkpoint: Position) {
        if checkpoint <= self.setup.checkpoint {
            return;
        }
        self.setup.checkpoint = checkpoint;
        self.setup.skip_until = self.setup.skip_until.max(checkpoint);
        self.shared.set_checkpoint(self.setup.partition, checkpoint);
        self.projection.notify();
    }

    fn sleep(&self, total: Duration) -> Result<(), Stopped> {
        let deadline = Instant::now() + total;
        loop {
            if self.shared.stopping() {
                return Err(Stopped);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            std::thread::sleep((deadline - now).min(SLEEP_SLICE));
        }
    }

    /// Re-applies this partition's parked events, stream by stream in order; a stream is
    /// released up to its first event that still fails. Answers (released, still parked).
    fn retry_parked(&mut self) -> Result<(u64, u64), String> {
        let parked = self
            .setup
            .target
            .parked(&self.spec.name, self.shared.generation)
            .map_err(|e| e.to_string())?;
        let mine: Vec<Parked> = parked
            .into_iter()
            .filter(|p| partition_of(&p.stream, self.shared.partitions) == self.setup.partition)
            .collect();
        let mut streams: Vec<&str> = Vec::new();
        for p in &mine {
            if !streams.contains(&p.stream.as_str()) {
                streams.push(&p.stream);
            }
        }
        let (mut released, mut still) = (0u64, 0u64);
        for stream in streams {
            let events: Vec<&Parked> = mine.iter().filter(|p| p.stream == stream).collect();
            let mut blocked = false;
            for p in &events {
                if blocked {
                    still += 1;
                    continue;
                }
                let event = self.read_event(p.position)?;
                let outcome = match &event {
                    Some(event) => self.apply(
                        std::slice::from_ref(event),
                        self.setup.checkpoint,
                        &[p.position],
                        true,
                    ),
                    // The event is gone from the log (it cannot be, but do not hold the stream).
                    None => self.apply(&[], self.setup.checkpoint, &[p.position], true),
                };
                match outcome {
                    Ok(()) => {
                        released += 1;
                        self.shared.parked.fetch_sub(1, Ordering::AcqRel);
                    }
                    Err(BatchError::Stopped) => return Err("the projection stopped".to_owned()),
                    Err(BatchError::Event { message, .. } | BatchError::Unknown(message)) => {
                        tracing::info!(projection = %self.spec.name, stream, position = p.position.0,
                            error = %message, "parked event still fails; stream stays parked");
                        blocked = true;
                        still += 1;
                    }
                }
            }
            if !blocked {
                self.setup.parked_streams.remove(stream);
            }
        }
        Ok((released, still))
    }

    fn read_event(&self, position: Position) -> Result<Option<EventRecord>, String> {
        let page = self
            .engine
            .read_all(position, Direction::Forwards, 1, None)
            .map_err(|e| e.to_string())?;
        Ok(page.events.into_iter().find(|e| e.position == position))
    }
}

/// Commits, retrying without end while the target is unavailable. The outer error means the
/// worker is stopping (asked to, or its target was fenced: then the fault is recorded here);
/// the inner one is the batch's fault.
fn commit_retrying(
    target: &mut dyn Target,
    commit: &PartitionCommit<'_>,
    shared: &RunnerShared,
) -> Result<Result<(), TargetError>, Interrupted> {
    let mut delay = UNAVAILABLE_BACKOFF_INITIAL;
    loop {
        match target.commit(commit) {
            Ok(()) => return Ok(Ok(())),
            Err(e @ (TargetError::Statement { .. } | TargetError::Definition(_))) => {
                return Ok(Err(e));
            }
            Err(e @ TargetError::Fenced(_)) => {
                tracing::error!(projection = commit.projection, partition = commit.partition,
                    error = %e, "projection target fenced; stopping");
                shared.fence_lost(&e);
                return Err(Interrupted(e));
            }
            Err(e) => {
                tracing::warn!(projection = commit.projection, partition = commit.partition,
                    error = %e, "projection target unavailable; retrying");
                *shared.retrying.lock() = Some(e.to_string());
                let deadline = Instant::now() + delay;
                while Instant::now() < deadline {
                    if shared.stopping() {
                        return Err(Interrupted(e));
                    }
                    std::thread::sleep(SLEEP_SLICE.min(delay));
                }
                delay = (delay * 2).min(UNAVAILABLE_BACKOFF_MAX);
            }
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
