//! Catch-up and live subscriptions to `$all`, on one code path.
//!
//! A subscription is a cursor: it pages through the log from its position and, at the head, waits
//! for the head signal and pages again. There is no push buffer a writer could fill, so a slow
//! subscriber never holds the writer; it only reads later. Because every page starts exactly at
//! the cursor, the switch from catching up to live can neither skip nor repeat a position.

use std::time::Duration;

use annals_core::{Direction, EventRecord, Filter, Position};
use tokio::sync::watch;

use crate::engine::Engine;
use crate::error::EngineError;

/// Most events one subscription page holds.
pub const SUBSCRIPTION_PAGE_EVENTS_MAX: usize = 4_096;

/// One step of a subscription.
#[derive(Clone, Debug, Default)]
pub struct SubscriptionPage {
    pub events: Vec<EventRecord>,
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

    /// Reads the next page if anything is past the cursor.
    fn poll_page(&mut self) -> Result<Option<SubscriptionPage>, EngineError> {
        let head = self.engine.head();
        if self.next > head {
            return Ok(None);
        }
        let page = self.engine.read_all(
            self.next,
            Direction::Forwards,
            self.page_events_max,
            self.filter.as_ref(),
        )?;
        self.next = page.next.max(self.next);
        Ok(Some(SubscriptionPage {
            events: page.events,
            checkpoint: Position(self.next.0 - 1),
            caught_up: page.end_reached,
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

fn closed_error() -> EngineError {
    EngineError::Stopped("engine closed".to_owned())
}
