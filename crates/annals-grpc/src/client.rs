//! A lean client of the KurrentDB `Streams` service: the tonic client generated from our own
//! `.proto` files, over one cleartext HTTP/2 connection of hyper's with Nagle's algorithm off.
//!
//! It owns no connection management, retries, discovery or TLS, which the official clients do;
//! what it keeps is the wire. The gRPC benches use it as their load generator (`--client annals`)
//! because the official Rust client spends several times the server's own CPU per call on the
//! same two cores, so a bench of the server would mostly measure the client. Each
//! [`StreamsClient`] is one connection; clones share it, and concurrent calls on it are HTTP/2
//! streams of that one connection, as with the official clients.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use prost::Message;

use annals_core::ExpectedRevision;
use bytes::Bytes;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::codegen::{BoxFuture, Context, Poll, Service, http};
use uuid::Uuid;

use crate::read_decode::{ReadClientCodec, ReadItem};
use annals_proto::shared;
use annals_proto::streams::streams_client::StreamsClient as Generated;
use annals_proto::streams::{
    AppendReq, BatchAppendReq, BatchAppendResp, ReadReq, append_req, append_resp, batch_append_req,
    batch_append_resp, read_req,
};

/// What a client call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP/2 handshake with {addr} failed: {source}")]
    Handshake {
        addr: String,
        #[source]
        source: hyper::Error,
    },
    #[error("bad server address {0:?}")]
    Address(String),
    #[error("the server answered {0}")]
    Status(#[from] tonic::Status),
    #[error("wrong expected version: the stream is at {current:?}")]
    WrongExpectedVersion {
        /// The stream's revision, `None` if it does not exist.
        current: Option<u64>,
    },
    #[error("stream {0:?} not found")]
    StreamNotFound(String),
    #[error("{0} cannot be sent by this client")]
    Unsupported(&'static str),
    #[error("the call is closed: {0}")]
    Closed(String),
    #[error("the server's answer is not understood: {0}")]
    Protocol(&'static str),
}

/// One event to append.
#[derive(Clone, Debug)]
pub struct ProposedEvent {
    pub id: Uuid,
    pub event_type: String,
    /// `application/json` if true, else `application/octet-stream`.
    pub json: bool,
    pub data: Bytes,
    pub metadata: Bytes,
}

/// A successful append: the stream's revision and the global position of its last event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub revision: u64,
    pub position: u64,
}

/// One event as read, every field of the wire's `RecordedEvent` decoded.
#[derive(Clone, Debug)]
pub struct RecordedEvent {
    pub id: Uuid,
    pub stream: Bytes,
    pub revision: u64,
    pub position: u64,
    pub event_type: Text,
    pub content_type: Text,
    /// The `created` system metadata as sent: .NET ticks since the Unix epoch.
    pub created: Text,
    pub data: Bytes,
    pub metadata: Bytes,
}

/// UTF-8 text sharing the buffer it was received in.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Text(Bytes);

impl Text {
    /// `bytes` as text, `None` if they are not UTF-8.
    pub fn new(bytes: Bytes) -> Option<Self> {
        std::str::from_utf8(&bytes).is_ok().then_some(Self(bytes))
    }

    pub fn as_str(&self) -> &str {
        // Checked to be UTF-8 when made.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Self(Bytes::from(s.into_bytes()))
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One HTTP/2 connection as the tower service the generated client calls.
#[derive(Clone, Debug)]
struct Connection(SendRequest<tonic::body::Body>);

impl Service<http::Request<tonic::body::Body>> for Connection {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(req))
    }
}

/// A `Streams` client over one HTTP/2 connection; clones share the connection.
#[derive(Clone, Debug)]
pub struct StreamsClient {
    inner: Generated<Connection>,
    /// The same connection for reads, whose answers [`ReadClientCodec`] decodes.
    reads: tonic::client::Grpc<Connection>,
}

impl StreamsClient {
    /// Opens a cleartext HTTP/2 connection to `addr` (`HOST:PORT`). The connection is driven
    /// by a task on the current tokio runtime and ends when the last clone is dropped.
    pub async fn connect(addr: &str) -> Result<Self, ClientError> {
        let origin: http::Uri = format!("http://{addr}")
            .parse()
            .map_err(|_| ClientError::Address(addr.to_owned()))?;
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|source| ClientError::Connect {
                addr: addr.to_owned(),
                source,
            })?;
        tcp.set_nodelay(true)
            .map_err(|source| ClientError::Connect {
                addr: addr.to_owned(),
                source,
            })?;
        let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(|source| ClientError::Handshake {
                addr: addr.to_owned(),
                source,
            })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "client connection ended");
            }
        });
        let conn = Connection(send);
        let reads = tonic::client::Grpc::with_origin(conn.clone(), origin.clone())
            .max_decoding_message_size(usize::MAX);
        let inner = Generated::with_origin(conn, origin)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        Ok(Self { inner, reads })
    }

    /// Appends `events` to `stream` in one `Streams.Append` call (options, then one message per
    /// event, as the official clients send them).
    pub async fn append(
        &mut self,
        stream: &str,
        expected: ExpectedRevision,
        events: Vec<ProposedEvent>,
    ) -> Result<Appended, ClientError> {
        use append_req::options::ExpectedStreamRevision as E;
        let expected = match expected {
            ExpectedRevision::Any => E::Any(shared::Empty {}),
            ExpectedRevision::NoStream => E::NoStream(shared::Empty {}),
            ExpectedRevision::StreamExists => E::StreamExists(shared::Empty {}),
            ExpectedRevision::Exact(r) => E::Revision(r),
            _ => return Err(ClientError::Unsupported("this expected revision")),
        };
        let options = AppendReq {
            content: Some(append_req::Content::Options(append_req::Options {
                stream_identifier: Some(stream_identifier(stream)),
                expected_stream_revision: Some(expected),
            })),
        };
        let messages = std::iter::once(options).chain(events.into_iter().map(proposed));
        let resp = self
            .inner
            .append(tokio_stream::iter(messages))
            .await?
            .into_inner();
        match resp.result {
            Some(append_resp::Result::Success(s)) => {
                use append_resp::success::{CurrentRevisionOption, PositionOption};
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
            Some(append_resp::Result::WrongExpectedVersion(w)) => {
                use append_resp::wrong_expected_version::CurrentRevisionOption as C;
                let current = match w.current_revision_option {
                    Some(C::CurrentRevision(r)) => Some(r),
                    _ => None,
                };
                Err(ClientError::WrongExpectedVersion { current })
            }
            None => Err(ClientError::Protocol("an append answer without a result")),
        }
    }

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

    /// Reads up to `count` events of `$all` forwards from `position` (included; 0 for the
    /// start), without a filter.
    pub async fn read_all(&mut self, position: u64, count: u64) -> Result<ReadEvents, ClientError> {
        use read_req::options::{AllOptions, CountOption, FilterOption, StreamOption, all_options};
        let all = AllOptions {
            all_option: Some(all_options::AllOption::Position(
                read_req::options::Position {
                    commit_position: position,
                    prepare_position: position,
                },
            )),
        };
        let req = ReadReq {
            options: Some(read_req::Options {
                stream_option: Some(StreamOption::All(all)),
                read_direction: read_req::options::ReadDirection::Forwards.into(),
                resolve_links: false,
                count_option: Some(CountOption::Count(count)),
                filter_option: Some(FilterOption::NoFilter(shared::Empty {})),
                uuid_option: Some(read_req::options::UuidOption {
                    content: Some(read_req::options::uuid_option::Content::Structured(
                        shared::Empty {},
                    )),
                }),
                control_option: Some(read_req::options::ControlOption { compatibility: 1 }),
            }),
        };
        self.reads
            .ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("connection lost: {e}")))?;
        let path = http::uri::PathAndQuery::from_static(annals_proto::STREAMS_READ_PATH);
        let stream = self
            .reads
            .server_streaming(tonic::Request::new(req), path, ReadClientCodec)
            .await?
            .into_inner();
        Ok(ReadEvents { stream })
    }
}

