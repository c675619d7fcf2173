//! The projection runtime against SQLite and a real engine: commits are whole across faults and
//! restarts, partitions do not change the view, error policies, rebuilds with a swap, replay
//! mode, read-your-writes waits, snapshots, and definitions rejected at registration.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::support::*;
use annals_core::{EventRecord, Position, StreamName};
use annals_projections::{
    AggregateSnapshot, Effect, FailureAction, Handler, HandlerContext, HandlerError, OnFailure,
    ProjectionError, ProjectionState, Projections, SqliteTarget, Target, Value, WaitError,
    load_aggregate, save_aggregate_snapshot,
};

fn sqlite(store: &Store) -> Box<dyn Target> {
    Box::new(SqliteTarget::open(store.db()).unwrap())
}

fn wait_head(p: &Projections, name: &str, store: &Store) {
    let head = store.engine.head();
    p.wait_for(name, head, WAIT)
        .unwrap_or_else(|e| panic!("{name} did not reach {head}: {e}; {:?}", p.status(name)));
}

fn sqlite_objects(db: &std::path::Path) -> Vec<String> {
    let mut t = SqliteTarget::open(db).unwrap();
    t.query_rows("SELECT name FROM sqlite_master WHERE name NOT LIKE 'annals_%' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .unwrap()
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .collect()
}

#[test]
fn checkpoint_and_rows_commit_together_across_faults_and_restarts() {
    let store = Store::new();
    store.deposits(10, 5);
    let plan = Arc::new(FaultPlan::default());
    // Three partitions commit at least once each, so commits 1 to 6 surely happen.
    plan.fail_at.lock().extend([2, 3, 5]);
    let projections = Projections::new(store.engine.clone());
    projections
        .register(
            spec("balances", 3),
            Box::new(FaultyTarget::open(&store.db(), Arc::clone(&plan))),
        )
        .unwrap();
    // Appends while it runs, some commits failing; then the runtime is dropped mid-run.
    for round in 0..10 {
        let last = store.deposits(10, 1);
        if round == 5 {
            projections.wait_for("balances", last, WAIT).unwrap();
            assert_eq!(plan.failed.load(Ordering::SeqCst), 3);
            // The next commits fail; each retry is a commit, so all three are used.
            let next = plan.commits.load(Ordering::SeqCst) + 1;
            plan.fail_at.lock().extend(next..next + 3);
        }
    }
    eventually("the later faults", || {
        plan.failed.load(Ordering::SeqCst) == 6
    });
    store.deposits(10, 3);
    drop(projections);
    store.deposits(10, 3);

    // A target that is down: the projection retries, shows the error and skips nothing.
    let plan = Arc::new(FaultPlan::default());
    plan.down.store(true, Ordering::SeqCst);
    let projections = Projections::new(store.engine.clone());
    projections
        .register(
            spec("balances", 3),
            Box::new(FaultyTarget::open(&store.db(), Arc::clone(&plan))),
        )
        .unwrap();
    eventually("the error to show", || {
        projections
            .status("balances")
            .unwrap()
            .last_error
            .is_some_and(|e| e.contains("injected"))
    });
    assert!(projections.status("balances").unwrap().position < store.engine.head().0);
    plan.down.store(false, Ordering::SeqCst);
    wait_head(&projections, "balances", &store);
    assert_eq!(
        view_rows(&store.db()),
        expected_balances(&store.engine, &HashSet::new())
    );
    let status = projections.status("balances").unwrap();
    assert_eq!(status.state, ProjectionState::Running);
    assert_eq!(status.lag_events, 0);
    assert_eq!(status.lag_seconds, 0.0);
    assert!(status.last_error.is_none(), "{status:?}");
}

#[test]
fn four_partitions_give_the_same_view_as_one() {
    let store = Store::new();
    store.deposits(40, 8);
    let db1 = store.dir.path().join("one.db");
    let db4 = store.dir.path().join("four.db");
    let projections = Projections::new(store.engine.clone());
    projections
        .register(spec("seq", 1), Box::new(SqliteTarget::open(&db1).unwrap()))
        .unwrap();
    projections
        .register(spec("par", 4), Box::new(SqliteTarget::open(&db4).unwrap()))
        .unwrap();
    // More appends while both are live.
    store.deposits(40, 4);
    wait_head(&projections, "seq", &store);
    wait_head(&projections, "par", &store);
    let one = view_rows(&db1);
    let four = view_rows(&db4);
    assert_eq!(one.len(), 40);
    assert_eq!(one, four);
    assert_eq!(one, expected_balances(&store.engine, &HashSet::new()));
    // Every partition committed a checkpoint of its own.
    let mut t = SqliteTarget::open(&db4).unwrap();
    let stored = t.load("par").unwrap();
    assert_eq!(stored.generations[0].checkpoints.len(), 4);
    assert_eq!(projections.status("par").unwrap().partitions, 4);
    let names: Vec<String> = projections.list().into_iter().map(|s| s.name).collect();
    assert_eq!(names, vec!["par".to_owned(), "seq".to_owned()]);
}

#[test]
fn stop_policy_faults_before_the_event_and_resume_retries_it() {
    let store = Store::new();
    store.deposits(3, 2);
    let flaky = Arc::new(AtomicU64::new(3)); // all three attempts fail
    let bad = store.append("acct-1", "Flaky", 10);
    store.deposits(3, 1);
    let projections = Projections::new(store.engine.clone());
    projections
        .register(
            spec_with("balances", 2, OnFailure::Stop, Arc::clone(&flaky)),
            sqlite(&store),
        )
        .unwrap();
    eventually("the fault", || {
        projections.status("balances").unwrap().state == ProjectionState::Faulted
    });
    let status = projections.status("balances").unwrap();
    assert!(status.position < bad.0, "{status:?}");
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("flaky"))
    );
    let failures = projections.failures("balances").unwrap();
    assert_eq!(failures[0].position, bad);
    assert_eq!(failures[0].action, FailureAction::Stopped);
    // The checkpoint of the failing event's partition is just before it.
    let mut t = SqliteTarget::open(store.db()).unwrap();
    let cps = &t.load("balances").unwrap().generations[0].checkpoints;
    assert!(
        cps.iter().any(|(_, p)| *p == Position(bad.0 - 1)),
        "{cps:?}"
    );
    assert_eq!(flaky.load(Ordering::SeqCst), 0);
    projections.resume("balances").unwrap();
    wait_head(&projections, "balances", &store);
    assert_eq!(
        view_rows(&store.db()),
        expected_balances(&store.engine, &HashSet::new())
    );
    assert_eq!(
        projections.status("balances").unwrap().state,
        ProjectionState::Running
    );
}

