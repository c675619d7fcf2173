//! The task that runs one relay: it reads the relay's source from its checkpoint, hands events
//! to the broker through [`Lanes`] (order) up to `concurrency` at a time, retries with backoff,
//! moves to the next endpoint when one is down and back when it recovers, parks poison events,
//! and writes its checkpoint once the broker acknowledged what it covers. Commands (status,
//! pause, resume, reset, re-send parked) arrive on one bounded channel.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals_core::{EventRecord, Position, Timestamp};
use annals_engine::{Engine, EngineError};
use futures::StreamExt as _;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use rand::Rng as _;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{OnPoison, Order, RelayDefinition, RetryPolicy};
use crate::error::RelayError;
use crate::lanes::Lanes;
use crate::sink::{Sink, SinkError};
use crate::store;

/// Most events a relay holds read ahead of what the broker acknowledged.
pub const RELAY_READ_AHEAD_MAX: usize = 8_192;
/// Most events in one page read from the log.
const PAGE_EVENTS_MAX: usize = 1_024;
/// The checkpoint is written when this many positions were passed since the last write, or
/// [`CHECKPOINT_INTERVAL`] went by.
const CHECKPOINT_POSITIONS: u64 = 10_000;
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// The window the rate is measured over.
const RELAY_RATE_WINDOW: Duration = Duration::from_secs(10);
/// Longest a stopping relay waits for its sends in flight.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// Commands one relay's task takes before a sender waits.
pub(crate) const RELAY_COMMANDS_MAX: usize = 64;

/// What a relay is doing.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayState {
    Running,
    /// Every endpoint is down; sends are retried with backoff.
    BackingOff,
    /// Sending to an endpoint after the first, the first being down.
    FailedOver,
    Paused,
    /// Halted at a poison event (`on_poison = "stop"`); `resume` tries it again.
    Stopped,
}

/// A relay as `annals relays list` and `GET /relays` show it.
#[derive(Clone, Debug, Serialize)]
pub struct RelayStatus {
    pub name: String,
    pub sink: &'static str,
    pub state: RelayState,
    /// The endpoint sends go to now (no credentials).
    pub endpoint: String,
    /// Every position up to here arrived at the broker (or was parked).
    pub position: u64,
    /// Positions of `$all` written after `position`.
    pub lag_events: u64,
    /// Age of the oldest event read and not yet acknowledged by the broker.
    pub lag_seconds: f64,
    /// Events acknowledged per second over the last ten seconds.
    pub rate: f64,
    pub sent: u64,
    pub in_flight: usize,
    pub parked: u64,
    pub last_error: Option<String>,
}

#[derive(Debug)]
pub(crate) enum Command {
    Status(oneshot::Sender<RelayStatus>),
    Pause,
    Resume,
    Reset {
        position: u64,
        reply: oneshot::Sender<Result<(), RelayError>>,
    },
    RetryParked {
        reply: oneshot::Sender<Result<u64, RelayError>>,
    },
}

/// One endpoint and whether it is usable.
struct Endpoint {
    sink: Arc<dyn Sink>,
    prepared: bool,
    /// Down until then.
    down_until: Option<Instant>,
    /// Failures in a row (the backoff's exponent).
    failures: u32,
    /// Came back from down: one send at a time until one arrives.
    probing: bool,
}

/// Which lane an outcome belongs to: a read event, one sent in turn, or a parked one being
/// sent again.
enum Slot {
    Lane(Arc<str>),
    InTurn(Arc<str>),
    Parked,
}

/// A send's outcome: `Ok(true)` when the broker already held the event (a re-send).
type Sent = (Slot, usize, Arc<EventRecord>, Result<bool, SinkError>);

/// Global order on a sink that keeps order ([`Sink::keeps_order`]): sends in flight together,
/// each taken only after the one before it.
#[derive(Default)]
struct InTurnState {
    /// The broker's last sequence the next send expects; `None`: ask the broker first.
    after: Option<u64>,
    /// Every send in flight must be answered before sending goes on: the first failure (by
    /// position) is handled then, and the last sequence asked again.
    broken: bool,
    first_failure: Option<(Arc<EventRecord>, SinkError)>,
    /// One send at a time, until one lands that was not a duplicate.
    probing: bool,
}

