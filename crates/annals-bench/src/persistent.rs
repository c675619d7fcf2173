//! `annals bench persistent`: events delivered and acknowledged end to end over gRPC by several
//! consumers of one persistent-subscription group, against a catch-up subscription reading the
//! same events from the same server in the same run (`ratio`); then live latency, from the
//! start of an append to the event's delivery to a consumer, at a fixed append rate.
//!
//! Each run appends `--events` events to a fresh stream, then alternates (`--rounds`): a
//! catch-up subscription reads them all; a fresh group (`RoundRobin`) hands them to
//! `--consumers` consumers, each on its own connection, which ack every event in batches of
//! what has arrived. Then the last group, live, takes `--live-events` single-event appends sent
//! at `--rate` per second, each carrying the time it was sent; its consumers record the delay.
//! The clients are Annals's lean client (one HTTP/2 connection each).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use annals_core::ExpectedRevision;
use annals_core::limits::APPEND_EVENTS_MAX;
use bytes::Bytes;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;

use crate::client::{GroupConsumer, GroupOptions, ProposedEvent, StreamsClient};
use crate::error::{BenchError, Context, ensure};
use crate::grpc::{GrpcServer, lean_client};
use crate::measure::{latency_histogram, micros, process_cpu, ratio, runtime};
use crate::report::{emit, round2};

/// Events per append while filling the stream.
const FILL_BATCH_EVENTS: u64 = 1_000;
/// Most acks a consumer gathers before it sends them.
const ACK_BATCH_MAX: usize = 64;
/// Longest the bench waits for the next event before it calls the run failed.
const STALL_MAX: Duration = Duration::from_secs(60);
/// The group's read batch and buffers: KurrentDB's defaults for the buffers, a larger read batch.
const GROUP_READ_BATCH: i32 = 100;
const GROUP_HISTORY_BUFFER: i32 = 500;
const GROUP_LIVE_BUFFER: i32 = 500;

const _: () = assert!(FILL_BATCH_EVENTS as usize <= APPEND_EVENTS_MAX);

