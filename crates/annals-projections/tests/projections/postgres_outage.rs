//! A declarative projection into PostgreSQL survives the server being killed mid-run: the
//! runtime retries while it is down, the same targets reconnect when it is back, and the view
//! ends equal, row for row, to a from-scratch computation of the same events. The view's
//! statements are not idempotent (`total = total + $2`), so an event applied twice or lost
//! across the outage shows up as a wrong total.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use annals_core::{ExpectedRevision, NewEvent, StreamName};
use annals_engine::{Durability, Engine, EngineConfig};
use annals_projections::{PostgresTarget, Projections, parse_definitions};
use annals_testkit::postgres::TempPostgres;

const STREAMS: u64 = 40;
const EVENTS: u64 = 4_000;

const DEFINITION: &str = r#"
[[projection]]
name = "balances"
source = { category = "acct" }
tables = ["balances"]
setup = ["CREATE TABLE {balances} (id TEXT PRIMARY KEY, total BIGINT NOT NULL, n BIGINT NOT NULL, last_revision BIGINT NOT NULL)"]
partitions = 4

[[projection.handler]]
event_type = "Deposited"
sql = """INSERT INTO {balances} AS b (id, total, n, last_revision) VALUES ($1, $2, 1, $3)
         ON CONFLICT (id) DO UPDATE SET total = b.total + EXCLUDED.total, n = b.n + 1,
         last_revision = EXCLUDED.last_revision"""
params = ["stream", "data.amount", "revision"]
"#;

fn amount(i: u64) -> i64 {
    i64::try_from(i * 37 % 101).unwrap() - 50
}

#[test]
fn the_view_is_exact_after_postgres_is_killed_mid_run() {
    let mut pg = TempPostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        durability: Durability::None,
        ..EngineConfig::default()
    };
    let engine = Engine::open_dir(&dir.path().join("store"), config)
        .unwrap()
        .0;
    let definition = parse_definitions(DEFINITION).unwrap().remove(0);
    let projections = Projections::new(engine.clone());
    projections
        .register(
            definition.spec,
            Box::new(PostgresTarget::connect(&pg.url()).unwrap()),
        )
        .unwrap();

    // A long run first; the kill comes while the projection works through it.
    let append = |from: u64, to: u64| {
        for i in from..to {
            let stream = StreamName::new(format!("acct-{}", i % STREAMS)).unwrap();
            let data = format!("{{\"amount\":{}}}", amount(i));
            engine
                .append(
                    &stream,
                    ExpectedRevision::Any,
                    vec![NewEvent::json("Deposited", data).unwrap()],
                )
                .unwrap();
        }
    };
    append(0, EVENTS * 3 / 4);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = projections.status("balances").unwrap();
        if status.position >= EVENTS / 10 {
            break;
        }
        assert!(Instant::now() < deadline, "no progress: {status:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    pg.stop_immediate();
    // Appends go on while the target is down.
    append(EVENTS * 3 / 4, EVENTS * 7 / 8);
    std::thread::sleep(Duration::from_millis(1_000));
    let status = projections.status("balances").unwrap();
    assert!(
        status.last_error.is_some() && status.position < engine.head().0,
        "the outage should show in the status: {status:?}"
    );
    pg.start_again();
    append(EVENTS * 7 / 8, EVENTS);

    projections
        .wait_for("balances", engine.head(), Duration::from_secs(60))
        .unwrap_or_else(|e| {
            panic!(
                "not caught up: {e}; {:?}\n{}",
                projections.status("balances"),
                pg.log()
            )
        });
    projections.shutdown();

    // From scratch: the same events folded in memory.
    let mut expected: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    for i in 0..EVENTS {
        let entry = expected
            .entry(format!("acct-{}", i % STREAMS))
            .or_insert((0, 0, -1));
        entry.0 += amount(i);
        entry.1 += 1;
        entry.2 += 1;
    }
    let expected: Vec<Vec<Option<String>>> = expected
        .into_iter()
        .map(|(id, (total, n, last))| {
            vec![
                Some(id),
                Some(total.to_string()),
                Some(n.to_string()),
                Some(last.to_string()),
            ]
        })
        .collect();
    let mut reader = PostgresTarget::connect(&pg.url()).unwrap();
    let rows = reader
        .query_rows("SELECT id, total, n, last_revision FROM balances ORDER BY id")
        .unwrap();
    assert_eq!(rows.len(), expected.len());
    for (got, want) in rows.iter().zip(&expected) {
        assert_eq!(got, want);
    }
}
