//! The `PersistentSubscriptions` service: groups created, updated, deleted, listed and
//! described, consumed through `Read` (a bidirectional call per consumer: options, then acks and
//! nacks; the confirmation, then events), parked events replayed. Each call maps its messages
//! onto `annals_persistent::Subscriptions`, which holds every rule.

mod convert;
pub(crate) mod read_route;

use std::pin::Pin;
use std::sync::Arc;

use annals_core::StreamRight;
use annals_persistent::{
    ConnectionLabel, ConsumerEvent, Delivery, NackAction, Payload, PersistentError, Source,
    Subscriptions,
};
use annals_proto::persistent_subscriptions::persistent_subscriptions_server::PersistentSubscriptions;
use annals_proto::persistent_subscriptions::{
    CreateReq, CreateResp, DeleteReq, DeleteResp, GetInfoReq, GetInfoResp, ListReq, ListResp,
    ReadReq, ReadResp, ReplayParkedReq, ReplayParkedResp, UpdateReq, UpdateResp, delete_req,
    get_info_req, list_req, read_req, replay_parked_req,
};
use annals_proto::shared::Empty;
use annals_server::ServerState;
use futures::Stream;
use futures::StreamExt as _;
use tokio::sync::oneshot;
use tonic::{Request, Response, Status, Streaming};

use crate::convert::parse_uuid;
use crate::error::GrpcError;

/// The service over a server's groups.
#[derive(Clone, Debug)]
pub(crate) struct PersistentService {
    state: ServerState,
}

impl PersistentService {
    pub(crate) fn new(state: ServerState) -> Self {
        Self { state }
    }

    /// Refuses a management call `what` unless the caller is in `$admins` or `$ops`.
    fn operator<T>(&self, request: &Request<T>, what: &str) -> Result<(), Status> {
        let who = self.state.principal(request.extensions());
        self.state
            .check_operator(&who, what)
            .map_err(|e| GrpcError::from(e).into())
    }

    /// Refuses a call without credentials (when the server runs with `--auth`): reading a
    /// group's info or the list of groups needs any user, as in KurrentDB.
    fn authenticated<T>(&self, request: &Request<T>) -> Result<(), Status> {
        match self.state.principal(request.extensions()) {
            annals_server::Principal::Anonymous => Err(GrpcError::Unauthenticated(
                "not authenticated: credentials required".to_owned(),
            )
            .into()),
            _ => Ok(()),
        }
    }

    fn subscriptions(&self) -> Result<Arc<Subscriptions>, Status> {
        subscriptions(&self.state)
    }
}

/// The groups, where this node runs them; where another node does, the `not-leader` answer
/// that sends clients there.
fn subscriptions(state: &ServerState) -> Result<Arc<Subscriptions>, Status> {
    match state.persistent.held() {
        annals_server::Held::Here(subs) => Ok(subs),
        annals_server::Held::Off => Err(Status::unavailable(
            "this server runs no persistent subscriptions",
        )),
        annals_server::Held::Elsewhere(at) => {
            let leader = at.as_deref().and_then(|a| {
                let (host, port) = a.rsplit_once(':')?;
                Some((host.trim_matches(['[', ']']).to_owned(), port.parse().ok()?))
            });
            Err(match leader {
                Some((host, port)) => GrpcError::NotLeader { host, port }.into(),
                None => Status::unavailable(
                    "another node runs the persistent subscriptions; which one is not known yet",
                ),
            })
        }
    }
}

type ReadStream = Pin<Box<dyn Stream<Item = Result<ReadResp, Status>> + Send>>;

fn nack_action(value: i32) -> NackAction {
    match value {
        1 => NackAction::Park,
        2 => NackAction::Retry,
        3 => NackAction::Skip,
        4 => NackAction::Stop,
        _ => NackAction::Unknown,
    }
}

fn ids(wire: &[annals_proto::shared::Uuid]) -> Result<Vec<uuid::Uuid>, Status> {
    wire.iter()
        .map(|id| parse_uuid(Some(id)).map_err(Status::from))
        .collect()
}

/// One answer of a `Read` call: a delivery, encoded by hand on the route that serves the call
/// (`read_route.rs`), or any other message.
pub(crate) enum Answer {
    Event {
        delivery: Box<Delivery<Payload>>,
        structured: bool,
    },
    Message(Box<ReadResp>),
}

impl Answer {
    /// The answer as prost's message.
    fn into_message(self) -> ReadResp {
        match self {
            Answer::Event {
                delivery,
                structured,
            } => convert::read_event(
                delivery.message.payload.event(),
                delivery.message.payload.link(),
                delivery.retry_count,
                structured,
            ),
            Answer::Message(m) => *m,
        }
    }
}

