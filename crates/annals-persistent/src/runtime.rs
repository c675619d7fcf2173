//! [`Subscriptions`]: every persistent-subscription group of a server, each run by a task of its
//! own ([`crate::actor`]), created, updated, deleted, listed and consumed through here. The
//! network APIs (gRPC, HTTP) only map their messages onto these calls.
//!
//! Definitions are saved to the config stream before a change is answered, so a group survives
//! a restart and a crash; at open every saved group starts again from its checkpoint.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use annals_core::EventRecord;
use annals_engine::Engine;
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::actor::{self, Command, ConnectionLabel, GroupState};
use crate::definition::{GroupDefinition, StartFrom};
use crate::error::PersistentError;
use crate::group::{ConsumerId, Delivery, GroupError, NackAction};
use crate::names::{GroupKey, Source};
use crate::store;

/// Commands one group's task takes before a sender waits.
const GROUP_COMMANDS_MAX: usize = 1_024;

/// An event as a group carries it: the event, and the link it was reached through (a parked
/// event being replayed is reached through its parked link).
/// Shared, so handing a delivery out copies a pointer, not two records.
#[derive(Clone, Debug)]
pub struct Payload(Arc<(EventRecord, Option<EventRecord>)>);

impl Payload {
    pub fn new(event: EventRecord, link: Option<EventRecord>) -> Self {
        Self(Arc::new((event, link)))
    }

    pub fn event(&self) -> &EventRecord {
        &self.0.0
    }

    pub fn link(&self) -> Option<&EventRecord> {
        self.0.1.as_ref()
    }

    /// The id a consumer acks with: the link's when there is one, else the event's.
    pub fn ack_id(&self) -> Uuid {
        self.link().unwrap_or(self.event()).id
    }
}

/// What a group's task sends a consumer: the deliveries of one dispatch in one message, or
/// that it was dropped.
#[derive(Debug)]
pub(crate) enum ToConsumer {
    Deliveries(Vec<Delivery<Payload>>),
    Dropped,
}

/// What a consumer receives.
#[derive(Clone, Debug)]
pub enum ConsumerEvent {
    Event(Box<Delivery<Payload>>),
    /// The group stopped (deleted, updated, restarted, or the server is stopping), or this
    /// consumer fell too far behind: the consumer is no longer part of the group.
    Dropped,
}

/// A running group.
#[derive(Debug)]
struct Running {
    definition: GroupDefinition,
    commands: mpsc::Sender<Command>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
    }
}

/// A group as `GetInfo` and `List` show it.
#[derive(Clone, Debug)]
pub struct GroupInfo {
    pub definition: GroupDefinition,
    pub state: Option<GroupState>,
}

/// Every group of a server.
#[derive(Debug)]
pub struct Subscriptions {
    engine: Engine,
    groups: Mutex<BTreeMap<GroupKey, Running>>,
    next_consumer: AtomicU64,
}

impl Subscriptions {
    /// Loads the saved groups and starts each. Must be called within a tokio runtime.
    pub async fn open(engine: Engine) -> Result<Arc<Self>, PersistentError> {
        let definitions = {
            let engine = engine.clone();
            tokio::task::spawn_blocking(move || store::load_definitions(&engine))
                .await
                .map_err(|e| PersistentError::Invalid(format!("loading groups: {e}")))??
        };
        let subscriptions = Arc::new(Self {
            engine,
            groups: Mutex::new(BTreeMap::new()),
            next_consumer: AtomicU64::new(1),
        });
        {
            let mut groups = subscriptions.groups.lock().await;
            for d in definitions {
                groups.insert(d.key.clone(), subscriptions.start(d));
            }
        }
        Ok(subscriptions)
    }

    fn start(&self, definition: GroupDefinition) -> Running {
        let (commands, rx) = mpsc::channel(GROUP_COMMANDS_MAX);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(actor::run(
            self.engine.clone(),
            definition.clone(),
            rx,
            stop_rx,
        ));
        Running {
            definition,
            commands,
            stop,
            task,
        }
    }

    fn definitions(groups: &BTreeMap<GroupKey, Running>) -> Vec<GroupDefinition> {
        groups.values().map(|r| r.definition.clone()).collect()
    }

    fn not_found(key: &GroupKey) -> PersistentError {
        PersistentError::NotFound {
            stream: key.source.to_string(),
            group: key.group.clone(),
        }
    }

