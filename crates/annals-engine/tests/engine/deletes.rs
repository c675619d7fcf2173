//! Expected revisions around deletes, as KurrentDB judges them (and as `kurrentdbclient`'s own
//! tests expect): a soft delete of a stream that never had events is refused whatever it
//! expected; a soft-deleted stream takes `no_stream` and refuses `stream_exists` as deleted; a
//! tombstoned stream's metadata reads as deleted but still takes writes. Every refusal writes
//! nothing.

use annals_core::{
    Direction, DomainError, ExpectedRevision, NewEvent, Position, Revision, StreamName,
};
use annals_engine::{Engine, EngineConfig, EngineError};

fn ev(i: usize) -> NewEvent {
    NewEvent::json("T", format!("{{\"i\":{i}}}")).unwrap()
}

fn meta(json: &str) -> NewEvent {
    NewEvent::json("$metadata", json.to_owned()).unwrap()
}

fn name(s: &str) -> StreamName {
    StreamName::new(s).unwrap()
}

fn open() -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let (engine, _) = Engine::open_dir(dir.path(), EngineConfig::default()).unwrap();
    (dir, engine)
}

fn domain(e: EngineError) -> DomainError {
    e.domain().cloned().unwrap_or_else(|| panic!("{e:?}"))
}

fn revisions(engine: &Engine, s: &StreamName) -> Result<Vec<u64>, DomainError> {
    engine
        .read_stream(s, Revision(0), Direction::Forwards, 100)
        .map(|got| got.iter().map(|e| e.revision.0).collect())
        .map_err(domain)
}

const EVERY_KIND: [ExpectedRevision; 4] = [
    ExpectedRevision::Any,
    ExpectedRevision::NoStream,
    ExpectedRevision::StreamExists,
    ExpectedRevision::Exact(0),
];

