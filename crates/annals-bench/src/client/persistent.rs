//! The lean client's persistent subscriptions and catch-up stream subscriptions, for
//! `bench persistent`: create a group on a stream, consume it (`Read`: options, then events
//! in, acks out) on the client's connection, and subscribe to a stream from its start or to
//! `$all` from its end.
//! A group's events are decoded by hand (`read_decode.rs`), as `Streams.Read`'s are, so the
//! bench's two sides spend the same client CPU per event.

use annals_proto::persistent_subscriptions::persistent_subscriptions_client::PersistentSubscriptionsClient;
use annals_proto::persistent_subscriptions::{CreateReq, ReadReq, ReadResp, create_req, read_req};

/// The gRPC path of a persistent subscription's `Read`.
const PERSISTENT_READ_PATH: &str =
    "/event_store.client.persistent_subscriptions.PersistentSubscriptions/Read";
use annals_proto::shared;
use annals_proto::streams::read_req as streams_read;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::read_decode::{PersistentClientCodec, PersistentItem, ReadClientCodec, ReadItem};
use super::{ClientError, RecordedEvent, StreamsClient, stream_identifier};

/// Acks a consumer may queue before sending waits for the connection.
const ACKS_QUEUED_MAX: usize = 64;

/// A group's settings as `bench persistent` creates it: KurrentDB's defaults but the strategy.
#[derive(Clone, Debug)]
pub struct GroupOptions {
    /// `DispatchToSingle`, `RoundRobin`, `Pinned` or `PinnedByCorrelation`.
    pub strategy: String,
    pub read_batch_size: i32,
    pub history_buffer_size: i32,
    pub live_buffer_size: i32,
}

/// One event delivered to a consumer.
#[derive(Clone, Debug)]
pub struct Delivered {
    /// The id to ack it by, as the server sent it.
    pub ack_id: shared::Uuid,
    pub retry_count: i32,
    pub data: Bytes,
}

/// One consumer of a group: a `Read` call.
#[derive(Debug)]
pub struct GroupConsumer {
    acks: mpsc::Sender<ReadReq>,
    answers: tonic::Streaming<PersistentItem>,
}

impl StreamsClient {
    fn persistent_client(&self) -> PersistentSubscriptionsClient<super::Connection> {
        PersistentSubscriptionsClient::with_origin(self.connection.clone(), self.origin.clone())
            .max_decoding_message_size(usize::MAX)
    }

    /// Creates group `group` on `stream`, reading from its start.
    pub async fn create_group(
        &self,
        stream: &str,
        group: &str,
        options: &GroupOptions,
    ) -> Result<(), ClientError> {
        let settings = create_req::Settings {
            max_retry_count: 10,
            min_checkpoint_count: 10,
            max_checkpoint_count: 1_000,
            live_buffer_size: options.live_buffer_size,
            read_batch_size: options.read_batch_size,
            history_buffer_size: options.history_buffer_size,
            message_timeout: Some(create_req::settings::MessageTimeout::MessageTimeoutMs(
                30_000,
            )),
            checkpoint_after: Some(create_req::settings::CheckpointAfter::CheckpointAfterMs(
                2_000,
            )),
            consumer_strategy: options.strategy.clone(),
            ..create_req::Settings::default()
        };
        let req = CreateReq {
            options: Some(create_req::Options {
                stream_option: Some(create_req::options::StreamOption::Stream(
                    create_req::StreamOptions {
                        stream_identifier: Some(stream_identifier(stream)),
                        revision_option: Some(create_req::stream_options::RevisionOption::Start(
                            shared::Empty {},
                        )),
                    },
                )),
                group_name: group.to_owned(),
                settings: Some(settings),
                ..create_req::Options::default()
            }),
        };
        self.persistent_client().create(req).await?;
        Ok(())
    }

