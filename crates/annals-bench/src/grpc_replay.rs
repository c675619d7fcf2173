//! `annals bench grpc-replay`: one Rust client reads `$all` from the start over the KurrentDB
//! gRPC protocol from a running `annals serve`; the baseline is an in-process `Engine::read_all`
//! paging over a temporary store filled with as many events of the same shape. The client is
//! Annals's lean client ([`crate::client`], `--client annals`, the default) or the official
//! `kurrentdb` crate (`--client kurrentdb`, with the `kurrentdb-client` feature); the same client
//! fills the server.
//!
//! The client *reads* (`Streams.Read` with a count), it does not subscribe: a read ends by itself
//! at the count, where a catch-up subscription would need a count kept by the client and a
//! cancellation. The server caps one read at `annals_core::limits::NETWORK_READ_EVENTS_MAX` events, so a longer
//! replay is several reads, each from the position of the last event received (reads forwards
//! include their start, so that event is skipped).
//!
//! If the server holds fewer than `--events` events, the bench first appends the rest over gRPC in
//! appends of [`FILL_BATCH_EVENTS`] events (Annals positions are dense and start at 1, so the last
//! event's position is the number of events). The two sides alternate in rounds.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use annals_core::{ContentType, Direction, EventType, ExpectedRevision, NewEvent, Position};
use annals_core::{StreamName, limits::APPEND_EVENTS_MAX};
use annals_engine::{Durability, Engine};
use bytes::Bytes;
use rand::Rng;
use serde::Serialize;

use crate::client::{ProposedEvent, StreamsClient};
use crate::error::{BenchError, Context, ensure};
use crate::grpc::{GrpcClient, GrpcServer, Template, lean_client};
use crate::measure::{ratio, runtime, with_progress};
use crate::report::{emit, round2};
use crate::server_cpu::server_cpu_seconds;
use crate::workload::{EVENT_TYPE, event_data, random_id, take};
use crate::{official, store};

/// Events per append when filling either store: large appends make the fill quick.
const FILL_BATCH_EVENTS: u64 = 1_000;
/// Concurrent appends while filling, over the one client's connection.
const FILL_TASKS: usize = 4;
/// Streams the fill spreads its appends over.
const FILL_STREAMS: u32 = 1_000;
/// Events asked for per `Engine::read_all` call by the baseline, as in `bench replay`.
const BASELINE_PAGE_EVENTS: usize = 4_096;

const _: () = assert!(FILL_BATCH_EVENTS as usize <= APPEND_EVENTS_MAX);

