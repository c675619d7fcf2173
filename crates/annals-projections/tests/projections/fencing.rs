//! Fencing in the PostgreSQL target, against a throwaway server: once a later term of the lease
//! claimed the target, the old holder's writes fail with `Fenced` and leave nothing behind, the
//! new holder writes, and the old token cannot even load. A projection whose target is fenced
//! stops (faulted, with that error) instead of retrying.

use std::sync::Arc;
use std::time::Duration;

use annals_core::Position;
use annals_projections::{
    Fence, PartitionCommit, PostgresTarget, ProjectionState, Projections, SnapshotRecord,
    Statement, Target, TargetError, Value, parse_definitions,
};
use annals_testkit::postgres::TempPostgres;

use crate::support::{Store, WAIT, eventually};

const LEASE: &str = "jobs";

fn fence(token: i64) -> Fence {
    Fence {
        name: LEASE.to_owned(),
        token,
    }
}

fn insert(id: &str) -> Statement {
    Statement {
        sql: Arc::from("INSERT INTO orders__g1 (id) VALUES ($1)"),
        params: vec![Value::Text(id.to_owned())],
    }
}

fn commit(statements: &[Statement], checkpoint: u64) -> PartitionCommit<'_> {
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

fn ids(t: &mut PostgresTarget) -> Vec<String> {
    t.query_rows("SELECT id FROM orders__g1 ORDER BY id")
        .unwrap()
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect()
}

fn assert_fenced<T: std::fmt::Debug>(result: Result<T, TargetError>, token: i64) {
    match result {
        Err(TargetError::Fenced(message)) => assert_eq!(
            message,
            format!(
                "this node no longer holds lease {LEASE} (token {token}); another node runs this \
                 projection now"
            )
        ),
        other => panic!("expected Fenced, got {other:?}"),
    }
}

#[test]
fn a_target_whose_lease_passed_on_writes_nothing_more() {
    let pg = TempPostgres::start();
    let url = pg.url();
    let mut a = PostgresTarget::connect_fenced(&url, fence(1)).unwrap();
    assert_eq!(a.fence(), Some(&fence(1)));
    a.create_generation(
        "orders",
        1,
        &["CREATE TABLE orders__g1 (id TEXT PRIMARY KEY)".to_owned()],
        true,
        &["orders".to_owned()],
    )
    .unwrap();
    assert_eq!(a.load("orders").unwrap().generations.len(), 1);
    a.commit(&commit(&[insert("a1")], 1)).unwrap();
    // A connection made from A carries A's fence.
    let mut a_worker = a.connect_another().unwrap();
    a_worker.commit(&commit(&[insert("a2")], 2)).unwrap();

    // The next term: B claims the lease's fence when it connects and when it loads, and sees
    // everything A committed.
    let mut b = PostgresTarget::connect_fenced(&url, fence(2)).unwrap();
    let stored = b.load("orders").unwrap();
    assert_eq!(stored.generations[0].checkpoints, [(0, Position(2))]);

    // A's writes fail, each rolled back whole.
    assert_fenced(a.commit(&commit(&[insert("a3")], 3)), 1);
    assert_fenced(a_worker.commit(&commit(&[insert("a4")], 4)), 1);
    assert_fenced(
        a.save_snapshot(&SnapshotRecord {
            key: "aggregate:x".to_owned(),
            position: Position(3),
            state: vec![1],
        }),
        1,
    );
    assert_fenced(
        a.create_generation(
            "orders",
            2,
            &["CREATE TABLE orders__g2 (id TEXT PRIMARY KEY)".to_owned()],
            false,
            &["orders".to_owned()],
        ),
        1,
    );
    assert_fenced(
        a.drop_generation("orders", 1, &["orders".to_owned()], true),
        1,
    );
    assert_fenced(a.swap("orders", None, 1, &["orders".to_owned()]), 1);
    // A's connection cannot make new ones either, nor load (where it would claim).
    assert_fenced(a.connect_another(), 1);
    assert_fenced(a.load("orders"), 1);
    assert_fenced(PostgresTarget::connect_fenced(&url, fence(1)), 1);
    // Reads still answer (status pages of the old node), and show nothing of A's refused work.
    assert!(a.parked("orders", 1).unwrap().is_empty());
    assert_eq!(ids(&mut b), ["a1", "a2"]);
    assert!(b.load_snapshot("aggregate:x").unwrap().is_none());
    let tables = b
        .query_rows("SELECT count(*) FROM pg_tables WHERE tablename = 'orders__g2'")
        .unwrap();
    assert_eq!(tables[0][0].as_deref(), Some("0"));

    // B writes; its checkpoint follows A's last commit.
    b.commit(&commit(&[insert("b3")], 3)).unwrap();
    assert_eq!(ids(&mut b), ["a1", "a2", "b3"]);
    let stored = b.load("orders").unwrap();
    assert_eq!(stored.generations[0].checkpoints, [(0, Position(3))]);
    let fences = b
        .query_rows("SELECT name, token FROM annals_fences")
        .unwrap();
    assert_eq!(fences, [vec![Some(LEASE.to_owned()), Some("2".to_owned())]]);

    // Another lease's fence is its own; a target without a fence behaves as before.
    let mut other = PostgresTarget::connect_fenced(
        &url,
        Fence {
            name: "other".to_owned(),
            token: 1,
        },
    )
    .unwrap();
    other.commit(&commit(&[insert("o4")], 4)).unwrap();
    let mut plain = PostgresTarget::connect(&url).unwrap();
    plain.commit(&commit(&[insert("p5")], 5)).unwrap();
    assert_eq!(ids(&mut b), ["a1", "a2", "b3", "o4", "p5"]);
}

