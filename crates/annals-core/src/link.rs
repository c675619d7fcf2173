//! Streams served from the index instead of the log: `$ce-{category}` (the events of every stream
//! in a category) and `$et-{event type}` (every event of one type), and the link records (`$>`)
//! they are read as.
//!
//! KurrentDB builds these streams by writing a link event per event; Annals writes nothing and
//! answers them from its category and event-type postings, which number each key's events densely
//! from 0. A reader sees what KurrentDB sends: a link record of type `$>` whose data is
//! `{revision}@{stream}` of the original event, in the `$ce-`/`$et-` stream at its dense revision.
//! No such record is in the log, so what KurrentDB reports as the link's own log position is here
//! the original event's position, and the link's id is derived from (link stream, revision), so
//! every read gives the same one.

use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use uuid::Uuid;

use crate::event::{ContentType, EventRecord};
use crate::name::{EventType, StreamName};
use crate::position::Revision;

/// Prefix of the stream of a category's events: `$ce-order` holds every event of `order-*`.
pub const CATEGORY_STREAM_PREFIX: &str = "$ce-";
/// Prefix of the stream of one event type's events: `$et-OrderPlaced`.
pub const EVENT_TYPE_STREAM_PREFIX: &str = "$et-";
/// The event type of a link record, as in KurrentDB.
pub const LINK_EVENT_TYPE: &str = "$>";

/// The type every link record shares, allocated once.
static LINK_TYPE: LazyLock<EventType> = LazyLock::new(|| EventType(Arc::from(LINK_EVENT_TYPE)));

/// A stream the index serves, with its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IndexedStream<'a> {
    /// `$ce-{category}`.
    Category(&'a str),
    /// `$et-{event type}`.
    EventType(&'a str),
}

impl StreamName {
    /// For `$ce-…` and `$et-…`, the key the index serves the stream by; `None` for a stream
    /// that is written.
    pub fn indexed(&self) -> Option<IndexedStream<'_>> {
        let name = self.as_str();
        if let Some(category) = name.strip_prefix(CATEGORY_STREAM_PREFIX) {
            return Some(IndexedStream::Category(category));
        }
        name.strip_prefix(EVENT_TYPE_STREAM_PREFIX)
            .map(IndexedStream::EventType)
    }
}

/// An event as a reader that resolves links sees it: `event` is the event itself and `link` the
/// link record through which it was read, if any (as KurrentDB's `ResolvedEvent`).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ResolvedEvent {
    pub event: EventRecord,
    pub link: Option<EventRecord>,
}

impl ResolvedEvent {
    /// What a reader that does not resolve links sees: the link record if there is one, else
    /// the event.
    pub fn into_original(self) -> EventRecord {
        self.link.unwrap_or(self.event)
    }

    /// The record whose stream and revision place this event in the stream read.
    pub fn original(&self) -> &EventRecord {
        self.link.as_ref().unwrap_or(&self.event)
    }
}

/// The link record at `revision` of `link_stream` pointing at `target`: type `$>`, data
/// `{target revision}@{target stream}` (binary, as KurrentDB writes links), no metadata, and the
/// target's position and creation time, since no record of its own exists.
pub fn link_to(link_stream: &StreamName, revision: Revision, target: &EventRecord) -> EventRecord {
    EventRecord {
        id: link_id(link_stream, revision),
        stream: link_stream.clone(),
        revision,
        position: target.position,
        event_type: LINK_TYPE.clone(),
        content_type: ContentType::Binary,
        created: target.created,
        data: Bytes::from(format!("{}@{}", target.revision.0, target.stream)),
        metadata: Bytes::new(),
    }
}

/// The id of the link at `revision` of `link_stream`: a version 8 (custom) UUID holding a 64-bit
/// FNV-1a hash of the stream name and the revision, so it is the same on every read and on
/// every server, and distinct for every link (but for hash collisions of two link streams'
/// names, whose links then still differ in their revisions).
pub fn link_id(link_stream: &StreamName, revision: Revision) -> Uuid {
    let mut bytes = [0u8; 16];
    let (hash, rev) = bytes.split_at_mut(8);
    hash.copy_from_slice(&fnv1a_64(link_stream.as_str().as_bytes()).to_be_bytes());
    rev.copy_from_slice(&revision.0.to_be_bytes());
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// FNV-1a, 64 bits: a fixed, documented hash, so link ids never change with a library.
fn fnv1a_64(bytes: &[u8]) -> u64 {
    const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(FNV_OFFSET_BASIS, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(FNV_PRIME)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Position, Timestamp};

    fn name(s: &str) -> StreamName {
        StreamName::new(s).unwrap()
    }

    #[test]
    fn indexed_streams_are_recognised() {
        assert_eq!(
            name("$ce-order").indexed(),
            Some(IndexedStream::Category("order"))
        );
        assert_eq!(
            name("$et-OrderPlaced").indexed(),
            Some(IndexedStream::EventType("OrderPlaced"))
        );
        assert_eq!(name("$ce-").indexed(), Some(IndexedStream::Category("")));
        assert_eq!(name("order-1").indexed(), None);
        assert_eq!(name("$$$ce-order").indexed(), None);
    }

    #[test]
    fn link_records_look_like_kurrentdbs() {
        let target = EventRecord {
            id: Uuid::new_v4(),
            stream: name("order-17"),
            revision: Revision(3),
            position: Position(42),
            event_type: EventType::new("OrderPlaced").unwrap(),
            content_type: ContentType::Json,
            created: Timestamp(1_700_000_000_000_000_000),
            data: Bytes::from_static(b"{}"),
            metadata: Bytes::from_static(b"{\"m\":1}"),
        };
        let link = link_to(&name("$ce-order"), Revision(9), &target);
        assert_eq!(link.event_type.as_str(), "$>");
        assert_eq!(&link.data[..], b"3@order-17");
        assert_eq!(link.stream.as_str(), "$ce-order");
        assert_eq!(link.revision, Revision(9));
        assert_eq!(link.position, Position(42));
        assert!(link.metadata.is_empty());
        // Deterministic, and distinct per link stream and revision.
        assert_eq!(link.id, link_id(&name("$ce-order"), Revision(9)));
        assert_ne!(link.id, link_id(&name("$ce-order"), Revision(10)));
        assert_ne!(link.id, link_id(&name("$et-OrderPlaced"), Revision(9)));
        assert_eq!(link.id.get_version_num(), 8);
        // The hash is FNV-1a as published (test vector of the empty input and "a").
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        let resolved = ResolvedEvent {
            event: target.clone(),
            link: Some(link.clone()),
        };
        assert_eq!(resolved.original(), &link);
        assert_eq!(resolved.into_original(), link);
    }
}
