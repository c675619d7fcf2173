//! Conversions between the wire types and the Annals ones: UUIDs, stream names, expected
//! revisions and recorded events.
//!
//! A recorded event (with the link record it was read through, when links are resolved), the one
//! message a read sends per event, is also encoded by hand
//! ([`encode_read_event`]) straight from the [`EventRecord`] into the response buffer: no
//! intermediate prost message, so no per-event allocation (UUID string, metadata map, stream
//! name) and one copy of the payload. It produces the bytes prost would for
//! [`recorded_event`] wrapped in a `ReadResp` (up to the order of the metadata map's entries,
//! which protobuf leaves free); a test decodes one against the other.

use std::collections::HashMap;

use annals_core::{EventRecord, ExpectedRevision, StreamName};
use bytes::{BufMut, Bytes};
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use crate::error::GrpcError;
use annals_proto::shared::uuid as pb_uuid;
use annals_proto::shared::{StreamIdentifier, Uuid};
use annals_proto::streams::read_resp;

/// Parses a wire UUID in either form.
pub(crate) fn parse_uuid(id: Option<&Uuid>) -> Result<::uuid::Uuid, GrpcError> {
    match id.and_then(|u| u.value.as_ref()) {
        Some(pb_uuid::Value::String(s)) => ::uuid::Uuid::parse_str(s)
            .map_err(|e| GrpcError::InvalidArgument(format!("invalid event id {s:?}: {e}"))),
        Some(pb_uuid::Value::Structured(s)) => {
            let hi = u64::from_ne_bytes(s.most_significant_bits.to_ne_bytes());
            let lo = u64::from_ne_bytes(s.least_significant_bits.to_ne_bytes());
            Ok(::uuid::Uuid::from_u64_pair(hi, lo))
        }
        None => Err(GrpcError::InvalidArgument("event id is missing".to_owned())),
    }
}

/// A UUID in the form the client asked for.
pub(crate) fn wire_uuid(id: ::uuid::Uuid, structured: bool) -> Uuid {
    let value = if structured {
        let (hi, lo) = id.as_u64_pair();
        pb_uuid::Value::Structured(pb_uuid::Structured {
            most_significant_bits: i64::from_ne_bytes(hi.to_ne_bytes()),
            least_significant_bits: i64::from_ne_bytes(lo.to_ne_bytes()),
        })
    } else {
        pb_uuid::Value::String(id.hyphenated().to_string())
    };
    Uuid { value: Some(value) }
}

/// The stream a request names.
pub(crate) fn stream_name(id: Option<&StreamIdentifier>) -> Result<StreamName, GrpcError> {
    let id = id.ok_or_else(|| GrpcError::InvalidArgument("stream is missing".to_owned()))?;
    let name = std::str::from_utf8(&id.stream_name)
        .map_err(|_| GrpcError::InvalidArgument("stream name is not UTF-8".to_owned()))?;
    StreamName::new(name).map_err(|e| GrpcError::InvalidArgument(e.to_string()))
}

pub(crate) fn stream_identifier(name: &str) -> StreamIdentifier {
    StreamIdentifier {
        stream_name: Bytes::copy_from_slice(name.as_bytes()),
    }
}

/// KurrentDB's numeric form of an expected revision (any -2, no stream -1, exists -4).
pub(crate) fn expected_version_number(expected: ExpectedRevision) -> i64 {
    match expected {
        ExpectedRevision::Any => -2,
        ExpectedRevision::NoStream => -1,
        ExpectedRevision::StreamExists => -4,
        ExpectedRevision::Exact(r) => i64::try_from(r).unwrap_or(i64::MAX),
        _ => -2,
    }
}

/// KurrentDB's numeric form of a current revision (-1: no stream).
pub(crate) fn wire_actual(actual: Option<u64>) -> i64 {
    actual.map_or(-1, |r| i64::try_from(r).unwrap_or(i64::MAX))
}

/// The wire form of a committed event; commit and prepare positions are the Annals position.
fn wire_recorded(e: &EventRecord, structured: bool) -> read_resp::read_event::RecordedEvent {
    let mut metadata = HashMap::with_capacity(3);
    metadata.insert("type".to_owned(), e.event_type.as_str().to_owned());
    metadata.insert("content-type".to_owned(), e.content_type.mime().to_owned());
    metadata.insert("created".to_owned(), e.created.unix_ticks().to_string());
    read_resp::read_event::RecordedEvent {
        id: Some(wire_uuid(e.id, structured)),
        stream_identifier: Some(stream_identifier(e.stream.as_str())),
        stream_revision: e.revision.0,
        prepare_position: e.position.0,
        commit_position: e.position.0,
        metadata,
        custom_metadata: e.metadata.clone(),
        data: e.data.clone(),
    }
}

