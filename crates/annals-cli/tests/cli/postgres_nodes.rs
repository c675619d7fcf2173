//! Several `annals serve` nodes on one store in PostgreSQL under load: 64 writers over three
//! nodes, a live subscriber per node, the node running the jobs killed mid-load and started
//! again, and its projection taken over by another node from its checkpoint.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use annals_testkit::postgres::TempPostgres;
use serde_json::Value;

use crate::support::Server;

/// A view of every `Placed` event of the `order` category, one row per event and no key, so an
/// event applied twice shows as a second row.
const VIEW: &str = r#"
[[projection]]
name = "placed"
source = { category = "order" }
tables = ["placed"]
setup = ["CREATE TABLE {placed} (position BIGINT NOT NULL, stream TEXT NOT NULL)"]

[[projection.handler]]
event_type = "Placed"
sql = "INSERT INTO {placed} (position, stream) VALUES ($1, $2)"
params = ["position", "stream"]
"#;

const WRITERS: u64 = 64;
const APPENDS_PER_WRITER: u64 = 12;

fn http_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Appends one `Placed` event with the id `id` (a retry on another node stays idempotent); its
/// position, or `None` if the node did not acknowledge it.
fn append(client: &reqwest::blocking::Client, base: &str, stream: &str, id: &str) -> Option<u64> {
    let body = serde_json::json!({"events": [{"id": id, "type": "Placed", "data": {}}]});
    let resp = client
        .post(format!("{base}/streams/{stream}"))
        .json(&body)
        .send()
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json::<Value>().ok()?["position"].as_u64()
}

/// Every event of `$all` as one node serves it: (position, stream, type).
fn all_events(client: &reqwest::blocking::Client, base: &str) -> Vec<(u64, String, String)> {
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
        out.extend(events.iter().map(|e| {
            (
                e["position"].as_u64().unwrap(),
                e["stream"].as_str().unwrap().to_owned(),
                e["type"].as_str().unwrap().to_owned(),
            )
        }));
        if page["endReached"].as_bool().unwrap_or(true) || events.is_empty() {
            return out;
        }
        from = page["next"].as_u64().unwrap();
    }
}

/// The live feed's positions from 1 on, until one at or past `until` (or the feed ends).
fn live_positions(base: &str, until: Arc<AtomicU64>) -> Vec<u64> {
    crate::postgres::sse_positions_while(
        &format!("{base}/all/live?from=start"),
        Duration::from_secs(120),
        |seen| {
            seen.last()
                .is_none_or(|p| *p < until.load(Ordering::SeqCst))
        },
    )
}

/// Which node answers for the projections (the holder of the jobs lease), once exactly one
/// does and every other names it; waits up to `within`.
fn jobs_holder(client: &reqwest::blocking::Client, bases: &[String], within: Duration) -> usize {
    jobs_holder_as(client, bases, within, None)
}

