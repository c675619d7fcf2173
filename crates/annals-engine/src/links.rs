//! Reads of the streams the index serves: `$ce-{category}` and `$et-{event type}`.
//!
//! Nothing of them is in the log. Their revisions are the dense numbers the index gives each
//! category's and each event type's events in position order (the posting lists), so revision r
//! of `$ce-order` is always the same event, across restarts and rebuilds of the index. A read
//! walks the list from a revision, reads the events from the log, keeps those the metadata rules
//! of their own stream show (a deleted, truncated or expired event is skipped, leaving a gap in
//! the revisions as a truncated stream does), and pairs each with the link record KurrentDB would
//! send ([`annals_core::link_to`]). Like every read it stops at the published head.

use std::collections::HashMap;
use std::sync::Arc;

use annals_core::{
    Direction, DomainError, EventRecord, IndexedStream, ResolvedEvent, Revision, StreamName,
    Timestamp, limits::STORE_READ_EVENTS_MAX, link_to,
};
use annals_index::{Index, Posting, PostingKind};
use annals_log::codec::{Interner, decode_events};

use crate::engine::Engine;
use crate::error::EngineError;
use crate::read::corrupt;
use crate::rules::Visibility;

/// Postings looked at per step when finding the end of a list (past the few not yet published).
const END_SCAN_POSTINGS: usize = 64;

/// A page of a `$ce-`/`$et-` stream.
#[derive(Debug)]
pub(crate) struct IndexedPage {
    pub(crate) events: Vec<ResolvedEvent>,
    /// The revision to go on from in the same direction: past every posting looked at, shown
    /// or not. `None` when a backwards read passed revision 0.
    pub(crate) next: Option<Revision>,
    /// Forwards: the read looked at every posting up to the published head.
    pub(crate) end_reached: bool,
}

/// The posting list serving `stream`, if the index serves it.
pub(crate) fn posting_list(stream: &StreamName) -> Option<(PostingKind, &str)> {
    match stream.indexed()? {
        IndexedStream::Category(c) => Some((PostingKind::Category, c)),
        IndexedStream::EventType(t) => Some((PostingKind::EventType, t)),
        _ => None,
    }
}

