//! The live tail: the pages of `$all` just published, read from the log once and shared by
//! every subscription at the head, with a cache per page where the API layers keep each event's
//! encoding, so that a hundred live subscribers cost one log read and one encoding per format
//! per event, not a hundred.
//!
//! The tail is a short run of contiguous pages ending near the head. A subscription whose cursor
//! falls inside it takes that page (a suffix of it); one whose cursor is just past it reads the
//! next page from the log under the tail's lock and adds it, so subscribers woken by the same
//! head change wait for that one read instead of repeating it. A subscription behind the tail
//! (catching up) reads the log on its own, as before. A page holds only published events, which
//! never change, so a shared page is exactly what a read of its own would have returned.

use std::any::{Any, TypeId};
use std::collections::VecDeque;
use std::ops::Deref;
use std::sync::Arc;

use annals_core::{EventRecord, Position};
use parking_lot::Mutex;

/// Most events the tail keeps in all; older pages are dropped first.
pub const LIVE_TAIL_EVENTS_MAX: usize = 16_384;

/// Most pages the tail keeps (one per group commit a subscription read at the head): the
/// subscriptions at the head need only the last few, and a lookup walks them from the newest.
pub const LIVE_TAIL_PAGES_MAX: usize = 64;

/// A subscription whose cursor is at most this many positions behind the head reads through the
/// tail; further behind, it is catching up and reads the log on its own.
pub(crate) const LIVE_TAIL_ADMIT_EVENTS: u64 = 4_096;

/// One page of the tail: published events at consecutive positions, and the encodings of them
/// the API layers have made so far.
pub struct SharedPage {
    events: Vec<EventRecord>,
    /// One cache per type (each API layer and format keeps its own), made on first use.
    caches: Mutex<Vec<(TypeId, Arc<dyn Any + Send + Sync>)>>,
}

impl std::fmt::Debug for SharedPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedPage")
            .field("events", &self.events.len())
            .finish_non_exhaustive()
    }
}

impl SharedPage {
    fn first(&self) -> Option<Position> {
        self.events.first().map(|e| e.position)
    }

    fn last(&self) -> Option<Position> {
        self.events.last().map(|e| e.position)
    }

    /// Every event of the page, in order.
    pub fn events(&self) -> &[EventRecord] {
        &self.events
    }

    /// The page's cache of type `T`, made by `init` on first use. Every subscription that takes
    /// this page sees the same cache, so what it holds (say, each event's encoding in one
    /// format) is made once for all of them.
    pub fn cache<T: Any + Send + Sync>(&self, init: impl FnOnce(&[EventRecord]) -> T) -> Arc<T> {
        let mut caches = self.caches.lock();
        let id = TypeId::of::<T>();
        if let Some(found) = caches
            .iter()
            .find(|(t, _)| *t == id)
            .and_then(|(_, c)| Arc::clone(c).downcast::<T>().ok())
        {
            return found;
        }
        let made = Arc::new(init(&self.events));
        caches.push((id, Arc::clone(&made) as Arc<dyn Any + Send + Sync>));
        made
    }
}

/// The events of a subscription page: its own, or some of a shared page of the tail.
#[derive(Clone, Debug)]
pub struct PageEvents {
    inner: Inner,
}

#[derive(Clone, Debug)]
enum Inner {
    Owned(Vec<EventRecord>),
    /// The events of `page` at `indices` (ascending).
    Shared {
        page: Arc<SharedPage>,
        indices: Vec<u32>,
    },
}

impl Default for PageEvents {
    fn default() -> Self {
        Self::from(Vec::new())
    }
}

impl From<Vec<EventRecord>> for PageEvents {
    fn from(events: Vec<EventRecord>) -> Self {
        Self {
            inner: Inner::Owned(events),
        }
    }
}

impl PageEvents {
    pub(crate) fn shared(page: Arc<SharedPage>, indices: Vec<u32>) -> Self {
        Self {
            inner: Inner::Shared { page, indices },
        }
    }

