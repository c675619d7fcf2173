//! Domain errors: what a well-formed request can be refused for, apart from I/O failures, which
//! each storage layer reports in its own error type.

use crate::position::ExpectedRevision;

/// A request that is malformed or over a limit. Nothing was written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    #[error("stream name is empty")]
    EmptyStreamName,
    #[error("stream name is {len} bytes, over the limit of {max}")]
    StreamNameTooLong { len: usize, max: usize },
    #[error("event type is empty")]
    EmptyEventType,
    #[error("event type is {len} bytes, over the limit of {max}")]
    EventTypeTooLong { len: usize, max: usize },
    #[error(
        "event {index} is {size} bytes (data + metadata + type), over the limit of {max} bytes per event"
    )]
    EventTooLarge {
        /// The event's place in its append, from 0.
        index: usize,
        size: usize,
        max: usize,
    },
    #[error("append is {size} bytes, over the limit of {max} bytes per append")]
    AppendTooLarge { size: usize, max: usize },
    #[error("append has {count} events, over the limit of {max} events per append")]
    TooManyEvents { count: usize, max: usize },
    #[error("append has no events")]
    EmptyAppend,
    #[error("unknown content type {0:?}: expected application/json or application/octet-stream")]
    UnknownContentType(String),
    #[error("invalid stream metadata: {0}")]
    InvalidMetadata(String),
    #[error(
        "an append to a metadata stream may hold only events of type $metadata (the last one is the metadata)"
    )]
    InvalidMetadataAppend,
    #[error("streams starting with $$ hold metadata and cannot be deleted directly")]
    CannotDeleteMetadataStream,
    #[error("event ids within one append must be distinct")]
    DuplicateEventId,
    #[error(
        "stream {stream} is served from the index ($ce- and $et- streams are read-only): it cannot be appended to, deleted or given metadata"
    )]
    IndexedStreamWrite { stream: String },
    #[error(
        "stream name {stream:?} holds a control character (U+0000-U+001F, U+007F-U+009F): appends are refused; streams that already hold such names stay readable"
    )]
    StreamNameControlCharacter { stream: String },
}

/// A well-formed request that the stream's state refuses. Nothing was written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DomainError {
    #[error(
        "wrong expected revision for stream {stream}: expected {expected}, actual {}",
        display_actual(*actual)
    )]
    WrongExpectedRevision {
        stream: String,
        expected: ExpectedRevision,
        /// The stream's last revision, `None` if it has no events.
        actual: Option<u64>,
    },
    #[error("stream {stream} is deleted")]
    StreamDeleted { stream: String },
    #[error("stream {stream} not found")]
    StreamNotFound { stream: String },
}

fn display_actual(actual: Option<u64>) -> String {
    match actual {
        Some(r) => r.to_string(),
        None => "no stream".to_owned(),
    }
}
