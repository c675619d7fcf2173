//! One running generation of a projection: a dispatcher thread and one worker thread per
//! partition.
//!
//! The dispatcher reads the subscription from the low-watermark of the partition checkpoints,
//! routes each event by a stable hash of its stream name (`crc32c(stream) % partitions`) to
//! its partition's bounded queue, and sends every partition the page's checkpoint (even with no
//! events), so partitions without events still advance. Per-stream order holds because one
//! stream always lands in one partition and each queue is FIFO.
//!
//! A runner stops in one of two ways: *drain* (the dispatcher stops reading, the workers apply
//! everything already queued, so all partitions end at the same checkpoint; used before a swap
//! and for pause) or *abort* (workers stop after their current commit; used at shutdown and on
//! a fault). Either way every commit is whole: what a worker had not committed is read again on
//! the next start.
//!
//! A *ceiling* keeps a rebuild's generation from passing the serving generation: the dispatcher
//! never hands out an event above it. Everything the building generation applies has therefore
//! already been applied by the serving one, which is what makes it safe to replay it without
//! effects (see `runtime` for the exact replay rule).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use annals_core::{EventRecord, Filter, Position};
use annals_engine::{Engine, EngineError};
use crossbeam_channel::{Sender, bounded};
use parking_lot::Mutex;

use super::ProjectionShared;
use super::worker::{Worker, WorkerSetup};
use crate::handler::EffectSink;
use crate::spec::{ProjectionSpec, Source};
use crate::status::Rate;
use crate::target::{Target, TargetError};

/// Pages a partition's queue holds before the dispatcher waits for the worker.
pub(crate) const WORKER_QUEUE_PAGES_MAX: usize = 16;
/// How long the dispatcher waits for new events before looking at its stop flags again.
const DISPATCH_WAIT: Duration = Duration::from_millis(50);
/// How often a dispatcher held at its ceiling looks whether the ceiling rose.
const CEILING_POLL: Duration = Duration::from_millis(2);
/// Longest pause after a failed read of the log before reading again.
const READ_RETRY_MAX: Duration = Duration::from_secs(2);
/// Longest `retry_parked` waits for a partition's answer (a partition whose target is down
/// cannot answer until it is back).
const RETRY_PARKED_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a drain waits for the workers to apply what was queued.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// No ceiling.
pub(crate) const NO_CEILING: u64 = u64::MAX;

/// What a worker receives.
#[derive(Debug)]
pub(crate) enum WorkerMsg {
    /// A page's events of this partition and the page's checkpoint.
    Page {
        events: Vec<EventRecord>,
        checkpoint: Position,
    },
    /// Re-apply this partition's parked events; answer with (released, still parked).
    RetryParked(Sender<Result<(u64, u64), String>>),
}

/// State a runner shares with the registry (status) and its threads.
#[derive(Debug)]
pub(crate) struct RunnerShared {
    pub(crate) generation: u32,
    pub(crate) partitions: u32,
    checkpoints: Vec<AtomicU64>,
    /// Events at or below this position are applied in [`crate::Mode::Replay`].
    pub(crate) replay_until: AtomicU64,
    /// The dispatcher hands out no event above this position.
    pub(crate) ceiling: AtomicU64,
    /// Abort: workers stop after their current commit.
    pub(crate) stop: AtomicBool,
    /// Drain: the dispatcher stops reading; workers finish their queues.
    pub(crate) drain: AtomicBool,
    /// Set by a worker whose event failed under the `stop` policy, or whose target was fenced.
    pub(crate) fault: Mutex<Option<String>>,
    /// Set with `fault` when the fault is a fenced target ([`TargetError::Fenced`]): another
    /// node holds the projection's lease, so the whole projection stops.
    fenced: AtomicBool,
    /// The error being retried (target unavailable, log unreadable), or why a worker that ended
    /// could not commit the checkpoint it had reached; cleared by the next successful commit.
    pub(crate) retrying: Mutex<Option<String>>,
    pub(crate) parked: AtomicU64,
    pub(crate) rate: Mutex<Rate>,
}

impl RunnerShared {
    pub(crate) fn new(
        generation: u32,
        partitions: u32,
        checkpoints: &[Position],
        replay_until: Position,
        ceiling: u64,
    ) -> Self {
        Self {
            generation,
            partitions,
            checkpoints: checkpoints.iter().map(|p| AtomicU64::new(p.0)).collect(),
            replay_until: AtomicU64::new(replay_until.0),
            ceiling: AtomicU64::new(ceiling),
            stop: AtomicBool::new(false),
            drain: AtomicBool::new(false),
            fault: Mutex::new(None),
            fenced: AtomicBool::new(false),
            retrying: Mutex::new(None),
            parked: AtomicU64::new(0),
            rate: Mutex::new(Rate::default()),
        }
    }

