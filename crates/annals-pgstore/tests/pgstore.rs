//! The Postgres store against a throwaway PostgreSQL: two nodes on one database under
//! concurrent writers commit dense positions, a reader never sees a gap, every acknowledged
//! append is there once; expected revisions and idempotency hold across nodes; a node follows
//! another's commits through the head signal; the schema is created once and a newer one is
//! refused.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail the test by panicking"
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use annals_core::{DomainError, ExpectedRevision, Position, Revision};
use annals_pgstore::{PgStore, PgStoreError, SCHEMA_VERSION};
use annals_testkit::postgres::TempPostgres;

mod common;

use common::{OutageWriters, assert_dense_and_holds, event, name, raw_client};

/// 32 writers per node on two nodes, each appending 15 single events to a stream of its own
/// with exact expected revisions and 5 to a shared stream with `Any`, while a reader on one
/// node pages `$all` from its cursor: every page starts exactly at the cursor and its positions
/// are consecutive, and at the end `$all` is exactly 1..N holding every acknowledged append.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_commit_dense_positions_and_a_reader_never_sees_a_gap() {
    let pg = TempPostgres::start();
    let url = pg.url();
    let (a, b) = tokio::join!(PgStore::open(&url), PgStore::open(&url));
    let (a, b) = (a.unwrap(), b.unwrap());
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let b = b.clone();
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut next = 1u64;
            let mut pages = 0u64;
            loop {
                let finished = done.load(Ordering::Acquire);
                let page = b.read_all(Position(next), 200).await.unwrap();
                for e in &page {
                    assert_eq!(e.position, Position(next), "a gap or a reorder in $all");
                    next += 1;
                }
                pages += 1;
                if finished && page.is_empty() {
                    return (next - 1, pages);
                }
            }
        })
    };
    let mut writers = Vec::new();
    for w in 0..64u64 {
        let node = if w % 2 == 0 { a.clone() } else { b.clone() };
        writers.push(tokio::spawn(async move {
            let own = name(&format!("writer-{w}"));
            let mut acked = Vec::new();
            for i in 0..20u64 {
                let e = event(i);
                let id = e.id;
                let (stream, expected) = if i % 4 == 3 {
                    (name("shared"), ExpectedRevision::Any)
                } else {
                    let done = acked.iter().filter(|(s, _, _)| *s == own).count() as u64;
                    let expected = match done {
                        0 => ExpectedRevision::NoStream,
                        n => ExpectedRevision::Exact(n - 1),
                    };
                    (own.clone(), expected)
                };
                let r = node.append(&stream, expected, vec![e]).await.unwrap();
                acked.push((stream, id, r));
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    done.store(true, Ordering::Release);
    let (seen, pages) = reader.await.unwrap();
    assert_eq!(acked.len(), 64 * 20);
    assert_eq!(
        seen,
        acked.len() as u64,
        "the reader saw every position once"
    );
    assert!(pages > 1);
    let all = a.read_all(Position(1), 10_000).await.unwrap();
    let positions: Vec<u64> = all.iter().map(|e| e.position.0).collect();
    assert_eq!(positions, (1..=acked.len() as u64).collect::<Vec<_>>());
    let by_position: BTreeMap<u64, _> = all.iter().map(|e| (e.position.0, e)).collect();
    for (stream, id, r) in &acked {
        let e = by_position[&r.position.0];
        assert_eq!(
            (&e.stream, e.id, e.revision),
            (stream, *id, r.next_revision)
        );
    }
    // Each stream's revisions are 0..n with no hole.
    for w in 0..64u64 {
        let events = b
            .read_stream(&name(&format!("writer-{w}")), Revision(0), 100)
            .await
            .unwrap();
        let revisions: Vec<u64> = events.iter().map(|e| e.revision.0).collect();
        assert_eq!(revisions, (0..15).collect::<Vec<_>>());
    }
    let shared = a
        .read_stream(&name("shared"), Revision(0), 1_000)
        .await
        .unwrap();
    assert_eq!(shared.len(), 64 * 5);
    assert!(
        shared
            .windows(2)
            .all(|w| w[0].revision.0 + 1 == w[1].revision.0)
    );
}

/// Two nodes racing to append at the same expected revision: exactly one wins each revision,
/// the other gets the actual revision; a retry with the same event id, on either node, answers
/// with the original position and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expected_revisions_and_idempotency_hold_across_nodes() {
    let pg = TempPostgres::start();
    let a = PgStore::open(&pg.url()).await.unwrap();
    let b = PgStore::open(&pg.url()).await.unwrap();
    let s = name("order-1");
    for revision in 0..10u64 {
        let expected = match revision {
            0 => ExpectedRevision::NoStream,
            r => ExpectedRevision::Exact(r - 1),
        };
        let (ra, rb) = tokio::join!(
            a.append(&s, expected, vec![event(revision)]),
            b.append(&s, expected, vec![event(revision)])
        );
        let (won, lost) = match (ra, rb) {
            (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w, l),
            other => panic!("exactly one of two racing appends must win: {other:?}"),
        };
        assert_eq!(won.next_revision, Revision(revision));
        match lost {
            PgStoreError::Domain(DomainError::WrongExpectedRevision { actual, .. }) => {
                assert_eq!(actual, Some(revision));
            }
            other => panic!("the loser must see the actual revision: {other}"),
        }
    }
    let first = event(100);
    let retry = first.clone();
    let original = a
        .append(&s, ExpectedRevision::Exact(9), vec![first])
        .await
        .unwrap();
    let again = b
        .append(&s, ExpectedRevision::Exact(9), vec![retry])
        .await
        .unwrap();
    assert_eq!(again, original);
    assert_eq!(a.read_stream(&s, Revision(0), 100).await.unwrap().len(), 11);
    let deleted = b
        .append(&s, ExpectedRevision::NoStream, vec![event(1)])
        .await
        .unwrap_err();
    assert!(matches!(
        deleted,
        PgStoreError::Domain(DomainError::WrongExpectedRevision {
            actual: Some(10),
            ..
        })
    ));
    assert!(matches!(
        a.append(&s, ExpectedRevision::Any, Vec::new()).await,
        Err(PgStoreError::Input(_))
    ));
}

/// A node learns of another node's commits through the head signal, promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_follows_another_nodes_commits() {
    let pg = TempPostgres::start();
    let a = PgStore::open(&pg.url()).await.unwrap();
    let b = PgStore::open(&pg.url()).await.unwrap();
    let mut watch = b.head_watch();
    watch.borrow_and_update();
    let r = a
        .append(
            &name("live-1"),
            ExpectedRevision::Any,
            vec![event(0), event(1)],
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while *watch.borrow_and_update() < r.position {
            watch.changed().await.unwrap();
        }
    })
    .await
    .expect("node b saw node a's commit");
    assert_eq!(b.head(), Position(2));
    let events = b.read_all(Position(1), 10).await.unwrap();
    assert_eq!(events.len(), 2);
}

/// Nodes starting together create the schema once; a database with a newer schema is refused
/// and left as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_schema_is_created_once_and_a_newer_one_is_refused() {
    let pg = TempPostgres::start();
    let url = pg.url();
    let opened = futures::future::join_all((0..4).map(|_| PgStore::open(&url))).await;
    for o in opened {
        o.unwrap();
    }
    let client = raw_client(&pg.url()).await;
    let version: i32 = client
        .query_one("SELECT schema_version FROM annals.meta", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, SCHEMA_VERSION);
    client
        .execute(
            "UPDATE annals.meta SET schema_version = $1",
            &[&(SCHEMA_VERSION + 1)],
        )
        .await
        .unwrap();
    match PgStore::open(&pg.url()).await {
        Err(PgStoreError::SchemaTooNew { found, known }) => {
            assert_eq!((found, known), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("a newer schema must be refused: {other:?}"),
    }
}

/// Postgres crashes (immediate shutdown: every connection cut, no checkpoint) under 16 writers
/// and comes back: no append hangs, those made while it is down fail as unavailable, the writer
/// reconnects by itself, and afterwards every acknowledged append is there once with positions
/// still dense.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_crash_loses_nothing_acknowledged() {
    let mut pg = TempPostgres::start();
    let store = PgStore::open(&pg.url()).await.unwrap();
    let writers = OutageWriters::start(&store, 16, "crash");
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::block_in_place(|| pg.stop_immediate());
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::block_in_place(|| pg.start_again());
    writers.outage_over();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = writers.finish().await;
    assert!(
        seen.unavailable > 0,
        "appends while Postgres was down must fail"
    );
    assert!(
        seen.acked_after > 0,
        "the writer reconnects once Postgres is back"
    );
    assert_dense_and_holds(&store, &seen.acked).await;
}

/// A lease is one node's at a time: the other node cannot take it while it is held and renewed;
/// once it lapses the other takes it with a higher token, and the first node's fenced
/// checkpoint writes are refused from then on, even though it still believes it holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lapsed_lease_moves_and_fences_the_old_holder() {
    let pg = TempPostgres::start();
    let a = PgStore::open(&pg.url()).await.unwrap();
    let b = PgStore::open(&pg.url()).await.unwrap();
    let ttl = Duration::from_millis(1_500);
    let held = a
        .acquire_lease("relay-x", "node-a", ttl)
        .await
        .unwrap()
        .unwrap();
    assert!(
        b.acquire_lease("relay-x", "node-b", ttl)
            .await
            .unwrap()
            .is_none()
    );
    let renewed = a
        .acquire_lease("relay-x", "node-a", ttl)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renewed.token, held.token, "a renewal keeps the term");
    a.save_checkpoint(&held, 10).await.unwrap();
    assert_eq!(b.checkpoint("relay-x").await.unwrap(), Some(10));
    // Node a stops renewing (a pause, a partition); the lease lapses and node b takes it.
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    let taken = b
        .acquire_lease("relay-x", "node-b", ttl)
        .await
        .unwrap()
        .unwrap();
    assert!(taken.token > held.token);
    assert!(matches!(
        a.save_checkpoint(&held, 99).await,
        Err(PgStoreError::Fenced { .. })
    ));
    assert!(
        a.acquire_lease("relay-x", "node-a", ttl)
            .await
            .unwrap()
            .is_none()
    );
    b.save_checkpoint(&taken, 20).await.unwrap();
    assert_eq!(a.checkpoint("relay-x").await.unwrap(), Some(20));
    // A clean release hands it over at once.
    b.release_lease(&taken).await.unwrap();
    let back = a
        .acquire_lease("relay-x", "node-a", ttl)
        .await
        .unwrap()
        .unwrap();
    assert!(back.token > taken.token);
    assert!(matches!(
        b.save_checkpoint(&taken, 30).await,
        Err(PgStoreError::Fenced { .. })
    ));
    assert_eq!(a.checkpoint("relay-x").await.unwrap(), Some(20));
}

