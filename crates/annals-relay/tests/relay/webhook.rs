//! The webhook sink against HTTP servers the tests run.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals_relay::Relays;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use parking_lot::Mutex;

use crate::{append_orders, caught_up, engine};

/// The (stream, revision) of the event the webhook refuses, and the status it answers.
type Refusal = ((String, u64), StatusCode);

/// What the test's webhook received: (stream, revision, idempotency key), in arrival order.
#[derive(Clone, Default)]
struct Received {
    calls: Arc<Mutex<Vec<(String, u64, String)>>>,
    /// Answer this status to the event with this (stream, revision), for as long as it is set.
    refuse: Arc<Mutex<Option<Refusal>>>,
    delay: Duration,
}

async fn hook(State(r): State<Received>, headers: HeaderMap, body: String) -> StatusCode {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let stream = get("annals-stream");
    let revision: u64 = get("annals-revision").parse().unwrap_or(u64::MAX);
    let event: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(event["stream"], stream.as_str(), "the body is the event");
    tokio::time::sleep(r.delay).await;
    if let Some((key, status)) = r.refuse.lock().clone()
        && key == (stream.clone(), revision)
    {
        return status;
    }
    r.calls
        .lock()
        .push((stream, revision, get("idempotency-key")));
    StatusCode::NO_CONTENT
}

async fn serve(received: Received) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(received);
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn definition(url: &str, concurrency: usize) -> String {
    format!(
        r#"
        [[relay]]
        name = "hook"
        source = {{ category = "order" }}
        sink = {{ kind = "webhook", url = "{url}", timeout_ms = 5000, headers = {{ authorization = "Bearer s3cret" }} }}
        concurrency = {concurrency}
        on_error = {{ attempts = 3, backoff_ms = 20, backoff_max_ms = 200 }}
        "#
    )
}

/// Per stream, the revisions in the order they arrived.
fn by_stream(calls: &[(String, u64, String)]) -> HashMap<String, Vec<u64>> {
    let mut out: HashMap<String, Vec<u64>> = HashMap::new();
    for (stream, revision, _) in calls {
        out.entry(stream.clone()).or_default().push(*revision);
    }
    out
}

/// A webhook that answers 422 to one event: that event is parked, every other event arrives
/// (its stream's later events too), and re-sending the parked events delivers it once the
/// webhook takes it. Secrets stay out of the status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_webhook_refuses_is_parked_and_the_rest_go_on() {
    let received = Received::default();
    *received.refuse.lock() = Some((("order-3".to_owned(), 4), StatusCode::UNPROCESSABLE_ENTITY));
    let url = serve(received.clone()).await;
    let (engine, _dir) = engine();
    let relays = Relays::open(engine.clone()).await.unwrap();
    relays.apply(&definition(&url, 16)).await.unwrap();
    append_orders(&engine, 8, 10, 5).await;
    let status = caught_up(&relays, "hook", &engine).await;
    assert_eq!(status.parked, 1, "{status:?}");
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("422")),
        "{status:?}"
    );
    assert!(!format!("{status:?}").contains("s3cret"));
    let parked = relays.parked("hook").await.unwrap();
    assert_eq!(parked.len(), 1);
    let event = parked[0].event.as_ref().unwrap();
    assert_eq!((event.stream.as_str(), event.revision.0), ("order-3", 4));
    {
        let calls = received.calls.lock().clone();
        assert_eq!(calls.len(), 79);
        let streams = by_stream(&calls);
        assert_eq!(streams["order-3"], vec![0, 1, 2, 3, 5, 6, 7, 8, 9]);
        for (stream, revisions) in &streams {
            assert!(
                revisions.windows(2).all(|w| w[0] < w[1]),
                "{stream}: {revisions:?}"
            );
        }
        assert!(calls.iter().all(|(_, _, key)| !key.is_empty()));
    }
    // The webhook is fixed; the parked event goes again.
    *received.refuse.lock() = None;
    assert_eq!(relays.retry_parked("hook").await.unwrap(), 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    while relays.status("hook").await.unwrap().parked > 0 {
        assert!(
            Instant::now() < deadline,
            "the parked event was not re-sent"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let calls = received.calls.lock().clone();
    assert_eq!(calls.len(), 80);
    assert_eq!(
        calls.last().map(|c| (c.0.as_str(), c.1)),
        Some(("order-3", 4))
    );
    relays.shutdown().await;
}

/// A webhook that takes 750 ms per call, `concurrency = 64`, 64 streams of 3 events: the
/// calls run side by side (3 rounds, not 192 calls in a row) and each stream's events arrive
/// in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_webhook_is_called_in_parallel_and_each_stream_stays_in_order() {
    let received = Received {
        delay: Duration::from_millis(750),
        ..Received::default()
    };
    let url = serve(received.clone()).await;
    let (engine, _dir) = engine();
    append_orders(&engine, 64, 3, 3).await;
    let relays = Relays::open(engine.clone()).await.unwrap();
    let started = Instant::now();
    relays.apply(&definition(&url, 64)).await.unwrap();
    caught_up(&relays, "hook", &engine).await;
    let elapsed = started.elapsed();
    let calls = received.calls.lock().clone();
    assert_eq!(calls.len(), 192);
    // In a row this takes 144 s; 64 at a time, 3 rounds of 0.75 s.
    assert!(
        elapsed < Duration::from_secs(20),
        "192 calls of 750 ms took {elapsed:?}"
    );
    let rate = 192.0 / elapsed.as_secs_f64();
    eprintln!("slow webhook: {rate:.1} calls/s against 64 / 0.75 s = 85.3");
    for (stream, revisions) in by_stream(&calls) {
        assert_eq!(revisions, vec![0, 1, 2], "{stream}");
    }
    relays.shutdown().await;
}

/// `on_poison = "stop"`: the relay halts at the event the webhook refuses for good, so no later
/// event of any stream overtakes it; `resume` once the webhook takes it goes on in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_poison_stop_halts_at_the_event_until_resumed() {
    let received = Received::default();
    *received.refuse.lock() = Some((("order-0".to_owned(), 2), StatusCode::UNPROCESSABLE_ENTITY));
    let url = serve(received.clone()).await;
    let (engine, _dir) = engine();
    let relays = Relays::open(engine.clone()).await.unwrap();
    let text = definition(&url, 1).replace(
        "concurrency = 1",
        "concurrency = 1\n        order = \"global\"\n        on_poison = \"stop\"",
    );
    relays.apply(&text).await.unwrap();
    append_orders(&engine, 2, 5, 5).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let status = relays.status("hook").await.unwrap();
        if status.state == annals_relay::RelayState::Stopped {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the relay did not stop: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.parked, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before: Vec<(String, u64)> = received
        .calls
        .lock()
        .iter()
        .map(|(s, r, _)| (s.clone(), *r))
        .collect();
    assert_eq!(
        before,
        [("order-0".to_owned(), 0), ("order-0".to_owned(), 1)]
    );
    *received.refuse.lock() = None;
    relays.resume("hook").await.unwrap();
    caught_up(&relays, "hook", &engine).await;
    let calls = received.calls.lock().clone();
    assert_eq!(calls.len(), 10);
    let order: Vec<(String, u64)> = calls.iter().map(|(s, r, _)| (s.clone(), *r)).collect();
    let mut expected = Vec::new();
    for s in 0..2 {
        for r in 0..5 {
            expected.push((format!("order-{s}"), r));
        }
    }
    assert_eq!(
        order, expected,
        "global order, the stopped event first after the resume"
    );
    relays.shutdown().await;
}
