//! The persistent-subscription routes: groups managed over HTTP (create, refuse, update, list,
//! delete), parked events replayed over HTTP, and conflation, the setting only HTTP can give.
//! Consumers connect through `annals_persistent` directly, as the gRPC `Read` call does.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use annals_persistent::{ConnectionLabel, Consumer, ConsumerEvent, GroupKey, NackAction, Source};
use serde_json::{Value, json};

use crate::event;
use crate::support::Server;

/// Longest a test waits for one delivery or one state it expects.
const WAIT: Duration = Duration::from_secs(20);

impl Server {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::DELETE, path, None).await
    }

    async fn consumer(&self, stream: &str, group: &str, capacity: usize) -> Consumer {
        let key = GroupKey::new(Source::parse(stream).unwrap(), group).unwrap();
        self.persistent
            .connect(&key, capacity, ConnectionLabel::default())
            .await
            .unwrap()
    }

    /// Polls a group's info until `done` holds.
    async fn info_until(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let started = std::time::Instant::now();
        loop {
            let (status, info) = self.get(path).await;
            assert_eq!(status, 200, "{info}");
            if done(&info) {
                return info;
            }
            assert!(started.elapsed() < WAIT, "never reached: {info}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The next delivery: (stream, n, retry count, ack id).
async fn next(consumer: &mut Consumer) -> (String, u64, u32, uuid::Uuid) {
    let event = tokio::time::timeout(WAIT, consumer.next())
        .await
        .expect("a delivery within the wait");
    let d = match event {
        Some(ConsumerEvent::Event(d)) => Some(d),
        _ => None,
    }
    .expect("a delivery, not a dropped consumer");
    let e = d.message.payload.event();
    let data: Value = serde_json::from_slice(&e.data).unwrap();
    (
        e.stream.to_string(),
        data["n"].as_u64().unwrap(),
        d.retry_count,
        d.message.payload.ack_id(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn groups_are_managed_over_http() {
    let s = Server::start().await;
    let (status, body) = s.get("/subscriptions").await;
    assert_eq!((status, body), (200, json!({ "groups": [] })));

    let (status, body) = s
        .put(
            "/subscriptions/orders-1/g",
            json!({ "startFrom": "start", "strategy": "RoundRobin", "maxRetryCount": 3, "conflateBehind": 100 }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["stream"], "orders-1");
    assert_eq!(body["group"], "g");
    assert_eq!(body["settings"]["strategy"], "RoundRobin");
    assert_eq!(body["settings"]["maxRetryCount"], 3);
    assert_eq!(body["settings"]["conflateBehind"], 100);
    assert_eq!(body["settings"]["startFrom"], "start");
    // Absent settings take KurrentDB's defaults.
    assert_eq!(body["settings"]["messageTimeoutMs"], 30_000);
    assert_eq!(body["settings"]["historyBufferSize"], 500);

    let (status, body) = s.put("/subscriptions/orders-1/g", json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "group_exists");

    // Refused requests create nothing.
    for (group, bad, code) in [
        (
            "b1",
            json!({ "readBatchSize": 50, "historyBufferSize": 10 }),
            "invalid_settings",
        ),
        ("b2", json!({ "maxRetries": 3 }), "bad_request"),
        ("b3", json!({ "strategy": "Nope" }), "bad_request"),
        (
            "b4",
            json!({ "filter": { "on": "streamName", "prefixes": ["x"] } }),
            "bad_request",
        ),
        ("b5", json!({ "startFrom": "middle" }), "bad_request"),
    ] {
        let (status, body) = s
            .put(&format!("/subscriptions/orders-1/{group}"), bad.clone())
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"], code, "{bad}: {body}");
        let (status, body) = s.get(&format!("/subscriptions/orders-1/{group}")).await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["error"], "group_not_found");
    }
    let resp = s
        .client
        .put(format!("{}/subscriptions/orders-1/b6", s.base))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    let (status, body) = s
        .put(
            "/subscriptions/$all/everything",
            json!({ "startFrom": "start", "filter": { "on": "streamName", "prefixes": ["orders-"] } }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["settings"]["filter"]["on"], "streamName");

    // An update changes only what it names.
    let (status, body) = s
        .post("/subscriptions/orders-1/g", json!({ "maxRetryCount": 7 }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["settings"]["maxRetryCount"], 7);
    assert_eq!(body["settings"]["strategy"], "RoundRobin");
    assert_eq!(body["settings"]["conflateBehind"], 100);
    let (_, body) = s
        .post(
            "/subscriptions/orders-1/g",
            json!({ "conflateBehind": null }),
        )
        .await;
    assert_eq!(body["settings"]["conflateBehind"], Value::Null);
    assert_eq!(body["settings"]["maxRetryCount"], 7);
    let (status, body) = s
        .post(
            "/subscriptions/orders-1/missing",
            json!({ "maxRetryCount": 1 }),
        )
        .await;
    assert_eq!(status, 404, "{body}");

    let (_, body) = s.get("/subscriptions").await;
    let mut names: Vec<String> = body["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            format!(
                "{}/{}",
                g["stream"].as_str().unwrap(),
                g["group"].as_str().unwrap()
            )
        })
        .collect();
    names.sort();
    assert_eq!(names, vec!["$all/everything", "orders-1/g"]);
    let (_, body) = s.get("/subscriptions/orders-1").await;
    assert_eq!(body["groups"].as_array().unwrap().len(), 1);

    let (status, body) = s.delete("/subscriptions/orders-1/g").await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = s.get("/subscriptions/orders-1/g").await;
    assert_eq!(status, 404);
    let (status, body) = s.delete("/subscriptions/orders-1/g").await;
    assert_eq!(status, 404, "{body}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parked_events_replay_over_http() {
    let s = Server::start().await;
    let (status, _) = s
        .put("/subscriptions/jobs-1/g", json!({ "startFrom": "start" }))
        .await;
    assert_eq!(status, 201);
    for n in 0..2 {
        s.append(
            "jobs-1",
            None,
            json!({ "events": [event("Job", json!({ "n": n }))] }),
        )
        .await;
    }
    let mut consumer = s.consumer("jobs-1", "g", 10).await;
    for _ in 0..2 {
        let (_, _, _, id) = next(&mut consumer).await;
        consumer
            .nack(vec![id], NackAction::Park, "poison".to_owned())
            .await;
    }
    let info = s
        .info_until("/subscriptions/jobs-1/g", |i| i["parked"] == 2)
        .await;
    assert_eq!(info["counts"]["parked"], 2, "{info}");
    assert_eq!(info["connections"].as_array().unwrap().len(), 1, "{info}");

    let (status, body) = s
        .post("/subscriptions/jobs-1/g/replay-parked?stopAt=1", json!({}))
        .await;
    assert_eq!((status, &body), (200, &json!({ "replayed": 1 })));
    let (_, n, _, id) = next(&mut consumer).await;
    assert_eq!(n, 0, "the oldest parked event first");
    consumer.ack(vec![id]).await;
    let (status, body) = s
        .post("/subscriptions/jobs-1/g/replay-parked", json!({}))
        .await;
    assert_eq!((status, &body), (200, &json!({ "replayed": 1 })));
    let (_, n, _, id) = next(&mut consumer).await;
    assert_eq!(n, 1);
    consumer.ack(vec![id]).await;
    s.info_until("/subscriptions/jobs-1/g", |i| i["parked"] == 0)
        .await;
    let (status, body) = s
        .post("/subscriptions/jobs-1/nope/replay-parked", json!({}))
        .await;
    assert_eq!(status, 404, "{body}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conflation_delivers_the_newest_event_of_each_stream_when_far_behind() {
    const STREAMS: u64 = 3;
    const PER_STREAM: u64 = 40;
    let s = Server::start().await;
    let (status, body) = s
        .put(
            "/subscriptions/$all/prices",
            json!({
                "startFrom": "start",
                "filter": { "on": "streamName", "prefixes": ["price-"] },
                "conflateBehind": 5,
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    for stream in 0..STREAMS {
        let events: Vec<Value> = (0..PER_STREAM)
            .map(|n| event("Price", json!({ "n": n })))
            .collect();
        let (status, _) = s
            .append(
                &format!("price-{stream}"),
                None,
                json!({ "events": events }),
            )
            .await;
        assert_eq!(status, 200);
    }
    let mut consumer = s.consumer("$all", "prices", 10).await;
    let mut delivered: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut last_seen = BTreeSet::new();
    while last_seen.len() < usize::try_from(STREAMS).unwrap() {
        let (stream, n, _, id) = next(&mut consumer).await;
        consumer.ack(vec![id]).await;
        if n == PER_STREAM - 1 {
            last_seen.insert(stream.clone());
        }
        delivered.entry(stream).or_default().push(n);
    }
    let total: u64 = delivered.values().map(|v| v.len() as u64).sum();
    assert!(
        total < STREAMS * PER_STREAM,
        "far behind, superseded events are not delivered: {delivered:?}"
    );
    for (stream, ns) in &delivered {
        assert!(
            ns.windows(2).all(|w| w[0] < w[1]),
            "{stream} in order: {ns:?}"
        );
    }
    // Every event is accounted for: delivered and acked, or conflated away.
    let info = s
        .info_until("/subscriptions/$all/prices", |i| {
            i["counts"]["acked"].as_u64().unwrap() + i["counts"]["conflated"].as_u64().unwrap()
                == STREAMS * PER_STREAM
        })
        .await;
    assert_eq!(info["counts"]["acked"], total, "{info}");
    assert!(info["counts"]["conflated"].as_u64().unwrap() > 0, "{info}");
    s.stop().await;
}
