//! Tests of the SQLite target against real database files: binding `$n` by name, all-or-nothing
//! batches, and a locked database answering `Unavailable`.

use std::sync::Arc;
use std::time::Duration;

use annals_core::Position;

use super::SqliteTarget;
use crate::target::{PartitionCommit, SnapshotRecord, Statement, Target, TargetError, Value};

fn stmt(sql: &str, params: Vec<Value>) -> Statement {
    Statement {
        sql: Arc::from(sql),
        params,
    }
}

#[test]
fn binds_dollar_parameters_by_name_and_classifies_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = SqliteTarget::open(dir.path().join("v.db")).unwrap();
    let views = vec!["t".to_owned()];
    t.create_generation(
        "p",
        1,
        &["CREATE TABLE t__g1 (id TEXT PRIMARY KEY, n INTEGER, doc TEXT)".to_owned()],
        true,
        &views,
    )
    .unwrap();
    // `$2` appears before `$1`: binding by position would swap them.
    let ok = [stmt(
        "INSERT INTO t__g1 (n, id, doc) VALUES ($2, $1, $3)",
        vec![
            Value::Text("a".into()),
            Value::Integer(7),
            Value::Json("{\"x\":1}".into()),
        ],
    )];
    let commit = PartitionCommit {
        projection: "p",
        generation: 1,
        partition: 0,
        statements: &ok,
        checkpoint: Position(5),
        failures: &[],
        parked: &[],
        released: &[],
        snapshot: None,
    };
    t.commit(&commit).unwrap();
    assert_eq!(
        t.query_rows("SELECT id, n, doc FROM t").unwrap(),
        vec![vec![
            Some("a".to_owned()),
            Some("7".to_owned()),
            Some("{\"x\":1}".to_owned())
        ]]
    );
    // A duplicate key fails the second statement; nothing of the batch lands.
    let bad = [
        stmt(
            "INSERT INTO t__g1 (id, n) VALUES ($1, 1)",
            vec![Value::Text("b".into())],
        ),
        stmt(
            "INSERT INTO t__g1 (id, n) VALUES ($1, 1)",
            vec![Value::Text("a".into())],
        ),
    ];
    let err = t
        .commit(&PartitionCommit {
            statements: &bad,
            checkpoint: Position(9),
            ..commit
        })
        .unwrap_err();
    assert!(
        matches!(err, TargetError::Statement { index: Some(1), .. }),
        "{err:?}"
    );
    assert_eq!(t.query_rows("SELECT id FROM t").unwrap().len(), 1);
    let stored = t.load("p").unwrap();
    assert_eq!(stored.generations[0].checkpoints, vec![(0, Position(5))]);
    // A missing parameter value is the statement's fault, not a silent NULL.
    let missing = [stmt("INSERT INTO t__g1 (id, n) VALUES ($1, $2)", vec![])];
    let err = t
        .commit(&PartitionCommit {
            statements: &missing,
            ..commit
        })
        .unwrap_err();
    assert!(matches!(err, TargetError::Statement { index: Some(0), .. }));
    // One statement text shared by several statements (as handlers emit them): the slots
    // worked out for the first hold for the rest.
    let shared: Arc<str> = Arc::from("INSERT INTO t__g1 (n, id) VALUES ($2, $1)");
    let rows: Vec<Statement> = ["c", "d", "e"]
        .iter()
        .zip(1..)
        .map(|(id, n)| Statement {
            sql: Arc::clone(&shared),
            params: vec![Value::Text((*id).into()), Value::Integer(n)],
        })
        .collect();
    t.commit(&PartitionCommit {
        statements: &rows,
        checkpoint: Position(12),
        ..commit
    })
    .unwrap();
    assert_eq!(
        t.query_rows("SELECT id, n FROM t WHERE id > 'b' ORDER BY id")
            .unwrap(),
        vec![
            vec![Some("c".to_owned()), Some("1".to_owned())],
            vec![Some("d".to_owned()), Some("2".to_owned())],
            vec![Some("e".to_owned()), Some("3".to_owned())],
        ]
    );
}

#[test]
fn busy_database_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.db");
    let mut a = SqliteTarget::open(&path).unwrap();
    a.conn.busy_timeout(Duration::from_millis(10)).unwrap();
    let b = SqliteTarget::open(&path).unwrap();
    b.conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    let err = a.save_snapshot(&SnapshotRecord {
        key: "k".into(),
        position: Position(1),
        state: vec![1],
    });
    assert!(matches!(err, Err(TargetError::Unavailable(_))), "{err:?}");
    b.conn.execute_batch("ROLLBACK").unwrap();
}
