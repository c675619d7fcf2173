//! The RabbitMQ (AMQP 0-9-1) sink: one connection and one channel in publisher-confirm mode
//! per endpoint, made on first use and made again after either drops. A publish counts once the
//! broker confirmed it (`basic.ack`) and did not return it as unroutable (`mandatory`); messages
//! are persistent, carry the event id as `message_id` and the event's coordinates as headers.
//! RabbitMQ does not deduplicate: a re-send after a lost confirm arrives twice, and consumers
//! drop the second by `message_id`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use annals_core::EventRecord;
use futures::FutureExt as _;
use futures::future::BoxFuture;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ErrorKind,
    ExchangeKind,
};
use tokio::sync::Mutex;

use super::{
    HEADER_CONTENT_TYPE, HEADER_EVENT_ID, HEADER_EVENT_TYPE, HEADER_POSITION, HEADER_REVISION,
    HEADER_STREAM, Sink, SinkError, content_type,
};
use crate::config::AmqpSink;
use crate::redact;

/// Longest a connection attempt (TCP, handshake, channel, confirm mode) may take.
const AMQP_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// After a reconnection, how long a message returned as unroutable counts as the broker still
/// recovering its durable queues and bindings (a restarted RabbitMQ takes connections before it
/// has), so it is tried again as if the broker were down rather than counted against the event.
const AMQP_RECOVERY_GRACE: Duration = Duration::from_secs(15);
/// Largest body sent before the broker said otherwise: RabbitMQ's default `max_message_size`.
/// A broker configured lower refuses a larger message by closing the channel; its limit is
/// learned from that refusal.
const AMQP_MESSAGE_BYTES_MAX: usize = 128 * 1024 * 1024;
/// AMQP's `delivery_mode` for a message the broker writes to disk.
const AMQP_DELIVERY_PERSISTENT: u8 = 2;
/// The name RabbitMQ shows for the relay's connections.
const AMQP_CONNECTION_NAME: &str = "annals-relay";

pub(crate) struct AmqpEndpoint(Arc<Inner>);

struct Inner {
    config: AmqpSink,
    url: String,
    link: Mutex<Links>,
    /// Largest body the broker takes, as far as is known.
    message_bytes_max: AtomicUsize,
}

/// The live connection, if any, and a count of those made, so a failed send drops only the
/// connection it failed on, never a newer one.
#[derive(Default)]
struct Links {
    current: Option<Link>,
    made: u64,
}

struct Link {
    generation: u64,
    /// When it was made, and whether an earlier link came before it (a reconnection).
    made_at: std::time::Instant,
    reconnected: bool,
    /// Kept so the connection stays open; dropping it closes the connection.
    connection: Connection,
    /// In confirm mode; shared by every send.
    channel: Channel,
}

impl AmqpEndpoint {
    pub(crate) fn new(config: AmqpSink, url: String) -> Self {
        Self(Arc::new(Inner {
            config,
            url,
            link: Mutex::new(Links::default()),
            message_bytes_max: AtomicUsize::new(AMQP_MESSAGE_BYTES_MAX),
        }))
    }
}

impl Inner {
    fn endpoint(&self) -> String {
        redact::url(&self.url)
    }

    /// The confirm-mode channel and its connection's generation, connecting first if needed, and
    /// whether the connection is a reconnection still within [`AMQP_RECOVERY_GRACE`].
    async fn channel(&self) -> Result<(u64, Channel, bool), SinkError> {
        let mut links = self.link.lock().await;
        self.ensure(&mut links).await?;
        match links.current.as_ref() {
            Some(link) if link.connection.status().blocked() => Err(SinkError::Down(format!(
                "{}: the broker blocked the connection (a memory or disk alarm)",
                self.endpoint()
            ))),
            Some(link) => Ok((
                link.generation,
                link.channel.clone(),
                link.reconnected && link.made_at.elapsed() < AMQP_RECOVERY_GRACE,
            )),
            None => Err(SinkError::Down(format!(
                "{}: not connected",
                self.endpoint()
            ))),
        }
    }

    /// A new channel on the connection, for commands that may close it (a passive declare of a
    /// missing exchange does).
    async fn side_channel(&self) -> Result<Channel, SinkError> {
        let mut links = self.link.lock().await;
        self.ensure(&mut links).await?;
        let Some(link) = links.current.as_ref() else {
            return Err(SinkError::Down(format!(
                "{}: not connected",
                self.endpoint()
            )));
        };
        tokio::time::timeout(AMQP_CONNECT_TIMEOUT, link.connection.create_channel())
            .await
            .map_err(|_| {
                SinkError::Down(format!(
                    "{}: no channel within {AMQP_CONNECT_TIMEOUT:?}",
                    self.endpoint()
                ))
            })?
            .map_err(|e| SinkError::Down(format!("{}: opening a channel: {e}", self.endpoint())))
    }