    /// Joins group `group` on `stream` with up to `buffer` events in flight; answers once the
    /// server confirmed the subscription.
    pub async fn consume_group(
        &self,
        stream: &str,
        group: &str,
        buffer: i32,
    ) -> Result<GroupConsumer, ClientError> {
        let (acks, outgoing) = mpsc::channel(ACKS_QUEUED_MAX);
        let options = ReadReq {
            content: Some(read_req::Content::Options(read_req::Options {
                stream_option: Some(read_req::options::StreamOption::StreamIdentifier(
                    stream_identifier(stream),
                )),
                group_name: group.to_owned(),
                buffer_size: buffer,
                uuid_option: Some(read_req::options::UuidOption {
                    content: Some(read_req::options::uuid_option::Content::Structured(
                        shared::Empty {},
                    )),
                }),
            })),
        };
        acks.send(options)
            .await
            .map_err(|_| ClientError::Closed("the consumer's call".to_owned()))?;
        let mut grpc =
            tonic::client::Grpc::with_origin(self.connection.clone(), self.origin.clone())
                .max_decoding_message_size(usize::MAX);
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("connection lost: {e}")))?;
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(PERSISTENT_READ_PATH);
        let mut answers = grpc
            .streaming(
                tonic::Request::new(ReceiverStream::new(outgoing)),
                path,
                PersistentClientCodec,
            )
            .await?
            .into_inner();
        match answers.message().await? {
            Some(PersistentItem::Other(ReadResp {
                content: Some(annals_proto::persistent_subscriptions::read_resp::Content::SubscriptionConfirmation(_)),
            })) => Ok(GroupConsumer { acks, answers }),
            _ => Err(ClientError::Protocol(
                "a persistent subscription without its confirmation",
            )),
        }
    }

    /// A catch-up subscription to `stream` from its start.
    pub async fn subscribe_stream(&mut self, stream: &str) -> Result<Subscribed, ClientError> {
        use streams_read::options::{StreamOption, StreamOptions, stream_options::RevisionOption};
        self.subscribe(StreamOption::Stream(StreamOptions {
            stream_identifier: Some(stream_identifier(stream)),
            revision_option: Some(RevisionOption::Start(shared::Empty {})),
        }))
        .await
    }

    /// A live subscription to `$all` from its end.
    pub async fn subscribe_all_from_end(&mut self) -> Result<Subscribed, ClientError> {
        use streams_read::options::{AllOptions, StreamOption, all_options::AllOption};
        self.subscribe(StreamOption::All(AllOptions {
            all_option: Some(AllOption::End(shared::Empty {})),
        }))
        .await
    }

    async fn subscribe(
        &mut self,
        from: streams_read::options::StreamOption,
    ) -> Result<Subscribed, ClientError> {
        use streams_read::options::{CountOption, FilterOption, ReadDirection};
        let req = annals_proto::streams::ReadReq {
            options: Some(streams_read::Options {
                stream_option: Some(from),
                read_direction: ReadDirection::Forwards.into(),
                resolve_links: false,
                count_option: Some(CountOption::Subscription(
                    streams_read::options::SubscriptionOptions {},
                )),
                filter_option: Some(FilterOption::NoFilter(shared::Empty {})),
                uuid_option: Some(streams_read::options::UuidOption {
                    content: Some(streams_read::options::uuid_option::Content::Structured(
                        shared::Empty {},
                    )),
                }),
                control_option: Some(streams_read::options::ControlOption { compatibility: 1 }),
            }),
        };
        self.reads
            .ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("connection lost: {e}")))?;
        let path =
            tonic::codegen::http::uri::PathAndQuery::from_static(annals_proto::STREAMS_READ_PATH);
        let stream = self
            .reads
            .server_streaming(tonic::Request::new(req), path, ReadClientCodec)
            .await?
            .into_inner();
        Ok(Subscribed { stream })
    }
}

impl GroupConsumer {
    /// The next event, `None` when the server ended the call.
    pub async fn next(&mut self) -> Result<Option<Delivered>, ClientError> {
        loop {
            let Some(item) = self.answers.message().await? else {
                return Ok(None);
            };
            let PersistentItem::Event {
                event,
                link,
                retry_count,
            } = item
            else {
                continue;
            };
            let (hi, lo) = link.as_ref().unwrap_or(&event).id.as_u64_pair();
            let ack_id = shared::Uuid {
                value: Some(shared::uuid::Value::Structured(shared::uuid::Structured {
                    most_significant_bits: hi.cast_signed(),
                    least_significant_bits: lo.cast_signed(),
                })),
            };
            return Ok(Some(Delivered {
                ack_id,
                retry_count: i32::try_from(retry_count).unwrap_or(i32::MAX),
                data: event.data,
            }));
        }
    }

    /// The next event if one has arrived already; `None` if none has (or the call ended).
    pub fn try_next(&mut self) -> Option<Result<Option<Delivered>, ClientError>> {
        use futures::FutureExt;
        self.next().now_or_never()
    }

    /// Acks `ids` in one message.
    pub async fn ack(&self, ids: Vec<shared::Uuid>) -> Result<(), ClientError> {
        self.acks
            .send(ReadReq {
                content: Some(read_req::Content::Ack(read_req::Ack {
                    id: Bytes::new(),
                    ids,
                })),
            })
            .await
            .map_err(|_| ClientError::Closed("the consumer's call".to_owned()))
    }
}

/// A catch-up subscription's events.
#[derive(Debug)]
pub struct Subscribed {
    stream: tonic::Streaming<ReadItem>,
}

impl Subscribed {
    /// The next event (confirmations and caught-up notices are skipped); `None` at the end.
    pub async fn next(&mut self) -> Result<Option<RecordedEvent>, ClientError> {
        loop {
            match self.stream.message().await? {
                Some(ReadItem::Event(e)) => return Ok(Some(e)),
                Some(ReadItem::Other(_)) => {}
                None => return Ok(None),
            }
        }
    }
}
