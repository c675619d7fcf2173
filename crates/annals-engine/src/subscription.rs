//! Catch-up and live subscriptions to `$all` and to one stream, on one code path.
//!
//! A subscription is a cursor: it pages through the log (or a stream, by revision) from its
//! position and, at the head, waits for the head signal and pages again. There is no push buffer a writer could fill, so a slow
//! subscriber never holds the writer; it only reads later. Because every page starts exactly at
//! the cursor, the switch from catching up to live can neither skip nor repeat a position.

use std::time::Duration;

use annals_core::{Direction, DomainError, Filter, Position, ResolvedEvent, Revision, StreamName};
use tokio::sync::watch;

use crate::engine::Engine;
use crate::error::EngineError;
use crate::links::posting_list;
use crate::live_tail::{LIVE_TAIL_ADMIT_EVENTS, PageEvents};

/// Most events one subscription page holds.
pub const SUBSCRIPTION_PAGE_EVENTS_MAX: usize = 4_096;

/// One step of a subscription.
#[derive(Clone, Debug, Default)]
pub struct SubscriptionPage {
    /// The events, possibly shared with other subscriptions at the head (see
    /// [`PageEvents::shared`]).
    pub events: PageEvents,
    /// Every position up to here has been delivered or filtered out: a checkpoint a consumer can
    /// store and resume from (resume with `checkpoint.next()`).
    pub checkpoint: Position,
    /// The page reached the head as it was when read.
    pub caught_up: bool,
}

/// A subscription to `$all`, optionally filtered.
#[derive(Debug)]
pub struct Subscription {
    engine: Engine,
    next: Position,
    filter: Option<Filter>,
    head: watch::Receiver<Position>,
    page_events_max: usize,
}

impl Engine {
    /// A watch of the published head: it changes whenever new events are durable and visible.
    /// For async readers that page with their own reads (a stream cursor) and wait here between
    /// pages; borrow the value before reading, so a change after the read is never missed.
    pub fn head_watch(&self) -> watch::Receiver<Position> {
        self.inner.shared.head.subscribe()
    }

    /// Subscribes to `$all` from position `from` (inclusive; `Position(1)` or `START` for the
    /// beginning).
    pub fn subscribe_all(&self, from: Position, filter: Option<Filter>) -> Subscription {
        Subscription {
            engine: self.clone(),
            next: from.max(Position(1)),
            filter,
            head: self.inner.shared.head.subscribe(),
            page_events_max: SUBSCRIPTION_PAGE_EVENTS_MAX,
        }
    }
}

impl Subscription {
    /// Caps the events per page (at most [`SUBSCRIPTION_PAGE_EVENTS_MAX`]).
    pub fn with_page_events_max(mut self, max: usize) -> Self {
        self.page_events_max = max.clamp(1, SUBSCRIPTION_PAGE_EVENTS_MAX);
        self
    }

    /// The position the next page starts at.
    pub fn position(&self) -> Position {
        self.next
    }

    /// Reads the next page if anything is past the cursor: from the live tail when the cursor
    /// is near the head, else from the log.
    fn poll_page(&mut self) -> Result<Option<SubscriptionPage>, EngineError> {
        let head = self.engine.head();
        if self.next > head {
            return Ok(None);
        }
        if head.0 - self.next.0 < LIVE_TAIL_ADMIT_EVENTS
            && let Some(page) = self.poll_tail(head)?
        {
            return Ok(Some(page));
        }
        let page = self.engine.read_all(
            self.next,
            Direction::Forwards,
            self.page_events_max,
            self.filter.as_ref(),
        )?;
        self.next = page.next.max(self.next);
        Ok(Some(SubscriptionPage {
            events: page.events.into(),
            checkpoint: Position(self.next.0 - 1),
            caught_up: page.end_reached,
        }))
    }

    /// The next page from the live tail, filtered here; `None` if the cursor is behind the tail.
    fn poll_tail(&mut self, head: Position) -> Result<Option<SubscriptionPage>, EngineError> {
        let engine = &self.engine;
        let hit = engine.inner.shared.live.page_at(self.next, |from| {
            engine
                .read_all(
                    from,
                    Direction::Forwards,
                    SUBSCRIPTION_PAGE_EVENTS_MAX,
                    None,
                )
                .map(|page| page.events)
        })?;
        let Some(hit) = hit else {
            return Ok(None);
        };
        let mut indices =
            Vec::with_capacity((hit.events().len() - hit.start).min(self.page_events_max));
        let mut next = self.next;
        for (i, e) in hit.events().iter().enumerate().skip(hit.start) {
            if indices.len() >= self.page_events_max {
                break;
            }
            next = e.position.next();
            if self.filter.as_ref().is_none_or(|f| f.matches(e)) {
                indices.push(u32::try_from(i).unwrap_or(u32::MAX));
            }
        }
        self.next = next;
        Ok(Some(SubscriptionPage {
            events: PageEvents::shared(hit.page, indices),
            checkpoint: Position(next.0 - 1),
            caught_up: next > head,
        }))
    }

    /// The next page: at once while catching up, or when new events are durable once live. A
    /// filtered page may be empty, to report progress through its checkpoint. Once the engine is
    /// closed and every event up to its head was delivered, [`EngineError::Stopped`].
    pub async fn next_page(&mut self) -> Result<SubscriptionPage, EngineError> {
        loop {
            self.head.borrow_and_update();
            if let Some(page) = self.poll_page()? {
                return Ok(page);
            }
            if self.closed() || self.head.changed().await.is_err() {
                return Err(closed_error());
            }
        }
    }

    fn closed(&self) -> bool {
        self.engine.inner.shared.head.is_closed()
    }

