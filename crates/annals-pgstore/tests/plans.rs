//! The writer's look-ups stay look-ups on a new store: before autovacuum's first `ANALYZE` the
//! tables have no statistics, and Postgres then planned the idempotency look-up as a scan of all
//! of `annals.events` and the metadata look-up as a read of a whole index, on every batch, so a
//! batch's cost grew with the store (measured by `annals bench append --store`: 4 ms a batch at
//! 8,000 events). The test counts what Postgres itself reports having read.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail the test by panicking"
)]

use std::time::{Duration, Instant};

use annals_core::{ContentType, EventType, ExpectedRevision, NewEvent};
use annals_pgstore::PgStore;
use annals_testkit::postgres::TempPostgres;
use bytes::Bytes;

mod common;

use common::{event, name, raw_client};

const WRITERS: u64 = 32;
const APPENDS_PER_WRITER: u64 = 64;

/// 32 writers append 64 times each to streams of their own, every eighth append a metadata
/// change of the stream (so the metadata look-up finds rows) and every sixteenth a retry of the
/// previous append (so the idempotency look-up finds rows), on tables without statistics. Then
/// neither `annals.events` nor `annals.streams` was ever scanned whole, and all the entries read
/// from the events' indexes stay within a few per append (a whole-index read per batch is tens
/// of thousands).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_stores_commits_read_a_few_index_entries_not_whole_tables() {
    let pg = TempPostgres::start();
    let url = pg.url();
    let store = PgStore::open(&url).await.unwrap();
    let raw = raw_client(&url).await;
    // No statistics for the whole test: autovacuum's `ANALYZE` would make the planner's choice
    // right by itself and hide the plans a new store gets.
    raw.batch_execute(
        "ALTER TABLE annals.events SET (autovacuum_enabled = off); \
         ALTER TABLE annals.streams SET (autovacuum_enabled = off)",
    )
    .await
    .unwrap();
    // Creating the schema scanned the new tables (building indexes and constraints): counted
    // from here, once those counts have settled.
    let mut before = counts(&raw).await;
    loop {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let now = counts(&raw).await;
        if now == before {
            break;
        }
        before = now;
    }
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let stream = name(&format!("order-{w}"));
            let meta = stream.metadata_stream().unwrap();
            let mut events = 0u64;
            let mut last = None;
            for i in 0..APPENDS_PER_WRITER {
                if i % 8 == 3 {
                    store
                        .append(&meta, ExpectedRevision::Any, vec![metadata(i)])
                        .await
                        .unwrap();
                    events += 1;
                } else if i % 16 == 15 {
                    let (again, at): (NewEvent, _) = last.clone().unwrap();
                    let r = store
                        .append(&stream, ExpectedRevision::Any, vec![again])
                        .await
                        .unwrap();
                    assert_eq!(r, at, "a retry is answered where the event is");
                } else {
                    let e = event(i);
                    let r = store
                        .append(&stream, ExpectedRevision::Any, vec![e.clone()])
                        .await
                        .unwrap();
                    last = Some((e, r));
                    events += 1;
                }
            }
            events
        }));
    }
    let mut events = 0u64;
    for w in writers {
        events += w.await.unwrap();
    }
    let events = i64::try_from(events).unwrap();
    let appends = i64::try_from(WRITERS * APPENDS_PER_WRITER).unwrap();

    // A backend sends its counts to the shared statistics about once a second when idle: wait
    // until they hold every insert.
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let now = counts(&raw).await;
        if now.inserted >= events || Instant::now() > deadline {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (seq_scans, inserted) = (
        after.seq_scans - before.seq_scans,
        after.inserted - before.inserted,
    );
    assert_eq!(inserted, events, "the statistics never showed every insert");
    let no_statistics: i64 = raw
        .query_one(
            "SELECT count(*) FROM pg_stats WHERE schemaname = 'annals' \
             AND tablename IN ('events', 'streams')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        no_statistics, 0,
        "the tables got statistics during the test"
    );
    assert_eq!(
        seq_scans, 0,
        "a commit scanned annals.events or annals.streams whole"
    );
    let index_reads = after.index_reads - before.index_reads;
    assert!(
        index_reads <= 4 * appends,
        "{index_reads} index entries of annals.events read for {appends} appends"
    );
}

/// What Postgres's statistics say of `annals.events` and `annals.streams`.
#[derive(Debug, PartialEq, Eq)]
struct Counts {
    /// Scans of either table whole.
    seq_scans: i64,
    /// Rows inserted into `annals.events`.
    inserted: i64,
    /// Entries read from the indexes of `annals.events`.
    index_reads: i64,
}

async fn counts(raw: &tokio_postgres::Client) -> Counts {
    raw.batch_execute("SELECT pg_stat_clear_snapshot()")
        .await
        .unwrap();
    let row = raw
        .query_one(
            "SELECT (SELECT coalesce(sum(seq_scan), 0)::bigint FROM pg_stat_user_tables \
             WHERE schemaname = 'annals' AND relname IN ('events', 'streams')), \
             (SELECT coalesce(sum(n_tup_ins), 0)::bigint FROM pg_stat_user_tables \
             WHERE schemaname = 'annals' AND relname = 'events'), \
             (SELECT coalesce(sum(idx_tup_read), 0)::bigint FROM pg_stat_user_indexes \
             WHERE schemaname = 'annals' AND relname = 'events')",
            &[],
        )
        .await
        .unwrap();
    Counts {
        seq_scans: row.get(0),
        inserted: row.get(1),
        index_reads: row.get(2),
    }
}

/// A metadata event: a max-count above what the test writes, so it hides nothing.
fn metadata(i: u64) -> NewEvent {
    NewEvent {
        id: uuid::Uuid::new_v4(),
        event_type: EventType::new("$metadata").unwrap(),
        content_type: ContentType::Json,
        data: Bytes::from(format!("{{\"$maxCount\":{}}}", 1_000 + i)),
        metadata: Bytes::new(),
    }
}
