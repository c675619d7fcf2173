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
