//! The log: opening and recovering segment files, appending framed commit records, syncing them,
//! and reading them back by address.
//!
//! One [`LogWriter`] (owned by the engine's writer thread) appends; any number of readers read up
//! to [`Log::readable_end`], which only moves forward after the bytes below it are durable, so a
//! reader never sees a record that a crash could take away.
//!
//! Recovery scans from a caller-given record boundary (the index checkpoint) to the end. A bad
//! record within [`TORN_TAIL_WINDOW_BYTES`] of the end of the last segment is a torn tail: the
//! segment is truncated there and the loss reported. A bad record anywhere else is corruption and
//! an error naming the file and offset; the log never skips it silently.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use annals_core::Position;
use bytes::{Bytes, BytesMut};
use parking_lot::RwLock;

use crate::codec::{self, CommitHeader, FRAME_HEADER_BYTES, FrameError};
use crate::error::LogError;
use crate::segment::{
    SEGMENT_HEADER_BYTES, Segment, check_header, encode_header, parse_segment_name, segment_name,
};
use crate::storage::{Storage, StorageFile};

/// Most bytes one group-commit batch may hold. A batch is closed before it would pass this, unless
/// it is empty, and one record is always smaller, so no batch is larger.
pub const BATCH_BYTES_MAX: usize = 16 * 1024 * 1024;
const _: () = assert!(codec::RECORD_BODY_BYTES_MAX + FRAME_HEADER_BYTES <= BATCH_BYTES_MAX);

/// Most batches written but not yet synced at any time. The engine's sync thread writes a batch
/// and syncs it before it writes the next; the writer only gathers the next one in memory.
pub const UNSYNCED_BATCHES_MAX: u64 = 1;

/// The region at the end of the log where a crash can leave a torn or reordered write: everything
/// that may have been written but not synced.
pub const TORN_TAIL_WINDOW_BYTES: u64 = UNSYNCED_BATCHES_MAX * BATCH_BYTES_MAX as u64;

/// Default size at which a new segment is started.
pub const SEGMENT_BYTES_MAX_DEFAULT: u64 = 256 * 1024 * 1024;

/// Bytes read at a time by scans.
const SCAN_CHUNK_BYTES: usize = 1024 * 1024;

/// Bytes read at a time by [`Log::visit_records`].
const VISIT_CHUNK_BYTES: usize = 1024 * 1024;
/// Chunks read ahead by [`Log::visit_records`]'s reader thread.
const VISIT_CHUNKS_IN_FLIGHT: usize = 2;

/// A run of consecutive log bytes within one segment.
struct Chunk {
    address: u64,
    len: usize,
    buf: Vec<u8>,
    /// The chunk ends where its segment (or the visited range) ends.
    segment_end: bool,
    segment: Arc<Segment>,
}

/// Cuts a stream of chunks into whole frames, keeping a record that spans two chunks in a small
/// carry buffer.
#[derive(Default)]
struct FrameAssembler {
    carry: Vec<u8>,
    carry_address: u64,
    carry_segment: Option<Arc<Segment>>,
}

impl FrameAssembler {
    fn corrupt(seg: &Segment, address: u64, reason: String) -> LogError {
        LogError::Corrupt {
            file: seg.name.clone(),
            offset: address.saturating_sub(seg.base),
            reason,
        }
    }