/// The wire form of an event read, with the link record it was read through when links are
/// resolved. The read's position is the link's (here always the event's: a `$ce-`/`$et-` link
/// has no record of its own).
pub(crate) fn recorded_event(
    e: &EventRecord,
    link: Option<&EventRecord>,
    structured: bool,
) -> read_resp::ReadEvent {
    let position = link.unwrap_or(e).position.0;
    read_resp::ReadEvent {
        event: Some(wire_recorded(e, structured)),
        link: link.map(|l| wire_recorded(l, structured)),
        position: Some(read_resp::read_event::Position::CommitPosition(position)),
    }
}

/// Length of a length-delimited field (key, length, body).
fn delimited_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// Length of a proto3 scalar varint field: absent when zero.
fn varint_len(tag: u32, value: u64) -> usize {
    if value == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(value)
    }
}

/// Length of a proto3 `string`/`bytes` field: absent when empty.
fn bytes_len(tag: u32, len: usize) -> usize {
    if len == 0 { 0 } else { delimited_len(tag, len) }
}

fn put_delimited_header(tag: u32, len: usize, buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

fn put_varint(tag: u32, value: u64, buf: &mut impl BufMut) {
    if value != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(value, buf);
    }
}

fn put_bytes(tag: u32, value: &[u8], buf: &mut impl BufMut) {
    if !value.is_empty() {
        put_delimited_header(tag, value.len(), buf);
        buf.put_slice(value);
    }
}

/// Length of the hyphenated UUID string form.
const UUID_STRING_LEN: usize = 36;

/// The decimal digits of `value`, right-aligned in `buf` (20 bytes hold `i64::MIN`).
fn decimal(value: i64, buf: &mut [u8; 20]) -> &[u8] {
    let mut n = value.unsigned_abs();
    let mut len = 0;
    for slot in buf.iter_mut().rev() {
        // A remainder of 10 is below 10, so the cast keeps it whole.
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
        len += 1;
        if n == 0 {
            break;
        }
    }
    if value < 0
        && let Some(slot) = buf
            .len()
            .checked_sub(len + 1)
            .and_then(|at| buf.get_mut(at))
    {
        *slot = b'-';
        len += 1;
    }
    buf.get(buf.len() - len..).unwrap_or_default()
}

/// One event as a `RecordedEvent` message on the wire (the same in `streams` and
/// `persistent_subscriptions`): its parts' lengths worked out once, then written by [`put`].
///
/// [`put`]: RecordedWire::put
struct RecordedWire<'a> {
    e: &'a EventRecord,
    structured: bool,
    uuid_inner: usize,
    uuid_len: usize,
    stream_len: usize,
    /// The `created` ticks in decimal, right-aligned, from `ticks_at`.
    ticks: [u8; 20],
    ticks_at: usize,
    /// The message's length (without its own key and length).
    len: usize,
}

impl<'a> RecordedWire<'a> {
    fn new(e: &'a EventRecord, structured: bool) -> Self {
        use annals_proto::read_fields::{
            COMMIT, CUSTOM_METADATA, DATA, ID, METADATA, PREPARE, REVISION, STREAM, STREAM_NAME,
            UUID_LSB, UUID_MSB, UUID_STRING, UUID_STRUCTURED,
        };
        let (hi, lo) = e.id.as_u64_pair();
        let uuid_inner = if structured {
            varint_len(UUID_MSB, hi) + varint_len(UUID_LSB, lo)
        } else {
            UUID_STRING_LEN
        };
        let uuid_len = delimited_len(
            if structured {
                UUID_STRUCTURED
            } else {
                UUID_STRING
            },
            uuid_inner,
        );
        let stream_len = bytes_len(STREAM_NAME, e.stream.as_str().len());
        let mut ticks = [0u8; 20];
        let ticks_at = 20 - decimal(e.created.unix_ticks(), &mut ticks).len();
        let mut wire = Self {
            e,
            structured,
            uuid_inner,
            uuid_len,
            stream_len,
            ticks,
            ticks_at,
            len: 0,
        };
        let position = e.position.0;
        wire.len = delimited_len(ID, uuid_len)
            + delimited_len(STREAM, stream_len)
            + varint_len(REVISION, e.revision.0)
            + varint_len(PREPARE, position)
            + varint_len(COMMIT, position)
            + wire
                .entries()
                .iter()
                .map(|entry| delimited_len(METADATA, entry_len(entry)))
                .sum::<usize>()
            + bytes_len(CUSTOM_METADATA, e.metadata.len())
            + bytes_len(DATA, e.data.len());
        wire
    }

    /// The system metadata map's entries, in the order they are written.
    fn entries(&self) -> [(&[u8], &[u8]); 3] {
        [
            (b"type", self.e.event_type.as_str().as_bytes()),
            (b"content-type", self.e.content_type.mime().as_bytes()),
            (
                b"created",
                self.ticks.get(self.ticks_at..).unwrap_or_default(),
            ),
        ]
    }

