//! `$ce-{category}` and `$et-{event type}`, served from the index: dense revisions from 0 in
//! position order, reads forwards and backwards from any revision, as link records or resolved,
//! the original streams' metadata rules, writes refused, subscriptions that switch from catching
//! up to live without a gap or a repeat while appends run, and revisions that stay the same after
//! a reopen, a rebuild of the index and a crash at any sync.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals_core::{
    Direction, DomainError, EventRecord, ExpectedRevision, InputError, NewEvent, ResolvedEvent,
    Revision, StreamName, category_of, link_id,
};
use annals_engine::{Engine, EngineConfig, EngineError};
use annals_index::INDEX_FILE;
use annals_log::{FaultStorage, Storage};

fn name(s: &str) -> StreamName {
    StreamName::new(s).unwrap()
}

fn open(storage: &FaultStorage, config: &EngineConfig) -> Engine {
    Engine::open(Arc::new(storage.clone()), config.clone())
        .unwrap()
        .0
}

fn append(engine: &Engine, stream: &str, types: &[&str]) {
    let events = types
        .iter()
        .map(|ty| NewEvent::json(ty, format!("{{\"s\":\"{stream}\"}}")).unwrap())
        .collect();
    engine
        .append(&name(stream), ExpectedRevision::Any, events)
        .unwrap();
}

fn read(engine: &Engine, stream: &str, from: Revision, direction: Direction) -> Vec<EventRecord> {
    engine
        .read_stream(&name(stream), from, direction, 10_000)
        .unwrap()
}

/// `(link revision, "revision@stream" of the original)` of each link record.
fn links(events: &[EventRecord]) -> Vec<(u64, String)> {
    events
        .iter()
        .map(|e| {
            assert_eq!(e.event_type.as_str(), "$>");
            (e.revision.0, String::from_utf8(e.data.to_vec()).unwrap())
        })
        .collect()
}

/// What every list must hold, derived from `$all` alone: each key's events (tombstones
/// excepted) numbered from 0 in position order, as (list stream, revision) → original.
fn expected_lists(engine: &Engine) -> HashMap<String, Vec<String>> {
    let all = engine
        .read_all(annals_core::Position(1), Direction::Forwards, 100_000, None)
        .unwrap();
    let mut lists: HashMap<String, Vec<String>> = HashMap::new();
    for e in all.events.iter().filter(|e| !e.is_tombstone()) {
        let original = format!("{}@{}", e.revision.0, e.stream);
        for list in [
            format!("$ce-{}", category_of(e.stream.as_str())),
            format!("$et-{}", e.event_type),
        ] {
            lists.entry(list).or_default().push(original.clone());
        }
    }
    lists
}

/// Every list read whole, as link revisions and originals.
fn read_lists(engine: &Engine, lists: &[String]) -> HashMap<String, Vec<(u64, String)>> {
    lists
        .iter()
        .map(|l| {
            (
                l.clone(),
                links(&read(engine, l, Revision(0), Direction::Forwards)),
            )
        })
        .collect()
}

