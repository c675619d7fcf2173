//! A lean client of the KurrentDB `Streams` service: the tonic client generated from our own
//! `.proto` files, over one cleartext HTTP/2 connection of hyper's with Nagle's algorithm off.
//!
//! It owns no connection management, retries, discovery or TLS, which the official clients do;
//! what it keeps is the wire. The gRPC benches use it as their load generator (`--client annals`)
//! because the official Rust client spends several times the server's own CPU per call on the
//! same two cores, so a bench of the server would mostly measure the client. Each
//! [`StreamsClient`] is one connection; clones share it, and concurrent calls on it are HTTP/2
//! streams of that one connection, as with the official clients.
//!
//! Append and Read are here, BatchAppend in `batch_append.rs`, persistent subscriptions and
//! catch-up stream subscriptions in `persistent.rs`. Read answers are decoded by hand
//! (`read_decode.rs`), checked against prost's decoding in its unit test and against the official
//! client on a live server in `annals-grpc`'s tests.

mod batch_append;
mod persistent;
mod read_decode;

use std::collections::HashMap;

use annals_core::ExpectedRevision;
use annals_proto::shared;
use annals_proto::streams::streams_client::StreamsClient as Generated;
use annals_proto::streams::{AppendReq, ReadReq, append_req, append_resp, read_req};
use bytes::Bytes;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::codegen::{BoxFuture, Context, Poll, Service, http};
use uuid::Uuid;

pub use batch_append::BatchAppender;
pub use persistent::{Delivered, GroupConsumer, GroupOptions, Subscribed};
use read_decode::{ReadClientCodec, ReadItem};

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
    /// The connection and its origin, for the other services' stubs.
    connection: Connection,
    origin: http::Uri,
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
        let inner = Generated::with_origin(conn.clone(), origin.clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        Ok(Self {
            connection: conn,
            origin,
            inner,
            reads,
        })
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

    /// Reads up to `count` events of `$all` forwards from `position` (included; 0 for the
    /// start), without a filter.
    pub async fn read_all(&mut self, position: u64, count: u64) -> Result<ReadEvents, ClientError> {
        use read_req::options::all_options::AllOption;
        let from = AllOption::Position(read_req::options::Position {
            commit_position: position,
            prepare_position: position,
        });
        self.read_all_from(from, read_req::options::ReadDirection::Forwards, count)
            .await
    }

    /// The commit position of the last event of `$all`, 0 if it holds none: a read of one event
    /// backwards from the end.
    pub async fn last_position(&mut self) -> Result<u64, ClientError> {
        use read_req::options::all_options::AllOption;
        let mut read = self
            .read_all_from(
                AllOption::End(shared::Empty {}),
                read_req::options::ReadDirection::Backwards,
                1,
            )
            .await?;
        Ok(read.next().await?.map_or(0, |e| e.position))
    }

    /// One `Streams.Read` of `$all`, without a filter, decoded by [`ReadClientCodec`].
    async fn read_all_from(
        &mut self,
        from: read_req::options::all_options::AllOption,
        direction: read_req::options::ReadDirection,
        count: u64,
    ) -> Result<ReadEvents, ClientError> {
        use read_req::options::{AllOptions, CountOption, FilterOption, StreamOption};
        let all = AllOptions {
            all_option: Some(from),
        };
        let req = ReadReq {
            options: Some(read_req::Options {
                stream_option: Some(StreamOption::All(all)),
                read_direction: direction.into(),
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
