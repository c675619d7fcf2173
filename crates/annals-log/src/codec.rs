//! The commit record: how one append (or one tombstone) is framed, checksummed and decoded.
//!
//! ```text
//! frame header (16 bytes)
//!   0  u32  magic "ANRC"
//!   4  u32  body length in bytes
//!   8  u32  CRC-32C over bytes 4..8, 12..16 and the body
//!   12 u8   kind (1 = events, 2 = tombstone)
//!   13 [u8; 3] reserved, zero
//! body
//!   u64 first position, u64 first revision, i64 created (ns since the Unix epoch),
//!   u32 event count, u16 stream name length, stream name
//!   per event: [u8; 16] id, u8 content type, u8 reserved, u16 type length, u32 data length,
//!              u32 metadata length, type, data, metadata
//! ```
//! All integers are little-endian. Events of one record have consecutive positions and revisions
//! (a tombstone has one event at revision `i64::MAX`). The CRC is checked when encoding (the
//! encoder re-parses what it wrote in debug builds) and on every decode.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use annals_core::{
    ContentType, EventRecord, EventType, EventView, NewEvent, Position, Revision, StreamName,
    Timestamp,
    limits::{APPEND_EVENTS_MAX, STORE_APPEND_BYTES_MAX, STREAM_NAME_BYTES_MAX},
};
use bytes::Bytes;
use uuid::Uuid;

pub const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"ANRC");
pub const FRAME_HEADER_BYTES: usize = 16;
const BODY_FIXED_BYTES: usize = 8 + 8 + 8 + 4 + 2;
const EVENT_HEADER_BYTES: usize = 16 + 1 + 1 + 2 + 4 + 4;

/// Largest body a valid record can have; a larger length field marks a corrupt frame.
pub const RECORD_BODY_BYTES_MAX: usize = BODY_FIXED_BYTES
    + STREAM_NAME_BYTES_MAX
    + APPEND_EVENTS_MAX * EVENT_HEADER_BYTES
    + STORE_APPEND_BYTES_MAX;

const _: () = assert!(FRAME_HEADER_BYTES == 16);
const _: () = assert!(RECORD_BODY_BYTES_MAX < u32::MAX as usize);

/// What a commit record holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RecordKind {
    Events,
    Tombstone,
}

impl RecordKind {
    fn code(self) -> u8 {
        match self {
            RecordKind::Events => 1,
            RecordKind::Tombstone => 2,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(RecordKind::Events),
            2 => Some(RecordKind::Tombstone),
            _ => None,
        }
    }
}

/// Why bytes are not a valid frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than the frame needs: a torn tail or a short buffer.
    Truncated {
        needed: usize,
    },
    BadMagic,
    BadLength(u32),
    ChecksumMismatch {
        expected: u32,
        actual: u32,
    },
    BadKind(u8),
    BadBody(&'static str),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Truncated { needed } => {
                write!(f, "truncated record ({needed} bytes needed)")
            }
            FrameError::BadMagic => f.write_str("bad record magic"),
            FrameError::BadLength(len) => write!(f, "impossible record length {len}"),
            FrameError::ChecksumMismatch { expected, actual } => {
                write!(
                    f,
                    "checksum mismatch (stored {expected:#010x}, computed {actual:#010x})"
                )
            }
            FrameError::BadKind(k) => write!(f, "unknown record kind {k}"),
            FrameError::BadBody(why) => write!(f, "malformed record body: {why}"),
        }
    }
}

/// The fixed part of a decoded commit record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitHeader {
    pub kind: RecordKind,
    pub first_position: Position,
    pub first_revision: Revision,
    pub created: Timestamp,
    pub event_count: u32,
}

impl CommitHeader {
    pub fn last_position(&self) -> Position {
        Position(
            self.first_position
                .0
                .saturating_add(u64::from(self.event_count).saturating_sub(1)),
        )
    }