/// The settings of `bench grpc-replay`.
#[derive(Clone, Debug)]
pub struct GrpcReplayConfig {
    /// The running server.
    pub server: GrpcServer,
    /// The gRPC client library that reads (and fills).
    pub client: GrpcClient,
    /// Events to read from the start of `$all`; the server is filled up to this first.
    pub events: u64,
    /// gRPC and in-process alternate this many times.
    pub rounds: u32,
    /// Where to put the in-process baseline's temporary store (default: the system's temporary
    /// directory).
    pub baseline_dir: Option<PathBuf>,
    /// Print the figures as one JSON line.
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Figures {
    bench: &'static str,
    server: String,
    client: GrpcClient,
    events: u64,
    rounds: u32,
    /// Events this run appended to the server before reading (0 if it held enough).
    filled: u64,
    fill_events_per_s: f64,
    elapsed_s: f64,
    events_per_s: f64,
    mb_per_s: f64,
    baseline_elapsed_s: f64,
    baseline_events_per_s: f64,
    ratio: f64,
    /// The server's CPU time per event read over the gRPC rounds, from its `/metrics` (`null`
    /// for a TLS server or one without the metric).
    server_cpu_us_per_event: Option<f64>,
}

pub(crate) fn run(config: &GrpcReplayConfig) -> Result<(), BenchError> {
    if config.events == 0 || config.rounds == 0 {
        return Err(BenchError::Options(
            "--events and --rounds must be at least 1".to_owned(),
        ));
    }
    config.server.check(config.client)?;
    let runtime = runtime("the client")?;
    let reader = runtime.block_on(Reader::connect(config))?;
    let head = runtime.block_on(reader.last_position())?;
    let need = config.events.saturating_sub(head);
    let mut fill_events_per_s = 0.0;
    if need > 0 {
        tracing::info!("bench grpc-replay: the server holds {head} events; appending {need}");
        let started = Instant::now();
        runtime.block_on(fill_grpc(&reader, need))?;
        fill_events_per_s = need as f64 / started.elapsed().as_secs_f64();
    }
    let baseline_dir = store::baseline_dir(config.baseline_dir.as_deref())?;
    let (engine, _) = store::open(baseline_dir.path(), Durability::None)?;
    let result = fill_engine(&runtime, &engine, config.events)
        .and_then(|()| measure(&runtime, &reader, &engine, config));
    engine.close();
    let ((grpc, baseline), cpu) = result?;
    let events_per_s = grpc.events as f64 / grpc.elapsed.as_secs_f64();
    let baseline_events_per_s = baseline.events as f64 / baseline.elapsed.as_secs_f64();
    let figures = Figures {
        server_cpu_us_per_event: cpu
            .filter(|_| grpc.events > 0)
            .map(|s| round2(s * 1e6 / grpc.events as f64)),
        bench: "grpc-replay",
        server: config.server.to_string(),
        client: config.client,
        events: config.events,
        rounds: config.rounds,
        filled: need,
        fill_events_per_s: round2(fill_events_per_s),
        elapsed_s: round2(grpc.elapsed.as_secs_f64()),
        events_per_s: round2(events_per_s),
        mb_per_s: round2(grpc.data_bytes as f64 / (1024.0 * 1024.0) / grpc.elapsed.as_secs_f64()),
        baseline_elapsed_s: round2(baseline.elapsed.as_secs_f64()),
        baseline_events_per_s: round2(baseline_events_per_s),
        ratio: ratio(events_per_s, baseline_events_per_s),
    };
    emit(&figures, config.json)
}

/// Events, data bytes and time of one side over all rounds.
#[derive(Debug, Default)]
struct Side {
    events: u64,
    data_bytes: u64,
    elapsed: Duration,
}

/// The client that fills and reads, of either library.
#[derive(Clone, Debug)]
enum Reader {
    /// Boxed, as the official client is behind an `Arc`: a client is some 300 bytes.
    Annals(Box<StreamsClient>),
    Official(official::Client),
}

impl Reader {
    async fn connect(config: &GrpcReplayConfig) -> Result<Self, BenchError> {
        Ok(match config.client {
            GrpcClient::Annals => Self::Annals(Box::new(lean_client(&config.server).await?)),
            GrpcClient::Kurrentdb => Self::Official(official::Client::new(&config.server)?),
        })
    }

    /// The commit position of the last event in `$all`, 0 if there is none.
    async fn last_position(&self) -> Result<u64, BenchError> {
        match self {
            Self::Annals(c) => c
                .clone()
                .last_position()
                .await
                .context(|| "cannot read the end of $all".to_owned()),
            Self::Official(c) => c.last_position().await,
        }
    }

    /// Appends `count` benchmark events with ids of their own to `stream` in one append.
    async fn append(
        &self,
        stream: &str,
        template: &Template,
        count: u64,
    ) -> Result<(), BenchError> {
        match self {
            Self::Annals(c) => {
                let events = (0..count)
                    .map(|_| ProposedEvent {
                        id: random_id(),
                        ..template.annals.clone()
                    })
                    .collect();
                c.clone()
                    .append(stream, ExpectedRevision::Any, events)
                    .await
                    .map(|_| ())
                    .context(|| format!("filling: append to {stream} failed"))
            }
            Self::Official(c) => c.append(stream, &template.official, count).await,
        }
    }

