//! The NATS JetStream sink against throwaway `nats-server -js` instances.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use annals_relay::Relays;
use annals_testkit::nats::TempNats;
use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt as _;

use crate::{append_orders, caught_up, engine};

const STREAM: &str = "EVENTS";

async fn create_stream(url: &str) {
    let client = async_nats::connect(url).await.unwrap();
    let js = jetstream::new(client);
    js.create_stream(jetstream::stream::Config {
        name: STREAM.to_owned(),
        subjects: vec!["ev.>".to_owned()],
        ..Default::default()
    })
    .await
    .unwrap();
}

/// One message as read back: (stream, revision, event id).
type Got = (String, u64, String);

/// Every message of the JetStream stream on `url`, in the stream's order.
async fn read_back(url: &str) -> Vec<Got> {
    let client = async_nats::connect(url).await.unwrap();
    let js = jetstream::new(client);
    let mut stream = js.get_stream(STREAM).await.unwrap();
    let total = stream.info().await.unwrap().state.messages;
    let consumer = stream
        .create_consumer(pull::Config {
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut out = Vec::with_capacity(usize::try_from(total).unwrap());
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
            let h = m.headers.as_ref().expect("relayed messages carry headers");
            let get = |name: &str| h.get(name).map(|v| v.as_str().to_owned()).unwrap();
            assert_eq!(get("Nats-Msg-Id"), get("Annals-Event-Id"));
            out.push((
                get("Annals-Stream"),
                get("Annals-Revision").parse().unwrap(),
                get("Annals-Event-Id"),
            ));
        }
    }
    out
}

/// Each stream's events arrive in revision order, and none twice.
fn check_order(got: &[Got]) -> HashMap<String, u64> {
    let mut next: HashMap<String, u64> = HashMap::new();
    let mut ids = HashSet::new();
    for (stream, revision, id) in got {
        assert!(
            ids.insert(id.clone()),
            "event {id} ({stream}@{revision}) arrived twice"
        );
        let want = next.entry(stream.clone()).or_insert(0);
        assert_eq!(
            *revision, *want,
            "{stream}: revision {revision} arrived when {want} was due"
        );
        *want += 1;
    }
    next
}

fn definition(urls: &[String]) -> String {
    let urls = urls
        .iter()
        .map(|u| format!("{u:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"
        [[relay]]
        name = "orders-out"
        source = {{ category = "order" }}
        sink = {{ kind = "nats", urls = [{urls}], subject = "ev.{{category}}.{{stream}}", stream = "{STREAM}", ack_timeout_ms = 1000 }}
        concurrency = 64
        on_error = {{ attempts = 10, backoff_ms = 50, backoff_max_ms = 500 }}
        "#
    )
}

/// A broker killed with SIGKILL twice in the middle of a 20,000-event load, each time down for
/// seconds: every event arrives exactly once (JetStream drops re-sends by `Nats-Msg-Id`), each
/// stream in order, and the appends never waited for the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_twice_mid_load_gets_every_event_once_in_stream_order() {
    let mut nats = TempNats::start();
    create_stream(&nats.url()).await;
    let (engine, _dir) = engine();
    let relays = Relays::open(engine.clone()).await.unwrap();
    relays.apply(&definition(&[nats.url()])).await.unwrap();

    let load = {
        let engine = engine.clone();
        tokio::spawn(async move { append_orders(&engine, 100, 200, 10).await })
    };
    for _ in 0..2 {
        // Let some events through, then take the broker down for a while.
        tokio::time::sleep(Duration::from_millis(700)).await;
        nats.kill();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let status = relays.status("orders-out").await.unwrap();
        assert!(
            status.last_error.is_some(),
            "the outage went unnoticed: {status:?}"
        );
        nats.start_again();
    }
    load.await.unwrap();
    let status = caught_up(&relays, "orders-out", &engine).await;
    assert_eq!(status.parked, 0, "{status:?}");

    let got = read_back(&nats.url()).await;
    assert_eq!(got.len(), 20_000, "every event, once");
    let per_stream = check_order(&got);
    assert_eq!(per_stream.len(), 100);
    assert!(per_stream.values().all(|n| *n == 200));
    relays.shutdown().await;
}