/// Backoff for the `n`th failure in a row: doubling from the policy's base up to its maximum,
/// with up to a quarter of jitter taken off so retries spread.
fn backoff(policy: &RetryPolicy, n: u32) -> Duration {
    let base = policy
        .backoff
        .saturating_mul(1u32 << n.saturating_sub(1).min(20))
        .min(policy.backoff_max);
    let jitter = rand::rng().random_range(0.0..0.25);
    base.mul_f64(1.0 - jitter)
}

struct Runner {
    engine: Engine,
    definition: RelayDefinition,
    endpoints: Vec<Endpoint>,
    lanes: Lanes,
    in_flight: FuturesUnordered<BoxFuture<'static, Sent>>,
    paused: bool,
    stopped_at_poison: bool,
    last_error: Option<String>,
    sent: u64,
    rate_samples: VecDeque<(Instant, u64)>,
    parked: u64,
    /// Parked events being sent again, in order, one at a time.
    resend: VecDeque<store::ParkedEvent>,
    resend_busy: bool,
    /// The last parked link to mark handled once `resend` is empty.
    resend_last: Option<u64>,
    checkpoint_written: u64,
    checkpoint_at: Instant,
    in_turn: InTurnState,
    /// The endpoint the last send that arrived went to.
    active: usize,
}

/// Runs a relay until `stop` turns true or its command channel closes.
pub(crate) async fn run(
    engine: Engine,
    definition: RelayDefinition,
    sinks: Vec<Arc<dyn Sink>>,
    mut commands: mpsc::Receiver<Command>,
    mut stop: watch::Receiver<bool>,
) {
    let name = definition.name.clone();
    if let Err(e) = run_inner(engine, definition, sinks, &mut commands, &mut stop).await {
        tracing::error!(relay = %name, error = %e, "relay stopped");
    }
}