    /// Writes the message as field `tag` of its parent.
    fn put(&self, tag: u32, buf: &mut impl BufMut) {
        use annals_proto::read_fields::{
            COMMIT, CUSTOM_METADATA, DATA, ID, MAP_KEY, MAP_VALUE, METADATA, PREPARE, REVISION,
            STREAM, STREAM_NAME, UUID_LSB, UUID_MSB, UUID_STRING, UUID_STRUCTURED,
        };
        let e = self.e;
        put_delimited_header(tag, self.len, buf);
        put_delimited_header(ID, self.uuid_len, buf);
        if self.structured {
            let (hi, lo) = e.id.as_u64_pair();
            put_delimited_header(UUID_STRUCTURED, self.uuid_inner, buf);
            put_varint(UUID_MSB, hi, buf);
            put_varint(UUID_LSB, lo, buf);
        } else {
            put_delimited_header(UUID_STRING, UUID_STRING_LEN, buf);
            let mut text = [0u8; UUID_STRING_LEN];
            buf.put_slice(e.id.hyphenated().encode_lower(&mut text).as_bytes());
        }
        put_delimited_header(STREAM, self.stream_len, buf);
        put_bytes(STREAM_NAME, e.stream.as_str().as_bytes(), buf);
        put_varint(REVISION, e.revision.0, buf);
        put_varint(PREPARE, e.position.0, buf);
        put_varint(COMMIT, e.position.0, buf);
        for entry in &self.entries() {
            put_delimited_header(METADATA, entry_len(entry), buf);
            put_bytes(MAP_KEY, entry.0, buf);
            put_bytes(MAP_VALUE, entry.1, buf);
        }
        put_bytes(CUSTOM_METADATA, &e.metadata, buf);
        put_bytes(DATA, &e.data, buf);
    }
}

/// Length of one metadata map entry's message.
fn entry_len((k, v): &(&[u8], &[u8])) -> usize {
    use annals_proto::read_fields::{MAP_KEY, MAP_VALUE};
    bytes_len(MAP_KEY, k.len()) + bytes_len(MAP_VALUE, v.len())
}

/// The `event_store.client.streams.ReadResp` holding `e` (and `link`, the link record it was read
/// through, when links are resolved) as a `ReadEvent` with its commit position, encoded into
/// `buf` exactly as prost encodes `ReadResp { content: Event(recorded_event(e, link,
/// structured)) }`.
pub(crate) fn encode_read_event(
    e: &EventRecord,
    link: Option<&EventRecord>,
    structured: bool,
    buf: &mut impl BufMut,
) {
    use annals_proto::read_fields::{
        READ_EVENT_COMMIT_POSITION, READ_EVENT_EVENT, READ_EVENT_LINK, RESP_EVENT,
    };
    let recorded = RecordedWire::new(e, structured);
    let link_wire = link.map(|l| RecordedWire::new(l, structured));
    let position = link.unwrap_or(e).position.0;
    // The commit position is a oneof member, so it is written even when zero.
    let read_event_len = delimited_len(READ_EVENT_EVENT, recorded.len)
        + link_wire
            .as_ref()
            .map_or(0, |l| delimited_len(READ_EVENT_LINK, l.len))
        + key_len(READ_EVENT_COMMIT_POSITION)
        + encoded_len_varint(position);
    put_delimited_header(RESP_EVENT, read_event_len, buf);
    recorded.put(READ_EVENT_EVENT, buf);
    if let Some(l) = &link_wire {
        l.put(READ_EVENT_LINK, buf);
    }
    encode_key(READ_EVENT_COMMIT_POSITION, WireType::Varint, buf);
    encode_varint(position, buf);
}

/// The `event_store.client.persistent_subscriptions.ReadResp` of one delivery (the event, the
/// link it came through, the commit position of the link or else the event, the retry count),
/// encoded into `buf` exactly as prost encodes it.
pub(crate) fn encode_persistent_event(
    event: &EventRecord,
    link: Option<&EventRecord>,
    retry_count: u32,
    structured: bool,
    buf: &mut impl BufMut,
) {
    use annals_proto::read_fields::{
        PERSISTENT_READ_EVENT_RETRY_COUNT, READ_EVENT_COMMIT_POSITION, READ_EVENT_EVENT,
        READ_EVENT_LINK, RESP_EVENT,
    };
    let recorded = RecordedWire::new(event, structured);
    let link_wire = link.map(|l| RecordedWire::new(l, structured));
    let position = link.unwrap_or(event).position.0;
    let retry = u64::from(retry_count);
    // The position and the retry count are oneof members, so written even when zero.
    let read_event_len = delimited_len(READ_EVENT_EVENT, recorded.len)
        + link_wire
            .as_ref()
            .map_or(0, |l| delimited_len(READ_EVENT_LINK, l.len))
        + key_len(READ_EVENT_COMMIT_POSITION)
        + encoded_len_varint(position)
        + key_len(PERSISTENT_READ_EVENT_RETRY_COUNT)
        + encoded_len_varint(retry);
    put_delimited_header(RESP_EVENT, read_event_len, buf);
    recorded.put(READ_EVENT_EVENT, buf);
    if let Some(l) = &link_wire {
        l.put(READ_EVENT_LINK, buf);
    }
    encode_key(READ_EVENT_COMMIT_POSITION, WireType::Varint, buf);
    encode_varint(position, buf);
    encode_key(PERSISTENT_READ_EVENT_RETRY_COUNT, WireType::Varint, buf);
    encode_varint(retry, buf);
}