#[test]
fn soft_delete_of_a_stream_that_never_existed_is_refused_whatever_it_expects() {
    let (_dir, engine) = open();
    let s = name("never-1");
    for expected in EVERY_KIND {
        let err = domain(engine.delete(&s, expected).unwrap_err());
        assert_eq!(
            err,
            DomainError::WrongExpectedRevision {
                stream: "never-1".into(),
                expected,
                actual: None,
            }
        );
    }
    // Metadata alone does not make a stream: still refused.
    engine
        .append(
            &s.metadata_stream().unwrap(),
            ExpectedRevision::Any,
            vec![meta(r#"{"a":1}"#)],
        )
        .unwrap();
    let err = domain(engine.delete(&s, ExpectedRevision::Any).unwrap_err());
    assert!(matches!(
        err,
        DomainError::WrongExpectedRevision { actual: None, .. }
    ));
    // Nothing but the metadata event was written.
    assert_eq!(engine.head(), Position(1));
    // A tombstone of a stream that never existed is allowed, as in KurrentDB.
    engine.tombstone(&s, ExpectedRevision::Any).unwrap();
}

#[test]
fn soft_deleted_stream_takes_no_stream_and_refuses_stream_exists() {
    let (_dir, engine) = open();
    let s = name("order-1");
    engine
        .append(&s, ExpectedRevision::NoStream, vec![ev(0), ev(1)])
        .unwrap();
    engine.delete(&s, ExpectedRevision::Exact(1)).unwrap();
    let head = engine.head();

    // Refused, writing nothing: stream_exists (deleted), a revision that is not the last one.
    assert_eq!(
        domain(
            engine
                .delete(&s, ExpectedRevision::StreamExists)
                .unwrap_err()
        ),
        DomainError::StreamDeleted {
            stream: "order-1".into()
        }
    );
    assert_eq!(
        domain(
            engine
                .append(&s, ExpectedRevision::StreamExists, vec![ev(2)])
                .unwrap_err()
        ),
        DomainError::StreamDeleted {
            stream: "order-1".into()
        }
    );
    assert!(matches!(
        domain(engine.delete(&s, ExpectedRevision::Exact(0)).unwrap_err()),
        DomainError::WrongExpectedRevision {
            actual: Some(1),
            ..
        }
    ));
    assert!(matches!(
        domain(
            engine
                .append(&s, ExpectedRevision::Exact(0), vec![ev(2)])
                .unwrap_err()
        ),
        DomainError::WrongExpectedRevision {
            actual: Some(1),
            ..
        }
    ));
    assert_eq!(engine.head(), head);
    assert!(matches!(
        revisions(&engine, &s),
        Err(DomainError::StreamNotFound { .. })
    ));

    // Deleting again is fine with `any` or the last revision.
    engine.delete(&s, ExpectedRevision::Any).unwrap();
    engine.delete(&s, ExpectedRevision::Exact(1)).unwrap();

    // `no_stream` restores it; revisions go on from the last one.
    let r = engine
        .append(&s, ExpectedRevision::NoStream, vec![ev(2)])
        .unwrap();
    assert_eq!(r.next_revision, Revision(2));
    assert_eq!(revisions(&engine, &s), Ok(vec![2]));
    // Restored: `no_stream` no longer fits, `stream_exists` does.
    assert!(matches!(
        domain(
            engine
                .append(&s, ExpectedRevision::NoStream, vec![ev(3)])
                .unwrap_err()
        ),
        DomainError::WrongExpectedRevision {
            actual: Some(2),
            ..
        }
    ));
    engine
        .append(&s, ExpectedRevision::StreamExists, vec![ev(3)])
        .unwrap();
    engine.delete(&s, ExpectedRevision::StreamExists).unwrap();
    assert!(matches!(
        revisions(&engine, &s),
        Err(DomainError::StreamNotFound { .. })
    ));

    // The same after a reopen (the rules come from the log, not from memory).
    let dir = _dir;
    engine.close();
    drop(engine);
    let (engine, _) = Engine::open_dir(dir.path(), EngineConfig::default()).unwrap();
    assert!(matches!(
        domain(
            engine
                .delete(&s, ExpectedRevision::StreamExists)
                .unwrap_err()
        ),
        DomainError::StreamDeleted { .. }
    ));
    let r = engine
        .append(&s, ExpectedRevision::NoStream, vec![ev(4)])
        .unwrap();
    assert_eq!(r.next_revision, Revision(4));
    let check = engine.check(|_| {}).unwrap();
    assert!(check.problems.is_empty(), "{:?}", check.problems);
}

#[test]
fn tombstoned_streams_metadata_reads_as_deleted_and_still_takes_writes() {
    let (_dir, engine) = open();
    let s = name("cart-1");
    let m = s.metadata_stream().unwrap();
    engine
        .append(&s, ExpectedRevision::NoStream, vec![ev(0)])
        .unwrap();
    engine
        .append(
            &m,
            ExpectedRevision::NoStream,
            vec![meta(r#"{"foo":"baz"}"#)],
        )
        .unwrap();
    engine.tombstone(&s, ExpectedRevision::Any).unwrap();

    let deleted = DomainError::StreamDeleted {
        stream: "$$cart-1".into(),
    };
    assert_eq!(revisions(&engine, &m), Err(deleted.clone()));
    let backwards = engine
        .read_stream(&m, Revision::END, Direction::Backwards, 1)
        .map_err(domain);
    assert_eq!(backwards.err(), Some(deleted.clone()));
    // Writes to `$$cart-1` are taken (with its own expected revision), the stream stays deleted.
    let r = engine
        .append(
            &m,
            ExpectedRevision::Exact(0),
            vec![meta(r#"{"foo":"bar"}"#)],
        )
        .unwrap();
    assert_eq!(r.next_revision, Revision(1));
    engine
        .append(&m, ExpectedRevision::Any, vec![meta(r#"{"$tb":0}"#)])
        .unwrap();
    assert_eq!(revisions(&engine, &m), Err(deleted));
    assert!(matches!(
        revisions(&engine, &s),
        Err(DomainError::StreamDeleted { .. })
    ));
    assert!(matches!(
        domain(
            engine
                .append(&s, ExpectedRevision::Any, vec![ev(1)])
                .unwrap_err()
        ),
        DomainError::StreamDeleted { .. }
    ));
    // The metadata of a stream that was never tombstoned reads as before.
    let other = name("cart-2").metadata_stream().unwrap();
    engine
        .append(&other, ExpectedRevision::NoStream, vec![meta("{}")])
        .unwrap();
    assert_eq!(revisions(&engine, &other), Ok(vec![0]));
}
