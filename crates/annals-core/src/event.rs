//! Events as a client writes them ([`NewEvent`]) and as the store returns them ([`EventRecord`]).
//!
//! Payloads are [`Bytes`] so a read can hand out slices of the buffer it read from the log without
//! copying each event.

use bytes::Bytes;
use uuid::Uuid;

use crate::error::InputError;
use crate::limits::STORE_EVENT_BYTES_MAX;
use crate::name::{EventType, StreamName};
use crate::position::{Position, Revision};
use crate::timestamp::Timestamp;

/// How an event's data is encoded.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum ContentType {
    Json,
    Binary,
}

impl ContentType {
    /// The on-disk code of this content type.
    pub fn code(self) -> u8 {
        match self {
            ContentType::Json => 1,
            ContentType::Binary => 2,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(ContentType::Json),
            2 => Some(ContentType::Binary),
            _ => None,
        }
    }

    /// The MIME type clients use for it.
    pub fn mime(self) -> &'static str {
        match self {
            ContentType::Json => "application/json",
            ContentType::Binary => "application/octet-stream",
        }
    }

    /// Parses a MIME type; anything but JSON or octet-stream is refused.
    pub fn from_mime(mime: &str) -> Result<Self, InputError> {
        match mime {
            "application/json" => Ok(ContentType::Json),
            "application/octet-stream" => Ok(ContentType::Binary),
            other => Err(InputError::UnknownContentType(other.to_owned())),
        }
    }
}

/// An event as a client proposes it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NewEvent {
    pub id: Uuid,
    pub event_type: EventType,
    pub content_type: ContentType,
    pub data: Bytes,
    pub metadata: Bytes,
}

impl NewEvent {
    /// A JSON event with a fresh random id and no metadata.
    pub fn json(event_type: &str, data: impl Into<Bytes>) -> Result<Self, InputError> {
        Ok(Self {
            id: Uuid::new_v4(),
            event_type: EventType::new(event_type)?,
            content_type: ContentType::Json,
            data: data.into(),
            metadata: Bytes::new(),
        })
    }

    /// Bytes this event counts against [`STORE_EVENT_BYTES_MAX`] and the append limit.
    pub fn size_bytes(&self) -> usize {
        self.data.len() + self.metadata.len() + self.event_type.as_str().len()
    }

    /// Checks the store's size limit; `index` is the event's place in its append, for the error.
    pub fn validate(&self, index: usize) -> Result<(), InputError> {
        let size = self.size_bytes();
        if size > STORE_EVENT_BYTES_MAX {
            return Err(InputError::EventTooLarge {
                index,
                size,
                max: STORE_EVENT_BYTES_MAX,
            });
        }
        Ok(())
    }
}

/// A committed event as read back.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct EventRecord {
    pub id: Uuid,
    pub stream: StreamName,
    pub revision: Revision,
    pub position: Position,
    pub event_type: EventType,
    pub content_type: ContentType,
    pub created: Timestamp,
    pub data: Bytes,
    pub metadata: Bytes,
}

impl EventRecord {
    /// True for the `$streamDeleted` event a tombstone writes.
    pub fn is_tombstone(&self) -> bool {
        self.revision == Revision::TOMBSTONE
    }
}

/// A committed event borrowed from a read buffer: what fast replays hand to a visitor without
/// allocating or counting references per event.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct EventView<'a> {
    pub id: Uuid,
    pub stream: &'a str,
    pub revision: Revision,
    pub position: Position,
    pub event_type: &'a str,
    pub content_type: ContentType,
    pub created: Timestamp,
    pub data: &'a [u8],
    pub metadata: &'a [u8],
}

impl EventView<'_> {
    /// True for the `$streamDeleted` event a tombstone writes.
    pub fn is_tombstone(&self) -> bool {
        self.revision == Revision::TOMBSTONE
    }
}

/// Event type of the event a tombstone writes, as in KurrentDB.
pub const TOMBSTONE_EVENT_TYPE: &str = "$streamDeleted";

/// Event type of stream metadata events in `$$stream`.
pub const METADATA_EVENT_TYPE: &str = "$metadata";
