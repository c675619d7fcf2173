//! Relays: subscribers of the log whose output is a broker (NATS JetStream, RabbitMQ) or a
//! webhook. A relay checkpoints only what the broker acknowledged, so a restart or a crash
//! sends again what may not have arrived (at least once, with the event id as the broker's
//! deduplication key), and it retries for ever while the broker is down: the log is the buffer,
//! and nothing in the write path waits for a broker.
//!
//! - `config`: the `[[relay]]` declarations and their checks.
//! - `template`: subject and routing-key templates, with escaping.
//! - `sink`: one [`Sink`] per broker endpoint; one file per broker.
//! - `lanes`: the order events go out in and the checkpoint, pure.
//! - `runner`: the task that runs one relay.
//! - `store`: a relay's definitions, checkpoint and parked events in the log.
//! - [`Relays`] (here): every relay of a server, applied, listed and commanded.

mod config;
mod error;
mod lanes;
mod redact;
mod runner;
mod sink;
mod store;
mod template;

use std::collections::BTreeMap;
use std::sync::Arc;

use annals_engine::Engine;
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

pub use config::{
    AmqpSink, CONCURRENCY_MAX, NatsSink, OnPoison, Order, RELAY_FILE_BYTES_MAX, RELAYS_MAX,
    RelayDefinition, RetryPolicy, SinkDefinition, WebhookSink, parse_definitions,
};
pub use error::RelayError;
pub use runner::{RELAY_READ_AHEAD_MAX, RelayState, RelayStatus};
pub use sink::{InTurn, SentInTurn, Sink, SinkError};
pub use store::{ParkedEvent, ParkedInfo};
pub use template::{Escape, Template};

use runner::Command;

/// What applying a definition did.
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize)]
#[serde(tag = "outcome", content = "name", rename_all = "snake_case")]
pub enum Applied {
    Created(String),
    /// Restarted with the new definition, from its checkpoint.
    Updated(String),
    Unchanged(String),
}

struct Running {
    definition: RelayDefinition,
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

/// Every relay of a server.
pub struct Relays {
    engine: Engine,
    relays: Mutex<BTreeMap<String, Running>>,
}

impl std::fmt::Debug for Relays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relays").finish_non_exhaustive()
    }
}

impl Relays {
    /// Starts every relay saved in the log. Must be called within a tokio runtime.
    pub async fn open(engine: Engine) -> Result<Arc<Self>, RelayError> {
        let texts = store::load_definitions(&engine)?;
        let relays = Arc::new(Self {
            engine,
            relays: Mutex::new(BTreeMap::new()),
        });
        {
            let mut running = relays.relays.lock().await;
            for text in texts {
                for definition in parse_definitions(&text)? {
                    let name = definition.name.clone();
                    running.insert(name, relays.start(definition)?);
                }
            }
        }
        Ok(relays)
    }

    fn start(&self, definition: RelayDefinition) -> Result<Running, RelayError> {
        let sinks = sink::endpoints(&definition).map_err(|m| {
            RelayError::Definition(format!("relay {:?}, sink: {m}", definition.name))
        })?;
        let (commands, rx) = mpsc::channel(runner::RELAY_COMMANDS_MAX);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(runner::run(
            self.engine.clone(),
            definition.clone(),
            sinks,
            rx,
            stop_rx,
        ));
        Ok(Running {
            definition,
            commands,
            stop,
            task,
        })
    }