    fn feed(
        &mut self,
        chunk: &Chunk,
        visit: &mut impl FnMut(u64, &CommitHeader, &[u8]) -> ControlFlow<()>,
    ) -> Result<ControlFlow<()>, LogError> {
        let data = chunk.buf.get(..chunk.len).unwrap_or_default();
        let mut at = 0usize;
        if !self.carry.is_empty() {
            let seg = self
                .carry_segment
                .clone()
                .unwrap_or_else(|| Arc::clone(&chunk.segment));
            if chunk.address != self.carry_address + self.carry.len() as u64 {
                return Err(Self::corrupt(
                    &seg,
                    self.carry_address,
                    "record runs past the end of its segment".to_owned(),
                ));
            }
            loop {
                match codec::parse_frame(&self.carry) {
                    Ok((_, header, frame_len)) => {
                        let frame = self.carry.get(..frame_len).unwrap_or_default();
                        let flow = visit(self.carry_address, &header, frame);
                        self.carry.clear();
                        if flow.is_break() {
                            return Ok(flow);
                        }
                        break;
                    }
                    Err(FrameError::Truncated { needed }) => {
                        // `parse_frame` only says truncated when it needs more than it has; were
                        // it ever otherwise, this loop would take nothing and spin.
                        let Some(missing) = needed
                            .checked_sub(self.carry.len())
                            .filter(|&missing| missing > 0)
                        else {
                            return Err(Self::corrupt(
                                &seg,
                                self.carry_address,
                                format!("record of {needed} bytes reported as truncated"),
                            ));
                        };
                        let rest = data.get(at..).unwrap_or_default();
                        let take = missing.min(rest.len());
                        self.carry
                            .extend_from_slice(rest.get(..take).unwrap_or_default());
                        at += take;
                        if self.carry.len() < needed {
                            if chunk.segment_end {
                                return Err(Self::corrupt(
                                    &seg,
                                    self.carry_address,
                                    format!("record of {needed} bytes runs past the end"),
                                ));
                            }
                            return Ok(ControlFlow::Continue(()));
                        }
                    }
                    Err(e) => return Err(Self::corrupt(&seg, self.carry_address, e.to_string())),
                }
            }
        }
        loop {
            let rest = data.get(at..).unwrap_or_default();
            if rest.is_empty() {
                return Ok(ControlFlow::Continue(()));
            }
            let address = chunk.address + at as u64;
            match codec::parse_frame(rest) {
                Ok((_, header, frame_len)) => {
                    at += frame_len;
                    if visit(address, &header, rest.get(..frame_len).unwrap_or_default()).is_break()
                    {
                        return Ok(ControlFlow::Break(()));
                    }
                }
                Err(FrameError::Truncated { needed }) => {
                    if chunk.segment_end {
                        return Err(Self::corrupt(
                            &chunk.segment,
                            address,
                            format!("record of {needed} bytes runs past the end"),
                        ));
                    }
                    self.carry.clear();
                    self.carry.extend_from_slice(rest);
                    self.carry_address = address;
                    self.carry_segment = Some(Arc::clone(&chunk.segment));
                    return Ok(ControlFlow::Continue(()));
                }
                Err(e) => return Err(Self::corrupt(&chunk.segment, address, e.to_string())),
            }
        }
    }

    /// At the end of the range nothing may be left half read.
    fn finish(&self) -> Result<(), LogError> {
        match &self.carry_segment {
            Some(seg) if !self.carry.is_empty() => Err(Self::corrupt(
                seg,
                self.carry_address,
                "record runs past the end of the range".to_owned(),
            )),
            _ => Ok(()),
        }
    }
}

/// How far past the written end the writer keeps the tail segment filled with zeros.
///
/// `fdatasync` of a write into blocks the file already has written (zeros) commits no file-system
/// metadata; a write that grows the file must also commit the new size and block allocation.
/// On ext4 that makes each group commit's sync 1.5–2× faster (docs/benchmarks.md). `fallocate`
/// alone does not help: its unwritten extents still need converting at the sync. Recovery treats
/// zeros after the last record as unused space (invariant L7 in the storage format).
pub const PREALLOCATE_BYTES_DEFAULT: u64 = 4 * 1024 * 1024;

/// Zeros written per call while preallocating.
const ZERO_CHUNK_BYTES: usize = 256 * 1024;

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

/// The single appender. Dropping it leaves the log readable.
#[derive(Debug)]
pub struct LogWriter {
    log: Arc<Log>,
    tail: Arc<Segment>,
    write_end: u64,
    /// Address up to which the tail segment's file has been written (records or zeros).
    file_end: u64,
}

