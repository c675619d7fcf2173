//! Subscriptions switching from catch-up to live while writers append: every subscriber sees
//! every position from its start to the final head exactly once, in order, with the events `$all`
//! holds there; a filtered subscriber sees exactly the matching events and its checkpoints reach
//! the head. Repeated from many seeds on a real directory (without fsync, for speed) and once with
//! fsync; blocking and async (tokio current-thread) subscribers run side by side. Plain reads under
//! the same load see their own writes and never a gap.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use annals_core::{
    Direction, EventRecord, ExpectedRevision, Filter, FilterTarget, Position, StreamName,
};
use annals_engine::{Durability, Engine, EngineConfig, Subscription, SubscriptionPage};
use annals_testkit::random;
use rand::Rng;

const WRITERS: u64 = 4;
const APPENDS_PER_WRITER: usize = 25;
/// How long a subscriber waits for news before looking whether the writers are done.
const POLL: Duration = Duration::from_millis(20);
/// A run that takes longer than this is stuck.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

fn name(s: &str) -> StreamName {
    StreamName::new(s).unwrap()
}

/// The final head once every writer is done; 0 while they still write.
struct Done(AtomicU64);

impl Done {
    fn get(&self) -> Option<Position> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            p => Some(Position(p)),
        }
    }
}

/// What one subscriber saw: every event and the checkpoint of every page.
#[derive(Debug, Default)]
struct Seen {
    start: Position,
    events: Vec<EventRecord>,
    checkpoints: Vec<Position>,
}

impl Seen {
    fn take(&mut self, page: SubscriptionPage) {
        self.events.extend(page.events);
        self.checkpoints.push(page.checkpoint);
    }

    /// Whether the subscriber is past the final head.
    fn finished(&self, sub: &Subscription, done: &Done) -> bool {
        done.get().is_some_and(|head| sub.position() > head)
    }
}

/// Follows `sub` with the blocking API until it is past the final head.
fn follow_blocking(mut sub: Subscription, done: &Done) -> Seen {
    let mut seen = Seen {
        start: sub.position(),
        ..Seen::default()
    };
    let deadline = Instant::now() + RUN_TIMEOUT;
    while !seen.finished(&sub, done) {
        assert!(
            Instant::now() < deadline,
            "subscriber stuck at {:?}",
            sub.position()
        );
        if let Some(page) = sub.next_page_blocking(POLL).unwrap() {
            seen.take(page);
        }
    }
    seen
}

/// Follows `sub` with the async API on a current-thread runtime until it is past the final head.
fn follow_async(mut sub: Subscription, done: &Done) -> Seen {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut seen = Seen {
        start: sub.position(),
        ..Seen::default()
    };
    let deadline = Instant::now() + RUN_TIMEOUT;
    runtime.block_on(async {
        while !seen.finished(&sub, done) {
            assert!(
                Instant::now() < deadline,
                "async subscriber stuck at {:?}",
                sub.position()
            );
            if let Ok(page) = tokio::time::timeout(POLL, sub.next_page()).await {
                seen.take(page.unwrap());
            }
        }
    });
    seen
}

/// Checks an unfiltered subscriber: positions `start..=head` once each in order, the events
/// `$all` holds there, and checkpoints that grow to the head.
fn check_all(seen: &Seen, all: &[EventRecord], head: Position) -> Result<(), String> {
    let start = seen.start.max(Position(1));
    let want = all
        .get(start.0 as usize - 1..)
        .ok_or_else(|| format!("start {start:?} past the head {head:?}"))?;
    if seen.events.len() != want.len() || seen.events.iter().zip(want).any(|(a, b)| a != b) {
        let got: Vec<u64> = seen.events.iter().map(|e| e.position.0).collect();
        return Err(format!(
            "from {start:?} to {head:?}: saw {} events, want {}; positions {got:?}",
            seen.events.len(),
            want.len()
        ));
    }
    check_checkpoints(seen, head)
}

