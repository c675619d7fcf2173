//! The state machine of one persistent-subscription group: which events wait, which are in flight
//! to which consumer and since when, how often each was retried, which are parked, and how far
//! the group may checkpoint.
//!
//! It is pure: no I/O, no clock (every call that depends on time takes `now`), no threads. The
//! runtime around it reads the source, offers events ([`Group::offer`]), asks what to send
//! ([`Group::dispatch`]), passes acks, nacks and ticks on, writes what [`Group::take_parked`]
//! returns to the parked stream and the position [`Group::checkpoint_due`] names to the
//! checkpoint stream. So every rule here is tested without a server, against a reference model.
//!
//! Rules, as KurrentDB's clients expect them:
//! - an event is handled when it is acked, skipped or stopped (`Nack` with `Skip` or `Stop`),
//!   parked, or conflated away; until then it is delivered again (at least once);
//! - a retry (a `Nack` with `Retry` or `Unknown`, a timeout, or its consumer leaving) delivers the
//!   event again with its retry count one higher, unless the count already reached
//!   `max_retry_count`: then the event is parked instead;
//! - the checkpoint is the newest position below which every offered event is handled, so a
//!   restart from it delivers again only what was not handled (never skips one).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::settings::{GroupSettings, Strategy};

/// A consumer of a group, as the runtime numbers them.
pub type ConsumerId = u64;

/// Number of affinity buckets the pinned strategies spread keys over; each bucket belongs to
/// one consumer while that consumer is connected.
const PIN_BUCKETS: u32 = 1_024;

/// One event as the group sees it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Message<T> {
    /// Where the event is in the group's source (a position for `$all`, a revision for a
    /// stream); strictly increasing in the order events are offered.
    pub seq: u64,
    /// The id a consumer acks it by (the link's for a resolved link, else the event's).
    pub id: Uuid,
    /// The stream the event belongs to: the `Pinned` key, and what conflation groups by.
    pub stream: annals_core::StreamName,
    /// The event's correlation id, if its metadata has one: the `PinnedByCorrelation` key.
    pub correlation: Option<String>,
    /// What the runtime carries along (the event itself).
    pub payload: T,
}

/// An event handed to a consumer.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Delivery<T> {
    pub consumer: ConsumerId,
    /// Deliveries of this event before this one.
    pub retry_count: u32,
    pub message: Message<T>,
}

/// Why an event was parked.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ParkReason {
    /// A consumer asked for it (`Nack` with `Park`), with its reason text.
    Nacked(String),
    /// It was retried `max_retry_count` times and failed again.
    MaxRetries,
}

/// An event to write to the group's parked stream; the group counts it as handled.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Parked<T> {
    pub message: Message<T>,
    pub retry_count: u32,
    pub reason: ParkReason,
}

/// What a consumer asks for an event it could not handle, as in KurrentDB's `Nack`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum NackAction {
    Unknown,
    Park,
    Retry,
    Skip,
    Stop,
}

/// Refusals of a group.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    #[error("the group has its maximum of {max} consumers")]
    MaxConsumersReached { max: usize },
    #[error("consumer {0} is already connected")]
    AlreadyConnected(ConsumerId),
    #[error("an event offered at {seq} is not after the last one offered, {last}")]
    OutOfOrder { seq: u64, last: u64 },
}

/// One connected consumer.
#[derive(Clone, Debug)]
struct Consumer {
    id: ConsumerId,
    /// Most events in flight to it at once (its `buffer_size`).
    capacity: usize,
    in_flight: usize,
    /// Events ever delivered to it, and acked by it.
    delivered: u64,
    acked: u64,
}

impl Consumer {
    fn has_room(&self) -> bool {
        self.in_flight < self.capacity
    }
}

/// An event waiting for a consumer.
#[derive(Clone, Debug)]
struct Waiting<T> {
    message: Message<T>,
    retry_count: u32,
}

/// An event in flight to a consumer.
#[derive(Clone, Debug)]
struct InFlight<T> {
    message: Message<T>,
    consumer: ConsumerId,
    retry_count: u32,
    deadline: Instant,
}

/// The events in flight under one ack id: one, unless events share an id (links to one
/// event, or the same id appended to two streams). No allocation for the usual one.
#[derive(Debug)]
struct SameId<T> {
    first: InFlight<T>,
    more: Vec<InFlight<T>>,
}