/// A written, not yet durable, range: sync it with [`SyncTicket::sync`], then publish it.
#[derive(Debug, Clone)]
pub struct SyncTicket {
    file: Arc<dyn StorageFile>,
    name: String,
    /// Address one past the written bytes.
    pub end: u64,
}

impl SyncTicket {
    /// `fdatasync`s the segment holding the range.
    pub fn sync(&self, log: &Log) -> Result<(), LogError> {
        if let Err(e) = self.file.sync() {
            // After a failed fsync the kernel may have dropped the dirty pages; nothing written
            // since the last good sync can be trusted, so the log refuses further work.
            log.poisoned.store(true, Ordering::Release);
            return Err(LogError::Io {
                op: "sync",
                file: self.name.clone(),
                source: e,
            });
        }
        Ok(())
    }
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
        let tail = log.last_segment();
        let writer = LogWriter {
            log: Arc::clone(&log),
            tail,
            write_end: end,
            file_end: end,
        };
        Ok((log, writer, report))
    }

    fn last_segment(&self) -> Arc<Segment> {
        let segs = self.segments.read();
        // `open` always leaves at least one segment.
        Arc::clone(
            segs.last()
                .unwrap_or_else(|| unreachable!("log has no segment")),
        )
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

    /// A forward scan over whole records from `address` (a record boundary) to `end`.
    pub fn scan(self: &Arc<Self>, address: u64, end: u64) -> Scanner {
        Scanner {
            log: Arc::clone(self),
            address,
            end,
            buf: Bytes::new(),
            buf_start: address,
        }
    }

    /// Calls `visit(address, header, frame)` for every whole record from `address` (a record
    /// boundary) to `end`, until it breaks: the fast path for replays. A scoped helper thread reads
    /// the next chunk while this one is checked and visited; chunks are reused, so nothing is
    /// allocated per record. Returns the address after the last record visited.
    pub fn visit_records(
        &self,
        address: u64,
        end: u64,
        visit: impl FnMut(u64, &CommitHeader, &[u8]) -> ControlFlow<()>,
    ) -> Result<u64, LogError> {
        self.visit_records_chunked(address, end, VISIT_CHUNK_BYTES, visit)
    }

    fn visit_records_chunked(
        &self,
        address: u64,
        end: u64,
        chunk_bytes: usize,
        mut visit: impl FnMut(u64, &CommitHeader, &[u8]) -> ControlFlow<()>,
    ) -> Result<u64, LogError> {
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let (full_tx, full_rx) =
                crossbeam_channel::bounded::<Result<Chunk, LogError>>(VISIT_CHUNKS_IN_FLIGHT);
            let (free_tx, free_rx) =
                crossbeam_channel::bounded::<Vec<u8>>(VISIT_CHUNKS_IN_FLIGHT + 1);
            for _ in 0..=VISIT_CHUNKS_IN_FLIGHT {
                let _ = free_tx.send(vec![0u8; chunk_bytes]);
            }
            let stop = &stop;
            scope.spawn(move || {
                let result = self.read_chunks(address, end, stop, &free_rx, &full_tx);
                if let Err(e) = result {
                    let _ = full_tx.send(Err(e));
                }
            });
            let mut frames = FrameAssembler::default();
            let mut reached = address;
            let outcome = (|| {
                for chunk in &full_rx {
                    let chunk = chunk?;
                    let flow = frames.feed(&chunk, &mut |addr, header, frame| {
                        reached = addr + frame.len() as u64;
                        visit(addr, header, frame)
                    })?;
                    let _ = free_tx.send(chunk.buf);
                    if flow.is_break() {
                        return Ok(reached);
                    }
                }
                frames.finish()?;
                Ok(reached.max(address))
            })();
            stop.store(true, Ordering::Release);
            // Unblock the reader if it waits for a free buffer or a slot.
            drop(free_tx);
            drop(full_rx);
            outcome
        })
    }

    /// The reader half of [`Log::visit_records`]: fills free buffers with consecutive chunks of
    /// the log, segment by segment.
    fn read_chunks(
        &self,
        mut address: u64,
        end: u64,
        stop: &AtomicBool,
        free: &crossbeam_channel::Receiver<Vec<u8>>,
        full: &crossbeam_channel::Sender<Result<Chunk, LogError>>,
    ) -> Result<(), LogError> {
        while address < end && !stop.load(Ordering::Acquire) {
            let seg = self.segment_for(address)?;
            let seg_end = seg.end().min(end);
            if address >= seg_end {
                match self.next_segment(&seg) {
                    Some(n) if address == seg.end() => {
                        address = n.first_record();
                        continue;
                    }
                    _ => return Ok(()),
                }
            }
            let Ok(mut buf) = free.recv() else {
                return Ok(());
            };
            let len = (seg_end - address).min(buf.len() as u64) as usize;
            let dst = buf.get_mut(..len).unwrap_or_default();
            seg.file
                .read_at(dst, address - seg.base)
                .map_err(LogError::io("read", &seg.name))?;
            let chunk = Chunk {
                address,
                len,
                buf,
                segment_end: address + len as u64 == seg_end,
                segment: Arc::clone(&seg),
            };
            address += len as u64;
            if full.send(Ok(chunk)).is_err() {
                return Ok(());
            }
        }
        Ok(())
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

impl LogWriter {
    /// Address the next record will be written at.
    pub fn write_end(&self) -> u64 {
        self.write_end
    }

    /// Writes `bytes` (whole framed records) at the end of the log, starting a new segment first
    /// if the current one is full. Returns the address written at and the ticket to sync.
    ///
    /// The caller keeps at most [`UNSYNCED_BATCHES_MAX`] batches of at most [`BATCH_BYTES_MAX`]
    /// bytes written but not synced; recovery relies on that bound.
    pub fn append(&mut self, bytes: &[u8]) -> Result<(u64, SyncTicket), LogError> {
        if self.log.is_poisoned() {
            return Err(LogError::Poisoned);
        }
        debug_assert!(bytes.len() <= BATCH_BYTES_MAX);
        // Room for a new segment's header too, so neither path below can overflow.
        let room = bytes.len() as u64 + SEGMENT_HEADER_BYTES;
        if self.write_end.checked_add(room).is_none() {
            return Err(LogError::AddressOutOfRange {
                address: self.write_end,
            });
        }
        let used = self.write_end - self.tail.base;
        if used > SEGMENT_HEADER_BYTES
            && used + bytes.len() as u64 > self.log.config.segment_bytes_max
        {
            self.roll()?;
        }
        let address = self.write_end;
        let offset = address - self.tail.base;
        let end = address + bytes.len() as u64;
        if end > self.file_end {
            self.preallocate(end)?;
        }
        if let Err(e) = self.tail.file.write_at(bytes, offset) {
            self.log.poisoned.store(true, Ordering::Release);
            return Err(LogError::Io {
                op: "write",
                file: self.tail.name.clone(),
                source: e,
            });
        }
        self.write_end = end;
        self.file_end = self.file_end.max(end);
        self.tail.set_end(self.write_end);
        Ok((
            address,
            SyncTicket {
                file: Arc::clone(&self.tail.file),
                name: self.tail.name.clone(),
                end: self.write_end,
            },
        ))
    }

    /// Writes zeros after `end` (where the batch about to be written ends) up to
    /// [`LogConfig::preallocate_bytes`] past it, within the segment. Not synced here: the batch's
    /// own sync makes them durable with it, and recovery reads zeros as unused space.
    fn preallocate(&mut self, end: u64) -> Result<(), LogError> {
        let config = &self.log.config;
        let segment_end = self.tail.base.saturating_add(config.segment_bytes_max);
        let target = end
            .saturating_add(config.preallocate_bytes)
            .min(segment_end);
        let zeros = vec![0u8; ZERO_CHUNK_BYTES];
        let mut at = end.max(self.file_end);
        while at < target {
            let n = (target - at).min(ZERO_CHUNK_BYTES as u64);
            let piece = zeros.get(..n as usize).unwrap_or_default();
            if let Err(e) = self.tail.file.write_at(piece, at - self.tail.base) {
                self.log.poisoned.store(true, Ordering::Release);
                return Err(LogError::Io {
                    op: "write",
                    file: self.tail.name.clone(),
                    source: e,
                });
            }
            at += n;
        }
        self.file_end = self.file_end.max(at);
        Ok(())
    }

    /// Seals the current segment (synced and cut to its last record, so no torn record and no
    /// zeros can precede the new one) and starts the next.
    fn roll(&mut self) -> Result<(), LogError> {
        let poison = |log: &Log, e: LogError| {
            log.poisoned.store(true, Ordering::Release);
            e
        };
        self.tail
            .file
            .sync()
            .map_err(LogError::io("sync", &self.tail.name))
            .map_err(|e| poison(&self.log, e))?;
        if self.file_end > self.write_end {
            self.tail
                .file
                .set_len(self.write_end - self.tail.base)
                .map_err(LogError::io("truncate", &self.tail.name))
                .map_err(|e| poison(&self.log, e))?;
            self.tail
                .file
                .sync()
                .map_err(LogError::io("sync", &self.tail.name))
                .map_err(|e| poison(&self.log, e))?;
        }
        let base = self.write_end;
        let seg = Arc::new(
            create_segment(self.log.storage.as_ref(), base).map_err(|e| poison(&self.log, e))?,
        );
        tracing::info!(file = %seg.name, "started new log segment");
        self.log.segments.write().push(Arc::clone(&seg));
        self.tail = seg;
        self.write_end = base + SEGMENT_HEADER_BYTES;
        self.file_end = self.write_end;
        Ok(())
    }
}

/// Forward iteration over whole records, reading the log in large chunks.
#[derive(Debug)]
pub struct Scanner {
    log: Arc<Log>,
    address: u64,
    end: u64,
    buf: Bytes,
    buf_start: u64,
}

impl Scanner {
    /// Address of the next record the scan will return.
    pub fn address(&self) -> u64 {
        self.address
    }

    /// The next record, or `None` at `end`.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Record>, LogError> {
        loop {
            if self.address >= self.end {
                return Ok(None);
            }
            let seg = self.log.segment_for(self.address)?;
            if self.address == seg.end() {
                match self.log.next_segment(&seg) {
                    Some(n) => {
                        self.address = n.first_record();
                        self.buf = Bytes::new();
                        continue;
                    }
                    None => return Ok(None),
                }
            }
            let in_buf = self.address - self.buf_start;
            let avail = self.buf.len() as u64;
            if in_buf < avail {
                let slice = self.buf.slice(in_buf as usize..);
                match codec::parse_frame(&slice) {
                    Ok((_, header, len)) => {
                        let record = Record {
                            address: self.address,
                            header,
                            frame: slice.slice(..len),
                        };
                        self.address += len as u64;
                        return Ok(Some(record));
                    }
                    Err(FrameError::Truncated { needed }) => {
                        self.fill(&seg, needed.max(SCAN_CHUNK_BYTES))?;
                        // A frame cut by the segment end (or `end`) cannot be completed.
                        if (self.buf.len() as u64) < needed as u64 {
                            return Err(LogError::Corrupt {
                                file: seg.name.clone(),
                                offset: self.address - seg.base,
                                reason: format!("record of {needed} bytes runs past the end"),
                            });
                        }
                    }
                    Err(e) => {
                        return Err(LogError::Corrupt {
                            file: seg.name.clone(),
                            offset: self.address - seg.base,
                            reason: e.to_string(),
                        });
                    }
                }
            } else {
                self.fill(&seg, SCAN_CHUNK_BYTES)?;
            }
        }
    }

    /// Reads up to `want` bytes from the current address, within the segment and `end`.
    fn fill(&mut self, seg: &Segment, want: usize) -> Result<(), LogError> {
        let limit = seg.end().min(self.end);
        let len = (limit.saturating_sub(self.address)).min(want as u64) as usize;
        let mut buf = BytesMut::zeroed(len);
        seg.file
            .read_at(&mut buf, self.address - seg.base)
            .map_err(LogError::io("read", &seg.name))?;
        self.buf = buf.freeze();
        self.buf_start = self.address;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::indexing_slicing,
        clippy::panic,
        reason = "a test fails by panicking"
    )]

    use super::*;
    use crate::FaultStorage;
    use crate::codec::{RecordKind, encode_commit};
    use annals_core::{NewEvent, Revision, StreamName, Timestamp};

    /// Writes `n` records of varying sizes over small segments; returns the log.
    fn filled(n: u64) -> Arc<Log> {
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

    #[test]
    fn visit_records_matches_scan_for_every_chunk_size() {
        let log = filled(60);
        assert!(log.segment_names().len() > 3);
        let mut expected = Vec::new();
        let mut scan = log.scan(log.start_address(), log.readable_end());
        while let Some(r) = scan.next().unwrap() {
            expected.push((r.address, r.frame.to_vec()));
        }
        for chunk in [1, 7, 16, 17, 100, 333, 1_000, 4_096] {
            let mut got = Vec::new();
            let end = log
                .visit_records_chunked(log.start_address(), log.readable_end(), chunk, |a, _, f| {
                    got.push((a, f.to_vec()));
                    ControlFlow::Continue(())
                })
                .unwrap();
            assert_eq!(got, expected, "chunk size {chunk}");
            assert_eq!(end, log.readable_end());
            // Breaking early stops right after the record that broke.
            let mut seen = 0;
            let stopped = log
                .visit_records_chunked(log.start_address(), log.readable_end(), chunk, |_, _, _| {
                    seen += 1;
                    if seen == 10 {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                })
                .unwrap();
            assert_eq!(seen, 10);
            assert_eq!(stopped, expected[9].0 + expected[9].1.len() as u64);
        }
    }

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

    #[test]
    fn visit_records_reports_corruption_with_file_and_offset() {
        let storage = FaultStorage::new();
        let shared: Arc<dyn Storage> = Arc::new(storage.clone());
        let (log, mut writer, _) =
            Log::open(shared, LogConfig::default(), RecoveryStart::BEGINNING).unwrap();
        let stream = StreamName::new("s").unwrap();
        let mut addresses = Vec::new();
        for i in 0..20u64 {
            let mut buf = Vec::new();
            let e = NewEvent::json("T", "y".repeat(50)).unwrap();
            encode_commit(
                &mut buf,
                RecordKind::Events,
                &stream,
                Position(i + 1),
                Revision(i),
                Timestamp(0),
                &[e],
            );
            let (a, ticket) = writer.append(&buf).unwrap();
            addresses.push(a);
            ticket.sync(&log).unwrap();
            log.publish(ticket.end);
        }
        let name = log.segment_names()[0].clone();
        let mut bytes = storage.bytes(&name).unwrap();
        let bad = addresses[7];
        bytes[bad as usize + 40] ^= 0x10;
        storage.set_bytes(&name, bytes);
        for chunk in [64, 1_000, 1 << 20] {
            let err = log
                .visit_records_chunked(log.start_address(), log.readable_end(), chunk, |_, _, _| {
                    ControlFlow::Continue(())
                })
                .unwrap_err();
            match err {
                LogError::Corrupt { file, offset, .. } => {
                    assert_eq!((file, offset), (name.clone(), bad))
                }
                other => panic!("{other}"),
            }
        }
    }
}
