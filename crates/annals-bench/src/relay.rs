//! `bench relay`: a relay forwarding a store's events to NATS JetStream, acknowledged by
//! JetStream, against a plain `async-nats` loop publishing the same messages (same subjects,
//! headers and dedup ids) with as many acknowledgements outstanding as the relay's
//! concurrency, in the same run (`ratio`). Then, live: single-event appends at a fixed rate,
//! each carrying its send time, timed until a core NATS subscriber on the relay's subjects
//! receives it (append to broker).
//!
//! Each run uses its own subjects and JetStream streams (named after the process and a random
//! suffix) and deletes the streams at the end.

use std::time::{Duration, Instant};

use annals_core::{ExpectedRevision, NewEvent, StreamName};
use annals_engine::{Engine, EngineConfig};
use annals_relay::Relays;
use async_nats::HeaderMap;
use async_nats::jetstream;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::error::{BenchError, Context};
use crate::measure::{latency_histogram, micros, ratio, runtime};
use crate::report::{emit, round2};

/// Events per append while filling the store.
const RELAY_FILL_BATCH: usize = 100;
/// Longest the relay may take to forward everything before the run is called failed.
const RELAY_CATCH_UP_MAX: Duration = Duration::from_secs(600);
/// Longest the live subscriber may take to see the last events once the relay acked them.
const RELAY_LIVE_DRAIN_MAX: Duration = Duration::from_secs(30);
/// Payload of each event (bytes of JSON, roughly).
const RELAY_EVENT_PAD: usize = 100;

/// The settings of `bench relay`.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// A NATS server with JetStream.
    pub nats: String,
    /// A store directory for the in-process store (created; should be empty).
    pub data: std::path::PathBuf,
    pub events: u64,
    /// Streams the events are spread over (each stream goes out in order).
    pub streams: u64,
    /// Sends in flight, for the relay and the baseline alike.
    pub concurrency: usize,
    /// The relay's `order`: `stream` or `global`.
    pub order: String,
    pub rate: u64,
    pub live_events: u64,
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Figures {
    bench: &'static str,
    sink: &'static str,
    events: u64,
    streams: u64,
    concurrency: usize,
    order: String,
    events_per_s: f64,
    baseline_events_per_s: f64,
    ratio: f64,
    live_rate: u64,
    live_events: u64,
    live_p50_ms: f64,
    live_p99_ms: f64,
    live_max_ms: f64,
}

pub(crate) fn run(config: &RelayConfig) -> Result<(), BenchError> {
    if config.events == 0 || config.streams == 0 || config.concurrency == 0 {
        return Err(BenchError::Options(
            "--events, --streams and --concurrency must be at least 1".to_owned(),
        ));
    }
    if config.live_events > 0 && config.rate == 0 {
        return Err(BenchError::Options(
            "--rate must be at least 1 with --live-events".to_owned(),
        ));
    }
    runtime("bench relay")?.block_on(run_async(config))
}

async fn run_async(config: &RelayConfig) -> Result<(), BenchError> {
    let tag = format!(
        "annals_bench_{}_{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let client = async_nats::connect(config.nats.as_str())
        .await
        .map_err(|e| BenchError::Check(format!("connecting to {}: {e}", config.nats)))?;
    let js = jetstream::new(client.clone());
    let relay_stream = format!("{tag}_relay").to_uppercase();
    let base_stream = format!("{tag}_base").to_uppercase();
    for (name, prefix) in [(&relay_stream, "relay"), (&base_stream, "base")] {
        js.create_stream(jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![format!("{tag}.{prefix}.>")],
            ..Default::default()
        })
        .await
        .map_err(|e| BenchError::Check(format!("creating JetStream stream {name}: {e}")))?;
    }
    let outcome = measure(config, &tag, &relay_stream, &js, &client).await;
    for name in [&relay_stream, &base_stream] {
        let _ = js.delete_stream(name).await;
    }
    let (events_per_s, baseline_events_per_s, live) = outcome?;
    let ms = |us: u64| round2(us as f64 / 1_000.0);
    emit(
        &Figures {
            bench: "relay",
            sink: "nats",
            events: config.events,
            streams: config.streams,
            concurrency: config.concurrency,
            order: config.order.clone(),
            events_per_s: round2(events_per_s),
            baseline_events_per_s: round2(baseline_events_per_s),
            ratio: ratio(events_per_s, baseline_events_per_s),
            live_rate: config.rate,
            live_events: config.live_events,
            live_p50_ms: ms(live.value_at_quantile(0.5)),
            live_p99_ms: ms(live.value_at_quantile(0.99)),
            live_max_ms: ms(live.max()),
        },
        config.json,
    )
}