/// A job's appends are fenced in the commit itself: while its node holds the lease in that term
/// they commit, alongside unfenced appends in the same batches; once the lease lapsed and
/// another node took it, the old term's appends are refused alone and write nothing, while the
/// new term's commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_append_commits_only_in_its_lease_term() {
    let pg = TempPostgres::start();
    let a = PgStore::open(&pg.url()).await.unwrap();
    let b = PgStore::open(&pg.url()).await.unwrap();
    let ttl = Duration::from_millis(1_500);
    let (ckpt, orders) = (name("$relay-r-checkpoint"), name("orders-1"));
    let old = a
        .acquire_lease("jobs", "node-a", ttl)
        .await
        .unwrap()
        .unwrap();
    let (fenced, plain) = tokio::join!(
        a.append_fenced(
            &ckpt,
            ExpectedRevision::Any,
            vec![event(1)],
            Some(old.clone())
        ),
        a.append(&orders, ExpectedRevision::Any, vec![event(2)]),
    );
    assert_eq!(fenced.unwrap().position.0 + plain.unwrap().position.0, 3);
    // The lease lapses (node a paused) and node b takes it.
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    let new = b
        .acquire_lease("jobs", "node-b", ttl)
        .await
        .unwrap()
        .unwrap();
    assert!(new.token > old.token);
    let (stale, plain, current) = tokio::join!(
        a.append_fenced(
            &ckpt,
            ExpectedRevision::Any,
            vec![event(3)],
            Some(old.clone())
        ),
        a.append(&orders, ExpectedRevision::Any, vec![event(4)]),
        b.append_fenced(
            &ckpt,
            ExpectedRevision::Any,
            vec![event(5)],
            Some(new.clone())
        ),
    );
    assert!(
        matches!(&stale, Err(PgStoreError::Fenced { lease, token }) if lease == "jobs" && *token == old.token),
        "{stale:?}"
    );
    plain.unwrap();
    current.unwrap();
    let soft = a
        .soft_delete_fenced(&ckpt, ExpectedRevision::Any, Some(old.clone()))
        .await;
    assert!(matches!(soft, Err(PgStoreError::Fenced { .. })), "{soft:?}");
    let tomb = a
        .tombstone_fenced(&ckpt, ExpectedRevision::Any, Some(old))
        .await;
    assert!(matches!(tomb, Err(PgStoreError::Fenced { .. })), "{tomb:?}");
    // Exactly what was acknowledged is there: two checkpoints, two orders, nothing of the stale term.
    let checkpoints = a.read_stream(&ckpt, Revision(0), 100).await.unwrap();
    assert_eq!(checkpoints.len(), 2);
    assert_eq!(a.read_all(Position(1), 100).await.unwrap().len(), 4);
}