impl Engine {
    /// Reads up to `limit` events of category `category` (stream `$ce-{category}`) from its
    /// revision `from` (inclusive; `Revision::END` reads backwards from the last), each with the
    /// link record it is read through. Not found when the category has no event yet.
    pub fn read_category(
        &self,
        category: &str,
        from: Revision,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<ResolvedEvent>, EngineError> {
        let stream = StreamName::new(format!("{}{category}", annals_core::CATEGORY_STREAM_PREFIX))?;
        Ok(self
            .read_indexed(
                &stream,
                PostingKind::Category,
                category,
                from,
                direction,
                limit,
            )?
            .events)
    }

    /// Reads up to `limit` events of type `event_type` (stream `$et-{event type}`), as
    /// [`Engine::read_category`] does.
    pub fn read_event_type(
        &self,
        event_type: &str,
        from: Revision,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<ResolvedEvent>, EngineError> {
        let stream = StreamName::new(format!(
            "{}{event_type}",
            annals_core::EVENT_TYPE_STREAM_PREFIX
        ))?;
        Ok(self
            .read_indexed(
                &stream,
                PostingKind::EventType,
                event_type,
                from,
                direction,
                limit,
            )?
            .events)
    }

    /// Reads up to `limit` events of `stream` as a reader that resolves links sees them: for
    /// `$ce-`/`$et-` streams each event with its link record, for any other stream the events
    /// themselves (`link: None`). [`Engine::read_stream`] returns what a reader that does not
    /// resolve links sees.
    pub fn read_stream_resolved(
        &self,
        stream: &StreamName,
        from: Revision,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<ResolvedEvent>, EngineError> {
        match posting_list(stream) {
            Some((kind, key)) => Ok(self
                .read_indexed(stream, kind, key, from, direction, limit)?
                .events),
            None => Ok(self
                .read_written_stream(stream, from, direction, limit)?
                .into_iter()
                .map(|event| ResolvedEvent { event, link: None })
                .collect()),
        }
    }

    /// Reads posting list (`kind`, `key`) as stream `stream`.
    pub(crate) fn read_indexed(
        &self,
        stream: &StreamName,
        kind: PostingKind,
        key: &str,
        from: Revision,
        direction: Direction,
        limit: usize,
    ) -> Result<IndexedPage, EngineError> {
        let shared = &self.inner.shared;
        let limit = limit.min(STORE_READ_EVENTS_MAX);
        let head = shared.head.get();
        // A list whose first event is not yet published does not exist yet for readers.
        let first = shared
            .index
            .postings(kind, key, Revision(0), Direction::Forwards, 1)?;
        if first.first().is_none_or(|p| p.position > head) {
            return Err(DomainError::StreamNotFound {
                stream: stream.to_string(),
            }
            .into());
        }
        let mut page = IndexedPage {
            events: Vec::with_capacity(limit.min(1024)),
            next: Some(from),
            end_reached: false,
        };
        let mut interner = Interner::default();
        let mut visibility: HashMap<Arc<str>, Visibility> = HashMap::new();
        let now = Timestamp::now();
        while page.events.len() < limit {
            let Some(cursor) = page.next else { break };
            let want = limit - page.events.len();
            let postings = shared.index.postings(kind, key, cursor, direction, want)?;
            if postings.is_empty() {
                page.end_reached = true;
                break;
            }
            let mut i = 0;
            while let Some(p) = postings.get(i) {
                let mut j = i + 1;
                while postings.get(j).is_some_and(|q| q.address == p.address) {
                    j += 1;
                }
                let group = postings.get(i..j).unwrap_or_default();
                i = j;
                if p.position > head {
                    match direction {
                        // Everything after is later still: the published part is read.
                        Direction::Forwards => {
                            page.end_reached = true;
                            return Ok(page);
                        }
                        // Not published yet: as if not there.
                        Direction::Backwards => continue,
                    }
                }
                for (revision, event) in self.resolve_group(group, direction, &mut interner)? {
                    page.next = match direction {
                        Direction::Forwards => Some(Revision(revision.0.saturating_add(1))),
                        Direction::Backwards => revision.0.checked_sub(1).map(Revision),
                    };
                    let vis = match visibility.get(event.stream.as_str()) {
                        Some(v) => *v,
                        None => {
                            let v = self.visibility(&event.stream, now)?;
                            visibility.insert(Arc::clone(event.stream.as_arc()), v);
                            v
                        }
                    };
                    if vis.shows(&event) {
                        page.events.push(ResolvedEvent {
                            link: Some(link_to(stream, revision, &event)),
                            event,
                        });
                    }
                }
            }
            if let (Direction::Backwards, Some(last)) = (direction, postings.last()) {
                // Postings skipped as unpublished still move the cursor.
                page.next = page.next.min(last.revision.0.checked_sub(1).map(Revision));
            }
        }
        Ok(page)
    }

    /// The events of one record that `group` (postings of one record, in `direction` order)
    /// names, each with its revision in the list, in `direction` order.
    fn resolve_group(
        &self,
        group: &[Posting],
        direction: Direction,
        interner: &mut Interner,
    ) -> Result<Vec<(Revision, EventRecord)>, EngineError> {
        let Some(first) = group.first() else {
            return Ok(Vec::new());
        };
        let record = self.inner.shared.log.read_record(first.address)?;
        let mut ascending: Vec<&Posting> = group.iter().collect();
        if direction == Direction::Backwards {
            ascending.reverse();
        }
        let (lo, hi) = match (ascending.first(), ascending.last()) {
            (Some(lo), Some(hi)) => (lo.position, hi.position),
            _ => return Ok(Vec::new()),
        };
        // Events between the postings (another type's, for an event-type list) are passed over:
        // both sides ascend, so one walk pairs them.
        let mut wanted = ascending.iter().peekable();
        let mut out = Vec::with_capacity(group.len());
        decode_events(&record.frame, &record.header, interner, (lo, hi), |e| {
            while wanted.next_if(|p| p.position < e.position).is_some() {}
            if let Some(p) = wanted.next_if(|p| p.position == e.position) {
                out.push((p.revision, e));
            }
        })
        .map_err(|e| corrupt(first.address, e))?;
        if out.len() != group.len() {
            return Err(corrupt(
                first.address,
                format!(
                    "the index names {} events of this record, {} are there",
                    group.len(),
                    out.len()
                ),
            ));
        }
        if direction == Direction::Backwards {
            out.reverse();
        }
        Ok(out)
    }

    /// The revision after the last published one of posting list (`kind`, `key`): where a
    /// subscription from the end starts.
    pub(crate) fn indexed_end(
        &self,
        kind: PostingKind,
        key: &str,
    ) -> Result<Revision, EngineError> {
        let shared = &self.inner.shared;
        let head = shared.head.get();
        let mut cursor = Revision::END;
        loop {
            let postings = shared.index.postings(
                kind,
                key,
                cursor,
                Direction::Backwards,
                END_SCAN_POSTINGS,
            )?;
            if let Some(p) = postings.iter().find(|p| p.position <= head) {
                return Ok(Revision(p.revision.0.saturating_add(1)));
            }
            match postings.last().and_then(|p| p.revision.0.checked_sub(1)) {
                Some(r) => cursor = Revision(r),
                None => return Ok(Revision(0)),
            }
        }
    }
}
