//! The NATS JetStream sink: a publish counts once JetStream acknowledged it; the event id goes
//! in `Nats-Msg-Id`, so JetStream drops a re-send within the stream's duplicate window.

use std::sync::Arc;
use std::time::Duration;

use annals_core::EventRecord;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishErrorKind};
use futures::FutureExt as _;
use futures::future::BoxFuture;
use tokio::sync::Mutex;

use super::{
    HEADER_CONTENT_TYPE, HEADER_EVENT_ID, HEADER_EVENT_TYPE, HEADER_POSITION, HEADER_REVISION,
    HEADER_STREAM, InTurn, SentInTurn, Sink, SinkError, content_type,
};
use crate::config::NatsSink;
use crate::redact;

/// Longest a connection attempt to one server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) struct NatsEndpoint(Arc<Inner>);

struct Inner {
    config: NatsSink,
    url: String,
    /// The longest a re-send can come after the first send: the relay's longest backoff.
    resend_within: Duration,
    /// The JetStream context, once connected; the client reconnects by itself after that.
    context: Mutex<Option<jetstream::Context>>,
}

impl NatsEndpoint {
    pub(crate) fn new(config: NatsSink, url: String, resend_within: Duration) -> Self {
        Self(Arc::new(Inner {
            config,
            url,
            resend_within,
            context: Mutex::new(None),
        }))
    }
}

impl Inner {
    /// Publishes one event (taken only after sequence `after`, when given) and waits for
    /// JetStream's acknowledgement.
    async fn publish(
        &self,
        endpoint: &str,
        event: &EventRecord,
        after: Option<u64>,
    ) -> Result<InTurn, SinkError> {
        let ack = self
            .put(endpoint, event, after)
            .await?
            .await
            .map_err(|e| classify(endpoint, e.kind(), &e.to_string()))?;
        Ok(InTurn {
            duplicate: ack.duplicate,
        })
    }