impl<T> SameId<T> {
    fn iter(&self) -> impl Iterator<Item = &InFlight<T>> {
        std::iter::once(&self.first).chain(self.more.iter())
    }

    /// Removes the entry at `index` of [`Self::iter`]'s order; `None` when that leaves none
    /// (the caller drops the whole `SameId`).
    fn remove(mut self, index: usize) -> (InFlight<T>, Option<Self>) {
        if index == 0 {
            if self.more.is_empty() {
                return (self.first, None);
            }
            let next = self.more.remove(0);
            let taken = std::mem::replace(&mut self.first, next);
            (taken, Some(self))
        } else {
            let taken = self.more.remove(index - 1);
            (taken, Some(self))
        }
    }
}

/// The hash of the group's hot maps: fast, and seeded, since event ids come from clients.
type FastHash = foldhash::fast::RandomState;

/// What one consumer looks like from the outside, for `GetInfo`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ConsumerInfo {
    pub id: ConsumerId,
    pub capacity: usize,
    pub in_flight: usize,
    pub delivered: u64,
    pub acked: u64,
}

/// Counters of a group's life since it was (re)started.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct GroupCounts {
    pub offered: u64,
    pub delivered: u64,
    pub acked: u64,
    pub skipped: u64,
    pub parked: u64,
    pub conflated: u64,
    pub retried: u64,
}

/// The state of one group; see the module documentation.
#[derive(Debug)]
pub struct Group<T> {
    settings: GroupSettings,
    consumers: Vec<Consumer>,
    /// Where round-robin looks first.
    next_consumer: usize,
    /// Pinned strategies: which consumer owns each affinity bucket.
    pins: HashMap<u32, ConsumerId, FastHash>,
    /// Events to deliver again, in `seq` order, before any fresh one.
    retries: VecDeque<Waiting<T>>,
    /// Events never delivered yet, in `seq` order.
    fresh: VecDeque<Waiting<T>>,
    /// Events in flight, by the id they are acked with, so an ack finds its event at once.
    in_flight: HashMap<Uuid, SameId<T>, FastHash>,
    /// How many events `in_flight` holds.
    in_flight_count: usize,
    /// Every offered event the checkpoint has not passed, in `seq` order (as offered): `true`
    /// once handled.
    unsettled: VecDeque<(u64, bool)>,
    /// The newest `seq` below which every offered event is handled.
    handled_through: Option<u64>,
    /// Events the checkpoint candidate moved over since the last checkpoint.
    handled_since_checkpoint: u64,
    /// `handled_since_checkpoint` when the checkpoint being written was asked for: what that
    /// checkpoint covers, while events handled during its write count towards the next one.
    counted_by_asked_checkpoint: Option<u64>,
    last_checkpoint: Option<u64>,
    last_checkpoint_at: Instant,
    last_offered: Option<u64>,
    /// How far the source's head is ahead of the newest offered event, in events.
    behind: u64,
    parked: Vec<Parked<T>>,
    counts: GroupCounts,
}

impl<T: Clone> Group<T> {
    /// A group that starts after `checkpoint` (nothing handled yet when `None`); `now` starts the
    /// clock of time-based checkpoints.
    pub fn new(settings: GroupSettings, checkpoint: Option<u64>, now: Instant) -> Self {
        Self {
            settings,
            consumers: Vec::new(),
            next_consumer: 0,
            pins: HashMap::default(),
            retries: VecDeque::new(),
            fresh: VecDeque::new(),
            in_flight: HashMap::default(),
            in_flight_count: 0,
            unsettled: VecDeque::new(),
            handled_through: checkpoint,
            handled_since_checkpoint: 0,
            counted_by_asked_checkpoint: None,
            last_checkpoint: checkpoint,
            last_checkpoint_at: now,
            last_offered: checkpoint,
            behind: 0,
            parked: Vec::new(),
            counts: GroupCounts::default(),
        }
    }

    pub fn settings(&self) -> &GroupSettings {
        &self.settings
    }

    /// A consumer joins with room for `capacity` events in flight.
    pub fn connect(&mut self, id: ConsumerId, capacity: usize) -> Result<(), GroupError> {
        if self.consumers.iter().any(|c| c.id == id) {
            return Err(GroupError::AlreadyConnected(id));
        }
        let max = self.settings.max_subscriber_count;
        if max > 0 && self.consumers.len() >= max {
            return Err(GroupError::MaxConsumersReached { max });
        }
        self.consumers.push(Consumer {
            id,
            capacity,
            in_flight: 0,
            delivered: 0,
            acked: 0,
        });
        Ok(())
    }