/// Checks a filtered subscriber against the matching events of `$all` from its start.
fn check_filtered(
    seen: &Seen,
    all: &[EventRecord],
    head: Position,
    filter: &Filter,
) -> Result<(), String> {
    let want: Vec<&EventRecord> = all
        .iter()
        .filter(|e| e.position >= seen.start && filter.matches(e))
        .collect();
    if seen.events.len() != want.len() || seen.events.iter().zip(&want).any(|(a, b)| a != *b) {
        return Err(format!(
            "filtered from {:?}: saw {:?}, want {:?}",
            seen.start,
            seen.events.iter().map(|e| e.position.0).collect::<Vec<_>>(),
            want.iter().map(|e| e.position.0).collect::<Vec<_>>()
        ));
    }
    check_checkpoints(seen, head)
}

fn check_checkpoints(seen: &Seen, head: Position) -> Result<(), String> {
    if seen.checkpoints.windows(2).any(|w| w[0] > w[1]) {
        return Err(format!("checkpoints went back: {:?}", seen.checkpoints));
    }
    let last = seen
        .checkpoints
        .last()
        .copied()
        .unwrap_or(Position(seen.start.0.saturating_sub(1)));
    if last != head {
        return Err(format!("last checkpoint {last:?}, head {head:?}"));
    }
    Ok(())
}