/// A database at schema version 1 is migrated to the current version when a node opens it,
/// keeping its events.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_older_schema_is_migrated_in_place() {
    let pg = TempPostgres::start();
    let store = PgStore::open(&pg.url()).await.unwrap();
    store
        .append(&name("kept"), ExpectedRevision::NoStream, vec![event(0)])
        .await
        .unwrap();
    drop(store);
    let client = raw_client(&pg.url()).await;
    client
        .batch_execute("DROP TABLE annals.checkpoints; UPDATE annals.meta SET schema_version = 1")
        .await
        .unwrap();
    let store = PgStore::open(&pg.url()).await.unwrap();
    let version: i32 = client
        .query_one("SELECT schema_version FROM annals.meta", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, SCHEMA_VERSION);
    assert_eq!(store.checkpoint("anything").await.unwrap(), None);
    assert_eq!(store.read_all(Position(1), 10).await.unwrap().len(), 1);
}

/// `check` passes a store written by two nodes and names what is wrong once rows are damaged:
/// a missing event (a hole in the positions and in its stream's revisions), a head row that
/// disagrees, and an event whose stream has no row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn check_passes_a_good_store_and_names_the_damage() {
    let pg = TempPostgres::start();
    let a = PgStore::open(&pg.url()).await.unwrap();
    let b = PgStore::open(&pg.url()).await.unwrap();
    for i in 0..10u64 {
        let node = if i % 2 == 0 { &a } else { &b };
        node.append(
            &name(&format!("order-{}", i % 3)),
            ExpectedRevision::Any,
            vec![event(i), event(i)],
        )
        .await
        .unwrap();
    }
    let report = a.check().await.unwrap();
    assert_eq!(report.problems, Vec::<String>::new());
    assert_eq!((report.events, report.streams, report.head), (20, 3, 20));
    let client = raw_client(&pg.url()).await;
    client
        .batch_execute(
            "DELETE FROM annals.events WHERE position = 5; UPDATE annals.head SET position = 25; \
             UPDATE annals.events SET stream_id = 999 WHERE position = 7",
        )
        .await
        .unwrap();
    let report = b.check().await.unwrap();
    let text = report.problems.join("\n");
    assert!(text.contains("no event at position 5"), "{text}");
    assert!(
        text.contains("the head row says 25, the last event is at 20"),
        "{text}"
    );
    assert!(text.contains("19 events up to position 20"), "{text}");
    assert!(text.contains("stream order-"), "{text}");
    assert!(text.contains("1 events belong to no stream"), "{text}");
}