    /// Connects unless the current connection and channel are both open.
    async fn ensure(&self, links: &mut Links) -> Result<(), SinkError> {
        if links
            .current
            .as_ref()
            .is_some_and(|l| l.connection.status().connected() && l.channel.status().connected())
        {
            return Ok(());
        }
        // A broken connection is dropped before a new one is made.
        links.current = None;
        let (connection, channel) = tokio::time::timeout(AMQP_CONNECT_TIMEOUT, self.connect())
            .await
            .map_err(|_| {
                SinkError::Down(format!(
                    "connecting to {}: no answer within {AMQP_CONNECT_TIMEOUT:?}",
                    self.endpoint()
                ))
            })??;
        links.made += 1;
        links.current = Some(Link {
            made_at: std::time::Instant::now(),
            reconnected: links.made > 1,
            generation: links.made,
            connection,
            channel,
        });
        tracing::debug!(endpoint = %self.endpoint(), "relay connected to RabbitMQ");
        Ok(())
    }

    async fn connect(&self) -> Result<(Connection, Channel), SinkError> {
        let down = |what: &str, e: lapin::Error| {
            SinkError::Down(format!("{what} {}: {e}", self.endpoint()))
        };
        let properties =
            ConnectionProperties::default().with_connection_name(AMQP_CONNECTION_NAME.into());
        let connection = Connection::connect(&self.url, properties)
            .await
            .map_err(|e| down("connecting to", e))?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| down("opening a channel on", e))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| down("enabling publisher confirms on", e))?;
        Ok((connection, channel))
    }

    /// Drops the connection of `generation` if it is still the current one, so the next send
    /// connects again.
    async fn drop_link(&self, generation: u64) {
        let mut links = self.link.lock().await;
        if links
            .current
            .as_ref()
            .is_some_and(|l| l.generation == generation)
        {
            links.current = None;
        }
    }

    fn exchange(&self) -> Result<ShortString, SinkError> {
        ShortString::try_new(self.config.exchange.as_str()).map_err(|_| {
            SinkError::Refused(format!(
                "exchange name {:?} is longer than AMQP's 255 bytes",
                self.config.exchange
            ))
        })
    }

    async fn prepare(&self) -> Result<(), SinkError> {
        let exchange = self.exchange()?;
        let name = self.config.exchange.as_str();
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..ExchangeDeclareOptions::default()
        };
        let channel = self.side_channel().await?;
        let checked = channel
            .exchange_declare(
                exchange.clone(),
                ExchangeKind::Topic,
                passive,
                FieldTable::default(),
            )
            .await;
        match checked {
            Ok(()) => {}
            Err(e) if is_soft(&e, AMQPSoftError::NOTFOUND) => {
                if !self.config.create {
                    return Err(SinkError::Refused(format!(
                        "exchange {name:?} does not exist on {}; declare it (durable, type \
                         topic) or set create = true",
                        self.endpoint()
                    )));
                }
                // The passive declare closed that channel.
                let channel = self.side_channel().await?;
                let durable = ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                };
                channel
                    .exchange_declare(
                        exchange,
                        ExchangeKind::Topic,
                        durable,
                        FieldTable::default(),
                    )
                    .await
                    .map_err(|e| {
                        SinkError::Refused(format!(
                            "declaring exchange {name:?} on {}: {e}",
                            self.endpoint()
                        ))
                    })?;
                tracing::info!(endpoint = %self.endpoint(), exchange = name, "relay declared its exchange (durable, topic)");
            }
            Err(e) if e.is_amqp_soft_error() => {
                return Err(SinkError::Refused(format!(
                    "checking exchange {name:?} on {}: {e}",
                    self.endpoint()
                )));
            }
            Err(e) => {
                return Err(SinkError::Down(format!(
                    "checking exchange {name:?} on {}: {e}",
                    self.endpoint()
                )));
            }
        }
        let _ = channel.close(200, "OK".into()).await;
        tracing::info!(endpoint = %self.endpoint(), exchange = name, "relay sink ready");
        Ok(())
    }

    async fn send(&self, event: &EventRecord) -> Result<(), SinkError> {
        let endpoint = self.endpoint();
        let exchange = self.exchange()?;
        let key = self
            .config
            .routing_key
            .render(event.stream.as_str(), event.event_type.as_str());
        let routing_key = ShortString::try_new(key).map_err(|e| {
            SinkError::Poison(format!(
                "the routing key is longer than AMQP's 255 bytes: {e}"
            ))
        })?;
        let max = self.message_bytes_max.load(Ordering::Relaxed);
        if event.data.len() > max {
            return Err(SinkError::Poison(format!(
                "{endpoint}: the event is {} bytes; the broker takes at most {max}",
                event.data.len()
            )));
        }
        let id = event.id.to_string();
        let mut headers = FieldTable::default();
        let text = |s: &str| AMQPValue::LongString(LongString::from(s));
        headers.insert(HEADER_STREAM.into(), text(event.stream.as_str()));
        headers.insert(HEADER_REVISION.into(), text(&event.revision.0.to_string()));
        headers.insert(HEADER_POSITION.into(), text(&event.position.0.to_string()));
        headers.insert(HEADER_EVENT_TYPE.into(), text(event.event_type.as_str()));
        headers.insert(HEADER_EVENT_ID.into(), text(&id));
        headers.insert(HEADER_CONTENT_TYPE.into(), text(content_type(event)));
        let created_s = u64::try_from(event.created.0.div_euclid(1_000_000_000)).unwrap_or(0);
        let properties = BasicProperties::default()
            .with_message_id(id.as_str().into())
            .with_content_type(content_type(event).into())
            .with_delivery_mode(AMQP_DELIVERY_PERSISTENT)
            .with_timestamp(created_s)
            .with_headers(headers);
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };

        let (generation, channel, recovering) = self.channel().await?;
        let confirmed = tokio::time::timeout(self.config.confirm_timeout, async {
            channel
                .basic_publish(exchange, routing_key, options, &event.data, properties)
                .await?
                .await
        })
        .await;
        match confirmed {
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(returned)))) => {
                let message = format!(
                    "{endpoint}: unroutable: exchange {:?} has no queue bound for routing key \
                     {:?} ({} {}); bind a queue, or the events are lost to RabbitMQ",
                    self.config.exchange,
                    returned.delivery.routing_key.as_str(),
                    returned.reply_code,
                    returned.reply_text.as_str(),
                );
                match recovering {
                    true => Err(SinkError::Down(format!(
                        "{message} (just reconnected: the broker may still be recovering its \
                         queues; tried again)"
                    ))),
                    false => Err(SinkError::Refused(message)),
                }
            }
            Ok(Ok(Confirmation::Nack(_))) => Err(SinkError::Refused(format!(
                "{endpoint}: the broker did not take the message (basic.nack)"
            ))),
            Ok(Ok(Confirmation::NotRequested)) => {
                // Every channel made here is in confirm mode; one that is not cannot be trusted.
                self.drop_link(generation).await;
                Err(SinkError::Down(format!(
                    "{endpoint}: the channel is not in confirm mode"
                )))
            }
            Ok(Err(e)) => {
                let error = self.classify(&endpoint, event, &e);
                // Whatever failed, the channel or the connection is gone with it.
                self.drop_link(generation).await;
                Err(error)
            }
            Err(_) => {
                self.drop_link(generation).await;
                Err(SinkError::Down(format!(
                    "{endpoint}: no confirm within {:?}",
                    self.config.confirm_timeout
                )))
            }
        }
    }

    /// What a failed publish means for the event.
    fn classify(&self, endpoint: &str, event: &EventRecord, e: &lapin::Error) -> SinkError {
        let text = format!("{endpoint}: {e}");
        let ErrorKind::ProtocolError(amqp) = e.kind() else {
            // The connection or the channel broke: the event is not at fault.
            return SinkError::Down(text);
        };
        match amqp.kind() {
            AMQPErrorKind::Hard(_) => SinkError::Down(text),
            AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND) => SinkError::Refused(format!(
                "{text} (was exchange {:?} deleted?)",
                self.config.exchange
            )),
            AMQPErrorKind::Soft(_) => match max_size_in(amqp.get_message().as_str()) {
                // RabbitMQ closes the channel over a message past `max_message_size`, failing
                // every publish in flight on it: only the larger ones are poison.
                Some(max) => {
                    self.message_bytes_max.fetch_min(max, Ordering::Relaxed);
                    if event.data.len() > max {
                        SinkError::Poison(text)
                    } else {
                        SinkError::Down(format!(
                            "{endpoint}: the channel closed over another, larger message"
                        ))
                    }
                }
                None => SinkError::Refused(text),
            },
        }
    }
}

