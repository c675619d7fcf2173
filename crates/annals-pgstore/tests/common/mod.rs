//! What the Postgres store's test files share: events, and writers that keep appending through
//! an outage while counting what was acknowledged, what failed as unavailable, and what was
//! acknowledged after the outage ended; and the check that every acknowledged append is there
//! at dense positions.

#![allow(dead_code, reason = "each test file uses its own part of this")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use annals_core::{ContentType, EventType, ExpectedRevision, NewEvent, Position, StreamName};
use annals_pgstore::{PgStore, PgStoreError};
use bytes::Bytes;
use uuid::Uuid;

pub(crate) fn name(s: &str) -> StreamName {
    StreamName::new(s).unwrap()
}

pub(crate) fn event(i: u64) -> NewEvent {
    NewEvent {
        id: Uuid::new_v4(),
        event_type: EventType::new("Happened").unwrap(),
        content_type: ContentType::Json,
        data: Bytes::from(format!("{{\"i\":{i}}}")),
        metadata: Bytes::new(),
    }
}

/// A plain connection to the database, for what a test does behind the store's back.
pub(crate) async fn raw_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// What the writers of [`OutageWriters`] saw.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) acked: Vec<(Uuid, Position)>,
    pub(crate) unavailable: u64,
    pub(crate) acked_after: u64,
}

/// `n` writers appending single events to streams of their own until stopped; an append that
/// takes over 30 s fails the test (nothing may hang during an outage).
pub(crate) struct OutageWriters {
    stop: Arc<AtomicBool>,
    after: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Outcome>>,
}

impl OutageWriters {
    pub(crate) fn start(store: &PgStore, n: u64, prefix: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let after = Arc::new(AtomicBool::new(false));
        let tasks = (0..n)
            .map(|w| {
                let (store, stop, after) = (store.clone(), Arc::clone(&stop), Arc::clone(&after));
                let stream = name(&format!("{prefix}-{w}"));
                tokio::spawn(async move {
                    let mut seen = Outcome::default();
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
                        .expect("an append must not hang during an outage");
                        match answer {
                            Ok(r) => {
                                seen.acked.push((id, r.position));
                                seen.acked_after += u64::from(after.load(Ordering::Acquire));
                            }
                            Err(PgStoreError::Unavailable(_)) => {
                                seen.unavailable += 1;
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            Err(other) => panic!("unexpected append error: {other}"),
                        }
                    }
                    seen
                })
            })
            .collect();
        Self { stop, after, tasks }
    }

    /// From now on, acknowledgements count as after the outage.
    pub(crate) fn outage_over(&self) {
        self.after.store(true, Ordering::Release);
    }

    /// Stops the writers and adds up what they saw.
    pub(crate) async fn finish(self) -> Outcome {
        self.stop.store(true, Ordering::Release);
        let mut all = Outcome::default();
        for t in self.tasks {
            let seen = t.await.unwrap();
            all.acked.extend(seen.acked);
            all.unavailable += seen.unavailable;
            all.acked_after += seen.acked_after;
        }
        all
    }
}

/// `$all` of `store` is at positions 1..N and holds every acknowledged append where its answer
/// said.
pub(crate) async fn assert_dense_and_holds(store: &PgStore, acked: &[(Uuid, Position)]) {
    let all = store.read_all(Position(1), 1_000_000).await.unwrap();
    let positions: Vec<u64> = all.iter().map(|e| e.position.0).collect();
    assert_eq!(
        positions,
        (1..=all.len() as u64).collect::<Vec<_>>(),
        "dense positions"
    );
    let by_position: BTreeMap<u64, Uuid> = all.iter().map(|e| (e.position.0, e.id)).collect();
    for (id, position) in acked {
        assert_eq!(
            by_position.get(&position.0),
            Some(id),
            "an acknowledged append is missing"
        );
    }
}