    /// A consumer leaves: what it had in flight is retried (or parked), its pins are freed.
    pub fn disconnect(&mut self, id: ConsumerId) {
        self.consumers.retain(|c| c.id != id);
        self.pins.retain(|_, owner| *owner != id);
        for f in self.remove_in_flight_where(|f| f.consumer == id) {
            self.retry(f.message, f.retry_count);
        }
        if self.next_consumer >= self.consumers.len() {
            self.next_consumer = 0;
        }
    }

    /// The source's next event. `behind` is how many events the source's head is ahead of this
    /// one (what conflation looks at).
    pub fn offer(&mut self, message: Message<T>, behind: u64) -> Result<(), GroupError> {
        if let Some(last) = self.last_offered
            && message.seq <= last
        {
            return Err(GroupError::OutOfOrder {
                seq: message.seq,
                last,
            });
        }
        self.last_offered = Some(message.seq);
        self.behind = behind;
        self.unsettled.push_back((message.seq, false));
        self.counts.offered += 1;
        self.fresh.push_back(Waiting {
            message,
            retry_count: 0,
        });
        Ok(())
    }

    /// A parked event put back (`ReplayParked`): delivered before fresh events with a retry
    /// count of 0. It was handled when it was parked, so the checkpoint does not wait for it; if
    /// it fails again it is parked again. Ignored if an event with its `seq` already waits or is
    /// in flight.
    pub fn replay(&mut self, message: Message<T>) {
        let seq = message.seq;
        let present = self
            .in_flight
            .values()
            .any(|same| same.iter().any(|f| f.message.seq == seq))
            || self.retries.iter().any(|w| w.message.seq == seq)
            || self.fresh.iter().any(|w| w.message.seq == seq);
        if present {
            return;
        }
        let at = self
            .retries
            .iter()
            .position(|w| w.message.seq > seq)
            .unwrap_or(self.retries.len());
        self.retries.insert(
            at,
            Waiting {
                message,
                retry_count: 0,
            },
        );
    }

    /// Events waiting for a consumer (fresh and retries): what bounds how much the runtime
    /// reads ahead.
    pub fn waiting(&self) -> usize {
        self.fresh.len() + self.retries.len()
    }

    /// Hands waiting events to consumers with room, retries first, per the strategy. Pinned
    /// strategies keep one stream's (or correlation's) events in order: an event whose owner
    /// has no room waits, and so do the later events of its bucket.
    pub fn dispatch(&mut self, now: Instant) -> Vec<Delivery<T>> {
        self.conflate();
        let mut out = Vec::new();
        let retries = std::mem::take(&mut self.retries);
        self.retries = self.dispatch_queue(retries, now, &mut out);
        let fresh = std::mem::take(&mut self.fresh);
        self.fresh = self.dispatch_queue(fresh, now, &mut out);
        out
    }

    fn dispatch_queue(
        &mut self,
        queue: VecDeque<Waiting<T>>,
        now: Instant,
        out: &mut Vec<Delivery<T>>,
    ) -> VecDeque<Waiting<T>> {
        // Without affinity, events go out in order to whichever consumer has room: stop at the
        // first that finds none, leaving the rest in place (this runs after every ack).
        if !self.settings.strategy.is_pinned() {
            let mut queue = queue;
            while !queue.is_empty() {
                let Some(consumer) = self.free_consumer() else {
                    break;
                };
                if let Some(waiting) = queue.pop_front() {
                    self.send(consumer, waiting, now, out);
                }
            }
            return queue;
        }
        if !self.consumers.iter().any(Consumer::has_room) {
            return queue;
        }
        let mut kept = VecDeque::new();
        let mut blocked_buckets: Vec<u32> = Vec::new();
        for waiting in queue {
            let bucket = self.bucket(&waiting.message);
            let target = match bucket {
                Some(b) if blocked_buckets.contains(&b) => None,
                Some(b) => self.pinned_consumer(b),
                None => self.free_consumer(),
            };
            match target {
                Some(consumer) => self.send(consumer, waiting, now, out),
                None => {
                    if let Some(b) = bucket
                        && !blocked_buckets.contains(&b)
                    {
                        blocked_buckets.push(b);
                    }
                    kept.push_back(waiting);
                }
            }
        }
        kept
    }

