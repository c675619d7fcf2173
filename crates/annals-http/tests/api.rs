//! End-to-end tests of the HTTP API: a real engine in a temporary directory, the real listener on
//! a real socket, and `reqwest` as the client.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test helpers fail the test by panicking"
)]

mod connections;
mod subscriptions;
mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Server;

fn event(ty: &str, data: Value) -> Value {
    json!({ "type": ty, "data": data })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn append_accepts_every_expected_revision_form_from_body_and_header() {
    let s = Server::start().await;
    // Body: no_stream on a new stream.
    let (status, body) = s
        .append(
            "order-1",
            None,
            json!({"expectedRevision": "no_stream", "events": [event("Placed", json!({"n": 0}))]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"nextRevision": 0, "position": 1}));
    // Header: exact revision.
    let (status, body) = s
        .append(
            "order-1",
            Some("0"),
            json!({"events": [event("Paid", json!({"n": 1}))]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"nextRevision": 1, "position": 2}));
    // Body: exact revision as a number.
    let (status, body) = s
        .append(
            "order-1",
            None,
            json!({"expectedRevision": 1, "events": [event("Packed", json!({}))]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"nextRevision": 2, "position": 3}));
    // Body: stream_exists.
    let (status, body) = s
        .append(
            "order-1",
            None,
            json!({"expectedRevision": "stream_exists", "events": [event("Shipped", json!({}))]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"nextRevision": 3, "position": 4}));
    // Header: any, and header and body agreeing.
    let (status, body) = s
        .append(
            "order-1",
            Some("any"),
            json!({"events": [event("Noted", json!({}))]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"nextRevision": 4, "position": 5}));
    let (status, body) = s
        .append(
            "order-1",
            Some("4"),
            json!({"expectedRevision": 4, "events": [event("Noted", json!({}))]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"nextRevision": 5, "position": 6}));
    // Header: no_stream and stream_exists on another stream; none given means any.
    let (status, body) = s
        .append(
            "order-2",
            Some("no_stream"),
            json!({"events": [event("Placed", json!({}))]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"nextRevision": 0, "position": 7}));
    let (status, body) = s
        .append(
            "order-2",
            Some("stream_exists"),
            json!({"events": [event("Paid", json!({}))]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"nextRevision": 1, "position": 8}));
    let (status, body) = s
        .append(
            "order-2",
            None,
            json!({"events": [event("Paid", json!({})), event("Paid", json!({}))]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"nextRevision": 3, "position": 10}));
    // Header and body disagreeing: 400, nothing written.
    let (status, body) = s
        .append(
            "order-2",
            Some("3"),
            json!({"expectedRevision": "any", "events": [event("X", json!({}))]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "expected_revision_conflict");
    assert_eq!(s.health().await, 10);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_expected_revision_is_409_with_the_actual_revision() {
    let s = Server::start().await;
    let (status, _) = s
        .append(
            "cart-1",
            None,
            json!({"events": [event("A", json!(1)), event("B", json!(2))]}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = s
        .append(
            "cart-1",
            Some("5"),
            json!({"events": [event("C", json!(3))]}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "wrong_expected_revision");
    assert_eq!(body["stream"], "cart-1");
    assert_eq!(body["expected"], json!(5));
    assert_eq!(body["actual"], json!(1));
    let (status, body) = s
        .append(
            "cart-1",
            None,
            json!({"expectedRevision": "no_stream", "events": [event("C", json!(3))]}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["expected"], json!("no_stream"));
    assert_eq!(body["actual"], json!(1));
    let (status, body) = s
        .append(
            "cart-2",
            Some("stream_exists"),
            json!({"events": [event("C", json!(3))]}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["actual"], json!("no_stream"));
    assert_eq!(s.health().await, 2, "a refused append wrote nothing");
    let metrics = s.metrics().await;
    assert!(
        metrics.contains(r#"annals_appends_total{api="Http",outcome="wrong_expected_version"} 3"#),
        "{metrics}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retrying_an_append_with_the_same_ids_returns_the_first_result() {
    let s = Server::start().await;
    let ids = [
        "6f1c1d5e-8a53-4b4e-9d0a-0d0c9a1e7a01",
        "6f1c1d5e-8a53-4b4e-9d0a-0d0c9a1e7a02",
    ];
    let body = json!({"expectedRevision": "no_stream", "events": [
        {"id": ids[0], "type": "Opened", "data": {"k": 1}},
        {"id": ids[1], "type": "Funded", "data": {"k": 2}},
    ]});
    let (status, first) = s.append("account-9", None, body.clone()).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first, json!({"nextRevision": 1, "position": 2}));
    let (status, again) = s.append("account-9", None, body).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, first);
    let (status, page) = s.get("/streams/account-9").await;
    assert_eq!(status, 200);
    let got: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, ids);
    assert_eq!(s.health().await, 2);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_a_stream_forwards_and_backwards_with_count() {
    let s = Server::start().await;
    let events: Vec<Value> = (0..5)
        .map(|i| json!({"type": format!("Step{i}"), "data": {"i": i}, "metadata": {"by": "test"}}))
        .collect();
    let (status, _) = s.append("job-1", None, json!({"events": events})).await;
    assert_eq!(status, 200);
    // Another stream, binary, in between.
    let (status, body) = s
        .append(
            "blob-1",
            None,
            json!({"events": [{"type": "Raw", "isJson": false, "data": "AAEC/w=="}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let (status, page) = s.get("/streams/job-1?from=1&count=2").await;
    assert_eq!(status, 200, "{page}");
    let evs = page["events"].as_array().unwrap();
    assert_eq!(evs.len(), 2);
    assert_eq!(evs[0]["revision"], 1);
    assert_eq!(evs[0]["position"], 2);
    assert_eq!(evs[0]["stream"], "job-1");
    assert_eq!(evs[0]["type"], "Step1");
    assert_eq!(evs[0]["isJson"], true);
    assert_eq!(evs[0]["data"], json!({"i": 1}));
    assert_eq!(evs[0]["metadata"], json!({"by": "test"}));
    let created = evs[0]["created"].as_str().unwrap();
    assert_eq!(
        created.len(),
        "2026-11-23T18:33:41.123456789Z".len(),
        "{created}"
    );
    assert!(
        created.ends_with('Z') && created.as_bytes()[10] == b'T',
        "{created}"
    );
    assert_eq!(evs[1]["revision"], 2);
    assert_eq!(page["next"], 3);
    assert_eq!(page["endReached"], false);

    let (_, page) = s.get("/streams/job-1?from=3&count=10").await;
    let revs: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(revs, [3, 4]);
    assert_eq!(page["next"], 5);
    assert_eq!(page["endReached"], true);

    let (_, page) = s.get("/streams/job-1?direction=backwards&count=2").await;
    let revs: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(revs, [4, 3]);
    assert_eq!(page["next"], 2);
    assert_eq!(page["endReached"], false);

    let (_, page) = s
        .get("/streams/job-1?direction=backwards&from=1&count=5")
        .await;
    let revs: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(revs, [1, 0]);
    assert_eq!(page["next"], Value::Null);
    assert_eq!(page["endReached"], true);

    let (_, page) = s.get("/streams/blob-1").await;
    let e = &page["events"][0];
    assert_eq!(e["isJson"], false);
    assert_eq!(e["data"], "AAEC/w==");
    assert_eq!(e["metadata"], Value::Null);
    assert_eq!(e["position"], 6);

    let (status, body) = s.get("/streams/nobody-here").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "stream_not_found");
    assert_eq!(body["stream"], "nobody-here");

    let (status, body) = s.get("/streams/job-1?direction=sideways").await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("sideways"));
    let (status, _) = s.get("/streams/job-1?count=0").await;
    assert_eq!(status, 400);
    let (status, _) = s.get("/streams/job-1?from=minus-one").await;
    assert_eq!(status, 400);
    let metrics = s.metrics().await;
    assert!(
        metrics.contains(r#"annals_reads_total{api="Http"} 5"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"annals_read_events_total{api="Http"} 9"#),
        "{metrics}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pages_through_all_with_filters() {
    let s = Server::start().await;
    for (stream, ty) in [
        ("order-1", "OrderPlaced"),
        ("cart-1", "CartOpened"),
        ("order-2", "OrderPlaced"),
        ("cart-1", "CartEmptied"),
        ("order-1", "OrderShipped"),
    ] {
        let (status, _) = s
            .append(
                stream,
                None,
                json!({"events": [event(ty, json!({"s": stream}))]}),
            )
            .await;
        assert_eq!(status, 200);
    }
    let positions = |page: &Value| -> Vec<u64> {
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["position"].as_u64().unwrap())
            .collect()
    };
    // Unfiltered, two at a time.
    let mut from = "start".to_owned();
    let mut seen = Vec::new();
    loop {
        let (status, page) = s.get(&format!("/all?from={from}&count=2")).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(positions(&page));
        if page["endReached"] == true {
            break;
        }
        from = page["next"].to_string();
        assert!(seen.len() <= 5, "paging does not end: {seen:?}");
    }
    assert_eq!(seen, [1, 2, 3, 4, 5]);

    let (_, page) = s.get("/all?streamPrefix=order").await;
    assert_eq!(positions(&page), [1, 3, 5]);
    assert_eq!(page["events"][1]["stream"], "order-2");
    let (_, page) = s.get("/all?typePrefix=Cart,OrderSh").await;
    assert_eq!(positions(&page), [2, 4, 5]);
    let (_, page) = s.get("/all?streamRegex=%5Ecart-").await;
    assert_eq!(positions(&page), [2, 4]);
    let (_, page) = s.get("/all?typeRegex=Placed%24&count=1").await;
    assert_eq!(positions(&page), [1]);
    assert_eq!(page["next"], 2);
    let (_, page) = s.get("/all?typeRegex=Placed%24&from=2").await;
    assert_eq!(positions(&page), [3]);
    assert_eq!(page["endReached"], true);
    let (_, page) = s.get("/all?direction=backwards&count=2").await;
    assert_eq!(positions(&page), [5, 4]);
    assert_eq!(page["next"], 3);
    let (_, page) = s
        .get("/all?direction=backwards&from=3&streamPrefix=cart")
        .await;
    assert_eq!(positions(&page), [2]);
    assert_eq!(page["endReached"], true);
    let (_, page) = s.get("/all?from=end").await;
    assert_eq!(positions(&page), Vec::<u64>::new());
    assert_eq!(page["next"], 6);
    assert_eq!(page["endReached"], true);

    let (status, body) = s.get("/all?streamPrefix=a&typePrefix=b").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = s.get("/all?streamRegex=(unclosed").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("regex"),
        "{body}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_refused_with_a_clear_error_and_writes_nothing() {
    let limits = annals_server::Limits {
        event_bytes_max: 200,
        append_bytes_max: 500,
        events_per_append_max: 3,
        request_bytes_max: 2_000,
        ..annals_server::Limits::default()
    };
    let s = Server::start_with(limits).await;
    let long_name = "n".repeat(1_025);
    let cases: Vec<(&str, Option<&str>, Value, u16, &str)> = vec![
        (
            "s-1",
            None,
            json!({"events": []}),
            400,
            "at least one event",
        ),
        (
            "s-1",
            None,
            json!({"evnts": []}),
            400,
            "invalid append body",
        ),
        (
            "s-1",
            None,
            json!({"events": [{"type": "", "data": 1}]}),
            400,
            "event type is empty",
        ),
        (
            "s-1",
            None,
            json!({"events": [{"type": "T", "data": 1, "id": "not-a-uuid"}]}),
            400,
            "not a UUID",
        ),
        (
            "s-1",
            None,
            json!({"events": [{"type": "T"}]}),
            400,
            "missing field `data`",
        ),
        (
            "s-1",
            None,
            json!({"events": [{"type": "T", "data": 1, "isJson": false}]}),
            400,
            "base64",
        ),
        (
            "s-1",
            None,
            json!({"events": [{"type": "T", "data": "!!", "isJson": false}]}),
            400,
            "base64",
        ),
        (
            "s-1",
            Some("minus-one"),
            json!({"events": [event("T", json!(1))]}),
            400,
            "minus-one",
        ),
        (
            "s-1",
            None,
            json!({"expectedRevision": -1, "events": [event("T", json!(1))]}),
            400,
            "expectedRevision",
        ),
        (
            "s-1",
            None,
            json!({"expectedRevision": true, "events": [event("T", json!(1))]}),
            400,
            "expectedRevision",
        ),
        (
            "s-1",
            None,
            json!({"events": [event("T", json!("x".repeat(300)))]}),
            413,
            "over the limit of 200",
        ),
        (
            "s-1",
            None,
            json!({"events": [event("T", json!(1)), event("T", json!(1)), event("T", json!(1)), event("T", json!(1))]}),
            413,
            "4 events, over the limit of 3",
        ),
        (
            "s-1",
            None,
            json!({"events": [event("T", json!("x".repeat(180))), event("T", json!("x".repeat(180))), event("T", json!("x".repeat(180)))]}),
            413,
            "over the limit of 500",
        ),
        (
            "s-1",
            None,
            json!({"events": [event("T", json!("x".repeat(3_000)))]}),
            413,
            "request body is over the limit of 2000 bytes",
        ),
        (
            &long_name,
            None,
            json!({"events": [event("T", json!(1))]}),
            400,
            "stream name",
        ),
    ];
    for (stream, header, body, want_status, want_message) in cases {
        let (status, answer) = s.append(stream, header, body.clone()).await;
        assert_eq!(status, want_status, "{body} -> {answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains(want_message), "{body} -> {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }
    // Not JSON at all.
    let resp = s
        .client
        .post(format!("{}/streams/s-1", s.base))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["error"], "bad_request");

    assert_eq!(s.health().await, 0, "nothing was written");
    let (status, _) = s.get("/streams/s-1").await;
    assert_eq!(status, 404);
    let metrics = s.metrics().await;
    assert!(
        metrics.contains(r#"annals_appends_total{api="Http",outcome="rejected"} 16"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"annals_appends_total{api="Http",outcome="ok"} 0"#),
        "{metrics}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_feed_catches_up_then_follows_in_order() {
    let s = Server::start().await;
    for i in 0..3 {
        let (status, _) = s
            .append(
                "feed-1",
                None,
                json!({"events": [event(&format!("E{i}"), json!({"i": i}))]}),
            )
            .await;
        assert_eq!(status, 200);
    }
    let mut feed = s.live("/all/live?from=start", None).await;
    for want in 1..=3u64 {
        let e = feed.next_event().await.expect("catch-up event");
        assert_eq!(e.id.as_deref(), Some(want.to_string().as_str()));
        assert_eq!(e.event.as_deref(), Some(format!("E{}", want - 1).as_str()));
        let data: Value = serde_json::from_str(&e.data).unwrap();
        assert_eq!(data["position"], want);
        assert_eq!(data["data"], json!({"i": want - 1}));
    }
    let (status, _) = s
        .append(
            "feed-2",
            None,
            json!({"events": [event("Live1", json!(1)), event("Live2", json!(2))]}),
        )
        .await;
    assert_eq!(status, 200);
    for (want, ty) in [(4u64, "Live1"), (5, "Live2")] {
        let e = feed.next_event().await.expect("live event");
        assert_eq!(e.id.as_deref(), Some(want.to_string().as_str()));
        assert_eq!(e.event.as_deref(), Some(ty));
        let data: Value = serde_json::from_str(&e.data).unwrap();
        assert_eq!(data["stream"], "feed-2");
    }
    // A feed from the end only sees what comes next; a filtered one skips the rest.
    let mut tail = s.live("/all/live", None).await;
    let mut filtered = s
        .live("/all/live?from=start&streamPrefix=feed-2", None)
        .await;
    let (status, _) = s
        .append(
            "feed-3",
            None,
            json!({"events": [event("Later", json!(3))]}),
        )
        .await;
    assert_eq!(status, 200);
    let e = tail.next_event().await.expect("tail event");
    assert_eq!(e.id.as_deref(), Some("6"));
    let mut ids = Vec::new();
    while ids.len() < 2 {
        let e = filtered.next_event().await.expect("filtered event");
        if e.event.as_deref() != Some("checkpoint") {
            ids.push(e.id.unwrap());
        }
    }
    assert_eq!(ids, ["4", "5"]);
    let metrics = s.metrics().await;
    assert!(
        metrics.contains(r#"annals_subscriptions_active{api="Http"} 3"#),
        "{metrics}"
    );
    let e = feed
        .next_event()
        .await
        .expect("the first feed saw the later event too");
    assert_eq!(e.id.as_deref(), Some("6"));
    s.stop().await;
    // Shutdown ends every feed.
    assert!(feed.next_event().await.is_none(), "feed ended at shutdown");
    assert!(tail.next_event().await.is_none(), "feed ended at shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reconnecting_with_last_event_id_resumes_exactly_while_appends_continue() {
    let s = Server::start().await;
    const TOTAL: u64 = 120;
    // The writer appends 60 events, then 30 more once the first feed is gone (racing the
    // reconnect), then 30 more once the second feed is open.
    let disconnected = std::sync::Arc::new(tokio::sync::Notify::new());
    let reconnected = std::sync::Arc::new(tokio::sync::Notify::new());
    let writer = {
        let client = s.client.clone();
        let base = s.base.clone();
        let disconnected = disconnected.clone();
        let reconnected = reconnected.clone();
        tokio::spawn(async move {
            for i in 0..TOTAL {
                if i == 60 {
                    disconnected.notified().await;
                }
                if i == 90 {
                    reconnected.notified().await;
                }
                let resp = client
                    .post(format!("{base}/streams/tick-{}", i % 7))
                    .json(&json!({"events": [{"type": "Tick", "data": {"i": i}}]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
            }
        })
    };
    let mut got = Vec::new();
    let mut feed = s.live("/all/live?from=start", None).await;
    while got.len() < 40 {
        let e = feed.next_event().await.expect("event");
        got.push(e.id.unwrap().parse::<u64>().unwrap());
    }
    drop(feed);
    disconnected.notify_one();
    let last = *got.last().unwrap();
    // `from` is ignored when Last-Event-ID is present.
    let mut feed = s.live("/all/live?from=start", Some(last)).await;
    reconnected.notify_one();
    while (got.len() as u64) < TOTAL {
        let e = feed.next_event().await.expect("event after reconnect");
        let data: Value = serde_json::from_str(&e.data).unwrap();
        let id = e.id.unwrap().parse::<u64>().unwrap();
        assert_eq!(data["position"], id);
        assert_eq!(data["data"]["i"], id - 1);
        got.push(id);
    }
    writer.await.unwrap();
    assert_eq!(got, (1..=TOTAL).collect::<Vec<_>>(), "no gap, no duplicate");
    s.stop().await;
}

/// A live feed at the head gets at most one page per `live_page_interval`: events appended just
/// after a page went out wait for the interval and then come together, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_pages_to_one_feed_are_an_interval_apart() {
    let interval = Duration::from_millis(800);
    let limits = annals_server::Limits {
        live_page_interval: interval,
        ..annals_server::Limits::default()
    };
    let s = Server::start_with(limits).await;
    let mut feed = s.live("/all/live", None).await;
    let (status, _) = s
        .append("paced", None, json!({"events": [event("First", json!(1))]}))
        .await;
    assert_eq!(status, 200);
    let first = feed.next_event().await.expect("the first event");
    let first_at = Instant::now();
    assert_eq!(first.event.as_deref(), Some("First"));
    for i in 0..3 {
        let (status, _) = s
            .append("paced", None, json!({"events": [event("Next", json!(i))]}))
            .await;
        assert_eq!(status, 200);
    }
    let mut ids = Vec::new();
    while ids.len() < 3 {
        let e = feed.next_event().await.expect("a later event");
        if e.event.as_deref() == Some("Next") {
            ids.push(e.id.unwrap());
        }
    }
    // Measured from when this client received the first page, which is after the server sent
    // it; half the interval leaves room for a delayed first read.
    assert!(
        first_at.elapsed() >= interval / 2,
        "the next page came {:?} after the first",
        first_at.elapsed()
    );
    assert_eq!(ids, ["2", "3", "4"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_feeds_are_limited_and_bad_resume_points_refused() {
    let limits = annals_server::Limits {
        subscriptions_max: 1,
        ..annals_server::Limits::default()
    };
    let s = Server::start_with(limits).await;
    let first = s.live("/all/live?from=start", None).await;
    let resp = s
        .client
        .get(format!("{}/all/live", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "too_many_subscriptions");
    drop(first);
    // The slot frees once the server notices the client left.
    let mut freed = false;
    for _ in 0..100 {
        if s.metrics()
            .await
            .contains(r#"annals_subscriptions_active{api="Http"} 0"#)
        {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(freed, "the subscription slot was released");
    let resp = s
        .client
        .get(format!("{}/all/live", s.base))
        .header("last-event-id", "nope")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = s
        .client
        .get(format!("{}/all/live?direction=backwards", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_metrics_and_openapi() {
    let s = Server::start().await;
    assert_eq!(s.health().await, 0);
    let (status, _) = s
        .append(
            "m-1",
            None,
            json!({"events": [event("A", json!(1)), event("B", json!(2))]}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = s.get("/health").await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"status": "ok", "head": 2}));

    let resp = s
        .client
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain; version=0.0.4");
    let text = resp.text().await.unwrap();
    assert!(
        text.contains(r#"annals_appends_total{api="Http",outcome="ok"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"annals_append_events_total{api="Http"} 2"#),
        "{text}"
    );
    assert!(text.contains("annals_head_position 2"), "{text}");

    let (status, doc) = s.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in annals_http::ROUTES {
        assert!(
            paths.get(*path).and_then(|p| p.get(*method)).is_some(),
            "{method} {path} missing from the OpenAPI document"
        );
    }
    // Every operation the document lists is served (a route that does not exist answers 404
    // with an empty body or 405).
    for (path, item) in paths {
        for method in item
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "parameters")
        {
            assert!(
                annals_http::ROUTES.contains(&(method.as_str(), path.as_str())),
                "{method} {path} is not a route"
            );
            let mut url = format!(
                "{}{}",
                s.base,
                path.replace("{stream}", "m-1")
                    .replace("{group}", "g")
                    .replace("{name}", "p")
                    .replace("{command}", "pause")
            );
            if path.ends_with("/wait") {
                url.push_str("?position=1");
            }
            let resp = match method.as_str() {
                "get" if path.ends_with("/live") => s
                    .client
                    .get(format!("{url}?from=end"))
                    .send()
                    .await
                    .unwrap(),
                "get" => s.client.get(&url).send().await.unwrap(),
                "post" if path.starts_with("/subscriptions") => {
                    s.client.post(&url).json(&json!({})).send().await.unwrap()
                }
                "post" => s
                    .client
                    .post(&url)
                    .json(&json!({"events": [event("C", json!(3))]}))
                    .send()
                    .await
                    .unwrap(),
                "put" => s.client.put(&url).json(&json!({})).send().await.unwrap(),
                "delete" => s.client.delete(&url).send().await.unwrap(),
                other => panic!("unexpected method {other}"),
            };
            if path.starts_with("/subscriptions/{stream}/{group}") && method != "put" {
                // Served by its handler: the group `g` does not exist (yet, or any more).
                assert_eq!(resp.status(), 404, "{method} {path}");
                let body: serde_json::Value = resp.json().await.unwrap();
                assert_eq!(body["error"], "group_not_found", "{method} {path}");
                continue;
            }
            if path.starts_with("/users") {
                // This server runs without --auth: no users, and the route says so from its
                // handler (the auth tests of `annals serve` cover them).
                assert_eq!(resp.status(), 409, "{method} {path}");
                let body: serde_json::Value = resp.json().await.unwrap();
                assert_eq!(body["error"], "auth_disabled", "{method} {path}");
                continue;
            }
            if method == "put" {
                assert_eq!(resp.status(), 201, "{method} {path}");
                // Gone again, for the other methods of the path.
                let gone = s.client.delete(&url).send().await.unwrap();
                assert_eq!(gone.status(), 200);
                continue;
            }
            if path.starts_with("/relays") {
                // This server runs no relays: the route answers so from its handler (the relay
                // tests of `annals serve` cover them).
                assert_eq!(resp.status(), 503, "{method} {path}");
                let body: serde_json::Value = resp.json().await.unwrap();
                assert_eq!(body["error"], "relays_disabled", "{method} {path}");
                continue;
            }
            if path.starts_with("/projections") {
                // This server runs no projections: the route answers, from its handler, that
                // projections are disabled (the projection tests of `annals serve` cover them).
                assert_eq!(resp.status(), 404, "{method} {path}");
                let body: serde_json::Value = resp.json().await.unwrap();
                assert_eq!(body["error"], "projections_disabled", "{method} {path}");
            } else {
                assert_eq!(resp.status(), 200, "{method} {path}");
            }
        }
    }
    // Every schema reference resolves.
    let text = serde_json::to_string(&doc).unwrap();
    for piece in text.split("\"$ref\":\"#/").skip(1) {
        let target = piece.split('"').next().unwrap();
        let mut node = &doc;
        for part in target.split('/') {
            node = node
                .get(part)
                .unwrap_or_else(|| panic!("dangling $ref {target}"));
        }
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_stream_is_gone() {
    let s = Server::start().await;
    let (status, _) = s
        .append("doomed-1", None, json!({"events": [event("A", json!(1))]}))
        .await;
    assert_eq!(status, 200);
    let stream = annals_core::StreamName::new("doomed-1").unwrap();
    s.engine
        .tombstone_async(&stream, annals_core::ExpectedRevision::Any)
        .await
        .unwrap();
    let head = s.health().await;
    let (status, body) = s
        .append("doomed-1", None, json!({"events": [event("B", json!(2))]}))
        .await;
    assert_eq!(status, 410, "{body}");
    assert_eq!(body["error"], "stream_deleted");
    assert_eq!(s.health().await, head, "nothing was written");
    let (status, body) = s.get("/streams/doomed-1").await;
    assert_eq!(status, 410, "{body}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn speaks_http2_cleartext_too() {
    let s = Server::start().await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = h2
        .post(format!("{}/streams/h2-1", s.base))
        .header("expected-revision", "no_stream")
        .json(&json!({"events": [event("Over2", json!({"h": 2}))]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body, json!({"nextRevision": 0, "position": 1}));
    let resp = h2
        .get(format!("{}/streams/h2-1", s.base))
        .send()
        .await
        .unwrap();
    let page: Value = resp.json().await.unwrap();
    assert_eq!(page["events"][0]["data"], json!({"h": 2}));
    s.stop().await;
}

/// `$ce-{category}` and `$et-{event type}` read through `GET /streams/{stream}`: link records
/// (type `$>`, data `{revision}@{stream}` in base64 since links are not JSON) with dense
/// revisions, or with `resolveLinks=true` the events with their links; appends refused with 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn category_and_type_streams_read_as_links() {
    let s = Server::start().await;
    let (status, _) = s.get("/streams/$ce-order").await;
    assert_eq!(status, 404);
    for (stream, ty) in [
        ("order-1", "Placed"),
        ("cart-1", "Placed"),
        ("order-1", "Paid"),
        ("order-2", "Placed"),
    ] {
        let (status, body) = s
            .append(
                stream,
                None,
                json!({"events": [event(ty, json!({"s": stream}))]}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, page) = s.get("/streams/$ce-order").await;
    assert_eq!(status, 200, "{page}");
    let links: Vec<(u64, String, String, bool)> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["stream"], "$ce-order");
            assert!(e.get("link").is_none(), "{e}");
            (
                e["revision"].as_u64().unwrap(),
                e["type"].as_str().unwrap().to_owned(),
                e["data"].as_str().unwrap().to_owned(),
                e["isJson"].as_bool().unwrap(),
            )
        })
        .collect();
    let link = |r: u64, data: &str| (r, "$>".to_owned(), data.to_owned(), false);
    assert_eq!(
        links,
        vec![
            link(0, "MEBvcmRlci0x"),
            link(1, "MUBvcmRlci0x"),
            link(2, "MEBvcmRlci0y"),
        ]
    );
    assert_eq!(page["next"], 3);
    // Backwards, resolving: the events, each with its link; `next` counts link revisions.
    let (status, page) = s
        .get("/streams/$et-Placed?direction=backwards&from=1&resolveLinks=true")
        .await;
    assert_eq!(status, 200, "{page}");
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["stream"], "cart-1");
    assert_eq!(events[0]["data"], json!({"s": "cart-1"}));
    assert_eq!(events[0]["link"]["stream"], "$et-Placed");
    assert_eq!(events[0]["link"]["revision"], 1);
    assert_eq!(events[0]["link"]["type"], "$>");
    assert_eq!(events[0]["link"]["position"], events[0]["position"]);
    assert_eq!(events[1]["stream"], "order-1");
    assert_eq!(events[1]["link"]["revision"], 0);
    assert_eq!(page["next"], Value::Null);
    let (status, _) = s.get("/streams/$ce-order?resolveLinks=yes").await;
    assert_eq!(status, 400);
    // Writes are refused.
    let (status, body) = s
        .append(
            "$ce-order",
            None,
            json!({"events": [event("Placed", json!({}))]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("read-only"), "{body}");
}

/// A store that stopped taking writes after a failed sync says so: `/health` answers 503
/// `read_only` with the reason, `/metrics` has `annals_read_only 1`, appends are refused and
/// reads go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_stopped_taking_writes_says_so_in_health_and_metrics() {
    let storage = std::sync::Arc::new(annals_log::FaultStorage::new());
    let (engine, _) = annals_engine::Engine::open(
        std::sync::Arc::clone(&storage) as std::sync::Arc<dyn annals_log::Storage>,
        annals_engine::EngineConfig::default(),
    )
    .unwrap();
    let s = Server::start_on(engine, annals_server::Limits::default(), None).await;
    let append = |n: i64| {
        s.client
            .post(format!("{}/streams/a-1", s.base))
            .json(&json!({ "events": [event("A", json!(n))] }))
            .send()
    };
    assert!(append(1).await.unwrap().status().is_success());
    let health = s
        .client
        .get(format!("{}/health", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    storage.fail_syncs(true);
    assert!(!append(2).await.unwrap().status().is_success());
    let health = s
        .client
        .get(format!("{}/health", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 503);
    let body: serde_json::Value = health.json().await.unwrap();
    assert_eq!(body["status"], "read_only", "{body}");
    assert!(body["reason"].as_str().unwrap().contains("sync"), "{body}");
    let metrics = s
        .client
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("annals_read_only 1"), "{metrics}");
    let read = s
        .client
        .get(format!("{}/streams/a-1", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200, "reads go on");
    s.stop().await;
}

/// The process metrics are on `/metrics`, and the CPU figure moves when the server works.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn process_metrics_are_exposed_and_move_with_work() {
    let s = Server::start().await;
    let value = |text: &str, name: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .unwrap_or_else(|| panic!("no {name} in {text}"));
        line[name.len()..].trim().parse().unwrap()
    };
    let before = s.metrics().await;
    for name in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_threads",
        "process_start_time_seconds",
    ] {
        assert!(value(&before, name) > 0.0, "{name}");
    }
    for i in 0..300 {
        let events: Vec<Value> = (0..20)
            .map(|n| event("Worked", json!({"i": i, "n": n, "pad": "x".repeat(200)})))
            .collect();
        let (status, body) = s
            .append(
                &format!("work-{}", i % 7),
                None,
                json!({ "events": events }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let after = s.metrics().await;
    assert!(
        value(&after, "process_cpu_seconds_total") > value(&before, "process_cpu_seconds_total"),
        "{before}\n{after}"
    );
    s.stop().await;
}
