//! `Streams.Delete` (soft delete) and `Streams.Tombstone` (delete forever): one code path. The
//! protocol gives the two requests and answers types of their own with the same fields, so each
//! pair is described once by [`Removal`] and both run through [`remove`].

use annals_core::{ExpectedRevision, StreamName, StreamRight};
use annals_proto::streams::{
    DeleteReq, DeleteResp, TombstoneReq, TombstoneResp, delete_resp, tombstone_resp,
};
use annals_server::{Principal, ServerState};
use tonic::Status;

use crate::convert::stream_name;
use crate::error::GrpcError;

/// What the engine does to the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// Soft delete: the stream reads as gone until it is appended to again.
    Delete,
    /// Tombstone: reads and appends fail with stream-deleted, forever.
    Tombstone,
}

/// A Delete or Tombstone request and the answer it gets.
pub(super) trait Removal {
    type Answer;
    const KIND: Kind;
    /// The stream and the expected revision the request names.
    fn target(self) -> Result<(StreamName, ExpectedRevision), Status>;
    /// The answer for a removal written at `position`.
    fn answer(position: u64) -> Self::Answer;
}

/// Describes one request/answer pair; the two pairs differ only in their generated types.
macro_rules! removal {
    ($req:ident, $req_mod:ident, $resp:ident, $resp_mod:ident, $kind:expr, $what:literal) => {
        impl Removal for $req {
            type Answer = $resp;
            const KIND: Kind = $kind;

            fn target(self) -> Result<(StreamName, ExpectedRevision), Status> {
                let options = self
                    .options
                    .ok_or_else(|| Status::invalid_argument(concat!($what, " without options")))?;
                let stream = stream_name(options.stream_identifier.as_ref())?;
                let expected =
                    expected_revision!($req_mod, options.expected_stream_revision.as_ref());
                Ok((stream, expected))
            }

            fn answer(position: u64) -> $resp {
                $resp {
                    position_option: Some($resp_mod::PositionOption::Position(
                        $resp_mod::Position {
                            commit_position: position,
                            prepare_position: position,
                        },
                    )),
                }
            }
        }
    };
}

removal!(
    DeleteReq,
    delete_req,
    DeleteResp,
    delete_resp,
    Kind::Delete,
    "delete"
);
removal!(
    TombstoneReq,
    tombstone_req,
    TombstoneResp,
    tombstone_resp,
    Kind::Tombstone,
    "tombstone"
);

/// Runs a Delete or a Tombstone and answers with the position of the record it wrote.
pub(super) async fn remove<R: Removal>(
    state: &ServerState,
    who: &Principal,
    request: R,
) -> Result<R::Answer, Status> {
    let (stream, expected) = request.target()?;
    state
        .check_stream(who, stream.as_str(), StreamRight::Delete)
        .map_err(GrpcError::from)?;
    let written = match R::KIND {
        Kind::Delete => state.engine.delete_async(&stream, expected).await,
        Kind::Tombstone => state.engine.tombstone_async(&stream, expected).await,
    };
    let written = written.map_err(|e| GrpcError::from_engine(e, true))?;
    Ok(R::answer(written.position.0))
}
