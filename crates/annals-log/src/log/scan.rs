//! Forward reads of whole records: [`Scanner`] returns owned records one at a time (reindexing,
//! `check`, reads), and [`Log::visit_records`] hands borrowed frames to a visitor while a scoped
//! thread reads the next chunk ahead (replays), allocating nothing per record.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};

use super::{Log, Record, SCAN_CHUNK_BYTES};
use crate::codec::{self, CommitHeader, FrameError};
use crate::error::LogError;
use crate::segment::Segment;

/// Bytes read at a time by [`Log::visit_records`].
const VISIT_CHUNK_BYTES: usize = 1024 * 1024;
/// Chunks read ahead by [`Log::visit_records`]'s reader thread.
const VISIT_CHUNKS_IN_FLIGHT_MAX: usize = 2;

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

impl Log {
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
                crossbeam_channel::bounded::<Result<Chunk, LogError>>(VISIT_CHUNKS_IN_FLIGHT_MAX);
            let (free_tx, free_rx) =
                crossbeam_channel::bounded::<Vec<u8>>(VISIT_CHUNKS_IN_FLIGHT_MAX + 1);
            for _ in 0..=VISIT_CHUNKS_IN_FLIGHT_MAX {
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
    #[expect(
        clippy::should_implement_trait,
        reason = "a fallible next: Iterator's would have to yield Result and could not stop on an error"
    )]
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
    use super::super::tests::filled;
    use super::*;
    use crate::FaultStorage;
    use crate::codec::{RecordKind, encode_commit};
    use crate::log::{LogConfig, RecoveryStart};
    use crate::storage::Storage;
    use annals_core::{NewEvent, Position, Revision, StreamName, Timestamp};

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
