//! The `event_store.client.streams.Streams` service: the service over one server's state, and
//! each method handed to the module that owns it. Append in [`append`], BatchAppend in
//! [`batch_append`], Delete and Tombstone (one code path) in [`delete`]; Read (reads and catch-up
//! subscriptions) in [`crate::read`].

/// The [`ExpectedRevision`](annals_core::ExpectedRevision) of an `expected_stream_revision`
/// oneof: Append, Delete and Tombstone requests each have a generated type of their own, with
/// the same variants. `$oneof` is an `Option<&_>` of the type `$kind::options::ExpectedStreamRevision`.
macro_rules! expected_revision {
    ($kind:ident, $oneof:expr) => {{
        use annals_core::ExpectedRevision;
        use annals_proto::streams::$kind::options::ExpectedStreamRevision as E;
        match $oneof {
            Some(E::Revision(r)) => ExpectedRevision::Exact(*r),
            Some(E::NoStream(_)) => ExpectedRevision::NoStream,
            Some(E::StreamExists(_)) => ExpectedRevision::StreamExists,
            Some(E::Any(_)) | None => ExpectedRevision::Any,
        }
    }};
}

mod append;
mod batch_append;
mod delete;

use std::pin::Pin;

use annals_proto::streams::streams_server::Streams;
use annals_proto::streams::{
    AppendReq, AppendResp, BatchAppendReq, BatchAppendResp, DeleteReq, DeleteResp, ReadReq,
    ReadResp, TombstoneReq, TombstoneResp,
};
use annals_server::ServerState;
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// The Streams service over one server's state.
#[derive(Clone, Debug)]
pub(crate) struct StreamsService {
    state: ServerState,
}

impl StreamsService {
    pub(crate) fn new(state: ServerState) -> Self {
        Self { state }
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Streams for StreamsService {
    type ReadStream = ResponseStream<ReadResp>;
    type BatchAppendStream = ResponseStream<BatchAppendResp>;

    async fn read(&self, request: Request<ReadReq>) -> Result<Response<Self::ReadStream>, Status> {
        // Served by `crate::read_route`, which encodes events by hand; this prost path answers
        // the same only if the generated service is ever reached directly.
        let who = self.state.principal(request.extensions());
        let items = crate::read::start(self.state.clone(), &who, request.into_inner())?;
        Ok(Response::new(Box::pin(items.map(|item| {
            item.map(crate::read::ReadItem::into_message)
        }))))
    }

    async fn append(
        &self,
        request: Request<Streaming<AppendReq>>,
    ) -> Result<Response<AppendResp>, Status> {
        let who = self.state.principal(request.extensions());
        append::append(&self.state, &who, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn delete(&self, request: Request<DeleteReq>) -> Result<Response<DeleteResp>, Status> {
        let who = self.state.principal(request.extensions());
        delete::remove(&self.state, &who, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn tombstone(
        &self,
        request: Request<TombstoneReq>,
    ) -> Result<Response<TombstoneResp>, Status> {
        let who = self.state.principal(request.extensions());
        delete::remove(&self.state, &who, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn batch_append(
        &self,
        request: Request<Streaming<BatchAppendReq>>,
    ) -> Result<Response<Self::BatchAppendStream>, Status> {
        let who = self.state.principal(request.extensions());
        Ok(Response::new(batch_append::batch_append(
            self.state.clone(),
            who,
            request.into_inner(),
        )))
    }
}
