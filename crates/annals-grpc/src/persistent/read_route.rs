//! The route serving a persistent subscription's `Read`, with a codec of its own: deliveries are
//! encoded by hand ([`crate::convert::encode_persistent_event`]) straight from the engine's
//! records into the response buffer, as `Streams.Read`'s events are (`crate::read_route`); any
//! other answer by prost. Requests (options, acks, nacks) are decoded by prost with the same size
//! limit as the generated service's, and nothing on the wire differs from it.

use std::convert::Infallible;

use annals_proto::persistent_subscriptions::ReadReq;
use annals_server::ServerState;
use bytes::BufMut;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, StdError, http};
use tonic::server::{Grpc, StreamingService};
use tonic::{Status, Streaming};
use tonic_prost::ProstDecoder;

use super::{Answer, start_read};
use crate::convert::{encode_persistent_event, read_event_len_hint};
use crate::read_route::{OwnCodecMethod, OwnCodecRoute};

/// The gRPC path of `PersistentSubscriptions.Read`, routed here before the generated service.
pub(crate) const PATH: &str =
    "/event_store.client.persistent_subscriptions.PersistentSubscriptions/Read";

/// The `Read` route.
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
            Ok(grpc.streaming(ReadMethod(state), req).await)
        })
    }
}

pub(crate) struct ReadMethod(ServerState);

impl StreamingService<ReadReq> for ReadMethod {
    type Response = Answer;
    type ResponseStream = super::Answers;
    type Future = BoxFuture<tonic::Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: tonic::Request<Streaming<ReadReq>>) -> Self::Future {
        let state = self.0.clone();
        Box::pin(async move { Ok(tonic::Response::new(start_read(state, request).await?)) })
    }
}

/// Decodes `ReadReq` with prost; encodes [`Answer`]s with [`ReadEncoder`].
#[derive(Clone, Copy, Debug, Default)]
struct ReadCodec;

impl Codec for ReadCodec {
    type Encode = Answer;
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

/// Encodes each delivery into `scratch` first, then copies it into tonic's buffer in one piece
/// (tonic's `EncodeBuf` writes a single byte as a one-byte slice copy).
#[derive(Clone, Debug, Default)]
struct ReadEncoder {
    scratch: Vec<u8>,
}

impl Encoder for ReadEncoder {
    type Item = Answer;
    type Error = Status;

    fn encode(&mut self, item: Answer, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        match item {
            Answer::Event {
                delivery,
                structured,
            } => {
                let event = delivery.message.payload.event();
                let link = delivery.message.payload.link();
                self.scratch.clear();
                self.scratch
                    .reserve(read_event_len_hint(event) + link.map_or(0, read_event_len_hint));
                encode_persistent_event(
                    event,
                    link,
                    delivery.retry_count,
                    structured,
                    &mut self.scratch,
                );
                dst.put_slice(&self.scratch);
                Ok(())
            }
            Answer::Message(m) => prost::Message::encode(m.as_ref(), dst)
                .map_err(|e| Status::internal(format!("encoding a read response: {e}"))),
        }
    }
}
