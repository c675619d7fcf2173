//! The lean client's decoding of `Streams.Read` answers: an event is decoded by hand straight
//! from the received buffer into a [`RecordedEvent`] whose byte fields are slices of that buffer
//! (no map, no `String` per metadata entry); any other answer goes through prost. The result is
//! what prost's decoding followed by [`crate::client`]'s conversion gives (a unit test checks
//! both on the same wire bytes). Malformed input is an error, never a panic.

use std::ops::Range;

use bytes::Bytes;
use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;
use uuid::Uuid;

use annals_proto::read_fields::{
    COMMIT, CUSTOM_METADATA, DATA, ID, MAP_KEY, MAP_VALUE, METADATA,
    PERSISTENT_READ_EVENT_RETRY_COUNT, READ_EVENT_EVENT, READ_EVENT_LINK, RESP_EVENT, REVISION,
    STREAM, STREAM_NAME, UUID_LSB, UUID_MSB, UUID_STRING, UUID_STRUCTURED,
};
use annals_proto::streams::{ReadReq, ReadResp};

use crate::client::{RecordedEvent, Text};

/// One answer of a read.
#[derive(Debug)]
pub(crate) enum ReadItem {
    Event(RecordedEvent),
    /// Anything but an event: stream not found, positions, checkpoints.
    Other(ReadResp),
}

/// The client codec of `Streams.Read`: prost for the request, [`decode_read_resp`] for answers.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ReadClientCodec;

