//! Opening the log: finding and checking the segment files, then validating records from a
//! caller-given record boundary (the index checkpoint) to the end.
//!
//! This is where a crash's damage is judged. A bad record within [`TORN_TAIL_WINDOW_BYTES`] of the
//! end of the last segment can only be un-synced data (a torn tail): the segment is truncated
//! there and the loss reported. A bad record anywhere else is corruption and an error naming the
//! file and offset; the log never skips it silently.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use annals_core::Position;
use parking_lot::RwLock;

use super::{Log, LogConfig, LogWriter, SCAN_CHUNK_BYTES, TORN_TAIL_WINDOW_BYTES, create_segment};
use crate::error::LogError;
use crate::segment::{SEGMENT_HEADER_BYTES, Segment, check_header, parse_segment_name};
use crate::storage::Storage;

/// Where recovery starts: a record boundary known to be durable and the position of the record
/// there. [`RecoveryStart::BEGINNING`] scans the whole log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecoveryStart {
    pub address: u64,
    pub next_position: Position,
    /// Address of the record that ends at `address`, if the caller knows it. It proves that
    /// `address` is a record boundary, so a bad record right there is a torn tail to cut, not a
    /// sign that the start is wrong.
    pub previous_record: Option<u64>,
}

impl RecoveryStart {
    pub const BEGINNING: RecoveryStart = RecoveryStart {
        address: 0,
        next_position: Position(1),
        previous_record: None,
    };
}

/// What recovery found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Address one past the last whole record.
    pub end_address: u64,
    /// Position the next record will get.
    pub next_position: Position,
    /// Records scanned from the recovery start.
    pub records_scanned: u64,
    /// Set when a torn tail was cut off: file, offset, bytes dropped (up to the last non-zero
    /// byte; zeros after it are preallocated space, dropped silently), and why.
    pub truncated: Option<Truncation>,
    /// Segment files removed because their creation never completed.
    pub removed_segments: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truncation {
    pub file: String,
    pub offset: u64,
    pub bytes_dropped: u64,
    pub reason: String,
}

impl Log {
    /// Opens the log in `storage`, recovering from `start`.
    pub fn open(
        storage: Arc<dyn Storage>,
        config: LogConfig,
        start: RecoveryStart,
    ) -> Result<(Arc<Log>, LogWriter, RecoveryReport), LogError> {
        let mut report = RecoveryReport::default();
        let mut bases: Vec<(u64, String)> = storage
            .list()
            .map_err(LogError::io("list", "data directory"))?
            .into_iter()
            .filter_map(|n| parse_segment_name(&n).map(|b| (b, n)))
            .collect();
        bases.sort();

        let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(bases.len());
        let count = bases.len();
        for (i, (base, name)) in bases.into_iter().enumerate() {
            let file = storage
                .open(&name, false)
                .map_err(LogError::io("open", &name))?;
            let len = file.len().map_err(LogError::io("stat", &name))?;
            let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
            let header_ok = if len >= SEGMENT_HEADER_BYTES {
                file.read_at(&mut header, 0)
                    .map_err(LogError::io("read", &name))?;
                check_header(&header, base)
            } else {
                Err(format!("file is {len} bytes, shorter than a header"))
            };
            if let Err(reason) = header_ok {
                // Only the newest segment can be half-created (its header is synced before any
                // record goes in), and then it holds nothing acknowledged.
                let is_last = i + 1 == count;
                if is_last && len <= SEGMENT_HEADER_BYTES {
                    tracing::warn!(file = %name, %reason, "removing half-created segment");
                    storage
                        .remove(&name)
                        .map_err(LogError::io("remove", &name))?;
                    storage
                        .sync_dir()
                        .map_err(LogError::io("sync", "data directory"))?;
                    report.removed_segments.push(name);
                    continue;
                }
                return Err(LogError::BadSegmentHeader { file: name, reason });
            }
            if let Some(prev) = segments.last()
                && prev.end() != base
            {
                return Err(LogError::SegmentGap {
                    file: name,
                    expected: prev.end(),
                    found: base,
                });
            }
            // The base comes from the file name: a segment must end inside the address space.
            let Some(end) = base.checked_add(len) else {
                return Err(LogError::BadSegmentHeader {
                    file: name,
                    reason: format!("base {base} plus length {len} passes the largest address"),
                });
            };
            segments.push(Arc::new(Segment::new(base, name, file, end)));
        }
        if segments.is_empty() {
            let base = 0;
            segments.push(Arc::new(create_segment(storage.as_ref(), base)?));
        }

        let log = Arc::new(Log {
            storage,
            segments: RwLock::new(segments),
            readable_end: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
            config,
        });
        let (end, next_position) = log.recover(start, &mut report)?;
        log.readable_end.store(end, Ordering::Release);
        report.end_address = end;
        report.next_position = next_position;
        let writer = LogWriter::new(Arc::clone(&log), end);
        Ok((log, writer, report))
    }

