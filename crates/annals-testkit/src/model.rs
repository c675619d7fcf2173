//! The reference model: every committed event in a `Vec` in `$all` order, a map of stream states,
//! the current metadata JSON of each stream and the place of every event id ever written.
//!
//! It mirrors the engine's semantics as implemented in `annals-engine` (`writer.rs`, `read.rs`,
//! `rules.rs`), including the places where they are surprising, so the two can be compared answer
//! for answer:
//! - every written event takes the next position, including the `$metadata` events a soft delete
//!   or an undelete writes to `$$stream` and the `$streamDeleted` event of a tombstone;
//! - an append whose first event id was written to the same stream at revision `r`, with the
//!   expected revision satisfied at `r - 1`, is a retry: if all its ids sit at `r, r+1, ...` it
//!   returns the original result and writes nothing, otherwise it fails with wrong expected
//!   revision. Any other append is checked and written normally, even if some ids were seen;
//! - a soft delete writes `$tb = i64::MAX` (keeping other keys); the stream then reads as not
//!   found; a later append first writes metadata with `$tb` = the first new revision;
//! - a soft-deleted stream takes `no_stream` and its last revision (or `any`) and refuses
//!   `stream_exists` as deleted; a soft delete of a stream without events fails with wrong
//!   expected revision (actual: none) whatever it expected;
//! - a tombstone writes `$streamDeleted` at revision `i64::MAX`; reads and appends then fail with
//!   stream deleted, and so do reads (not writes) of its `$$stream`;
//! - `$all` reads return the log as written, with no metadata rules applied;
//! - `$ce-{category}` and `$et-{event type}` number their events (tombstones excepted) densely
//!   from 0 in position order, and show those their own stream's rules show, as link records;
//! - an append is first checked against the input rules `annals_core` documents (limits, distinct
//!   ids, metadata streams), written out here on their own (`validate_append`), so that a change
//!   to the engine's checks shows as a difference instead of being copied.
//!
//! Wall-clock rules (`$maxAge`) are not modelled: tests must not set them.

use std::collections::HashMap;

use annals_core::{
    AppendResult, ContentType, Direction, DomainError, ExpectedRevision, Filter, FilterTarget,
    IndexedStream, InputError, LINK_EVENT_TYPE, METADATA_EVENT_TYPE, NewEvent, Position, Revision,
    StreamMetadata, StreamName, TOMBSTONE_EVENT_TYPE, category_of,
    limits::{
        APPEND_EVENTS_MAX, STORE_APPEND_BYTES_MAX, STORE_EVENT_BYTES_MAX, STORE_READ_EVENTS_MAX,
    },
    link_id,
};
use bytes::Bytes;
use uuid::Uuid;

/// An event as the model holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelEvent {
    /// `None` for events the engine writes itself (a soft delete's or an undelete's metadata, a
    /// tombstone): their ids are random and the model cannot know them.
    pub id: Option<Uuid>,
    pub stream: String,
    pub revision: u64,
    pub position: u64,
    pub event_type: String,
    pub content_type: ContentType,
    pub data: Bytes,
    pub metadata: Bytes,
}

/// Why the model refused a request: the same input and domain errors the engine reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelError {
    Input(InputError),
    Domain(DomainError),
}

impl From<InputError> for ModelError {
    fn from(e: InputError) -> Self {
        ModelError::Input(e)
    }
}

impl From<DomainError> for ModelError {
    fn from(e: DomainError) -> Self {
        ModelError::Domain(e)
    }
}

/// A page of `$all` as the model answers it; the fields mean what they mean on the engine's
/// `AllPage`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelPage {
    pub events: Vec<ModelEvent>,
    pub next: Position,
    pub end_reached: bool,
}

#[derive(Clone, Debug, Default)]
struct StreamState {
    next_revision: u64,
    tombstoned: bool,
    /// Indexes into `Model::events` of the stream's events by revision (tombstone excluded).
    events: Vec<usize>,
}

impl StreamState {
    fn current(&self) -> Option<u64> {
        self.next_revision.checked_sub(1)
    }
}

#[derive(Clone, Debug)]
struct IdPlace {
    stream: String,
    revision: u64,
    position: u64,
}

