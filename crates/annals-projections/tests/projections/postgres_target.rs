//! The PostgreSQL target against a throwaway server: bookkeeping, atomic commits, swaps, value
//! binding by inferred type, and outages.

use std::sync::Arc;
use std::time::{Duration, Instant};

use annals_core::Position;
use annals_projections::{
    Failure, FailureAction, Parked, PartitionCommit, PostgresTarget, SnapshotRecord, Statement,
    Target, TargetError, Value,
};
use annals_testkit::postgres::TempPostgres;

fn stmt(sql: &str, params: Vec<Value>) -> Statement {
    Statement {
        sql: Arc::from(sql),
        params,
    }
}

fn commit<'a>(statements: &'a [Statement], checkpoint: u64) -> PartitionCommit<'a> {
    PartitionCommit {
        projection: "orders",
        generation: 1,
        partition: 0,
        statements,
        checkpoint: Position(checkpoint),
        failures: &[],
        parked: &[],
        released: &[],
        snapshot: None,
    }
}

fn insert(id: &str, n: i64) -> Statement {
    stmt(
        "INSERT INTO orders__g1 (id, n) VALUES ($1, $2)",
        vec![Value::Text(id.to_owned()), Value::Integer(n)],
    )
}

fn orders_target(pg: &TempPostgres) -> PostgresTarget {
    let mut t = PostgresTarget::connect(&pg.url()).unwrap();
    t.create_generation(
        "orders",
        1,
        &["CREATE TABLE orders__g1 (id TEXT PRIMARY KEY, n BIGINT NOT NULL)".to_owned()],
        true,
        &["orders".to_owned()],
    )
    .unwrap();
    t
}

fn rows(t: &mut PostgresTarget, sql: &str) -> Vec<Vec<Option<String>>> {
    t.query_rows(sql).unwrap()
}