    pub fn len(&self) -> usize {
        match &self.inner {
            Inner::Owned(v) => v.len(),
            Inner::Shared { indices, .. } => indices.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The events in order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &EventRecord> {
        let (owned, shared): (&[EventRecord], Option<(&SharedPage, &[u32])>) = match &self.inner {
            Inner::Owned(v) => (v, None),
            Inner::Shared { page, indices } => (&[], Some((page, indices))),
        };
        let shared = shared.into_iter().flat_map(|(page, indices)| {
            indices.iter().filter_map(|&i| page.events.get(i as usize))
        });
        // One of the two is empty.
        owned.iter().chain(shared)
    }

    pub fn first(&self) -> Option<&EventRecord> {
        self.iter().next()
    }

    pub fn last(&self) -> Option<&EventRecord> {
        self.iter().next_back()
    }

    /// The shared page these events come from, with each event's index in it; `None` for a
    /// page of the subscription's own.
    pub fn shared_page(&self) -> Option<(&Arc<SharedPage>, &[u32])> {
        match &self.inner {
            Inner::Owned(_) => None,
            Inner::Shared { page, indices } => Some((page, indices)),
        }
    }

    /// The shared page and indices, taken; the events themselves if they are not shared.
    pub fn into_shared(self) -> Result<(Arc<SharedPage>, Vec<u32>), Vec<EventRecord>> {
        match self.inner {
            Inner::Owned(v) => Err(v),
            Inner::Shared { page, indices } => Ok((page, indices)),
        }
    }

    /// The events as a vector of their own (a shared page's are cloned: counted references
    /// to the same bytes).
    pub fn into_vec(self) -> Vec<EventRecord> {
        match self.inner {
            Inner::Owned(v) => v,
            Inner::Shared { page, indices } => indices
                .iter()
                .filter_map(|&i| page.events.get(i as usize).cloned())
                .collect(),
        }
    }
}

impl IntoIterator for PageEvents {
    type Item = EventRecord;
    type IntoIter = std::vec::IntoIter<EventRecord>;
    fn into_iter(self) -> Self::IntoIter {
        self.into_vec().into_iter()
    }
}

/// A shared page and where in it a cursor is.
pub(crate) struct TailHit {
    pub(crate) page: Arc<SharedPage>,
    /// The index of the cursor's position in the page.
    pub(crate) start: usize,
}

impl Deref for TailHit {
    type Target = SharedPage;
    fn deref(&self) -> &SharedPage {
        &self.page
    }
}

/// The tail itself: contiguous pages, oldest first.
#[derive(Debug, Default)]
pub(crate) struct LiveTail {
    pages: Mutex<Pages>,
}

#[derive(Debug, Default)]
struct Pages {
    pages: VecDeque<Arc<SharedPage>>,
    /// Events in `pages`.
    held: usize,
}

impl LiveTail {
    /// The shared page holding `next`, reading it with `read` (the published events from
    /// `next` on, unfiltered) if `next` is just past the tail or the tail is empty. `None` when
    /// `next` is behind the tail (the caller reads on its own) or the read found nothing.
    pub(crate) fn page_at<E>(
        &self,
        next: Position,
        read: impl FnOnce(Position) -> Result<Vec<EventRecord>, E>,
    ) -> Result<Option<TailHit>, E> {
        let mut tail = self.pages.lock();
        for page in tail.pages.iter().rev() {
            let (Some(first), Some(last)) = (page.first(), page.last()) else {
                continue;
            };
            if next > last {
                break;
            }
            if next >= first {
                let start = usize::try_from(next.0 - first.0).unwrap_or(usize::MAX);
                return Ok((start < page.events.len()).then(|| TailHit {
                    page: Arc::clone(page),
                    start,
                }));
            }
        }
        let tail_end = tail.pages.back().and_then(|p| p.last());
        match tail_end {
            Some(end) if next <= end => return Ok(None),
            // A gap between the tail and the cursor: the tail is stale, start again here.
            Some(end) if next > end.next() => {
                tail.pages.clear();
                tail.held = 0;
            }
            _ => {}
        }
        // Read while holding the lock: the subscriptions woken by the same head change wait for
        // this one read and then share it.
        let events = read(next)?;
        if events.first().map(|e| e.position) != Some(next) {
            return Ok(None);
        }
        let page = Arc::new(SharedPage {
            events,
            caches: Mutex::new(Vec::new()),
        });
        tail.held += page.events.len();
        tail.pages.push_back(Arc::clone(&page));
        while (tail.held > LIVE_TAIL_EVENTS_MAX || tail.pages.len() > LIVE_TAIL_PAGES_MAX)
            && tail.pages.len() > 1
        {
            if let Some(old) = tail.pages.pop_front() {
                tail.held -= old.events.len();
            }
        }
        Ok(Some(TailHit { page, start: 0 }))
    }
}