    /// The affinity bucket of a message under a pinned strategy.
    fn bucket(&self, message: &Message<T>) -> Option<u32> {
        let key = match self.settings.strategy {
            Strategy::Pinned => message.stream.as_str(),
            Strategy::PinnedByCorrelation => message
                .correlation
                .as_deref()
                .unwrap_or(message.stream.as_str()),
            _ => return None,
        };
        Some(crc32c::crc32c(key.as_bytes()) % PIN_BUCKETS)
    }

    /// The bucket's owner if it has room; an unowned bucket goes to the consumer owning the
    /// fewest buckets (the first connected among equals).
    fn pinned_consumer(&mut self, bucket: u32) -> Option<usize> {
        let owner = match self.pins.get(&bucket) {
            Some(owner) => *owner,
            None => {
                let owner = self
                    .consumers
                    .iter()
                    .min_by_key(|c| self.pins.values().filter(|o| **o == c.id).count())?
                    .id;
                self.pins.insert(bucket, owner);
                owner
            }
        };
        self.consumers
            .iter()
            .position(|c| c.id == owner && c.has_room())
    }

    /// A consumer with room: the first for `DispatchToSingle`, the next in turn for
    /// `RoundRobin`.
    fn free_consumer(&mut self) -> Option<usize> {
        let n = self.consumers.len();
        let start = match self.settings.strategy {
            Strategy::RoundRobin => self.next_consumer,
            _ => 0,
        };
        let found = (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| self.consumers.get(i).is_some_and(Consumer::has_room))?;
        if self.settings.strategy == Strategy::RoundRobin {
            self.next_consumer = (found + 1) % n;
        }
        Some(found)
    }