/// The settings of `bench persistent`.
#[derive(Clone, Debug)]
pub struct PersistentConfig {
    /// The running server.
    pub server: GrpcServer,
    /// Consumers in the group.
    pub consumers: usize,
    /// Events appended, then read by each side.
    pub events: u64,
    /// Catch-up and group alternate this many times.
    pub rounds: u32,
    /// Events in flight to each consumer at most (the client's buffer size).
    pub buffer: i32,
    /// Live phase: single-event appends per second, and how many.
    pub rate: u64,
    pub live_events: u64,
    /// Print the figures as one JSON line.
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Figures {
    bench: &'static str,
    server: String,
    consumers: usize,
    events: u64,
    rounds: u32,
    buffer: i32,
    events_per_s: f64,
    baseline_events_per_s: f64,
    ratio: f64,
    /// CPU this process used per event handled by the group and by the baseline, in
    /// microseconds: the server's and the clients' when the server runs in-process (`--data`),
    /// the clients' only against a running server.
    cpu_us_per_event: f64,
    baseline_cpu_us_per_event: f64,
    /// Deliveries beyond the first of an event (message timeouts); 0 in a healthy run.
    redelivered: u64,
    /// Events each consumer got in the last round, fewest and most.
    consumer_min: u64,
    consumer_max: u64,
    live_rate: u64,
    live_events: u64,
    /// Appends actually sent per second in the live phase.
    live_sent_per_s: f64,
    live_p50_ms: f64,
    live_p99_ms: f64,
    live_max_ms: f64,
}

pub(crate) fn run(config: &PersistentConfig) -> Result<(), BenchError> {
    if config.events == 0 || config.rounds == 0 || config.consumers == 0 || config.buffer < 1 {
        return Err(BenchError::Options(
            "--events, --rounds, --consumers and --buffer must be at least 1".to_owned(),
        ));
    }
    if config.live_events > 0 && config.rate == 0 {
        return Err(BenchError::Options(
            "--rate must be at least 1 with --live-events".to_owned(),
        ));
    }
    let runtime = runtime("the clients")?;
    runtime.block_on(run_async(config))
}

async fn run_async(config: &PersistentConfig) -> Result<(), BenchError> {
    let mut client = lean_client(&config.server).await?;
    let stream = format!(
        "bench_persistent-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    );
    fill(&mut client, &stream, config.events).await?;

    let mut group_time = Duration::ZERO;
    let mut baseline_time = Duration::ZERO;
    let (mut group_cpu, mut baseline_cpu) = (Duration::ZERO, Duration::ZERO);
    let mut redelivered = 0;
    let mut last = None;
    for round in 0..config.rounds {
        let cpu = process_cpu();
        baseline_time += catch_up(&mut client, &stream, config.events).await?;
        let between = process_cpu();
        baseline_cpu += between.saturating_sub(cpu);
        let group = format!("bench-{round}");
        let (elapsed, outcome) = consume_group(config, &client, &stream, &group).await?;
        group_cpu += process_cpu().saturating_sub(between);
        group_time += elapsed;
        redelivered += outcome.redelivered;
        tracing::info!(
            round,
            group_s = elapsed.as_secs_f64(),
            "bench persistent: round done"
        );
        last = Some((group, outcome));
    }
    let (group, outcome) = last.ok_or_else(|| BenchError::Check("no round ran".to_owned()))?;
    let total = config.events as f64 * f64::from(config.rounds);
    let events_per_s = total / group_time.as_secs_f64();
    let baseline_events_per_s = total / baseline_time.as_secs_f64();
    let cpu_us = |cpu: Duration| round2(cpu.as_secs_f64() * 1e6 / total);

    let live = live(config, &client, &stream, &group, outcome.consumers).await?;
    let ms = |us: u64| round2(us as f64 / 1_000.0);
    let figures = Figures {
        bench: "persistent",
        server: config.server.to_string(),
        consumers: config.consumers,
        events: config.events,
        rounds: config.rounds,
        buffer: config.buffer,
        events_per_s: round2(events_per_s),
        baseline_events_per_s: round2(baseline_events_per_s),
        ratio: ratio(events_per_s, baseline_events_per_s),
        cpu_us_per_event: cpu_us(group_cpu),
        baseline_cpu_us_per_event: cpu_us(baseline_cpu),
        redelivered,
        consumer_min: outcome.per_consumer.iter().copied().min().unwrap_or(0),
        consumer_max: outcome.per_consumer.iter().copied().max().unwrap_or(0),
        live_rate: config.rate,
        live_events: config.live_events,
        live_sent_per_s: round2(live.sent_per_s),
        live_p50_ms: ms(live.latency.value_at_quantile(0.5)),
        live_p99_ms: ms(live.latency.value_at_quantile(0.99)),
        live_max_ms: ms(live.latency.max()),
    };
    emit(&figures, config.json)
}

/// Appends `events` events to `stream` in appends of [`FILL_BATCH_EVENTS`].
async fn fill(client: &mut StreamsClient, stream: &str, events: u64) -> Result<(), BenchError> {
    let mut done = 0;
    while done < events {
        let n = FILL_BATCH_EVENTS.min(events - done);
        let batch = (done..done + n).map(|i| event(&i.to_le_bytes())).collect();
        client
            .append(stream, ExpectedRevision::Any, batch)
            .await
            .context(|| format!("filling {stream}"))?;
        done += n;
    }
    Ok(())
}

fn event(data: &[u8]) -> ProposedEvent {
    ProposedEvent {
        id: uuid::Uuid::new_v4(),
        event_type: "BenchPersistent".to_owned(),
        json: false,
        data: Bytes::copy_from_slice(data),
        metadata: Bytes::new(),
    }
}

/// The baseline: a catch-up subscription reads `events` events of `stream` from its start.
async fn catch_up(
    client: &mut StreamsClient,
    stream: &str,
    events: u64,
) -> Result<Duration, BenchError> {
    let started = Instant::now();
    let mut sub = client
        .subscribe_stream(stream)
        .await
        .context(|| format!("subscribing to {stream}"))?;
    let mut got = 0;
    while got < events {
        let next = tokio::time::timeout(STALL_MAX, sub.next())
            .await
            .map_err(|_| BenchError::Check("the catch-up subscription stalled".to_owned()))?
            .context(|| "the catch-up subscription".to_owned())?;
        ensure(next.is_some(), || {
            "the catch-up subscription ended early".to_owned()
        })?;
        got += 1;
    }
    Ok(started.elapsed())
}

/// What one group round saw.
struct GroupOutcome {
    redelivered: u64,
    per_consumer: Vec<u64>,
    /// The consumers, still connected, for the live phase.
    consumers: Vec<GroupConsumer>,
}

/// Creates `group` and times its consumers taking and acking every event of `stream`.
async fn consume_group(
    config: &PersistentConfig,
    client: &StreamsClient,
    stream: &str,
    group: &str,
) -> Result<(Duration, GroupOutcome), BenchError> {
    let options = GroupOptions {
        strategy: "RoundRobin".to_owned(),
        read_batch_size: GROUP_READ_BATCH,
        history_buffer_size: GROUP_HISTORY_BUFFER,
        live_buffer_size: GROUP_LIVE_BUFFER,
    };
    // Consumers on their own connections join before the group has a reason to hand out
    // events; the clock starts with the creation.
    let mut connections = Vec::with_capacity(config.consumers);
    for _ in 0..config.consumers {
        connections.push(lean_client(&config.server).await?);
    }
    let started = Instant::now();
    client
        .create_group(stream, group, &options)
        .await
        .context(|| format!("creating group {group}"))?;
    let mut consumers = Vec::with_capacity(config.consumers);
    for c in &connections {
        consumers.push(
            c.consume_group(stream, group, config.buffer)
                .await
                .context(|| format!("joining group {group}"))?,
        );
    }
    let handled = Arc::new(AtomicU64::new(0));
    let target = config.events;
    let tasks: Vec<_> = consumers
        .into_iter()
        .map(|consumer| {
            let handled = Arc::clone(&handled);
            tokio::spawn(consume_until(consumer, handled, target))
        })
        .collect();
    let mut per_consumer = Vec::with_capacity(tasks.len());
    let mut redelivered = 0;
    let mut consumers = Vec::with_capacity(tasks.len());
    for task in tasks {
        let (consumer, got, again) = task.await.map_err(|e| BenchError::Worker {
            what: "a consumer",
            reason: e.to_string(),
        })??;
        per_consumer.push(got);
        redelivered += again;
        consumers.push(consumer);
    }
    let elapsed = started.elapsed();
    drop(connections);
    Ok((
        elapsed,
        GroupOutcome {
            redelivered,
            per_consumer,
            consumers,
        },
    ))
}

/// Takes and acks events until the consumers together handled `target` first deliveries;
/// returns the consumer, its first deliveries and its redeliveries.
async fn consume_until(
    mut consumer: GroupConsumer,
    handled: Arc<AtomicU64>,
    target: u64,
) -> Result<(GroupConsumer, u64, u64), BenchError> {
    let mut got = 0;
    let mut again = 0;
    let mut acks = Vec::with_capacity(ACK_BATCH_MAX);
    while handled.load(Ordering::Acquire) < target {
        // Whatever has arrived is taken before the acks go out; then wait for more.
        let next = match consumer.try_next() {
            Some(next) => next,
            None if !acks.is_empty() => {
                consumer
                    .ack(std::mem::take(&mut acks))
                    .await
                    .context(|| "acking".to_owned())?;
                continue;
            }
            None => {
                // Another consumer may be taking the last events: look again now and then.
                match tokio::time::timeout(Duration::from_millis(20), consumer.next()).await {
                    Ok(next) => next,
                    Err(_) => continue,
                }
            }
        };
        let delivered = next
            .context(|| "consuming".to_owned())?
            .ok_or_else(|| BenchError::Check("the server ended a consumer".to_owned()))?;
        if delivered.retry_count == 0 {
            got += 1;
            handled.fetch_add(1, Ordering::AcqRel);
        } else {
            again += 1;
        }
        acks.push(delivered.ack_id);
        if acks.len() >= ACK_BATCH_MAX {
            consumer
                .ack(std::mem::take(&mut acks))
                .await
                .context(|| "acking".to_owned())?;
        }
    }
    if !acks.is_empty() {
        consumer.ack(acks).await.context(|| "acking".to_owned())?;
    }
    Ok((consumer, got, again))
}

struct Live {
    sent_per_s: f64,
    latency: Histogram<u64>,
}

/// Appends `live_events` single events at `rate` per second, each carrying its send time; the
/// group's consumers record the delay from the send to the delivery.
async fn live(
    config: &PersistentConfig,
    client: &StreamsClient,
    stream: &str,
    group: &str,
    consumers: Vec<GroupConsumer>,
) -> Result<Live, BenchError> {
    let mut latency = latency_histogram();
    if config.live_events == 0 {
        return Ok(Live {
            sent_per_s: 0.0,
            latency,
        });
    }
    tracing::info!(
        group,
        rate = config.rate,
        events = config.live_events,
        "bench persistent: live phase"
    );
    let epoch = Instant::now();
    let handled = Arc::new(AtomicU64::new(0));
    let shared = Arc::new(Mutex::new(latency_histogram()));
    let target = config.live_events;
    let readers: Vec<_> = consumers
        .into_iter()
        .map(|consumer| {
            let handled = Arc::clone(&handled);
            let shared = Arc::clone(&shared);
            tokio::spawn(record_latency(consumer, handled, shared, target, epoch))
        })
        .collect();
    let period = Duration::from_secs_f64(1.0 / config.rate as f64);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut appends = Vec::with_capacity(usize::try_from(target).unwrap_or(0));
    let sending = Instant::now();
    for _ in 0..target {
        ticks.tick().await;
        let mut client = client.clone();
        let stream = stream.to_owned();
        appends.push(tokio::spawn(async move {
            let sent = micros(epoch.elapsed());
            client
                .append(
                    &stream,
                    ExpectedRevision::Any,
                    vec![event(&sent.to_le_bytes())],
                )
                .await
        }));
    }
    let sent_per_s = target as f64 / sending.elapsed().as_secs_f64();
    for a in appends {
        a.await
            .map_err(|e| BenchError::Worker {
                what: "an append",
                reason: e.to_string(),
            })?
            .context(|| "a live append".to_owned())?;
    }
    for r in readers {
        r.await.map_err(|e| BenchError::Worker {
            what: "a live consumer",
            reason: e.to_string(),
        })??;
    }
    latency = std::mem::replace(&mut *shared.lock(), latency_histogram());
    ensure(latency.len() == target, || {
        format!("{} of {target} live events delivered", latency.len())
    })?;
    Ok(Live {
        sent_per_s,
        latency,
    })
}

/// Records each live event's delay until the consumers together got `target` of them.
async fn record_latency(
    mut consumer: GroupConsumer,
    handled: Arc<AtomicU64>,
    shared: Arc<Mutex<Histogram<u64>>>,
    target: u64,
    epoch: Instant,
) -> Result<(), BenchError> {
    let started = Instant::now();
    while handled.load(Ordering::Acquire) < target {
        ensure(started.elapsed() < STALL_MAX * 2, || {
            "the live phase stalled".to_owned()
        })?;
        let Ok(next) = tokio::time::timeout(Duration::from_millis(20), consumer.next()).await
        else {
            // Another consumer may be taking the last events: look again now and then.
            continue;
        };
        let delivered = next
            .context(|| "consuming live".to_owned())?
            .ok_or_else(|| BenchError::Check("the server ended a consumer".to_owned()))?;
        let now = micros(epoch.elapsed());
        if delivered.retry_count == 0 {
            let sent = <[u8; 8]>::try_from(delivered.data.as_ref())
                .map(u64::from_le_bytes)
                .map_err(|_| BenchError::Check("a live event without its send time".to_owned()))?;
            shared
                .lock()
                .record(now.saturating_sub(sent).max(1))
                .map_err(|e| BenchError::Check(format!("recording a latency: {e}")))?;
            handled.fetch_add(1, Ordering::AcqRel);
        }
        // Live events come one at a time: each is acked at once.
        consumer
            .ack(vec![delivered.ack_id])
            .await
            .context(|| "acking".to_owned())?;
    }
    Ok(())
}