    /// Validates records from `start` to the end, cutting a torn tail.
    fn recover(
        &self,
        start: RecoveryStart,
        report: &mut RecoveryReport,
    ) -> Result<(u64, Position), LogError> {
        let first = self.start_address();
        let mut address = if start.address == 0 {
            first
        } else {
            start.address
        };
        let mut next = if start.address == 0 {
            Position(1)
        } else {
            start.next_position
        };
        if next.0 == 0 {
            // Position 0 comes before the first event: the caller's checkpoint is corrupt.
            return Err(LogError::BadRecoveryStart {
                address,
                reason: "next position 0".to_owned(),
            });
        }
        let mut seg = self
            .segment_for(address)
            .map_err(|_| LogError::BadRecoveryStart {
                address,
                reason: "not inside any segment".to_owned(),
            })?;
        let mut checked_start = start.address == 0;
        if let Some(previous) = start.previous_record {
            let proven = self
                .segment_for(previous)
                .ok()
                .and_then(|prev_seg| self.read_frame_at(&prev_seg, previous, prev_seg.end()).ok());
            match proven {
                Some(r) if r.end() == start.address && r.header.last_position().next() == next => {
                    checked_start = true;
                }
                _ => {
                    return Err(LogError::BadRecoveryStart {
                        address,
                        reason: format!(
                            "no record at {previous} ends there at position {}",
                            next.0 - 1
                        ),
                    });
                }
            }
        }
        loop {
            if address == seg.end() {
                match self.next_segment(&seg) {
                    Some(n) => {
                        seg = n;
                        address = seg.first_record();
                        continue;
                    }
                    None => return Ok((address, next)),
                }
            }
            match self.read_frame_at(&seg, address, seg.end()) {
                Ok(record) if record.header.first_position == next => {
                    checked_start = true;
                    next = record.header.last_position().next();
                    address = record.end();
                    report.records_scanned += 1;
                }
                other => {
                    let reason = match other {
                        Ok(r) => format!(
                            "record has position {}, expected {}",
                            r.header.first_position, next
                        ),
                        Err(e) => e.to_string(),
                    };
                    // Zeros at the end of the newest segment are preallocated space; what lies
                    // between the last whole record and the last non-zero byte is the torn
                    // batch, if anything. Sealed segments were cut to their last record.
                    let is_last = self.next_segment(&seg).is_none();
                    let data_end = if is_last {
                        nonzero_end(&seg, address, seg.end())?
                    } else {
                        seg.end()
                    };
                    let dropped = data_end - address;
                    if dropped > 0 && !checked_start {
                        return Err(LogError::BadRecoveryStart { address, reason });
                    }
                    if !is_last || dropped > TORN_TAIL_WINDOW_BYTES {
                        return Err(LogError::Corrupt {
                            file: seg.name.clone(),
                            offset: address - seg.base,
                            reason,
                        });
                    }
                    let offset = address - seg.base;
                    if dropped > 0 {
                        tracing::warn!(
                            file = %seg.name, offset, bytes_dropped = dropped, %reason,
                            "truncating torn log tail"
                        );
                        report.truncated = Some(Truncation {
                            file: seg.name.clone(),
                            offset,
                            bytes_dropped: dropped,
                            reason,
                        });
                    } else {
                        tracing::debug!(file = %seg.name, offset, "dropping preallocated zeros");
                    }
                    seg.file
                        .set_len(offset)
                        .map_err(LogError::io("truncate", &seg.name))?;
                    seg.file.sync().map_err(LogError::io("sync", &seg.name))?;
                    seg.set_end(address);
                    return Ok((address, next));
                }
            }
        }
    }
}