fn stream_name(i: u64) -> Result<StreamName, BenchError> {
    StreamName::new(format!("relaybench-{i}"))
        .map_err(|e| BenchError::Check(format!("stream name: {e}")))
}

fn event(data: String) -> Result<NewEvent, BenchError> {
    NewEvent::json("Bench", data).map_err(|e| BenchError::Check(format!("event: {e}")))
}

async fn measure(
    config: &RelayConfig,
    tag: &str,
    relay_stream: &str,
    js: &jetstream::Context,
    client: &async_nats::Client,
) -> Result<(f64, f64, Histogram<u64>), BenchError> {
    std::fs::create_dir_all(&config.data)
        .context(|| format!("creating {}", config.data.display()))?;
    let (engine, _) = Engine::open_dir(&config.data, EngineConfig::default())
        .map_err(|e| BenchError::Check(format!("opening the store: {e}")))?;
    let result = measure_on(config, tag, relay_stream, js, client, &engine).await;
    engine.close();
    result
}

async fn measure_on(
    config: &RelayConfig,
    tag: &str,
    relay_stream: &str,
    js: &jetstream::Context,
    client: &async_nats::Client,
    engine: &Engine,
) -> Result<(f64, f64, Histogram<u64>), BenchError> {
    // The store holds the events before either side starts.
    let pad = "x".repeat(RELAY_EVENT_PAD);
    let mut written = 0u64;
    while written < config.events {
        let stream = stream_name(written / RELAY_FILL_BATCH as u64 % config.streams)?;
        let n = (config.events - written).min(RELAY_FILL_BATCH as u64);
        let events = (0..n)
            .map(|k| event(format!("{{\"n\":{},\"pad\":\"{pad}\"}}", written + k)))
            .collect::<Result<Vec<_>, _>>()?;
        engine
            .append_async(&stream, ExpectedRevision::Any, events)
            .await
            .map_err(|e| BenchError::Check(format!("filling the store: {e}")))?;
        written += n;
    }
    let head = engine.head().0;

    // The baseline: the same messages, published by hand with as many acks outstanding.
    let started = Instant::now();
    let mut pending = FuturesUnordered::new();
    let mut sent = 0u64;
    let payload = bytes::Bytes::from(format!("{{\"n\":0,\"pad\":\"{pad}\"}}"));
    while sent < config.events || !pending.is_empty() {
        while sent < config.events && pending.len() < config.concurrency {
            let stream = format!(
                "relaybench-{}",
                sent / RELAY_FILL_BATCH as u64 % config.streams
            );
            let id = uuid::Uuid::new_v4().to_string();
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            headers.insert("Annals-Stream", stream.as_str());
            headers.insert("Annals-Revision", sent.to_string().as_str());
            headers.insert("Annals-Position", sent.to_string().as_str());
            headers.insert("Annals-Event-Type", "Bench");
            headers.insert("Annals-Event-Id", id.as_str());
            headers.insert("Content-Type", "application/json");
            let ack = js
                .publish_with_headers(format!("{tag}.base.{stream}"), headers, payload.clone())
                .await
                .map_err(|e| BenchError::Check(format!("baseline publish: {e}")))?;
            pending.push(ack.into_future());
            sent += 1;
        }
        if let Some(ack) = pending.next().await {
            ack.map_err(|e| BenchError::Check(format!("baseline ack: {e}")))?;
        }
    }
    let baseline = started.elapsed();

    // The relay: from the start of the store, until JetStream acknowledged it all.
    let relays = Relays::open(engine.clone())
        .await
        .map_err(|e| BenchError::Check(format!("starting relays: {e}")))?;
    let definition = format!(
        r#"
        [[relay]]
        name = "bench"
        source = {{ category = "relaybench" }}
        sink = {{ kind = "nats", urls = ["{}"], subject = "{tag}.relay.{{stream}}", stream = "{relay_stream}" }}
        concurrency = {}
        order = "{}"
        "#,
        config.nats, config.concurrency, config.order
    );
    let started = Instant::now();
    relays
        .apply(&definition)
        .await
        .map_err(|e| BenchError::Check(format!("applying the relay: {e}")))?;
    wait_caught_up(&relays, head).await?;
    let relayed = started.elapsed();
    tracing::info!(
        relay_s = relayed.as_secs_f64(),
        baseline_s = baseline.as_secs_f64(),
        "bench relay: throughput measured"
    );

    let live = live(config, tag, client, engine, &relays).await;
    relays.shutdown().await;
    let events = config.events as f64;
    Ok((
        events / relayed.as_secs_f64(),
        events / baseline.as_secs_f64(),
        live?,
    ))
}

