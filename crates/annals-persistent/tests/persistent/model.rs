//! The group state machine against a reference model.
//!
//! The reference is deliberately plain: a list of every offered event with its state (waiting,
//! in flight to a consumer until a deadline, or handled and how) and its retry count, and the
//! rules of the module documentation applied by scanning that list. Which consumer gets an event
//! is the strategy's choice, so the reference does not predict it; it checks that the choice was
//! allowed (the consumer is connected and has room; `DispatchToSingle` picks the first with room;
//! pinned strategies keep a key with the consumer already holding it and in order) and that
//! nothing was left waiting that could have gone. Everything else must agree exactly: retry
//! counts, what is parked and when, what counts as handled, the checkpoint candidate, when a
//! checkpoint is due, and the consumer limit. A run ends by draining the group: every offered
//! event must end handled exactly once.
//!
//! Each seed picks its own settings; a failing seed is printed and can be rerun alone with
//! `PERSISTENT_MODEL_SEED`.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use annals_persistent::{
    ConsumerId, Delivery, Group, GroupError, GroupSettings, Message, NackAction, ParkReason,
    Strategy,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

/// Random runs per test, and operations per run.
const RUNS: u64 = 300;
const STEPS: usize = 300;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Handled {
    Acked,
    Skipped,
    Parked,
    Conflated,
}

#[derive(Clone, PartialEq, Eq, Debug)]
enum State {
    Waiting,
    InFlight {
        consumer: ConsumerId,
        deadline: Instant,
    },
    Handled(Handled),
}

#[derive(Clone, Debug)]
struct Item {
    seq: u64,
    id: Uuid,
    stream: String,
    correlation: Option<String>,
    retry_count: u32,
    /// Delivered at least once (so never conflated).
    delivered: bool,
    state: State,
}

#[derive(Clone, Debug)]
struct RefConsumer {
    id: ConsumerId,
    capacity: usize,
}

/// The reference model.
#[derive(Debug)]
struct Reference {
    settings: GroupSettings,
    items: Vec<Item>,
    consumers: Vec<RefConsumer>,
    /// The checkpoint: every item at or below it is handled.
    last_checkpoint: Option<u64>,
    last_checkpoint_at: Instant,
    behind: u64,
}

impl Reference {
    fn in_flight_of(&self, consumer: ConsumerId) -> usize {
        self.items
            .iter()
            .filter(|i| matches!(i.state, State::InFlight { consumer: c, .. } if c == consumer))
            .count()
    }

    fn has_room(&self, consumer: &RefConsumer) -> bool {
        self.in_flight_of(consumer.id) < consumer.capacity
    }

    fn key(&self, item: &Item) -> Option<String> {
        match self.settings.strategy {
            Strategy::Pinned => Some(item.stream.clone()),
            Strategy::PinnedByCorrelation => {
                Some(item.correlation.clone().unwrap_or(item.stream.clone()))
            }
            _ => None,
        }
    }

    /// The items an ack or nack of `ids` by `consumer` takes, in the order taken: for each id
    /// in turn, the oldest event under it in flight to that consumer (none if it holds none).
    fn taken_by(&self, consumer: ConsumerId, ids: &[Uuid]) -> Vec<usize> {
        let mut taken: Vec<usize> = Vec::new();
        for id in ids {
            let oldest = self.items.iter().enumerate().position(|(index, i)| {
                i.id == *id
                    && !taken.contains(&index)
                    && matches!(i.state, State::InFlight { consumer: c, .. } if c == consumer)
            });
            if let Some(index) = oldest {
                taken.push(index);
            }
        }
        taken
    }

    /// An event that failed once more: retried, or parked at the limit.
    fn fail(&mut self, index: usize) -> bool {
        let max = self.settings.max_retry_count;
        let item = &mut self.items[index];
        if item.retry_count >= max {
            item.state = State::Handled(Handled::Parked);
            true
        } else {
            item.retry_count += 1;
            item.state = State::Waiting;
            false
        }
    }

    /// The newest seq below which everything is handled, starting from the last checkpoint.
    fn handled_through(&self) -> Option<u64> {
        let mut through = self.last_checkpoint;
        for item in &self.items {
            if self.last_checkpoint.is_some_and(|c| item.seq <= c) {
                continue;
            }
            if !matches!(item.state, State::Handled(_)) {
                break;
            }
            through = Some(item.seq);
        }
        through
    }

