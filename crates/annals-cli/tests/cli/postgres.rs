//! The commands on a store in PostgreSQL, against a throwaway server: `annals check --store`
//! passes a store written through `annals-pgstore`, fails one whose rows were damaged and one
//! that holds no store (writing nothing); `annals migrate` copies a store into Postgres and back
//! unchanged; `annals bench append --store` prints its figures, with no position found late on
//! Annals's side.

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
        "--rounds",
        "2",
        "--json",
    ]);
    let line = out.lines().last().unwrap();
    let figures: Value = serde_json::from_str(line).unwrap();
    assert_eq!(figures["bench"], "append-postgres");
    assert_eq!(figures["events"], 400);
    assert_eq!(figures["rounds"].as_array().unwrap().len(), 2, "{line}");
    assert_eq!(figures["annals_late_positions"], 0, "{line}");
    assert_eq!(figures["annals_holes"], 0, "{line}");
    assert!(figures["annals_events_per_s"].as_f64().unwrap() > 0.0);
    assert!(figures["baseline_events_per_s"].as_f64().unwrap() > 0.0);
}

/// `bench replay --store`: the node's catch-up brings every event over (the bench checks the
/// node's head) and both figures are reported; the bench's database is dropped after.
#[test]
fn bench_replay_on_postgres_prints_its_figures() {
    let pg = TempPostgres::start();
    let out = annals_ok(&[
        "bench",
        "replay",
        "--store",
        &pg.url(),
        "--events",
        "10000",
        "--rounds",
        "1",
        "--json",
    ]);
    let line = out.lines().last().unwrap();
    let figures: Value = serde_json::from_str(line).unwrap();
    assert_eq!(figures["bench"], "replay-postgres");
    assert_eq!(figures["events"], 10_000);
    assert!(
        figures["annals_events_per_s"].as_f64().unwrap() > 0.0,
        "{line}"
    );
    assert!(
        figures["baseline_events_per_s"].as_f64().unwrap() > 0.0,
        "{line}"
    );
}

/// An embedded store with several streams, a soft delete (a metadata event) and a tombstone is
/// copied into Postgres unchanged: first part of it (as an interrupted copy would leave it),
/// then `annals migrate` goes on from there; after more appends to the source, a second run
/// copies only those. Every event is at the same position, stream and revision with the same id,
/// type and bytes; `annals check --store` passes. Copied back into a fresh directory, the store
/// equals the original and checks clean. A target holding another store is refused.
#[test]
fn migrate_an_embedded_store_into_postgres() {
    use annals_core::Position;
    use annals_engine::{Durability, Engine, EngineConfig};
    let pg = TempPostgres::start();
    let url = pg.url();
    let dir = tempfile::tempdir().unwrap();
    let config = || EngineConfig {
        durability: Durability::None,
        ..EngineConfig::default()
    };
    let event = |i: u32| NewEvent {
        id: uuid::Uuid::new_v4(),
        event_type: EventType::new(format!("Type{}", i % 3)).unwrap(),
        content_type: if i.is_multiple_of(5) {
            ContentType::Binary
        } else {
            ContentType::Json
        },
        data: bytes::Bytes::from(format!("{{\"i\":{i}}}")),
        metadata: bytes::Bytes::from(format!("{{\"m\":{i}}}")),
    };
    let (engine, _) = Engine::open_dir(dir.path(), config()).unwrap();
    for i in 0..300u32 {
        let stream = StreamName::new(format!("cart-{}", i % 7)).unwrap();
        engine
            .append(
                &stream,
                ExpectedRevision::Any,
                vec![event(i), event(i + 1000)],
            )
            .unwrap();
    }
    engine
        .delete(&StreamName::new("cart-1").unwrap(), ExpectedRevision::Any)
        .unwrap();
    engine
        .tombstone(&StreamName::new("cart-2").unwrap(), ExpectedRevision::Any)
        .unwrap();
    let first_part = engine
        .read_all(Position(1), annals_core::Direction::Forwards, 100, None)
        .unwrap()
        .events;
    engine.close();
    drop(engine);
    // An interrupted copy: the first 100 positions only.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let target = PgStore::open(&url).await.unwrap();
        target.import(&first_part).await.unwrap();
    });
    let dir_str = dir.path().to_str().unwrap();
    let out = annals_ok(&["migrate", "--from", dir_str, "--to", &url]);
    assert!(out.contains("migrated positions 101.."), "{out}");
    let (engine, _) = Engine::open_dir(dir.path(), config()).unwrap();
    engine
        .append(
            &StreamName::new("cart-9").unwrap(),
            ExpectedRevision::Any,
            vec![event(7)],
        )
        .unwrap();
    let head = engine.head();
    let source = engine
        .read_all(Position(1), annals_core::Direction::Forwards, 10_000, None)
        .unwrap()
        .events;
    engine.close();
    drop(engine);
    let out = annals_ok(&["migrate", "--from", dir_str, "--to", &url]);
    assert!(out.contains(&format!("({} events)", 1)), "{out}");
    let copied = runtime.block_on(async {
        let target = PgStore::open(&url).await.unwrap();
        assert_eq!(target.head(), head);
        target.read_all(Position(1), 10_000).await.unwrap()
    });
    assert_eq!(copied.len(), source.len());
    for (c, s) in copied.iter().zip(&source) {
        assert_eq!(
            (
                c.position,
                &c.stream,
                c.revision,
                c.id,
                &c.event_type,
                c.content_type
            ),
            (
                s.position,
                &s.stream,
                s.revision,
                s.id,
                &s.event_type,
                s.content_type
            )
        );
        assert_eq!(
            (&c.data, &c.metadata, c.created),
            (&s.data, &s.metadata, s.created)
        );
    }
    let check = annals_ok(&["check", "--store", &url]);
    assert!(check.trim_end().ends_with("OK"), "{check}");
    // And back: Postgres into a fresh store directory, equal to the original.
    let back = tempfile::tempdir().unwrap();
    let back_dir = back.path().join("store");
    let back_str = back_dir.to_str().unwrap();
    let out = annals_ok(&["migrate", "--from", &url, "--to", back_str]);
    assert!(out.contains(&format!("({} events)", head.0)), "{out}");
    let (engine, _) = Engine::open_dir(&back_dir, config()).unwrap();
    let returned = engine
        .read_all(Position(1), annals_core::Direction::Forwards, 10_000, None)
        .unwrap()
        .events;
    engine.close();
    drop(engine);
    assert_eq!(returned, source, "the round trip changed the store");
    let check = annals_ok(&["check", back_str]);
    assert!(check.trim_end().ends_with("OK"), "{check}");
    // Another store's directory is refused: the target's last event is not its.
    let other = tempfile::tempdir().unwrap();
    let (engine, _) = Engine::open_dir(other.path(), config()).unwrap();
    for i in 0..(head.0 as u32 + 5) {
        engine
            .append(
                &StreamName::new("other").unwrap(),
                ExpectedRevision::Any,
                vec![event(i)],
            )
            .unwrap();
    }
    engine.close();
    drop(engine);
    let refused = annals(&[
        "migrate",
        "--from",
        other.path().to_str().unwrap(),
        "--to",
        &url,
    ]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("holds another store"), "{err}");
}