/// The encoded length of [`encode_read_event`]'s output, to reserve room for it.
pub(crate) fn read_event_len_hint(e: &EventRecord) -> usize {
    // Fixed parts (keys, UUID, positions, metadata keys and values) stay under 256 bytes.
    256 + e.stream.as_str().len() + e.event_type.as_str().len() + e.metadata.len() + e.data.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structured_uuid_round_trips() {
        let id = ::uuid::Uuid::new_v4();
        let wire = wire_uuid(id, true);
        assert_eq!(parse_uuid(Some(&wire)).ok(), Some(id));
        let wire = wire_uuid(id, false);
        assert_eq!(parse_uuid(Some(&wire)).ok(), Some(id));
        assert!(parse_uuid(None).is_err());
    }

    fn record(
        id: ::uuid::Uuid,
        revision: u64,
        created: i64,
        data: &[u8],
        meta: &[u8],
    ) -> EventRecord {
        use annals_core::{ContentType, EventType, Position, Revision, Timestamp};
        EventRecord {
            id,
            stream: StreamName::new("order-1").unwrap(),
            revision: Revision(revision),
            position: Position(1_234_567),
            event_type: EventType::new("OrderPlaced").unwrap(),
            content_type: if data.first() == Some(&b'{') {
                ContentType::Json
            } else {
                ContentType::Binary
            },
            created: Timestamp(created),
            data: Bytes::copy_from_slice(data),
            metadata: Bytes::copy_from_slice(meta),
        }
    }

    #[test]
    fn hand_encoded_event_is_what_prost_encodes() {
        use prost::Message;

        use annals_proto::streams::ReadResp;

        let ids = [
            ::uuid::Uuid::new_v4(),
            ::uuid::Uuid::nil(),
            ::uuid::Uuid::from_u64_pair(u64::MAX, 1),
            ::uuid::Uuid::from_u64_pair(0, u64::MAX / 3),
        ];
        let shapes: [(u64, i64, &[u8], &[u8]); 5] = [
            (0, 0, b"", b""),
            (7, 1_763_000_000_123_456_789, br#"{"a":1}"#, b""),
            (300, -1_234, b"\x00\x01", br#"{"m":true}"#),
            (u64::MAX, i64::MAX, &[7u8; 300], &[1u8; 200]),
            (i64::MAX as u64, i64::MIN, b"x", b"y"),
        ];
        for id in ids {
            for (revision, created, data, meta) in shapes {
                for structured in [false, true] {
                    let e = record(id, revision, created, data, meta);
                    let link = annals_core::link_to(
                        &StreamName::new("$ce-order").unwrap(),
                        annals_core::Revision(revision / 2),
                        &e,
                    );
                    for link in [None, Some(&link)] {
                        let mut buf = Vec::new();
                        encode_read_event(&e, link, structured, &mut buf);
                        assert!(
                            buf.len()
                                <= read_event_len_hint(&e) + link.map_or(0, read_event_len_hint)
                        );
                        let expected = ReadResp {
                            content: Some(read_resp::Content::Event(recorded_event(
                                &e, link, structured,
                            ))),
                        };
                        assert_eq!(buf.len(), expected.encoded_len());
                        assert_eq!(ReadResp::decode(buf.as_slice()).unwrap(), expected);
                    }
                }
            }
        }
    }

    #[test]
    fn decimal_formats_like_to_string() {
        for v in [0, 1, -1, 9, 10, -10, 123_456_789, i64::MAX, i64::MIN] {
            let mut buf = [0u8; 20];
            assert_eq!(decimal(v, &mut buf), v.to_string().as_bytes());
        }
    }

    #[test]
    fn expected_numbers() {
        assert_eq!(expected_version_number(ExpectedRevision::Any), -2);
        assert_eq!(expected_version_number(ExpectedRevision::Exact(7)), 7);
        assert_eq!(wire_actual(None), -1);
    }
}