    /// Puts one event on the wire; the future of JetStream's acknowledgement.
    async fn put(
        &self,
        endpoint: &str,
        event: &EventRecord,
        after: Option<u64>,
    ) -> Result<jetstream::context::PublishAckFuture, SinkError> {
        let subject = self
            .config
            .subject
            .render(event.stream.as_str(), event.event_type.as_str());
        let context = self.context().await?;
        let id = event.id.to_string();
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_STREAM, event.stream.as_str());
        headers.insert(HEADER_REVISION, event.revision.0.to_string().as_str());
        headers.insert(HEADER_POSITION, event.position.0.to_string().as_str());
        headers.insert(HEADER_EVENT_TYPE, event.event_type.as_str());
        headers.insert(HEADER_EVENT_ID, id.as_str());
        headers.insert(HEADER_CONTENT_TYPE, content_type(event));
        // `headers` replaces the message's header map: the id and the expectation go after it.
        let mut message = jetstream::message::PublishMessage::build()
            .headers(headers)
            .message_id(id.as_str())
            .payload(event.data.clone());
        if let Some(after) = after {
            message = message.expected_last_sequence(after);
        }
        context
            .send_publish(subject, message)
            .await
            .map_err(|e| classify(endpoint, e.kind(), &e.to_string()))
    }

    async fn context(&self) -> Result<jetstream::Context, SinkError> {
        let mut slot = self.context.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let mut options = async_nats::ConnectOptions::new()
            .connection_timeout(CONNECT_TIMEOUT)
            .name("annals-relay");
        if let (Some(user), Some(password)) = (&self.config.user, &self.config.password) {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &self.config.token {
            options = options.token(token.clone());
        }
        if let Some(file) = &self.config.credentials_file {
            options = options.credentials_file(file).await.map_err(|e| {
                SinkError::Refused(format!("credentials file {}: {e}", file.display()))
            })?;
        }
        if let Some(ca) = &self.config.tls_ca_file {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        let client = options.connect(self.url.as_str()).await.map_err(|e| {
            SinkError::Down(format!("connecting to {}: {e}", redact::url(&self.url)))
        })?;
        let mut context = jetstream::new(client);
        context.set_timeout(self.config.ack_timeout);
        *slot = Some(context.clone());
        Ok(context)
    }
}

impl Sink for NatsEndpoint {
    fn prepare(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        let this = &self.0;
        async move {
            let context = this.context().await?;
            let name = this.config.stream.as_str();
            let stream = match context.get_stream(name).await {
                Ok(stream) => stream,
                Err(e)
                    if matches!(
                        e.kind(),
                        jetstream::context::GetStreamErrorKind::JetStream(_)
                    ) =>
                {
                    if !this.config.create {
                        return Err(SinkError::Refused(format!(
                            "JetStream stream {name:?} does not exist on {} ({e}); create it \
                             with subjects {:?}, or set create = true",
                            self.endpoint(),
                            this.config.subject.nats_filter()
                        )));
                    }
                    context
                        .create_stream(jetstream::stream::Config {
                            name: name.to_owned(),
                            subjects: vec![this.config.subject.nats_filter()],
                            ..Default::default()
                        })
                        .await
                        .map_err(|e| {
                            SinkError::Refused(format!("creating JetStream stream {name:?}: {e}"))
                        })?
                }
                Err(e) => {
                    return Err(SinkError::Down(format!(
                        "looking up JetStream stream {name:?} on {}: {e}",
                        self.endpoint()
                    )));
                }
            };
            let window = stream.cached_info().config.duplicate_window;
            if window < this.resend_within {
                tracing::warn!(
                    endpoint = %self.endpoint(),
                    stream = name,
                    duplicate_window_s = window.as_secs_f64(),
                    backoff_max_s = this.resend_within.as_secs_f64(),
                    "JetStream's duplicate window is shorter than the relay's longest backoff: \
                     an event re-sent after a long outage may arrive twice"
                );
            }
            tracing::info!(
                endpoint = %self.endpoint(),
                stream = name,
                duplicate_window_s = window.as_secs_f64(),
                "relay sink ready"
            );
            Ok(())
        }
        .boxed()
    }

    fn send(&self, event: Arc<EventRecord>) -> BoxFuture<'static, Result<(), SinkError>> {
        let this = Arc::clone(&self.0);
        let endpoint = self.endpoint();
        async move {
            this.publish(&endpoint, &event, None).await?;
            Ok(())
        }
        .boxed()
    }

    fn keeps_order(&self) -> bool {
        true
    }

    fn last_sequence(&self) -> BoxFuture<'_, Result<u64, SinkError>> {
        let this = &self.0;
        async move {
            let context = this.context().await?;
            let name = this.config.stream.as_str();
            let mut stream = context.get_stream(name).await.map_err(|e| {
                SinkError::Down(format!(
                    "JetStream stream {name:?} on {}: {e}",
                    self.endpoint()
                ))
            })?;
            let info = stream.info().await.map_err(|e| {
                SinkError::Down(format!(
                    "JetStream stream {name:?} on {}: {e}",
                    self.endpoint()
                ))
            })?;
            Ok(info.state.last_sequence)
        }
        .boxed()
    }

    fn send_in_turn(&self, event: Arc<EventRecord>, after: u64) -> BoxFuture<'_, SentInTurn> {
        let endpoint = self.endpoint();
        async move {
            let ack = self.0.put(&endpoint, &event, Some(after)).await?;
            Ok(async move {
                let ack = ack
                    .await
                    .map_err(|e| classify(&endpoint, e.kind(), &e.to_string()))?;
                Ok(InTurn {
                    duplicate: ack.duplicate,
                })
            }
            .boxed())
        }
        .boxed()
    }

    fn endpoint(&self) -> String {
        redact::url(&self.0.url)
    }
}

fn classify(endpoint: &str, kind: PublishErrorKind, text: &str) -> SinkError {
    let text = format!("{endpoint}: {text}");
    match kind {
        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => SinkError::Down(text),
        PublishErrorKind::MaxPayloadExceeded => SinkError::Poison(text),
        PublishErrorKind::WrongLastSequence => SinkError::OutOfTurn(text),
        _ => SinkError::Refused(text),
    }
}