/// Whether `e` is the broker's channel error `kind`.
fn is_soft(e: &lapin::Error, kind: AMQPSoftError) -> bool {
    matches!(e.kind(), ErrorKind::ProtocolError(a) if *a.kind() == AMQPErrorKind::Soft(kind))
}

/// The limit RabbitMQ names when it refuses a message as too large ("message size 2000 is larger
/// than configured max size 1000").
fn max_size_in(text: &str) -> Option<usize> {
    let (_, rest) = text.split_once("max size ")?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

impl Sink for AmqpEndpoint {
    fn prepare(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        self.0.prepare().boxed()
    }

    fn send(&self, event: Arc<EventRecord>) -> BoxFuture<'static, Result<(), SinkError>> {
        let this = Arc::clone(&self.0);
        async move { this.send(&event).await }.boxed()
    }

    fn endpoint(&self) -> String {
        self.0.endpoint()
    }
}

#[cfg(test)]
mod tests {
    use super::max_size_in;

    #[test]
    fn the_broker_s_size_limit_is_read_from_its_refusal() {
        assert_eq!(
            max_size_in(
                "PRECONDITION_FAILED - message size 2000 is larger than configured max size 1000"
            ),
            Some(1000)
        );
        assert_eq!(max_size_in("NOT_FOUND - no exchange 'x'"), None);
    }
}