    fn send(
        &mut self,
        consumer_index: usize,
        waiting: Waiting<T>,
        now: Instant,
        out: &mut Vec<Delivery<T>>,
    ) {
        let Some(consumer) = self.consumers.get_mut(consumer_index) else {
            return;
        };
        consumer.in_flight += 1;
        consumer.delivered += 1;
        self.counts.delivered += 1;
        out.push(Delivery {
            consumer: consumer.id,
            retry_count: waiting.retry_count,
            message: waiting.message.clone(),
        });
        let f = InFlight {
            consumer: consumer.id,
            retry_count: waiting.retry_count,
            deadline: now + self.settings.message_timeout,
            message: waiting.message,
        };
        self.in_flight_count += 1;
        match self.in_flight.entry(f.message.id) {
            std::collections::hash_map::Entry::Occupied(mut same) => same.get_mut().more.push(f),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(SameId {
                    first: f,
                    more: Vec::new(),
                });
            }
        }
    }

    /// Conflation: while the group is further behind than `conflate_behind`, of the fresh
    /// events of one stream only the newest is kept; the others are handled without delivery.
    fn conflate(&mut self) {
        let Some(limit) = self.settings.conflate_behind else {
            return;
        };
        if self.behind <= limit || self.fresh.len() < 2 {
            return;
        }
        let mut newest: HashMap<&str, u64, FastHash> = HashMap::default();
        for w in &self.fresh {
            newest.insert(w.message.stream.as_str(), w.message.seq);
        }
        let superseded: Vec<u64> = self
            .fresh
            .iter()
            .filter(|w| newest.get(w.message.stream.as_str()) != Some(&w.message.seq))
            .map(|w| w.message.seq)
            .collect();
        if superseded.is_empty() {
            return;
        }
        let gone: std::collections::HashSet<u64> = superseded.iter().copied().collect();
        self.fresh.retain(|w| !gone.contains(&w.message.seq));
        for seq in superseded {
            self.counts.conflated += 1;
            self.settle(seq);
        }
    }

    /// The in-flight event `id` of `consumer` (the oldest, should two share an id).
    fn take_in_flight(&mut self, consumer: ConsumerId, id: Uuid) -> Option<InFlight<T>> {
        let same = self.in_flight.get(&id)?;
        let (index, _) = same
            .iter()
            .enumerate()
            .filter(|(_, f)| f.consumer == consumer)
            .min_by_key(|(_, f)| f.message.seq)?;
        let f = self.remove_in_flight(id, index)?;
        if let Some(c) = self.consumers.iter_mut().find(|c| c.id == consumer) {
            c.in_flight = c.in_flight.saturating_sub(1);
        }
        Some(f)
    }

    /// Takes the `index`th event in flight under `id` out.
    fn remove_in_flight(&mut self, id: Uuid, index: usize) -> Option<InFlight<T>> {
        let same = self.in_flight.remove(&id)?;
        let (f, rest) = same.remove(index);
        if let Some(rest) = rest {
            self.in_flight.insert(id, rest);
        }
        self.in_flight_count -= 1;
        Some(f)
    }

    /// Takes every in-flight event `pick` chooses out, in `seq` order. Consumers' in-flight
    /// counts are the caller's to fix.
    fn remove_in_flight_where(&mut self, pick: impl Fn(&InFlight<T>) -> bool) -> Vec<InFlight<T>> {
        let mut picked: Vec<(u64, Uuid)> = self
            .in_flight
            .iter()
            .flat_map(|(id, same)| {
                same.iter()
                    .filter(|f| pick(f))
                    .map(|f| (f.message.seq, *id))
            })
            .collect();
        picked.sort_unstable();
        let mut out = Vec::with_capacity(picked.len());
        for (seq, id) in picked {
            let index = self
                .in_flight
                .get(&id)
                .and_then(|same| same.iter().position(|f| f.message.seq == seq));
            if let Some(f) = index.and_then(|i| self.remove_in_flight(id, i)) {
                out.push(f);
            }
        }
        out
    }

    /// `consumer` handled these events. Ids it does not hold are ignored (a late ack of an
    /// event that timed out and went elsewhere).
    pub fn ack(&mut self, consumer: ConsumerId, ids: &[Uuid]) {
        for id in ids {
            if let Some(f) = self.take_in_flight(consumer, *id) {
                if let Some(c) = self.consumers.iter_mut().find(|c| c.id == consumer) {
                    c.acked += 1;
                }
                self.counts.acked += 1;
                self.settle(f.message.seq);
            }
        }
    }

    /// `consumer` could not handle these events; `action` says what to do with them.
    pub fn nack(&mut self, consumer: ConsumerId, ids: &[Uuid], action: NackAction, reason: &str) {
        for id in ids {
            let Some(f) = self.take_in_flight(consumer, *id) else {
                continue;
            };
            match action {
                NackAction::Park => self.park(
                    f.message,
                    f.retry_count,
                    ParkReason::Nacked(reason.to_owned()),
                ),
                NackAction::Retry | NackAction::Unknown => self.retry(f.message, f.retry_count),
                NackAction::Skip | NackAction::Stop => {
                    self.counts.skipped += 1;
                    self.settle(f.message.seq);
                }
            }
        }
    }

    /// Retries (or parks) every event in flight past its deadline.
    pub fn tick(&mut self, now: Instant) {
        for f in self.remove_in_flight_where(|f| f.deadline <= now) {
            if let Some(c) = self.consumers.iter_mut().find(|c| c.id == f.consumer) {
                c.in_flight = c.in_flight.saturating_sub(1);
            }
            self.retry(f.message, f.retry_count);
        }
    }

    fn retry(&mut self, message: Message<T>, retry_count: u32) {
        if retry_count >= self.settings.max_retry_count {
            self.park(message, retry_count, ParkReason::MaxRetries);
            return;
        }
        self.counts.retried += 1;
        let waiting = Waiting {
            message,
            retry_count: retry_count + 1,
        };
        // Retries keep `seq` order, so a stream's events are retried in the order they came.
        let at = self
            .retries
            .iter()
            .position(|w| w.message.seq > waiting.message.seq)
            .unwrap_or(self.retries.len());
        self.retries.insert(at, waiting);
    }

    fn park(&mut self, message: Message<T>, retry_count: u32, reason: ParkReason) {
        self.counts.parked += 1;
        self.settle(message.seq);
        self.parked.push(Parked {
            message,
            retry_count,
            reason,
        });
    }

    /// Marks `seq` handled and moves the checkpoint candidate over every handled event at the
    /// front.
    fn settle(&mut self, seq: u64) {
        // A stream's seqs are dense, so the event is usually where its distance from the front
        // says; else (a filtered `$all`) it is searched for.
        let guess = self.unsettled.front().and_then(|(front, _)| {
            let at = usize::try_from(seq.checked_sub(*front)?).ok()?;
            (self.unsettled.get(at)?.0 == seq).then_some(at)
        });
        let at = guess.or_else(|| self.unsettled.binary_search_by_key(&seq, |(s, _)| *s).ok());
        if let Some((_, handled)) = at.and_then(|at| self.unsettled.get_mut(at)) {
            *handled = true;
        }
        while let Some(&(seq, true)) = self.unsettled.front() {
            self.unsettled.pop_front();
            self.handled_through = Some(seq);
            self.handled_since_checkpoint += 1;
        }
    }

    /// The events parked since the last call, for the runtime to write to the parked stream.
    pub fn take_parked(&mut self) -> Vec<Parked<T>> {
        std::mem::take(&mut self.parked)
    }

    /// The newest position below which every offered event is handled.
    pub fn handled_through(&self) -> Option<u64> {
        self.handled_through
    }

    /// The position to checkpoint now, if one is due: `max_checkpoint_count` events handled
    /// since the last checkpoint, or `min_checkpoint_count` and `checkpoint_after` elapsed.
    /// The runtime may write it while the group goes on; events handled meanwhile count
    /// towards the next checkpoint.
    pub fn checkpoint_due(&mut self, now: Instant) -> Option<u64> {
        let candidate = self.handled_through?;
        if self.last_checkpoint.is_some_and(|last| last >= candidate) {
            return None;
        }
        let handled = self.handled_since_checkpoint;
        let after = self.settings.checkpoint_after;
        let timely = after > Duration::ZERO
            && now.saturating_duration_since(self.last_checkpoint_at) >= after
            && handled >= self.settings.min_checkpoint_count;
        let due = handled >= self.settings.max_checkpoint_count || timely;
        if due {
            self.counted_by_asked_checkpoint = Some(handled);
        }
        due.then_some(candidate)
    }

    /// The position to checkpoint when the group stops, if it moved since the last one.
    pub fn checkpoint_on_stop(&self) -> Option<u64> {
        let candidate = self.handled_through?;
        (self.last_checkpoint < Some(candidate)).then_some(candidate)
    }

    /// The runtime wrote checkpoint `seq`.
    pub fn checkpointed(&mut self, seq: u64, now: Instant) {
        if self.last_checkpoint < Some(seq) {
            self.last_checkpoint = Some(seq);
        }
        let counted = self
            .counted_by_asked_checkpoint
            .take()
            .unwrap_or(self.handled_since_checkpoint);
        self.handled_since_checkpoint = self.handled_since_checkpoint.saturating_sub(counted);
        self.last_checkpoint_at = now;
    }

    pub fn last_checkpoint(&self) -> Option<u64> {
        self.last_checkpoint
    }

    pub fn last_offered(&self) -> Option<u64> {
        self.last_offered
    }

    pub fn counts(&self) -> GroupCounts {
        self.counts
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight_count
    }

    pub fn consumers(&self) -> Vec<ConsumerInfo> {
        self.consumers
            .iter()
            .map(|c| ConsumerInfo {
                id: c.id,
                capacity: c.capacity,
                in_flight: c.in_flight,
                delivered: c.delivered,
                acked: c.acked,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64, stream: &str) -> Message<()> {
        Message {
            seq,
            id: Uuid::from_u128(u128::from(seq)),
            stream: annals_core::StreamName::new(stream).unwrap(),
            correlation: None,
            payload: (),
        }
    }

    fn group(settings: GroupSettings) -> (Group<()>, Instant) {
        let now = Instant::now();
        (Group::new(settings, None, now), now)
    }

    #[test]
    fn events_handled_while_a_checkpoint_is_written_count_towards_the_next() {
        let (mut g, t0) = group(GroupSettings {
            checkpoint_after: Duration::from_millis(100),
            min_checkpoint_count: 1,
            max_checkpoint_count: 1_000,
            ..GroupSettings::default()
        });
        g.connect(1, 10).unwrap();
        for seq in 1..=4 {
            g.offer(msg(seq, "a"), 0).unwrap();
        }
        let ack = |g: &mut Group<()>, seq: u64| g.ack(1, &[Uuid::from_u128(u128::from(seq))]);
        assert_eq!(g.dispatch(t0).len(), 4);
        ack(&mut g, 1);
        ack(&mut g, 2);
        let t1 = t0 + Duration::from_millis(150);
        // Asked for at 2; while it is written, 3 and 4 are handled.
        assert_eq!(g.checkpoint_due(t1), Some(2));
        ack(&mut g, 3);
        ack(&mut g, 4);
        g.checkpointed(2, t1);
        let t2 = t1 + Duration::from_millis(150);
        assert_eq!(g.checkpoint_due(t2), Some(4), "3 and 4 are not forgotten");
        g.checkpointed(4, t2);
        assert_eq!(g.checkpoint_due(t2 + Duration::from_secs(1)), None);
    }

    #[test]
    fn a_timed_out_event_is_retried_then_parked_after_max_retries() {
        let (mut g, t0) = group(GroupSettings {
            message_timeout: Duration::from_millis(100),
            max_retry_count: 3,
            ..GroupSettings::default()
        });
        g.connect(1, 10).unwrap();
        g.offer(msg(1, "a"), 0).unwrap();
        let mut now = t0;
        let mut counts = Vec::new();
        for _ in 0..4 {
            let d = g.dispatch(now);
            assert_eq!(d.len(), 1);
            counts.push(d[0].retry_count);
            now += Duration::from_millis(150);
            g.tick(now);
        }
        assert_eq!(counts, [0, 1, 2, 3]);
        let parked = g.take_parked();
        assert_eq!(parked.len(), 1);
        assert_eq!(parked[0].reason, ParkReason::MaxRetries);
        assert_eq!(g.dispatch(now), []);
        assert_eq!(g.handled_through(), Some(1));
    }

    #[test]
    fn the_checkpoint_never_passes_an_unhandled_event() {
        let (mut g, t0) = group(GroupSettings {
            max_checkpoint_count: 2,
            ..GroupSettings::default()
        });
        g.connect(1, 10).unwrap();
        for seq in 1..=4 {
            g.offer(msg(seq, "a"), 0).unwrap();
        }
        assert_eq!(g.dispatch(t0).len(), 4);
        g.ack(1, &[Uuid::from_u128(2), Uuid::from_u128(3)]);
        assert_eq!(g.handled_through(), None);
        assert_eq!(g.checkpoint_due(t0), None);
        g.ack(1, &[Uuid::from_u128(1)]);
        assert_eq!(g.handled_through(), Some(3));
        assert_eq!(g.checkpoint_due(t0), Some(3));
        g.checkpointed(3, t0);
        assert_eq!(g.checkpoint_due(t0), None);
    }

    #[test]
    fn pinned_keeps_a_stream_with_one_consumer_and_waits_for_its_room() {
        let (mut g, t0) = group(GroupSettings {
            strategy: Strategy::Pinned,
            ..GroupSettings::default()
        });
        g.connect(1, 1).unwrap();
        g.connect(2, 1).unwrap();
        g.offer(msg(1, "a"), 0).unwrap();
        g.offer(msg(2, "a"), 0).unwrap();
        let d = g.dispatch(t0);
        assert_eq!(d.len(), 1, "the second event of `a` waits for its owner");
        let owner = d[0].consumer;
        g.ack(owner, &[Uuid::from_u128(1)]);
        let d = g.dispatch(t0);
        assert_eq!((d.len(), d[0].consumer, d[0].message.seq), (1, owner, 2));
    }

    #[test]
    fn a_full_group_refuses_the_next_consumer() {
        let (mut g, _) = group(GroupSettings {
            max_subscriber_count: 1,
            ..GroupSettings::default()
        });
        g.connect(1, 1).unwrap();
        assert_eq!(
            g.connect(2, 1),
            Err(GroupError::MaxConsumersReached { max: 1 })
        );
        g.disconnect(1);
        g.connect(2, 1).unwrap();
    }

    #[test]
    fn conflation_delivers_the_newest_event_of_each_stream_when_far_behind() {
        let (mut g, t0) = group(GroupSettings {
            conflate_behind: Some(10),
            ..GroupSettings::default()
        });
        g.connect(1, 100).unwrap();
        for (seq, s) in [(1, "a"), (2, "b"), (3, "a"), (4, "a")] {
            g.offer(msg(seq, s), 1_000).unwrap();
        }
        let seqs: Vec<u64> = g.dispatch(t0).iter().map(|d| d.message.seq).collect();
        assert_eq!(seqs, [2, 4]);
        assert_eq!(g.counts().conflated, 2);
        g.ack(1, &[Uuid::from_u128(2), Uuid::from_u128(4)]);
        assert_eq!(g.handled_through(), Some(4));
    }
}
