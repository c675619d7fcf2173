//! Appends over one `Streams.BatchAppend` call, as the official .NET client makes every append:
//! each append is one request message with a correlation id of its own, answered by the response
//! that carries it, so many appends are in flight on one call at once.

use std::collections::HashMap;
use std::sync::Arc;

use annals_core::ExpectedRevision;
use annals_proto::shared;
use annals_proto::streams::{
    AppendReq, BatchAppendReq, BatchAppendResp, append_req, batch_append_req, batch_append_resp,
};
use parking_lot::Mutex;
use prost::Message;
use uuid::Uuid;

use super::{
    Appended, ClientError, ProposedEvent, StreamsClient, proposed, stream_identifier,
    structured_uuid,
};

impl StreamsClient {
    /// Opens a `Streams.BatchAppend` call on this connection for [`BatchAppender::append`].
    pub async fn batch_appender(&mut self) -> Result<BatchAppender, ClientError> {
        let (requests, rx) = tokio::sync::mpsc::channel(BATCH_APPENDER_QUEUE);
        let mut responses = self
            .inner
            .batch_append(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        let waiting: Waiting = Arc::new(Mutex::new(Some(HashMap::new())));
        let answers = Arc::clone(&waiting);
        tokio::spawn(async move {
            let end = loop {
                match responses.message().await {
                    Ok(Some(resp)) => {
                        let Some(id) = resp.correlation_id.as_ref().and_then(uuid_of) else {
                            break ClientError::Protocol("a batch append answer without its id");
                        };
                        let waiter = answers.lock().as_mut().and_then(|w| w.remove(&id));
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(batch_result(resp));
                        }
                    }
                    Ok(None) => break ClientError::Protocol("the batch append call ended"),
                    Err(status) => break ClientError::Status(status),
                }
            };
            // No append registered from now on can be answered: fail them all, and the later ones
            // at once.
            let left = answers.lock().take().unwrap_or_default();
            let reason = end.to_string();
            for (_, waiter) in left {
                let _ = waiter.send(Err(ClientError::Closed(reason.clone())));
            }
        });
        Ok(BatchAppender {
            requests,
            waiting,
            ids: Arc::new(CorrelationIds::new()),
        })
    }
}

/// Requests queued for one `BatchAppend` call before appends wait for room.
const BATCH_APPENDER_QUEUE: usize = 1_024;

type Waiting =
    Arc<Mutex<Option<HashMap<Uuid, tokio::sync::oneshot::Sender<Result<Appended, ClientError>>>>>>;

/// Appends over one `Streams.BatchAppend` call, as the official .NET client makes every append
/// when the server offers it: each append is one request message (options, its events, final)
/// with a correlation id of its own, answered by the response that carries that id. Clones share
/// the call, so concurrent appends are in flight on it at once.
#[derive(Clone, Debug)]
pub struct BatchAppender {
    requests: tokio::sync::mpsc::Sender<BatchAppendReq>,
    /// The appends waiting for their answer; `None` once the call has ended.
    waiting: Waiting,
    ids: Arc<CorrelationIds>,
}

/// Correlation ids unique within one call: a random prefix and a counter, so an append costs no
/// call to the system's random source.
#[derive(Debug)]
struct CorrelationIds {
    prefix: u64,
    next: std::sync::atomic::AtomicU64,
}

impl CorrelationIds {
    fn new() -> Self {
        Self {
            prefix: Uuid::new_v4().as_u64_pair().0,
            next: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn next(&self) -> Uuid {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Uuid::from_u64_pair(self.prefix, n)
    }
}

impl BatchAppender {
    /// Appends `events` to `stream` in one batch.
    pub async fn append(
        &self,
        stream: &str,
        expected: ExpectedRevision,
        events: Vec<ProposedEvent>,
    ) -> Result<Appended, ClientError> {
        use batch_append_req::options::ExpectedStreamPosition as E;
        let expected = match expected {
            ExpectedRevision::Any => E::Any(()),
            ExpectedRevision::NoStream => E::NoStream(()),
            ExpectedRevision::StreamExists => E::StreamExists(()),
            ExpectedRevision::Exact(r) => E::StreamPosition(r),
            _ => return Err(ClientError::Unsupported("this expected revision")),
        };
        let id = self.ids.next();
        let (tx, rx) = tokio::sync::oneshot::channel();
        match self.waiting.lock().as_mut() {
            Some(waiting) => waiting.insert(id, tx),
            None => {
                return Err(ClientError::Closed(
                    "the batch append call ended".to_owned(),
                ));
            }
        };
        let req = BatchAppendReq {
            correlation_id: Some(structured_uuid(id)),
            options: Some(batch_append_req::Options {
                stream_identifier: Some(stream_identifier(stream)),
                expected_stream_position: Some(expected),
                deadline_option: None,
            }),
            proposed_messages: events.into_iter().map(batch_proposed).collect(),
            is_final: true,
        };
        if self.requests.send(req).await.is_err() {
            if let Some(w) = self.waiting.lock().as_mut() {
                w.remove(&id);
            }
            return Err(ClientError::Closed(
                "the batch append call ended".to_owned(),
            ));
        }
        rx.await
            .map_err(|_| ClientError::Closed("the batch append call ended".to_owned()))?
    }
}

fn batch_proposed(event: ProposedEvent) -> batch_append_req::ProposedMessage {
    let AppendReq {
        content: Some(append_req::Content::ProposedMessage(m)),
    } = proposed(event)
    else {
        return batch_append_req::ProposedMessage::default();
    };
    batch_append_req::ProposedMessage {
        id: m.id,
        metadata: m.metadata,
        custom_metadata: m.custom_metadata,
        data: m.data,
    }
}

/// A batch append's answer in this client's form.
fn batch_result(resp: BatchAppendResp) -> Result<Appended, ClientError> {
    use batch_append_resp::success::{CurrentRevisionOption, PositionOption};
    match resp.result {
        Some(batch_append_resp::Result::Success(s)) => {
            let revision = match s.current_revision_option {
                Some(CurrentRevisionOption::CurrentRevision(r)) => r,
                _ => return Err(ClientError::Protocol("an append without a revision")),
            };
            let position = match s.position_option {
                Some(PositionOption::Position(p)) => p.commit_position,
                _ => return Err(ClientError::Protocol("an append without a position")),
            };
            Ok(Appended { revision, position })
        }
        Some(batch_append_resp::Result::Error(status)) => {
            let wrong = status
                .details
                .as_ref()
                .filter(|d| d.type_url.ends_with("WrongExpectedVersion"))
                .and_then(|d| shared::WrongExpectedVersion::decode(d.value.as_slice()).ok());
            if let Some(w) = wrong {
                use shared::wrong_expected_version::CurrentStreamRevisionOption as C;
                let current = match w.current_stream_revision_option {
                    Some(C::CurrentStreamRevision(r)) => Some(r),
                    _ => None,
                };
                return Err(ClientError::WrongExpectedVersion { current });
            }
            Err(ClientError::Status(tonic::Status::new(
                tonic::Code::from(status.code),
                status.message,
            )))
        }
        None => Err(ClientError::Protocol(
            "a batch append answer without a result",
        )),
    }
}

fn uuid_of(id: &shared::Uuid) -> Option<Uuid> {
    match id.value.as_ref()? {
        shared::uuid::Value::Structured(s) => Some(Uuid::from_u64_pair(
            s.most_significant_bits.cast_unsigned(),
            s.least_significant_bits.cast_unsigned(),
        )),
        shared::uuid::Value::String(s) => Uuid::parse_str(s).ok(),
    }
}
