//! The task that runs one group: it owns the group's [`Group`] state machine, reads the source
//! (a stream or `$all`) while the group has room, hands events to the consumers' channels, and
//! writes parked events and checkpoints to the log. Everything a consumer or an operator asks of
//! the group arrives as a [`Command`] on one bounded channel, so the state machine is only ever
//! touched by this task.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use annals_core::{Direction, DomainError, Position, ResolvedEvent, Revision};
use annals_engine::{Engine, EngineError, Subscription};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use crate::definition::{GroupDefinition, StartFrom};
use crate::error::PersistentError;
use crate::group::{ConsumerId, Delivery, Group, GroupCounts, GroupError, Message, NackAction};
use crate::names::Source;
use crate::runtime::{Payload, ToConsumer};
use crate::settings::Strategy;
use crate::store;

/// How often in-flight events are checked against their deadline and checkpoints on time.
const TICK: Duration = Duration::from_millis(100);
/// Events one consumer's channel holds beyond its own room: copies of events that timed out
/// while still queued for it.
const CONSUMER_CHANNEL_SLACK: usize = 64;

/// What the group task is asked.
#[derive(Debug)]
pub(crate) enum Command {
    Connect {
        id: ConsumerId,
        capacity: usize,
        connection: ConnectionLabel,
        events: mpsc::Sender<ToConsumer>,
        reply: oneshot::Sender<Result<(), GroupError>>,
    },
    Ack {
        consumer: ConsumerId,
        ids: Vec<Uuid>,
    },
    Nack {
        consumer: ConsumerId,
        ids: Vec<Uuid>,
        action: NackAction,
        reason: String,
    },
    Disconnect {
        consumer: ConsumerId,
    },
    Info {
        reply: oneshot::Sender<GroupState>,
    },
    ReplayParked {
        limit: Option<u64>,
        reply: oneshot::Sender<Result<u64, PersistentError>>,
    },
}

/// How a consumer's connection describes itself in `GetInfo`.
#[derive(Clone, Debug, Default)]
pub struct ConnectionLabel {
    /// The peer's address.
    pub from: String,
    /// The client's `connection-name` header.
    pub name: String,
}

/// One consumer as `GetInfo` shows it.
#[derive(Clone, Debug)]
pub struct ConnectionState {
    pub label: ConnectionLabel,
    pub capacity: usize,
    pub in_flight: usize,
    pub delivered: u64,
}

/// A group's running state, for `GetInfo` and `List`.
#[derive(Clone, Debug)]
pub struct GroupState {
    pub connections: Vec<ConnectionState>,
    pub counts: GroupCounts,
    pub last_checkpoint: Option<u64>,
    pub last_known: Option<u64>,
    pub live: bool,
    pub in_flight: usize,
    pub waiting: usize,
    pub parked: u64,
}

/// Where the group reads next.
enum Cursor {
    All(Box<Subscription>),
    Stream {
        stream: annals_core::StreamName,
        next: u64,
        head: watch::Receiver<Position>,
        batch: usize,
        /// `resolve_links`: a link is delivered as the event it points to, with the link.
        resolve: bool,
    },
}

impl Cursor {
    /// The next page of events (each with the link it was reached through, when links are
    /// resolved), waiting for new events once caught up; and whether the page reached the
    /// source's end. A stream is read `room` events at a time when that is more than a batch:
    /// a record of many events is then decoded once, not once per batch.
    async fn next_page(
        &mut self,
        engine: &Engine,
        room: usize,
    ) -> Result<(Vec<ResolvedEvent>, bool), EngineError> {
        match self {
            Cursor::All(sub) => {
                let page = sub.next_page().await?;
                let events = page
                    .events
                    .into_iter()
                    .map(|event| ResolvedEvent { event, link: None })
                    .collect();
                Ok((events, page.caught_up))
            }
            Cursor::Stream {
                stream,
                next,
                head,
                batch,
                resolve,
            } => loop {
                head.borrow_and_update();
                let want = (*batch).max(room);
                let read = if *resolve {
                    engine.read_stream_resolved(stream, Revision(*next), Direction::Forwards, want)
                } else {
                    engine
                        .read_stream(stream, Revision(*next), Direction::Forwards, want)
                        .map(|events| {
                            events
                                .into_iter()
                                .map(|event| ResolvedEvent { event, link: None })
                                .collect()
                        })
                };
                let events = match read {
                    Ok(events) => events,
                    Err(EngineError::Domain(DomainError::StreamNotFound { .. })) => Vec::new(),
                    Err(e) => return Err(e),
                };
                if let Some(last) = events.last() {
                    *next = placed(last).revision.0 + 1;
                    let caught_up = events.len() < want;
                    return Ok((events, caught_up));
                }
                if head.changed().await.is_err() {
                    return Err(EngineError::Stopped("engine closed".to_owned()));
                }
            },
        }
    }
}