#[test]
fn skip_policy_records_and_goes_on() {
    let store = Store::new();
    store.deposits(3, 2);
    let poison = store.append("acct-1", "Poison", 1);
    let bad_sql = store.append("acct-2", "BadSql", 1);
    store.deposits(3, 2);
    let projections = Projections::new(store.engine.clone());
    projections
        .register(
            spec_with("balances", 1, OnFailure::Skip, Arc::new(AtomicU64::new(0))),
            sqlite(&store),
        )
        .unwrap();
    wait_head(&projections, "balances", &store);
    assert_eq!(
        view_rows(&store.db()),
        expected_balances(&store.engine, &HashSet::new())
    );
    let failures = projections.failures("balances").unwrap();
    let skipped: HashSet<u64> = failures
        .iter()
        .filter(|f| f.action == FailureAction::Skipped)
        .map(|f| f.position.0)
        .collect();
    assert_eq!(skipped, HashSet::from([poison.0, bad_sql.0]));
    assert!(
        failures.iter().any(|f| f.message.contains("NOT NULL")),
        "{failures:?}"
    );
    assert_eq!(projections.status("balances").unwrap().parked, 0);
}

#[test]
fn park_policy_holds_one_stream_while_others_go_on_and_retry_releases() {
    let store = Store::new();
    store.deposits(3, 1);
    let flaky = Arc::new(AtomicU64::new(3));
    let parked_at = store.append("acct-1", "Flaky", 100);
    let later_1 = store.append("acct-1", "Deposited", 5);
    store.append("acct-1", "Deposited", 6);
    store.append("acct-2", "Deposited", 7);
    let projections = Projections::new(store.engine.clone());
    projections
        .register(
            spec_with("balances", 2, OnFailure::Park, Arc::clone(&flaky)),
            sqlite(&store),
        )
        .unwrap();
    wait_head(&projections, "balances", &store);
    // Live events of other streams keep flowing, the parked stream's do not.
    store.append("acct-2", "Deposited", 8);
    store.append("acct-1", "Deposited", 9);
    wait_head(&projections, "balances", &store);
    let mut held: HashSet<u64> = HashSet::from([parked_at.0, later_1.0, later_1.0 + 1]);
    held.insert(store.engine.head().0);
    assert_eq!(
        view_rows(&store.db()),
        expected_balances(&store.engine, &held)
    );
    let status = projections.status("balances").unwrap();
    assert_eq!(status.parked, 4, "{status:?}");
    assert_eq!(status.state, ProjectionState::Running);
    let failures = projections.failures("balances").unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!(
        (failures[0].position, failures[0].action),
        (parked_at, FailureAction::Parked)
    );

    let report = projections.retry_parked("balances").unwrap();
    assert_eq!((report.released, report.still_parked), (4, 0));
    assert_eq!(
        view_rows(&store.db()),
        expected_balances(&store.engine, &HashSet::new())
    );
    assert_eq!(projections.status("balances").unwrap().parked, 0);
    // The stream is no longer parked: new events apply.
    store.append("acct-1", "Deposited", 1);
    wait_head(&projections, "balances", &store);
    assert_eq!(
        view_rows(&store.db()),
        expected_balances(&store.engine, &HashSet::new())
    );
}