async fn wait_caught_up(relays: &Relays, head: u64) -> Result<(), BenchError> {
    let deadline = Instant::now() + RELAY_CATCH_UP_MAX;
    loop {
        let status = relays
            .status("bench")
            .await
            .map_err(|e| BenchError::Check(format!("relay status: {e}")))?;
        if status.position >= head {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Check(format!(
                "the relay did not catch up: {status:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Appends single events at `rate`, each with its send time; a subscriber on the relay's
/// subjects records the delay to its arrival.
async fn live(
    config: &RelayConfig,
    tag: &str,
    client: &async_nats::Client,
    engine: &Engine,
    relays: &Relays,
) -> Result<Histogram<u64>, BenchError> {
    let mut histogram = latency_histogram();
    if config.live_events == 0 {
        return Ok(histogram);
    }
    // Subscribed before the first live append, so no delivery is missed.
    let mut sub = client
        .subscribe(format!("{tag}.relay.>"))
        .await
        .map_err(|e| BenchError::Check(format!("subscribing: {e}")))?;
    let epoch = Instant::now();
    let want = config.live_events;
    let received = tokio::spawn(async move {
        let mut h = latency_histogram();
        let mut got = 0u64;
        while let Some(m) = sub.next().await {
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&m.payload) else {
                continue;
            };
            if let Some(sent_us) = v.get("sent_us").and_then(serde_json::Value::as_u64) {
                let now_us = micros(epoch.elapsed());
                let _ = h.record(now_us.saturating_sub(sent_us).max(1));
                got += 1;
            }
            if got >= want {
                break;
            }
        }
        h
    });
    let interval = Duration::from_secs_f64(1.0 / config.rate as f64);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0..config.live_events {
        ticker.tick().await;
        let stream = stream_name(i % config.streams)?;
        let sent_us = micros(epoch.elapsed());
        engine
            .append_async(
                &stream,
                ExpectedRevision::Any,
                vec![event(format!("{{\"sent_us\":{sent_us}}}"))?],
            )
            .await
            .map_err(|e| BenchError::Check(format!("live append: {e}")))?;
    }
    wait_caught_up(relays, engine.head().0).await?;
    match tokio::time::timeout(RELAY_LIVE_DRAIN_MAX, received).await {
        Ok(Ok(h)) => histogram = h,
        Ok(Err(e)) => return Err(BenchError::Check(format!("live subscriber: {e}"))),
        Err(_) => {
            return Err(BenchError::Check(
                "the live subscriber did not receive every event".to_owned(),
            ));
        }
    }
    Ok(histogram)
}