    /// Creates a group; saved before it is answered.
    pub async fn create(&self, definition: GroupDefinition) -> Result<(), PersistentError> {
        definition.validate()?;
        let mut groups = self.groups.lock().await;
        let key = definition.key.clone();
        if groups.contains_key(&key) {
            return Err(PersistentError::AlreadyExists {
                stream: key.source.to_string(),
                group: key.group,
            });
        }
        // A group that starts at the end starts after what the source holds now, even if the
        // server restarts before its first checkpoint.
        if definition.start == StartFrom::End {
            store::delete_state(&self.engine, &key).await?;
            if let Some(end) = store::source_end(&self.engine, &key.source)? {
                store::save_checkpoint(&self.engine, &key, end).await?;
            }
        } else {
            // A group made again under the name of a deleted one starts afresh.
            store::delete_state(&self.engine, &key).await?;
        }
        let mut all = Self::definitions(&groups);
        all.push(definition.clone());
        store::save_definitions(&self.engine, &all).await?;
        groups.insert(key, self.start(definition));
        Ok(())
    }

    /// Replaces a group's definition; its consumers are dropped (they reconnect), its
    /// checkpoint and parked events are kept.
    pub async fn update(&self, definition: GroupDefinition) -> Result<(), PersistentError> {
        definition.validate()?;
        let mut groups = self.groups.lock().await;
        let key = definition.key.clone();
        let Some(old) = groups.remove(&key) else {
            return Err(Self::not_found(&key));
        };
        let mut all = Self::definitions(&groups);
        all.push(definition.clone());
        if let Err(e) = store::save_definitions(&self.engine, &all).await {
            groups.insert(key, old);
            return Err(e);
        }
        old.stop().await;
        groups.insert(key, self.start(definition));
        Ok(())
    }

    /// Deletes a group: its consumers are dropped, its checkpoint and parked events removed.
    pub async fn delete(&self, key: &GroupKey) -> Result<(), PersistentError> {
        let mut groups = self.groups.lock().await;
        let Some(old) = groups.remove(key) else {
            return Err(Self::not_found(key));
        };
        if let Err(e) = store::save_definitions(&self.engine, &Self::definitions(&groups)).await {
            groups.insert(key.clone(), old);
            return Err(e);
        }
        old.stop().await;
        store::delete_state(&self.engine, key).await
    }

    /// A group's definition and running state.
    pub async fn info(&self, key: &GroupKey) -> Result<GroupInfo, PersistentError> {
        let (definition, commands) = {
            let groups = self.groups.lock().await;
            let running = groups.get(key).ok_or_else(|| Self::not_found(key))?;
            (running.definition.clone(), running.commands.clone())
        };
        Ok(GroupInfo {
            definition,
            state: Self::state(&commands).await,
        })
    }

    async fn state(commands: &mpsc::Sender<Command>) -> Option<GroupState> {
        let (reply, rx) = oneshot::channel();
        commands.send(Command::Info { reply }).await.ok()?;
        rx.await.ok()
    }

    /// Every group, or those of one source.
    pub async fn list(&self, source: Option<&Source>) -> Vec<GroupInfo> {
        let running: Vec<(GroupDefinition, mpsc::Sender<Command>)> = {
            let groups = self.groups.lock().await;
            groups
                .values()
                .filter(|r| source.is_none_or(|s| &r.definition.key.source == s))
                .map(|r| (r.definition.clone(), r.commands.clone()))
                .collect()
        };
        let mut out = Vec::with_capacity(running.len());
        for (definition, commands) in running {
            out.push(GroupInfo {
                definition,
                state: Self::state(&commands).await,
            });
        }
        out
    }

    /// Joins a group as a consumer with room for `capacity` events in flight.
    pub async fn connect(
        &self,
        key: &GroupKey,
        capacity: usize,
        connection: ConnectionLabel,
    ) -> Result<Consumer, PersistentError> {
        let commands = {
            let groups = self.groups.lock().await;
            groups
                .get(key)
                .ok_or_else(|| Self::not_found(key))?
                .commands
                .clone()
        };
        let capacity = capacity.max(1);
        let id = self.next_consumer.fetch_add(1, Ordering::Relaxed);
        let (events, rx) = mpsc::channel(actor::consumer_channel_capacity(capacity));
        let (reply, answer) = oneshot::channel();
        let dropped = || PersistentError::Dropped {
            stream: key.source.to_string(),
            group: key.group.clone(),
        };
        commands
            .send(Command::Connect {
                id,
                capacity,
                connection,
                events,
                reply,
            })
            .await
            .map_err(|_| dropped())?;
        match answer.await.map_err(|_| dropped())? {
            Ok(()) => Ok(Consumer {
                id,
                events: rx,
                pending: VecDeque::new(),
                commands,
            }),
            Err(GroupError::MaxConsumersReached { .. }) => {
                Err(PersistentError::MaxSubscribersReached {
                    stream: key.source.to_string(),
                    group: key.group.clone(),
                })
            }
            Err(e) => Err(PersistentError::Invalid(e.to_string())),
        }
    }