const ORDERS: &str = r#"
[[projection]]
name = "orders"
source = { category = "order" }
tables = ["orders"]
setup = ["CREATE TABLE {orders} (id TEXT PRIMARY KEY, total BIGINT NOT NULL)"]

[[projection.handler]]
event_type = "OrderPlaced"
sql = "INSERT INTO {orders} (id, total) VALUES ($1, $2)"
params = ["stream", "data.amount"]
"#;

#[test]
fn a_projection_whose_target_is_fenced_stops_faulted_instead_of_retrying() {
    let pg = TempPostgres::start();
    let store = Store::new();
    let projections = Projections::new(store.engine.clone());
    let spec = parse_definitions(ORDERS).unwrap().remove(0).spec;
    let target = PostgresTarget::connect_fenced(&pg.url(), fence(1)).unwrap();
    projections.register(spec, Box::new(target)).unwrap();
    let first = store.append("order-1", "OrderPlaced", 0);
    projections.wait_for("orders", first, WAIT).unwrap();

    // Another node takes the lease and claims the target.
    let mut next = PostgresTarget::connect_fenced(&pg.url(), fence(2)).unwrap();
    next.load("orders").unwrap();
    let second = store.append("order-2", "OrderPlaced", 0);
    eventually("the projection to stop faulted", || {
        projections.status("orders").unwrap().state == ProjectionState::Faulted
    });
    let status = projections.status("orders").unwrap();
    let message = status.last_error.clone().unwrap_or_default();
    assert!(
        message.contains("no longer holds lease jobs (token 1)"),
        "status: {status:?}"
    );
    assert!(status.position < second.0, "status: {status:?}");
    // Not retried: still faulted, with the same error, a while later, and nothing written.
    std::thread::sleep(Duration::from_millis(300));
    let later = projections.status("orders").unwrap();
    assert_eq!(later.state, ProjectionState::Faulted);
    assert_eq!(later.last_error, status.last_error);
    assert_eq!(later.position, status.position);
    let rows = next
        .query_rows("SELECT id FROM orders ORDER BY id")
        .unwrap();
    assert_eq!(rows, [vec![Some("order-1".to_owned())]]);

    // A resume tries once more: starting is fenced too, and it stops again the same way rather
    // than retrying the start.
    projections.resume("orders").unwrap();
    eventually("the resumed projection to stop faulted", || {
        projections.status("orders").unwrap().state == ProjectionState::Faulted
    });
    std::thread::sleep(Duration::from_millis(300));
    let resumed = projections.status("orders").unwrap();
    assert_eq!(resumed.state, ProjectionState::Faulted);
    assert_eq!(resumed.last_error, status.last_error);
    assert_eq!(resumed.position, status.position);
    let rows = next
        .query_rows("SELECT id FROM orders ORDER BY id")
        .unwrap();
    assert_eq!(rows, [vec![Some("order-1".to_owned())]]);
}