impl Codec for ReadClientCodec {
    type Encode = ReadReq;
    type Decode = ReadItem;
    type Encoder = ProstEncoder<ReadReq>;
    type Decoder = ReadDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ReadDecoder
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ReadDecoder;

impl Decoder for ReadDecoder {
    type Item = ReadItem;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<ReadItem>, Status> {
        use bytes::Buf;
        let message = buf.copy_to_bytes(buf.remaining());
        decode_read_resp(message)
            .map(Some)
            .map_err(|e| Status::internal(format!("bad ReadResp: {e}")))
    }
}

/// Why an answer could not be decoded.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    #[error("truncated")]
    Truncated,
    #[error("a varint over 10 bytes")]
    LongVarint,
    #[error("wire type {0} is not valid")]
    WireType(u64),
    #[error("{0}")]
    Field(&'static str),
    #[error("prost: {0}")]
    Prost(String),
}

/// Decodes one `ReadResp` message.
pub(crate) fn decode_read_resp(message: Bytes) -> Result<ReadItem, WireError> {
    let mut event = None;
    let mut other = false;
    for field in Fields::new(&message, 0..message.len()) {
        match field? {
            (RESP_EVENT, Value::Len(r)) => event = Some(r),
            _ => other = true,
        }
    }
    match event {
        Some(r) if !other => decode_read_event(&message, r).map(ReadItem::Event),
        _ => ReadResp::decode(message)
            .map(ReadItem::Other)
            .map_err(|e| WireError::Prost(e.to_string())),
    }
}

/// One answer of a persistent subscription's `Read`.
#[derive(Debug)]
pub(crate) enum PersistentItem {
    Event {
        event: RecordedEvent,
        /// The link the event was reached through (resolved links, replayed parked events).
        link: Option<RecordedEvent>,
        retry_count: u64,
    },
    /// Anything but an event: the subscription's confirmation.
    Other(annals_proto::persistent_subscriptions::ReadResp),
}

/// Decodes one `persistent_subscriptions.ReadResp` message: an event by hand, as
/// [`decode_read_resp`] does (the messages share their event's shape), anything else by prost.
pub(crate) fn decode_persistent_read_resp(message: Bytes) -> Result<PersistentItem, WireError> {
    let mut read_event = None;
    let mut other = false;
    for field in Fields::new(&message, 0..message.len()) {
        match field? {
            (RESP_EVENT, Value::Len(r)) => read_event = Some(r),
            _ => other = true,
        }
    }
    let Some(range) = read_event.filter(|_| !other) else {
        return annals_proto::persistent_subscriptions::ReadResp::decode(message)
            .map(PersistentItem::Other)
            .map_err(|e| WireError::Prost(e.to_string()));
    };
    let (mut event, mut link, mut retry_count) = (None, None, 0);
    for field in Fields::new(&message, range) {
        match field? {
            (READ_EVENT_EVENT, Value::Len(r)) => event = Some(decode_recorded(&message, r)?),
            (READ_EVENT_LINK, Value::Len(r)) => link = Some(decode_recorded(&message, r)?),
            (PERSISTENT_READ_EVENT_RETRY_COUNT, Value::Varint(v)) => retry_count = v,
            _ => {}
        }
    }
    Ok(PersistentItem::Event {
        event: event.ok_or(WireError::Field("a read event without its event"))?,
        link,
        retry_count,
    })
}

/// The client codec of a persistent subscription's `Read`: prost for the requests,
/// [`decode_persistent_read_resp`] for answers.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PersistentClientCodec;

impl Codec for PersistentClientCodec {
    type Encode = annals_proto::persistent_subscriptions::ReadReq;
    type Decode = PersistentItem;
    type Encoder = ProstEncoder<annals_proto::persistent_subscriptions::ReadReq>;
    type Decoder = PersistentDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        PersistentDecoder
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PersistentDecoder;

impl Decoder for PersistentDecoder {
    type Item = PersistentItem;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<PersistentItem>, Status> {
        use bytes::Buf;
        let message = buf.copy_to_bytes(buf.remaining());
        decode_persistent_read_resp(message)
            .map(Some)
            .map_err(|e| Status::internal(format!("bad persistent ReadResp: {e}")))
    }
}

/// A `ReadEvent`: its recorded event (a link, which this client never asks for, is ignored).
fn decode_read_event(message: &Bytes, range: Range<usize>) -> Result<RecordedEvent, WireError> {
    let mut event = None;
    for field in Fields::new(message, range) {
        if let (READ_EVENT_EVENT, Value::Len(r)) = field? {
            event = Some(r);
        }
    }
    let range = event.ok_or(WireError::Field("a read event without its event"))?;
    decode_recorded(message, range)
}

fn decode_recorded(message: &Bytes, range: Range<usize>) -> Result<RecordedEvent, WireError> {
    let mut id = None;
    let mut stream = Bytes::new();
    let (mut revision, mut position) = (0, 0);
    let (mut event_type, mut content_type, mut created) = (None, None, None);
    let (mut data, mut metadata) = (Bytes::new(), Bytes::new());
    for field in Fields::new(message, range) {
        match field? {
            (ID, Value::Len(r)) => id = Some(decode_uuid(message, r)?),
            (STREAM, Value::Len(r)) => {
                for f in Fields::new(message, r) {
                    if let (STREAM_NAME, Value::Len(r)) = f? {
                        stream = message.slice(r);
                    }
                }
            }
            (REVISION, Value::Varint(v)) => revision = v,
            (COMMIT, Value::Varint(v)) => position = v,
            (METADATA, Value::Len(r)) => {
                let (mut key, mut value) = (0..0, 0..0);
                for f in Fields::new(message, r) {
                    match f? {
                        (MAP_KEY, Value::Len(r)) => key = r,
                        (MAP_VALUE, Value::Len(r)) => value = r,
                        _ => {}
                    }
                }
                let slot = match message.get(key) {
                    Some(b"type") => &mut event_type,
                    Some(b"content-type") => &mut content_type,
                    Some(b"created") => &mut created,
                    _ => continue,
                };
                *slot = Some(utf8(message.slice(value))?);
            }
            (CUSTOM_METADATA, Value::Len(r)) => metadata = message.slice(r),
            (DATA, Value::Len(r)) => data = message.slice(r),
            _ => {}
        }
    }
    Ok(RecordedEvent {
        id: id.ok_or(WireError::Field("an event without an id"))?,
        stream,
        revision,
        position,
        event_type: event_type.unwrap_or_default(),
        content_type: content_type.unwrap_or_default(),
        created: created.unwrap_or_default(),
        data,
        metadata,
    })
}

fn decode_uuid(message: &Bytes, range: Range<usize>) -> Result<Uuid, WireError> {
    let mut id = None;
    for field in Fields::new(message, range) {
        match field? {
            (UUID_STRUCTURED, Value::Len(r)) => {
                let (mut high, mut low) = (0u64, 0u64);
                for f in Fields::new(message, r) {
                    match f? {
                        (UUID_MSB, Value::Varint(v)) => high = v,
                        (UUID_LSB, Value::Varint(v)) => low = v,
                        _ => {}
                    }
                }
                id = Some(Uuid::from_u64_pair(high, low));
            }
            (UUID_STRING, Value::Len(r)) => {
                let text = message.get(r).ok_or(WireError::Truncated)?;
                id = Some(
                    Uuid::try_parse_ascii(text)
                        .map_err(|_| WireError::Field("an event id that is no UUID"))?,
                );
            }
            _ => {}
        }
    }
    id.ok_or(WireError::Field("an id without a value"))
}

/// The text of a protobuf `string`, checked to be UTF-8.
fn utf8(bytes: Bytes) -> Result<Text, WireError> {
    Text::new(bytes).ok_or(WireError::Field("a string that is not UTF-8"))
}

/// A field's value: a varint, or the range of a length-delimited field's bytes in the message.
/// Fixed-width values are skipped (no field this decoder reads has one).
#[derive(Debug)]
enum Value {
    Varint(u64),
    Len(Range<usize>),
    Fixed,
}

/// The fields of the message bytes `message[range]`, in order.
struct Fields<'a> {
    message: &'a [u8],
    at: usize,
    end: usize,
    failed: bool,
}

impl<'a> Fields<'a> {
    fn new(message: &'a [u8], range: Range<usize>) -> Self {
        let end = range.end.min(message.len());
        Self {
            message,
            at: range.start,
            end,
            failed: false,
        }
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            if self.at >= self.end {
                return Err(WireError::Truncated);
            }
            let byte = *self.message.get(self.at).ok_or(WireError::Truncated)?;
            self.at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(WireError::LongVarint)
    }

