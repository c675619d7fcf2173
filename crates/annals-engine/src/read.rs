//! Read paths: a stream by revision and `$all` by position with server-side filters (the streams
//! the index serves, `$ce-` and `$et-`, are read in [`crate::links`]). Every read stops at the published head, so it never returns an event that is not
//! durable, and applies stream-metadata rules where [`crate::rules`] says so.

use annals_core::{
    Direction, DomainError, EventRecord, Filter, FilterTarget, Position, ResolvedEvent, Revision,
    StreamName, Timestamp, limits::STORE_READ_EVENTS_MAX,
};
use annals_index::Index;
use annals_log::LogError;
use annals_log::codec::{Interner, decode_events, frame_stream};

use crate::engine::Engine;
use crate::error::EngineError;
use crate::links::posting_list;
use crate::rules::Visibility;

/// Most events a filtered `$all` read looks at before returning, matched or not, so a selective
/// filter cannot hold a reader for long; the page's `next` says where to go on.
pub const READ_SCAN_EVENTS_MAX: u64 = 262_144;

/// A page of `$all`.
#[derive(Clone, Debug, Default)]
pub struct AllPage {
    pub events: Vec<EventRecord>,
    /// Where the next page starts (forwards: after the last event looked at; backwards: before
    /// it). Forwards, every position below `next` has been considered.
    pub next: Position,
    /// Forwards: the read reached the head.
    pub end_reached: bool,
}

pub(crate) fn corrupt(address: u64, e: impl std::fmt::Display) -> EngineError {
    LogError::Corrupt {
        file: "log".to_owned(),
        offset: address,
        reason: e.to_string(),
    }
    .into()
}

impl Engine {
    /// The access list in `stream`'s durable metadata (`$acl`), if it has one: one hash lookup,
    /// as the auth layer asks on every request.
    pub fn stream_acl(&self, stream: &str) -> Option<std::sync::Arc<annals_core::StreamAcl>> {
        let shared = &self.inner.shared;
        let meta = shared.meta.read();
        meta.get(stream).and_then(|m| m.rules.acl.clone())
    }

