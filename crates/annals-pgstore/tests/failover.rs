//! Postgres itself failing over: a primary and a synchronous standby (streaming replication on
//! loopback, made with `pg_basebackup`); the store connects with a multi-host connection string
//! (`target_session_attrs=read-write`). The primary is killed under 16 writers and the standby
//! promoted: appends fail fast meanwhile, the store reconnects to the new primary by itself, and
//! every acknowledged append is there, at dense positions.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions fail the test by panicking"
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use annals_core::{ContentType, EventType, ExpectedRevision, NewEvent, Position, StreamName};
use annals_pgstore::{PgStore, PgStoreError};
use annals_testkit::postgres::TempPostgres;
use bytes::Bytes;
use uuid::Uuid;

fn event(i: u64) -> NewEvent {
    NewEvent {
        id: Uuid::new_v4(),
        event_type: EventType::new("Happened").unwrap(),
        content_type: ContentType::Json,
        data: Bytes::from(format!("{{\"i\":{i}}}")),
        metadata: Bytes::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_primary_dies_the_standby_is_promoted_and_nothing_acknowledged_is_lost() {
    let mut primary = TempPostgres::start();
    let standby = tokio::task::block_in_place(|| TempPostgres::start_standby(&primary, true));
    let url = format!(
        "host=127.0.0.1,127.0.0.1 port={},{} user=postgres dbname=postgres \
         target_session_attrs=read-write connect_timeout=2",
        primary.port(),
        standby.port()
    );
    let store = PgStore::open(&url).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let promoted = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..16u64 {
        let store = store.clone();
        let stop = Arc::clone(&stop);
        let promoted = Arc::clone(&promoted);
        writers.push(tokio::spawn(async move {
            let stream = StreamName::new(format!("failover-{w}")).unwrap();
            let (mut acked, mut failed, mut after) = (Vec::new(), 0u64, 0u64);
            let mut i = 0u64;
            while !stop.load(Ordering::Acquire) {
                let e = event(i);
                let id = e.id;
                i += 1;
                let answer = tokio::time::timeout(
                    Duration::from_secs(30),
                    store.append(&stream, ExpectedRevision::Any, vec![e]),
                )
                .await
                .expect("an append must not hang during the failover");
                match answer {
                    Ok(r) => {
                        acked.push((id, r.position));
                        if promoted.load(Ordering::Acquire) {
                            after += 1;
                        }
                    }
                    Err(PgStoreError::Unavailable(_)) => {
                        failed += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(other) => panic!("unexpected append error: {other}"),
                }
            }
            (acked, failed, after)
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    tokio::task::block_in_place(|| primary.stop_immediate());
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::task::block_in_place(|| standby.promote());
    promoted.store(true, Ordering::Release);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Release);
    let (mut acked, mut failed, mut after) = (Vec::new(), 0, 0);
    for w in writers {
        let (a, f, r) = w.await.unwrap();
        acked.extend(a);
        failed += f;
        after += r;
    }
    assert!(failed > 0, "appends while no primary runs must fail");
    assert!(after > 0, "the store reconnects to the promoted standby");
    let new_primary = PgStore::open(&standby.url()).await.unwrap();
    let all = new_primary.read_all(Position(1), 1_000_000).await.unwrap();
    let positions: Vec<u64> = all.iter().map(|e| e.position.0).collect();
    assert_eq!(
        positions,
        (1..=all.len() as u64).collect::<Vec<_>>(),
        "dense positions"
    );
    let by_position: BTreeMap<u64, Uuid> = all.iter().map(|e| (e.position.0, e.id)).collect();
    for (id, position) in &acked {
        assert_eq!(
            by_position.get(&position.0),
            Some(id),
            "an acknowledged append is missing on the promoted standby"
        );
    }
    let report = new_primary.check().await.unwrap();
    assert_eq!(report.problems, Vec::<String>::new());
}
