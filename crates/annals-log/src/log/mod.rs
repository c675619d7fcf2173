//! The log: segment files of framed commit records, the only source of truth. This module owns
//! the shared, readable side ([`Log`]: its segments, the readable end, point reads by address);
//! its submodules own the other jobs, each in a file of its own:
//! - [`recovery`]: opening the segment files and cutting a torn tail;
//! - [`append`]: the single appender ([`LogWriter`]), preallocation and segment rollover;
//! - [`scan`]: forward reads of whole records ([`Scanner`], [`Log::visit_records`]).
//!
//! One [`LogWriter`] (owned by the engine's writer thread) appends; any number of readers read up
//! to [`Log::readable_end`], which only moves forward after the bytes below it are durable, so a
//! reader never sees a record that a crash could take away.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::RwLock;

use crate::codec::{self, CommitHeader, FRAME_HEADER_BYTES, FrameError};
use crate::error::LogError;
use crate::segment::{SEGMENT_HEADER_BYTES, Segment, encode_header, segment_name};
use crate::storage::Storage;

mod append;
mod recovery;
mod scan;

pub use append::{LogWriter, SyncTicket};
pub use recovery::{RecoveryReport, RecoveryStart, Truncation};
pub use scan::Scanner;

/// Most bytes one group-commit batch may hold. A batch is closed before it would pass this, unless
/// it is empty, and one record is always smaller, so no batch is larger.
pub const GROUP_COMMIT_BYTES_MAX: usize = 16 * 1024 * 1024;
const _: () = assert!(codec::RECORD_BODY_BYTES_MAX + FRAME_HEADER_BYTES <= GROUP_COMMIT_BYTES_MAX);

/// Most batches written but not yet synced at any time. The engine's sync thread writes a batch
/// and syncs it before it writes the next; the writer only gathers the next one in memory.
pub const UNSYNCED_BATCHES_MAX: u64 = 1;

/// The region at the end of the log where a crash can leave a torn or reordered write: everything
/// that may have been written but not synced.
pub const TORN_TAIL_WINDOW_BYTES: u64 = UNSYNCED_BATCHES_MAX * GROUP_COMMIT_BYTES_MAX as u64;

/// Default size at which a new segment is started.
pub const SEGMENT_BYTES_MAX_DEFAULT: u64 = 256 * 1024 * 1024;

/// Bytes read at a time by scans, and by recovery looking for the end of the data.
const SCAN_CHUNK_BYTES: usize = 1024 * 1024;

/// How far past the written end the writer keeps the tail segment filled with zeros.
///
/// `fdatasync` of a write into blocks the file already has written (zeros) commits no file-system
/// metadata; a write that grows the file must also commit the new size and block allocation.
/// On ext4 that makes each group commit's sync 1.5–2× faster (docs/benchmarks.md). `fallocate`
/// alone does not help: its unwritten extents still need converting at the sync. Recovery treats
/// zeros after the last record as unused space (invariant L7 in the storage format).
pub const PREALLOCATE_BYTES_DEFAULT: u64 = 4 * 1024 * 1024;

/// How the log is set up.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// Start a new segment once the current one reaches this many bytes.
    pub segment_bytes_max: u64,
    /// Zeros kept written ahead of the tail (0: grow the file with each batch).
    pub preallocate_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes_max: SEGMENT_BYTES_MAX_DEFAULT,
            preallocate_bytes: PREALLOCATE_BYTES_DEFAULT,
        }
    }
}

/// A decoded record as scans and point reads return it: its address, header and whole frame.
#[derive(Clone, Debug)]
pub struct Record {
    pub address: u64,
    pub header: CommitHeader,
    pub frame: Bytes,
}

impl Record {
    /// Address one past this record.
    pub fn end(&self) -> u64 {
        self.address + self.frame.len() as u64
    }
}

/// The shared, readable side of the log.
#[derive(Debug)]
pub struct Log {
    storage: Arc<dyn Storage>,
    segments: RwLock<Vec<Arc<Segment>>>,
    readable_end: AtomicU64,
    poisoned: AtomicBool,
    config: LogConfig,
}