#[test]
fn retry_parked_keeps_a_stream_parked_while_it_still_fails() {
    let store = Store::new();
    store.deposits(2, 1);
    let poison = store.append("acct-0", "Poison", 1);
    let after = store.append("acct-0", "Deposited", 3);
    let projections = Projections::new(store.engine.clone());
    projections
        .register(
            spec_with("balances", 1, OnFailure::Park, Arc::new(AtomicU64::new(0))),
            sqlite(&store),
        )
        .unwrap();
    wait_head(&projections, "balances", &store);
    let report = projections.retry_parked("balances").unwrap();
    assert_eq!((report.released, report.still_parked), (0, 2));
    let held = HashSet::from([poison.0, after.0]);
    assert_eq!(
        view_rows(&store.db()),
        expected_balances(&store.engine, &held)
    );
}

/// Rows and the sum of `events` seen through the reader view.
fn view_totals(t: &mut SqliteTarget) -> (i64, i64) {
    let rows = t
        .query_rows("SELECT count(*), coalesce(sum(events), 0) FROM balances")
        .unwrap();
    let n = |i: usize| -> i64 { rows[0][i].as_deref().unwrap().parse().unwrap() };
    (n(0), n(1))
}

#[test]
fn rebuild_swaps_without_downtime_while_appends_continue() {
    let store = Store::new();
    store.deposits(20, 20);
    let projections = Arc::new(Projections::new(store.engine.clone()));
    projections
        .register(spec("balances", 1), sqlite(&store))
        .unwrap();
    wait_head(&projections, "balances", &store);
    let complete = view_totals(&mut SqliteTarget::open(store.db()).unwrap());
    assert_eq!(complete, (20, 400));

    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (db, stop) = (store.db(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut t = SqliteTarget::open(&db).unwrap();
            let mut reads = 0u64;
            let mut last = 0;
            while !stop.load(Ordering::SeqCst) {
                let (rows, events) = view_totals(&mut t);
                // Never a half-built view: every read sees at least what was there before the
                // rebuild, and never goes back.
                assert_eq!(rows, 20, "rows seen during the rebuild");
                assert!(
                    events >= 400 && events >= last,
                    "events {events} after {last}"
                );
                last = events;
                reads += 1;
            }
            reads
        })
    };
    let writer = {
        let (engine, stop) = (store.engine.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let s = StreamName::new(format!("acct-{}", n % 20)).unwrap();
                engine
                    .append(
                        &s,
                        annals_core::ExpectedRevision::Any,
                        vec![annals_core::NewEvent::json("Deposited", "{\"amount\":1}").unwrap()],
                    )
                    .unwrap();
                n += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    projections
        .rebuild("balances", spec("balances", 4))
        .unwrap();
    assert!(
        projections.status("balances").unwrap().rebuild.is_some()
            || projections.status("balances").unwrap().generation == 2
    );
    eventually("the swap", || {
        let s = projections.status("balances").unwrap();
        s.generation == 2 && s.rebuild.is_none()
    });
    // Appends keep landing in the new generation after the swap.
    std::thread::sleep(Duration::from_millis(20));
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let reads = reader.join().unwrap();
    assert!(reads > 0);
    wait_head(&projections, "balances", &store);
    assert_eq!(
        view_rows(&store.db()),
        expected_balances(&store.engine, &HashSet::new())
    );
    assert_eq!(
        sqlite_objects(&store.db()),
        vec!["balances".to_owned(), "balances__g2".to_owned()]
    );
    let status = projections.status("balances").unwrap();
    assert_eq!(
        (status.state, status.partitions),
        (ProjectionState::Running, 4)
    );
}

#[test]
fn a_restart_during_a_rebuild_resumes_it() {
    let store = Store::new();
    store.deposits(10, 10);
    let projections = Projections::new(store.engine.clone());
    projections
        .register(spec("balances", 2), sqlite(&store))
        .unwrap();
    wait_head(&projections, "balances", &store);
    projections.pause("balances").unwrap();
    projections
        .rebuild("balances", spec("balances", 3))
        .unwrap();
    let status = projections.status("balances").unwrap();
    assert_eq!(status.state, ProjectionState::Paused);
    assert_eq!(status.rebuild.map(|r| r.generation), Some(2));
    drop(projections);
    let stored = SqliteTarget::open(store.db())
        .unwrap()
        .load("balances")
        .unwrap();
    let gens: Vec<(u32, bool)> = stored
        .generations
        .iter()
        .map(|g| (g.generation, g.serving))
        .collect();
    assert_eq!(gens, vec![(1, true), (2, false)]);
    store.deposits(10, 2);

    // Serving generation with its own definition, the building one with the new.
    let projections = Projections::new(store.engine.clone());
    projections
        .register_resuming(
            spec("balances", 2),
            Some(spec("balances", 3)),
            sqlite(&store),
        )
        .unwrap();
    eventually("the resumed rebuild to swap", || {
        projections.status("balances").unwrap().generation == 2
    });
    assert_eq!(projections.status("balances").unwrap().partitions, 3);
    wait_head(&projections, "balances", &store);
    assert_eq!(
        view_rows(&store.db()),
        expected_balances(&store.engine, &HashSet::new())
    );
    let stored = SqliteTarget::open(store.db())
        .unwrap()
        .load("balances")
        .unwrap();
    assert_eq!(stored.generations.len(), 1);
    assert!(stored.generations[0].serving);
}

fn notify(store: &Store, stream: &str) -> Position {
    store.append(stream, "Notify", 0)
}

fn delivered_positions(sink: &RecordingSink) -> Vec<u64> {
    sink.delivered
        .lock()
        .iter()
        .map(|(_, e)| match e {
            Effect::Message { payload, .. } => String::from_utf8_lossy(payload).parse().unwrap(),
            other => panic!("unexpected effect {other:?}"),
        })
        .collect()
}

#[test]
fn replay_suppresses_effects_and_live_delivers_them_once() {
    let store = Store::new();
    let mut expected: Vec<u64> = (0..5)
        .map(|i| notify(&store, &format!("acct-{i}")).0)
        .collect();
    let sink = Arc::new(RecordingSink::default());
    let projections = Projections::with_effect_sink(store.engine.clone(), sink.clone());
    projections
        .register(spec("balances", 2), sqlite(&store))
        .unwrap();
    wait_head(&projections, "balances", &store);
    // A new projection's first generation is live: its history's effects run once.
    let mut got = delivered_positions(&sink);
    got.sort_unstable();
    assert_eq!(got, expected);

    projections
        .rebuild("balances", spec("balances", 3))
        .unwrap();
    eventually("the swap", || {
        projections.status("balances").unwrap().generation == 2
    });
    assert_eq!(
        delivered_positions(&sink).len(),
        5,
        "a rebuild replayed effects"
    );
    assert_eq!(
        projections.mode_at("balances", Position(5)),
        Some(annals_projections::Mode::Replay)
    );
    expected.push(notify(&store, "acct-1").0);
    expected.push(notify(&store, "acct-9").0);
    wait_head(&projections, "balances", &store);

    projections.reset("balances").unwrap();
    wait_head(&projections, "balances", &store);
    assert_eq!(projections.status("balances").unwrap().generation, 3);
    assert_eq!(
        sqlite_objects(&store.db()),
        vec!["balances".to_owned(), "balances__g3".to_owned()]
    );
    expected.push(notify(&store, "acct-2").0);
    wait_head(&projections, "balances", &store);
    assert_eq!(
        view_rows(&store.db()),
        expected_balances(&store.engine, &HashSet::new())
    );

    // Every effect exactly once; none from the rebuild or the reset's replay.
    let mut got = delivered_positions(&sink);
    got.sort_unstable();
    assert_eq!(got, expected);
    drop(projections);

    // A restart after the reset keeps its replay boundary.
    let projections = Projections::with_effect_sink(store.engine.clone(), sink.clone());
    projections
        .register(spec("balances", 2), sqlite(&store))
        .unwrap();
    wait_head(&projections, "balances", &store);
    assert_eq!(delivered_positions(&sink).len(), expected.len());
}

#[test]
fn wait_for_returns_on_apply_and_stale_on_timeout() {
    let store = Store::new();
    let projections = Projections::new(store.engine.clone());
    projections
        .register(spec("balances", 2), sqlite(&store))
        .unwrap();
    let p = store.append("acct-1", "Deposited", 5);
    let applied = projections.wait_for("balances", p, WAIT).unwrap();
    assert!(applied >= p);
    assert_eq!(
        view_rows(&store.db()),
        expected_balances(&store.engine, &HashSet::new())
    );

    projections.pause("balances").unwrap();
    let q = store.append("acct-2", "Deposited", 5);
    let err = projections
        .wait_for("balances", q, Duration::from_millis(30))
        .unwrap_err();
    assert!(
        matches!(err, WaitError::Stale { applied } if applied >= p && applied < q),
        "{err:?}"
    );
    let status = projections.status("balances").unwrap();
    assert_eq!(status.state, ProjectionState::Paused);
    assert_eq!(status.lag_events, 1);
    assert!(status.lag_seconds >= 0.0);
    projections.resume("balances").unwrap();
    assert!(projections.wait_for("balances", q, WAIT).unwrap() >= q);
    assert!(matches!(
        projections.wait_for("nope", q, WAIT),
        Err(WaitError::NotFound { .. })
    ));
}

/// Numbers every event of its partition in the order seen, with the count kept in memory.
struct Sequencer {
    seen: u64,
    restored: Arc<AtomicU64>,
}

impl Handler for Sequencer {
    fn handle(
        &mut self,
        event: &EventRecord,
        ctx: &mut HandlerContext<'_>,
    ) -> Result<(), HandlerError> {
        self.seen += 1;
        ctx.execute(
            "INSERT INTO {seq} (position, n) VALUES ($1, $2)",
            vec![
                Value::Integer(event.position.0 as i64),
                Value::Integer(self.seen as i64),
            ],
        );
        Ok(())
    }
    fn snapshot(&self) -> Option<Vec<u8>> {
        Some(self.seen.to_be_bytes().to_vec())
    }
    fn restore(&mut self, state: &[u8]) -> Result<(), HandlerError> {
        let bytes: [u8; 8] = state
            .try_into()
            .map_err(|_| HandlerError("bad state".into()))?;
        self.seen = u64::from_be_bytes(bytes);
        self.restored.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn sequencer_spec(restored: Arc<AtomicU64>) -> annals_projections::ProjectionSpec {
    let mut s = spec("sequence", 1);
    s.tables = vec!["seq".to_owned()];
    s.objects = vec!["seq".to_owned()];
    s.setup =
        vec!["CREATE TABLE {seq} (position INTEGER PRIMARY KEY, n INTEGER NOT NULL)".to_owned()];
    s.statements = vec![];
    s.snapshot_every = Some(4);
    s.handler = Arc::new(move || {
        Box::new(Sequencer {
            seen: 0,
            restored: Arc::clone(&restored),
        })
    });
    s
}

#[test]
fn handler_snapshots_resume_state_and_aggregate_snapshots_load() {
    let store = Store::new();
    store.deposits(3, 5);
    let restored = Arc::new(AtomicU64::new(0));
    let projections = Projections::new(store.engine.clone());
    projections
        .register(sequencer_spec(Arc::clone(&restored)), sqlite(&store))
        .unwrap();
    wait_head(&projections, "sequence", &store);
    // Single events: the checkpoint moves past the last snapshot.
    store.append("acct-1", "Deposited", 1);
    wait_head(&projections, "sequence", &store);
    drop(projections);
    let mut t = SqliteTarget::open(store.db()).unwrap();
    let snap = t
        .load_snapshot("projection:sequence:g1:p0")
        .unwrap()
        .expect("a snapshot");
    assert!(snap.position.0 >= 4);
    store.deposits(3, 2);

    let projections = Projections::new(store.engine.clone());
    projections
        .register(sequencer_spec(Arc::clone(&restored)), sqlite(&store))
        .unwrap();
    wait_head(&projections, "sequence", &store);
    assert_eq!(
        restored.load(Ordering::SeqCst),
        1,
        "the snapshot was not restored"
    );
    let rows = t
        .query_rows("SELECT position, n FROM seq ORDER BY position")
        .unwrap();
    let want: Vec<Vec<Option<String>>> = all_events(&store.engine)
        .iter()
        .filter(|e| e.stream.as_str().starts_with("acct-"))
        .enumerate()
        .map(|(i, e)| vec![Some(e.position.0.to_string()), Some((i + 1).to_string())])
        .collect();
    assert_eq!(rows, want);

    // Aggregate snapshots: state at a revision, then the events after it.
    let stream = StreamName::new("acct-1").unwrap();
    let loaded = load_aggregate(&store.engine, &mut t, &stream, 100).unwrap();
    assert!(loaded.snapshot.is_none());
    let all = loaded.events.len();
    assert_eq!(all, 8);
    let third = &loaded.events[2];
    save_aggregate_snapshot(
        &mut t,
        &AggregateSnapshot {
            stream: stream.clone(),
            revision: third.revision.0,
            position: third.position,
            state: b"balance=42".to_vec(),
        },
    )
    .unwrap();
    let loaded = load_aggregate(&store.engine, &mut t, &stream, 100).unwrap();
    let snapshot = loaded.snapshot.unwrap();
    assert_eq!(
        (snapshot.revision, snapshot.state.as_slice()),
        (2, &b"balance=42"[..])
    );
    assert_eq!(loaded.events.len(), all - 3);
    assert_eq!(loaded.events[0].revision.0, 3);
    let none = load_aggregate(
        &store.engine,
        &mut t,
        &StreamName::new("acct-none").unwrap(),
        10,
    )
    .unwrap();
    assert!(none.snapshot.is_none() && none.events.is_empty());
}

#[test]
fn a_bad_definition_is_rejected_at_registration_and_creates_nothing() {
    let store = Store::new();
    let projections = Projections::new(store.engine.clone());
    let bad_sql = {
        let mut s = spec("balances", 1);
        s.statements = vec!["INSERT INTO {balances} (stream, nope) VALUES ($1, $2)".to_owned()];
        s
    };
    let err = projections.register(bad_sql, sqlite(&store)).unwrap_err();
    assert!(
        matches!(&err, ProjectionError::Definition { message, .. } if message.contains("nope")),
        "{err}"
    );

    let bad_setup = {
        let mut s = spec("balances", 1);
        s.setup = vec!["CREATE TABLE {balances} (stream TEXT PRIMARY KEY,".to_owned()];
        s
    };
    let err = projections.register(bad_setup, sqlite(&store)).unwrap_err();
    assert!(matches!(err, ProjectionError::Definition { .. }), "{err}");

    let unknown_object = {
        let mut s = spec("balances", 1);
        s.statements = vec!["INSERT INTO {ledger} (stream) VALUES ($1)".to_owned()];
        s
    };
    let err = projections
        .register(unknown_object, sqlite(&store))
        .unwrap_err();
    assert!(
        matches!(&err, ProjectionError::InvalidSpec { reason, .. } if reason.contains("ledger")),
        "{err}"
    );

    let err = projections
        .register(spec("Bad-Name", 1), sqlite(&store))
        .unwrap_err();
    assert!(matches!(err, ProjectionError::InvalidSpec { .. }), "{err}");
    let err = projections
        .register(spec("balances", 0), sqlite(&store))
        .unwrap_err();
    assert!(matches!(err, ProjectionError::InvalidSpec { .. }), "{err}");

    assert!(
        sqlite_objects(&store.db()).is_empty(),
        "{:?}",
        sqlite_objects(&store.db())
    );
    let mut t = SqliteTarget::open(store.db()).unwrap();
    assert!(t.load("balances").unwrap().generations.is_empty());
    assert!(projections.list().is_empty());

    // A good definition then registers; a second registration of the name is refused.
    projections
        .register(spec("balances", 1), sqlite(&store))
        .unwrap();
    let err = projections
        .register(spec("balances", 1), sqlite(&store))
        .unwrap_err();
    assert!(matches!(err, ProjectionError::AlreadyRegistered { .. }));
    // A rebuild with bad SQL is refused too, and the projection keeps serving.
    let mut bad = spec("balances", 1);
    bad.setup = vec!["CREATE TABLE {balances} (".to_owned()];
    assert!(matches!(
        projections.rebuild("balances", bad),
        Err(ProjectionError::Definition { .. })
    ));
    assert!(projections.status("balances").unwrap().rebuild.is_none());
}

#[test]
fn event_type_sources_match_exactly_and_status_serializes() {
    let store = Store::new();
    let sink = Arc::new(RecordingSink::default());
    let projections = Projections::with_effect_sink(store.engine.clone(), sink.clone());
    let mut exact = spec("exact", 2);
    // The store's prefix filter also passes `Notify`; the runtime must not.
    exact.source = annals_projections::Source::EventTypes(vec!["Notif".to_owned()]);
    projections.register(exact, sqlite(&store)).unwrap();
    let mut deposits = spec("deposits", 1);
    deposits.tables = vec![];
    deposits.objects = vec!["balances".to_owned()];
    deposits.source = annals_projections::Source::EventTypes(vec!["Deposited".to_owned()]);
    projections
        .register(
            deposits,
            Box::new(SqliteTarget::open(store.dir.path().join("other.db")).unwrap()),
        )
        .unwrap();
    notify(&store, "acct-1");
    store.deposits(2, 2);
    wait_head(&projections, "exact", &store);
    wait_head(&projections, "deposits", &store);
    let delivered = sink.delivered.lock().clone();
    assert!(delivered.is_empty(), "{delivered:?}");
    assert!(view_rows(&store.db()).is_empty());

    let status = projections.status("deposits").unwrap();
    assert!(status.rate_events_per_second > 0.0, "{status:?}");
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["state"], "running");
    assert_eq!(json["name"], "deposits");
    assert_eq!(json["position"], store.engine.head().0);
    assert_eq!(json["lag_events"], 0);
    assert!(json["rebuild"].is_null());
    assert!(matches!(
        projections.status("nope"),
        Err(ProjectionError::NotFound { .. })
    ));
}
