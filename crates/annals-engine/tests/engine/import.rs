//! Importing another store's events exactly (`Engine::import`): a store with appends, metadata
//! (max-count), a soft delete and an undelete, and a tombstone is copied page by page into a
//! fresh store, which then holds the same `$all` (every field) and answers every stream read the
//! same; a page that does not go on at the head is refused and changes nothing; and a power loss
//! at every sync of an import leaves a prefix of the source, from which the import resumes.

use std::sync::Arc;

use annals_core::{
    ContentType, Direction, EventRecord, EventType, ExpectedRevision, NewEvent, Position, Revision,
    StreamName,
};
use annals_engine::{Durability, Engine, EngineConfig, EngineError};
use annals_log::FaultStorage;
use uuid::Uuid;

fn name(s: &str) -> StreamName {
    StreamName::new(s).unwrap()
}

fn event(ty: &str, data: &str) -> NewEvent {
    NewEvent {
        id: Uuid::new_v4(),
        event_type: EventType::new(ty).unwrap(),
        content_type: ContentType::Json,
        data: bytes::Bytes::from(data.to_owned()),
        metadata: bytes::Bytes::from_static(b"{\"m\":1}"),
    }
}

/// A source store with every kind of record; returns it and its stream names.
fn source() -> (tempfile::TempDir, Engine, Vec<StreamName>) {
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        durability: Durability::None,
        ..EngineConfig::default()
    };
    let (engine, _) = Engine::open_dir(dir.path(), config).unwrap();
    let streams: Vec<StreamName> = (0..5).map(|i| name(&format!("order-{i}"))).collect();
    for round in 0..6 {
        for (i, s) in streams.iter().enumerate() {
            let events = (0..=(i % 3))
                .map(|k| event(&format!("E{k}"), &format!("{{\"r\":{round}}}")))
                .collect();
            engine.append(s, ExpectedRevision::Any, events).unwrap();
        }
    }
    let meta = name("$$order-0");
    engine
        .append(
            &meta,
            ExpectedRevision::Any,
            vec![event("$metadata", "{\"$maxCount\":2}")],
        )
        .unwrap();
    engine.delete(&streams[1], ExpectedRevision::Any).unwrap();
    engine
        .append(
            &streams[1],
            ExpectedRevision::Any,
            vec![event("Back", "{}")],
        )
        .unwrap();
    engine
        .tombstone(&streams[2], ExpectedRevision::Any)
        .unwrap();
    let mut names = streams;
    names.push(meta);
    (dir, engine, names)
}

fn all(engine: &Engine) -> Vec<EventRecord> {
    engine
        .read_all(Position(1), Direction::Forwards, 100_000, None)
        .unwrap()
        .events
}

/// Every stream read as a reader sees it (rules applied), errors included.
fn streams_as_read(engine: &Engine, names: &[StreamName]) -> Vec<String> {
    names
        .iter()
        .map(|s| {
            format!(
                "{:?}",
                engine.read_stream(s, Revision(0), Direction::Forwards, 1_000)
            )
        })
        .collect()
}

#[test]
fn an_import_copies_a_store_exactly() {
    let (_src_dir, src, names) = source();
    let events = all(&src);
    let dir = tempfile::tempdir().unwrap();
    let (dst, _) = Engine::open_dir(dir.path(), EngineConfig::default()).unwrap();
    for page in events.chunks(7) {
        dst.import(page).unwrap();
    }
    assert_eq!(dst.head(), src.head());
    assert_eq!(all(&dst), events);
    assert_eq!(streams_as_read(&dst, &names), streams_as_read(&src, &names));
    // A page that does not go on at the head is refused and changes nothing.
    let again = dst.import(&events[..3]);
    assert!(
        matches!(again, Err(EngineError::ImportRefused(_))),
        "{again:?}"
    );
    assert_eq!(dst.head(), src.head());
    // The store reopens the same, and takes appends after the imported head.
    dst.close();
    drop(dst);
    let (dst, _) = Engine::open_dir(dir.path(), EngineConfig::default()).unwrap();
    assert_eq!(all(&dst), events);
    assert_eq!(streams_as_read(&dst, &names), streams_as_read(&src, &names));
    let r = dst
        .append(
            &name("order-3"),
            ExpectedRevision::Any,
            vec![event("After", "{}")],
        )
        .unwrap();
    assert_eq!(r.position, Position(src.head().0 + 1));
    assert!(dst.check(|_| {}).unwrap().problems.is_empty());
}

#[test]
fn an_import_refuses_a_gap_and_a_wrong_revision() {
    let (_src_dir, src, _) = source();
    let events = all(&src);
    let dir = tempfile::tempdir().unwrap();
    let (dst, _) = Engine::open_dir(dir.path(), EngineConfig::default()).unwrap();
    assert!(matches!(
        dst.import(&events[1..4]),
        Err(EngineError::ImportRefused(_))
    ));
    let mut wrong = events[..2].to_vec();
    if let Some(e) = wrong.get_mut(1) {
        e.revision = Revision(e.revision.0 + 5);
    }
    let refused = dst.import(&wrong);
    assert!(
        matches!(refused, Err(EngineError::ImportRefused(_))),
        "{refused:?}"
    );
    // The run before the refused one was written; nothing after it.
    assert!(dst.head() <= Position(1));
    assert_eq!(all(&dst).len() as u64, dst.head().0);
}

/// A power loss at every sync of an import: the store reopens holding exactly the source's
/// first k events, for some k, and the import resumes from k + 1 to a full copy.
#[test]
fn a_crash_during_an_import_leaves_a_prefix_it_resumes_from() {
    let (_src_dir, src, names) = source();
    let events = all(&src);
    let config = EngineConfig::default();
    let full = FaultStorage::new();
    {
        let (dst, _) = Engine::open(Arc::new(full.clone()), config.clone()).unwrap();
        for page in events.chunks(5) {
            dst.import(page).unwrap();
        }
        dst.close();
    }
    let syncs = full.syncs();
    assert!(syncs > 5, "a full import made only {syncs} syncs");
    for n in 1..=syncs + 1 {
        let storage = FaultStorage::new();
        storage.crash_at_sync(n);
        if let Ok((dst, _)) = Engine::open(Arc::new(storage.clone()), config.clone()) {
            for page in events.chunks(5) {
                if dst.import(page).is_err() {
                    break;
                }
            }
            dst.close();
        }
        let image = storage.crash_image();
        let (dst, _) = Engine::open(Arc::new(image), config.clone())
            .unwrap_or_else(|e| panic!("crash at sync {n}: reopen failed: {e}"));
        let k = dst.head().0 as usize;
        let held = all(&dst);
        assert_eq!(held[..], events[..k], "crash at sync {n}: not a prefix");
        for page in events[k..].chunks(5) {
            dst.import(page)
                .unwrap_or_else(|e| panic!("crash at sync {n}: resume failed: {e}"));
        }
        assert_eq!(all(&dst), events, "crash at sync {n}: resumed copy differs");
        assert_eq!(streams_as_read(&dst, &names), streams_as_read(&src, &names));
    }
}