/// Dense revisions, reads in both directions from any revision, resolved or not, not found for
/// an empty category, and link records shaped as KurrentDB's.
#[test]
fn category_and_type_streams_read_with_dense_revisions() {
    let storage = FaultStorage::new();
    let engine = open(&storage, &EngineConfig::default());
    let missing = engine
        .read_stream(&name("$ce-order"), Revision(0), Direction::Forwards, 10)
        .unwrap_err();
    assert!(matches!(
        missing.domain(),
        Some(DomainError::StreamNotFound { .. })
    ));
    append(&engine, "order-1", &["OrderPlaced", "OrderPaid"]);
    append(&engine, "cart-1", &["CartOpened"]);
    append(&engine, "order-2", &["OrderPlaced"]);
    append(
        &engine,
        "order-1",
        &["OrderShipped", "OrderPlaced", "OrderPlaced"],
    );
    let ce = read(&engine, "$ce-order", Revision(0), Direction::Forwards);
    assert_eq!(
        links(&ce),
        vec![
            (0, "0@order-1".to_owned()),
            (1, "1@order-1".to_owned()),
            (2, "0@order-2".to_owned()),
            (3, "2@order-1".to_owned()),
            (4, "3@order-1".to_owned()),
            (5, "4@order-1".to_owned()),
        ]
    );
    for e in &ce {
        assert_eq!(e.stream.as_str(), "$ce-order");
        assert_eq!(e.id, link_id(&e.stream, e.revision));
        assert!(e.metadata.is_empty());
    }
    // The link's position is its original's, since no record of its own exists.
    let all = engine
        .read_all(annals_core::Position(1), Direction::Forwards, 100, None)
        .unwrap();
    assert_eq!(ce[2].position, all.events[3].position);
    // Backwards from the end and from a revision; forwards from a revision; past the end.
    let back = read(&engine, "$ce-order", Revision::END, Direction::Backwards);
    assert_eq!(
        back.iter().map(|e| e.revision.0).collect::<Vec<_>>(),
        vec![5, 4, 3, 2, 1, 0]
    );
    let back3 = engine
        .read_stream(&name("$ce-order"), Revision(3), Direction::Backwards, 2)
        .unwrap();
    assert_eq!(links(&back3)[0], (3, "2@order-1".to_owned()));
    assert_eq!(back3[1].revision, Revision(2));
    let fwd4 = read(&engine, "$ce-order", Revision(4), Direction::Forwards);
    assert_eq!(
        fwd4.iter().map(|e| e.revision.0).collect::<Vec<_>>(),
        vec![4, 5]
    );
    assert!(read(&engine, "$ce-order", Revision(6), Direction::Forwards).is_empty());
    // Event types: runs of one type within an append number on.
    let et = read(&engine, "$et-OrderPlaced", Revision(0), Direction::Forwards);
    assert_eq!(
        links(&et),
        vec![
            (0, "0@order-1".to_owned()),
            (1, "0@order-2".to_owned()),
            (2, "3@order-1".to_owned()),
            (3, "4@order-1".to_owned()),
        ]
    );
    // Resolved: the event itself with the link it was read through.
    let resolved = engine
        .read_stream_resolved(
            &name("$et-OrderPlaced"),
            Revision(1),
            Direction::Forwards,
            2,
        )
        .unwrap();
    let ResolvedEvent { event, link } = &resolved[0];
    assert_eq!((event.stream.as_str(), event.revision.0), ("order-2", 0));
    assert_eq!(event.event_type.as_str(), "OrderPlaced");
    let link = link.as_ref().unwrap();
    assert_eq!(
        (link.stream.as_str(), link.revision.0),
        ("$et-OrderPlaced", 1)
    );
    assert_eq!(&link.data[..], b"0@order-2");
    // A written stream read resolved has no links.
    let plain = engine
        .read_stream_resolved(&name("order-2"), Revision(0), Direction::Forwards, 10)
        .unwrap();
    assert!(plain[0].link.is_none());
    // The typed reads agree with the stream reads.
    let cat = engine
        .read_category("order", Revision(2), Direction::Forwards, 2)
        .unwrap();
    assert_eq!(
        cat.iter()
            .map(|r| r.link.clone().unwrap())
            .collect::<Vec<_>>(),
        ce[2..4].to_vec()
    );
}