/// [`jobs_holder`], asking as the user `login` with `password` when given.
fn jobs_holder_as(
    client: &reqwest::blocking::Client,
    bases: &[String],
    within: Duration,
    user: Option<(&str, &str)>,
) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let answers: Vec<(u16, Value)> = bases
            .iter()
            .map(|b| {
                let mut req = client.get(format!("{b}/projections"));
                if let Some((login, password)) = user {
                    req = req.basic_auth(login, Some(password));
                }
                req.send()
            })
            .map(|answer| match answer {
                Ok(r) => (r.status().as_u16(), r.json().unwrap_or(Value::Null)),
                Err(_) => (0, Value::Null),
            })
            .collect();
        let serving: Vec<usize> = (0..bases.len()).filter(|&i| answers[i].0 == 200).collect();
        if let [holder] = serving[..] {
            let address = bases[holder].trim_start_matches("http://");
            let others_name_it = answers.iter().enumerate().all(|(i, (status, body))| {
                i == holder
                    || *status == 0
                    || (*status == 503
                        && body["error"] == "jobs_elsewhere"
                        && body["message"].as_str().unwrap_or("").contains(address))
            });
            if others_name_it {
                return holder;
            }
        }
        assert!(
            serving.len() <= 1,
            "two nodes run the jobs at once: {answers:?}"
        );
        assert!(
            Instant::now() < deadline,
            "no single node runs the jobs: {answers:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The projection's rows, read from the store's database (its default target).
fn view_positions(pg: &TempPostgres) -> Vec<i64> {
    view_positions_or_none(pg).expect("the view exists")
}

/// Nodes of `annals serve --store` on one throwaway Postgres, each with the `placed`
/// projection's definition file.
struct Nodes {
    pg: TempPostgres,
    _work: tempfile::TempDir,
    dirs: Vec<tempfile::TempDir>,
    args: Vec<String>,
    nodes: Vec<Server>,
    bases: Vec<String>,
}

impl Nodes {
    fn start(n: usize) -> Nodes {
        let pg = TempPostgres::start();
        let work = tempfile::tempdir().unwrap();
        let view = work.path().join("view.toml");
        std::fs::write(&view, VIEW).unwrap();
        let args: Vec<String> = [
            "--store",
            &pg.url(),
            "--durability",
            "none",
            "--projections",
            view.to_str().unwrap(),
        ]
        .map(str::to_owned)
        .to_vec();
        let dirs: Vec<tempfile::TempDir> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut nodes = Nodes {
            pg,
            _work: work,
            dirs,
            args,
            nodes: Vec::new(),
            bases: Vec::new(),
        };
        for i in 0..n {
            let node = nodes.serve(i);
            nodes.bases.push(format!("http://{}", node.addr));
            nodes.nodes.push(node);
        }
        nodes
    }

    /// Starts node `i` on its directory.
    fn serve(&self, i: usize) -> Server {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        Server::start(self.dirs[i].path(), &args)
    }

    /// Starts node `i` again (after it was killed); its new base URL.
    fn restart(&mut self, i: usize) -> String {
        self.nodes[i] = self.serve(i);
        self.bases[i] = format!("http://{}", self.nodes[i].addr);
        self.bases[i].clone()
    }
}

/// Three nodes, 64 writers spread over them, a live subscriber per node from position 1. The
/// node running the jobs is killed with SIGKILL a third of the way in and started again: every
/// acknowledged append is in the store where its answer said, positions are 1..N with none
/// missing, every surviving subscriber (and one started on the restarted node) saw exactly 1..N
/// in order, another node took the jobs within 10 s, and the projection it resumed holds every
/// `Placed` event exactly once.
#[test]
fn sixty_four_writers_three_nodes_and_the_jobs_node_killed() {
    let mut cluster = Nodes::start(3);
    let mut bases = cluster.bases.clone();
    let client = http_client();
    let holder = jobs_holder(&client, &bases, Duration::from_secs(20));

    let until = Arc::new(AtomicU64::new(u64::MAX));
    let subscribers: Vec<_> = bases
        .iter()
        .map(|base| {
            let (base, until) = (base.clone(), Arc::clone(&until));
            std::thread::spawn(move || live_positions(&base, until))
        })
        .collect();
    let live_bases = Arc::new(parking_lot::RwLock::new(bases.clone()));
    let done = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (live_bases, done) = (Arc::clone(&live_bases), Arc::clone(&done));
            std::thread::spawn(move || {
                let client = http_client();
                let stream = format!("order-{w}");
                let mut acked = Vec::new();
                for i in 0..APPENDS_PER_WRITER {
                    let id = uuid::Uuid::new_v4().to_string();
                    // A refused or unanswered append goes to the next node, same event id.
                    for attempt in 0..30u64 {
                        let base = {
                            let bases = live_bases.read();
                            bases[((w + i + attempt) % 3) as usize].clone()
                        };
                        if let Some(p) = append(&client, &base, &stream, &id) {
                            acked.push((p, stream.clone()));
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
                acked
            })
        })
        .collect();

    // A third of the way in, the node running the jobs dies.
    let total = usize::try_from(WRITERS * APPENDS_PER_WRITER).unwrap();
    while done.load(Ordering::SeqCst) < total / 3 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = cluster.nodes[holder].child.kill();
    let _ = cluster.nodes[holder].child.wait();
    let killed_at = Instant::now();
    let survivors: Vec<String> = (0..3)
        .filter(|&i| i != holder)
        .map(|i| bases[i].clone())
        .collect();
    let next = jobs_holder(&client, &survivors, Duration::from_secs(30));
    let moved_in = killed_at.elapsed();
    eprintln!("the jobs moved from node {holder} to another {moved_in:?} after it was killed");
    assert!(
        moved_in < Duration::from_secs(10),
        "the jobs moved {moved_in:?} after their node died"
    );
    // The killed node comes back on its directory and takes writes again.
    bases[holder] = cluster.restart(holder);
    live_bases.write()[holder] = bases[holder].clone();

    let mut acked: Vec<(u64, String)> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    acked.sort_unstable();
    assert_eq!(acked.len(), total, "every append was acknowledged at last");
    // One more event marks the end for the subscribers.
    let marker = append(
        &client,
        &survivors[0],
        "end-1",
        &uuid::Uuid::new_v4().to_string(),
    )
    .expect("the marker append");
    until.store(marker, Ordering::SeqCst);
    let last = append(
        &client,
        &survivors[0],
        "end-2",
        &uuid::Uuid::new_v4().to_string(),
    )
    .expect("the last append");

    // Every node serves the same dense $all, with each acknowledged append where it said (each
    // read once the node has imported the last append, which another node took).
    let all_of = |base: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let events = all_events(&client, base);
            if events.len() as u64 >= last || Instant::now() > deadline {
                return events;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let all = all_of(&bases[0]);
    let positions: Vec<u64> = all.iter().map(|e| e.0).collect();
    assert_eq!(positions, (1..=last).collect::<Vec<_>>());
    for base in &bases[1..] {
        assert_eq!(all_of(base), all, "{base} serves another $all");
    }
    for (p, stream) in &acked {
        let e = &all[usize::try_from(*p - 1).unwrap()];
        assert_eq!((&e.0, &e.1), (p, stream), "acknowledged append at {p}");
    }
    // Subscribers: each survivor's saw 1..N in order; a new one on the restarted node too.
    let restarted = {
        let (base, until) = (bases[holder].clone(), Arc::clone(&until));
        std::thread::spawn(move || live_positions(&base, until))
    };
    for (node, sub) in subscribers.into_iter().enumerate() {
        let seen = sub.join().unwrap();
        if node == holder {
            continue; // its node was killed under it
        }
        assert!(
            seen.len() as u64 >= marker,
            "node {node}'s subscriber stopped short"
        );
        assert_eq!(
            seen,
            (1..=seen.len() as u64).collect::<Vec<_>>(),
            "node {node}"
        );
    }
    let seen = restarted.join().unwrap();
    assert!(seen.len() as u64 >= marker);
    assert_eq!(seen, (1..=seen.len() as u64).collect::<Vec<_>>());

    // The projection, resumed on the new holder, holds every Placed event exactly once.
    let placed: Vec<i64> = all
        .iter()
        .filter(|e| e.1.starts_with("order-") && e.2 == "Placed")
        .map(|e| i64::try_from(e.0).unwrap())
        .collect();
    let wait = client
        .get(format!(
            "{}/projections/placed/wait?position={}&timeoutMs=15000",
            survivors[next],
            all.len()
        ))
        .send()
        .unwrap();
    let status = wait.status();
    assert!(status.is_success(), "{status}: {}", wait.text().unwrap());
    let rows = view_positions(&cluster.pg);
    let distinct: BTreeSet<i64> = rows.iter().copied().collect();
    assert_eq!(distinct.len(), rows.len(), "an event applied twice");
    assert_eq!(rows, placed, "the view after the jobs moved");
}

/// Two nodes with users on: a user created through one node signs in on the other at once
/// (users live in the store, and each node follows their stream); a KurrentDB client connected
/// to the node without the jobs is told `not-leader` with the other node's address, reconnects
/// there by itself, and its persistent subscription delivers.
#[test]
fn users_and_persistent_subscriptions_across_two_nodes() {
    use kurrentdb::{
        AppendToStreamOptions, EventData, PersistentSubscriptionOptions, StreamPosition,
        SubscribeToPersistentSubscriptionOptions,
    };
    let pg = TempPostgres::start();
    let url = pg.url();
    let args = [
        "--store",
        &url,
        "--durability",
        "none",
        "--auth",
        "--insecure-allow-plaintext-auth",
        "--admin-password",
        "changeit",
    ];
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes: Vec<Server> = dirs
        .iter()
        .map(|d| Server::start(d.path(), &args))
        .collect();
    let bases: Vec<String> = nodes.iter().map(|n| format!("http://{}", n.addr)).collect();
    let client = http_client();
    let admin = Some(("admin", "changeit"));
    let holder = jobs_holder_as(&client, &bases, Duration::from_secs(20), admin);
    let other = 1 - holder;

    // `/status` and the overview say where the jobs run.
    for (node, expected) in [
        (holder, Value::Null),
        (other, Value::from(nodes[holder].addr.to_string())),
    ] {
        let status: Value = client
            .get(format!("{}/status", bases[node]))
            .basic_auth("admin", Some("changeit"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(status["jobsElsewhere"], expected, "node {node}: {status}");
    }
    let overview = client
        .get(format!("{}/", bases[other]))
        .basic_auth("admin", Some("changeit"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        overview.contains(&format!("run on another node: {}", nodes[holder].addr)),
        "{overview}"
    );
    for page in ["ui/projections/placed", "ui/subscriptions", "ui/relays"] {
        let answer = client
            .get(format!("{}/{page}", bases[other]))
            .basic_auth("admin", Some("changeit"))
            .send()
            .unwrap();
        assert_eq!(answer.status(), 503, "{page}");
        let text = answer.text().unwrap();
        assert!(
            text.contains(&format!("run on another node now: {}", nodes[holder].addr)),
            "{page}: {text}"
        );
    }

    // A user created on one node signs in on the other.
    let created = client
        .post(format!("{}/users", bases[holder]))
        .basic_auth("admin", Some("changeit"))
        .json(
            &serde_json::json!({"login": "ann", "password": "pw", "fullName": "Ann", "groups": []}),
        )
        .send()
        .unwrap();
    assert!(created.status().is_success(), "{}", created.text().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let me = client
            .get(format!("{}/users/ann", bases[other]))
            .basic_auth("ann", Some("pw"))
            .send()
            .unwrap();
        if me.status().is_success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ann cannot sign in on the other node: {}",
            me.status()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    crate::support::runtime().block_on(async {
        let settings = format!("kurrentdb://admin:changeit@{}?tls=false", nodes[other].addr);
        let c = kurrentdb::Client::new(settings.parse().unwrap()).unwrap();
        let events: Vec<EventData> = (0..5)
            .map(|n| EventData::json("Numbered", &serde_json::json!({ "n": n })).unwrap())
            .collect();
        c.append_to_stream("ledger-1", &AppendToStreamOptions::default(), events)
            .await
            .unwrap();
        let options = PersistentSubscriptionOptions::default().start_from(StreamPosition::Start);
        // The node without the jobs names the one with them; the client goes there.
        let first = c
            .create_persistent_subscription("ledger-1", "g", &options)
            .await;
        match first {
            Err(kurrentdb::Error::NotLeaderException(leader)) => {
                assert_eq!(
                    u32::from(nodes[holder].addr.port()),
                    leader.port,
                    "{leader:?}"
                );
            }
            other => panic!("expected not-leader from the node without the jobs: {other:?}"),
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match c
                .create_persistent_subscription("ledger-1", "g", &options)
                .await
            {
                Ok(()) => break,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "the client did not reach the jobs' node: {e:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        let mut sub = c
            .subscribe_to_persistent_subscription(
                "ledger-1",
                "g",
                &SubscribeToPersistentSubscriptionOptions::default(),
            )
            .await
            .unwrap();
        for n in 0..5u64 {
            let e = tokio::time::timeout(Duration::from_secs(10), sub.next())
                .await
                .expect("a delivery within 10 s")
                .unwrap();
            assert_eq!(e.get_original_event().revision, n);
            sub.ack(&e).await.unwrap();
        }
    });
}

/// Rows of the `placed` view, waiting until there are `n` of them (or 30 s passed).
fn view_rows_reaching(pg: &TempPostgres, n: usize) -> Vec<i64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = view_positions_or_none(pg).unwrap_or_default();
        if rows.len() >= n || Instant::now() > deadline {
            return rows;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The view's rows, or `None` while it does not exist yet.
fn view_positions_or_none(pg: &TempPostgres) -> Option<Vec<i64>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let rows = client
            .query("SELECT position FROM placed ORDER BY position", &[])
            .await
            .ok()?;
        Some(rows.iter().map(|r| r.get(0)).collect())
    })
}

fn signal(node: &Server, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &node.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The node running the jobs is paused (SIGSTOP: a long GC pause, a frozen VM) past its lease;
/// the other node takes the jobs over and the projection goes on there. When the paused node
/// wakes, it still believes for a moment that it runs the projection, with batches in flight:
/// the fences refuse whatever it tries to write, it stops its jobs and names the new holder,
/// and the view holds every event exactly once.
#[test]
fn a_paused_jobs_node_writes_nothing_when_it_wakes() {
    let cluster = Nodes::start(2);
    let (pg, nodes, bases) = (&cluster.pg, &cluster.nodes, &cluster.bases);
    let client = http_client();
    let paused = jobs_holder(&client, bases, Duration::from_secs(20));
    let other = 1 - paused;
    let write = |n: usize| {
        for _ in 0..n {
            let id = uuid::Uuid::new_v4().to_string();
            assert!(append(&client, &bases[other], "order-1", &id).is_some());
        }
    };
    write(50);
    assert_eq!(view_rows_reaching(pg, 50).len(), 50);

    signal(&nodes[paused], "-STOP");
    write(50);
    let next = jobs_holder(&client, &bases[other..=other], Duration::from_secs(20));
    assert_eq!(next, 0);
    assert_eq!(view_rows_reaching(pg, 100).len(), 100);

    signal(&nodes[paused], "-CONT");
    // Awake, the old holder learns it lost the lease and names the new one.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = client
            .get(format!("{}/projections", bases[paused]))
            .send()
            .unwrap();
        if answer.status() == 503 {
            let body: Value = answer.json().unwrap();
            assert_eq!(body["error"], "jobs_elsewhere");
            // Right after it stops its jobs the node may not have looked the holder up yet.
            let message = body["message"].as_str().unwrap();
            if message.contains(bases[other].trim_start_matches("http://")) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the woken node still runs the jobs"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    write(20);
    let rows = view_rows_reaching(pg, 120);
    std::thread::sleep(Duration::from_secs(1));
    let rows_after = view_positions_or_none(pg).unwrap();
    assert_eq!(rows, rows_after, "rows written after the view was complete");
    let distinct: BTreeSet<i64> = rows.iter().copied().collect();
    assert_eq!(distinct.len(), rows.len(), "an event applied twice");
    assert_eq!(rows.len(), 120);
}

/// Postgres goes down under a node: `/health` says the node cannot take writes and why within a
/// few seconds, an append fails fast with 503 instead of hanging or succeeding, reads go on;
/// once Postgres is back the node says ok again by itself and takes the append.
#[test]
fn a_node_says_when_postgres_is_down_and_comes_back_by_itself() {
    let mut pg = TempPostgres::start();
    let url = pg.url();
    let dir = tempfile::tempdir().unwrap();
    let node = Server::start(dir.path(), &["--store", &url, "--durability", "none"]);
    let base = format!("http://{}", node.addr);
    let client = http_client();
    let health = || -> (u16, Value) {
        let r = client.get(format!("{base}/health")).send().unwrap();
        (r.status().as_u16(), r.json().unwrap())
    };
    assert!(append(&client, &base, "order-1", &uuid::Uuid::new_v4().to_string()).is_some());
    assert_eq!(health().0, 200);

    pg.stop_immediate();
    let deadline = Instant::now() + Duration::from_secs(15);
    let (status, body) = loop {
        let (status, body) = health();
        if status == 503 || Instant::now() > deadline {
            break (status, body);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "read_only");
    assert!(
        body["reason"].as_str().unwrap().contains("PostgreSQL"),
        "{body}"
    );
    let started = Instant::now();
    let refused = client
        .post(format!("{base}/streams/order-1"))
        .json(&serde_json::json!({"events": [{"type": "Placed", "data": {}}]}))
        .send()
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    // Reads go on from the node's copy.
    assert_eq!(all_events(&client, &base).len(), 1);

    pg.start_again();
    let deadline = Instant::now() + Duration::from_secs(20);
    while health().0 != 200 {
        assert!(Instant::now() < deadline, "still {:?}", health());
        std::thread::sleep(Duration::from_millis(200));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if append(&client, &base, "order-1", &uuid::Uuid::new_v4().to_string()) == Some(2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node takes no writes after Postgres is back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