/// One run: pre-fill, start subscribers at random positions, append from [`WRITERS`] threads,
/// then check what every subscriber saw.
fn run(seed: u64, durability: Durability) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        durability,
        ..EngineConfig::default()
    };
    let (engine, _) = Engine::open_dir(dir.path(), config).unwrap();
    let mut rng = random::rng(seed);
    for i in 0..rng.random_range(0..60) {
        let stream = if i % 4 == 0 { "flt-pre" } else { "pre" };
        engine
            .append(
                &name(stream),
                ExpectedRevision::Any,
                random::random_events(&mut rng, 4, 30),
            )
            .unwrap();
    }
    let prefilled = engine.head().0;
    let mut start = || Position(rng.random_range(0..=prefilled + 1));
    let page_max = |rng: &mut rand::rngs::StdRng| {
        if rng.random_bool(0.5) {
            rng.random_range(1..8)
        } else {
            annals_engine::SUBSCRIPTION_PAGE_EVENTS_MAX
        }
    };
    let starts = [start(), start(), start(), start(), start()];
    let pages = [page_max(&mut rng), page_max(&mut rng), page_max(&mut rng)];
    let filter = Filter::prefixes(FilterTarget::StreamName, vec!["flt-".into()]).unwrap();
    let done = Done(AtomicU64::new(0));
    let (blocking, asynchronous, filtered) = std::thread::scope(|s| {
        let subscribe = |i: usize, filter: Option<Filter>| {
            engine
                .subscribe_all(starts[i], filter)
                .with_page_events_max(pages[i % pages.len()])
        };
        let blocking: Vec<_> = (0..3)
            .map(|i| {
                let sub = subscribe(i, None);
                let done = &done;
                s.spawn(move || follow_blocking(sub, done))
            })
            .collect();
        let asynchronous = {
            let sub = subscribe(3, None);
            let done = &done;
            s.spawn(move || follow_async(sub, done))
        };
        let filtered = {
            let sub = subscribe(4, Some(filter.clone()));
            let done = &done;
            s.spawn(move || follow_blocking(sub, done))
        };
        let writers: Vec<_> = (0..WRITERS)
            .map(|t| {
                let engine = engine.clone();
                s.spawn(move || {
                    let mut rng = random::rng(seed * 1000 + t);
                    for j in 0..APPENDS_PER_WRITER {
                        let stream = if j % 3 == 0 {
                            format!("flt-{t}")
                        } else {
                            format!("live-{t}")
                        };
                        engine
                            .append(
                                &name(&stream),
                                ExpectedRevision::Any,
                                random::random_events(&mut rng, 3, 30),
                            )
                            .unwrap();
                        if rng.random_bool(0.2) {
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        done.0.store(engine.head().0, Ordering::Release);
        (
            blocking
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>(),
            asynchronous.join().unwrap(),
            filtered.join().unwrap(),
        )
    });
    let head = engine.head();
    let all = engine
        .read_all(Position::START, Direction::Forwards, 100_000, None)
        .unwrap()
        .events;
    if all.len() as u64 != head.0 {
        return Err(format!("$all holds {}, head {head:?}", all.len()));
    }
    for (i, seen) in blocking.iter().enumerate() {
        check_all(seen, &all, head).map_err(|e| format!("blocking subscriber {i}: {e}"))?;
    }
    check_all(&asynchronous, &all, head).map_err(|e| format!("async subscriber: {e}"))?;
    check_filtered(&filtered, &all, head, &filter)
        .map_err(|e| format!("filtered subscriber: {e}"))?;
    Ok(())
}

#[test]
fn catch_up_then_live_sees_every_position_once() {
    for seed in 0..30 {
        if let Err(e) = run(seed, Durability::None) {
            panic!("seed {seed}: {e}");
        }
    }
}

#[test]
fn catch_up_then_live_with_fsync() {
    if let Err(e) = run(1_000, Durability::Fsync) {
        panic!("seed 1000: {e}");
    }
}

#[test]
fn filtered_subscription_reports_progress_without_matches() {
    // Nothing matches: pages are empty, but their checkpoints still reach the head, so a
    // consumer can store its place.
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        durability: Durability::None,
        ..EngineConfig::default()
    };
    let (engine, _) = Engine::open_dir(dir.path(), config).unwrap();
    let mut rng = random::rng(4);
    for _ in 0..20 {
        engine
            .append(
                &name("other"),
                ExpectedRevision::Any,
                random::random_events(&mut rng, 3, 10),
            )
            .unwrap();
    }
    let head = engine.head();
    let filter = Filter::prefixes(FilterTarget::StreamName, vec!["none-".into()]).unwrap();
    let mut sub = engine
        .subscribe_all(Position::START, Some(filter))
        .with_page_events_max(4);
    let page = sub.next_page_blocking(POLL).unwrap().unwrap();
    assert!(page.events.is_empty());
    assert_eq!(page.checkpoint, head);
    assert!(page.caught_up);
    assert!(sub.next_page_blocking(POLL).unwrap().is_none());
    engine
        .append(
            &name("none-1"),
            ExpectedRevision::Any,
            random::random_events(&mut rng, 1, 10),
        )
        .unwrap();
    let page = sub
        .next_page_blocking(Duration::from_secs(5))
        .unwrap()
        .unwrap();
    assert_eq!(page.events.len(), 1);
    assert_eq!(page.events.first().unwrap().position, Position(head.0 + 1));
    assert_eq!(page.checkpoint, Position(head.0 + 1));
}

/// Reads racing appends: a writer reads its own acknowledged append back at once (stream and
/// `$all`), and a reader's `$all` and stream reads are always gap-free prefixes at least as long
/// as the head it saw before reading.
#[test]
fn reads_under_concurrent_appends_see_acknowledged_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        durability: Durability::None,
        ..EngineConfig::default()
    };
    let (engine, _) = Engine::open_dir(dir.path(), config).unwrap();
    let writing = AtomicU64::new(WRITERS);
    std::thread::scope(|s| {
        for t in 0..WRITERS {
            let engine = engine.clone();
            let writing = &writing;
            s.spawn(move || {
                let mut rng = random::rng(500 + t);
                let stream = name(&format!("rw-{t}"));
                let mut expected = ExpectedRevision::NoStream;
                for _ in 0..50 {
                    let events = random::random_events(&mut rng, 3, 20);
                    let last_id = events.last().unwrap().id;
                    let ack = engine.append(&stream, expected, events).unwrap();
                    expected = ExpectedRevision::Exact(ack.next_revision.0);
                    let own = engine
                        .read_stream(&stream, annals_core::Revision::END, Direction::Backwards, 1)
                        .unwrap();
                    assert_eq!(
                        own.iter()
                            .map(|e| (e.id, e.revision, e.position))
                            .collect::<Vec<_>>(),
                        vec![(last_id, ack.next_revision, ack.position)]
                    );
                    let latest = engine
                        .read_all(Position::END, Direction::Backwards, 1, None)
                        .unwrap();
                    assert!(latest.events[0].position >= ack.position);
                }
                writing.fetch_sub(1, Ordering::Release);
            });
        }
        let engine = engine.clone();
        let writing = &writing;
        s.spawn(move || {
            let mut rounds = 0;
            while writing.load(Ordering::Acquire) > 0 || rounds < 3 {
                rounds += 1;
                let head = engine.head();
                let all = engine
                    .read_all(Position::START, Direction::Forwards, 100_000, None)
                    .unwrap()
                    .events;
                assert!(
                    all.len() as u64 >= head.0,
                    "read {} events below head {head:?}",
                    all.len()
                );
                for (i, e) in all.iter().enumerate() {
                    assert_eq!(e.position, Position(i as u64 + 1), "gap in $all");
                }
                for t in 0..WRITERS {
                    match engine.read_stream(
                        &name(&format!("rw-{t}")),
                        annals_core::Revision(0),
                        Direction::Forwards,
                        100_000,
                    ) {
                        Ok(events) => {
                            for (i, e) in events.iter().enumerate() {
                                assert_eq!(e.revision.0, i as u64, "gap in rw-{t}");
                            }
                        }
                        Err(e) => assert!(
                            matches!(
                                e.domain(),
                                Some(annals_core::DomainError::StreamNotFound { .. })
                            ),
                            "{e}"
                        ),
                    }
                }
            }
        });
    });
}

/// Regression: an async subscriber waiting at the head when the engine is closed must end with
/// `EngineError::Stopped` (as `next_page` documents), not wait forever.
#[test]
fn async_subscriber_at_the_head_ends_when_the_engine_closes() {
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        durability: Durability::None,
        ..EngineConfig::default()
    };
    let (engine, _) = Engine::open_dir(dir.path(), config).unwrap();
    engine
        .append(
            &name("c-1"),
            ExpectedRevision::Any,
            random::random_events(&mut random::rng(1), 2, 10),
        )
        .unwrap();
    let mut sub = engine.subscribe_all(Position::START, None);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let page = sub.next_page().await.unwrap();
        assert_eq!(page.checkpoint, engine.head());
        let closer = engine.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            closer.close();
        });
        match tokio::time::timeout(Duration::from_secs(5), sub.next_page()).await {
            Ok(Err(annals_engine::EngineError::Stopped(_))) => {}
            Ok(other) => panic!("after close: {other:?}"),
            Err(_) => panic!("the subscriber still waits 5 s after the engine closed"),
        }
    });
}