/// The reference model of one store.
#[derive(Clone, Debug, Default)]
pub struct Model {
    events: Vec<ModelEvent>,
    streams: HashMap<String, StreamState>,
    /// Target stream → the data of the last `$metadata` event of `$$target`.
    meta: HashMap<String, Bytes>,
    ids: HashMap<Uuid, IdPlace>,
}

impl Model {
    pub fn new() -> Self {
        Self::default()
    }

    /// The last position written (0 when empty).
    pub fn head(&self) -> Position {
        Position(self.events.len() as u64)
    }

    /// Every event in `$all` order.
    pub fn events(&self) -> &[ModelEvent] {
        &self.events
    }

    /// The stream's last revision, `None` if it has no events (tombstone not counted).
    pub fn current(&self, stream: &str) -> Option<u64> {
        self.streams.get(stream).and_then(StreamState::current)
    }

    pub fn is_tombstoned(&self, stream: &str) -> bool {
        self.streams.get(stream).is_some_and(|s| s.tombstoned)
    }

    /// Whether the stream's current metadata marks it soft-deleted.
    pub fn is_soft_deleted(&self, stream: &str) -> bool {
        self.rules(stream).is_soft_deleted()
    }

    fn rules(&self, stream: &str) -> StreamMetadata {
        self.meta
            .get(stream)
            .map(|json| StreamMetadata::parse(json).unwrap_or_default())
            .unwrap_or_default()
    }

    fn state(&self, stream: &str) -> StreamState {
        self.streams.get(stream).cloned().unwrap_or_default()
    }

    /// Appends `events` to `stream` if it satisfies `expected`, as `Engine::append` does.
    pub fn append(
        &mut self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: &[NewEvent],
    ) -> Result<AppendResult, ModelError> {
        validate_append(stream, events)?;
        let name = stream.as_str();
        let state = self.state(name);
        self.check_not_tombstoned(stream)?;
        if let Some(result) = self.idempotent_result(stream, expected, events)? {
            return Ok(result);
        }
        let soft_deleted = self.is_soft_deleted(name) && !stream.is_metadata_stream();
        check_expected(stream, expected, &state, soft_deleted, false)?;
        if soft_deleted {
            let previous = self.meta.get(name).cloned();
            let json = undelete_json(previous.as_deref(), state.next_revision);
            self.write_metadata(stream, json)?;
        }
        let mut last = None;
        for e in events {
            last = Some(self.push(
                name,
                Some(e.id),
                false,
                e.event_type.as_str(),
                e.content_type,
                e.data.clone(),
                e.metadata.clone(),
            ));
        }
        if let (Some(target), Some(e)) = (stream.metadata_target(), events.last()) {
            self.meta.insert(target.as_str().to_owned(), e.data.clone());
        }
        let (revision, position) = last.unwrap_or_default();
        Ok(AppendResult {
            next_revision: Revision(revision),
            position: Position(position),
        })
    }

    /// Soft-deletes `stream`, as `Engine::delete` does.
    pub fn delete(
        &mut self,
        stream: &StreamName,
        expected: ExpectedRevision,
    ) -> Result<AppendResult, ModelError> {
        if stream.is_metadata_stream() {
            return Err(InputError::CannotDeleteMetadataStream.into());
        }
        let state = self.state(stream.as_str());
        self.check_not_tombstoned(stream)?;
        let soft_deleted = self.is_soft_deleted(stream.as_str());
        check_expected(stream, expected, &state, soft_deleted, true)?;
        let previous = self.meta.get(stream.as_str()).cloned();
        let json = Bytes::from(StreamMetadata::soft_delete_json(previous.as_deref()));
        let position = self.write_metadata(stream, json)?;
        Ok(AppendResult {
            next_revision: Revision(state.next_revision.saturating_sub(1)),
            position: Position(position),
        })
    }

