//! The RabbitMQ sink against throwaway brokers: a broker killed with SIGKILL mid-load (every
//! event arrives at least once, each stream's first copies in order), and the exchange checks
//! (declared when `create = true`, reported missing otherwise, unroutable events parked).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use annals_core::{ExpectedRevision, NewEvent, StreamName};
use annals_relay::{RelayStatus, Relays};
use annals_testkit::rabbitmq::TempRabbit;
use lapin::options::{
    BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

use crate::{append_orders, caught_up, engine};

const EXCHANGE: &str = "annals-events";
const QUEUE: &str = "annals-all";
/// Longest a test waits for a relay's status to show something.
const STATUS_WAIT_MAX: Duration = Duration::from_secs(60);

async fn connect(url: &str) -> (Connection, Channel) {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    (connection, channel)
}

async fn declare_exchange(channel: &Channel, exchange: &str) {
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
}

/// A durable queue that takes every message of `exchange`.
async fn bind_queue(channel: &Channel, queue: &str, exchange: &str) {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
}

/// One message as read back: (stream, revision, event id).
type Got = (String, u64, String);

/// Every message in `queue`, in the queue's order, taken off it.
async fn drain(channel: &Channel, queue: &str) -> Vec<Got> {
    let mut out = Vec::new();
    while let Some(m) = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        let p = &m.delivery.properties;
        let headers = p
            .headers()
            .as_ref()
            .expect("relayed messages carry headers");
        let get = |name: &str| {
            headers
                .inner()
                .get(name)
                .and_then(AMQPValue::as_long_string)
                .map(ToString::to_string)
                .unwrap_or_else(|| unreachable!("header {name} is a long string: {headers:?}"))
        };
        let id = get("Annals-Event-Id");
        assert_eq!(
            p.message_id().as_ref().map(|m| m.as_str()),
            Some(id.as_str()),
            "message_id is the event id"
        );
        assert_eq!(p.delivery_mode(), &Some(2), "persistent");
        assert_eq!(
            p.content_type().as_ref().map(|c| c.as_str()),
            Some("application/json")
        );
        out.push((
            get("Annals-Stream"),
            get("Annals-Revision").parse().unwrap(),
            id,
        ));
    }
    out
}

/// Each stream's first copies arrive in revision order; returns the events per stream and the
/// count of later copies (RabbitMQ does not deduplicate a re-send).
fn check_order(got: &[Got]) -> (HashMap<String, u64>, usize) {
    let mut next: HashMap<String, u64> = HashMap::new();
    let mut ids = HashSet::new();
    let mut duplicates = 0;
    for (stream, revision, id) in got {
        if !ids.insert(id.clone()) {
            duplicates += 1;
            continue;
        }
        let want = next.entry(stream.clone()).or_insert(0);
        assert_eq!(
            *revision, *want,
            "{stream}: revision {revision} arrived first when {want} was due"
        );
        *want += 1;
    }
    (next, duplicates)
}

/// A relay of `category` to `exchange`; a refused event is tried `attempts` times, 50 ms to
/// 500 ms apart.
fn definition(
    name: &str,
    category: &str,
    url: &str,
    exchange: &str,
    create: bool,
    attempts: u32,
) -> String {
    format!(
        r#"
        [[relay]]
        name = "{name}"
        source = {{ category = "{category}" }}
        sink = {{ kind = "amqp", urls = ["{url}"], exchange = "{exchange}", routing_key = "{{category}}.{{event_type}}", create = {create}, confirm_timeout_ms = 1000 }}
        concurrency = 64
        on_error = {{ attempts = {attempts}, backoff_ms = 50, backoff_max_ms = 500 }}
        "#
    )
}