/// Regression: the same for a blocking subscriber, which must not sit out its whole timeout.
#[test]
fn blocking_subscriber_at_the_head_ends_when_the_engine_closes() {
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        durability: Durability::None,
        ..EngineConfig::default()
    };
    let (engine, _) = Engine::open_dir(dir.path(), config).unwrap();
    engine
        .append(
            &name("c-1"),
            ExpectedRevision::Any,
            random::random_events(&mut random::rng(1), 2, 10),
        )
        .unwrap();
    let mut sub = engine.subscribe_all(Position::START, None);
    let page = sub.next_page_blocking(POLL).unwrap().unwrap();
    assert_eq!(page.checkpoint, engine.head());
    let closer = engine.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        closer.close();
    });
    let started = Instant::now();
    let after = sub.next_page_blocking(Duration::from_secs(5));
    assert!(
        matches!(after, Err(annals_engine::EngineError::Stopped(_))),
        "after close: {after:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    // A new subscription on the closed engine still catches up, then stops.
    let mut late = engine.subscribe_all(Position::START, None);
    assert_eq!(
        late.next_page_blocking(POLL).unwrap().unwrap().events.len(),
        2
    );
    assert!(matches!(
        late.next_page_blocking(POLL),
        Err(annals_engine::EngineError::Stopped(_))
    ));
}

