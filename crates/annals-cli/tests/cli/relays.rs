//! A relay in `annals serve` across a SIGKILL of the server: declared with `--relays`, it
//! creates its JetStream stream, forwards events while appends go on, and after the kill and a
//! restart (without the file: the definition is in the store) it resumes from its checkpoint.
//! JetStream ends up holding every event exactly once (re-sends are dropped by `Nats-Msg-Id`),
//! each stream in order. `annals relays` commands drive it.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use annals_testkit::nats::TempNats;
use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt as _;

use crate::support::{Server, annals_ok, path_str, runtime};

const BATCHES: u64 = 60;
const BATCH: u64 = 50;

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn append_batches(server: &Server, batches: std::ops::Range<u64>) {
    let client = http();
    for b in batches {
        let events: Vec<_> = (0..BATCH)
            .map(|k| {
                serde_json::json!({
                    "id": uuid::Uuid::new_v4(),
                    "type": "OrderPlaced",
                    "data": { "n": b * BATCH + k },
                })
            })
            .collect();
        let answer = client
            .post(format!("http://{}/streams/order-{}", server.addr, b % 7))
            .json(&serde_json::json!({ "events": events }))
            .send()
            .unwrap();
        assert!(answer.status().is_success(), "{}", answer.text().unwrap());
    }
}

fn relay_status(server: &Server) -> serde_json::Value {
    let out = annals_ok(&["relays", "--server", &server.addr.to_string(), "list"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    v["relays"][0].clone()
}

#[test]
fn a_relay_resumes_after_sigkill_and_the_broker_holds_every_event_once() {
    let nats = TempNats::start();
    let dir = tempfile::tempdir().unwrap();
    let defs = dir.path().join("relays.toml");
    std::fs::write(
        &defs,
        format!(
            r#"
            [[relay]]
            name = "orders-out"
            source = {{ category = "order" }}
            sink = {{ kind = "nats", urls = ["{}"], subject = "ev.{{category}}.{{event_type}}", stream = "ORDERS", create = true }}
            "#,
            nats.url()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data, &["--relays", path_str(&defs)]);
    append_batches(&server, 0..BATCHES / 2);
    // Some events are out, some not yet: the kill lands mid-relay.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);
    let server = Server::start(&data, &[]);
    append_batches(&server, BATCHES / 2..BATCHES);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let status = relay_status(&server);
        if status["lag_events"] == 0 && status["in_flight"] == 0 {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the relay did not catch up: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status["state"], "running", "{status}");
    assert_eq!(status["parked"], 0, "{status}");

    // Prometheus sees the relay.
    let metrics = http()
        .get(format!("http://{}/metrics", server.addr))
        .send()
        .unwrap()
        .text()
        .unwrap();
    // The relay's position may still move after it caught up (past the checkpoints written to
    // the log meanwhile), so the metric lies between the positions read before and after it.
    let before = status["position"].as_u64().unwrap();
    let after = relay_status(&server)["position"].as_u64().unwrap();
    let sample = "annals_relay_position{relay=\"orders-out\",sink=\"nats\"} ";
    let position: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(sample))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("no position sample: {metrics}"));
    assert!(
        (before..=after).contains(&position),
        "the metric's position {position} is not between {before} and {after}: {metrics}"
    );
    assert!(metrics.contains("annals_relay_sent_total{relay=\"orders-out\""));
    assert!(metrics.trim_end().ends_with("# EOF"));

    // Pause stops sending; resume goes on.
    annals_ok(&[
        "relays",
        "--server",
        &server.addr.to_string(),
        "pause",
        "orders-out",
    ]);
    assert_eq!(relay_status(&server)["state"], "paused");
    annals_ok(&[
        "relays",
        "--server",
        &server.addr.to_string(),
        "resume",
        "orders-out",
    ]);
    assert_eq!(relay_status(&server)["state"], "running");

    let got = runtime().block_on(read_back(&nats.url()));
    let total = usize::try_from(BATCHES * BATCH).unwrap();
    assert_eq!(got.len(), total, "every event, once");
    let ids: HashSet<&String> = got.iter().map(|(_, _, id)| id).collect();
    assert_eq!(ids.len(), total);
    let mut next: HashMap<&str, u64> = HashMap::new();
    for (stream, revision, _) in &got {
        let want = next.entry(stream.as_str()).or_insert(0);
        assert_eq!(revision, want, "{stream} out of order");
        *want += 1;
    }
}

async fn read_back(url: &str) -> Vec<(String, u64, String)> {
    let js = jetstream::new(async_nats::connect(url).await.unwrap());
    let mut stream = js.get_stream("ORDERS").await.unwrap();
    let total = stream.info().await.unwrap().state.messages;
    let consumer = stream
        .create_consumer(pull::Config {
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut out = Vec::new();
    while (out.len() as u64) < total {
        let mut batch = consumer
            .fetch()
            .max_messages(1_000)
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .unwrap();
        while let Some(m) = batch.next().await {
            let m = m.unwrap();
            let h = m.headers.as_ref().unwrap();
            let get = |name: &str| h.get(name).unwrap().as_str().to_owned();
            out.push((
                get("Annals-Stream"),
                get("Annals-Revision").parse().unwrap(),
                get("Annals-Event-Id"),
            ));
        }
    }
    out
}

/// `annals bench relay` runs end to end against a throwaway JetStream server and reports both
/// sides and the live latency (the figures themselves are for docs/benchmarks.md).
#[test]
fn bench_relay_reports_the_relay_against_its_baseline() {
    let nats = TempNats::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = annals_ok(&[
        "bench",
        "relay",
        "--nats",
        &nats.url(),
        "--data",
        path_str(&data),
        "--events",
        "3000",
        "--streams",
        "64",
        "--live-events",
        "200",
        "--rate",
        "500",
        "--json",
    ]);
    let figures: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(figures["bench"], "relay");
    assert_eq!(figures["events"], 3000);
    for key in [
        "events_per_s",
        "baseline_events_per_s",
        "ratio",
        "live_p99_ms",
    ] {
        assert!(figures[key].as_f64().unwrap() > 0.0, "{key}: {figures}");
    }
    // The bench's JetStream streams are gone afterwards.
    let left = runtime().block_on(async {
        let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        js.stream_names().count().await
    });
    assert_eq!(left, 0);
}