/// Waits until the relay's status satisfies `done`.
async fn status_until(
    relays: &Relays,
    name: &str,
    what: &str,
    done: impl Fn(&RelayStatus) -> bool,
) -> RelayStatus {
    let deadline = Instant::now() + STATUS_WAIT_MAX;
    loop {
        let status = relays.status(name).await.unwrap();
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: never {what}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A broker killed with SIGKILL in the middle of a 4,000-event load and down for two seconds:
/// every event reaches the queue at least once (a re-send after a lost confirm arrives twice),
/// and each stream's first copies are in revision order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_mid_load_gets_every_event_at_least_once_in_stream_order() {
    let started = Instant::now();
    let mut rabbit = tokio::task::block_in_place(TempRabbit::start);
    eprintln!("RabbitMQ up in {:.1?}", started.elapsed());
    let (connection, channel) = connect(&rabbit.url()).await;
    declare_exchange(&channel, EXCHANGE).await;
    bind_queue(&channel, QUEUE, EXCHANGE).await;
    drop((channel, connection));

    let (engine, _dir) = engine();
    let relays = Relays::open(engine.clone()).await.unwrap();
    relays
        .apply(&definition(
            "orders-out",
            "order",
            &rabbit.url(),
            EXCHANGE,
            false,
            10,
        ))
        .await
        .unwrap();
    let load = {
        let engine = engine.clone();
        tokio::spawn(async move { append_orders(&engine, 100, 40, 5).await })
    };
    // Let some events through, then take the broker down for a while.
    let before = status_until(&relays, "orders-out", "sending", |s| s.sent >= 300).await;
    tokio::task::block_in_place(|| rabbit.kill());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = relays.status("orders-out").await.unwrap();
    assert!(
        status.last_error.is_some(),
        "the outage went unnoticed: {status:?}"
    );
    eprintln!(
        "killed with {} sent, {} in flight, {} behind; during the outage: {:?}",
        before.sent, before.in_flight, before.lag_events, status.last_error
    );
    assert!(
        status.sent < 4_000,
        "the broker went down after the load was through: {status:?}"
    );
    let restarted = Instant::now();
    tokio::task::block_in_place(|| rabbit.start_again());
    eprintln!("RabbitMQ back in {:.1?}", restarted.elapsed());
    {
        let (connection, channel) = connect(&rabbit.url()).await;
        let queue = channel
            .queue_declare(
                QUEUE.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("the durable queue survived the crash");
        eprintln!(
            "after the restart: {} messages in the queue",
            queue.message_count()
        );
        drop((channel, connection));
    }
    load.await.unwrap();
    let status = caught_up(&relays, "orders-out", &engine).await;
    assert_eq!(
        status.parked,
        0,
        "{status:?}\nthe broker's log:\n{}",
        rabbit.log()
    );
    relays.shutdown().await;

    let (_conn, channel) = connect(&rabbit.url()).await;
    let got = drain(&channel, QUEUE).await;
    let (per_stream, duplicates) = check_order(&got);
    eprintln!(
        "{} messages for 4000 events: {duplicates} duplicates; relay sent {}",
        got.len(),
        status.sent
    );
    assert_eq!(per_stream.len(), 100, "every stream");
    assert!(
        per_stream.values().all(|n| *n == 40),
        "every event at least once: {per_stream:?}"
    );
    assert_eq!(got.len(), 4_000 + duplicates);
}

/// `create = true` declares a missing exchange (and events then flow to a queue bound to it);
/// without it the relay says what is missing; an event no queue is bound for is unroutable,
/// refused, and parked after its attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exchange_is_declared_on_request_and_reported_missing_otherwise() {
    let rabbit = tokio::task::block_in_place(TempRabbit::start);
    let url = rabbit.url();
    let (engine, _dir) = engine();
    let relays = Relays::open(engine.clone()).await.unwrap();

    relays
        .apply(&definition(
            "maker",
            "order",
            &url,
            "made-by-relay",
            true,
            10,
        ))
        .await
        .unwrap();
    let (connection, channel) = connect(&url).await;
    let deadline = Instant::now() + STATUS_WAIT_MAX;
    loop {
        // A passive declare of a missing exchange closes the channel: a new one each time.
        let probe = connection.create_channel().await.unwrap();
        let exists = probe
            .exchange_declare(
                "made-by-relay".into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .is_ok();
        if exists {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the relay never declared its exchange"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bind_queue(&channel, "made", "made-by-relay").await;
    append_orders(&engine, 5, 20, 10).await;
    caught_up(&relays, "maker", &engine).await;
    let got = drain(&channel, "made").await;
    let (per_stream, duplicates) = check_order(&got);
    assert_eq!((per_stream.len(), duplicates, got.len()), (5, 0, 100));

    relays
        .apply(&definition(
            "lacking",
            "order",
            &url,
            "never-declared",
            false,
            10,
        ))
        .await
        .unwrap();
    let status = status_until(&relays, "lacking", "reporting the missing exchange", |s| {
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("never-declared") && e.contains("does not exist"))
    })
    .await;
    assert_eq!(status.sent, 0, "{status:?}");
    assert!(
        !status
            .last_error
            .unwrap_or_default()
            .contains("guest:guest"),
        "credentials are not shown"
    );

    // An exchange with no queue bound: each event is returned unroutable and parked.
    relays
        .apply(&definition("nowhere", "stray", &url, "unbound", true, 2))
        .await
        .unwrap();
    let stream = StreamName::new("stray-1").unwrap();
    let events = (0..3)
        .map(|k| NewEvent::json("Lost", format!("{{\"n\":{k}}}")).unwrap())
        .collect();
    engine
        .append_async(&stream, ExpectedRevision::Any, events)
        .await
        .unwrap();
    let status = status_until(&relays, "nowhere", "parking unroutable events", |s| {
        s.parked == 3
    })
    .await;
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("unroutable")),
        "{status:?}"
    );
    relays.shutdown().await;
}