/// Appends, deletes, tombstones and metadata of `$ce-`/`$et-` streams are refused, in the engine,
/// and nothing is written.
#[test]
fn writes_to_category_and_type_streams_are_refused() {
    let storage = FaultStorage::new();
    let engine = open(&storage, &EngineConfig::default());
    append(&engine, "order-1", &["OrderPlaced"]);
    let refused = |r: Result<annals_core::AppendResult, EngineError>| {
        let e = r.unwrap_err();
        assert!(
            matches!(e, EngineError::Input(InputError::IndexedStreamWrite { .. })),
            "{e:?}"
        );
        assert!(e.to_string().contains("read-only"), "{e}");
    };
    for stream in ["$ce-order", "$et-OrderPlaced", "$ce-x"] {
        let s = name(stream);
        let event = || vec![NewEvent::json("OrderPlaced", "{}").unwrap()];
        refused(engine.append(&s, ExpectedRevision::Any, event()));
        refused(engine.delete(&s, ExpectedRevision::Any));
        refused(engine.tombstone(&s, ExpectedRevision::Any));
        let meta = vec![NewEvent::json("$metadata", r#"{"$maxCount":1}"#).unwrap()];
        refused(engine.append(&s.metadata_stream().unwrap(), ExpectedRevision::Any, meta));
    }
    assert_eq!(engine.head(), annals_core::Position(1));
}

/// The original streams' rules apply: a deleted, tombstoned or truncated stream's events are not
/// read through the lists, and the other events keep their revisions.
#[test]
fn original_streams_rules_hide_their_events() {
    let storage = FaultStorage::new();
    let engine = open(&storage, &EngineConfig::default());
    for i in 0..4 {
        append(&engine, &format!("order-{i}"), &["A", "A"]);
    }
    engine
        .delete(&name("order-1"), ExpectedRevision::Any)
        .unwrap();
    engine
        .tombstone(&name("order-2"), ExpectedRevision::Any)
        .unwrap();
    let meta = vec![NewEvent::json("$metadata", r#"{"$maxCount":1}"#).unwrap()];
    engine
        .append(
            &name("order-3").metadata_stream().unwrap(),
            ExpectedRevision::Any,
            meta,
        )
        .unwrap();
    let ce = read(&engine, "$ce-order", Revision(0), Direction::Forwards);
    assert_eq!(
        links(&ce),
        vec![
            (0, "0@order-0".to_owned()),
            (1, "1@order-0".to_owned()),
            (7, "1@order-3".to_owned()),
        ]
    );
    let back = read(&engine, "$et-A", Revision(5), Direction::Backwards);
    assert_eq!(
        links(&back),
        vec![(1, "1@order-0".to_owned()), (0, "0@order-0".to_owned())]
    );
    // A deleted stream written again shows its new events under new revisions.
    append(&engine, "order-1", &["A"]);
    let ce = read(&engine, "$ce-order", Revision(8), Direction::Forwards);
    assert_eq!(links(&ce), vec![(8, "2@order-1".to_owned())]);
}

/// A subscription to `$ce-order` (and one to `$et-B`) started while appends run sees every
/// revision from its start exactly once, in order, switching from catching up to live; one from
/// the end sees only what came after it.
#[test]
fn subscriptions_switch_to_live_without_gap_or_repeat() {
    const BEFORE: usize = 60;
    const DURING: usize = 240;
    let storage = FaultStorage::new();
    let engine = open(&storage, &EngineConfig::default());
    let stream_of = |i: usize| match i % 3 {
        0 | 1 => format!("order-{}", i % 7),
        _ => format!("cart-{}", i % 5),
    };
    let type_of = |i: usize| if i.is_multiple_of(2) { "A" } else { "B" };
    for i in 0..BEFORE {
        append(&engine, &stream_of(i), &[type_of(i)]);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut from_start = engine
        .subscribe_stream(&name("$ce-order"), Revision(0))
        .unwrap()
        .with_page_events_max(7);
    let mut by_type = engine
        .subscribe_stream(&name("$et-B"), Revision(3))
        .unwrap();
    let mut from_end = engine
        .subscribe_stream(&name("$ce-order"), Revision::END)
        .unwrap();
    let end_at = from_end.revision();
    assert_eq!(end_at, Revision(40), "60 appends, two thirds to order-*");
    let writer = {
        let engine = engine.clone();
        std::thread::spawn(move || {
            for i in BEFORE..BEFORE + DURING {
                append(&engine, &stream_of(i), &[type_of(i)]);
                if i % 16 == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        })
    };
    let total_order = (0..BEFORE + DURING).filter(|i| i % 3 != 2).count();
    let total_b = (0..BEFORE + DURING).filter(|i| i % 2 == 1).count();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut caught_up = false;
    let (mut seen_start, mut seen_type, mut seen_end) = (Vec::new(), Vec::new(), Vec::new());
    runtime.block_on(async {
        while seen_start.len() < total_order
            || seen_type.len() < total_b - 3
            || seen_end.len() < total_order - 40
        {
            assert!(Instant::now() < deadline, "subscribers stuck");
            let wait = Duration::from_millis(20);
            if let Ok(page) = tokio::time::timeout(wait, from_start.next_page()).await {
                let page = page.unwrap();
                caught_up |= page.caught_up;
                seen_start.extend(page.events);
            }
            if let Ok(page) = tokio::time::timeout(wait, by_type.next_page()).await {
                seen_type.extend(page.unwrap().events);
            }
            if let Ok(page) = tokio::time::timeout(wait, from_end.next_page()).await {
                seen_end.extend(page.unwrap().events);
            }
        }
    });
    writer.join().unwrap();
    assert!(caught_up, "the subscriber never said it caught up");
    let revisions = |seen: &[ResolvedEvent]| -> Vec<u64> {
        seen.iter()
            .map(|r| r.link.as_ref().unwrap().revision.0)
            .collect()
    };
    assert_eq!(
        revisions(&seen_start),
        (0..total_order as u64).collect::<Vec<_>>()
    );
    assert_eq!(
        revisions(&seen_type),
        (3..total_b as u64).collect::<Vec<_>>()
    );
    assert_eq!(
        revisions(&seen_end),
        (40..total_order as u64).collect::<Vec<_>>()
    );
    // What the subscriptions saw is what a read says now.
    let now = engine
        .read_stream_resolved(&name("$ce-order"), Revision(0), Direction::Forwards, 10_000)
        .unwrap();
    assert_eq!(now, seen_start);
}

/// The revisions are the same after a reopen, after the index is rebuilt from the log, and in
/// `check`, which verifies them against the log's order.
#[test]
fn revisions_survive_reopen_and_rebuild() {
    let storage = FaultStorage::new();
    let config = EngineConfig::default();
    let engine = open(&storage, &config);
    for i in 0..50 {
        let stream = format!("{}-{}", ["order", "cart", "user"][i % 3], i % 4);
        append(&engine, &stream, &[["A", "B"][i % 2], "C"]);
    }
    engine
        .tombstone(&name("cart-1"), ExpectedRevision::Any)
        .unwrap();
    append(&engine, "order-9", &["A"]);
    let expected = expected_lists(&engine);
    let lists: Vec<String> = expected.keys().cloned().collect();
    let before = read_lists(&engine, &lists);
    for (list, originals) in &expected {
        let shown: Vec<&String> = before[list].iter().map(|(_, o)| o).collect();
        let visible: Vec<&String> = originals
            .iter()
            .filter(|o| !o.ends_with("@cart-1"))
            .collect();
        assert_eq!(shown, visible, "{list}");
    }
    engine.close();
    drop(engine);
    let engine = open(&storage, &config);
    assert_eq!(read_lists(&engine, &lists), before, "after a reopen");
    engine.close();
    drop(engine);
    storage.remove(INDEX_FILE).unwrap();
    let (engine, report) = Engine::open(Arc::new(storage.clone()), config.clone()).unwrap();
    assert!(report.index_rebuilt);
    assert_eq!(read_lists(&engine, &lists), before, "after a rebuild");
    let check = engine.check(|_| {}).unwrap();
    assert!(check.problems.is_empty(), "{:?}", check.problems);
}

/// A power loss at each of many syncs while appends run and the index commits durably every
/// few milliseconds: after reopening the crash image, every link read before the crash (all
/// acknowledged) is read again with the same revision, and the lists number the log's events
/// densely (`check`).
#[test]
fn revisions_survive_a_crash_at_any_sync() {
    let config = EngineConfig {
        index_flush_interval: Duration::from_millis(1),
        ..EngineConfig::default()
    };
    let lists = ["$ce-order", "$ce-cart", "$et-A", "$et-B"].map(str::to_owned);
    for crash_at in (1..120).step_by(7) {
        let storage = FaultStorage::new();
        let engine = open(&storage, &config);
        storage.crash_at_sync(crash_at);
        let mut acknowledged: HashMap<String, Vec<(u64, String)>> = HashMap::new();
        for i in 0..40usize {
            let stream = format!("{}-{}", ["order", "cart"][i % 2], i % 3);
            let events = vec![NewEvent::json(["A", "B"][i % 3 % 2], "{}").unwrap()];
            if engine
                .append(&name(&stream), ExpectedRevision::Any, events)
                .is_err()
            {
                break;
            }
            if i % 5 == 0 {
                // Let the index store thread commit (durably) between appends now and then.
                std::thread::sleep(Duration::from_millis(3));
            }
            for list in &lists {
                if let Ok(read) =
                    engine.read_stream(&name(list), Revision(0), Direction::Forwards, 1_000)
                {
                    acknowledged.insert(list.clone(), links(&read));
                }
            }
        }
        let image = storage.crash_image();
        drop(engine);
        let (engine, _) = Engine::open(Arc::new(image), config.clone()).unwrap();
        for (list, before) in &acknowledged {
            let after = links(&read(&engine, list, Revision(0), Direction::Forwards));
            assert!(
                after.starts_with(before),
                "crash at sync {crash_at}, {list}: before {before:?}, after {after:?}"
            );
        }
        let check = engine.check(|_| {}).unwrap();
        assert!(
            check.problems.is_empty(),
            "crash at sync {crash_at}: {:?}",
            check.problems
        );
        engine.close();
    }
}