    /// Applies every relay of a definition file: new ones start, changed ones restart from
    /// their checkpoints, the same ones are left alone. Saved before it is answered; nothing is
    /// applied if any definition is wrong.
    pub async fn apply(&self, text: &str) -> Result<Vec<Applied>, RelayError> {
        let definitions = parse_definitions(text)?;
        // Every sink is built before anything changes, so a bad one changes nothing.
        for d in &definitions {
            sink::endpoints(d)
                .map_err(|m| RelayError::Definition(format!("relay {:?}, sink: {m}", d.name)))?;
        }
        let mut relays = self.relays.lock().await;
        if relays.len()
            + definitions
                .iter()
                .filter(|d| !relays.contains_key(&d.name))
                .count()
            > RELAYS_MAX
        {
            return Err(RelayError::Definition(format!(
                "a server runs at most {RELAYS_MAX} relays"
            )));
        }
        let mut texts: BTreeMap<String, String> = relays
            .iter()
            .map(|(n, r)| (n.clone(), r.definition.text.clone()))
            .collect();
        let mut outcomes = Vec::with_capacity(definitions.len());
        for d in &definitions {
            let outcome = match relays.get(&d.name) {
                None => Applied::Created(d.name.clone()),
                Some(r) if r.definition == *d => Applied::Unchanged(d.name.clone()),
                Some(_) => Applied::Updated(d.name.clone()),
            };
            texts.insert(d.name.clone(), d.text.clone());
            outcomes.push(outcome);
        }
        store::save_definitions(&self.engine, &texts.into_values().collect::<Vec<_>>()).await?;
        for (d, outcome) in definitions.into_iter().zip(&outcomes) {
            match outcome {
                Applied::Unchanged(_) => {}
                Applied::Created(_) | Applied::Updated(_) => {
                    if let Some(old) = relays.remove(&d.name) {
                        old.stop().await;
                    }
                    let name = d.name.clone();
                    relays.insert(name, self.start(d)?);
                }
            }
        }
        Ok(outcomes)
    }

    /// Stops and forgets a relay, with its checkpoint and parked events.
    pub async fn remove(&self, name: &str) -> Result<(), RelayError> {
        let mut relays = self.relays.lock().await;
        let Some(old) = relays.remove(name) else {
            return Err(RelayError::NotFound(name.to_owned()));
        };
        let texts: Vec<String> = relays.values().map(|r| r.definition.text.clone()).collect();
        store::save_definitions(&self.engine, &texts).await?;
        old.stop().await;
        store::delete_state(&self.engine, name).await
    }

    async fn ask<T>(
        &self,
        name: &str,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, RelayError> {
        let sender = {
            let relays = self.relays.lock().await;
            relays
                .get(name)
                .ok_or_else(|| RelayError::NotFound(name.to_owned()))?
                .commands
                .clone()
        };
        let (tx, rx) = oneshot::channel();
        sender
            .send(command(tx))
            .await
            .map_err(|_| RelayError::Stopping)?;
        rx.await.map_err(|_| RelayError::Stopping)
    }

    /// One relay's status.
    pub async fn status(&self, name: &str) -> Result<RelayStatus, RelayError> {
        self.ask(name, Command::Status).await
    }

    /// Every relay's status, by name.
    pub async fn list(&self) -> Vec<RelayStatus> {
        let names: Vec<String> = self.relays.lock().await.keys().cloned().collect();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if let Ok(s) = self.status(&name).await {
                out.push(s);
            }
        }
        out
    }

    async fn tell(&self, name: &str, command: Command) -> Result<(), RelayError> {
        let sender = {
            let relays = self.relays.lock().await;
            relays
                .get(name)
                .ok_or_else(|| RelayError::NotFound(name.to_owned()))?
                .commands
                .clone()
        };
        sender.send(command).await.map_err(|_| RelayError::Stopping)
    }

    pub async fn pause(&self, name: &str) -> Result<(), RelayError> {
        self.tell(name, Command::Pause).await
    }

    /// Resumes a paused relay, or one stopped at a poison event (which is tried again).
    pub async fn resume(&self, name: &str) -> Result<(), RelayError> {
        self.tell(name, Command::Resume).await
    }

    /// Starts the relay over after `position`: what it sent since is sent again.
    pub async fn reset(&self, name: &str, position: u64) -> Result<(), RelayError> {
        self.ask(name, |reply| Command::Reset { position, reply })
            .await?
    }

    /// Sends the parked events again, oldest first; returns how many.
    pub async fn retry_parked(&self, name: &str) -> Result<u64, RelayError> {
        self.ask(name, |reply| Command::RetryParked { reply })
            .await?
    }

    /// The relay's parked events, oldest first.
    pub async fn parked(&self, name: &str) -> Result<Vec<ParkedEvent>, RelayError> {
        if !self.relays.lock().await.contains_key(name) {
            return Err(RelayError::NotFound(name.to_owned()));
        }
        store::read_parked(&self.engine, name, store::RELAY_PARKED_READ_MAX)
    }

    /// Stops every relay; each writes its checkpoint first.
    pub async fn shutdown(&self) {
        let mut relays = self.relays.lock().await;
        for (_, r) in std::mem::take(&mut *relays) {
            r.stop().await;
        }
    }
}