/// `order = "global"` on JetStream: sends in flight together, each taken only after the one
/// before it (`Nats-Expected-Last-Sequence`). The broker killed mid-load, then a restart of the
/// relay that re-sends what its checkpoint had not covered: JetStream holds every event once,
/// in `$all` order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_order_on_jetstream_survives_a_broker_kill_in_all_order() {
    let mut nats = TempNats::start();
    create_stream(&nats.url()).await;
    let (engine, _dir) = engine();
    let relays = Relays::open(engine.clone()).await.unwrap();
    let definition = definition(&[nats.url()]).replace(
        "concurrency = 64",
        "concurrency = 64\n        order = \"global\"",
    );
    relays.apply(&definition).await.unwrap();
    let load = {
        let engine = engine.clone();
        tokio::spawn(async move { append_orders(&engine, 50, 100, 10).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    nats.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    nats.start_again();
    load.await.unwrap();
    caught_up(&relays, "orders-out", &engine).await;
    // A restart from the last checkpoint written re-sends what came after it.
    relays.shutdown().await;
    drop(relays);
    let relays = Relays::open(engine.clone()).await.unwrap();
    relays
        .reset("orders-out", engine.head().0 / 2)
        .await
        .unwrap();
    let status = caught_up(&relays, "orders-out", &engine).await;
    assert_eq!(status.parked, 0, "{status:?}");
    relays.shutdown().await;

    let got = read_back_positions(&nats.url()).await;
    assert_eq!(got.len(), 5_000, "every event, once");
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "JetStream holds the events in $all order"
    );
}

/// The positions of every message on `url`, in the stream's order.
async fn read_back_positions(url: &str) -> Vec<u64> {
    let client = async_nats::connect(url).await.unwrap();
    let js = jetstream::new(client);
    let mut stream = js.get_stream(STREAM).await.unwrap();
    let total = stream.info().await.unwrap().state.messages;
    let mut out = Vec::new();
    for seq in 1..=stream.info().await.unwrap().state.last_sequence {
        if let Ok(m) = stream.get_raw_message(seq).await {
            let position = m
                .headers
                .get("Annals-Position")
                .unwrap()
                .as_str()
                .parse()
                .unwrap();
            out.push(position);
        }
    }
    assert_eq!(out.len() as u64, total);
    out
}

/// Two independent servers: the relay sends to the first; when it dies, to the second. Every
/// event is in at least one of them, each stream in order within each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_first_server_dies_the_relay_moves_on_to_the_second() {
    let mut first = TempNats::start();
    let second = TempNats::start();
    create_stream(&first.url()).await;
    create_stream(&second.url()).await;
    let (engine, _dir) = engine();
    let relays = Relays::open(engine.clone()).await.unwrap();
    relays
        .apply(&definition(&[first.url(), second.url()]))
        .await
        .unwrap();
    append_orders(&engine, 20, 50, 10).await;
    caught_up(&relays, "orders-out", &engine).await;
    first.kill();
    append_orders(&engine, 20, 50, 10).await;
    let status = caught_up(&relays, "orders-out", &engine).await;
    assert!(
        status.endpoint.contains(&second.port().to_string()),
        "{status:?}"
    );
    first.start_again();
    let mut all: HashSet<String> = HashSet::new();
    for url in [first.url(), second.url()] {
        let got = read_back(&url).await;
        // Within each server, each stream's events are in order (a server may miss some).
        let mut last: HashMap<String, u64> = HashMap::new();
        for (stream, revision, id) in got {
            if let Some(prev) = last.insert(stream.clone(), revision) {
                assert!(
                    revision > prev,
                    "{url}: {stream} went from {prev} to {revision}"
                );
            }
            all.insert(id);
        }
    }
    assert_eq!(
        all.len(),
        2_000,
        "every event reached one server or the other"
    );

    // The first server is back: once its backoff ran out, the relay goes back to it. How soon
    // depends on the backoff and on how busy the machine is, so more events follow until it has.
    append_orders(&engine, 20, 50, 10).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let status = loop {
        let status = caught_up(&relays, "orders-out", &engine).await;
        if status.endpoint.contains(&first.port().to_string()) {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the relay never went back to the first server: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        append_orders(&engine, 1, 1, 1).await;
    };
    assert_eq!(
        status.state,
        annals_relay::RelayState::Running,
        "{status:?}"
    );
    let back = read_back(&first.url()).await;
    assert!(
        back.iter().any(|(_, revision, _)| *revision >= 100),
        "the newest events went to the first server again"
    );
    relays.shutdown().await;
}

/// An event bigger than the server's `max_payload` is poison: parked at once, while the events
/// after it (its stream's too) are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_over_the_brokers_max_payload_is_parked_and_the_rest_arrive() {
    let nats = TempNats::start_with_config(Some("max_payload: 4096\n"));
    create_stream(&nats.url()).await;
    let (engine, _dir) = engine();
    let relays = Relays::open(engine.clone()).await.unwrap();
    relays.apply(&definition(&[nats.url()])).await.unwrap();
    append_orders(&engine, 4, 5, 5).await;
    let big =
        annals_core::NewEvent::json("Placed", format!("{{\"pad\":\"{}\"}}", "x".repeat(8_000)))
            .unwrap();
    let stream = annals_core::StreamName::new("order-1").unwrap();
    engine
        .append_async(&stream, annals_core::ExpectedRevision::Any, vec![big])
        .await
        .unwrap();
    append_orders(&engine, 4, 5, 5).await;
    let status = caught_up(&relays, "orders-out", &engine).await;
    assert_eq!(status.parked, 1, "{status:?}");
    let parked = relays.parked("orders-out").await.unwrap();
    assert!(
        parked[0].info.reason.contains("max payload"),
        "{:?}",
        parked[0].info
    );
    let got = read_back(&nats.url()).await;
    assert_eq!(got.len(), 40);
    let order_1: Vec<u64> = got
        .iter()
        .filter(|(s, _, _)| s == "order-1")
        .map(|(_, r, _)| *r)
        .collect();
    assert_eq!(order_1, [0, 1, 2, 3, 4, 6, 7, 8, 9, 10]);
    relays.shutdown().await;
}

/// A stopped relay resumes from its checkpoint: reopened on the same store, it sends only what
/// came after, and JetStream holds every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_relay_resumes_from_its_checkpoint() {
    let nats = TempNats::start();
    create_stream(&nats.url()).await;
    let (engine, _dir) = engine();
    let relays = Relays::open(engine.clone()).await.unwrap();
    relays.apply(&definition(&[nats.url()])).await.unwrap();
    append_orders(&engine, 10, 30, 10).await;
    caught_up(&relays, "orders-out", &engine).await;
    relays.shutdown().await;
    drop(relays);
    append_orders(&engine, 10, 30, 10).await;
    // The definition was saved with the store: opening starts it again.
    let relays = Relays::open(engine.clone()).await.unwrap();
    let status = caught_up(&relays, "orders-out", &engine).await;
    assert!(
        status.sent <= 300,
        "only what came after the checkpoint: {status:?}"
    );
    let got = read_back(&nats.url()).await;
    assert_eq!(got.len(), 600);
    check_order(&got);
    relays.shutdown().await;
}
