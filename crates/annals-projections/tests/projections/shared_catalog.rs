//! The shared catalog of multi-node mode, over a real engine and a throwaway PostgreSQL: the
//! definitions live in the log, so another node's catalog registers the same projections (a
//! rebuild included); definitions without a target go to the default PostgreSQL database; a
//! SQLite target is refused; a stale node's change conflicts and changes nothing; and when a
//! second node takes the lease while the first still runs, every event is applied once.

use std::sync::Arc;

use annals_core::{EventRecord, StreamName};
use annals_engine::Engine;
use annals_projections::{
    Applied, Catalog, CatalogError, Fence, PostgresTarget, ProjectionState, Projections,
    SHARED_CATALOG_EVENT_TYPE, SHARED_CATALOG_EVENTS_KEPT, SHARED_CATALOG_STREAM, SharedCatalog,
};
use annals_testkit::postgres::TempPostgres;

use crate::support::{Store, WAIT, eventually};

/// Orders, counting how often each event was applied (`applied`), so an event applied twice
/// shows.
const ORDERS: &str = r#"
[[projection]]
name = "orders"
source = { category = "order" }
tables = ["orders"]
setup = ["CREATE TABLE {orders} (id TEXT PRIMARY KEY, total BIGINT NOT NULL, applied BIGINT NOT NULL)"]

[[projection.handler]]
event_type = "OrderPlaced"
sql = """INSERT INTO {orders} AS o (id, total, applied) VALUES ($1, $2, 1)
         ON CONFLICT (id) DO UPDATE SET total = EXCLUDED.total, applied = o.applied + 1"""
params = ["stream", "data.amount"]
"#;

/// The same projection, changed: totals doubled (a rebuild).
const ORDERS_DOUBLED: &str = r#"
[[projection]]
name = "orders"
source = { category = "order" }
tables = ["orders"]
setup = ["CREATE TABLE {orders} (id TEXT PRIMARY KEY, total BIGINT NOT NULL, applied BIGINT NOT NULL)"]

[[projection.handler]]
event_type = "OrderPlaced"
sql = """INSERT INTO {orders} AS o (id, total, applied) VALUES ($1, $2 * 2, 1)
         ON CONFLICT (id) DO UPDATE SET total = EXCLUDED.total, applied = o.applied + 1"""
params = ["stream", "data.amount"]
"#;

fn totals(target: Option<&str>) -> String {
    let target = target.map_or(String::new(), |t| format!("target = \"{t}\"\n"));
    format!(
        r#"
[[projection]]
name = "totals"
{target}source = {{ category = "order" }}
tables = ["totals"]
setup = ["CREATE TABLE {{totals}} (id TEXT PRIMARY KEY, total BIGINT NOT NULL)"]

[[projection.handler]]
event_type = "OrderPlaced"
sql = "INSERT INTO {{totals}} (id, total) VALUES ($1, $2)"
params = ["stream", "data.amount"]
"#
    )
}

fn options(pg: &TempPostgres, token: i64) -> SharedCatalog {
    SharedCatalog {
        default_target: pg.url(),
        fence: Some(Fence {
            name: "jobs".to_owned(),
            token,
        }),
    }
}

fn open(engine: &Engine, pg: &TempPostgres, token: i64) -> (Arc<Projections>, Catalog) {
    let projections = Arc::new(Projections::new(engine.clone()));
    let (catalog, failed) =
        Catalog::open_shared(Arc::clone(&projections), engine.clone(), options(pg, token)).unwrap();
    assert!(failed.is_empty(), "{failed:?}");
    (projections, catalog)
}

fn catalog_stream() -> StreamName {
    StreamName::new(SHARED_CATALOG_STREAM).unwrap()
}

/// The newest catalog event as (name, generation) pairs.
fn stored(engine: &Engine) -> Option<(EventRecord, Vec<(String, u64)>)> {
    let event = engine.last_event(&catalog_stream()).unwrap()?;
    let json: serde_json::Value = serde_json::from_slice(&event.data).unwrap();
    assert_eq!(json["version"], 1);
    let pairs = json["projections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["generation"].as_u64().unwrap(),
            )
        })
        .collect();
    Some((event, pairs))
}