    /// Items the checkpoint candidate moved over since the last checkpoint.
    fn handled_since_checkpoint(&self) -> u64 {
        let through = self.handled_through();
        self.items
            .iter()
            .filter(|i| {
                self.last_checkpoint.is_none_or(|c| i.seq > c)
                    && through.is_some_and(|t| i.seq <= t)
            })
            .count() as u64
    }

    fn checkpoint_due(&self, now: Instant) -> Option<u64> {
        let candidate = self.handled_through()?;
        if self.last_checkpoint.is_some_and(|c| c >= candidate) {
            return None;
        }
        let handled = self.handled_since_checkpoint();
        let s = &self.settings;
        let timely = !s.checkpoint_after.is_zero()
            && now.saturating_duration_since(self.last_checkpoint_at) >= s.checkpoint_after
            && handled >= s.min_checkpoint_count;
        (handled >= s.max_checkpoint_count || timely).then_some(candidate)
    }

    /// Conflation before a dispatch: of the never-delivered waiting events of one stream, only
    /// the newest stays.
    fn conflate(&mut self) -> Vec<u64> {
        let Some(limit) = self.settings.conflate_behind else {
            return Vec::new();
        };
        let fresh = |i: &Item| i.state == State::Waiting && !i.delivered;
        if self.behind <= limit || self.items.iter().filter(|i| fresh(i)).count() < 2 {
            return Vec::new();
        }
        let mut newest: HashMap<String, u64> = HashMap::new();
        for i in self.items.iter().filter(|i| fresh(i)) {
            newest.insert(i.stream.clone(), i.seq);
        }
        let mut gone = Vec::new();
        for i in self.items.iter_mut() {
            if fresh(i) && newest.get(&i.stream) != Some(&i.seq) {
                i.state = State::Handled(Handled::Conflated);
                gone.push(i.seq);
            }
        }
        gone
    }
}

/// One run: a group and its reference driven by the same random operations.
struct Run {
    rng: StdRng,
    group: Group<u64>,
    reference: Reference,
    now: Instant,
    next_seq: u64,
    next_consumer: ConsumerId,
    seed: u64,
}