/// Subscriptions at the head share the page the first of them read (one log read, one cache for
/// the API layers' encodings), each taking its own part of it: a filtered one only what
/// matches, a small-paged one in steps; one that is catching up reads on its own. All of them
/// see exactly what a read of `$all` returns.
#[test]
fn subscriptions_at_the_head_share_one_page() {
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        durability: Durability::None,
        ..EngineConfig::default()
    };
    let (engine, _) = Engine::open_dir(dir.path(), config).unwrap();
    let mut rng = random::rng(7);
    engine
        .append(
            &name("old"),
            ExpectedRevision::Any,
            (0..10)
                .map(|_| random::random_event(&mut rng, 10))
                .collect(),
        )
        .unwrap();
    let from = engine.head().next();
    let mut a = engine.subscribe_all(from, None);
    let mut b = engine.subscribe_all(from, None);
    let by_stream = Filter::prefixes(FilterTarget::StreamName, vec!["keep-".into()]).unwrap();
    let mut filtered = engine.subscribe_all(from, Some(by_stream));
    let mut small = engine.subscribe_all(from, None).with_page_events_max(2);
    let mut behind = engine.subscribe_all(Position::START, None);
    for stream in ["keep-1", "drop-1", "keep-2"] {
        engine
            .append(
                &name(stream),
                ExpectedRevision::Any,
                (0..2).map(|_| random::random_event(&mut rng, 10)).collect(),
            )
            .unwrap();
    }
    let head = engine.head();
    let all = engine
        .read_all(from, Direction::Forwards, 100, None)
        .unwrap()
        .events;
    assert_eq!(all.len(), 6);

    let pa = a.next_page_blocking(POLL).unwrap().unwrap();
    let pb = b.next_page_blocking(POLL).unwrap().unwrap();
    let (sa, _) = pa.events.shared_page().expect("a page of the live tail");
    let (sb, _) = pb.events.shared_page().expect("a page of the live tail");
    assert!(std::sync::Arc::ptr_eq(sa, sb), "one read for both");
    assert_eq!(pa.events.clone().into_vec(), all);
    assert_eq!(pb.events.into_vec(), all);
    assert_eq!((pa.checkpoint, pa.caught_up), (head, true));

    let pf = filtered.next_page_blocking(POLL).unwrap().unwrap();
    let (sf, _) = pf.events.shared_page().expect("a page of the live tail");
    assert!(std::sync::Arc::ptr_eq(sa, sf));
    let kept: Vec<_> = all
        .iter()
        .filter(|e| e.stream.as_str().starts_with("keep-"))
        .cloned()
        .collect();
    assert_eq!(pf.events.into_vec(), kept);
    assert_eq!(pf.checkpoint, head);

    let mut stepped = Vec::new();
    while small.position() <= head {
        let page = small.next_page_blocking(POLL).unwrap().unwrap();
        assert!(page.events.len() <= 2);
        assert!(page.events.shared_page().is_some());
        assert_eq!(page.checkpoint, page.events.last().unwrap().position);
        stepped.extend(page.events);
    }
    assert_eq!(stepped, all);

    let pc = behind.next_page_blocking(POLL).unwrap().unwrap();
    assert!(pc.events.shared_page().is_none(), "behind the tail");
    assert_eq!(pc.events.len(), 16);
    assert_eq!(pc.events.into_vec()[10..], all[..]);
    engine.close();
}