    /// Reads the first `events` events of `$all`; returns the events read and the sum of their
    /// data sizes.
    async fn read_all(&self, events: u64) -> Result<(u64, u64), BenchError> {
        match self {
            Self::Annals(c) => read_lean(&mut StreamsClient::clone(c), events)
                .await
                .context(|| "reading $all failed".to_owned()),
            Self::Official(c) => c.read_all(events).await,
        }
    }
}

/// Both sides' figures, and the server's CPU seconds over the gRPC rounds (when it could be read
/// before and after each).
fn measure(
    runtime: &tokio::runtime::Runtime,
    reader: &Reader,
    engine: &Engine,
    config: &GrpcReplayConfig,
) -> Result<((Side, Side), Option<f64>), BenchError> {
    let (mut grpc, mut baseline) = (Side::default(), Side::default());
    let mut server_cpu_s = Some(0.0);
    for round in 0..config.rounds {
        let cpu_before = runtime.block_on(server_cpu_seconds(&config.server));
        let started = Instant::now();
        let (events, bytes) = runtime.block_on(reader.read_all(config.events))?;
        let grpc_elapsed = started.elapsed();
        let cpu_after = runtime.block_on(server_cpu_seconds(&config.server));
        server_cpu_s = match (server_cpu_s, cpu_before, cpu_after) {
            (Some(sum), Some(b), Some(a)) if a >= b => Some(sum + a - b),
            _ => None,
        };
        ensure(events == config.events, || {
            format!(
                "read {events} events of $all over gRPC, not {}: some of the server's events \
                 are hidden (deleted streams?); use a fresh server",
                config.events
            )
        })?;
        grpc.events += events;
        grpc.data_bytes += bytes;
        grpc.elapsed += grpc_elapsed;
        let started = Instant::now();
        let (events, bytes) = read_engine(engine, config.events)?;
        let baseline_elapsed = started.elapsed();
        ensure(events == config.events, || {
            format!("the baseline read {events} events")
        })?;
        baseline.events += events;
        baseline.data_bytes += bytes;
        baseline.elapsed += baseline_elapsed;
        tracing::info!(
            "bench grpc-replay: round {}/{}: gRPC {:.0} events/s, in-process {:.0} events/s",
            round + 1,
            config.rounds,
            config.events as f64 / grpc_elapsed.as_secs_f64(),
            config.events as f64 / baseline_elapsed.as_secs_f64(),
        );
    }
    Ok(((grpc, baseline), server_cpu_s))
}

/// Reads the first `events` events of `$all` with Annals's lean client, as
/// `official::Client::read_all` does with the official one.
async fn read_lean(
    client: &mut StreamsClient,
    events: u64,
) -> Result<(u64, u64), crate::client::ClientError> {
    let (mut read, mut bytes) = (0u64, 0u64);
    let mut last: Option<u64> = None;
    while read < events {
        // One more than needed after the first read: it starts with the last event seen.
        let count = events - read + u64::from(last.is_some());
        let mut stream = client.read_all(last.unwrap_or(0), count).await?;
        let mut got = 0u64;
        while let Some(e) = stream.next().await? {
            if last.is_some_and(|l| e.position <= l) {
                continue;
            }
            last = Some(e.position);
            read += 1;
            got += 1;
            bytes += std::hint::black_box(e.data.len()) as u64;
            if read == events {
                break;
            }
        }
        if got == 0 {
            break;
        }
    }
    Ok((read, bytes))
}

/// Reads the first `events` events of `$all` through `Engine::read_all`; returns the events read
/// and the sum of their data sizes.
fn read_engine(engine: &Engine, events: u64) -> Result<(u64, u64), BenchError> {
    let (mut read, mut bytes) = (0u64, 0u64);
    let mut from = Position(1);
    while read < events {
        let want = usize::try_from(events - read)
            .unwrap_or(usize::MAX)
            .min(BASELINE_PAGE_EVENTS);
        let page = engine.read_all(from, Direction::Forwards, want, None)?;
        for e in &page.events {
            read += 1;
            bytes += std::hint::black_box(e.data.len()) as u64;
        }
        if page.end_reached || page.events.is_empty() {
            break;
        }
        from = page.next;
    }
    Ok((read, bytes))
}

/// Appends `events` benchmark events over gRPC, [`FILL_BATCH_EVENTS`] per append, from
/// [`FILL_TASKS`] concurrent tasks sharing the client's connection.
async fn fill_grpc(reader: &Reader, events: u64) -> Result<(), BenchError> {
    let template = Arc::new(Template::new()?);
    let run: u32 = rand::rng().random();
    let remaining = Arc::new(AtomicU64::new(events));
    let tasks: Vec<_> = (0..FILL_TASKS)
        .map(|_| {
            let (reader, template, remaining) = (
                reader.clone(),
                Arc::clone(&template),
                Arc::clone(&remaining),
            );
            tokio::spawn(async move {
                loop {
                    let n = take(&remaining, FILL_BATCH_EVENTS);
                    if n == 0 {
                        return Ok(());
                    }
                    let stream = format!(
                        "grpc-fill-{run:08x}-{}",
                        rand::rng().random_range(0..FILL_STREAMS)
                    );
                    reader.append(&stream, &template, n).await?;
                }
            })
        })
        .collect();
    join(tasks, "a fill task").await
}

/// Waits for every task; the first error wins.
async fn join(
    tasks: Vec<tokio::task::JoinHandle<Result<(), BenchError>>>,
    what: &'static str,
) -> Result<(), BenchError> {
    for task in tasks {
        task.await.map_err(|e| BenchError::Worker {
            what,
            reason: e.to_string(),
        })??;
    }
    Ok(())
}

/// Fills the baseline's store with `events` events of the same shape as [`fill_grpc`]'s, in
/// appends of the same size.
fn fill_engine(
    runtime: &tokio::runtime::Runtime,
    engine: &Engine,
    events: u64,
) -> Result<(), BenchError> {
    let remaining = Arc::new(AtomicU64::new(events));
    let done = Arc::new(AtomicU64::new(0));
    with_progress(
        "bench grpc-replay: filling the baseline",
        events,
        &done,
        || {
            runtime.block_on(async {
                let tasks: Vec<_> = (0..FILL_TASKS)
                    .map(|_| {
                        let (engine, remaining, done) =
                            (engine.clone(), Arc::clone(&remaining), Arc::clone(&done));
                        tokio::spawn(
                            async move { fill_engine_task(&engine, &remaining, &done).await },
                        )
                    })
                    .collect();
                join(tasks, "a fill task").await
            })
        },
    )
}

/// One of [`fill_engine`]'s appenders: appends from the shared budget until it is spent.
async fn fill_engine_task(
    engine: &Engine,
    remaining: &AtomicU64,
    done: &AtomicU64,
) -> Result<(), BenchError> {
    let event_type = EventType::new(EVENT_TYPE)?;
    let data = event_data();
    loop {
        let n = take(remaining, FILL_BATCH_EVENTS);
        if n == 0 {
            return Ok(());
        }
        let stream = StreamName::new(format!(
            "grpc-fill-{}",
            rand::rng().random_range(0..FILL_STREAMS)
        ))?;
        let batch = (0..n)
            .map(|_| NewEvent {
                id: uuid::Uuid::new_v4(),
                event_type: event_type.clone(),
                content_type: ContentType::Json,
                data: data.clone(),
                metadata: Bytes::new(),
            })
            .collect();
        engine
            .append_async(&stream, ExpectedRevision::Any, batch)
            .await?;
        done.fetch_add(n, Ordering::Relaxed);
    }
}