    /// The newest event of `stream`, or `None` if it has none, does not exist or was deleted:
    /// what a stream that keeps one value (a checkpoint, a definition) holds.
    pub fn last_event(&self, stream: &StreamName) -> Result<Option<EventRecord>, EngineError> {
        match self.read_stream(stream, Revision::END, Direction::Backwards, 1) {
            Ok(mut events) => Ok(events.pop()),
            Err(EngineError::Domain(
                DomainError::StreamNotFound { .. } | DomainError::StreamDeleted { .. },
            )) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads up to `limit` events of `stream` from revision `from` (inclusive; `Revision::END`
    /// reads backwards from the last event). A `$ce-`/`$et-` stream is read from the index
    /// ([`crate::links`]) as its link records: what a reader that does not resolve links sees.
    pub fn read_stream(
        &self,
        stream: &StreamName,
        from: Revision,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<EventRecord>, EngineError> {
        match posting_list(stream) {
            Some((kind, key)) => Ok(self
                .read_indexed(stream, kind, key, from, direction, limit)?
                .events
                .into_iter()
                .map(ResolvedEvent::into_original)
                .collect()),
            None => self.read_written_stream(stream, from, direction, limit),
        }
    }

    /// [`Engine::read_stream`] of a stream written to the log.
    pub(crate) fn read_written_stream(
        &self,
        stream: &StreamName,
        from: Revision,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<EventRecord>, EngineError> {
        let shared = &self.inner.shared;
        let limit = limit.min(STORE_READ_EVENTS_MAX);
        let not_found = || -> EngineError {
            DomainError::StreamNotFound {
                stream: stream.to_string(),
            }
            .into()
        };
        // `$$stream` goes with its stream: once that is tombstoned, its metadata reads as deleted
        // too (as in KurrentDB), even though `$$stream` still takes writes.
        if let Some(target) = stream.metadata_target()
            && shared
                .index
                .stream_head(target.as_str())?
                .is_some_and(|h| h.tombstoned)
        {
            return Err(DomainError::StreamDeleted {
                stream: stream.to_string(),
            }
            .into());
        }
        let Some(head) = shared.index.stream_head(stream.as_str())? else {
            return Err(not_found());
        };
        let published = shared.head.get();
        if head.tombstoned {
            return Err(DomainError::StreamDeleted {
                stream: stream.to_string(),
            }
            .into());
        }
        let Some(last) = head.last_revision else {
            return Err(not_found());
        };
        // The index may already hold a batch whose head is not yet published; a stream that only
        // exists in that batch does not exist yet for readers.
        if head.last_position > published {
            let first =
                shared
                    .index
                    .stream_entries(head.id, Revision(0), Direction::Forwards, 1)?;
            if first.first().is_none_or(|e| e.position > published) {
                return Err(not_found());
            }
        }
        let meta = shared.meta.read().get(stream.as_str()).cloned();
        let vis = Visibility::of(&head, meta.as_deref(), Timestamp::now());
        if vis.hidden {
            return Err(not_found());
        }
        let mut out = Vec::with_capacity(limit.min(1024));
        let mut cursor = match direction {
            Direction::Forwards => from.0.max(vis.from_revision),
            Direction::Backwards => from.0.min(last),
        };
        let mut interner = Interner::default();
        while out.len() < limit {
            if direction == Direction::Backwards && cursor < vis.from_revision {
                break;
            }
            let want = limit - out.len();
            let entries =
                shared
                    .index
                    .stream_entries(head.id, Revision(cursor), direction, want)?;
            if entries.is_empty() {
                break;
            }
            let mut i = 0;
            while i < entries.len() {
                let Some(entry) = entries.get(i) else { break };
                // Consecutive entries of one record are decoded together.
                let mut j = i + 1;
                while entries.get(j).is_some_and(|e| e.address == entry.address) {
                    j += 1;
                }
                let group = entries.get(i..j).unwrap_or_default();
                let (lo, hi) = group.iter().fold((u64::MAX, 0), |(lo, hi), e| {
                    (lo.min(e.position.0), hi.max(e.position.0))
                });
                if lo > published.0 {
                    break;
                }
                let record = shared.log.read_record(entry.address)?;
                let mut got = Vec::with_capacity(group.len());
                decode_events(
                    &record.frame,
                    &record.header,
                    &mut interner,
                    (Position(lo), Position(hi.min(published.0))),
                    |e| got.push(e),
                )
                .map_err(|e| corrupt(entry.address, e))?;
                if direction == Direction::Backwards {
                    got.reverse();
                }
                out.extend(
                    got.into_iter()
                        .filter(|e| e.revision.0 >= vis.from_revision && vis.shows(e)),
                );
                i = j;
            }
            let Some(last_entry) = entries.last() else {
                break;
            };
            if last_entry.position > published {
                break;
            }
            cursor = match direction {
                Direction::Forwards => last_entry.revision.0.saturating_add(1),
                Direction::Backwards => match last_entry.revision.0.checked_sub(1) {
                    Some(c) => c,
                    None => break,
                },
            };
        }
        out.truncate(limit);
        Ok(out)
    }

    /// Reads up to `limit` events of `$all` from `from` (inclusive) that pass `filter`.
    pub fn read_all(
        &self,
        from: Position,
        direction: Direction,
        limit: usize,
        filter: Option<&Filter>,
    ) -> Result<AllPage, EngineError> {
        let limit = limit.min(STORE_READ_EVENTS_MAX);
        match direction {
            Direction::Forwards => self.read_all_forwards(from, limit, filter),
            Direction::Backwards => self.read_all_backwards(from, limit, filter),
        }
    }

    fn read_all_forwards(
        &self,
        from: Position,
        limit: usize,
        filter: Option<&Filter>,
    ) -> Result<AllPage, EngineError> {
        let shared = &self.inner.shared;
        let head = shared.head.get();
        let from = from.max(Position(1));
        let mut page = AllPage {
            events: Vec::new(),
            next: from,
            end_reached: false,
        };
        if from > head || limit == 0 {
            page.end_reached = from > head;
            return Ok(page);
        }
        page.events.reserve(limit.min(4096));
        let start = match shared.index.seek(from)? {
            Some(p) => p.address,
            None => shared.log.start_address(),
        };
        let mut scan = shared.log.scan(start, shared.log.readable_end());
        let mut interner = Interner::default();
        let mut scanned = 0u64;
        while let Some(rec) = scan.next()? {
            let first = rec.header.first_position;
            let last = rec.header.last_position();
            if first > head {
                break;
            }
            if last < from {
                continue;
            }
            let lo = first.max(from);
            let hi = last.min(head);
            scanned += hi.0 - lo.0 + 1;
            // A stream filter is decided once per record, without decoding its events.
            let stream_ok = match filter {
                Some(f) if f.target() == FilterTarget::StreamName => {
                    frame_stream(&rec.frame).is_some_and(|s| f.matches_str(s))
                }
                _ => true,
            };
            if stream_ok {
                let room = limit - page.events.len();
                let hi_limited = if filter.is_none() {
                    Position(hi.0.min(lo.0.saturating_add(room as u64 - 1)))
                } else {
                    hi
                };
                decode_events(
                    &rec.frame,
                    &rec.header,
                    &mut interner,
                    (lo, hi_limited),
                    |e| {
                        if page.events.len() < limit && filter.is_none_or(|f| f.matches(&e)) {
                            page.next = e.position.next();
                            page.events.push(e);
                        }
                    },
                )
                .map_err(|e| corrupt(rec.address, e))?;
                if page.events.len() >= limit {
                    return Ok(page);
                }
            }
            page.next = hi.next();
            if hi == head {
                page.end_reached = true;
                break;
            }
            if scanned >= READ_SCAN_EVENTS_MAX {
                break;
            }
        }
        if page.next > head {
            page.end_reached = true;
        }
        Ok(page)
    }

    fn read_all_backwards(
        &self,
        from: Position,
        limit: usize,
        filter: Option<&Filter>,
    ) -> Result<AllPage, EngineError> {
        let shared = &self.inner.shared;
        let head = shared.head.get();
        let mut upto = from.min(head);
        // Nothing considered yet: a page that looks at nothing (limit 0) says to go on from
        // `upto`, and has reached the end only if there is nothing below.
        let mut page = AllPage {
            events: Vec::new(),
            next: upto,
            end_reached: false,
        };
        let mut interner = Interner::default();
        let mut scanned = 0u64;
        while page.events.len() < limit && upto.0 >= 1 && scanned < READ_SCAN_EVENTS_MAX {
            let (start, bucket_first) = match shared.index.seek(upto)? {
                Some(p) => (p.address, p.position),
                None => (shared.log.start_address(), Position(1)),
            };
            let mut chunk = Vec::new();
            let mut scan = shared.log.scan(start, shared.log.readable_end());
            while let Some(rec) = scan.next()? {
                let first = rec.header.first_position;
                if first > upto {
                    break;
                }
                let last = rec.header.last_position().min(upto);
                decode_events(&rec.frame, &rec.header, &mut interner, (first, last), |e| {
                    chunk.push(e)
                })
                .map_err(|e| corrupt(rec.address, e))?;
                if last == upto {
                    break;
                }
            }
            scanned += chunk.len() as u64;
            let mut stopped_at = None;
            for e in chunk.into_iter().rev() {
                if page.events.len() >= limit {
                    stopped_at = Some(e.position);
                    break;
                }
                let pos = e.position;
                if filter.is_none_or(|f| f.matches(&e)) {
                    page.events.push(e);
                }
                page.next = Position(pos.0 - 1);
            }
            if stopped_at.is_some() {
                break;
            }
            upto = Position(bucket_first.0.saturating_sub(1));
            page.next = upto;
        }
        page.end_reached = page.next.0 == 0;
        Ok(page)
    }

    pub(crate) fn visibility(
        &self,
        stream: &StreamName,
        now: Timestamp,
    ) -> Result<Visibility, EngineError> {
        let shared = &self.inner.shared;
        let meta = shared.meta.read().get(stream.as_str()).cloned();
        let Some(head) = shared.index.stream_head(stream.as_str())? else {
            return Ok(Visibility::ALL);
        };
        if meta.is_none() && !head.tombstoned {
            return Ok(Visibility::ALL);
        }
        Ok(Visibility::of(&head, meta.as_deref(), now))
    }
}
