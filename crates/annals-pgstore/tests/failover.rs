//! Postgres itself failing over: a primary and a synchronous standby (streaming replication on
//! loopback, made with `pg_basebackup`); the store connects with a multi-host connection string
//! (`target_session_attrs=read-write`). The primary is killed under 16 writers and the standby
//! promoted: appends fail fast meanwhile, the store reconnects to the new primary by itself, and
//! every acknowledged append is there, at dense positions.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail the test by panicking"
)]

use std::time::Duration;

use annals_pgstore::PgStore;
use annals_testkit::postgres::TempPostgres;

mod common;

use common::{OutageWriters, assert_dense_and_holds};

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
    let writers = OutageWriters::start(&store, 16, "failover");
    tokio::time::sleep(Duration::from_millis(800)).await;
    tokio::task::block_in_place(|| primary.stop_immediate());
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::task::block_in_place(|| standby.promote());
    writers.outage_over();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen = writers.finish().await;
    assert!(
        seen.unavailable > 0,
        "appends while no primary runs must fail"
    );
    assert!(
        seen.acked_after > 0,
        "the store reconnects to the promoted standby"
    );
    let new_primary = PgStore::open(&standby.url()).await.unwrap();
    assert_dense_and_holds(&new_primary, &seen.acked).await;
    let report = new_primary.check().await.unwrap();
    assert_eq!(report.problems, Vec::<String>::new());
}
