//! Sinks, shaped alike: one [`Sink`] per broker endpoint sends one event and answers once the
//! broker acknowledged it, or says how it failed ([`SinkError`]). Everything else (ordering,
//! retries, backoff, failover between endpoints, parking, checkpoints) sits above the trait in
//! the runner, so a new sink is one file here.
//!
//! Every message carries the event's stream, revision, position, type and id as headers
//! ([`HEADER_STREAM`] and its siblings), and the event id as the broker's deduplication key.

mod amqp;
mod nats;
mod webhook;

use std::sync::Arc;

use annals_core::EventRecord;
use futures::FutureExt as _;
use futures::future::BoxFuture;

use crate::config::{RelayDefinition, SinkDefinition};

pub(crate) const HEADER_STREAM: &str = "Annals-Stream";
pub(crate) const HEADER_REVISION: &str = "Annals-Revision";
pub(crate) const HEADER_POSITION: &str = "Annals-Position";
pub(crate) const HEADER_EVENT_TYPE: &str = "Annals-Event-Type";
pub(crate) const HEADER_EVENT_ID: &str = "Annals-Event-Id";
pub(crate) const HEADER_CONTENT_TYPE: &str = "Content-Type";

/// How a send failed.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum SinkError {
    /// The broker could not be reached, or did not answer in time: tried again for ever (the
    /// event is not at fault), on the next endpoint if there is one.
    #[error("broker unreachable: {0}")]
    Down(String),
    /// The broker answered with an error that may pass: tried again up to the relay's
    /// `attempts`, then the event is poison.
    #[error("broker refused: {0}")]
    Refused(String),
    /// The broker will never take this event: poison at once.
    #[error("broker rejects the event: {0}")]
    Poison(String),
    /// A send in turn ([`Sink::send_in_turn`]) found the target's last sequence elsewhere: an
    /// earlier send failed (or was a duplicate). Not the event's fault, nor the broker's.
    #[error("out of turn: {0}")]
    OutOfTurn(String),
}

/// A send in turn on the wire: the broker's answer to come.
pub type SentInTurn = Result<BoxFuture<'static, Result<InTurn, SinkError>>, SinkError>;

/// What the broker said of a send in turn it took.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct InTurn {
    /// It already held the event (a re-send): its last sequence did not move.
    pub duplicate: bool,
}

/// One endpoint of a broker.
pub trait Sink: Send + Sync + 'static {
    /// Checks that the target (JetStream stream, exchange) exists, creating it when the relay
    /// was told to; warns about settings that weaken the relay's guarantees. A missing target is
    /// [`SinkError::Refused`] with a message that says what to create.
    fn prepare(&self) -> BoxFuture<'_, Result<(), SinkError>>;

    /// Sends one event; `Ok` once the broker acknowledged it.
    fn send(&self, event: Arc<EventRecord>) -> BoxFuture<'static, Result<(), SinkError>>;

    /// Where this endpoint sends, without credentials.
    fn endpoint(&self) -> String;

    /// Whether sends can be in flight together and still land in order, each taken only if the
    /// one before it was ([`Sink::send_in_turn`]); JetStream's expected last sequence does this.
    fn keeps_order(&self) -> bool {
        false
    }

    /// The sequence of the last message the target holds (for [`Sink::send_in_turn`]).
    fn last_sequence(&self) -> BoxFuture<'_, Result<u64, SinkError>> {
        async { Err(SinkError::Refused("this sink has no sequence".to_owned())) }.boxed()
    }

    /// Sends `event` to be taken only if the target's last sequence is `after`
    /// ([`SinkError::OutOfTurn`] otherwise). The outer future puts the message on the wire, so
    /// sends started one after the other reach the broker in that order; the inner one waits
    /// for the broker's answer.
    fn send_in_turn(&self, event: Arc<EventRecord>, after: u64) -> BoxFuture<'_, SentInTurn> {
        let _ = (event, after);
        async {
            Err(SinkError::Refused(
                "this sink cannot send in turn".to_owned(),
            ))
        }
        .boxed()
    }
}

/// The endpoints of a sink definition, in the order they are tried.
pub(crate) fn endpoints(definition: &RelayDefinition) -> Result<Vec<Arc<dyn Sink>>, String> {
    match &definition.sink {
        SinkDefinition::Nats(n) => Ok(n
            .urls
            .iter()
            .map(|url| {
                let endpoint =
                    nats::NatsEndpoint::new(n.clone(), url.clone(), definition.retry.backoff_max);
                Arc::new(endpoint) as Arc<dyn Sink>
            })
            .collect()),
        SinkDefinition::Amqp(a) => Ok(a
            .urls
            .iter()
            .map(|url| Arc::new(amqp::AmqpEndpoint::new(a.clone(), url.clone())) as Arc<dyn Sink>)
            .collect()),
        SinkDefinition::Webhook(w) => Ok(vec![Arc::new(webhook::WebhookEndpoint::new(w.clone())?)]),
    }
}

/// The content type of an event as a MIME type.
pub(crate) fn content_type(event: &EventRecord) -> &'static str {
    match event.content_type {
        annals_core::ContentType::Json => "application/json",
        _ => "application/octet-stream",
    }
}