fn strings(rows: &[Vec<Option<String>>]) -> Vec<String> {
    rows.iter()
        .map(|r| {
            r.iter()
                .map(|c| c.clone().unwrap_or_else(|| "NULL".to_owned()))
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}

fn checkpoints(t: &mut PostgresTarget, generation: u32) -> Vec<(u32, Position)> {
    t.load("orders")
        .unwrap()
        .generations
        .into_iter()
        .find(|g| g.generation == generation)
        .map(|g| g.checkpoints)
        .unwrap_or_default()
}

#[test]
fn install_is_idempotent_even_when_concurrent() {
    let pg = TempPostgres::start();
    let url = pg.url();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut t = PostgresTarget::connect(&url)?;
                t.install()?;
                t.install()
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap().unwrap();
    }
    let mut t = PostgresTarget::connect(&url).unwrap();
    t.install().unwrap();
    assert!(t.load("orders").unwrap().generations.is_empty());
    let tables = rows(
        &mut t,
        "SELECT tablename FROM pg_tables WHERE tablename LIKE 'annals%' ORDER BY 1",
    );
    assert_eq!(
        strings(&tables),
        [
            "annals_checkpoints",
            "annals_failures",
            "annals_fences",
            "annals_parked",
            "annals_projections",
            "annals_snapshots"
        ]
    );
}

#[test]
fn commit_writes_rows_and_bookkeeping_atomically() {
    let pg = TempPostgres::start();
    let mut t = orders_target(&pg);
    // The generation exists: a second create leaves it (and its setup) alone.
    t.create_generation(
        "orders",
        1,
        &["CREATE TABLE orders__g1 (id TEXT PRIMARY KEY)".to_owned()],
        true,
        &["orders".to_owned()],
    )
    .unwrap();

    let failure = Failure {
        position: Position(3),
        stream: "order-3".to_owned(),
        revision: 0,
        event_type: "Bad".to_owned(),
        message: "boom".to_owned(),
        action: FailureAction::Parked,
        recorded_at_ms: 1_700_000_000_000,
    };
    let parked = [
        Parked {
            position: Position(3),
            stream: "order-3".to_owned(),
            revision: 0,
            reason: "boom".to_owned(),
        },
        Parked {
            position: Position(4),
            stream: "order-3".to_owned(),
            revision: 1,
            reason: "stream parked".to_owned(),
        },
    ];
    let snapshot = SnapshotRecord {
        key: "projection:orders:g1:p0".to_owned(),
        position: Position(5),
        state: vec![1, 2, 3],
    };
    let first = [insert("a", 1), insert("b", 2)];
    t.commit(&PartitionCommit {
        failures: std::slice::from_ref(&failure),
        parked: &parked,
        snapshot: Some(&snapshot),
        ..commit(&first, 5)
    })
    .unwrap();
    assert_eq!(
        strings(&rows(&mut t, "SELECT id, n FROM orders ORDER BY id")),
        ["a|1", "b|2"]
    );
    assert_eq!(checkpoints(&mut t, 1), [(0, Position(5))]);
    assert_eq!(
        t.failures("orders", 1, 10).unwrap(),
        std::slice::from_ref(&failure)
    );
    assert_eq!(t.parked("orders", 1).unwrap(), parked);
    assert_eq!(
        t.load_snapshot("projection:orders:g1:p0").unwrap(),
        Some(snapshot)
    );

    // The third statement violates the primary key: nothing of this commit may stay.
    let second = [
        insert("c", 3),
        insert("d", 4),
        insert("a", 9),
        insert("e", 5),
    ];
    let err = t
        .commit(&PartitionCommit {
            failures: std::slice::from_ref(&failure),
            released: &[Position(3)],
            ..commit(&second, 9)
        })
        .unwrap_err();
    match err {
        TargetError::Statement { index, message } => {
            assert_eq!(index, Some(2), "{message}");
            assert!(message.contains("23505"), "{message}");
        }
        other => panic!("expected a statement error, got {other:?}"),
    }
    assert_eq!(
        strings(&rows(&mut t, "SELECT id, n FROM orders ORDER BY id")),
        ["a|1", "b|2"]
    );
    assert_eq!(checkpoints(&mut t, 1), [(0, Position(5))]);
    assert_eq!(t.failures("orders", 1, 10).unwrap().len(), 1);
    assert_eq!(t.parked("orders", 1).unwrap().len(), 2);

    // The same target goes on: releasing a parked event and a second partition.
    let third = [insert("c", 3)];
    t.commit(&PartitionCommit {
        released: &[Position(3)],
        ..commit(&third, 10)
    })
    .unwrap();
    t.commit(&PartitionCommit {
        partition: 1,
        ..commit(&[], 7)
    })
    .unwrap();
    assert_eq!(
        checkpoints(&mut t, 1),
        [(0, Position(10)), (1, Position(7))]
    );
    assert_eq!(
        t.parked("orders", 1)
            .unwrap()
            .iter()
            .map(|p| p.position)
            .collect::<Vec<_>>(),
        [Position(4)]
    );
    // Newest failure first.
    let later = Failure {
        position: Position(11),
        action: FailureAction::Skipped,
        ..failure.clone()
    };
    t.commit(&PartitionCommit {
        failures: std::slice::from_ref(&later),
        ..commit(&[], 11)
    })
    .unwrap();
    assert_eq!(t.failures("orders", 1, 10).unwrap(), [later, failure]);
    assert_eq!(t.failures("orders", 1, 1).unwrap().len(), 1);
}

#[test]
fn swap_shows_the_new_generation_and_drops_the_old() {
    let pg = TempPostgres::start();
    let mut t = orders_target(&pg);
    t.commit(&commit(&[insert("a", 1)], 1)).unwrap();
    t.save_snapshot(&SnapshotRecord {
        key: "projection:orders:g1:p0".to_owned(),
        position: Position(1),
        state: vec![9],
    })
    .unwrap();
    t.save_snapshot(&SnapshotRecord {
        key: "aggregate:order-1".to_owned(),
        position: Position(1),
        state: vec![7],
    })
    .unwrap();

    // Generation 2 has another column: CREATE OR REPLACE VIEW could not switch to it.
    t.create_generation(
        "orders",
        2,
        &[
            "CREATE TABLE orders__g2 (id TEXT PRIMARY KEY, n BIGINT NOT NULL, doubled BIGINT)"
                .to_owned(),
        ],
        false,
        &["orders".to_owned()],
    )
    .unwrap();
    t.commit(&PartitionCommit {
        generation: 2,
        ..commit(
            &[stmt(
                "INSERT INTO orders__g2 (id, n, doubled) VALUES ($1, $2, $3)",
                vec![
                    Value::Text("a".into()),
                    Value::Integer(21),
                    Value::Integer(42),
                ],
            )],
            1,
        )
    })
    .unwrap();
    // Still building: readers see generation 1.
    let mut reader = PostgresTarget::connect(&pg.url()).unwrap();
    assert_eq!(strings(&rows(&mut reader, "SELECT * FROM orders")), ["a|1"]);
    let stored = t.load("orders").unwrap();
    assert_eq!(
        stored
            .generations
            .iter()
            .map(|g| (g.generation, g.serving))
            .collect::<Vec<_>>(),
        [(1, true), (2, false)]
    );

    t.swap("orders", Some(1), 2, &["orders".to_owned()])
        .unwrap();
    assert_eq!(
        strings(&rows(&mut reader, "SELECT * FROM orders")),
        ["a|21|42"]
    );
    assert_eq!(
        strings(&rows(
            &mut reader,
            "SELECT to_regclass('orders__g1') IS NULL, to_regclass('orders__g2') IS NULL"
        )),
        ["t|f"]
    );
    let stored = t.load("orders").unwrap();
    assert_eq!(stored.generations.len(), 1);
    assert_eq!(stored.generations[0].generation, 2);
    assert!(stored.generations[0].serving);
    assert_eq!(t.load_snapshot("projection:orders:g1:p0").unwrap(), None);
    assert!(t.load_snapshot("aggregate:order-1").unwrap().is_some());
    assert!(
        t.swap("orders", Some(2), 3, &["orders".to_owned()])
            .is_err(),
        "swapping to a generation that does not exist must fail"
    );
    assert_eq!(
        strings(&rows(&mut reader, "SELECT * FROM orders")),
        ["a|21|42"]
    );

    // A reset drops the views too.
    t.drop_generation("orders", 2, &["orders".to_owned()], true)
        .unwrap();
    assert_eq!(
        strings(&rows(
            &mut reader,
            "SELECT to_regclass('orders') IS NULL, to_regclass('orders__g2') IS NULL"
        )),
        ["t|t"]
    );
    assert!(t.load("orders").unwrap().generations.is_empty());
}

#[test]
fn values_bind_by_the_parameter_type_postgres_inferred() {
    let pg = TempPostgres::start();
    let mut t = PostgresTarget::connect(&pg.url()).unwrap();
    t.create_generation(
        "typed",
        1,
        &[
            "CREATE TABLE typed__g1 (k INT4 PRIMARY KEY, big BIGINT, small INT2, doc JSONB, \
           plain JSON, id UUID, at TIMESTAMPTZ, amount NUMERIC(12, 2), ratio FLOAT8, \
           label TEXT, flag BOOLEAN, raw BYTEA)"
                .to_owned(),
        ],
        true,
        &["typed".to_owned()],
    )
    .unwrap();
    let sql = "INSERT INTO typed__g1 (k, big, small, doc, plain, id, at, amount, ratio, label, \
               flag, raw) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";
    let good = vec![
        Value::Integer(1),
        Value::Integer(9_000_000_000),
        Value::Integer(7),
        Value::Text("{\"a\": [1, 2]}".into()),
        Value::Json("{\"b\": true}".into()),
        Value::Text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()),
        Value::Text("2024-02-29T12:34:56.789Z".into()),
        Value::Text("12.5".into()),
        Value::Integer(3),
        Value::Integer(42),
        Value::Bool(true),
        Value::Blob(vec![0xde, 0xad]),
    ];
    let nulls = vec![
        Value::Integer(2),
        Value::Null,
        Value::Null,
        Value::Null,
        Value::Null,
        Value::Null,
        Value::Null,
        Value::Integer(3),
        Value::Real(0.25),
        Value::Null,
        Value::Null,
        Value::Null,
    ];
    let both = [stmt(sql, good.clone()), stmt(sql, nulls)];
    let c = PartitionCommit {
        projection: "typed",
        ..commit(&both, 2)
    };
    t.commit(&c).unwrap();
    assert_eq!(
        strings(&rows(
            &mut t,
            "SELECT k, big, small, doc->'a'->>1, plain->>'b', id, \
             to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS'), amount, ratio, label, \
             flag, encode(raw, 'hex') FROM typed ORDER BY k"
        )),
        [
            "1|9000000000|7|2|true|a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11|2024-02-29 12:34:56.789|12.50|3|42|t|dead",
            "2|NULL|NULL|NULL|NULL|NULL|NULL|3.00|0.25|NULL|NULL|NULL"
        ]
    );

    // Each value that does not fit is this statement's fault and names its parameter.
    let cases: Vec<(usize, Value, &str)> = vec![
        (1, Value::Text("many".into()), "$2"),
        (2, Value::Integer(40_000), "$3"),
        (3, Value::Text("{not json".into()), "$4"),
        (5, Value::Text("not-a-uuid".into()), "$6"),
        (6, Value::Integer(1_700_000_000), "$7"),
        (6, Value::Text("yesterday-ish".into()), "timestamp"),
        (10, Value::Integer(1), "$11"),
    ];
    for (slot, value, expected) in cases {
        let mut params = good.clone();
        params[0] = Value::Integer(100 + slot as i64);
        params[slot] = value.clone();
        let bad = [stmt("SELECT 1", vec![]), stmt(sql, params)];
        let err = t
            .commit(&PartitionCommit {
                projection: "typed",
                ..commit(&bad, 3)
            })
            .unwrap_err();
        match err {
            TargetError::Statement { index, message } => {
                assert_eq!(index, Some(1), "{value:?}: {message}");
                assert!(message.contains(expected), "{value:?}: {message}");
            }
            other => panic!("{value:?}: expected a statement error, got {other:?}"),
        }
    }
    // Too few values for the placeholders is the statement's fault too.
    let short = [stmt(sql, good[..3].to_vec())];
    assert!(matches!(
        t.commit(&PartitionCommit {
            projection: "typed",
            ..commit(&short, 3)
        }),
        Err(TargetError::Statement { index: Some(0), .. })
    ));
    assert_eq!(strings(&rows(&mut t, "SELECT count(*) FROM typed")), ["2"]);

    // Reading the view back: columns in table order, every type as a value readers can use.
    let read = t.read_table("typed", 10, 0).unwrap();
    assert_eq!(
        read.columns,
        [
            "k", "big", "small", "doc", "plain", "id", "at", "amount", "ratio", "label", "flag",
            "raw"
        ]
    );
    assert_eq!(read.rows.len(), 2);
    let first = &read.rows[0];
    assert_eq!(first[0], Value::Integer(1));
    assert_eq!(first[1], Value::Integer(9_000_000_000));
    assert_eq!(first[3], Value::Json("{\"a\":[1,2]}".into()));
    assert_eq!(first[4], Value::Json("{\"b\":true}".into()));
    assert_eq!(
        first[5],
        Value::Text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into())
    );
    assert_eq!(first[7], Value::Real(12.5));
    assert_eq!(first[10], Value::Bool(true));
    assert_eq!(first[11], Value::Text("\\xdead".into()));
    assert_eq!(read.rows[1][1], Value::Null);
    // Offset and limit page in first-column order.
    let second = t.read_table("typed", 1, 1).unwrap();
    assert_eq!(second.rows.len(), 1);
    assert_eq!(second.rows[0][0], Value::Integer(2));
    // A name that is not an identifier never reaches SQL; a missing view is a clear error.
    assert!(matches!(
        t.read_table("typed; DROP TABLE typed__g1", 1, 0),
        Err(TargetError::Definition(_))
    ));
    assert!(matches!(
        t.read_table("nothing_here", 1, 0),
        Err(TargetError::Definition(m)) if m.contains("nothing_here")
    ));
    assert_eq!(strings(&rows(&mut t, "SELECT count(*) FROM typed")), ["2"]);
}

