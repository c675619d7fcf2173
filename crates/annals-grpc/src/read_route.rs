//! The route serving `Streams.Read`, with a codec of its own: events are encoded by hand
//! ([`crate::convert::encode_read_event`]) straight from the engine's records into the response
//! buffer, and any other response by prost. The request is decoded by prost as in the generated
//! service, with the same size limit, and nothing on the wire differs from it.

use std::convert::Infallible;
use std::marker::PhantomData;

use annals_core::EventRecord;
use annals_server::ServerState;
use bytes::BufMut;
use tonic::Status;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, Context, Poll, Service, StdError, http};
use tonic::server::{Grpc, ServerStreamingService};
use tonic_prost::ProstDecoder;

use crate::convert::{encode_read_event, read_event_len_hint};
use crate::read::{ReadItem, ReadItems};
use annals_proto::streams::ReadReq;

/// The gRPC path of `Streams.Read`, routed here before the generated Streams service.
pub(crate) const PATH: &str = annals_proto::STREAMS_READ_PATH;

/// A gRPC method served on a route of its own, with a codec of its own: what [`OwnCodecRoute`]
/// calls for each request.
pub(crate) trait OwnCodecMethod: Send + 'static {
    fn serve<B>(
        state: ServerState,
        max_decoding: usize,
        req: http::Request<B>,
    ) -> BoxFuture<http::Response<tonic::body::Body>, Infallible>
    where
        B: tonic::codegen::Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static;
}

/// The route of an [`OwnCodecMethod`] over one server's state.
pub(crate) struct OwnCodecRoute<M> {
    state: ServerState,
    /// The largest request accepted, as for the generated services' methods.
    max_decoding: usize,
    method: PhantomData<fn() -> M>,
}

impl<M> OwnCodecRoute<M> {
    pub(crate) fn new(state: ServerState, max_decoding: usize) -> Self {
        Self {
            state,
            max_decoding,
            method: PhantomData,
        }
    }
}

impl<M> Clone for OwnCodecRoute<M> {
    fn clone(&self) -> Self {
        Self::new(self.state.clone(), self.max_decoding)
    }
}

impl<M> std::fmt::Debug for OwnCodecRoute<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnCodecRoute")
            .field("method", &std::any::type_name::<M>())
            .field("max_decoding", &self.max_decoding)
            .finish_non_exhaustive()
    }
}

impl<M, B> Service<http::Request<B>> for OwnCodecRoute<M>
where
    M: OwnCodecMethod,
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        M::serve(self.state.clone(), self.max_decoding, req)
    }
}

/// The `Streams.Read` route.
pub(crate) type ReadRoute = OwnCodecRoute<ReadMethod>;

impl OwnCodecMethod for ReadMethod {
    fn serve<B>(
        state: ServerState,
        max_decoding: usize,
        req: http::Request<B>,
    ) -> BoxFuture<http::Response<tonic::body::Body>, Infallible>
    where
        B: tonic::codegen::Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
    {
        Box::pin(async move {
            let mut grpc = Grpc::new(ReadCodec)
                .apply_max_message_size_config(Some(max_decoding), Some(usize::MAX));
            Ok(grpc.server_streaming(ReadMethod(state), req).await)
        })
    }
}

pub(crate) struct ReadMethod(ServerState);

impl ServerStreamingService<ReadReq> for ReadMethod {
    type Response = ReadItem;
    type ResponseStream = ReadItems;
    type Future = std::future::Ready<Result<tonic::Response<ReadItems>, Status>>;

    fn call(&mut self, request: tonic::Request<ReadReq>) -> Self::Future {
        let who = self.0.principal(request.extensions());
        std::future::ready(
            crate::read::start(self.0.clone(), &who, request.into_inner())
                .map(tonic::Response::new),
        )
    }
}

/// Decodes `ReadReq` with prost; encodes [`ReadItem`]s with [`ReadEncoder`].
#[derive(Clone, Copy, Debug, Default)]
struct ReadCodec;

impl Codec for ReadCodec {
    type Encode = ReadItem;
    type Decode = ReadReq;
    type Encoder = ReadEncoder;
    type Decoder = ProstDecoder<ReadReq>;

    fn encoder(&mut self) -> Self::Encoder {
        ReadEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}

/// Encodes each event into `scratch` first, then copies it into tonic's buffer in one piece:
/// tonic's `EncodeBuf` writes a single byte as a one-byte slice copy, and an event's encoding is
/// about 25 varints written a byte at a time.
#[derive(Clone, Debug, Default)]
struct ReadEncoder {
    scratch: Vec<u8>,
}

impl ReadEncoder {
    fn encode_event(
        &mut self,
        e: &EventRecord,
        link: Option<&EventRecord>,
        structured: bool,
        dst: &mut EncodeBuf<'_>,
    ) {
        self.scratch.clear();
        self.scratch
            .reserve(read_event_len_hint(e) + link.map_or(0, read_event_len_hint));
        encode_read_event(e, link, structured, &mut self.scratch);
        dst.put_slice(&self.scratch);
    }
}

impl Encoder for ReadEncoder {
    type Item = ReadItem;
    type Error = Status;

    fn encode(&mut self, item: ReadItem, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        match item {
            ReadItem::Event(e, structured) => {
                self.encode_event(&e, None, structured, dst);
                Ok(())
            }
            ReadItem::Resolved(r, structured) => {
                self.encode_event(&r.event, r.link.as_ref(), structured, dst);
                Ok(())
            }
            ReadItem::Encoded(bytes) => {
                dst.put_slice(&bytes);
                Ok(())
            }
            ReadItem::Message(m) => prost::Message::encode(m.as_ref(), dst)
                .map_err(|e| Status::internal(format!("encoding a read response: {e}"))),
        }
    }
}