fn rows(url: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    PostgresTarget::connect(url)
        .unwrap()
        .query_rows(sql)
        .unwrap()
}

fn row(values: &[&str]) -> Vec<Option<String>> {
    values.iter().map(|v| Some((*v).to_owned())).collect()
}

#[test]
fn the_catalog_lives_in_the_log_and_another_node_registers_it_again() {
    let pg = TempPostgres::start();
    let store = Store::new();
    let (projections, catalog) = open(&store.engine, &pg, 1);
    assert!(stored(&store.engine).is_none());

    assert_eq!(
        catalog.apply(ORDERS).unwrap(),
        [Applied::Registered {
            name: "orders".to_owned()
        }]
    );
    let (event, pairs) = stored(&store.engine).unwrap();
    assert_eq!(event.event_type.as_str(), SHARED_CATALOG_EVENT_TYPE);
    assert_eq!(pairs, [("orders".to_owned(), 1)]);
    // The stream keeps its newest events only.
    let metadata = store
        .engine
        .last_event(&catalog_stream().metadata_stream().unwrap())
        .unwrap()
        .unwrap();
    let metadata: serde_json::Value = serde_json::from_slice(&metadata.data).unwrap();
    assert_eq!(metadata["$maxCount"], SHARED_CATALOG_EVENTS_KEPT);

    // No target named: the default PostgreSQL database, fenced by the lease.
    let first = store.append("order-1", "OrderPlaced", 5);
    projections.wait_for("orders", first, WAIT).unwrap();
    assert_eq!(
        rows(&pg.url(), "SELECT id, total, applied FROM orders"),
        [row(&["order-1", "5", "1"])]
    );
    assert_eq!(
        rows(&pg.url(), "SELECT name, token FROM annals_fences"),
        [row(&["jobs", "1"])]
    );

    // A changed definition: its text is stored under the new generation before it builds.
    assert_eq!(
        catalog.apply(ORDERS_DOUBLED).unwrap(),
        [Applied::Rebuilding {
            name: "orders".to_owned(),
            generation: 2
        }]
    );
    let (_, pairs) = stored(&store.engine).unwrap();
    assert_eq!(pairs, [("orders".to_owned(), 1), ("orders".to_owned(), 2)]);
    eventually("the rebuild to swap in", || {
        let status = projections.status("orders").unwrap();
        status.generation == 2 && status.rebuild.is_none()
    });
    let definitions = catalog.definitions();
    drop(catalog);
    projections.shutdown();

    // Another node (the lease's next term) reads the catalog from the log: the same projection,
    // its rebuilt generation serving, the swapped-away text forgotten.
    let (projections, catalog) = open(&store.engine, &pg, 2);
    assert_eq!(catalog.definitions(), definitions);
    let status = projections.status("orders").unwrap();
    assert_eq!(status.generation, 2);
    let (_, pairs) = stored(&store.engine).unwrap();
    assert_eq!(pairs, [("orders".to_owned(), 2)]);
    let second = store.append("order-2", "OrderPlaced", 7);
    projections.wait_for("orders", second, WAIT).unwrap();
    assert_eq!(
        rows(
            &pg.url(),
            "SELECT id, total, applied FROM orders ORDER BY id"
        ),
        [row(&["order-1", "10", "1"]), row(&["order-2", "14", "1"])]
    );
    assert_eq!(
        catalog.apply(ORDERS_DOUBLED).unwrap(),
        [Applied::Unchanged {
            name: "orders".to_owned()
        }]
    );
    projections.shutdown();
}