/// The events of one read, in order.
#[derive(Debug)]
pub struct ReadEvents {
    stream: tonic::Streaming<ReadItem>,
}

impl ReadEvents {
    /// The next event, `None` at the end of the read.
    pub async fn next(&mut self) -> Result<Option<RecordedEvent>, ClientError> {
        use annals_proto::streams::read_resp::Content;
        loop {
            match self.stream.message().await? {
                None => return Ok(None),
                Some(ReadItem::Event(e)) => return Ok(Some(e)),
                Some(ReadItem::Other(resp)) => {
                    if let Some(Content::StreamNotFound(nf)) = resp.content {
                        let name = nf
                            .stream_identifier
                            .map(|s| String::from_utf8_lossy(&s.stream_name).into_owned())
                            .unwrap_or_default();
                        return Err(ClientError::StreamNotFound(name));
                    }
                    // Positions, checkpoints and the like carry no event.
                }
            }
        }
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

fn stream_identifier(stream: &str) -> shared::StreamIdentifier {
    shared::StreamIdentifier {
        stream_name: Bytes::copy_from_slice(stream.as_bytes()),
    }
}

fn proposed(event: ProposedEvent) -> AppendReq {
    let content_type = if event.json {
        "application/json"
    } else {
        "application/octet-stream"
    };
    let metadata = HashMap::from([
        ("type".to_owned(), event.event_type),
        ("content-type".to_owned(), content_type.to_owned()),
    ]);
    AppendReq {
        content: Some(append_req::Content::ProposedMessage(
            append_req::ProposedMessage {
                id: Some(structured_uuid(event.id)),
                metadata,
                custom_metadata: event.metadata,
                data: event.data,
            },
        )),
    }
}

fn structured_uuid(id: Uuid) -> shared::Uuid {
    let (high, low) = id.as_u64_pair();
    shared::Uuid {
        value: Some(shared::uuid::Value::Structured(shared::uuid::Structured {
            most_significant_bits: high.cast_signed(),
            least_significant_bits: low.cast_signed(),
        })),
    }
}