/// Appends through `POST /streams/{stream}`; the position, or `None` if refused.
fn http_append(
    client: &reqwest::blocking::Client,
    base: &str,
    stream: &str,
    i: u64,
) -> Option<u64> {
    let body = serde_json::json!({"events": [{"type": "Placed", "data": {"i": i}}]});
    let resp = client
        .post(format!("{base}/streams/{stream}"))
        .json(&body)
        .send()
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let v: Value = resp.json().ok()?;
    v["position"].as_u64()
}

/// The positions a live feed (`GET /all/live`) sends, until `n` of them came (or 30 s passed).
fn sse_positions(url: &str, n: usize) -> Vec<u64> {
    sse_positions_while(url, std::time::Duration::from_secs(30), |seen| {
        seen.len() < n
    })
}

/// The positions the live feed at `url` sends (checkpoints left out) while `more` says so of
/// what came so far, or until `timeout` passed or the feed ended.
pub(crate) fn sse_positions_while(
    url: &str,
    timeout: std::time::Duration,
    mut more: impl FnMut(&[u64]) -> bool,
) -> Vec<u64> {
    use std::io::{BufRead, BufReader};
    let resp = reqwest::blocking::Client::builder()
        .timeout(timeout)
        .build()
        .unwrap()
        .get(url)
        .send()
        .unwrap();
    let mut out = Vec::new();
    let mut checkpoint = false;
    for line in BufReader::new(resp).lines() {
        let Ok(line) = line else { break };
        if line.is_empty() {
            checkpoint = false;
        } else if line == "event: checkpoint" {
            checkpoint = true;
        } else if let Some(id) = line.strip_prefix("id: ")
            && !checkpoint
        {
            out.push(id.parse().unwrap());
            if !more(&out) {
                break;
            }
        }
    }
    out
}

