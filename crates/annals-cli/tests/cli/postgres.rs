//! The commands on a store in PostgreSQL, against a throwaway server: `annals check --store`
//! passes a store written through `annals-pgstore`, fails one whose rows were damaged and one
//! that holds no store (writing nothing); `annals bench append --store` prints its figures, with
//! no position found late on Annals's side.

use annals_core::{ContentType, EventType, ExpectedRevision, NewEvent, StreamName};
use annals_pgstore::PgStore;
use annals_testkit::postgres::TempPostgres;
use serde_json::Value;

use crate::support::{annals, annals_ok};

fn write_some(url: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = PgStore::open(url).await.unwrap();
        for i in 0..12u32 {
            let event = NewEvent {
                id: uuid::Uuid::new_v4(),
                event_type: EventType::new("Placed").unwrap(),
                content_type: ContentType::Json,
                data: bytes::Bytes::from(format!("{{\"i\":{i}}}")),
                metadata: bytes::Bytes::new(),
            };
            let stream = StreamName::new(format!("order-{}", i % 4)).unwrap();
            store
                .append(&stream, ExpectedRevision::Any, vec![event])
                .await
                .unwrap();
        }
    });
}

fn psql(pg: &TempPostgres, sql: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client.batch_execute(sql).await.unwrap();
    });
}

#[test]
fn check_a_store_in_postgres() {
    let pg = TempPostgres::start();
    let url = pg.url();
    let empty = annals(&["check", "--store", &url]);
    assert!(!empty.status.success());
    let text = String::from_utf8_lossy(&empty.stdout);
    assert!(text.contains("no Annals store"), "{text}");
    write_some(&url);
    let out = annals_ok(&["check", "--store", &url]);
    assert!(out.contains("events 12"), "{out}");
    assert!(out.contains("streams 4"), "{out}");
    assert!(out.trim_end().ends_with("OK"), "{out}");
    psql(&pg, "DELETE FROM annals.events WHERE position = 7");
    let damaged = annals(&["check", "--store", &url]);
    assert!(!damaged.status.success());
    let text = String::from_utf8_lossy(&damaged.stdout);
    assert!(text.contains("no event at position 7"), "{text}");
    assert!(text.trim_end().ends_with("FAILED"), "{text}");
}

#[test]
fn bench_append_on_postgres_prints_its_figures() {
    let pg = TempPostgres::start();
    let out = annals_ok(&[
        "bench",
        "append",
        "--store",
        &pg.url(),
        "--writers",
        "8",
        "--events",
        "400",
        "--json",
    ]);
    let line = out.lines().last().unwrap();
    let figures: Value = serde_json::from_str(line).unwrap();
    assert_eq!(figures["bench"], "append-postgres");
    assert_eq!(figures["events"], 400);
    assert_eq!(figures["annals_late_positions"], 0, "{line}");
    assert_eq!(figures["annals_holes"], 0, "{line}");
    assert!(figures["annals_events_per_s"].as_f64().unwrap() > 0.0);
    assert!(figures["baseline_events_per_s"].as_f64().unwrap() > 0.0);
}
