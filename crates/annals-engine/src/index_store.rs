//! The one place the engine names its index store's implementation (redb): finding, opening and
//! destroying the index file while a store opens. From then on the engine holds the index as an
//! `Arc<dyn Index>`, so swapping redb means implementing [`Index`] and changing only this file
//! (and the index settings in `EngineConfig`).
//!
//! A trait object rather than a type parameter keeps `Engine` (a public type) free of one. Its
//! indirect calls come per batch staged or per stream the writer looks up, never per event.
//!
//! The index is derived, so an index file that fails any check at open is deleted and rebuilt
//! from the log (the engine logs a warning saying so). Checks, and what they cost at open:
//! - redb's integrity check (`RedbIndexConfig::check_integrity_at_open`, on by default): the
//!   checksum of every page of the file. It is the only check that sees damage anywhere in the
//!   file, and it reads the whole file once, so it is linear in the index's size: for a million
//!   single-event appends (a 285 MB index) it adds ~0.15 s to a warm open and ~0.6–0.8 s to a
//!   cold one, against 7.3 s to rebuild that index (docs/benchmarks.md). Cheap enough to keep on;
//!   an index of tens of GB, where it would cost tens of seconds per open, may turn it off.
//! - the stream count (`annals-index`): one entry per stream id handed out; free (redb keeps
//!   each table's length with its root).
//! - the log's tail ([`check_log_tail`]): the records holding the last
//!   [`INDEX_TAIL_CHECK_EVENTS`] events are read from the log and looked up in the index (the
//!   position map's entry for the first, each record's stream head and its entry, the
//!   checkpoint): a few thousand lookups, whatever the store's size. It catches an index that is
//!   consistent for redb but wrong about the newest events, which is where a stale or swapped
//!   file or a half-applied batch would show, and it works with redb's check turned off.
//!
//! A full comparison of the index with the log costs as much as the rebuild itself, so it is left
//! to `annals check`.

use std::collections::HashMap;
use std::sync::Arc;

use annals_core::{Direction, Position};
use annals_index::{
    INDEX_FILE, Index, IndexCheckpoint, IndexError, IntegrityCheck, RedbIndex, RedbIndexConfig,
    StreamHead,
};
use annals_log::codec::{RecordKind, frame_stream};
use annals_log::{Log, Record, Storage};

use crate::error::EngineError;

/// Whether the index file is missing or empty.
pub(crate) fn index_missing(storage: &dyn Storage) -> bool {
    storage
        .open(INDEX_FILE, false)
        .and_then(|f| f.len())
        .map_or(true, |len| len == 0)
}

/// Opens (creating it if needed) the index in `storage`, with the checkpoint it covers.
pub(crate) fn open_index(
    storage: &dyn Storage,
    config: &RedbIndexConfig,
) -> Result<(Arc<dyn Index>, IndexCheckpoint), EngineError> {
    let index: Arc<dyn Index> = Arc::new(RedbIndex::open(storage, config)?);
    let checkpoint = index.checkpoint()?;
    Ok((index, checkpoint))
}

/// Removes the index so the next open starts empty (when it is damaged or ahead of the log). The
/// caller has dropped every handle to it.
pub(crate) fn destroy_index(storage: &dyn Storage) -> Result<(), EngineError> {
    RedbIndex::destroy(storage)?;
    Ok(())
}

/// Events at the end of the log whose records [`check_log_tail`] looks up in the index at open.
pub(crate) const INDEX_TAIL_CHECK_EVENTS: u64 = 1_024;