/// Starts a `Read` call: reads its options, joins the group, and hands back the call's answers
/// (the confirmation, then deliveries) while a task relays acks and nacks to the group.
pub(crate) async fn start_read(
    state: ServerState,
    request: Request<Streaming<ReadReq>>,
) -> Result<Answers, Status> {
    let subs = subscriptions(&state)?;

    let label = ConnectionLabel {
        from: request
            .extensions()
            .get::<annals_server::PeerAddr>()
            .map(|a| a.0.to_string())
            .unwrap_or_default(),
        name: request
            .metadata()
            .get("connection-name")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
    };
    let (_, extensions, mut inbound) = request.into_parts();
    let Some(read_req::Content::Options(options)) =
        inbound.message().await?.and_then(|m| m.content)
    else {
        return Err(Status::invalid_argument(
            "a persistent subscription's first message must be its options",
        ));
    };
    let source = match &options.stream_option {
        Some(read_req::options::StreamOption::StreamIdentifier(s)) => {
            convert::source(Some(s), false)?
        }
        Some(read_req::options::StreamOption::All(_)) => Source::All,
        None => return Err(Status::invalid_argument("Read names no stream")),
    };
    let structured = matches!(
        options.uuid_option.and_then(|u| u.content),
        Some(read_req::options::uuid_option::Content::Structured(_))
    );
    // Consuming a group needs read on its source.
    let who = state.principal(&extensions);
    state
        .check_stream(&who, &source.to_string(), StreamRight::Read)
        .map_err(GrpcError::from)?;
    let key = convert::key(source, &options.group_name)?;
    let capacity = usize::try_from(options.buffer_size).unwrap_or(0).max(1);
    let consumer = subs
        .connect(&key, capacity, label)
        .await
        .map_err(convert::status)?;
    // Acks and nacks arrive on a task of their own; deliveries go straight from the consumer
    // to the response, with no queue between. The task reports a bad request, or the end of
    // the client's side, through `ended`.
    let (mut ended_tx, ended) = oneshot::channel::<Option<Status>>();
    let acks = consumer.acks();
    let stopping = state.clone();
    tokio::spawn(async move {
        let outcome = loop {
            let message = tokio::select! {
                message = inbound.message() => message,
                () = ended_tx.closed() => return,
                () = stopping.stopping() => return,
            };
            let content = match message {
                Ok(Some(m)) => m.content,
                // The client ended its side or went away: leave the group.
                Ok(None) | Err(_) => break None,
            };
            match content {
                Some(read_req::Content::Ack(ack)) => match ids(&ack.ids) {
                    Ok(ids) => acks.ack(ids).await,
                    Err(e) => break Some(e),
                },
                Some(read_req::Content::Nack(nack)) => match ids(&nack.ids) {
                    Ok(ids) => acks.nack(ids, nack_action(nack.action), nack.reason).await,
                    Err(e) => break Some(e),
                },
                // Options again, or nothing: ignored.
                _ => {}
            }
        };
        let _ = ended_tx.send(outcome);
    });
    let confirmation = Answer::Message(Box::new(convert::confirmation(&key)));
    let outbound = Outbound {
        consumer,
        ended,
        state,
        key,
        structured,
        done: false,
    };
    let deliveries = futures::stream::unfold(outbound, Outbound::next);
    Ok(Box::pin(
        futures::stream::once(std::future::ready(Ok(confirmation))).chain(deliveries),
    ))
}

/// The answers of one `Read` call after its confirmation.
pub(crate) type Answers = Pin<Box<dyn Stream<Item = Result<Answer, Status>> + Send>>;

/// What the response of a `Read` call reads from: the consumer's deliveries, until the group
/// drops it, the ack task ends, or the server stops.
struct Outbound {
    consumer: annals_persistent::Consumer,
    ended: oneshot::Receiver<Option<Status>>,
    state: ServerState,
    key: annals_persistent::GroupKey,
    structured: bool,
    /// The last answer was given: the next poll ends the stream.
    done: bool,
}

impl Outbound {
    async fn next(mut self) -> Option<(Result<Answer, Status>, Self)> {
        if self.done {
            return None;
        }
        let answer = tokio::select! {
            event = self.consumer.next() => match event {
                Some(ConsumerEvent::Event(delivery)) => Ok(Answer::Event {
                    delivery,
                    structured: self.structured,
                }),
                Some(ConsumerEvent::Dropped) | None => Err(convert::status(
                    PersistentError::Dropped {
                        stream: self.key.source.to_string(),
                        group: self.key.group.clone(),
                    },
                )),
            },
            ended = &mut self.ended => match ended {
                Ok(Some(status)) => Err(status),
                // The client ended its side: so does the response.
                Ok(None) | Err(_) => return None,
            },
            () = self.state.stopping() => return None,
        };
        self.done = answer.is_err();
        Some((answer, self))
    }
}

