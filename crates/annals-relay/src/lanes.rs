//! The order a relay's events go out in, and how far it may checkpoint. Pure: no I/O, no clock
//! (calls that depend on time take `now`), so every rule is tested on its own.
//!
//! Events wait in lanes: one per stream (`order = "stream"`), or one for everything
//! (`order = "global"`). A lane has at most one event out at a time, its oldest, so a lane's
//! events reach the broker in order, while different lanes go out side by side. A failed event
//! stays at the front of its lane, which sleeps until its retry time. The checkpoint is the
//! newest position below which every read event is sent or parked: a restart from it sends
//! again only what may not have arrived (never skips one).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use annals_core::{EventRecord, Timestamp};

use crate::config::Order;

/// An event waiting in its lane.
#[derive(Clone, Debug)]
pub(crate) struct Pending {
    pub(crate) event: Arc<EventRecord>,
    /// Sends the broker refused so far (not counting sends that never reached it).
    pub(crate) refusals: u32,
}

#[derive(Debug, Default)]
struct Lane {
    queue: VecDeque<Pending>,
    /// Its front event is out.
    busy: bool,
    /// Sending in turn: this many of its front events are out.
    out: usize,
    /// Asleep until this time (its front event failed).
    asleep: bool,
}

/// The lanes of one relay.
#[derive(Debug)]
pub(crate) struct Lanes {
    order: Order,
    lanes: HashMap<Arc<str>, Lane>,
    /// Lanes with an event to send, not busy and awake, in the order they became so.
    ready: VecDeque<Arc<str>>,
    sleeping: BinaryHeap<Reverse<(Instant, Arc<str>)>>,
    /// Events in lanes (waiting or out).
    queued: usize,
    /// Every read event the checkpoint has not passed, in position order: (position, done,
    /// created).
    unsettled: VecDeque<(u64, bool, Timestamp)>,
    /// Every position up to here was read (queued, settled, or filtered out).
    read_through: u64,
    /// The one lane's key under `order = "global"`.
    global_key: Arc<str>,
    /// Sending in turn: positions answered before an earlier send was.
    arrived: Vec<u64>,
}

impl Lanes {
    /// Lanes for a relay whose checkpoint is `checkpoint` (0: nothing sent yet).
    pub(crate) fn new(order: Order, checkpoint: u64) -> Self {
        Self {
            order,
            lanes: HashMap::new(),
            ready: VecDeque::new(),
            sleeping: BinaryHeap::new(),
            queued: 0,
            unsettled: VecDeque::new(),
            read_through: checkpoint,
            global_key: Arc::from(""),
            arrived: Vec::new(),
        }
    }

    fn key(&self, event: &EventRecord) -> Arc<str> {
        match self.order {
            Order::Stream => Arc::clone(event.stream.as_arc()),
            Order::Global => Arc::clone(&self.global_key),
        }
    }

    /// Events in lanes, waiting or out.
    pub(crate) fn queued(&self) -> usize {
        self.queued
    }

    /// The next read event, after every event pushed before it.
    pub(crate) fn push(&mut self, event: Arc<EventRecord>) {
        let key = self.key(&event);
        self.unsettled
            .push_back((event.position.0, false, event.created));
        self.read_through = self.read_through.max(event.position.0);
        self.queued += 1;
        let lane = self.lanes.entry(Arc::clone(&key)).or_default();
        lane.queue.push_back(Pending { event, refusals: 0 });
        if lane.queue.len() == 1 && !lane.busy && !lane.asleep {
            self.ready.push_back(key);
        }
    }

    /// Every position up to `position` was read: what was not pushed was filtered out.
    pub(crate) fn read_through(&mut self, position: u64) {
        self.read_through = self.read_through.max(position);
    }