impl Run {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let strategy = [
            Strategy::DispatchToSingle,
            Strategy::RoundRobin,
            Strategy::Pinned,
            Strategy::PinnedByCorrelation,
        ][rng.random_range(0..4)];
        let min = rng.random_range(0..4);
        let settings = GroupSettings {
            strategy,
            message_timeout: Duration::from_millis(rng.random_range(0..300)),
            max_retry_count: rng.random_range(0..4),
            checkpoint_after: Duration::from_millis([0, 50, 400][rng.random_range(0..3usize)]),
            min_checkpoint_count: min,
            max_checkpoint_count: min + rng.random_range(1..6),
            max_subscriber_count: rng.random_range(0..4),
            conflate_behind: rng.random_bool(0.3).then(|| rng.random_range(0..20)),
            ..GroupSettings::default()
        };
        let now = Instant::now();
        Self {
            group: Group::new(settings.clone(), None, now),
            reference: Reference {
                settings,
                items: Vec::new(),
                consumers: Vec::new(),
                last_checkpoint: None,
                last_checkpoint_at: now,
                behind: 0,
            },
            rng,
            now,
            next_seq: 1,
            next_consumer: 1,
            seed,
        }
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "seed {}: {what}\nsettings: {:?}\nitems: {:#?}",
            self.seed, self.reference.settings, self.reference.items
        );
    }

    fn offer(&mut self) {
        for _ in 0..self.rng.random_range(1..6) {
            // Seqs have gaps, as positions of a filtered `$all` do.
            let seq = self.next_seq;
            self.next_seq += self.rng.random_range(1..3);
            let stream = ["a", "b", "c", "d"][self.rng.random_range(0..4)].to_owned();
            let correlation = self
                .rng
                .random_bool(0.5)
                .then(|| ["x", "y"][self.rng.random_range(0..2)].to_owned());
            let behind = self.rng.random_range(0..40);
            // Some events share an id with an earlier one (links to one event, or one id
            // appended to two streams): an ack of that id settles the oldest held.
            let id = match self.reference.items.len() {
                n if n > 0 && self.rng.random_bool(0.1) => {
                    self.reference.items[self.rng.random_range(n.saturating_sub(8)..n)].id
                }
                _ => Uuid::from_u128(u128::from(seq)),
            };
            let message = Message {
                seq,
                id,
                stream: annals_core::StreamName::new(stream.as_str()).unwrap(),
                correlation: correlation.clone(),
                payload: seq,
            };
            if let Err(e) = self.group.offer(message, behind) {
                self.fail(&format!("offer {seq}: {e}"));
            }
            self.reference.behind = behind;
            self.reference.items.push(Item {
                seq,
                id,
                stream,
                correlation,
                retry_count: 0,
                delivered: false,
                state: State::Waiting,
            });
        }
    }

    fn connect(&mut self) {
        let id = self.next_consumer;
        self.next_consumer += 1;
        let capacity = self.rng.random_range(1..5);
        let max = self.reference.settings.max_subscriber_count;
        let full = max > 0 && self.reference.consumers.len() >= max;
        match (self.group.connect(id, capacity), full) {
            (Ok(()), false) => self.reference.consumers.push(RefConsumer { id, capacity }),
            (Err(GroupError::MaxConsumersReached { max: m }), true) if m == max => {}
            (got, _) => self.fail(&format!("connect {id}: {got:?}, group full: {full}")),
        }
    }

    fn disconnect(&mut self) {
        if self.reference.consumers.is_empty() {
            return;
        }
        let at = self.rng.random_range(0..self.reference.consumers.len());
        let id = self.reference.consumers.remove(at).id;
        self.group.disconnect(id);
        let mut parked = Vec::new();
        for index in 0..self.reference.items.len() {
            if matches!(self.reference.items[index].state, State::InFlight { consumer, .. } if consumer == id)
                && self.reference.fail(index)
            {
                parked.push(self.reference.items[index].seq);
            }
        }
        self.check_parked(parked, "disconnect");
    }

    fn dispatch(&mut self) {
        let conflated = self.reference.conflate();
        let deliveries = self.group.dispatch(self.now);
        let _ = conflated;
        for d in &deliveries {
            self.check_delivery(d);
        }
        // Nothing that could have gone may wait: with every consumer having room, nothing waits
        // at all; for the unpinned strategies, one consumer with room is enough.
        let waiting = self
            .reference
            .items
            .iter()
            .any(|i| i.state == State::Waiting);
        let rooms: Vec<bool> = self
            .reference
            .consumers
            .iter()
            .map(|c| self.reference.has_room(c))
            .collect();
        let pinned = self.reference.settings.strategy.is_pinned();
        if waiting
            && !rooms.is_empty()
            && (rooms.iter().all(|r| *r) || (!pinned && rooms.iter().any(|r| *r)))
        {
            self.fail("an event waits although a consumer has room for it");
        }
    }

    fn check_delivery(&mut self, d: &Delivery<u64>) {
        let Some(index) = self
            .reference
            .items
            .iter()
            .position(|i| i.seq == d.message.seq)
        else {
            self.fail(&format!("delivered unknown seq {}", d.message.seq));
        };
        let item = self.reference.items[index].clone();
        if item.state != State::Waiting {
            self.fail(&format!(
                "delivered seq {} in state {:?}",
                item.seq, item.state
            ));
        }
        if d.retry_count != item.retry_count {
            self.fail(&format!(
                "seq {} delivered with retry count {}, expected {}",
                item.seq, d.retry_count, item.retry_count
            ));
        }
        let Some(consumer) = self
            .reference
            .consumers
            .iter()
            .find(|c| c.id == d.consumer)
            .cloned()
        else {
            self.fail(&format!(
                "seq {} delivered to unknown consumer {}",
                item.seq, d.consumer
            ));
        };
        if !self.reference.has_room(&consumer) {
            self.fail(&format!(
                "seq {} delivered to full consumer {}",
                item.seq, d.consumer
            ));
        }
        match self.reference.settings.strategy {
            Strategy::DispatchToSingle => {
                let first = self
                    .reference
                    .consumers
                    .iter()
                    .find(|c| self.reference.has_room(c))
                    .map(|c| c.id);
                if first != Some(d.consumer) {
                    self.fail(&format!(
                        "DispatchToSingle sent seq {} to {}, not the first with room {first:?}",
                        item.seq, d.consumer
                    ));
                }
            }
            Strategy::Pinned | Strategy::PinnedByCorrelation => {
                let key = self.reference.key(&item);
                for other in &self.reference.items {
                    if self.reference.key(other) != key || other.seq == item.seq {
                        continue;
                    }
                    match other.state {
                        State::InFlight { consumer, .. } if consumer != d.consumer => {
                            self.fail(&format!(
                                "seq {} of key {key:?} sent to {} while seq {} of it is with {consumer}",
                                item.seq, d.consumer, other.seq
                            ));
                        }
                        State::Waiting if other.seq < item.seq => {
                            self.fail(&format!(
                                "seq {} of key {key:?} sent before waiting seq {}",
                                item.seq, other.seq
                            ));
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        let deadline = self.now + self.reference.settings.message_timeout;
        let item = &mut self.reference.items[index];
        item.delivered = true;
        item.state = State::InFlight {
            consumer: d.consumer,
            deadline,
        };
    }

    /// Ids in flight to `consumer`, a random part of them, and sometimes an id it does not hold.
    fn some_ids_of(&mut self, consumer: ConsumerId) -> Vec<Uuid> {
        let held: Vec<Uuid> = self
            .reference
            .items
            .iter()
            .filter(|i| matches!(i.state, State::InFlight { consumer: c, .. } if c == consumer))
            .map(|i| i.id)
            .collect();
        let mut ids: Vec<Uuid> = held
            .into_iter()
            .filter(|_| self.rng.random_bool(0.7))
            .collect();
        if self.rng.random_bool(0.2) {
            ids.push(Uuid::from_u128(
                u128::MAX - u128::from(self.rng.random::<u32>()),
            ));
        }
        ids
    }

    fn ack(&mut self) {
        let Some(consumer) = self.random_consumer() else {
            return;
        };
        let ids = self.some_ids_of(consumer);
        self.group.ack(consumer, &ids);
        for index in self.reference.taken_by(consumer, &ids) {
            self.reference.items[index].state = State::Handled(Handled::Acked);
        }
    }

    fn nack(&mut self) {
        let Some(consumer) = self.random_consumer() else {
            return;
        };
        let ids = self.some_ids_of(consumer);
        let action = [
            NackAction::Unknown,
            NackAction::Park,
            NackAction::Retry,
            NackAction::Skip,
            NackAction::Stop,
        ][self.rng.random_range(0..5)];
        self.group.nack(consumer, &ids, action, "model says no");
        let mut parked = Vec::new();
        let mut taken = self.reference.taken_by(consumer, &ids);
        // A retry inserts by seq, so the order they are retried in does not matter; parking
        // goes in the order the ids came, as the group takes them.
        for index in taken.drain(..) {
            let seq = self.reference.items[index].seq;
            match action {
                NackAction::Park => {
                    self.reference.items[index].state = State::Handled(Handled::Parked);
                    parked.push(seq);
                }
                NackAction::Skip | NackAction::Stop => {
                    self.reference.items[index].state = State::Handled(Handled::Skipped);
                }
                _ => {
                    if self.reference.fail(index) {
                        parked.push(seq);
                    }
                }
            }
        }
        self.check_parked(parked, "nack");
    }

    fn tick(&mut self) {
        self.now += Duration::from_millis(self.rng.random_range(0..250));
        self.group.tick(self.now);
        let mut parked = Vec::new();
        for index in 0..self.reference.items.len() {
            if matches!(self.reference.items[index].state, State::InFlight { deadline, .. } if deadline <= self.now)
                && self.reference.fail(index)
            {
                parked.push(self.reference.items[index].seq);
            }
        }
        self.check_parked(parked, "tick");
    }

    fn checkpoint(&mut self) {
        let got = self.group.checkpoint_due(self.now);
        let want = self.reference.checkpoint_due(self.now);
        if got != want {
            self.fail(&format!("checkpoint due: {got:?}, expected {want:?}"));
        }
        if let Some(seq) = got {
            self.group.checkpointed(seq, self.now);
            self.reference.last_checkpoint = Some(seq);
            self.reference.last_checkpoint_at = self.now;
        }
    }

    fn random_consumer(&mut self) -> Option<ConsumerId> {
        let n = self.reference.consumers.len();
        (n > 0).then(|| self.reference.consumers[self.rng.random_range(0..n)].id)
    }

    fn check_parked(&mut self, mut want: Vec<u64>, what: &str) {
        let parked = self.group.take_parked();
        for p in &parked {
            let item = self
                .reference
                .items
                .iter()
                .find(|i| i.seq == p.message.seq)
                .unwrap();
            if p.retry_count != item.retry_count {
                self.fail(&format!(
                    "{what}: seq {} parked with retry count {}, expected {}",
                    item.seq, p.retry_count, item.retry_count
                ));
            }
            if p.reason == ParkReason::MaxRetries
                && p.retry_count < self.reference.settings.max_retry_count
            {
                self.fail(&format!(
                    "{what}: seq {} parked for retries too early",
                    item.seq
                ));
            }
        }
        let mut got: Vec<u64> = parked.iter().map(|p| p.message.seq).collect();
        got.sort_unstable();
        want.sort_unstable();
        if got != want {
            self.fail(&format!("{what}: parked {got:?}, expected {want:?}"));
        }
    }

    /// What must agree after every operation.
    fn compare(&self, after: &str) {
        let got = self.group.handled_through();
        let want = self.reference.handled_through();
        if got != want {
            self.fail(&format!(
                "after {after}: handled through {got:?}, expected {want:?}"
            ));
        }
        let in_flight = self
            .reference
            .items
            .iter()
            .filter(|i| matches!(i.state, State::InFlight { .. }))
            .count();
        if self.group.in_flight() != in_flight {
            self.fail(&format!(
                "after {after}: {} in flight, expected {in_flight}",
                self.group.in_flight()
            ));
        }
        let mut by_consumer: BTreeMap<ConsumerId, usize> = BTreeMap::new();
        for c in self.group.consumers() {
            by_consumer.insert(c.id, c.in_flight);
        }
        for c in &self.reference.consumers {
            let want = self.reference.in_flight_of(c.id);
            if by_consumer.get(&c.id) != Some(&want) {
                self.fail(&format!(
                    "after {after}: consumer {} holds {:?}, expected {want}",
                    c.id,
                    by_consumer.get(&c.id)
                ));
            }
        }
    }

    fn step(&mut self) {
        let op = self.rng.random_range(0..100);
        let name = match op {
            0..20 => {
                self.offer();
                "offer"
            }
            20..28 => {
                self.connect();
                "connect"
            }
            28..32 => {
                self.disconnect();
                "disconnect"
            }
            32..55 => {
                self.dispatch();
                "dispatch"
            }
            55..75 => {
                self.ack();
                "ack"
            }
            75..85 => {
                self.nack();
                "nack"
            }
            85..95 => {
                self.tick();
                "tick"
            }
            _ => {
                self.checkpoint();
                "checkpoint"
            }
        };
        self.compare(name);
    }

    /// Drains the group: one consumer with room for everything acks all it gets, until every
    /// offered event is handled. Then each must be handled exactly once.
    fn drain(&mut self) {
        while let Some(c) = self.reference.consumers.first().map(|c| c.id) {
            self.reference.consumers.remove(0);
            self.group.disconnect(c);
            let mut parked = Vec::new();
            for index in 0..self.reference.items.len() {
                if matches!(self.reference.items[index].state, State::InFlight { consumer, .. } if consumer == c)
                    && self.reference.fail(index)
                {
                    parked.push(self.reference.items[index].seq);
                }
            }
            self.check_parked(parked, "drain disconnect");
        }
        let drainer = self.next_consumer;
        self.group.connect(drainer, usize::MAX).unwrap();
        self.reference.consumers.push(RefConsumer {
            id: drainer,
            capacity: usize::MAX,
        });
        for _ in 0..10 {
            self.dispatch();
            let ids: Vec<Uuid> = self
                .reference
                .items
                .iter()
                .filter(|i| matches!(i.state, State::InFlight { .. }))
                .map(|i| i.id)
                .collect();
            self.group.ack(drainer, &ids);
            for item in self.reference.items.iter_mut() {
                if matches!(item.state, State::InFlight { .. }) {
                    item.state = State::Handled(Handled::Acked);
                }
            }
            self.compare("drain");
        }
        if let Some(open) = self
            .reference
            .items
            .iter()
            .find(|i| !matches!(i.state, State::Handled(_)))
        {
            self.fail(&format!("seq {} never handled", open.seq));
        }
        let counts = self.group.counts();
        let handled = counts.acked + counts.skipped + counts.parked + counts.conflated;
        if handled != counts.offered || counts.offered != self.reference.items.len() as u64 {
            self.fail(&format!(
                "handled {handled} of {} offered: {counts:?}",
                counts.offered
            ));
        }
        let last = self.reference.items.last().map(|i| i.seq);
        if self.group.handled_through() != last.or(None) {
            self.fail("after draining, the checkpoint candidate is not the last event");
        }
    }
}

fn seeds() -> Vec<u64> {
    match std::env::var("PERSISTENT_MODEL_SEED") {
        Ok(s) => vec![s.parse().unwrap()],
        Err(_) => (0..RUNS).collect(),
    }
}

#[test]
fn group_matches_the_reference_under_random_operations() {
    for seed in seeds() {
        let mut run = Run::new(seed);
        for _ in 0..STEPS {
            run.step();
        }
        run.drain();
    }
}