    /// Tombstones `stream`, as `Engine::tombstone` does.
    pub fn tombstone(
        &mut self,
        stream: &StreamName,
        expected: ExpectedRevision,
    ) -> Result<AppendResult, ModelError> {
        if stream.is_metadata_stream() {
            return Err(InputError::CannotDeleteMetadataStream.into());
        }
        let state = self.state(stream.as_str());
        self.check_not_tombstoned(stream)?;
        let soft_deleted = self.is_soft_deleted(stream.as_str());
        check_expected(stream, expected, &state, soft_deleted, false)?;
        let (_, position) = self.push(
            stream.as_str(),
            None,
            true,
            TOMBSTONE_EVENT_TYPE,
            ContentType::Binary,
            Bytes::new(),
            Bytes::new(),
        );
        Ok(AppendResult {
            next_revision: Revision(state.next_revision.saturating_sub(1)),
            position: Position(position),
        })
    }

    /// Fails if `stream` is tombstoned (its `$$stream` still takes writes).
    fn check_not_tombstoned(&self, stream: &StreamName) -> Result<(), ModelError> {
        if self.is_tombstoned(stream.as_str()) {
            return Err(DomainError::StreamDeleted {
                stream: stream.to_string(),
            }
            .into());
        }
        Ok(())
    }

    fn idempotent_result(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: &[NewEvent],
    ) -> Result<Option<AppendResult>, ModelError> {
        let Some(first) = events.first().and_then(|e| self.ids.get(&e.id)) else {
            return Ok(None);
        };
        if first.stream != stream.as_str()
            || !expected.is_satisfied_by(first.revision.checked_sub(1))
        {
            return Ok(None);
        }
        let mut last = first;
        for (i, e) in events.iter().enumerate() {
            match self.ids.get(&e.id) {
                Some(p)
                    if p.stream == stream.as_str() && p.revision == first.revision + i as u64 =>
                {
                    last = p;
                }
                _ => {
                    return Err(DomainError::WrongExpectedRevision {
                        stream: stream.to_string(),
                        expected,
                        actual: self.current(stream.as_str()),
                    }
                    .into());
                }
            }
        }
        Ok(Some(AppendResult {
            next_revision: Revision(last.revision),
            position: Position(last.position),
        }))
    }

    /// Writes one `$metadata` event with `json` to `$$stream`; returns its position.
    fn write_metadata(&mut self, stream: &StreamName, json: Bytes) -> Result<u64, ModelError> {
        let meta_stream = stream.metadata_stream()?;
        let (_, position) = self.push(
            meta_stream.as_str(),
            None,
            false,
            METADATA_EVENT_TYPE,
            ContentType::Json,
            json.clone(),
            Bytes::new(),
        );
        self.meta.insert(stream.as_str().to_owned(), json);
        Ok(position)
    }

