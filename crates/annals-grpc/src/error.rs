//! The errors a gRPC call can end in, and how each becomes the `tonic::Status` (code, message and
//! trailers) that KurrentDB clients recognise.

use annals_core::{DomainError, ExpectedRevision, InputError};
use annals_engine::EngineError;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::convert::{expected_version_number, wire_actual};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GrpcError {
    /// The request is malformed or over a limit.
    #[error("{0}")]
    InvalidArgument(String),
    /// The stream was tombstoned.
    #[error("Event stream '{stream}' is deleted.")]
    StreamDeleted { stream: String },
    /// A delete or tombstone met the wrong stream revision.
    #[error(
        "Delete failed due to WrongExpectedVersion. Stream: {stream}, Expected version: {}, Actual version: {}",
        expected_version_number(*expected),
        wire_actual(*actual)
    )]
    DeleteWrongExpectedVersion {
        stream: String,
        expected: ExpectedRevision,
        actual: Option<u64>,
    },
    /// The stream does not exist.
    #[error("Stream '{stream}' not found.")]
    StreamNotFound { stream: String },
    /// A thing other than a stream (a user) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A thing other than a stream (a user) exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// Too many subscriptions are open.
    #[error("Maximum subscriptions reached.")]
    TooManySubscriptions,
    /// The server is shutting down or the store stopped taking writes.
    #[error("{0}")]
    Unavailable(String),
    /// Another node runs the persistent-subscription groups (it holds the jobs lease): the
    /// KurrentDB `not-leader` answer, naming that node so clients reconnect there.
    #[error(
        "Leader info available: this node does not run persistent subscriptions; {host}:{port} does"
    )]
    NotLeader { host: String, port: u16 },
    /// The store cannot do this in the way it is run (a delete on a store in PostgreSQL).
    #[error("{0}")]
    Unimplemented(String),
    /// The caller's credentials are missing or wrong.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller may not do this.
    #[error("Access denied")]
    AccessDenied,
    /// Storage failed.
    #[error("{0}")]
    Internal(String),
}

impl From<annals_server::AuthError> for GrpcError {
    fn from(err: annals_server::AuthError) -> Self {
        use annals_server::AuthError as A;
        match err {
            A::Unauthenticated(m) => GrpcError::Unauthenticated(format!("not authenticated: {m}")),
            A::AccessDenied => GrpcError::AccessDenied,
            A::UserNotFound(_) => GrpcError::NotFound(err.to_string()),
            A::UserExists(_) => GrpcError::AlreadyExists(err.to_string()),
            A::Invalid(m) => GrpcError::InvalidArgument(m),
            A::Engine(e) => GrpcError::from_engine(e, false),
            other => GrpcError::Internal(other.to_string()),
        }
    }
}

impl GrpcError {
    /// Maps an engine error; `delete` selects the delete/tombstone form of a wrong expected
    /// revision.
    pub(crate) fn from_engine(err: EngineError, delete: bool) -> Self {
        match err {
            EngineError::Input(e) => GrpcError::InvalidArgument(input_message(&e)),
            EngineError::Filter(e) => GrpcError::InvalidArgument(e.to_string()),
            EngineError::Domain(DomainError::StreamDeleted { stream }) => {
                GrpcError::StreamDeleted { stream }
            }
            EngineError::Domain(DomainError::StreamNotFound { stream }) => {
                GrpcError::StreamNotFound { stream }
            }
            EngineError::Domain(DomainError::WrongExpectedRevision {
                stream,
                expected,
                actual,
            }) => {
                if delete {
                    GrpcError::DeleteWrongExpectedVersion {
                        stream,
                        expected,
                        actual,
                    }
                } else {
                    GrpcError::Internal(format!(
                        "WrongExpectedVersion for stream {stream} where a result was expected"
                    ))
                }
            }
            EngineError::Domain(other) => GrpcError::Internal(other.to_string()),
            EngineError::Stopped(msg) => GrpcError::Unavailable(msg),
            EngineError::Fenced(msg) => GrpcError::Unavailable(format!("fenced: {msg}")),
            EngineError::Unsupported(msg) => GrpcError::Unimplemented(msg),
            other => {
                tracing::error!(error = %other, "storage error serving a gRPC call");
                GrpcError::Internal(other.to_string())
            }
        }
    }
}

fn input_message(e: &InputError) -> String {
    e.to_string()
}

fn insert(status: &mut Status, key: &'static str, value: &str) {
    if let Ok(v) = MetadataValue::try_from(value) {
        status.metadata_mut().insert(key, v);
    }
}

impl From<GrpcError> for Status {
    fn from(err: GrpcError) -> Self {
        let message = err.to_string();
        match err {
            GrpcError::InvalidArgument(_) => Status::invalid_argument(message),
            GrpcError::StreamDeleted { stream } => {
                let mut s = Status::new(Code::FailedPrecondition, message);
                insert(&mut s, "exception", "stream-deleted");
                insert(&mut s, "stream-name", &stream);
                s
            }
            GrpcError::DeleteWrongExpectedVersion {
                stream,
                expected,
                actual,
            } => {
                let mut s = Status::new(Code::FailedPrecondition, message);
                insert(&mut s, "exception", "wrong-expected-version");
                insert(&mut s, "stream-name", &stream);
                insert(
                    &mut s,
                    "expected-version",
                    &expected_version_number(expected).to_string(),
                );
                insert(&mut s, "actual-version", &wire_actual(actual).to_string());
                s
            }
            GrpcError::StreamNotFound { stream } => {
                let mut s = Status::new(Code::NotFound, message);
                insert(&mut s, "exception", "stream-not-found");
                insert(&mut s, "stream-name", &stream);
                s
            }
            GrpcError::NotLeader { host, port } => {
                let mut s = Status::new(Code::NotFound, message);
                insert(&mut s, "exception", "not-leader");
                insert(&mut s, "leader-endpoint-host", &host);
                insert(&mut s, "leader-endpoint-port", &port.to_string());
                s
            }
            GrpcError::TooManySubscriptions => Status::resource_exhausted(message),
            GrpcError::Unavailable(_) => Status::unavailable(message),
            GrpcError::Unimplemented(_) => Status::unimplemented(message),
            GrpcError::NotFound(_) => Status::not_found(message),
            GrpcError::AlreadyExists(_) => Status::already_exists(message),
            GrpcError::Unauthenticated(_) => Status::unauthenticated(message),
            GrpcError::AccessDenied => {
                let mut s = Status::permission_denied(message);
                insert(&mut s, "exception", "access-denied");
                s
            }
            GrpcError::Internal(_) => Status::internal(message),
        }
    }
}