/// Compares the index with the records holding the log's last [`INDEX_TAIL_CHECK_EVENTS`]
/// events (the log ends at `end_address`, before `next_position`): the index must cover exactly
/// the log, its position map must lead to a record start at or before the first of them, and
/// each record must be where the index says, in a stream whose head is its stream's last record.
/// Any disagreement, or a failed lookup, is [`IndexError::Damaged`]; a record the log cannot read
/// ends the comparison (reads and `check` report the log's damage).
pub(crate) fn check_log_tail(
    log: &Arc<Log>,
    index: &dyn Index,
    end_address: u64,
    next_position: Position,
) -> Result<(), IndexError> {
    let Some(head) = next_position.0.checked_sub(1).filter(|h| *h > 0) else {
        return Ok(());
    };
    let checkpoint = index.checkpoint().map_err(|e| damaged(e.to_string()))?;
    if checkpoint.address != end_address || checkpoint.next_position != next_position {
        return Err(damaged(format!(
            "its checkpoint is address {}, position {}; the log ends at address {end_address}, \
             position {}",
            checkpoint.address, checkpoint.next_position.0, next_position.0
        )));
    }
    let from = Position(head.saturating_sub(INDEX_TAIL_CHECK_EVENTS - 1).max(1));
    let start = index
        .seek(from)
        .map_err(|e| damaged(e.to_string()))?
        .filter(|s| {
            s.position <= from && s.address >= log.start_address() && s.address < end_address
        })
        .ok_or_else(|| damaged(format!("no record start for position {}", from.0)))?;
    let mut scan = log.scan(start.address, end_address);
    let mut expected = start.position;
    // Each stream of the tail: its head in the index, and the last position the tail gives it.
    let mut streams: HashMap<String, (StreamHead, Position)> = HashMap::new();
    loop {
        let rec = match scan.next() {
            Ok(Some(rec)) => rec,
            Ok(None) => break,
            // The log is the truth: an unreadable record there is the log's damage, for reads
            // and `check` to report, and rebuilding the index would fail on it (or, were the
            // record only under a wrong address from the position map, redb's check is what
            // sees that damage). So the comparison ends there without a verdict.
            Err(e) => {
                tracing::warn!(error = %e, "log record unreadable; the index was compared with the log up to it");
                return Ok(());
            }
        };
        if rec.header.event_count == 0 {
            continue;
        }
        if rec.header.first_position != expected {
            return Err(damaged(format!(
                "the record at address {} holds position {}, expected {}",
                rec.address, rec.header.first_position.0, expected.0
            )));
        }
        expected = rec.header.last_position().next();
        let stream = frame_stream(&rec.frame)
            .ok_or_else(|| damaged(format!("no stream name in the record at {}", rec.address)))?;
        let head = match streams.get(stream) {
            Some((h, _)) => h.clone(),
            None => index
                .stream_head(stream)
                .map_err(|e| damaged(e.to_string()))?
                .ok_or_else(|| {
                    damaged(format!(
                        "stream {stream} of the record at address {} is missing",
                        rec.address
                    ))
                })?,
        };
        check_record(index, &rec, stream, &head)?;
        streams.insert(stream.to_owned(), (head, rec.header.last_position()));
    }
    if expected != next_position {
        return Err(damaged(format!(
            "the log read from the position map ends before position {}, not {}",
            expected.0, next_position.0
        )));
    }
    for (stream, (head, last)) in streams {
        if head.last_position != last {
            return Err(damaged(format!(
                "stream {stream}: its head is at position {}, its last record ends at {}",
                head.last_position.0, last.0
            )));
        }
    }
    Ok(())
}

/// One record of the tail against the index: a tombstone marks its stream's head; other events
/// are the stream's entry at their first revision, and within the head's revisions.
fn check_record(
    index: &dyn Index,
    rec: &Record,
    stream: &str,
    head: &StreamHead,
) -> Result<(), IndexError> {
    if rec.header.kind == RecordKind::Tombstone {
        return match head.tombstoned {
            true => Ok(()),
            false => Err(damaged(format!(
                "stream {stream}: the record at address {} tombstones it, the index does not",
                rec.address
            ))),
        };
    }
    let first = rec.header.first_revision;
    let last = first
        .0
        .saturating_add(u64::from(rec.header.event_count) - 1);
    if head.last_revision.is_none_or(|r| r < last) {
        return Err(damaged(format!(
            "stream {stream}: its head is revision {:?}, the log holds revision {last}",
            head.last_revision
        )));
    }
    let entry = index
        .stream_entries(head.id, first, Direction::Forwards, 1)
        .map_err(|e| damaged(e.to_string()))?
        .into_iter()
        .next();
    match entry {
        Some(e)
            if e.revision == first
                && e.position == rec.header.first_position
                && e.address == rec.address =>
        {
            Ok(())
        }
        other => Err(damaged(format!(
            "stream {stream}: revision {} is at position {} in the record at address {}, \
             the index has {other:?}",
            first.0, rec.header.first_position.0, rec.address
        ))),
    }
}

fn damaged(detail: String) -> IndexError {
    IndexError::Damaged {
        check: IntegrityCheck::LogTail,
        detail,
    }
}