    /// Blocking form of [`Subscription::next_page`]; `None` if nothing came within `timeout`.
    pub fn next_page_blocking(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<SubscriptionPage>, EngineError> {
        if let Some(page) = self.poll_page()? {
            return Ok(Some(page));
        }
        if self.closed() {
            return Err(closed_error());
        }
        self.engine
            .inner
            .shared
            .head
            .wait_past(Position(self.next.0 - 1), timeout);
        match self.poll_page()? {
            None if self.closed() => Err(closed_error()),
            page => Ok(page),
        }
    }
}

/// One step of a stream subscription.
#[derive(Clone, Debug, Default)]
pub struct StreamSubscriptionPage {
    /// Events as a reader that resolves links sees them (see [`Engine::read_stream_resolved`]).
    pub events: Vec<ResolvedEvent>,
    /// The page reached the stream's end as published when it was read.
    pub caught_up: bool,
}

/// A subscription to one stream by revision: a written stream or one the index serves (`$ce-`,
/// `$et-`). It pages with the stream's own reads and waits on the head signal between pages; its
/// cursor moves past every revision a page looked at, so the switch from catching up to live can
/// neither skip nor repeat a revision.
#[derive(Debug)]
pub struct StreamSubscription {
    engine: Engine,
    stream: StreamName,
    next: Revision,
    head: watch::Receiver<Position>,
    page_events_max: usize,
    /// An empty page has said the subscription caught up; later empty reads wait instead.
    told_caught_up: bool,
}

impl Engine {
    /// Subscribes to `stream` from revision `from` (inclusive; `Revision::END`: after its last
    /// published event). A stream that does not exist yet is waited for.
    pub fn subscribe_stream(
        &self,
        stream: &StreamName,
        from: Revision,
    ) -> Result<StreamSubscription, EngineError> {
        let head = self.inner.shared.head.subscribe();
        let next = if from == Revision::END {
            match posting_list(stream) {
                Some((kind, key)) => self.indexed_end(kind, key)?,
                None => match self.read_written_stream(stream, from, Direction::Backwards, 1) {
                    Ok(last) => last
                        .first()
                        .map_or(Revision(0), |e| Revision(e.revision.0.saturating_add(1))),
                    Err(EngineError::Domain(DomainError::StreamNotFound { .. })) => Revision(0),
                    Err(e) => return Err(e),
                },
            }
        } else {
            from
        };
        Ok(StreamSubscription {
            engine: self.clone(),
            stream: stream.clone(),
            next,
            head,
            page_events_max: SUBSCRIPTION_PAGE_EVENTS_MAX,
            told_caught_up: false,
        })
    }
}

impl StreamSubscription {
    /// Caps the events per page (at most [`SUBSCRIPTION_PAGE_EVENTS_MAX`]).
    pub fn with_page_events_max(mut self, max: usize) -> Self {
        self.page_events_max = max.clamp(1, SUBSCRIPTION_PAGE_EVENTS_MAX);
        self
    }

    /// The revision the next page starts at.
    pub fn revision(&self) -> Revision {
        self.next
    }

    /// Reads the page at the cursor and moves the cursor past it.
    fn poll_page(&mut self) -> Result<StreamSubscriptionPage, EngineError> {
        let engine = &self.engine;
        let max = self.page_events_max;
        match posting_list(&self.stream) {
            Some((kind, key)) => {
                let page = match engine.read_indexed(
                    &self.stream,
                    kind,
                    key,
                    self.next,
                    Direction::Forwards,
                    max,
                ) {
                    Ok(page) => page,
                    Err(EngineError::Domain(DomainError::StreamNotFound { .. })) => {
                        return Ok(StreamSubscriptionPage {
                            events: Vec::new(),
                            caught_up: true,
                        });
                    }
                    Err(e) => return Err(e),
                };
                self.next = page.next.unwrap_or(self.next).max(self.next);
                Ok(StreamSubscriptionPage {
                    caught_up: page.end_reached,
                    events: page.events,
                })
            }
            None => {
                let events = match engine.read_written_stream(
                    &self.stream,
                    self.next,
                    Direction::Forwards,
                    max,
                ) {
                    Ok(events) => events,
                    Err(EngineError::Domain(DomainError::StreamNotFound { .. })) => Vec::new(),
                    Err(e) => return Err(e),
                };
                if let Some(last) = events.last() {
                    self.next = Revision(last.revision.0.saturating_add(1));
                }
                Ok(StreamSubscriptionPage {
                    caught_up: events.len() < max,
                    events: events
                        .into_iter()
                        .map(|event| ResolvedEvent { event, link: None })
                        .collect(),
                })
            }
        }
    }

    /// The next page: at once while catching up or when new events are published once live.
    /// The first time a read finds nothing more, an empty page says the subscription caught up.
    /// Once the engine is closed and every published event was delivered,
    /// [`EngineError::Stopped`].
    pub async fn next_page(&mut self) -> Result<StreamSubscriptionPage, EngineError> {
        loop {
            // Marked seen before reading, so a head published after the read wakes the wait.
            self.head.borrow_and_update();
            let page = self.poll_page()?;
            if !page.events.is_empty() || (page.caught_up && !self.told_caught_up) {
                self.told_caught_up |= page.caught_up;
                return Ok(page);
            }
            if !page.caught_up {
                // Everything looked at was hidden by its stream's rules: go on at once.
                continue;
            }
            if self.engine.inner.shared.head.is_closed() || self.head.changed().await.is_err() {
                return Err(closed_error());
            }
        }
    }
}

fn closed_error() -> EngineError {
    EngineError::Stopped("engine closed".to_owned())
}