/// Every position of `$all` as one node serves it, from 1 on, paged.
fn http_positions(client: &reqwest::blocking::Client, base: &str) -> Vec<u64> {
    let mut out = Vec::new();
    let mut from = 1u64;
    loop {
        let page: Value = client
            .get(format!("{base}/all?from={from}&count=1000"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let events = page["events"].as_array().unwrap();
        out.extend(events.iter().map(|e| e["position"].as_u64().unwrap()));
        if page["endReached"].as_bool().unwrap_or(true) || events.is_empty() {
            return out;
        }
        from = page["next"].as_u64().unwrap();
    }
}

/// Three `annals serve` nodes on one Postgres (`--store`): writers append through all three;
/// a live subscriber on each node from position 1 sees exactly 1..N in order, and each node
/// serves the same `$all`, positions 1..N with every acknowledged append where
/// its answer said; a node killed with SIGKILL and started again on its directory catches up
/// and serves the same; a node on a wiped directory rebuilds its copy from Postgres. A tombstone
/// and a soft delete through one node delete their streams on every node.
#[test]
fn three_nodes_serve_one_store_in_postgres() {
    use crate::support::Server;
    let pg = TempPostgres::start();
    let url = pg.url();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes: Vec<Server> = dirs
        .iter()
        .map(|d| Server::start(d.path(), &["--store", &url, "--durability", "none"]))
        .collect();
    let bases: Vec<String> = nodes.iter().map(|n| format!("http://{}", n.addr)).collect();
    // One live subscriber per node, from position 1, before anything is written.
    let subscribers: Vec<_> = bases
        .iter()
        .map(|base| {
            let url = format!("{base}/all/live?from=start");
            std::thread::spawn(move || sse_positions(&url, 150))
        })
        .collect();
    let writers: Vec<_> = (0..6u64)
        .map(|w| {
            let bases = bases.clone();
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                let mut acked = Vec::new();
                for i in 0..25u64 {
                    let base = &bases[((w + i) % 3) as usize];
                    if let Some(p) = http_append(&client, base, &format!("node-writer-{w}"), i) {
                        acked.push(p);
                    }
                }
                acked
            })
        })
        .collect();
    let mut acked: Vec<u64> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    acked.sort_unstable();
    assert_eq!(
        acked.len(),
        150,
        "every append through any node is acknowledged"
    );
    assert_eq!(acked, (1..=150).collect::<Vec<_>>());
    let client = reqwest::blocking::Client::new();
    let wait_for = |base: &str, n: usize| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let got = http_positions(&client, base);
            if got.len() >= n || std::time::Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    for base in &bases {
        assert_eq!(
            wait_for(base, 150),
            acked,
            "node {base} serves another $all"
        );
    }
    for (node, sub) in subscribers.into_iter().enumerate() {
        assert_eq!(sub.join().unwrap(), acked, "node {node}'s live subscriber");
    }
    // SIGKILL a node, append through another, start it again: it catches up.
    let _ = nodes[0].child.kill();
    let _ = nodes[0].child.wait();
    assert!(http_append(&client, &bases[1], "after-kill", 0).is_some());
    nodes[0] = Server::start(dirs[0].path(), &["--store", &url, "--durability", "none"]);
    let restarted = format!("http://{}", nodes[0].addr);
    assert_eq!(wait_for(&restarted, 151), (1..=151).collect::<Vec<_>>());
    // A wiped directory is rebuilt from Postgres.
    let fresh = tempfile::tempdir().unwrap();
    let rebuilt = Server::start(fresh.path(), &["--store", &url, "--durability", "none"]);
    let rebuilt_base = format!("http://{}", rebuilt.addr);
    assert_eq!(
        http_positions(&client, &rebuilt_base),
        (1..=151).collect::<Vec<_>>()
    );
    // A tombstone and a soft delete through one node delete the stream on every node.
    crate::support::runtime().block_on(async {
        let on_2 = kurrentdb::Client::new(nodes[2].url().parse().unwrap()).unwrap();
        let on_1 = kurrentdb::Client::new(nodes[1].url().parse().unwrap()).unwrap();
        on_2.tombstone_stream(
            "node-writer-0",
            &kurrentdb::TombstoneStreamOptions::default(),
        )
        .await
        .unwrap();
        on_2.delete_stream("node-writer-1", &kurrentdb::DeleteStreamOptions::default())
            .await
            .unwrap();
        let first_error = |stream: &'static str| {
            let on_1 = on_1.clone();
            async move {
                match on_1
                    .read_stream(stream, &kurrentdb::ReadStreamOptions::default())
                    .await
                {
                    Ok(mut r) => r.next().await.err(),
                    Err(e) => Some(e),
                }
            }
        };
        let tombstoned = first_error("node-writer-0").await;
        assert!(
            matches!(tombstoned, Some(kurrentdb::Error::ResourceDeleted)),
            "{tombstoned:?}"
        );
        let soft_deleted = first_error("node-writer-1").await;
        assert!(
            matches!(soft_deleted, Some(kurrentdb::Error::ResourceNotFound)),
            "{soft_deleted:?}"
        );
    });
    assert_eq!(http_positions(&client, &bases[2]).len(), 153);
}
