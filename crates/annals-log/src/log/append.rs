//! The append path: the single [`LogWriter`] writes batches of framed records at the end of the
//! newest segment, keeps that segment filled with zeros ahead of itself, and seals it and starts
//! the next when it is full. [`SyncTicket`] is the written-but-not-durable range a batch leaves
//! for the sync that follows.
//!
//! A failed write or sync poisons the log: after an fsync error the kernel may have dropped dirty
//! pages, so nothing written since the last good sync can be trusted.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{GROUP_COMMIT_BYTES_MAX, Log, create_segment};
use crate::error::LogError;
use crate::segment::{SEGMENT_HEADER_BYTES, Segment};
use crate::storage::StorageFile;

/// Zeros written per call while preallocating.
const ZERO_CHUNK_BYTES: usize = 256 * 1024;

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

impl LogWriter {
    /// The appender of a freshly recovered `log` whose records end at `end`, in its newest
    /// segment.
    pub(super) fn new(log: Arc<Log>, end: u64) -> Self {
        let tail = log.last_segment();
        Self {
            log,
            tail,
            write_end: end,
            file_end: end,
        }
    }

    /// Address the next record will be written at.
    pub fn write_end(&self) -> u64 {
        self.write_end
    }

    /// Writes `bytes` (whole framed records) at the end of the log, starting a new segment first
    /// if the current one is full. Returns the address written at and the ticket to sync.
    ///
    /// The caller keeps at most [`UNSYNCED_BATCHES_MAX`](super::UNSYNCED_BATCHES_MAX) batches of at
    /// most [`GROUP_COMMIT_BYTES_MAX`] bytes written but not synced; recovery relies on that bound.
    pub fn append(&mut self, bytes: &[u8]) -> Result<(u64, SyncTicket), LogError> {
        if self.log.is_poisoned() {
            return Err(LogError::Poisoned);
        }
        debug_assert!(bytes.len() <= GROUP_COMMIT_BYTES_MAX);
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

    /// Puts the log back in order after a failed write or sync, so appends may go on where the
    /// last good batch ended. `good_end` is the end of the last batch whose sync succeeded
    /// (every byte below it is durable; nothing above it was acknowledged). Everything after it
    /// is cut off the tail segment, and the cut synced: a half-written batch, or one whose sync
    /// failed and whose pages the kernel may have dropped, cannot come back at the next open.
    /// Then the room the next batches need is written with zeros and synced, which fails while
    /// the disk is still full or broken (the caller tries again later); only then does the log
    /// take appends again.
    pub fn repair(&mut self, good_end: u64) -> Result<(), LogError> {
        if good_end < self.tail.base {
            return Err(LogError::NotRepairable {
                good_end,
                tail_base: self.tail.base,
            });
        }
        // A segment just started holds its header and no record yet.
        let end = good_end.max(self.tail.first_record());
        let name = self.tail.name.clone();
        self.tail
            .file
            .set_len(end - self.tail.base)
            .map_err(LogError::io("truncate", &name))?;
        self.tail.file.sync().map_err(LogError::io("sync", &name))?;
        self.write_end = end;
        self.file_end = end;
        self.tail.set_end(end);
        // The room the next batch needs: a full disk says so here, not in an append.
        let room = end.saturating_add(GROUP_COMMIT_BYTES_MAX as u64).min(
            self.tail
                .base
                .saturating_add(self.log.config.segment_bytes_max),
        );
        let zeros = vec![0u8; ZERO_CHUNK_BYTES];
        let mut at = end;
        while at < room {
            let n = (room - at).min(ZERO_CHUNK_BYTES as u64);
            let piece = zeros.get(..n as usize).unwrap_or_default();
            self.tail
                .file
                .write_at(piece, at - self.tail.base)
                .map_err(LogError::io("write", &name))?;
            at += n;
        }
        self.tail.file.sync().map_err(LogError::io("sync", &name))?;
        self.file_end = at;
        self.log.poisoned.store(false, Ordering::Release);
        Ok(())
    }

    /// Writes zeros after `end` (where the batch about to be written ends) up to
    /// [`LogConfig::preallocate_bytes`](super::LogConfig::preallocate_bytes) past it, within the segment. Not synced here: the batch's
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