#[tonic::async_trait]
impl PersistentSubscriptions for PersistentService {
    async fn create(&self, request: Request<CreateReq>) -> Result<Response<CreateResp>, Status> {
        self.operator(&request, "create subscription group")?;
        let subs = self.subscriptions()?;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("Create without options"))?;
        let definition = convert::create_definition(options)?;
        subs.create(definition).await.map_err(convert::status)?;
        Ok(Response::new(CreateResp {}))
    }

    async fn update(&self, request: Request<UpdateReq>) -> Result<Response<UpdateResp>, Status> {
        self.operator(&request, "update subscription group")?;
        let subs = self.subscriptions()?;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("Update without options"))?;
        use annals_proto::persistent_subscriptions::update_req::options::StreamOption;
        let source = match &options.stream_option {
            Some(StreamOption::Stream(s)) => convert::source(s.stream_identifier.as_ref(), false)?,
            Some(StreamOption::All(_)) => Source::All,
            #[expect(deprecated, reason = "older clients still send the deprecated field")]
            None => convert::source(options.stream_identifier.as_ref(), false)?,
        };
        let key = convert::key(source, &options.group_name)?;
        let current = subs.info(&key).await.map_err(convert::status)?.definition;
        let definition = convert::update_definition(options, &current)?;
        subs.update(definition).await.map_err(convert::status)?;
        Ok(Response::new(UpdateResp {}))
    }

    async fn delete(&self, request: Request<DeleteReq>) -> Result<Response<DeleteResp>, Status> {
        self.operator(&request, "delete subscription group")?;
        let subs = self.subscriptions()?;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("Delete without options"))?;
        let source = match &options.stream_option {
            Some(delete_req::options::StreamOption::StreamIdentifier(s)) => {
                convert::source(Some(s), false)?
            }
            Some(delete_req::options::StreamOption::All(_)) => Source::All,
            None => return Err(Status::invalid_argument("Delete names no stream")),
        };
        let key = convert::key(source, &options.group_name)?;
        subs.delete(&key).await.map_err(convert::status)?;
        Ok(Response::new(DeleteResp {}))
    }

    type ReadStream = ReadStream;

    async fn read(
        &self,
        request: Request<Streaming<ReadReq>>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        use futures::StreamExt;
        let answers = start_read(self.state.clone(), request).await?;
        let stream = answers.map(|a| a.map(Answer::into_message));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_info(
        &self,
        request: Request<GetInfoReq>,
    ) -> Result<Response<GetInfoResp>, Status> {
        self.authenticated(&request)?;
        let subs = self.subscriptions()?;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("GetInfo without options"))?;
        let source = match &options.stream_option {
            Some(get_info_req::options::StreamOption::StreamIdentifier(s)) => {
                convert::source(Some(s), false)?
            }
            Some(get_info_req::options::StreamOption::All(_)) => Source::All,
            None => return Err(Status::invalid_argument("GetInfo names no stream")),
        };
        let key = convert::key(source, &options.group_name)?;
        let info = subs.info(&key).await.map_err(convert::status)?;
        Ok(Response::new(GetInfoResp {
            subscription_info: Some(convert::subscription_info(&info)),
        }))
    }

    async fn replay_parked(
        &self,
        request: Request<ReplayParkedReq>,
    ) -> Result<Response<ReplayParkedResp>, Status> {
        self.operator(&request, "replay parked events")?;
        let subs = self.subscriptions()?;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("ReplayParked without options"))?;
        let source = match &options.stream_option {
            Some(replay_parked_req::options::StreamOption::StreamIdentifier(s)) => {
                convert::source(Some(s), false)?
            }
            Some(replay_parked_req::options::StreamOption::All(_)) => Source::All,
            None => return Err(Status::invalid_argument("ReplayParked names no stream")),
        };
        let limit = match options.stop_at_option {
            Some(replay_parked_req::options::StopAtOption::StopAt(n)) => {
                Some(u64::try_from(n).map_err(|_| {
                    Status::invalid_argument(format!("stop_at must not be negative, got {n}"))
                })?)
            }
            Some(replay_parked_req::options::StopAtOption::NoLimit(_)) | None => None,
        };
        let key = convert::key(source, &options.group_name)?;
        subs.replay_parked(&key, limit)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(ReplayParkedResp {}))
    }

    async fn list(&self, request: Request<ListReq>) -> Result<Response<ListResp>, Status> {
        self.authenticated(&request)?;
        let subs = self.subscriptions()?;
        let source = match request.into_inner().options.and_then(|o| o.list_option) {
            Some(list_req::options::ListOption::ListForStream(s)) => match s.stream_option {
                Some(list_req::stream_option::StreamOption::Stream(id)) => {
                    Some(convert::source(Some(&id), false)?)
                }
                Some(list_req::stream_option::StreamOption::All(_)) => Some(Source::All),
                None => None,
            },
            Some(list_req::options::ListOption::ListAllSubscriptions(_)) | None => None,
        };
        let groups = subs.list(source.as_ref()).await;
        Ok(Response::new(ListResp {
            subscriptions: groups.iter().map(convert::subscription_info).collect(),
        }))
    }

    async fn restart_subsystem(&self, request: Request<Empty>) -> Result<Response<Empty>, Status> {
        self.operator(&request, "restart persistent subscriptions")?;
        let subs = self.subscriptions()?;
        subs.restart().await;
        Ok(Response::new(Empty {}))
    }
}