/// Three nodes keep trying for one job's lease: exactly one holds it at a time; when the holder
/// dies (its keeper stops), another takes it over, with a higher token, within the time to live
/// and a renewal.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_holders_lease_moves_to_another_node() {
    let pg = TempPostgres::start();
    let ttl = Duration::from_millis(1_500);
    let renew = Duration::from_millis(300);
    let mut keepers = Vec::new();
    for node in 0..3 {
        let store = PgStore::open(&pg.url()).await.unwrap();
        keepers.push(Some(store.keep_lease(
            "projection-y",
            &format!("node-{node}"),
            ttl,
            renew,
        )));
    }
    let holders = |keepers: &[Option<annals_pgstore::LeaseKeeper>]| -> Vec<(usize, i64)> {
        keepers
            .iter()
            .enumerate()
            .filter_map(|(i, k)| {
                let k = k.as_ref()?;
                let held = k.watch().borrow().clone();
                held.map(|l| (i, l.token))
            })
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (first, token) = loop {
        let now = holders(&keepers);
        assert!(now.len() <= 1, "two nodes hold one lease: {now:?}");
        if let Some(&h) = now.first() {
            break h;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nobody took the lease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The holder dies.
    keepers[first] = None;
    let died = std::time::Instant::now();
    let (second, new_token) = loop {
        let now = holders(&keepers);
        assert!(now.len() <= 1, "two nodes hold one lease: {now:?}");
        if let Some(&h) = now.first() {
            break h;
        }
        assert!(
            died.elapsed() < Duration::from_secs(10),
            "the lease did not move within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_ne!(second, first);
    assert!(new_token > token);
    assert!(
        died.elapsed() >= ttl / 2,
        "it moved before the dead holder's term could lapse"
    );
}

/// A tombstone deletes a stream for good on every node: appends and another tombstone answer
/// stream-deleted; a wrong expected revision is refused first; `check` still passes (the
/// tombstone's revision is not counted among the stream's).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tombstone_deletes_a_stream_for_good() {
    let pg = TempPostgres::start();
    let a = PgStore::open(&pg.url()).await.unwrap();
    let b = PgStore::open(&pg.url()).await.unwrap();
    let s = name("gone-1");
    a.append(&s, ExpectedRevision::NoStream, vec![event(0), event(1)])
        .await
        .unwrap();
    assert!(matches!(
        b.tombstone(&s, ExpectedRevision::Exact(0)).await,
        Err(PgStoreError::Domain(DomainError::WrongExpectedRevision {
            actual: Some(1),
            ..
        }))
    ));
    let done = b.tombstone(&s, ExpectedRevision::Exact(1)).await.unwrap();
    assert_eq!(
        (done.next_revision, done.position),
        (Revision(1), Position(3))
    );
    for attempt in [
        a.append(&s, ExpectedRevision::Any, vec![event(2)]).await,
        a.tombstone(&s, ExpectedRevision::Any).await,
    ] {
        assert!(
            matches!(
                attempt,
                Err(PgStoreError::Domain(DomainError::StreamDeleted { .. }))
            ),
            "{attempt:?}"
        );
    }
    let events = a.read_stream(&s, Revision(0), 10).await.unwrap();
    assert_eq!(events.len(), 3);
    assert!(events[2].is_tombstone());
    assert_eq!(a.check().await.unwrap().problems, Vec::<String>::new());
}