/// Address one past the last non-zero byte of `seg` in `[from, to)`, or `from` if all are zero.
/// Reads backwards in [`SCAN_CHUNK_BYTES`] pieces.
fn nonzero_end(seg: &Segment, from: u64, to: u64) -> Result<u64, LogError> {
    let mut buf = vec![0u8; SCAN_CHUNK_BYTES];
    let mut end = to;
    while end > from {
        let n = (end - from).min(SCAN_CHUNK_BYTES as u64);
        let start = end - n;
        let piece = buf.get_mut(..n as usize).unwrap_or_default();
        seg.file
            .read_at(piece, start - seg.base)
            .map_err(LogError::io("read", &seg.name))?;
        if let Some(i) = last_nonzero(piece) {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(from)
}

/// The index of the last non-zero byte of `bytes`.
///
/// The newest segment ends in megabytes of preallocated zeros, which every open reads through.
/// Runs of zeros are skipped by comparing whole pieces with zeros (a `memcmp`), so only the piece
/// holding the last non-zero byte is looked at byte by byte; a byte-at-a-time scan of the zeros
/// cost tens of milliseconds per open in unoptimized builds.
fn last_nonzero(bytes: &[u8]) -> Option<usize> {
    static ZEROS: [u8; 4096] = [0; 4096];
    let mut end = bytes.len();
    while end > 0 {
        let start = end.saturating_sub(ZEROS.len());
        let piece = bytes.get(start..end).unwrap_or_default();
        if piece != ZEROS.get(..piece.len()).unwrap_or_default() {
            return piece.iter().rposition(|&b| b != 0).map(|i| start + i);
        }
        end = start;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::tests::filled;
    use super::*;
    use crate::FaultStorage;
    use crate::segment::{encode_header, segment_name};

    #[test]
    fn last_nonzero_finds_the_last_non_zero_byte() {
        assert_eq!(last_nonzero(&[]), None);
        assert_eq!(last_nonzero(&[0; 10_000]), None);
        for at in [0, 1, 4_095, 4_096, 4_097, 8_191, 9_999] {
            let mut bytes = vec![0u8; 10_000];
            bytes[at] = 1;
            assert_eq!(last_nonzero(&bytes), Some(at), "at {at}");
            bytes[0] = 7;
            assert_eq!(last_nonzero(&bytes), Some(at), "at {at} with a byte at 0");
        }
    }

    #[test]
    fn recovery_refuses_position_zero() {
        let log = filled(3);
        let storage = Arc::clone(&log.storage);
        let end = log.readable_end();
        drop(log);
        let start = RecoveryStart {
            address: end,
            next_position: Position(0),
            previous_record: None,
        };
        let opened = Log::open(storage, LogConfig::default(), start);
        assert!(matches!(opened, Err(LogError::BadRecoveryStart { .. })));
    }

    #[test]
    fn segment_past_the_largest_address_is_refused() {
        let storage = FaultStorage::new();
        let base = u64::MAX - 10;
        storage.set_bytes(&segment_name(base), encode_header(base).to_vec());
        let opened = Log::open(
            Arc::new(storage),
            LogConfig::default(),
            RecoveryStart::BEGINNING,
        );
        assert!(matches!(opened, Err(LogError::BadSegmentHeader { .. })));
    }
}