#[test]
fn check_rolls_back_and_reports_bad_sql_as_a_definition_error() {
    let pg = TempPostgres::start();
    let mut t = PostgresTarget::connect(&pg.url()).unwrap();
    let setup = ["CREATE TABLE scratch__g0 (id TEXT PRIMARY KEY, n BIGINT)".to_owned()];
    t.check(
        &setup,
        &["INSERT INTO scratch__g0 (id, n) VALUES ($1, $2)".to_owned()],
    )
    .unwrap();
    assert_eq!(
        strings(&rows(&mut t, "SELECT to_regclass('scratch__g0') IS NULL")),
        ["t"]
    );
    let err = t
        .check(
            &setup,
            &[
                "INSERT INTO scratch__g0 (id, n) VALUES ($1, $2)".to_owned(),
                "INSERT INTO scratch__g0 (id, nope) VALUES ($1, $2)".to_owned(),
            ],
        )
        .unwrap_err();
    match err {
        TargetError::Definition(message) => {
            assert!(message.contains("statement 2"), "{message}");
            assert!(message.contains("nope"), "{message}");
        }
        other => panic!("expected a definition error, got {other:?}"),
    }
    let err = t.check(&["CREATE TABLE (".to_owned()], &[]).unwrap_err();
    assert!(
        matches!(&err, TargetError::Definition(m) if m.contains("setup statement 1")),
        "{err:?}"
    );
    // The connection is still usable after the failed checks.
    t.install().unwrap();
}

