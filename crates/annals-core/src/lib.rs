//! The vocabulary every Annals layer speaks: stream names, global positions, stream revisions,
//! expected revisions, events as written and as read, read filters, stream metadata and the domain
//! errors an append or a read can end in.
//!
//! This crate does no I/O and knows nothing of threads or the network, so every other crate can
//! depend on it and tests can build values without a store.

mod acl;
mod error;
mod event;
mod filter;
mod json;
pub mod limits;
mod link;
mod metadata;
mod name;
mod position;
mod source;
mod timestamp;

pub use acl::{
    ALL_STREAM, AclDefaults, ROLE_ADMINS, ROLE_EVERYONE, ROLE_OPS, SETTINGS_STREAM, StreamAcl,
    StreamRight,
};
pub use error::{DomainError, InputError};
pub use event::{
    ContentType, EventRecord, EventView, METADATA_EVENT_TYPE, NewEvent, TOMBSTONE_EVENT_TYPE,
};
pub use filter::{Filter, FilterError, FilterTarget};
pub use json::EventJson;
pub use link::{
    CATEGORY_STREAM_PREFIX, EVENT_TYPE_STREAM_PREFIX, IndexedStream, LINK_EVENT_TYPE,
    ResolvedEvent, link_id, link_to,
};
pub use metadata::{SOFT_DELETE_TRUNCATE_BEFORE, StreamMetadata};
pub use name::{EventType, StreamName, category_of};
pub use position::{AppendResult, Direction, ExpectedRevision, Position, Revision};
pub use source::{Source, SourceSpec};
pub use timestamp::{SubsecondDigits, Timestamp};
