//! The disk targets: bytes as a log segment (recovery), as one commit record (the decoder), and as
//! the index file next to a valid log (index opening).
//!
//! Random bytes almost never carry a valid CRC-32C, so most modes recompute the checksums of
//! whatever frames the bytes hold before the store sees them: the decoder and recovery then get
//! past the checksum and meet the fields behind it.

use annals_core::{Position, StreamName};
use annals_index::INDEX_FILE;
use annals_log::FaultStorage;
use annals_log::codec::{FRAME_HEADER_BYTES, FRAME_MAGIC, Interner, decode_events, parse_frame};
use bytes::Bytes;

use crate::Violation;
use crate::store;

/// The name of the first segment file (base address 0).
const FIRST_SEGMENT: &str = "00000000000000000000.seg";

/// A valid segment header for base address 0 (layout in `annals-log`'s `segment.rs`).
fn segment_header() -> Vec<u8> {
    let mut h = Vec::with_capacity(64);
    h.extend_from_slice(b"ANNALSEG");
    h.extend_from_slice(&1u32.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&0u64.to_le_bytes());
    let crc = crc32c::crc32c(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h.resize(64, 0);
    h
}

/// Rewrites the checksum of every frame found walking `buf` from `at`, as long as frames follow
/// each other: a magic, a length that fits, then the next frame.
fn fix_checksums(buf: &mut [u8], mut at: usize) {
    let magic = FRAME_MAGIC.to_le_bytes();
    while let Some(head) = buf.get(at..at + FRAME_HEADER_BYTES) {
        if head.get(..4) != Some(&magic[..]) {
            return;
        }
        let mut len = [0u8; 4];
        len.copy_from_slice(head.get(4..8).unwrap_or(&[0; 4]));
        let end = at + FRAME_HEADER_BYTES + u32::from_le_bytes(len) as usize;
        let Some(rest) = buf.get(at + 12..end) else {
            return;
        };
        let crc = crc32c::crc32c_append(crc32c::crc32c(&len), rest);
        if let Some(slot) = buf.get_mut(at + 8..at + 12) {
            slot.copy_from_slice(&crc.to_le_bytes());
        }
        at = end;
    }
}

/// `data[0]` picks how the rest becomes a segment: 0 as it is; 1 after a valid header, checksums
/// fixed; 2 appended to the seeded store's segment, checksums fixed; 3 written over the seeded
/// segment at the offset its first two bytes name. The engine then opens the directory: it may
/// refuse, but what it opens must read back and verify cleanly.
pub fn segment_recovery(data: &[u8]) -> Result<(), Violation> {
    const TARGET: &str = "segment_recovery";
    let Some((&mode, rest)) = data.split_first() else {
        return Ok(());
    };
    let (name, bytes) = match mode % 4 {
        0 => (FIRST_SEGMENT.to_owned(), rest.to_vec()),
        1 => {
            let mut bytes = segment_header();
            let start = bytes.len();
            bytes.extend_from_slice(rest);
            fix_checksums(&mut bytes, start);
            (FIRST_SEGMENT.to_owned(), bytes)
        }
        2 => {
            let (name, mut bytes) = store::seeded_segment(TARGET)?;
            let start = bytes.len();
            bytes.extend_from_slice(rest);
            fix_checksums(&mut bytes, start);
            (name, bytes)
        }
        _ => {
            let (name, mut bytes) = store::seeded_segment(TARGET)?;
            let (offset, patch) = match rest {
                [a, b, patch @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), patch),
                _ => (0, rest),
            };
            for (i, byte) in patch.iter().enumerate() {
                if let Some(slot) = bytes.get_mut(offset + i) {
                    *slot = *byte;
                }
            }
            (name, bytes)
        }
    };
    let storage = FaultStorage::new();
    storage.set_bytes(&name, bytes);
    let Ok((engine, _)) = store::open(&storage) else {
        return Ok(());
    };
    // A store that opened takes writes too: an append may be refused, but not crash.
    if let Ok(stream) = StreamName::new("fuzz-1")
        && let Ok(event) = annals_core::NewEvent::json("Fuzzed", "{}")
    {
        let _ = engine.append(&stream, annals_core::ExpectedRevision::Any, vec![event]);
    }
    store::exercise(TARGET, &engine).map(drop)
}

/// `data[0]`'s low bit asks for the frame's checksum to be fixed; the rest is one commit record.
/// A frame the parser accepts must decode into exactly the events its header counts.
pub fn record_decode(data: &[u8]) -> Result<(), Violation> {
    const TARGET: &str = "record_decode";
    let Some((&mode, rest)) = data.split_first() else {
        return Ok(());
    };
    let mut buf = rest.to_vec();
    if mode & 1 == 1 {
        fix_checksums(&mut buf, 0);
    }
    let Ok((_, header, total)) = parse_frame(&buf) else {
        return Ok(());
    };
    let frame = Bytes::from(buf).slice(..total.min(rest.len()));
    let mut decoded = 0u64;
    let all = (header.first_position, header.last_position());
    let result = decode_events(&frame, &header, &mut Interner::default(), all, |_| {
        decoded += 1;
    });
    if result.is_ok() && decoded != u64::from(header.event_count) {
        return Err(Violation::new(
            TARGET,
            format!(
                "a record of {} events decoded into {decoded}",
                header.event_count
            ),
        ));
    }
    // A range of one position, as point reads ask.
    let one = Position(header.first_position.0.saturating_add(1));
    let _ = decode_events(&frame, &header, &mut Interner::default(), (one, one), drop);
    Ok(())
}

/// The bytes become `index.redb` next to the seeded store's valid log. Whatever the file holds,
/// the engine must open (rebuilding the index from the log if it must) and serve the log's
/// events; a refusal is a violation here, since the log is intact.
pub fn index_open(data: &[u8]) -> Result<(), Violation> {
    const TARGET: &str = "index_open";
    let storage = store::seeded(TARGET)?;
    storage.set_bytes(INDEX_FILE, data.to_vec());
    let (engine, _) = store::open(&storage)
        .map_err(|e| Violation::new(TARGET, format!("a valid log did not open: {e}")))?;
    if engine.head() != store::seeded_head() {
        let head = engine.head();
        store::close(TARGET, &engine)?;
        return Err(Violation::new(
            TARGET,
            format!("head {head:?}, the log holds {:?}", store::seeded_head()),
        ));
    }
    for (stream, count) in store::SEEDED_STREAMS {
        let name = StreamName::new(stream).map_err(|e| Violation::new(TARGET, e.to_string()))?;
        let read = engine.read_stream(
            &name,
            annals_core::Revision(0),
            annals_core::Direction::Forwards,
            100,
        );
        let got = read.as_ref().map(Vec::len).unwrap_or(0) as u64;
        if got != *count {
            store::close(TARGET, &engine)?;
            return Err(Violation::new(
                TARGET,
                format!("{stream} reads {got} events ({read:?}), the log holds {count}"),
            ));
        }
    }
    let events = store::exercise(TARGET, &engine)?;
    if events != store::seeded_head().0 {
        return Err(Violation::new(
            TARGET,
            format!(
                "$all reads {events} events, the log holds {}",
                store::seeded_head().0
            ),
        ));
    }
    Ok(())
}