    /// The low-watermark: every event up to here is applied, skipped or parked.
    pub(crate) fn position(&self) -> Position {
        Position(
            self.checkpoints
                .iter()
                .map(|c| c.load(Ordering::Acquire))
                .min()
                .unwrap_or(0),
        )
    }

    /// The highest partition checkpoint.
    pub(crate) fn position_max(&self) -> Position {
        Position(
            self.checkpoints
                .iter()
                .map(|c| c.load(Ordering::Acquire))
                .max()
                .unwrap_or(0),
        )
    }

    pub(crate) fn set_checkpoint(&self, partition: u32, position: Position) {
        if let Some(c) = self.checkpoints.get(partition as usize) {
            c.store(position.0, Ordering::Release);
        }
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Records that a worker's target refused a write because another node holds the lease:
    /// the generation's fault (replacing any other, since nothing else can be fixed here now).
    pub(crate) fn fence_lost(&self, error: &TargetError) {
        if !self.fenced.swap(true, Ordering::AcqRel) {
            *self.fault.lock() = Some(error.to_string());
        }
    }

    /// Whether the generation's fault is a fenced target.
    pub(crate) fn fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire)
    }
}

/// The partition of a stream: stable across runs and machines.
pub(crate) fn partition_of(stream: &str, partitions: u32) -> u32 {
    crc32c::crc32c(stream.as_bytes()) % partitions.max(1)
}

/// The server-side filter for a source, and whether events need an exact check on top (prefix
/// filters also match longer names).
pub(crate) fn source_filter(source: &Source) -> Result<Filter, String> {
    source.filter().map_err(|e| e.to_string())
}

/// Everything needed to start a generation.
pub(crate) struct RunnerConfig<'a> {
    pub(crate) engine: &'a Engine,
    pub(crate) spec: &'a Arc<ProjectionSpec>,
    pub(crate) generation: u32,
    /// The control connection; workers get their own with `connect_another`.
    pub(crate) target: &'a dyn Target,
    pub(crate) stored_checkpoints: &'a [(u32, Position)],
    pub(crate) replay_until: Position,
    pub(crate) ceiling: u64,
    pub(crate) projection: &'a Arc<ProjectionShared>,
    pub(crate) effects: Option<Arc<dyn EffectSink>>,
}

/// A started generation.
#[derive(Debug)]
pub(crate) struct Runner {
    pub(crate) shared: Arc<RunnerShared>,
    senders: Vec<Sender<WorkerMsg>>,
    dispatcher: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
}

impl Runner {
    /// Connects one target per partition, loads parked streams and snapshots, and starts the
    /// threads. Fails without starting anything if the target cannot be reached.
    pub(crate) fn start(config: RunnerConfig<'_>) -> Result<Runner, TargetError> {
        let spec = config.spec;
        let partitions = spec.partitions.max(1);
        let stored: HashMap<u32, Position> = config.stored_checkpoints.iter().copied().collect();
        let checkpoints: Vec<Position> = (0..partitions)
            .map(|p| stored.get(&p).copied().unwrap_or(Position(0)))
            .collect();
        let shared = Arc::new(RunnerShared::new(
            config.generation,
            partitions,
            &checkpoints,
            config.replay_until,
            config.ceiling,
        ));
        let mut setups = Vec::with_capacity(partitions as usize);
        for partition in 0..partitions {
            let target = config.target.connect_another()?;
            let checkpoint = checkpoints
                .get(partition as usize)
                .copied()
                .unwrap_or_default();
            setups.push(WorkerSetup::prepare(
                target,
                spec,
                config.generation,
                partition,
                checkpoint,
                &shared,
            )?);
        }
        let filter = source_filter(&spec.source).map_err(TargetError::Definition)?;
        let start = setups
            .iter()
            .map(|s| s.resume_from())
            .min()
            .unwrap_or_default()
            .next();
        let mut senders = Vec::with_capacity(setups.len());
        let mut workers = Vec::with_capacity(setups.len());
        for setup in setups {
            let (tx, rx) = bounded(WORKER_QUEUE_PAGES_MAX);
            senders.push(tx);
            let worker = Worker::new(
                setup,
                Arc::clone(spec),
                Arc::clone(&shared),
                Arc::clone(config.projection),
                config.engine.clone(),
                config.effects.clone(),
            );
            let name = format!("proj-{}-p{}", spec.name, worker.partition());
            workers.push(spawn(name, move || worker.run(rx))?);
        }
        let dispatcher = Dispatcher {
            engine: config.engine.clone(),
            source: spec.source.clone(),
            filter,
            senders: senders.clone(),
            shared: Arc::clone(&shared),
        };
        let dispatcher = spawn(format!("proj-{}-dispatch", spec.name), move || {
            dispatcher.run(start)
        })?;
        tracing::info!(
            projection = %spec.name,
            generation = config.generation,
            partitions,
            from = start.0,
            "projection generation started"
        );
        Ok(Runner {
            shared,
            senders,
            dispatcher: Some(dispatcher),
            workers,
        })
    }