#[test]
fn a_sqlite_target_is_refused_and_a_postgres_one_is_used_as_named() {
    let pg = TempPostgres::start();
    let store = Store::new();
    let (projections, catalog) = open(&store.engine, &pg, 1);

    // A SQLite file cannot follow the lease to another node: refused, with the whole file.
    for text in [
        totals(Some("sqlite:views.db")),
        format!("{ORDERS}\n{}", totals(Some("sqlite:views.db"))),
    ] {
        let e = catalog.apply(&text).unwrap_err();
        assert!(matches!(e, CatalogError::Definition(_)), "{e:?}");
        let message = e.to_string();
        assert!(
            message.contains("totals")
                && message.contains("cannot move between nodes")
                && message.contains("postgres://"),
            "{message}"
        );
        assert!(stored(&store.engine).is_none());
        assert!(projections.list().is_empty());
        assert!(catalog.definitions().is_empty());
    }
    assert!(!store.dir.path().join("views.db").exists());

    // A PostgreSQL target of its own: the tables (and the fence) go there, not to the default.
    rows(&pg.url(), "CREATE DATABASE views");
    let views = format!("{}/views", pg.url().rsplit_once('/').unwrap().0);
    catalog.apply(&totals(Some(&views))).unwrap();
    let placed = store.append("order-1", "OrderPlaced", 3);
    projections.wait_for("totals", placed, WAIT).unwrap();
    assert_eq!(
        rows(&views, "SELECT id, total FROM totals"),
        [row(&["order-1", "3"])]
    );
    assert_eq!(
        rows(&views, "SELECT name, token FROM annals_fences"),
        [row(&["jobs", "1"])]
    );
    assert_eq!(
        rows(
            &pg.url(),
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'totals%'"
        ),
        [row(&["0"])]
    );
    let (_, pairs) = stored(&store.engine).unwrap();
    assert_eq!(pairs, [("totals".to_owned(), 1)]);
    projections.shutdown();
}

#[test]
fn a_change_from_a_stale_catalog_conflicts_and_changes_nothing() {
    let pg = TempPostgres::start();
    let store = Store::new();
    let (first, first_catalog) = open(&store.engine, &pg, 1);
    // Read before the first one writes.
    let (second, second_catalog) = open(&store.engine, &pg, 1);
    first_catalog.apply(ORDERS).unwrap();
    let (before, _) = stored(&store.engine).unwrap();

    let e = second_catalog.apply(&totals(None)).unwrap_err();
    assert!(
        matches!(
            e,
            CatalogError::Conflict {
                expected: None,
                actual: Some(0)
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("changed by another node"), "{e}");
    let (after, pairs) = stored(&store.engine).unwrap();
    assert_eq!(after.revision, before.revision);
    assert_eq!(pairs, [("orders".to_owned(), 1)]);
    assert!(second.list().is_empty());
    assert!(second_catalog.definitions().is_empty());
    assert_eq!(
        rows(
            &pg.url(),
            "SELECT count(*) FROM annals_projections WHERE projection = 'totals'"
        ),
        [row(&["0"])]
    );
    first.shutdown();
}

#[test]
fn when_another_node_takes_the_lease_the_old_one_stops_and_every_event_applies_once() {
    let pg = TempPostgres::start();
    let store = Store::new();
    let (old, old_catalog) = open(&store.engine, &pg, 1);
    old_catalog.apply(ORDERS).unwrap();
    for i in 0..100 {
        store.append(&format!("order-{i}"), "OrderPlaced", i);
    }
    old.wait_for("orders", store.engine.head(), WAIT).unwrap();

    // The next term opens while the old node still runs, and resumes where it committed.
    let (new, _new_catalog) = open(&store.engine, &pg, 2);
    for i in 100..200 {
        store.append(&format!("order-{i}"), "OrderPlaced", i);
    }
    new.wait_for("orders", store.engine.head(), WAIT).unwrap();
    eventually("the old node to stop", || {
        old.status("orders").unwrap().state == ProjectionState::Faulted
    });
    let status = old.status("orders").unwrap();
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("no longer holds lease jobs (token 1)")),
        "{status:?}"
    );
    assert_eq!(
        rows(
            &pg.url(),
            "SELECT count(*), min(applied), max(applied) FROM orders"
        ),
        [row(&["200", "1", "1"])]
    );
    old.shutdown();
    new.shutdown();
}