/// The outcome of the checkpoint being written (pending forever when none is).
async fn wait_checkpoint(
    checkpointing: &mut Option<tokio::task::JoinHandle<Result<u64, PersistentError>>>,
) -> Result<u64, PersistentError> {
    match checkpointing {
        Some(task) => task
            .await
            .map_err(|e| PersistentError::Invalid(format!("writing a checkpoint: {e}")))?,
        None => std::future::pending().await,
    }
}

/// The record that places a read event in the stream read: the link, when it was reached
/// through one.
fn placed(e: &ResolvedEvent) -> &annals_core::EventRecord {
    e.link.as_ref().unwrap_or(&e.event)
}

/// The seq of an event in the group's source.
fn seq_of(source: &Source, event: &annals_core::EventRecord) -> u64 {
    match source {
        Source::Stream(_) => event.revision.0,
        Source::All => event.position.0,
    }
}

/// The correlation id in an event's JSON metadata, as `PinnedByCorrelation` keys on it.
fn correlation_of(event: &annals_core::EventRecord) -> Option<String> {
    if event.metadata.is_empty() {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(&event.metadata).ok()?;
    value
        .get("$correlationId")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
}

/// The group's message for `payload` at `seq` in the group's source; the correlation id is read
/// from the event's metadata only for a group that pins by it.
fn message_of(seq: u64, strategy: Strategy, payload: Payload) -> Message<Payload> {
    let event = payload.event();
    Message {
        seq,
        id: payload.ack_id(),
        stream: event.stream.clone(),
        correlation: if strategy == Strategy::PinnedByCorrelation {
            correlation_of(event)
        } else {
            None
        },
        payload,
    }
}

/// A connected consumer's channel and label.
struct Connected {
    events: mpsc::Sender<ToConsumer>,
    label: ConnectionLabel,
    capacity: usize,
}

/// Runs a group until its command channel closes or `stop` turns true.
pub(crate) async fn run(
    engine: Engine,
    definition: GroupDefinition,
    mut commands: mpsc::Receiver<Command>,
    mut stop: watch::Receiver<bool>,
) {
    let key = definition.key.clone();
    if let Err(e) = run_inner(&engine, &definition, &mut commands, &mut stop).await {
        tracing::error!(group = %key, error = %e, "persistent subscription group stopped");
    }
}

async fn run_inner(
    engine: &Engine,
    definition: &GroupDefinition,
    commands: &mut mpsc::Receiver<Command>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), PersistentError> {
    let key = &definition.key;
    let settings = &definition.settings;
    let checkpoint = store::load_checkpoint(engine, key)?;
    let mut parked_count = store::parked_count(engine, key)?;
    let first = match (checkpoint, definition.start) {
        (Some(c), _) => c + 1,
        (None, StartFrom::Start) => match key.source {
            Source::All => 1,
            Source::Stream(_) => 0,
        },
        (None, StartFrom::At(seq)) => seq,
        // A group created at the end got a checkpoint then; without one the source was empty.
        (None, StartFrom::End) => match key.source {
            Source::All => 1,
            Source::Stream(_) => 0,
        },
    };
    let batch = settings.read_batch_size.max(1);
    let mut cursor = match &key.source {
        Source::All => {
            let filter = definition
                .filter
                .as_ref()
                .map(|f| f.compile())
                .transpose()?;
            Cursor::All(Box::new(
                engine
                    .subscribe_all(Position(first), filter)
                    .with_page_events_max(batch),
            ))
        }
        Source::Stream(s) => Cursor::Stream {
            stream: s.clone(),
            next: first,
            head: engine.head_watch(),
            batch,
            resolve: definition.resolve_links,
        },
    };
    let mut group: Group<Payload> = Group::new(settings.clone(), checkpoint, Instant::now());
    let mut consumers: HashMap<ConsumerId, Connected> = HashMap::new();
    let buffer_max = settings.history_buffer_size.max(settings.live_buffer_size);
    let mut live = false;
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut checkpointing: Option<tokio::task::JoinHandle<Result<u64, PersistentError>>> = None;
    loop {
        // Hand out what can go, then write what the state machine decided.
        let now = Instant::now();
        let batches = group_by_consumer(group.dispatch(now));
        deliver(&mut group, &mut consumers, batches);
        let parked = group.take_parked();
        if !parked.is_empty() {
            parked_count += parked.len() as u64;
            store::park(engine, key, &parked).await?;
        }
        // A checkpoint is written beside the work (its fsync would stall every consumer), one
        // at a time; parked events it passes were written above, before it was asked for.
        if checkpointing.is_none()
            && let Some(seq) = group.checkpoint_due(now)
        {
            let (engine, key) = (engine.clone(), key.clone());
            checkpointing = Some(tokio::spawn(async move {
                store::save_checkpoint(&engine, &key, seq)
                    .await
                    .map(|()| seq)
            }));
        }
        let room = buffer_max.saturating_sub(group.waiting());
        tokio::select! {
            biased;
            written = wait_checkpoint(&mut checkpointing), if checkpointing.is_some() => {
                checkpointing = None;
                group.checkpointed(written?, Instant::now());
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
            command = commands.recv() => {
                let Some(command) = command else { break };
                match command {
                    Command::Connect { id, capacity, connection, events, reply } => {
                        let result = group.connect(id, capacity);
                        if result.is_ok() {
                            consumers.insert(id, Connected { events, label: connection, capacity });
                        }
                        let _ = reply.send(result);
                    }
                    Command::Ack { consumer, ids } => group.ack(consumer, &ids),
                    Command::Nack { consumer, ids, action, reason } => {
                        group.nack(consumer, &ids, action, &reason);
                    }
                    Command::Disconnect { consumer } => {
                        consumers.remove(&consumer);
                        group.disconnect(consumer);
                    }
                    Command::Info { reply } => {
                        let state = state_of(&group, &consumers, live, parked_count);
                        let _ = reply.send(state);
                    }
                    Command::ReplayParked { limit, reply } => {
                        let result = replay_parked(engine, definition, &mut group, limit).await;
                        if let Ok(n) = &result {
                            parked_count = parked_count.saturating_sub(*n);
                        }
                        let _ = reply.send(result);
                    }
                }
            }
            page = cursor.next_page(engine, room), if room > 0 => {
                let (events, caught_up) = page?;
                live = caught_up;
                let head = engine.head().0;
                for read in events {
                    let seq = seq_of(&key.source, placed(&read));
                    let payload = Payload::new(read.event, read.link);
                    let message = message_of(seq, definition.settings.strategy, payload);
                    let behind = match key.source {
                        Source::All => head.saturating_sub(message.seq),
                        Source::Stream(_) => 0,
                    };
                    if let Err(e) = group.offer(message, behind) {
                        tracing::warn!(group = %key, error = %e, "event offered out of order, skipped");
                    }
                }
            }
            _ = ticker.tick() => group.tick(Instant::now()),
        }
    }
    // Stopping: consumers are told, and the progress made is kept.
    for (_, c) in consumers.drain() {
        let _ = c.events.try_send(ToConsumer::Dropped);
    }
    // The checkpoint being written lands before the last one.
    if checkpointing.is_some() {
        let seq = wait_checkpoint(&mut checkpointing).await?;
        group.checkpointed(seq, Instant::now());
    }
    if let Some(seq) = group.checkpoint_on_stop() {
        store::save_checkpoint(engine, key, seq).await?;
    }
    Ok(())
}

/// One dispatch's deliveries per consumer, each consumer's in the order given.
fn group_by_consumer(
    deliveries: Vec<Delivery<Payload>>,
) -> Vec<(ConsumerId, Vec<Delivery<Payload>>)> {
    let mut batches: Vec<(ConsumerId, Vec<Delivery<Payload>>)> = Vec::new();
    for d in deliveries {
        match batches.iter_mut().find(|(c, _)| *c == d.consumer) {
            Some((_, batch)) => batch.push(d),
            None => batches.push((d.consumer, vec![d])),
        }
    }
    batches
}

/// Sends each consumer its deliveries in one message; a consumer whose channel is full or gone
/// is disconnected (what it held is retried elsewhere).
fn deliver(
    group: &mut Group<Payload>,
    consumers: &mut HashMap<ConsumerId, Connected>,
    batches: Vec<(ConsumerId, Vec<Delivery<Payload>>)>,
) {
    for (consumer, batch) in batches {
        let sent = match consumers.get(&consumer) {
            Some(c) => c.events.try_send(ToConsumer::Deliveries(batch)).is_ok(),
            None => false,
        };
        if !sent {
            if let Some(c) = consumers.remove(&consumer) {
                tracing::warn!(
                    consumer,
                    "a persistent-subscription consumer fell behind; dropped"
                );
                let _ = c.events.try_send(ToConsumer::Dropped);
            }
            group.disconnect(consumer);
        }
    }
}

/// A consumer channel's bound for a consumer with room for `capacity` events.
pub(crate) fn consumer_channel_capacity(capacity: usize) -> usize {
    capacity.saturating_add(CONSUMER_CHANNEL_SLACK)
}

fn state_of(
    group: &Group<Payload>,
    consumers: &HashMap<ConsumerId, Connected>,
    live: bool,
    parked: u64,
) -> GroupState {
    let mut connections: Vec<(ConsumerId, ConnectionState)> = group
        .consumers()
        .into_iter()
        .filter_map(|c| {
            let connected = consumers.get(&c.id)?;
            Some((
                c.id,
                ConnectionState {
                    label: connected.label.clone(),
                    capacity: connected.capacity,
                    in_flight: c.in_flight,
                    delivered: c.delivered,
                },
            ))
        })
        .collect();
    connections.sort_by_key(|(id, _)| *id);
    GroupState {
        connections: connections.into_iter().map(|(_, c)| c).collect(),
        counts: group.counts(),
        last_checkpoint: group.last_checkpoint(),
        last_known: group.last_offered(),
        live,
        in_flight: group.in_flight(),
        waiting: group.waiting(),
        parked,
    }
}

/// Puts up to `limit` parked events (all when `None`) back in front of the group, oldest first,
/// and marks them replayed in the parked stream. Returns how many were replayed.
async fn replay_parked(
    engine: &Engine,
    definition: &GroupDefinition,
    group: &mut Group<Payload>,
    limit: Option<u64>,
) -> Result<u64, PersistentError> {
    let key = &definition.key;
    let mut replayed = 0u64;
    let mut last_revision = None;
    loop {
        let want = match limit {
            Some(l) => usize::try_from(l.saturating_sub(replayed)).unwrap_or(usize::MAX),
            None => usize::MAX,
        }
        .min(store::PARKED_READ_EVENTS_MAX);
        if want == 0 {
            break;
        }
        let links = store::read_parked(engine, key, want)?;
        let links: Vec<_> = links
            .into_iter()
            .filter(|l| last_revision.is_none_or(|r| l.revision.0 > r))
            .collect();
        if links.is_empty() {
            break;
        }
        for link in links {
            last_revision = Some(link.revision.0);
            replayed += 1;
            // A parked event whose original is gone is dropped with its link.
            if let Some(event) = store::resolve_link(engine, &link) {
                // The parked link keeps the event's place in the source (a `$ce-` group's
                // revision differs from the event's own); older links have only the event.
                let seq = store::parked_seq(&link).unwrap_or_else(|| seq_of(&key.source, &event));
                let message = message_of(
                    seq,
                    definition.settings.strategy,
                    Payload::new(event, Some(link)),
                );
                group.replay(message);
            }
        }
        if let Some(r) = last_revision {
            store::truncate_parked(engine, key, r + 1).await?;
        }
    }
    Ok(replayed)
}
