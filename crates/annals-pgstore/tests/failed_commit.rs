//! A batch whose writes fail inside Postgres commits nothing, and the writer's connection is
//! left ready for the next batch. The writer sends `BEGIN` with its first round of statements and
//! `COMMIT` behind its writes, so this is what shows that a `COMMIT` queued behind a failed write
//! ends the transaction without committing any of it, and that no transaction stays open.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail the test by panicking"
)]

use annals_core::{EventType, ExpectedRevision, Position};
use annals_pgstore::{PgStore, PgStoreError};
use annals_testkit::postgres::TempPostgres;

mod common;

use common::{event, name, raw_client};

/// A trigger (the fault) makes inserting any `Poison` event fail. An append holding one fails
/// as unavailable, nothing of its batch is there and the head has not moved; the next append
/// takes the very next position and is visible to another connection at once (committed, not
/// left in an open transaction).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_that_fails_inside_postgres_commits_nothing_and_the_next_one_does() {
    let pg = TempPostgres::start();
    let url = pg.url();
    let store = PgStore::open(&url).await.unwrap();
    let raw = raw_client(&url).await;
    raw.batch_execute(
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN RAISE EXCEPTION 'poisoned event'; END $$; \
         CREATE TRIGGER poison BEFORE INSERT ON annals.events FOR EACH ROW \
         WHEN (NEW.event_type = 'Poison') EXECUTE FUNCTION poison();",
    )
    .await
    .unwrap();
    let s = name("order-1");
    let first = store
        .append(&s, ExpectedRevision::NoStream, vec![event(0)])
        .await
        .unwrap();
    assert_eq!(first.position, Position(1));

    let mut poison = event(1);
    poison.event_type = EventType::new("Poison").unwrap();
    let failed = store
        .append(&s, ExpectedRevision::Exact(0), vec![event(2), poison])
        .await
        .unwrap_err();
    assert!(
        matches!(&failed, PgStoreError::Unavailable(m) if m.contains("poisoned event")),
        "the failed commit must say why: {failed}"
    );
    assert_eq!(
        count(&raw).await,
        (1, 1),
        "a failed batch left rows or moved the head"
    );
    assert_eq!(store.committed_head().await.unwrap(), Position(1));

    let next = event(3);
    let after = store
        .append(&s, ExpectedRevision::Exact(0), vec![next])
        .await
        .unwrap();
    assert_eq!(after.position, Position(2));
    assert_eq!(
        count(&raw).await,
        (2, 2),
        "the append after a failed batch is not committed"
    );
    let idle: i64 = raw
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND state LIKE 'idle in transaction%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(idle, 0, "a connection was left inside a transaction");
}

/// The events in `annals.events` and the head.
async fn count(raw: &tokio_postgres::Client) -> (i64, i64) {
    let row = raw
        .query_one(
            "SELECT (SELECT count(*) FROM annals.events), (SELECT position FROM annals.head)",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}