    /// Wakes the lanes whose time came.
    pub(crate) fn wake(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.sleeping.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, key))) = self.sleeping.pop() else {
                break;
            };
            if let Some(lane) = self.lanes.get_mut(&key) {
                lane.asleep = false;
                if !lane.busy && !lane.queue.is_empty() {
                    self.ready.push_back(key);
                }
            }
        }
    }

    /// When the next sleeping lane wakes.
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        self.sleeping.peek().map(|Reverse((at, _))| *at)
    }

    /// The front event of the next ready lane, now out.
    pub(crate) fn take(&mut self) -> Option<(Arc<str>, Pending)> {
        while let Some(key) = self.ready.pop_front() {
            let Some(lane) = self.lanes.get_mut(&key) else {
                continue;
            };
            if lane.busy || lane.asleep {
                continue;
            }
            let Some(front) = lane.queue.front() else {
                continue;
            };
            let front = front.clone();
            lane.busy = true;
            return Some((key, front));
        }
        None
    }

    /// The lane's front event arrived (or was parked): it is done with.
    pub(crate) fn done(&mut self, key: &Arc<str>) -> Option<Pending> {
        let lane = self.lanes.get_mut(key)?;
        lane.busy = false;
        let front = lane.queue.pop_front()?;
        self.queued -= 1;
        if lane.queue.is_empty() {
            if !lane.asleep {
                self.lanes.remove(key);
            }
        } else if !lane.asleep {
            self.ready.push_back(Arc::clone(key));
        }
        self.settle(front.event.position.0);
        Some(front)
    }

    /// The lane's front event failed: it stays at the front (`refused`: the broker refused it,
    /// which counts towards the relay's attempts) and the lane sleeps until `until`. Returns the
    /// front's refusals so far.
    pub(crate) fn failed(&mut self, key: &Arc<str>, refused: bool, until: Instant) -> u32 {
        let Some(lane) = self.lanes.get_mut(key) else {
            return 0;
        };
        lane.busy = false;
        let refusals = match lane.queue.front_mut() {
            Some(front) => {
                if refused {
                    front.refusals += 1;
                }
                front.refusals
            }
            None => 0,
        };
        if !lane.asleep {
            lane.asleep = true;
            self.sleeping.push(Reverse((until, Arc::clone(key))));
        }
        refusals
    }

    /// Sending in turn (global order, several out at once, each taken by the broker only after
    /// the one before it): the lane's next event not yet out.
    pub(crate) fn take_in_turn(&mut self) -> Option<(Arc<str>, Pending)> {
        // Lanes are not taken in turn by readiness; what `ready` gathered is of no use here.
        self.ready.clear();
        let key = Arc::clone(&self.global_key);
        let lane = self.lanes.get_mut(&key)?;
        if lane.asleep {
            return None;
        }
        let next = lane.queue.get(lane.out)?.clone();
        lane.out += 1;
        Some((key, next))
    }

    /// Sending in turn: the event at `position` arrived. Events arrive in order, so it is the
    /// lane's front; if an answer overtook an earlier one, it is kept until that one arrives.
    pub(crate) fn done_in_turn(&mut self, key: &Arc<str>, position: u64) {
        self.arrived.push(position);
        loop {
            let Some(lane) = self.lanes.get_mut(key) else {
                return;
            };
            let Some(front) = lane.queue.front() else {
                return;
            };
            let front = front.event.position.0;
            let Some(at) = self.arrived.iter().position(|p| *p == front) else {
                return;
            };
            self.arrived.swap_remove(at);
            lane.out = lane.out.saturating_sub(1);
            lane.queue.pop_front();
            self.queued -= 1;
            if lane.queue.is_empty() && !lane.asleep {
                self.lanes.remove(key);
            }
            self.settle(front);
        }
    }

    /// Sending in turn: a send failed and every send was answered; everything not arrived goes
    /// back, the front first, and the lane sleeps until `until` (`refused` counts towards the
    /// front's attempts). Returns the front's refusals.
    pub(crate) fn failed_in_turn(&mut self, key: &Arc<str>, refused: bool, until: Instant) -> u32 {
        self.arrived.clear();
        if let Some(lane) = self.lanes.get_mut(key) {
            lane.out = 0;
        }
        self.failed(key, refused, until)
    }

    /// Refusals so far of the lane's front event.
    pub(crate) fn refusals(&self, key: &Arc<str>) -> u32 {
        self.lanes
            .get(key)
            .and_then(|l| l.queue.front())
            .map_or(0, |p| p.refusals)
    }

    fn settle(&mut self, position: u64) {
        let guess = self.unsettled.front().and_then(|(front, _, _)| {
            let at = usize::try_from(position.checked_sub(*front)?).ok()?;
            (self.unsettled.get(at)?.0 == position).then_some(at)
        });
        let at = guess.or_else(|| {
            self.unsettled
                .binary_search_by_key(&position, |(p, _, _)| *p)
                .ok()
        });
        if let Some((_, done, _)) = at.and_then(|at| self.unsettled.get_mut(at)) {
            *done = true;
        }
        while let Some((_, true, _)) = self.unsettled.front() {
            self.unsettled.pop_front();
        }
    }

    /// The newest position below which every read event is done with.
    pub(crate) fn checkpoint(&self) -> u64 {
        match self.unsettled.front() {
            Some((position, _, _)) => position.saturating_sub(1),
            None => self.read_through,
        }
    }

    /// When the oldest event not yet done with was written.
    pub(crate) fn oldest_pending(&self) -> Option<Timestamp> {
        self.unsettled.front().map(|(_, _, created)| *created)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use annals_core::{ContentType, EventType, Position, Revision, StreamName};
    use bytes::Bytes;
    use uuid::Uuid;

    use super::*;

    fn event(position: u64, stream: &str) -> Arc<EventRecord> {
        Arc::new(EventRecord {
            id: Uuid::from_u128(u128::from(position)),
            stream: StreamName::new(stream).unwrap(),
            revision: Revision(position),
            position: Position(position),
            event_type: EventType::new("T").unwrap(),
            content_type: ContentType::Json,
            created: Timestamp(0),
            data: Bytes::new(),
            metadata: Bytes::new(),
        })
    }

    #[test]
    fn a_stream_has_one_event_out_and_streams_go_side_by_side() {
        let mut l = Lanes::new(Order::Stream, 0);
        l.push(event(1, "a-1"));
        l.push(event(2, "a-1"));
        l.push(event(3, "b-1"));
        let (ka, first) = l.take().unwrap();
        assert_eq!(first.event.position.0, 1);
        let (kb, other) = l.take().unwrap();
        assert_eq!(other.event.position.0, 3);
        assert!(l.take().is_none(), "a-1's second event waits for its first");
        l.done(&kb);
        assert_eq!(l.checkpoint(), 0, "position 1 is still out");
        l.done(&ka);
        assert_eq!(l.checkpoint(), 1);
        let (ka, second) = l.take().unwrap();
        assert_eq!(second.event.position.0, 2);
        l.done(&ka);
        assert_eq!(l.checkpoint(), 3);
        assert_eq!(l.queued(), 0);
    }

    #[test]
    fn a_failed_event_keeps_its_place_and_its_lane_sleeps() {
        let t0 = Instant::now();
        let mut l = Lanes::new(Order::Stream, 10);
        l.push(event(11, "a-1"));
        l.push(event(12, "a-1"));
        l.push(event(13, "b-1"));
        let (ka, _) = l.take().unwrap();
        let later = t0 + Duration::from_millis(100);
        assert_eq!(l.failed(&ka, true, later), 1);
        let (kb, other) = l.take().unwrap();
        assert_eq!(other.event.position.0, 13);
        l.done(&kb);
        assert!(l.take().is_none(), "a-1 sleeps");
        assert_eq!(l.next_wake(), Some(later));
        l.wake(t0);
        assert!(l.take().is_none());
        l.wake(later);
        let (ka, again) = l.take().unwrap();
        assert_eq!((again.event.position.0, again.refusals), (11, 1));
        assert_eq!(l.checkpoint(), 10);
        l.done(&ka);
        assert_eq!(l.checkpoint(), 11);
    }

    #[test]
    fn global_order_has_one_event_out() {
        let mut l = Lanes::new(Order::Global, 0);
        l.push(event(1, "a-1"));
        l.push(event(2, "b-1"));
        let (k, first) = l.take().unwrap();
        assert_eq!(first.event.position.0, 1);
        assert!(l.take().is_none());
        l.done(&k);
        assert_eq!(l.take().unwrap().1.event.position.0, 2);
    }

    #[test]
    fn filtered_positions_move_the_checkpoint() {
        let mut l = Lanes::new(Order::Stream, 0);
        l.read_through(50);
        assert_eq!(l.checkpoint(), 50);
        l.push(event(60, "a-1"));
        l.read_through(70);
        assert_eq!(l.checkpoint(), 59);
        let (k, _) = l.take().unwrap();
        l.done(&k);
        assert_eq!(l.checkpoint(), 70);
    }
}