async fn run_inner(
    engine: Engine,
    definition: RelayDefinition,
    sinks: Vec<Arc<dyn Sink>>,
    commands: &mut mpsc::Receiver<Command>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), RelayError> {
    let checkpoint = store::load_checkpoint(&engine, &definition.name)?;
    let parked = store::parked_count(&engine, &definition.name)?;
    let filter = definition
        .source
        .filter()
        .map_err(|e| RelayError::Definition(e.to_string()))?;
    let mut sub = engine
        .subscribe_all(Position(checkpoint + 1), Some(filter.clone()))
        .with_page_events_max(PAGE_EVENTS_MAX);
    let mut r = Runner {
        lanes: Lanes::new(definition.order, checkpoint),
        endpoints: sinks
            .into_iter()
            .map(|sink| Endpoint {
                sink,
                prepared: false,
                down_until: None,
                failures: 0,
                probing: false,
            })
            .collect(),
        engine,
        definition,
        in_flight: FuturesUnordered::new(),
        paused: false,
        stopped_at_poison: false,
        last_error: None,
        sent: 0,
        rate_samples: VecDeque::new(),
        parked,
        resend: VecDeque::new(),
        resend_busy: false,
        resend_last: None,
        checkpoint_written: checkpoint,
        checkpoint_at: Instant::now(),
        in_turn: InTurnState {
            probing: true,
            ..InTurnState::default()
        },
        active: 0,
    };
    let mut ticker = tokio::time::interval(CHECKPOINT_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        r.dispatch().await;
        let reading = !r.paused && r.lanes.queued() < RELAY_READ_AHEAD_MAX;
        let wake = r.next_wake();
        tokio::select! {
            biased;
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
            command = commands.recv() => {
                let Some(command) = command else { break };
                if let Some(new_sub) = r.command(command, &filter).await {
                    sub = new_sub;
                }
            }
            Some(sent) = r.in_flight.next(), if !r.in_flight.is_empty() => {
                r.outcome(sent).await?;
            }
            page = sub.next_page(), if reading => {
                let page = match page {
                    Ok(page) => page,
                    Err(EngineError::Stopped(_)) => break,
                    Err(e) => return Err(e.into()),
                };
                for event in page.events {
                    if r.definition.source.matches(&event) {
                        r.lanes.push(Arc::new(event));
                    }
                }
                r.lanes.read_through(page.checkpoint.0);
            }
            () = sleep_until(wake), if wake.is_some() => {}
            _ = ticker.tick() => {
                r.save_checkpoint(false).await?;
            }
        }
    }
    // Stopping: what is in flight may still arrive; then the progress made is kept.
    let grace = tokio::time::sleep(STOP_GRACE);
    tokio::pin!(grace);
    while !r.in_flight.is_empty() {
        tokio::select! {
            Some(sent) = r.in_flight.next() => r.outcome(sent).await?,
            () = &mut grace => break,
        }
    }
    r.save_checkpoint(true).await
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

impl Runner {
    /// The endpoint to send to now: the first that is not down (an endpoint whose down time
    /// ran out is tried again, one send at a time).
    fn current(&mut self, now: Instant) -> Option<usize> {
        let index = self
            .endpoints
            .iter()
            .position(|e| e.down_until.is_none_or(|t| t <= now))?;
        if let Some(e) = self.endpoints.get_mut(index)
            && e.down_until.take().is_some()
        {
            e.probing = true;
        }
        Some(index)
    }

    fn next_wake(&self) -> Option<Instant> {
        let endpoint = self.endpoints.iter().filter_map(|e| e.down_until).min();
        match (self.lanes.next_wake(), endpoint) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Sends in flight at most to endpoint `index`: one while it is probed after being down,
    /// one under global order unless the endpoint keeps order itself (sends in turn).
    fn limit(&self, index: usize) -> usize {
        let Some(endpoint) = self.endpoints.get(index) else {
            return 1;
        };
        match (endpoint.probing, self.definition.order) {
            (true, _) => 1,
            (false, Order::Global) if !endpoint.sink.keeps_order() => 1,
            (false, _) => self.definition.concurrency,
        }
    }

    /// Starts sends while there is room, an endpoint to send to, and a lane ready.
    async fn dispatch(&mut self) {
        if self.paused || self.stopped_at_poison {
            return;
        }
        let now = Instant::now();
        self.lanes.wake(now);
        loop {
            let Some(index) = self.current(now) else {
                return;
            };
            if !self.prepare(index).await {
                continue;
            }
            if self.in_flight.len() >= self.limit(index) {
                return;
            }
            let Some(endpoint) = self.endpoints.get(index) else {
                return;
            };
            let sink = Arc::clone(&endpoint.sink);
            let in_turn = self.definition.order == Order::Global && sink.keeps_order();
            // Parked events sent again go first, one at a time (in turn: alone, and the last
            // sequence is asked again after it).
            if !self.resend_busy
                && (!in_turn || self.in_flight.is_empty())
                && let Some(event) = self.resend.front().and_then(|p| p.event.clone())
            {
                self.resend_busy = true;
                self.in_turn.after = None;
                let event = Arc::new(event);
                let send = sink.send(Arc::clone(&event));
                self.in_flight.push(Box::pin(async move {
                    (Slot::Parked, index, event, send.await.map(|()| false))
                }));
                continue;
            }
            if in_turn {
                if !self.dispatch_in_turn(index, &sink).await {
                    return;
                }
                continue;
            }
            let Some((key, pending)) = self.lanes.take() else {
                return;
            };
            let event = pending.event;
            let send = sink.send(Arc::clone(&event));
            self.in_flight.push(Box::pin(async move {
                (Slot::Lane(key), index, event, send.await.map(|()| false))
            }));
        }
    }

    /// Starts one send in turn if it may go now; false when nothing more goes.
    async fn dispatch_in_turn(&mut self, index: usize, sink: &Arc<dyn Sink>) -> bool {
        if self.in_turn.broken || self.resend_busy {
            return false;
        }
        let after = match self.in_turn.after {
            Some(after) => after,
            None => {
                if !self.in_flight.is_empty() {
                    return false;
                }
                match sink.last_sequence().await {
                    Ok(last) => last,
                    Err(e) => {
                        self.last_error = Some(e.to_string());
                        self.endpoint_down(index);
                        return true;
                    }
                }
            }
        };
        let probing = self.in_turn.probing || self.endpoints.get(index).is_some_and(|e| e.probing);
        let limit = if probing {
            1
        } else {
            self.definition.concurrency
        };
        if self.in_flight.len() >= limit {
            return false;
        }
        let Some((key, pending)) = self.lanes.take_in_turn() else {
            return false;
        };
        self.in_turn.after = Some(after + 1);
        let event = pending.event;
        // On the wire now, in the order taken; only the answers are awaited together.
        let answer = sink.send_in_turn(Arc::clone(&event), after).await;
        self.in_flight.push(Box::pin(async move {
            let answer = match answer {
                Ok(answer) => answer.await.map(|a| a.duplicate),
                Err(e) => Err(e),
            };
            (Slot::InTurn(key), index, event, answer)
        }));
        true
    }

    /// Sending in turn: one send answered.
    async fn outcome_in_turn(
        &mut self,
        key: Arc<str>,
        index: usize,
        event: Arc<EventRecord>,
        result: Result<bool, SinkError>,
    ) -> Result<(), RelayError> {
        match result {
            Ok(duplicate) => {
                self.arrived_at(index);
                self.sent += 1;
                self.lanes.done_in_turn(&key, event.position.0);
                if duplicate {
                    // The broker's last sequence did not move: the sends after this one expect
                    // too much and will be refused; ask again once they are answered.
                    self.in_turn.broken = true;
                } else if self.in_flight.is_empty() {
                    self.in_turn.probing = false;
                }
            }
            Err(error) => {
                if !matches!(error, SinkError::OutOfTurn(_)) {
                    self.last_error = Some(error.to_string());
                }
                if matches!(error, SinkError::Down(_)) {
                    self.endpoint_down(index);
                }
                self.in_turn.broken = true;
                let first = self
                    .in_turn
                    .first_failure
                    .as_ref()
                    .is_none_or(|(e, _)| event.position < e.position);
                if first {
                    self.in_turn.first_failure = Some((event, error));
                }
            }
        }
        if self.in_turn.broken && self.in_flight.is_empty() {
            self.in_turn.broken = false;
            self.in_turn.after = None;
            self.in_turn.probing = true;
            if let Some((event, error)) = self.in_turn.first_failure.take() {
                // Everything before the first failure arrived, so it is the lane's front.
                let refused = matches!(error, SinkError::Refused(_) | SinkError::Poison(_));
                let refusals = self.lanes.refusals(&key) + u32::from(refused);
                let now = Instant::now();
                let until = if refused {
                    now + backoff(&self.definition.retry, refusals)
                } else {
                    now
                };
                self.lanes.failed_in_turn(&key, refused, until);
                if matches!(error, SinkError::Poison(_))
                    || (refused && refusals >= self.definition.retry.attempts)
                {
                    self.poison(&key, &event, &error).await?;
                }
            } else {
                self.lanes.failed_in_turn(&key, false, Instant::now());
            }
        }
        Ok(())
    }

    /// Prepares endpoint `index` before its first send; false (and it is marked down) if that
    /// failed.
    async fn prepare(&mut self, index: usize) -> bool {
        let Some(endpoint) = self.endpoints.get_mut(index) else {
            return false;
        };
        if endpoint.prepared {
            return true;
        }
        match endpoint.sink.prepare().await {
            Ok(()) => {
                endpoint.prepared = true;
                true
            }
            Err(e) => {
                tracing::warn!(relay = %self.definition.name, error = %e, "relay endpoint not ready");
                self.last_error = Some(e.to_string());
                self.endpoint_down(index);
                false
            }
        }
    }

    /// A send to endpoint `index` arrived: it is up, and the one in use.
    fn arrived_at(&mut self, index: usize) {
        if let Some(e) = self.endpoints.get_mut(index) {
            e.failures = 0;
            e.probing = false;
        }
        self.active = index;
    }

    fn endpoint_down(&mut self, index: usize) {
        let policy = self.definition.retry;
        if let Some(e) = self.endpoints.get_mut(index) {
            e.failures = e.failures.saturating_add(1);
            e.probing = false;
            e.down_until = Some(Instant::now() + backoff(&policy, e.failures));
        }
    }

    async fn outcome(&mut self, (slot, index, event, result): Sent) -> Result<(), RelayError> {
        if let Slot::InTurn(key) = slot {
            return self.outcome_in_turn(key, index, event, result).await;
        }
        let now = Instant::now();
        match result {
            Ok(_) => {
                self.arrived_at(index);
                self.sent += 1;
                match slot {
                    Slot::Lane(key) => {
                        self.lanes.done(&key);
                    }
                    Slot::Parked => self.resent().await?,
                    Slot::InTurn(_) => {}
                }
            }
            Err(error) => {
                self.last_error = Some(error.to_string());
                let refused = !matches!(error, SinkError::Down(_));
                if !refused {
                    // The broker is at fault, not the event: this endpoint waits, the event is
                    // tried again (on the next endpoint, if any) without counting.
                    self.endpoint_down(index);
                }
                let poison = match &error {
                    SinkError::Poison(_) => true,
                    SinkError::Refused(_) | SinkError::Down(_) | SinkError::OutOfTurn(_) => false,
                };
                match slot {
                    Slot::Parked => {
                        // A parked event that fails again stays parked; the re-send stops.
                        self.resend_busy = false;
                        if poison || refused {
                            tracing::warn!(relay = %self.definition.name, error = %error, "a parked event failed again; it stays parked");
                            self.resend.clear();
                            self.finish_resend().await?;
                        }
                    }
                    Slot::InTurn(_) => {}
                    Slot::Lane(key) => {
                        let refusals = self.lanes.refusals(&key) + u32::from(refused);
                        if poison || refusals >= self.definition.retry.attempts {
                            self.poison(&key, &event, &error).await?;
                        } else {
                            // A refused event waits longer each time; one that never reached
                            // the broker goes again as soon as an endpoint is up.
                            let until = if refused {
                                now + backoff(&self.definition.retry, refusals)
                            } else {
                                now
                            };
                            self.lanes.failed(&key, refused, until);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// An event the broker will not take: parked, or the relay stops at it.
    async fn poison(
        &mut self,
        key: &Arc<str>,
        event: &EventRecord,
        error: &SinkError,
    ) -> Result<(), RelayError> {
        match self.definition.on_poison {
            OnPoison::Park => {
                store::park(
                    &self.engine,
                    &self.definition.name,
                    event,
                    &error.to_string(),
                )
                .await?;
                self.parked += 1;
                tracing::warn!(relay = %self.definition.name, stream = %event.stream, revision = event.revision.0, error = %error, "event parked");
                self.lanes.done(key);
            }
            OnPoison::Stop => {
                tracing::error!(relay = %self.definition.name, stream = %event.stream, revision = event.revision.0, error = %error, "relay stopped at a poison event");
                self.stopped_at_poison = true;
                // It stays at the front of its lane, to be tried again on `resume`.
                self.lanes.failed(key, false, Instant::now());
            }
        }
        Ok(())
    }

    async fn resent(&mut self) -> Result<(), RelayError> {
        self.resend_busy = false;
        if let Some(p) = self.resend.pop_front() {
            self.resend_last = Some(p.revision);
        }
        // Parked links whose event is gone are passed over.
        while self.resend.front().is_some_and(|p| p.event.is_none()) {
            if let Some(p) = self.resend.pop_front() {
                self.resend_last = Some(p.revision);
            }
        }
        if self.resend.is_empty() {
            self.finish_resend().await?;
        }
        Ok(())
    }

    async fn finish_resend(&mut self) -> Result<(), RelayError> {
        if let Some(last) = self.resend_last.take() {
            store::truncate_parked(&self.engine, &self.definition.name, last + 1).await?;
        }
        self.parked = store::parked_count(&self.engine, &self.definition.name)?;
        Ok(())
    }

    async fn save_checkpoint(&mut self, always: bool) -> Result<(), RelayError> {
        let now = Instant::now();
        self.rate_samples.push_back((now, self.sent));
        while self
            .rate_samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > RELAY_RATE_WINDOW)
        {
            self.rate_samples.pop_front();
        }
        let position = self.lanes.checkpoint();
        let due = position >= self.checkpoint_written + CHECKPOINT_POSITIONS
            || now.duration_since(self.checkpoint_at) >= CHECKPOINT_INTERVAL;
        if position > self.checkpoint_written && (due || always) {
            store::save_checkpoint(&self.engine, &self.definition.name, position).await?;
            self.checkpoint_written = position;
            self.checkpoint_at = now;
        }
        Ok(())
    }

    fn status(&self) -> RelayStatus {
        let now = Instant::now();
        let all_down = self
            .endpoints
            .iter()
            .all(|e| e.down_until.is_some_and(|t| t > now));
        let state = if self.stopped_at_poison {
            RelayState::Stopped
        } else if self.paused {
            RelayState::Paused
        } else if all_down {
            RelayState::BackingOff
        } else if self.active > 0 {
            RelayState::FailedOver
        } else {
            RelayState::Running
        };
        let endpoint = self
            .endpoints
            .get(self.active)
            .map(|e| e.sink.endpoint())
            .unwrap_or_default();
        let position = self.lanes.checkpoint();
        let rate = match (self.rate_samples.front(), self.rate_samples.back()) {
            (Some((t0, s0)), Some((t1, s1))) if t1 > t0 => {
                (s1 - s0) as f64 / t1.duration_since(*t0).as_secs_f64()
            }
            _ => 0.0,
        };
        let lag_seconds = self.lanes.oldest_pending().map_or(0.0, |created| {
            let now = Timestamp::now().0;
            (now.saturating_sub(created.0)).max(0) as f64 / 1e9
        });
        RelayStatus {
            name: self.definition.name.clone(),
            sink: self.definition.sink.kind(),
            state,
            endpoint,
            position,
            lag_events: self.engine.head().0.saturating_sub(position),
            lag_seconds,
            rate,
            sent: self.sent,
            in_flight: self.in_flight.len(),
            parked: self.parked,
            last_error: self.last_error.clone(),
        }
    }

    /// Handles a command; a new subscription when the relay was reset.
    async fn command(
        &mut self,
        command: Command,
        filter: &annals_core::Filter,
    ) -> Option<annals_engine::Subscription> {
        match command {
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Command::Pause => self.paused = true,
            Command::Resume => {
                self.paused = false;
                if self.stopped_at_poison {
                    self.stopped_at_poison = false;
                }
            }
            Command::Reset { position, reply } => {
                // What is in flight is forgotten; the relay starts over after `position`.
                self.in_flight = FuturesUnordered::new();
                self.lanes = Lanes::new(self.definition.order, position);
                self.stopped_at_poison = false;
                let saved =
                    store::save_checkpoint(&self.engine, &self.definition.name, position).await;
                if saved.is_ok() {
                    self.checkpoint_written = position;
                }
                let _ = reply.send(saved);
                return Some(
                    self.engine
                        .subscribe_all(Position(position + 1), Some(filter.clone()))
                        .with_page_events_max(PAGE_EVENTS_MAX),
                );
            }
            Command::RetryParked { reply } => {
                let result = store::read_parked(
                    &self.engine,
                    &self.definition.name,
                    store::RELAY_PARKED_READ_MAX,
                );
                let _ = reply.send(result.map(|parked| {
                    let n = parked.len() as u64;
                    if self.resend.is_empty() && !self.resend_busy {
                        self.resend = parked.into();
                        while self.resend.front().is_some_and(|p| p.event.is_none()) {
                            if let Some(p) = self.resend.pop_front() {
                                self.resend_last = Some(p.revision);
                            }
                        }
                    }
                    n
                }));
            }
        }
        None
    }
}