impl Log {
    #[expect(
        clippy::expect_used,
        reason = "`open` always leaves at least one segment and none is ever removed from a log"
    )]
    fn last_segment(&self) -> Arc<Segment> {
        let segs = self.segments.read();
        Arc::clone(segs.last().expect("a log has at least one segment"))
    }

    fn segment_for(&self, address: u64) -> Result<Arc<Segment>, LogError> {
        let segs = self.segments.read();
        let i = segs.partition_point(|s| s.base < address);
        i.checked_sub(1)
            .and_then(|i| segs.get(i))
            .filter(|s| address >= s.first_record() && address <= s.end())
            .map(Arc::clone)
            .ok_or(LogError::AddressOutOfRange { address })
    }

    fn next_segment(&self, seg: &Segment) -> Option<Arc<Segment>> {
        let segs = self.segments.read();
        let i = segs.partition_point(|s| s.base <= seg.base);
        segs.get(i).map(Arc::clone)
    }

    /// Address of the first record of the log.
    pub fn start_address(&self) -> u64 {
        let segs = self.segments.read();
        segs.first()
            .map(|s| s.first_record())
            .unwrap_or(SEGMENT_HEADER_BYTES)
    }

    /// Validates records from `start` to the end, cutting a torn tail.
    /// Reads and checks the record at `address`, which must be below `limit`.
    fn read_frame_at(&self, seg: &Segment, address: u64, limit: u64) -> Result<Record, FrameError> {
        let avail = limit.saturating_sub(address);
        let mut want = (FRAME_HEADER_BYTES as u64).min(avail) as usize;
        let mut buf = vec![0u8; want];
        let read = |buf: &mut [u8]| {
            seg.file
                .read_at(buf, address - seg.base)
                .map_err(|_| FrameError::Truncated { needed: buf.len() })
        };
        read(&mut buf)?;
        match codec::parse_frame(&buf) {
            Err(FrameError::Truncated { needed }) if needed > want && (needed as u64) <= avail => {
                want = needed;
                buf.resize(want, 0);
                read(&mut buf)?;
            }
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        let (_, header, len) = codec::parse_frame(&buf)?;
        buf.truncate(len);
        Ok(Record {
            address,
            header,
            frame: Bytes::from(buf),
        })
    }

    /// Address below which every byte is durable and may be read.
    pub fn readable_end(&self) -> u64 {
        self.readable_end.load(Ordering::Acquire)
    }

    /// Makes `end` readable; called after the bytes below it were synced.
    pub fn publish(&self, end: u64) {
        self.readable_end.fetch_max(end, Ordering::AcqRel);
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// The whole record at `address` (below [`Log::readable_end`]).
    pub fn read_record(&self, address: u64) -> Result<Record, LogError> {
        let seg = self.segment_for(address)?;
        let limit = seg.end().min(self.readable_end());
        if address >= limit {
            return Err(LogError::AddressOutOfRange { address });
        }
        self.read_frame_at(&seg, address, limit)
            .map_err(|e| LogError::Corrupt {
                file: seg.name.clone(),
                offset: address - seg.base,
                reason: e.to_string(),
            })
    }

    /// Names of the segment files, oldest first.
    pub fn segment_names(&self) -> Vec<String> {
        self.segments
            .read()
            .iter()
            .map(|s| s.name.clone())
            .collect()
    }

    /// Sum of the segment files' lengths.
    pub fn bytes(&self) -> u64 {
        self.segments.read().iter().map(|s| s.end() - s.base).sum()
    }
}

fn create_segment(storage: &dyn Storage, base: u64) -> Result<Segment, LogError> {
    let name = segment_name(base);
    let file = storage
        .open(&name, true)
        .map_err(LogError::io("create", &name))?;
    file.set_len(0).map_err(LogError::io("truncate", &name))?;
    file.write_at(&encode_header(base), 0)
        .map_err(LogError::io("write", &name))?;
    file.sync().map_err(LogError::io("sync", &name))?;
    storage
        .sync_dir()
        .map_err(LogError::io("sync", "data directory"))?;
    Ok(Segment::new(base, name, file, base + SEGMENT_HEADER_BYTES))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FaultStorage;
    use crate::codec::{RecordKind, encode_commit};
    use annals_core::{NewEvent, Position, Revision, StreamName, Timestamp};

    /// Writes `n` records of varying sizes over small segments; returns the log.
    pub(super) fn filled(n: u64) -> Arc<Log> {
        let storage: Arc<dyn Storage> = Arc::new(FaultStorage::new());
        let config = LogConfig {
            segment_bytes_max: 2_000,
            ..Default::default()
        };
        let (log, mut writer, _) = Log::open(storage, config, RecoveryStart::BEGINNING).unwrap();
        let stream = StreamName::new("s").unwrap();
        for i in 0..n {
            let events: Vec<NewEvent> = (0..=(i % 3))
                .map(|k| NewEvent::json("T", "x".repeat((i * 7 + k * 13) as usize % 300)).unwrap())
                .collect();
            let first = Position(1 + (0..i).map(|j| j % 3 + 1).sum::<u64>());
            let mut buf = Vec::new();
            encode_commit(
                &mut buf,
                RecordKind::Events,
                &stream,
                first,
                Revision(0),
                Timestamp(0),
                &events,
            );
            let (_, ticket) = writer.append(&buf).unwrap();
            ticket.sync(&log).unwrap();
            log.publish(ticket.end);
        }
        log
    }
}