    /// Asks every worker to retry its parked events; answers (released, still parked).
    pub(crate) fn retry_parked(&self) -> Result<(u64, u64), String> {
        let mut replies = Vec::with_capacity(self.senders.len());
        for tx in &self.senders {
            let (reply_tx, reply_rx) = bounded(1);
            tx.send(WorkerMsg::RetryParked(reply_tx))
                .map_err(|_| "the projection is not running".to_owned())?;
            replies.push(reply_rx);
        }
        let deadline = Instant::now() + RETRY_PARKED_TIMEOUT;
        let mut total = (0, 0);
        for rx in replies {
            let (released, parked) = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .map_err(|_| "a partition did not finish its retry in time".to_owned())??;
            total.0 += released;
            total.1 += parked;
        }
        Ok(total)
    }

    /// Stops the generation (see the module doc for `drain`) and waits for its threads. A drain
    /// that has not finished within [`DRAIN_TIMEOUT`] (a target down, say) becomes an abort.
    pub(crate) fn stop(mut self, drain: bool) -> Arc<RunnerShared> {
        if drain {
            self.shared.drain.store(true, Ordering::Release);
        } else {
            self.shared.stop.store(true, Ordering::Release);
        }
        if let Some(d) = self.dispatcher.take() {
            let _ = d.join();
        }
        self.senders.clear();
        if drain && !wait_until(DRAIN_TIMEOUT, || self.finished()) {
            tracing::warn!(
                generation = self.shared.generation,
                "projection workers did not drain in time; stopping them"
            );
            self.shared.stop.store(true, Ordering::Release);
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        Arc::clone(&self.shared)
    }

    /// True once every thread has ended on its own (a fault, or the engine closed).
    pub(crate) fn finished(&self) -> bool {
        self.workers.iter().all(|w| w.is_finished())
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(d) = self.dispatcher.take() {
            let _ = d.join();
        }
        self.senders.clear();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, TargetError> {
    std::thread::Builder::new()
        .name(name)
        .spawn(f)
        .map_err(|e| TargetError::Other(format!("cannot start a projection thread: {e}")))
}

struct Dispatcher {
    engine: Engine,
    source: Source,
    filter: Filter,
    senders: Vec<Sender<WorkerMsg>>,
    shared: Arc<RunnerShared>,
}

impl Dispatcher {
    fn run(self, start: Position) {
        let mut sub = self.engine.subscribe_all(start, Some(self.filter.clone()));
        let mut read_retry = Duration::from_millis(10);
        let partitions = self.shared.partitions;
        loop {
            if self.shared.stopping() || self.shared.drain.load(Ordering::Acquire) {
                return;
            }
            let ceiling = self.shared.ceiling.load(Ordering::Acquire);
            if sub.position().0 > ceiling {
                std::thread::sleep(CEILING_POLL);
                continue;
            }
            let page = match sub.next_page_blocking(DISPATCH_WAIT) {
                Ok(Some(page)) => page,
                Ok(None) => continue,
                Err(EngineError::Stopped(_)) => {
                    tracing::debug!("engine closed; projection dispatcher ends");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "projection cannot read the log; retrying");
                    *self.shared.retrying.lock() = Some(format!("reading the log: {e}"));
                    std::thread::sleep(read_retry);
                    read_retry = (read_retry * 2).min(READ_RETRY_MAX);
                    continue;
                }
            };
            read_retry = Duration::from_millis(10);
            let mut events = page.events.into_vec();
            let mut checkpoint = page.checkpoint;
            if checkpoint.0 > ceiling {
                // Hand out nothing above the ceiling; read the rest again once it rises.
                events.retain(|e| e.position.0 <= ceiling);
                checkpoint = Position(ceiling);
                sub = self
                    .engine
                    .subscribe_all(Position(ceiling).next(), Some(self.filter.clone()));
            }
            let mut routed: Vec<Vec<EventRecord>> = vec![Vec::new(); partitions as usize];
            for event in events {
                if !self.source.matches(&event) {
                    continue;
                }
                let p = partition_of(event.stream.as_str(), partitions) as usize;
                if let Some(part) = routed.get_mut(p) {
                    part.push(event);
                }
            }
            for (tx, events) in self.senders.iter().zip(routed) {
                let mut msg = WorkerMsg::Page { events, checkpoint };
                // A page goes to every partition or, on abort, the rest does not matter.
                loop {
                    match tx.send_timeout(msg, DISPATCH_WAIT) {
                        Ok(()) => break,
                        Err(crossbeam_channel::SendTimeoutError::Timeout(m)) => {
                            if self.shared.stopping() {
                                return;
                            }
                            msg = m;
                        }
                        Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => return,
                    }
                }
            }
        }
    }
}

/// Waits until `cond` holds or `timeout` passes; true if it held.
pub(crate) fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(CEILING_POLL);
    }
}