#[test]
fn an_outage_is_unavailable_and_the_same_target_recovers() {
    let mut pg = TempPostgres::start();
    let mut t = orders_target(&pg);
    t.commit(&commit(&[insert("a", 1), insert("b", 2)], 2))
        .unwrap();

    pg.stop_immediate();
    let batch = [insert("c", 3)];
    for _ in 0..3 {
        match t.commit(&commit(&batch, 3)) {
            Err(TargetError::Unavailable(_)) => {}
            other => panic!("expected unavailable while the server is down, got {other:?}"),
        }
    }
    assert!(matches!(t.load("orders"), Err(TargetError::Unavailable(_))));

    pg.start_again();
    // The server may still be finishing recovery for a moment; the runtime would retry.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match t.commit(&commit(&batch, 3)) {
            Ok(()) => break,
            Err(TargetError::Unavailable(m)) if Instant::now() < deadline => {
                eprintln!("still unavailable: {m}");
                std::thread::sleep(Duration::from_millis(100));
            }
            other => panic!("expected the commit to succeed after the restart, got {other:?}"),
        }
    }
    assert_eq!(
        strings(&rows(&mut t, "SELECT id, n FROM orders ORDER BY id")),
        ["a|1", "b|2", "c|3"]
    );
    assert_eq!(checkpoints(&mut t, 1), [(0, Position(3))]);
}