    /// Adds one event at the next position; returns its revision and position.
    #[expect(
        clippy::too_many_arguments,
        reason = "one event's fields, spelled out at the few call sites"
    )]
    fn push(
        &mut self,
        stream: &str,
        id: Option<Uuid>,
        tombstone: bool,
        event_type: &str,
        content_type: ContentType,
        data: Bytes,
        metadata: Bytes,
    ) -> (u64, u64) {
        let position = self.events.len() as u64 + 1;
        let index = self.events.len();
        let state = self.streams.entry(stream.to_owned()).or_default();
        let revision = if tombstone {
            state.tombstoned = true;
            Revision::TOMBSTONE.0
        } else {
            let r = state.next_revision;
            state.next_revision += 1;
            state.events.push(index);
            r
        };
        if let (Some(id), false) = (id, tombstone) {
            self.ids.insert(
                id,
                IdPlace {
                    stream: stream.to_owned(),
                    revision,
                    position,
                },
            );
        }
        self.events.push(ModelEvent {
            id,
            stream: stream.to_owned(),
            revision,
            position,
            event_type: event_type.to_owned(),
            content_type,
            data,
            metadata,
        });
        (revision, position)
    }

    /// Reads `stream` as `Engine::read_stream` does, applying its metadata rules.
    pub fn read_stream(
        &self,
        stream: &StreamName,
        from: Revision,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<ModelEvent>, ModelError> {
        let limit = limit.min(STORE_READ_EVENTS_MAX);
        let name = stream.as_str();
        let not_found = || -> ModelError {
            DomainError::StreamNotFound {
                stream: name.to_owned(),
            }
            .into()
        };
        if stream
            .metadata_target()
            .is_some_and(|t| self.is_tombstoned(t.as_str()))
        {
            return Err(DomainError::StreamDeleted {
                stream: name.to_owned(),
            }
            .into());
        }
        let Some(state) = self.streams.get(name) else {
            return Err(not_found());
        };
        if state.tombstoned {
            return Err(DomainError::StreamDeleted {
                stream: name.to_owned(),
            }
            .into());
        }
        let Some(last) = state.current() else {
            return Err(not_found());
        };
        let rules = self.rules(name);
        if rules.is_soft_deleted() {
            return Err(not_found());
        }
        let by_count = rules
            .max_count
            .map_or(0, |c| state.next_revision.saturating_sub(c));
        let visible_from = rules.truncate_before.unwrap_or(0).max(by_count);
        let revisions: Vec<u64> = match direction {
            Direction::Forwards => {
                let lo = from.0.max(visible_from);
                (lo..=last).take(limit).collect()
            }
            Direction::Backwards => {
                let hi = from.0.min(last);
                if hi < visible_from {
                    Vec::new()
                } else {
                    (visible_from..=hi).rev().take(limit).collect()
                }
            }
        };
        Ok(revisions
            .into_iter()
            .filter_map(|r| {
                let i = usize::try_from(r).ok()?;
                let at = *state.events.get(i)?;
                self.events.get(at).cloned()
            })
            .collect())
    }

    /// Reads a stream the index serves (`$ce-{category}`, `$et-{event type}`) as
    /// `Engine::read_stream_resolved` does: the events of the category or type (tombstones
    /// excepted) in position order, numbered from 0, of which those their own stream's metadata
    /// rules show are returned, each as (link record, event). Not found while the list is empty.
    pub fn read_indexed(
        &self,
        stream: &str,
        from: Revision,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<(ModelEvent, ModelEvent)>, ModelError> {
        let name = StreamName::new(stream).map_err(ModelError::Input)?;
        let in_list: Box<dyn Fn(&ModelEvent) -> bool> = match name.indexed() {
            Some(IndexedStream::Category(c)) => Box::new(move |e| category_of(&e.stream) == c),
            Some(IndexedStream::EventType(t)) => Box::new(move |e| e.event_type == t),
            _ => return Err(ModelError::Input(InputError::EmptyStreamName)),
        };
        let list: Vec<(u64, &ModelEvent)> = self
            .events
            .iter()
            .filter(|e| e.revision != Revision::TOMBSTONE.0 && in_list(e))
            .enumerate()
            .map(|(i, e)| (i as u64, e))
            .collect();
        if list.is_empty() {
            return Err(DomainError::StreamNotFound {
                stream: stream.to_owned(),
            }
            .into());
        }
        let limit = limit.min(STORE_READ_EVENTS_MAX);
        let keep = |(_, e): &&(u64, &ModelEvent)| self.shows(e);
        let picked: Vec<&(u64, &ModelEvent)> = match direction {
            Direction::Forwards => list
                .iter()
                .filter(|(r, _)| *r >= from.0)
                .filter(keep)
                .take(limit)
                .collect(),
            Direction::Backwards => list
                .iter()
                .rev()
                .filter(|(r, _)| *r <= from.0)
                .filter(keep)
                .take(limit)
                .collect(),
        };
        Ok(picked
            .into_iter()
            .map(|&(revision, e)| {
                let link = ModelEvent {
                    id: Some(link_id(&name, Revision(revision))),
                    stream: stream.to_owned(),
                    revision,
                    position: e.position,
                    event_type: LINK_EVENT_TYPE.to_owned(),
                    content_type: ContentType::Binary,
                    data: Bytes::from(format!("{}@{}", e.revision, e.stream)),
                    metadata: Bytes::new(),
                };
                (link, e.clone())
            })
            .collect())
    }

    /// Whether the current metadata rules of `event`'s stream let reads return it.
    fn shows(&self, event: &ModelEvent) -> bool {
        let Some(state) = self.streams.get(&event.stream) else {
            return true;
        };
        if state.tombstoned {
            return false;
        }
        let rules = self.rules(&event.stream);
        if rules.is_soft_deleted() {
            return false;
        }
        let by_count = rules
            .max_count
            .map_or(0, |c| state.next_revision.saturating_sub(c));
        event.revision >= rules.truncate_before.unwrap_or(0).max(by_count)
    }

    /// Reads `$all` as `Engine::read_all` does: the log as written, filtered.
    pub fn read_all(
        &self,
        from: Position,
        direction: Direction,
        limit: usize,
        filter: Option<&Filter>,
    ) -> ModelPage {
        let limit = limit.min(STORE_READ_EVENTS_MAX);
        let passes = |e: &ModelEvent| {
            filter.is_none_or(|f| match f.target() {
                FilterTarget::StreamName => f.matches_str(&e.stream),
                FilterTarget::EventType => f.matches_str(&e.event_type),
            })
        };
        let head = self.head();
        let mut page = ModelPage::default();
        match direction {
            Direction::Forwards => {
                let from = from.max(Position(1));
                if from > head || limit == 0 {
                    page.next = from;
                    page.end_reached = from > head;
                    return page;
                }
                for e in self.events.iter().skip((from.0 - 1) as usize) {
                    if passes(e) {
                        page.events.push(e.clone());
                        if page.events.len() >= limit {
                            page.next = Position(e.position + 1);
                            return page;
                        }
                    }
                }
                page.next = head.next();
                page.end_reached = true;
                page
            }
            Direction::Backwards => {
                let upto = from.min(head);
                let take = usize::try_from(upto.0).unwrap_or(usize::MAX);
                for e in self.events.iter().take(take).rev() {
                    if page.events.len() >= limit {
                        page.next = Position(e.position);
                        return page;
                    }
                    if passes(e) {
                        page.events.push(e.clone());
                    }
                }
                page.next = Position(0);
                page.end_reached = true;
                page
            }
        }
    }
}

fn check_expected(
    stream: &StreamName,
    expected: ExpectedRevision,
    state: &StreamState,
    soft_deleted: bool,
    soft_delete: bool,
) -> Result<(), ModelError> {
    let current = state.current();
    let wrong = DomainError::WrongExpectedRevision {
        stream: stream.to_string(),
        expected,
        actual: current,
    };
    let deleted = DomainError::StreamDeleted {
        stream: stream.to_string(),
    };
    let outcome = match (soft_delete && current.is_none(), soft_deleted, expected) {
        (true, _, _) => Err(wrong),
        (false, true, ExpectedRevision::StreamExists) => Err(deleted),
        (false, true, ExpectedRevision::NoStream) => Ok(()),
        _ if expected.is_satisfied_by(current) => Ok(()),
        _ => Err(wrong),
    };
    outcome.map_err(ModelError::from)
}

/// The metadata an append to a soft-deleted stream writes first: the previous keys with `$tb` =
/// the first new revision.
fn undelete_json(previous: Option<&[u8]>, truncate_before: u64) -> Bytes {
    let mut obj = previous
        .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default();
    obj.insert("$tb".to_owned(), serde_json::Value::from(truncate_before));
    Bytes::from(serde_json::to_vec(&serde_json::Value::Object(obj)).unwrap_or_default())
}

/// The input rules of an append, as `annals_core` states them (not as the engine codes them):
///
/// 1. an append has events ([`InputError::EmptyAppend`]);
/// 2. at most [`APPEND_EVENTS_MAX`] of them;
/// 3. an event's size is its data plus its metadata plus its type, in bytes, and is at most
///    [`STORE_EVENT_BYTES_MAX`] (`limits.rs`); the first event over it is the one reported;
/// 4. the append's size is the sum of its events' sizes, at most [`STORE_APPEND_BYTES_MAX`];
/// 5. event ids within one append are distinct;
/// 6. an append to a metadata stream (`$$name`) holds only `$metadata` events whose data is
///    stream metadata (as [`StreamMetadata::parse`] reads it); the first event that is not is
///    the one reported. Several may be appended at once; the last one is the metadata.
///
/// Every rule is evaluated; when several are broken, the first in this list is reported (from
/// the shape of the whole append down to single events).
fn validate_append(stream: &StreamName, events: &[NewEvent]) -> Result<(), ModelError> {
    let sizes: Vec<usize> = events
        .iter()
        .map(|e| e.data.len() + e.metadata.len() + e.event_type.as_str().len())
        .collect();
    let total: usize = sizes.iter().sum();
    let mut ids: Vec<u128> = events.iter().map(|e| e.id.as_u128()).collect();
    ids.sort_unstable();
    let repeated_id = ids.windows(2).any(|pair| pair.first() == pair.last());
    let metadata_problem = if stream.is_metadata_stream() {
        events.iter().find_map(|e| {
            if e.event_type.as_str() == METADATA_EVENT_TYPE {
                StreamMetadata::parse(&e.data).err()
            } else {
                Some(InputError::InvalidMetadataAppend)
            }
        })
    } else {
        None
    };
    let broken = [
        events.is_empty().then_some(InputError::EmptyAppend),
        (events.len() > APPEND_EVENTS_MAX).then_some(InputError::TooManyEvents {
            count: events.len(),
            max: APPEND_EVENTS_MAX,
        }),
        sizes
            .iter()
            .enumerate()
            .find(|&(_, &size)| size > STORE_EVENT_BYTES_MAX)
            .map(|(index, &size)| InputError::EventTooLarge {
                index,
                size,
                max: STORE_EVENT_BYTES_MAX,
            }),
        (total > STORE_APPEND_BYTES_MAX).then_some(InputError::AppendTooLarge {
            size: total,
            max: STORE_APPEND_BYTES_MAX,
        }),
        repeated_id.then_some(InputError::DuplicateEventId),
        metadata_problem,
    ];
    match broken.into_iter().flatten().next() {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> StreamName {
        StreamName::new(s).unwrap()
    }

    fn ev(i: u128) -> NewEvent {
        NewEvent {
            id: Uuid::from_u128(i),
            ..NewEvent::json("T", "{}").unwrap()
        }
    }

    #[test]
    fn positions_are_consumed_by_deletes_and_tombstones() {
        let mut m = Model::new();
        let s = name("a-1");
        let r = m.append(&s, ExpectedRevision::NoStream, &[ev(1), ev(2)]);
        assert_eq!(
            r,
            Ok(AppendResult {
                next_revision: Revision(1),
                position: Position(2)
            })
        );
        let d = m.delete(&s, ExpectedRevision::Exact(1)).unwrap();
        assert_eq!(d.position, Position(3));
        assert_eq!(
            m.read_stream(&s, Revision(0), Direction::Forwards, 10),
            Err(ModelError::Domain(DomainError::StreamNotFound {
                stream: "a-1".into()
            }))
        );
        // Undelete metadata at 4, the event at 5, revisions go on.
        let r = m.append(&s, ExpectedRevision::Any, &[ev(3)]).unwrap();
        assert_eq!(r.position, Position(5));
        assert_eq!(r.next_revision, Revision(2));
        let got = m
            .read_stream(&s, Revision(0), Direction::Forwards, 10)
            .unwrap();
        assert_eq!(got.iter().map(|e| e.revision).collect::<Vec<_>>(), vec![2]);
        let t = m.tombstone(&s, ExpectedRevision::Any).unwrap();
        assert_eq!(t.position, Position(6));
        assert_eq!(t.next_revision, Revision(2));
        assert!(matches!(
            m.append(&s, ExpectedRevision::Any, &[ev(4)]),
            Err(ModelError::Domain(DomainError::StreamDeleted { .. }))
        ));
        assert_eq!(m.head(), Position(6));
    }

    #[test]
    fn retries_are_idempotent_and_partial_retries_refused() {
        let mut m = Model::new();
        let s = name("a-1");
        let first = m
            .append(&s, ExpectedRevision::NoStream, &[ev(1), ev(2)])
            .unwrap();
        assert_eq!(
            m.append(&s, ExpectedRevision::NoStream, &[ev(1), ev(2)]),
            Ok(first)
        );
        assert_eq!(
            m.append(&s, ExpectedRevision::NoStream, &[ev(1), ev(9)]),
            Err(ModelError::Domain(DomainError::WrongExpectedRevision {
                stream: "a-1".into(),
                expected: ExpectedRevision::NoStream,
                actual: Some(1),
            }))
        );
        // The tail of the first append, retried at its own place.
        assert_eq!(
            m.append(&s, ExpectedRevision::Exact(0), &[ev(2)]).unwrap(),
            first
        );
        assert_eq!(m.head(), Position(2));
    }

    /// Each input rule on its own, and the first rule wins when several are broken.
    #[test]
    fn input_rules_and_their_order() {
        let s = name("a-1");
        let meta = name("$$a-1");
        let sized = |id: u128, size: usize| NewEvent {
            data: Bytes::from(vec![b'x'; size - 1]),
            ..ev(id)
        };
        let input = |stream: &StreamName, events: &[NewEvent]| match validate_append(stream, events)
        {
            Err(ModelError::Input(e)) => Some(e),
            Err(other) => panic!("{other:?}"),
            Ok(()) => None,
        };
        assert_eq!(input(&s, &[]), Some(InputError::EmptyAppend));
        assert_eq!(input(&s, &[sized(1, STORE_EVENT_BYTES_MAX)]), None);
        assert_eq!(
            input(
                &s,
                &[
                    ev(1),
                    sized(2, STORE_EVENT_BYTES_MAX + 1),
                    sized(3, STORE_EVENT_BYTES_MAX + 2)
                ]
            ),
            Some(InputError::EventTooLarge {
                index: 1,
                size: STORE_EVENT_BYTES_MAX + 1,
                max: STORE_EVENT_BYTES_MAX
            })
        );
        let half = STORE_APPEND_BYTES_MAX / 2;
        assert_eq!(input(&s, &[sized(1, half), sized(2, half)]), None);
        assert_eq!(
            input(&s, &[sized(1, half), sized(2, half), ev(2)]),
            Some(InputError::AppendTooLarge {
                size: STORE_APPEND_BYTES_MAX + 3,
                max: STORE_APPEND_BYTES_MAX
            }),
            "too large wins over a repeated id"
        );
        assert_eq!(
            input(&s, &[ev(1), ev(2), ev(1)]),
            Some(InputError::DuplicateEventId)
        );
        let metadata = |id: u128, json: &'static str| NewEvent {
            id: Uuid::from_u128(id),
            ..NewEvent::json(METADATA_EVENT_TYPE, json).unwrap()
        };
        assert_eq!(
            input(
                &meta,
                &[metadata(1, "{}"), metadata(2, r#"{"$maxCount":1}"#)]
            ),
            None
        );
        assert_eq!(
            input(&meta, &[metadata(1, "{}"), ev(2)]),
            Some(InputError::InvalidMetadataAppend)
        );
        assert!(matches!(
            input(&meta, &[metadata(1, "[]"), ev(2)]),
            Some(InputError::InvalidMetadata(_))
        ));
        assert_eq!(
            input(&meta, &[ev(1), metadata(1, "[]")]),
            Some(InputError::DuplicateEventId),
            "a repeated id wins over bad metadata"
        );
        // The same events are fine in a stream that holds no metadata.
        assert_eq!(input(&s, &[metadata(1, "[]"), ev(2)]), None);
    }

    #[test]
    fn read_all_pages() {
        let mut m = Model::new();
        for i in 0..5 {
            m.append(&name("a"), ExpectedRevision::Any, &[ev(i)])
                .unwrap();
        }
        let p = m.read_all(Position(2), Direction::Forwards, 2, None);
        assert_eq!(p.next, Position(4));
        assert!(!p.end_reached);
        let p = m.read_all(Position(4), Direction::Forwards, 2, None);
        assert_eq!(p.next, Position(6));
        assert!(
            !p.end_reached,
            "a full page does not say it reached the end"
        );
        let p = m.read_all(Position::END, Direction::Backwards, 2, None);
        assert_eq!(
            p.events.iter().map(|e| e.position).collect::<Vec<_>>(),
            vec![5, 4]
        );
        assert_eq!(p.next, Position(3));
        let p = m.read_all(Position(2), Direction::Backwards, 2, None);
        assert_eq!(p.next, Position(0));
        assert!(p.end_reached);
    }
}
