//! Format fixtures: a small data directory written by format version 1 (committed under
//! `tests/fixtures/v1`) must open with every later version and read back the same events. Its
//! index is of index format 1 (postings keyed by position, unnumbered): opening it rebuilds the
//! index from the log, after which `$ce-`/`$et-` streams read with dense revisions.
//!
//! Regenerate (only when adding a new format version's fixture) with
//! `ANNALS_WRITE_FIXTURE=1 cargo test -p annals-engine --test format_fixture`.

use std::path::{Path, PathBuf};

use annals_core::{
    Direction, DomainError, ExpectedRevision, NewEvent, Position, Revision, StreamName,
};
use annals_engine::{Durability, Engine, EngineConfig};
use annals_log::LogConfig;
use uuid::Uuid;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

fn event(i: u128, ty: &str, data: &str) -> NewEvent {
    NewEvent {
        id: Uuid::from_u128(0xA11A_0000_0000_0000_0000_0000_0000_0000 + i),
        ..NewEvent::json(ty, data.to_owned()).unwrap()
    }
}

fn name(s: &str) -> StreamName {
    StreamName::new(s).unwrap()
}

fn write_fixture(dir: &Path) {
    let config = EngineConfig {
        durability: Durability::Fsync,
        log: LogConfig {
            segment_bytes_max: 2048,
            ..Default::default()
        },
        ..EngineConfig::default()
    };
    let (engine, _) = Engine::open_dir(dir, config).unwrap();
    for i in 0..20u128 {
        let stream = name(&format!("order-{}", i % 3));
        engine
            .append(
                &stream,
                ExpectedRevision::Any,
                vec![event(i, "OrderEvent", &format!("{{\"n\":{i}}}"))],
            )
            .unwrap();
    }
    let meta = name("order-0").metadata_stream().unwrap();
    engine
        .append(
            &meta,
            ExpectedRevision::Any,
            vec![event(100, "$metadata", r#"{"$maxCount":3}"#)],
        )
        .unwrap();
    engine
        .delete(&name("order-1"), ExpectedRevision::Any)
        .unwrap();
    engine
        .tombstone(&name("order-2"), ExpectedRevision::Any)
        .unwrap();
    engine.close();
}

#[test]
fn version_1_fixture_opens_and_reads() {
    let src = fixture_dir();
    if std::env::var_os("ANNALS_WRITE_FIXTURE").is_some() {
        let _ = std::fs::remove_dir_all(&src);
        write_fixture(&src);
        let _ = std::fs::remove_file(src.join("LOCK"));
    }
    // Work on a copy: opening may write (index checkpoint, lock file).
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&src).expect("fixture directory is committed") {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    let (engine, report) = Engine::open_dir(tmp.path(), EngineConfig::default()).unwrap();
    assert_eq!(report.log.truncated, None);
    // Index format 1 numbered no category or event-type revisions: it is rebuilt from the log.
    assert!(report.index_rebuilt, "{report:?}");
    // 20 events, 1 metadata event, 1 soft-delete metadata event, 1 tombstone.
    assert_eq!(engine.head(), Position(23));
    assert!(
        engine.log().segment_names().len() > 1,
        "fixture spans segments"
    );
    let o0 = engine
        .read_stream(&name("order-0"), Revision(0), Direction::Forwards, 100)
        .unwrap();
    assert_eq!(
        o0.iter().map(|e| e.revision.0).collect::<Vec<_>>(),
        vec![4, 5, 6]
    );
    assert_eq!(
        o0[0].id,
        Uuid::from_u128(0xA11A_0000_0000_0000_0000_0000_0000_0000 + 12)
    );
    assert_eq!(&o0[2].data[..], b"{\"n\":18}");
    let o1 = engine
        .read_stream(&name("order-1"), Revision(0), Direction::Forwards, 100)
        .unwrap_err();
    assert!(matches!(
        o1.domain(),
        Some(DomainError::StreamNotFound { .. })
    ));
    let o2 = engine
        .read_stream(&name("order-2"), Revision(0), Direction::Forwards, 100)
        .unwrap_err();
    assert!(matches!(
        o2.domain(),
        Some(DomainError::StreamDeleted { .. })
    ));
    let all = engine
        .read_all(Position(1), Direction::Forwards, 100, None)
        .unwrap();
    assert_eq!(all.events.len(), 23);
    assert!(
        all.events
            .iter()
            .enumerate()
            .all(|(i, e)| e.position.0 == i as u64 + 1)
    );
    // `$ce-order` numbers all 20 events; `$maxCount` shows order-0's last three, order-1 is
    // deleted and order-2 tombstoned.
    let links = |engine: &Engine, stream: &str| {
        engine
            .read_stream(&name(stream), Revision(0), Direction::Forwards, 100)
            .unwrap()
            .iter()
            .map(|e| (e.revision.0, String::from_utf8(e.data.to_vec()).unwrap()))
            .collect::<Vec<_>>()
    };
    let want = vec![
        (12, "4@order-0".to_owned()),
        (15, "5@order-0".to_owned()),
        (18, "6@order-0".to_owned()),
    ];
    assert_eq!(links(&engine, "$ce-order"), want);
    assert_eq!(links(&engine, "$et-OrderEvent"), want);
    let check = engine.check(|_| {}).unwrap();
    assert!(check.problems.is_empty(), "{:?}", check.problems);
    engine.close();
    drop(engine);
    // Rebuilt once: the next open keeps the new index and reads the same revisions.
    let (engine, report) = Engine::open_dir(tmp.path(), EngineConfig::default()).unwrap();
    assert!(!report.index_rebuilt, "{report:?}");
    assert_eq!(links(&engine, "$ce-order"), want);
}
