//! End-to-end behaviour of the engine on a real directory: appends with every expected-revision
//! kind, reads in both directions, `$all` with filters, categories, types, metadata and deletes.

use annals_core::{
    Direction, DomainError, ExpectedRevision, Filter, FilterTarget, NewEvent, Position, Revision,
    StreamName,
};
use annals_engine::{Engine, EngineConfig, EngineError};

fn ev(ty: &str, i: usize) -> NewEvent {
    NewEvent::json(ty, format!("{{\"i\":{i}}}")).unwrap()
}

fn name(s: &str) -> StreamName {
    StreamName::new(s).unwrap()
}

#[test]
fn append_read_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, report) = Engine::open_dir(dir.path(), EngineConfig::default()).unwrap();
    assert_eq!(report.head, Position(0));
    let a = name("order-1");
    let r = engine
        .append(
            &a,
            ExpectedRevision::NoStream,
            vec![ev("Placed", 0), ev("Paid", 1)],
        )
        .unwrap();
    assert_eq!(r.next_revision, Revision(1));
    assert_eq!(r.position, Position(2));
    let err = engine
        .append(&a, ExpectedRevision::NoStream, vec![ev("X", 2)])
        .unwrap_err();
    assert!(matches!(
        err.domain(),
        Some(DomainError::WrongExpectedRevision {
            actual: Some(1),
            ..
        })
    ));
    engine
        .append(&name("cart-1"), ExpectedRevision::Any, vec![ev("Added", 0)])
        .unwrap();
    engine
        .append(&a, ExpectedRevision::Exact(1), vec![ev("Shipped", 3)])
        .unwrap();
    let fwd = engine
        .read_stream(&a, Revision(0), Direction::Forwards, 10)
        .unwrap();
    assert_eq!(
        fwd.iter().map(|e| e.position.0).collect::<Vec<_>>(),
        vec![1, 2, 4]
    );
    let back = engine
        .read_stream(&a, Revision::END, Direction::Backwards, 2)
        .unwrap();
    assert_eq!(
        back.iter().map(|e| e.revision.0).collect::<Vec<_>>(),
        vec![2, 1]
    );
    let all = engine
        .read_all(Position(1), Direction::Forwards, 100, None)
        .unwrap();
    assert_eq!(all.events.len(), 4);
    let f = Filter::prefixes(FilterTarget::StreamName, vec!["cart".into()]).unwrap();
    let carts = engine
        .read_all(Position(1), Direction::Forwards, 100, Some(&f))
        .unwrap();
    assert_eq!(carts.events.len(), 1);
    let cat = engine
        .read_category("order", Revision(0), Direction::Forwards, 10)
        .unwrap();
    assert_eq!(cat.len(), 3);
    let ty = engine
        .read_event_type("Paid", Revision(0), Direction::Forwards, 10)
        .unwrap();
    assert_eq!(ty.len(), 1);
    let back_all = engine
        .read_all(Position::END, Direction::Backwards, 3, None)
        .unwrap();
    assert_eq!(
        back_all
            .events
            .iter()
            .map(|e| e.position.0)
            .collect::<Vec<_>>(),
        vec![4, 3, 2]
    );
    engine.close();
    drop(engine);
    let (engine, report) = Engine::open_dir(dir.path(), EngineConfig::default()).unwrap();
    assert_eq!(report.head, Position(4));
    let fwd2 = engine
        .read_stream(&a, Revision(0), Direction::Forwards, 10)
        .unwrap();
    assert_eq!(fwd, fwd2);
    let check = engine.check(|_| {}).unwrap();
    assert!(check.problems.is_empty(), "{:?}", check.problems);
    assert_eq!(check.events, 4);
}

#[test]
fn deletes_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, _) = Engine::open_dir(dir.path(), EngineConfig::default()).unwrap();
    let s = name("acct-1");
    for i in 0..5 {
        engine
            .append(&s, ExpectedRevision::Any, vec![ev("T", i)])
            .unwrap();
    }
    let meta = s.metadata_stream().unwrap();
    let m = NewEvent::json("$metadata", r#"{"$maxCount":2}"#).unwrap();
    engine
        .append(&meta, ExpectedRevision::Any, vec![m])
        .unwrap();
    let got = engine
        .read_stream(&s, Revision(0), Direction::Forwards, 10)
        .unwrap();
    assert_eq!(
        got.iter().map(|e| e.revision.0).collect::<Vec<_>>(),
        vec![3, 4]
    );
    // Soft delete, then not found, then restore by appending.
    engine.delete(&s, ExpectedRevision::Exact(4)).unwrap();
    let err = engine
        .read_stream(&s, Revision(0), Direction::Forwards, 10)
        .unwrap_err();
    assert!(matches!(
        err.domain(),
        Some(DomainError::StreamNotFound { .. })
    ));
    engine
        .append(&s, ExpectedRevision::Exact(4), vec![ev("T", 5)])
        .unwrap();
    let got = engine
        .read_stream(&s, Revision(0), Direction::Forwards, 10)
        .unwrap();
    assert_eq!(
        got.iter().map(|e| e.revision.0).collect::<Vec<_>>(),
        vec![5]
    );
    // Tombstone: reads and appends fail forever, also after reopen.
    engine.tombstone(&s, ExpectedRevision::Any).unwrap();
    let err = engine
        .append(&s, ExpectedRevision::Any, vec![ev("T", 6)])
        .unwrap_err();
    assert!(matches!(
        err.domain(),
        Some(DomainError::StreamDeleted { .. })
    ));
    engine.close();
    drop(engine);
    let (engine, _) = Engine::open_dir(dir.path(), EngineConfig::default()).unwrap();
    let err = engine
        .read_stream(&s, Revision(0), Direction::Forwards, 10)
        .unwrap_err();
    assert!(matches!(
        err.domain(),
        Some(DomainError::StreamDeleted { .. })
    ));
    let bad = engine
        .append(&name("x"), ExpectedRevision::Any, vec![])
        .unwrap_err();
    assert!(matches!(bad, EngineError::Input(_)));
    let check = engine.check(|_| {}).unwrap();
    assert!(check.problems.is_empty(), "{:?}", check.problems);
}