    fn skip(&mut self, n: usize) -> Result<Range<usize>, WireError> {
        let start = self.at;
        let end = start.checked_add(n).ok_or(WireError::Truncated)?;
        if end > self.end {
            return Err(WireError::Truncated);
        }
        self.at = end;
        Ok(start..end)
    }

    fn field(&mut self) -> Result<(u32, Value), WireError> {
        let key = self.varint()?;
        let number =
            u32::try_from(key >> 3).map_err(|_| WireError::Field("a field number over 32 bits"))?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.skip(8)?;
                Value::Fixed
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| WireError::Truncated)?;
                Value::Len(self.skip(len)?)
            }
            5 => {
                self.skip(4)?;
                Value::Fixed
            }
            other => return Err(WireError::WireType(other)),
        };
        Ok((number, value))
    }
}

impl Iterator for Fields<'_> {
    type Item = Result<(u32, Value), WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.at >= self.end {
            return None;
        }
        let field = self.field();
        self.failed = field.is_err();
        Some(field)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use annals_proto::shared;
    use annals_proto::streams::read_resp::{self, ReadEvent, read_event};

    fn resp(id: shared::uuid::Value, metadata: &[(&str, &str)], data: &[u8]) -> ReadResp {
        ReadResp {
            content: Some(read_resp::Content::Event(ReadEvent {
                event: Some(read_event::RecordedEvent {
                    id: Some(shared::Uuid { value: Some(id) }),
                    stream_identifier: Some(shared::StreamIdentifier {
                        stream_name: Bytes::from_static(b"order-42"),
                    }),
                    stream_revision: 7,
                    prepare_position: 1_234_567_890_123,
                    commit_position: 1_234_567_890_123,
                    metadata: metadata
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect::<HashMap<_, _>>(),
                    custom_metadata: Bytes::from_static(b"{\"m\":1}"),
                    data: Bytes::copy_from_slice(data),
                }),
                link: None,
                position: Some(read_event::Position::CommitPosition(1_234_567_890_123)),
            })),
        }
    }

    fn cases() -> Vec<ReadResp> {
        let id = Uuid::from_u128(0xfedc_ba98_7654_3210_0123_4567_89ab_cdef);
        let (hi, lo) = id.as_u64_pair();
        let structured = shared::uuid::Value::Structured(shared::uuid::Structured {
            most_significant_bits: hi.cast_signed(),
            least_significant_bits: lo.cast_signed(),
        });
        let string = shared::uuid::Value::String(id.hyphenated().to_string());
        let full = [
            ("type", "OrderPlaced"),
            ("content-type", "application/json"),
            ("created", "17000000000000000"),
        ];
        vec![
            resp(structured.clone(), &full, b"{\"a\":1}"),
            resp(string, &full, &[0xff; 300]),
            resp(structured.clone(), &[("type", "é"), ("other", "x")], b""),
            resp(structured, &[], b"x"),
        ]
    }

    #[test]
    fn hand_decoding_equals_prost() {
        for resp in cases() {
            let wire = Bytes::from(resp.encode_to_vec());
            let ReadItem::Event(hand) = decode_read_resp(wire.clone()).unwrap() else {
                panic!("an event decoded as something else");
            };
            let Some(read_resp::Content::Event(e)) = ReadResp::decode(wire).unwrap().content else {
                panic!("prost disagrees");
            };
            let want = recorded(e.event.unwrap()).unwrap();
            assert_eq!(format!("{hand:?}"), format!("{want:?}"));
        }
    }

    #[test]
    fn other_answers_go_through_prost() {
        let resp = ReadResp {
            content: Some(read_resp::Content::StreamNotFound(
                read_resp::StreamNotFound {
                    stream_identifier: Some(shared::StreamIdentifier {
                        stream_name: Bytes::from_static(b"nope"),
                    }),
                },
            )),
        };
        let item = decode_read_resp(Bytes::from(resp.encode_to_vec())).unwrap();
        assert!(matches!(item, ReadItem::Other(r) if r == resp));
    }

    #[test]
    fn truncated_or_corrupt_input_is_an_error_not_a_panic() {
        let wire = cases()[0].encode_to_vec();
        for len in 0..wire.len() {
            // Every proper prefix cuts a length-delimited field short, so none decodes.
            let cut = Bytes::copy_from_slice(&wire[..len]);
            if len > 0 {
                assert!(
                    decode_read_resp(cut).is_err(),
                    "prefix of {len} bytes decoded"
                );
            }
        }
        for i in 0..wire.len() {
            for bit in 0..8 {
                let mut flipped = wire.clone();
                flipped[i] ^= 1 << bit;
                let _ = decode_read_resp(Bytes::from(flipped));
            }
        }
    }

    #[test]
    fn persistent_answers_decode_as_prost_does() {
        use annals_proto::persistent_subscriptions as ps;
        for case in cases() {
            // The persistent ReadResp shares the event's wire shape: read the case as one, then
            // give it a link and a retry count.
            let mut resp = ps::ReadResp::decode(Bytes::from(case.encode_to_vec())).unwrap();
            let Some(ps::read_resp::Content::Event(e)) = &mut resp.content else {
                panic!("not an event");
            };
            let mut link = e.event.clone().unwrap();
            link.stream_identifier = Some(shared::StreamIdentifier {
                stream_name: Bytes::from_static(b"$persistentsubscription-s::g-parked"),
            });
            link.data = Bytes::from_static(b"7@order-42");
            e.link = Some(link);
            e.count = Some(ps::read_resp::read_event::Count::RetryCount(3));
            let e = e.clone();
            let hand = decode_persistent_read_resp(Bytes::from(resp.encode_to_vec())).unwrap();
            let PersistentItem::Event {
                event,
                link,
                retry_count,
            } = hand
            else {
                panic!("not decoded as an event");
            };
            // The oracle converts a streams RecordedEvent; the bytes are the same.
            let oracle = |r: &ps::read_resp::read_event::RecordedEvent| {
                recorded(read_event::RecordedEvent::decode(Bytes::from(r.encode_to_vec())).unwrap())
                    .unwrap()
            };
            assert_eq!(
                format!("{event:?}"),
                format!("{:?}", oracle(e.event.as_ref().unwrap()))
            );
            assert_eq!(
                format!("{:?}", link.unwrap()),
                format!("{:?}", oracle(e.link.as_ref().unwrap()))
            );
            assert_eq!(retry_count, 3);
        }
        let confirmation = ps::ReadResp {
            content: Some(ps::read_resp::Content::SubscriptionConfirmation(
                ps::read_resp::SubscriptionConfirmation {
                    subscription_id: "s::g".to_owned(),
                },
            )),
        };
        let item = decode_persistent_read_resp(Bytes::from(confirmation.encode_to_vec())).unwrap();
        assert!(matches!(item, PersistentItem::Other(r) if r == confirmation));
        let wire = confirmation.encode_to_vec();
        assert!(
            decode_persistent_read_resp(Bytes::copy_from_slice(&wire[..wire.len() - 1])).is_err()
        );
    }

    /// The oracle: prost's decoding of a recorded event converted field by field.
    fn recorded(event: read_event::RecordedEvent) -> Result<RecordedEvent, WireError> {
        let id = match event.id.and_then(|u| u.value) {
            Some(shared::uuid::Value::Structured(s)) => Uuid::from_u64_pair(
                s.most_significant_bits.cast_unsigned(),
                s.least_significant_bits.cast_unsigned(),
            ),
            Some(shared::uuid::Value::String(s)) => {
                Uuid::parse_str(&s).map_err(|_| WireError::Field("an event id that is no UUID"))?
            }
            None => return Err(WireError::Field("an event without an id")),
        };
        let mut metadata = event.metadata;
        Ok(RecordedEvent {
            id,
            stream: event
                .stream_identifier
                .map(|s| s.stream_name)
                .unwrap_or_default(),
            revision: event.stream_revision,
            position: event.commit_position,
            event_type: metadata.remove("type").unwrap_or_default().into(),
            content_type: metadata.remove("content-type").unwrap_or_default().into(),
            created: metadata.remove("created").unwrap_or_default().into(),
            data: event.data,
            metadata: event.custom_metadata,
        })
    }
}