    /// Whether every event's position (and, for events, revision) and the one after the last fit
    /// in a `u64`, so decoding can count from the first without overflow.
    fn numbers_fit(&self) -> bool {
        let count = u64::from(self.event_count);
        self.first_position.0.checked_add(count).is_some()
            && (self.kind == RecordKind::Tombstone
                || self.first_revision.0.checked_add(count).is_some())
    }
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn len_u32(n: usize) -> u32 {
    // Lengths were validated against limits far below u32::MAX before encoding.
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Appends one framed commit record to `out`. The caller has validated the events against the
/// limits in `annals_core::limits`.
pub fn encode_commit(
    out: &mut Vec<u8>,
    kind: RecordKind,
    stream: &StreamName,
    first_position: Position,
    first_revision: Revision,
    created: Timestamp,
    events: &[NewEvent],
) {
    let start = out.len();
    put_u32(out, FRAME_MAGIC);
    put_u32(out, 0); // length, patched below
    put_u32(out, 0); // crc, patched below
    out.push(kind.code());
    out.extend_from_slice(&[0, 0, 0]);
    put_u64(out, first_position.0);
    put_u64(out, first_revision.0);
    out.extend_from_slice(&created.0.to_le_bytes());
    put_u32(out, len_u32(events.len()));
    let name = stream.as_str().as_bytes();
    put_u16(out, u16::try_from(name.len()).unwrap_or(u16::MAX));
    out.extend_from_slice(name);
    for e in events {
        out.extend_from_slice(e.id.as_bytes());
        out.push(e.content_type.code());
        out.push(0);
        let ty = e.event_type.as_str().as_bytes();
        put_u16(out, u16::try_from(ty.len()).unwrap_or(u16::MAX));
        put_u32(out, len_u32(e.data.len()));
        put_u32(out, len_u32(e.metadata.len()));
        out.extend_from_slice(ty);
        out.extend_from_slice(&e.data);
        out.extend_from_slice(&e.metadata);
    }
    let body_len = len_u32(out.len() - start - FRAME_HEADER_BYTES);
    let frame = out.get_mut(start..).unwrap_or_default();
    if let Some(len) = frame.get_mut(4..8) {
        len.copy_from_slice(&body_len.to_le_bytes());
    }
    let crc = frame_crc(frame);
    if let Some(c) = frame.get_mut(8..12) {
        c.copy_from_slice(&crc.to_le_bytes());
    }
    debug_assert!(matches!(parse_frame(frame), Ok((_, _, n)) if n == frame.len()));
}

fn frame_crc(frame: &[u8]) -> u32 {
    let len = frame.get(4..8).unwrap_or_default();
    let rest = frame.get(12..).unwrap_or_default();
    crc32c::crc32c_append(crc32c::crc32c(len), rest)
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    buf.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
}
fn u64_at(buf: &[u8], at: usize) -> Option<u64> {
    buf.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
}
fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    buf.get(at..at + 2)
        .and_then(|s| s.try_into().ok())
        .map(u16::from_le_bytes)
}

/// Checks the frame at the start of `buf`: returns its kind, its header and its total length.
pub fn parse_frame(buf: &[u8]) -> Result<(RecordKind, CommitHeader, usize), FrameError> {
    let Some(magic) = u32_at(buf, 0) else {
        return Err(FrameError::Truncated {
            needed: FRAME_HEADER_BYTES,
        });
    };
    if magic != FRAME_MAGIC {
        return Err(FrameError::BadMagic);
    }
    let body_len = u32_at(buf, 4).ok_or(FrameError::Truncated {
        needed: FRAME_HEADER_BYTES,
    })?;
    let body_bytes = body_len as usize;
    if !(BODY_FIXED_BYTES..=RECORD_BODY_BYTES_MAX).contains(&body_bytes) {
        return Err(FrameError::BadLength(body_len));
    }
    let total = FRAME_HEADER_BYTES + body_bytes;
    let Some(frame) = buf.get(..total) else {
        return Err(FrameError::Truncated { needed: total });
    };
    let stored = u32_at(frame, 8).unwrap_or(0);
    let actual = frame_crc(frame);
    if stored != actual {
        return Err(FrameError::ChecksumMismatch {
            expected: stored,
            actual,
        });
    }
    let kind_code = frame.get(12).copied().unwrap_or(0);
    let kind = RecordKind::from_code(kind_code).ok_or(FrameError::BadKind(kind_code))?;
    let b = FRAME_HEADER_BYTES;
    let header = CommitHeader {
        kind,
        first_position: Position(u64_at(frame, b).unwrap_or(0)),
        first_revision: Revision(u64_at(frame, b + 8).unwrap_or(0)),
        created: Timestamp(u64_at(frame, b + 16).unwrap_or(0) as i64),
        event_count: u32_at(frame, b + 24).unwrap_or(0),
    };
    if header.event_count == 0 || header.first_position.0 == 0 {
        return Err(FrameError::BadBody("no events or position 0"));
    }
    // Readers size buffers by the event count and count past the last position and revision, so
    // values the CRC vouches for must still be possible.
    let count = u64::from(header.event_count);
    if count * EVENT_HEADER_BYTES as u64 > (body_bytes - BODY_FIXED_BYTES) as u64 {
        return Err(FrameError::BadBody("more events than the body holds"));
    }
    if !header.numbers_fit() {
        return Err(FrameError::BadBody("positions or revisions overflow"));
    }
    Ok((kind, header, total))
}

/// The fixed header of the event at `at` in `body`, and the offsets of its type, data and
/// metadata and of the byte after it. The lengths come from disk, so the sums are checked; whether
/// the event ends within the body is the caller's to check.
fn event_at(body: &[u8], at: usize) -> Result<(&[u8], [usize; 4]), FrameError> {
    let bad_header = || FrameError::BadBody("event header");
    let ty_at = at.checked_add(EVENT_HEADER_BYTES).ok_or_else(bad_header)?;
    let h = body.get(at..ty_at).ok_or_else(bad_header)?;
    let ty_len = u16_at(h, 18).ok_or_else(bad_header)? as usize;
    let data_len = u32_at(h, 20).ok_or_else(bad_header)? as usize;
    let meta_len = u32_at(h, 24).ok_or_else(bad_header)? as usize;
    let overrun = || FrameError::BadBody("event overruns record");
    let data_at = ty_at.checked_add(ty_len).ok_or_else(overrun)?;
    let meta_at = data_at.checked_add(data_len).ok_or_else(overrun)?;
    let end = meta_at.checked_add(meta_len).ok_or_else(overrun)?;
    Ok((h, [ty_at, data_at, meta_at, end]))
}

/// Hands out shared strings for stream names and event types, so decoding a run of records
/// allocates each distinct name once. Consecutive events mostly repeat the last name seen, which
/// is checked first without hashing. Bounded: the map starts over when full.
#[derive(Debug, Default)]
pub struct Interner {
    names: HashMap<Box<[u8]>, Arc<str>>,
    recent: [Option<Arc<str>>; 2],
}

const INTERNER_ENTRIES_MAX: usize = 4_096;

impl Interner {
    /// `slot` picks which recent name to compare with first (0: streams, 1: types).
    fn get(&mut self, slot: usize, bytes: &[u8]) -> Result<Arc<str>, FrameError> {
        if let Some(Some(s)) = self.recent.get(slot)
            && s.as_bytes() == bytes
        {
            return Ok(Arc::clone(s));
        }
        let s = match self.names.get(bytes) {
            Some(s) => Arc::clone(s),
            None => {
                let s: Arc<str> = Arc::from(
                    std::str::from_utf8(bytes)
                        .map_err(|_| FrameError::BadBody("name is not UTF-8"))?,
                );
                if self.names.len() >= INTERNER_ENTRIES_MAX {
                    self.names.clear();
                }
                self.names.insert(bytes.into(), Arc::clone(&s));
                s
            }
        };
        if let Some(r) = self.recent.get_mut(slot) {
            *r = Some(Arc::clone(&s));
        }
        Ok(s)
    }
}

/// Decodes every event of the valid frame at the start of `frame` into `out`, keeping those
/// whose position is in `range` (inclusive). `frame` must have passed [`parse_frame`].
pub fn decode_events(
    frame: &Bytes,
    header: &CommitHeader,
    interner: &mut Interner,
    range: (Position, Position),
    mut out: impl FnMut(EventRecord),
) -> Result<(), FrameError> {
    let bad = FrameError::BadBody;
    let mut failure = None;
    // The visit walks the whole record, so all of it is checked, not just the range.
    // A break means `failure` is set; it is returned below.
    let _flow = visit_events(frame, header, range, &mut |v| {
        let names = interner.get(0, v.stream.as_bytes()).and_then(|stream| {
            let stream = StreamName::from_arc(stream).map_err(|_| bad("invalid stream name"))?;
            let event_type = EventType::from_arc(interner.get(1, v.event_type.as_bytes())?)
                .map_err(|_| bad("invalid event type"))?;
            Ok((stream, event_type))
        });
        match names {
            Ok((stream, event_type)) => {
                out(EventRecord {
                    id: v.id,
                    stream,
                    revision: v.revision,
                    position: v.position,
                    event_type,
                    content_type: v.content_type,
                    created: v.created,
                    // The views are slices of `frame`, so these share its buffer.
                    data: frame.slice_ref(v.data),
                    metadata: frame.slice_ref(v.metadata),
                });
                ControlFlow::Continue(())
            }
            Err(e) => {
                failure = Some(e);
                ControlFlow::Break(())
            }
        }
    })?;
    failure.map_or(Ok(()), Err)
}

/// Calls `visit` with a borrowed view of every event of the valid frame `frame` whose position is
/// in `range` (inclusive), until it breaks. `frame` must have passed [`parse_frame`]. Nothing is
/// allocated. Unless `visit` breaks, the layout of the whole record is checked, the events
/// outside `range` only walked over.
pub fn visit_events(
    frame: &[u8],
    header: &CommitHeader,
    range: (Position, Position),
    visit: &mut impl FnMut(&EventView<'_>) -> ControlFlow<()>,
) -> Result<ControlFlow<()>, FrameError> {
    let bad = FrameError::BadBody;
    let body = frame.get(FRAME_HEADER_BYTES..).ok_or(bad("short"))?;
    let name_len = u16_at(body, 28).ok_or(bad("short"))? as usize;
    let mut at = BODY_FIXED_BYTES;
    let stream = body
        .get(at..at + name_len)
        .and_then(|b| std::str::from_utf8(b).ok())
        .ok_or(bad("stream name"))?;
    at += name_len;
    if !header.numbers_fit() {
        return Err(bad("positions or revisions overflow"));
    }
    let is_tombstone = header.kind == RecordKind::Tombstone;
    // The last event type checked to be UTF-8: a record's events mostly share one.
    let mut last_type: &str = "";
    for i in 0..u64::from(header.event_count) {
        let (h, [ty_at, data_at, meta_at, end]) = event_at(body, at)?;
        let position = Position(header.first_position.0 + i);
        if position >= range.0 && position <= range.1 {
            let id_bytes: [u8; 16] = h
                .get(..16)
                .and_then(|s| s.try_into().ok())
                .ok_or(bad("id"))?;
            let content_type = ContentType::from_code(h.get(16).copied().unwrap_or(0))
                .ok_or(bad("content type"))?;
            let type_bytes = body.get(ty_at..data_at).ok_or(bad("event type"))?;
            let event_type = if type_bytes == last_type.as_bytes() {
                last_type
            } else {
                std::str::from_utf8(type_bytes).map_err(|_| bad("event type"))?
            };
            last_type = event_type;
            let view = EventView {
                id: Uuid::from_bytes(id_bytes),
                stream,
                revision: if is_tombstone {
                    Revision::TOMBSTONE
                } else {
                    Revision(header.first_revision.0 + i)
                },
                position,
                event_type,
                content_type,
                created: header.created,
                data: body.get(data_at..meta_at).ok_or(bad("data"))?,
                metadata: body.get(meta_at..end).ok_or(bad("metadata"))?,
            };
            if visit(&view).is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
        at = end;
    }
    if at != body.len() {
        return Err(bad("trailing bytes"));
    }
    Ok(ControlFlow::Continue(()))
}

/// The stream name of a valid frame, without decoding its events.
pub fn frame_stream(frame: &[u8]) -> Option<&str> {
    let body = frame.get(FRAME_HEADER_BYTES..)?;
    let len = u16_at(body, 28)? as usize;
    std::str::from_utf8(body.get(BODY_FIXED_BYTES..BODY_FIXED_BYTES + len)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Vec<NewEvent> {
        (0..n)
            .map(|i| NewEvent::json("Ty", format!("{{\"i\":{i}}}")).unwrap())
            .collect()
    }

    #[test]
    fn round_trip() {
        let stream = StreamName::new("order-1").unwrap();
        let events = sample(3);
        let mut buf = Vec::new();
        encode_commit(
            &mut buf,
            RecordKind::Events,
            &stream,
            Position(10),
            Revision(4),
            Timestamp(77),
            &events,
        );
        let (kind, header, len) = parse_frame(&buf).unwrap();
        assert_eq!(kind, RecordKind::Events);
        assert_eq!(len, buf.len());
        assert_eq!(header.last_position(), Position(12));
        assert_eq!(frame_stream(&buf), Some("order-1"));
        let bytes = Bytes::from(buf);
        let mut got = Vec::new();
        decode_events(
            &bytes,
            &header,
            &mut Interner::default(),
            (Position(11), Position(12)),
            |e| got.push(e),
        )
        .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].revision, Revision(5));
        assert_eq!(got[0].position, Position(11));
        assert_eq!(got[0].id, events[1].id);
        assert_eq!(got[1].data, events[2].data);
        assert_eq!(got[1].created, Timestamp(77));
    }

    #[test]
    fn every_bit_flip_is_caught() {
        let stream = StreamName::new("s").unwrap();
        let mut buf = Vec::new();
        encode_commit(
            &mut buf,
            RecordKind::Events,
            &stream,
            Position(1),
            Revision(0),
            Timestamp(1),
            &sample(1),
        );
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    parse_frame(&bad).is_err(),
                    "flip at {byte}:{bit} not caught"
                );
            }
        }
        for cut in 0..buf.len() {
            assert!(matches!(
                parse_frame(&buf[..cut]),
                Err(FrameError::Truncated { .. })
            ));
        }
    }

    /// Decoding part of a record still checks the layout of all of it: bytes after its last
    /// event (under a CRC that vouches for them) fail a read of its first event.
    #[test]
    fn a_partial_decode_checks_the_whole_record() {
        let stream = StreamName::new("s").unwrap();
        let mut frame = Vec::new();
        encode_commit(
            &mut frame,
            RecordKind::Events,
            &stream,
            Position(1),
            Revision(0),
            Timestamp(1),
            &sample(3),
        );
        let (_, header, _) = parse_frame(&frame).unwrap();
        // One byte more in the body, the body's length and the CRC made to fit it.
        frame.push(0);
        let body_len = u32::try_from(frame.len() - FRAME_HEADER_BYTES).unwrap();
        frame[4..8].copy_from_slice(&body_len.to_le_bytes());
        let crc = frame_crc(&frame);
        frame[8..12].copy_from_slice(&crc.to_le_bytes());
        assert!(parse_frame(&frame).is_ok());
        let first = (Position(1), Position(1));
        let got = decode_events(
            &Bytes::from(frame),
            &header,
            &mut Interner::default(),
            first,
            |_| {},
        );
        assert!(
            matches!(got, Err(FrameError::BadBody("trailing bytes"))),
            "{got:?}"
        );
    }

    /// Frames whose CRC is right but whose numbers are impossible are refused, and decoding with
    /// such a header fails instead of overflowing.
    #[test]
    fn impossible_numbers_are_refused() {
        let stream = StreamName::new("s").unwrap();
        let mut good = Vec::new();
        encode_commit(
            &mut good,
            RecordKind::Events,
            &stream,
            Position(1),
            Revision(0),
            Timestamp(1),
            &sample(2),
        );
        let b = FRAME_HEADER_BYTES;
        let resealed = |at: usize, bytes: &[u8]| {
            let mut frame = good.clone();
            frame[at..at + bytes.len()].copy_from_slice(bytes);
            let crc = frame_crc(&frame);
            frame[8..12].copy_from_slice(&crc.to_le_bytes());
            frame
        };
        for (at, bytes) in [
            (b, u64::MAX.to_le_bytes().to_vec()),
            (b + 8, (u64::MAX - 1).to_le_bytes().to_vec()),
            (b + 24, u32::MAX.to_le_bytes().to_vec()),
        ] {
            assert!(matches!(
                parse_frame(&resealed(at, &bytes)),
                Err(FrameError::BadBody(_))
            ));
        }
        let (_, mut header, _) = parse_frame(&good).unwrap();
        header.first_position = Position(u64::MAX);
        let all = (Position(1), Position::END);
        let frame = Bytes::from(good);
        let decoded = decode_events(&frame, &header, &mut Interner::default(), all, |_| {});
        assert!(matches!(decoded, Err(FrameError::BadBody(_))));
        let visited = visit_events(&frame, &header, all, &mut |_| ControlFlow::Continue(()));
        assert!(matches!(visited, Err(FrameError::BadBody(_))));
    }

    /// Property tests: any record encodes and decodes to itself, and any damage to its bytes is
    /// refused, never decoded into something else and never a panic.
    mod properties {
        use proptest::collection::vec;
        use proptest::prelude::*;

        use super::*;

        /// Cases per property: enough to cover every field's corners, few enough to stay within
        /// a second or two in an unoptimized build.
        const CASES: u32 = 256;

        /// One record's worth of input, as an append would bring it.
        #[derive(Clone, Debug)]
        struct Input {
            kind: RecordKind,
            stream: StreamName,
            first_position: Position,
            first_revision: Revision,
            created: Timestamp,
            events: Vec<NewEvent>,
        }

        fn name(max_chars: usize) -> impl Strategy<Value = String> {
            let ascii = format!("[a-z$][a-zA-Z0-9$._-]{{0,{max_chars}}}");
            let unicode = format!("\\PC{{1,{max_chars}}}");
            // Mostly ASCII, sometimes any printable Unicode (multi-byte names).
            prop_oneof![
                3 => proptest::string::string_regex(&ascii).unwrap(),
                1 => proptest::string::string_regex(&unicode).unwrap(),
            ]
        }

        fn event() -> impl Strategy<Value = NewEvent> {
            (
                any::<u128>(),
                name(40),
                any::<bool>(),
                vec(any::<u8>(), 0..300),
                vec(any::<u8>(), 0..40),
            )
                .prop_map(|(id, ty, json, data, metadata)| NewEvent {
                    id: Uuid::from_u128(id),
                    event_type: EventType::new(ty).unwrap(),
                    content_type: if json {
                        ContentType::Json
                    } else {
                        ContentType::Binary
                    },
                    data: Bytes::from(data),
                    metadata: Bytes::from(metadata),
                })
        }

        fn input() -> impl Strategy<Value = Input> {
            (
                any::<bool>(),
                name(60),
                1..u64::MAX / 2,
                0..u64::MAX / 2,
                any::<i64>(),
                vec(event(), 1..8),
            )
                .prop_map(
                    |(tombstone, stream, first, revision, created, mut events)| {
                        // A tombstone record holds the one `$streamDeleted` event.
                        if tombstone {
                            events.truncate(1);
                        }
                        Input {
                            kind: if tombstone {
                                RecordKind::Tombstone
                            } else {
                                RecordKind::Events
                            },
                            stream: StreamName::new(stream).unwrap(),
                            first_position: Position(first),
                            first_revision: if tombstone {
                                Revision::TOMBSTONE
                            } else {
                                Revision(revision)
                            },
                            created: Timestamp(created),
                            events,
                        }
                    },
                )
        }

        /// `input` encoded after `prefix` bytes already in the buffer.
        fn encode(input: &Input, prefix: usize) -> Vec<u8> {
            let mut buf = vec![0xa5; prefix];
            encode_commit(
                &mut buf,
                input.kind,
                &input.stream,
                input.first_position,
                input.first_revision,
                input.created,
                &input.events,
            );
            buf.split_off(prefix)
        }

        /// Decodes a frame that parsed, every way the crate offers; must not panic.
        fn decode_all(frame: &[u8], header: &CommitHeader) {
            let bytes = Bytes::copy_from_slice(frame);
            let whole = (Position(1), Position::END);
            let _ = decode_events(&bytes, header, &mut Interner::default(), whole, |_| {});
            let _ = visit_events(frame, header, whole, &mut |_| ControlFlow::Continue(()));
            let _ = frame_stream(frame);
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(CASES))]

            #[test]
            fn records_decode_to_what_was_encoded(
                input in input(),
                prefix in 0usize..64,
                part in any::<(prop::sample::Index, prop::sample::Index)>(),
            ) {
                let frame = encode(&input, prefix);
                let (kind, header, len) = parse_frame(&frame).unwrap();
                prop_assert_eq!(kind, input.kind);
                prop_assert_eq!(len, frame.len());
                prop_assert_eq!(header.first_position, input.first_position);
                prop_assert_eq!(header.first_revision, input.first_revision);
                prop_assert_eq!(header.created, input.created);
                prop_assert_eq!(header.event_count as usize, input.events.len());
                prop_assert_eq!(frame_stream(&frame), Some(input.stream.as_str()));

                let bytes = Bytes::from(frame.clone());
                let mut decoded = Vec::new();
                let whole = (Position(1), Position::END);
                decode_events(&bytes, &header, &mut Interner::default(), whole, |e| {
                    decoded.push(e)
                })
                .unwrap();
                prop_assert_eq!(decoded.len(), input.events.len());
                for (i, (got, sent)) in decoded.iter().zip(&input.events).enumerate() {
                    let i = i as u64;
                    prop_assert_eq!(got.id, sent.id);
                    prop_assert_eq!(&got.stream, &input.stream);
                    prop_assert_eq!(got.position, Position(input.first_position.0 + i));
                    let revision = if input.kind == RecordKind::Tombstone {
                        Revision::TOMBSTONE
                    } else {
                        Revision(input.first_revision.0 + i)
                    };
                    prop_assert_eq!(got.revision, revision);
                    prop_assert_eq!(&got.event_type, &sent.event_type);
                    prop_assert_eq!(got.content_type, sent.content_type);
                    prop_assert_eq!(got.created, input.created);
                    prop_assert_eq!(&got.data, &sent.data);
                    prop_assert_eq!(&got.metadata, &sent.metadata);
                }
                // The borrowed views agree with the owned records.
                let mut viewed = 0;
                let flow = visit_events(&frame, &header, whole, &mut |v| {
                    let owned = &decoded[viewed];
                    let view = (v.id, v.position, v.data);
                    assert_eq!(view, (owned.id, owned.position, &owned.data[..]));
                    viewed += 1;
                    ControlFlow::Continue(())
                })
                .unwrap();
                prop_assert!(flow.is_continue());
                prop_assert_eq!(viewed, decoded.len());
                // A part of the record decodes to that part of the whole.
                let (a, b) = (part.0.index(decoded.len()), part.1.index(decoded.len()));
                let (lo, hi) = (decoded[a.min(b)].position, decoded[a.max(b)].position);
                let mut some = Vec::new();
                decode_events(&bytes, &header, &mut Interner::default(), (lo, hi), |e| {
                    some.push(e)
                })
                .unwrap();
                prop_assert_eq!(&some[..], &decoded[a.min(b)..=a.max(b)]);
            }

            #[test]
            fn any_flipped_bit_is_refused(
                input in input(),
                at in any::<prop::sample::Index>(),
                bit in 0u8..8,
            ) {
                let mut frame = encode(&input, 0);
                let byte = at.index(frame.len());
                frame[byte] ^= 1 << bit;
                let parsed = parse_frame(&frame);
                prop_assert!(parsed.is_err(), "flip at {}:{} parsed: {:?}", byte, bit, parsed);
            }

            #[test]
            fn any_truncation_is_refused_as_truncated(
                input in input(),
                cut in any::<prop::sample::Index>(),
            ) {
                let frame = encode(&input, 0);
                let cut = cut.index(frame.len());
                match parse_frame(&frame[..cut]) {
                    Err(FrameError::Truncated { needed }) => prop_assert!(needed > cut),
                    other => {
                        prop_assert!(false, "cut at {} of {}: {:?}", cut, frame.len(), other)
                    }
                }
            }

            /// Arbitrary bytes, and a valid record with arbitrary bytes written over part of it
            /// (the CRC then catches it unless the bytes happened to match), never panic; what
            /// parses decodes without panicking either.
            #[test]
            fn arbitrary_bytes_never_panic(
                input in input(),
                noise in vec(any::<u8>(), 0..200),
                at in any::<prop::sample::Index>(),
            ) {
                if let Ok((_, header, len)) = parse_frame(&noise) {
                    decode_all(&noise[..len], &header);
                }
                let mut frame = encode(&input, 0);
                let start = at.index(frame.len());
                let end = (start + noise.len()).min(frame.len());
                frame[start..end].copy_from_slice(&noise[..end - start]);
                if let Ok((_, header, len)) = parse_frame(&frame) {
                    decode_all(&frame[..len], &header);
                }
            }
        }
    }
}