#[test]
fn idempotent_retry_returns_original() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, _) = Engine::open_dir(dir.path(), EngineConfig::default()).unwrap();
    let s = name("s-1");
    let events = vec![ev("A", 0), ev("B", 1)];
    let first = engine
        .append(&s, ExpectedRevision::NoStream, events.clone())
        .unwrap();
    let again = engine
        .append(&s, ExpectedRevision::NoStream, events.clone())
        .unwrap();
    assert_eq!(first, again);
    let any = engine
        .append(&s, ExpectedRevision::Any, events.clone())
        .unwrap();
    assert_eq!(first, any);
    assert_eq!(engine.head(), Position(2));
    engine.close();
    drop(engine);
    let (engine, _) = Engine::open_dir(dir.path(), EngineConfig::default()).unwrap();
    let after = engine
        .append(&s, ExpectedRevision::NoStream, events)
        .unwrap();
    assert_eq!(first, after, "window survives reopen");
    assert_eq!(engine.head(), Position(2));
}

#[test]
fn replay_all_matches_read_all() {
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        log: annals_log::LogConfig {
            segment_bytes_max: 4_096,
            ..Default::default()
        },
        ..EngineConfig::default()
    };
    let (engine, _) = Engine::open_dir(dir.path(), config).unwrap();
    for i in 0..200 {
        let events = (0..(i % 4 + 1)).map(|k| ev("T", i * 10 + k)).collect();
        engine
            .append(
                &name(&format!("s-{}", i % 7)),
                ExpectedRevision::Any,
                events,
            )
            .unwrap();
    }
    engine
        .tombstone(&name("s-3"), ExpectedRevision::Any)
        .unwrap();
    let head = engine.head();
    for from in [0, 1, 2, 57, 300, head.0, head.0 + 1] {
        let mut expected = Vec::new();
        let mut next = Position(from);
        loop {
            let page = engine
                .read_all(next, Direction::Forwards, 97, None)
                .unwrap();
            if page.events.is_empty() {
                break;
            }
            expected.extend(page.events);
            next = page.next;
        }
        let mut got = Vec::new();
        let end = engine
            .replay_all(Position(from), |e| {
                got.push((
                    e.position,
                    e.id,
                    e.stream.to_owned(),
                    e.revision,
                    e.data.to_vec(),
                ));
                std::ops::ControlFlow::Continue(())
            })
            .unwrap();
        let want: Vec<_> = expected
            .iter()
            .map(|e| {
                (
                    e.position,
                    e.id,
                    e.stream.to_string(),
                    e.revision,
                    e.data.to_vec(),
                )
            })
            .collect();
        assert_eq!(got, want, "from {from}");
        let want_end = if from <= head.0 { head.0 + 1 } else { from };
        assert_eq!(end, Position(want_end), "from {from}");
    }
    // Stopping early returns the position after the last event visited.
    let mut n = 0;
    let end = engine
        .replay_all(Position(10), |_| {
            n += 1;
            if n == 5 {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(end, Position(15));
}

/// A stream name with a control character is refused on append with a clear error, and nothing
/// is written; reading such a name is not refused (a stream stored with one stays readable).
#[test]
fn control_characters_in_a_new_stream_name_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, _) = Engine::open_dir(dir.path(), EngineConfig::default()).unwrap();
    engine
        .append(&name("ok-1"), ExpectedRevision::Any, vec![ev("A", 0)])
        .unwrap();
    let head = engine.head();
    for bad in [
        "a\u{0}b",
        "\u{1}\u{2}",
        "x\u{1b}[31my",
        "tab\there",
        "del\u{7f}",
        "c1\u{85}",
    ] {
        let err = engine
            .append(&name(bad), ExpectedRevision::Any, vec![ev("A", 0)])
            .unwrap_err();
        assert!(
            matches!(
                err,
                EngineError::Input(annals_core::InputError::StreamNameControlCharacter { .. })
            ),
            "{bad:?}: {err}"
        );
        assert!(err.to_string().contains("control character"), "{err}");
        assert!(matches!(
            engine.read_stream(&name(bad), Revision(0), Direction::Forwards, 10),
            Err(EngineError::Domain(DomainError::StreamNotFound { .. }))
        ));
    }
    assert_eq!(engine.head(), head, "nothing was written");
    // Everything else a client may send is a name: spaces, punctuation, any script.
    for good in ["with space", "ünïcødé-名前", "a/b?c#d%e", "$my-system"] {
        engine
            .append(&name(good), ExpectedRevision::Any, vec![ev("A", 0)])
            .unwrap();
    }
    engine.close();
}