    /// Puts up to `limit` parked events (all when `None`) back in the group, oldest first.
    /// Returns how many were replayed.
    pub async fn replay_parked(
        &self,
        key: &GroupKey,
        limit: Option<u64>,
    ) -> Result<u64, PersistentError> {
        let commands = {
            let groups = self.groups.lock().await;
            groups
                .get(key)
                .ok_or_else(|| Self::not_found(key))?
                .commands
                .clone()
        };
        let (reply, answer) = oneshot::channel();
        let dropped = || PersistentError::Dropped {
            stream: key.source.to_string(),
            group: key.group.clone(),
        };
        commands
            .send(Command::ReplayParked { limit, reply })
            .await
            .map_err(|_| dropped())?;
        answer.await.map_err(|_| dropped())?
    }

    /// Stops every group and starts them again from their checkpoints (consumers are dropped).
    pub async fn restart(&self) {
        let mut groups = self.groups.lock().await;
        let old = std::mem::take(&mut *groups);
        for (key, running) in old {
            let definition = running.definition.clone();
            running.stop().await;
            groups.insert(key, self.start(definition));
        }
    }

    /// Stops every group, each writing its last checkpoint. Before the engine closes.
    pub async fn shutdown(&self) {
        let mut groups = self.groups.lock().await;
        for (_, running) in std::mem::take(&mut *groups) {
            running.stop().await;
        }
    }
}

/// One consumer's place in a group. Dropping it leaves the group: what it held is retried.
#[derive(Debug)]
pub struct Consumer {
    id: ConsumerId,
    events: mpsc::Receiver<ToConsumer>,
    /// Deliveries of the last batch not yet taken.
    pending: VecDeque<Delivery<Payload>>,
    commands: mpsc::Sender<Command>,
}

impl Consumer {
    /// The next event, or [`ConsumerEvent::Dropped`]; `None` once the group is gone.
    /// Cancel-safe: a batch received is kept whole before anything else can happen.
    pub async fn next(&mut self) -> Option<ConsumerEvent> {
        loop {
            if let Some(d) = self.pending.pop_front() {
                return Some(ConsumerEvent::Event(Box::new(d)));
            }
            match self.events.recv().await? {
                ToConsumer::Deliveries(batch) => self.pending.extend(batch),
                ToConsumer::Dropped => return Some(ConsumerEvent::Dropped),
            }
        }
    }

    /// A handle that acks and nacks for this consumer, for a task of its own; the consumer
    /// stays in the group until the `Consumer` itself is dropped.
    pub fn acks(&self) -> ConsumerAcks {
        ConsumerAcks {
            id: self.id,
            commands: self.commands.clone(),
        }
    }

    pub async fn ack(&self, ids: Vec<Uuid>) {
        self.acks().ack(ids).await;
    }

    pub async fn nack(&self, ids: Vec<Uuid>, action: NackAction, reason: String) {
        self.acks().nack(ids, action, reason).await;
    }
}

/// Acks and nacks on behalf of one [`Consumer`].
#[derive(Clone, Debug)]
pub struct ConsumerAcks {
    id: ConsumerId,
    commands: mpsc::Sender<Command>,
}

impl ConsumerAcks {
    pub async fn ack(&self, ids: Vec<Uuid>) {
        let _ = self
            .commands
            .send(Command::Ack {
                consumer: self.id,
                ids,
            })
            .await;
    }

    pub async fn nack(&self, ids: Vec<Uuid>, action: NackAction, reason: String) {
        let _ = self
            .commands
            .send(Command::Nack {
                consumer: self.id,
                ids,
                action,
                reason,
            })
            .await;
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        // A full command queue cannot take the goodbye now; a task sends it when there is room.
        let command = Command::Disconnect { consumer: self.id };
        if let Err(mpsc::error::TrySendError::Full(command)) = self.commands.try_send(command) {
            let commands = self.commands.clone();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = commands.send(command).await;
                });
            }
        }
    }
}
