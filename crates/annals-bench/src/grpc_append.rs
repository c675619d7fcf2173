//! `annals bench grpc-append`: concurrent single-event appends over the KurrentDB gRPC protocol
//! to a running `annals serve`; the baseline is the same workload in this process (as many
//! concurrent tasks calling `Engine::append_async`) on a temporary store with the durability
//! `annals serve` has by default (fsync).
//!
//! The clients are Annals's lean client ([`crate::client`], `--client annals`, the default) or
//! the official Rust `kurrentdb` crate (`--client kurrentdb`, with the `kurrentdb-client`
//! feature). Each client is a task with its own connection by default, as separate client
//! processes would have. Both multiplex: one client keeps one HTTP/2 connection and sends
//! concurrent calls as streams on it, so `--connections N` spreads the clients over N shared
//! connections instead. With `--rpc batch-append` every append is a request message on one
//! `Streams.BatchAppend` call per connection, as the .NET client makes them. Each client appends
//! to a stream of its own (`grpc-bench-<run>-<client>`, expected revision any), so no two clients
//! contend for one stream's revision, and a second run against the same server writes to new
//! streams.
//!
//! The two sides alternate in rounds, so a change of the disk's fsync speed hits both alike.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use annals_core::{ContentType, EventType, ExpectedRevision, NewEvent, StreamName};
use annals_engine::{Durability, Engine};
use bytes::Bytes;
use hdrhistogram::Histogram;
use rand::Rng;
use serde::Serialize;

use crate::client::{BatchAppender, StreamsClient};
use crate::error::{BenchError, Context};
use crate::grpc::{GrpcClient, GrpcServer, Template, lean_client};
use crate::measure::{latency_histogram, merge, micros, ratio, runtime};
use crate::report::{emit, round2};
use crate::server_cpu::server_cpu_seconds;
use crate::workload::{EVENT_TYPE, event_data, random_id, take};
use crate::{official, store};

/// The settings of `bench grpc-append`.
#[derive(Clone, Debug)]
pub struct GrpcAppendConfig {
    /// The running server.
    pub server: GrpcServer,
    /// Concurrent clients, each appending one event at a time to a stream of its own.
    pub clients: u32,
    /// Client connections the clients share (each one HTTP/2 connection); 0: one per client.
    pub connections: u32,
    /// The gRPC client library that loads the server.
    pub client: GrpcClient,
    /// The RPC each append is made with.
    pub rpc: GrpcAppendRpc,
    /// Events to append over gRPC in all (and as many in-process).
    pub events: u64,
    /// gRPC and in-process alternate this many times, since the disk's fsync speed drifts.
    pub rounds: u32,
    /// Where to put the in-process baseline's temporary store; best on the server's disk
    /// (default: the system's temporary directory).
    pub baseline_dir: Option<PathBuf>,
    /// Print the figures as one JSON line.
    pub json: bool,
}

/// The RPC `bench grpc-append` appends with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GrpcAppendRpc {
    /// `Streams.Append`: one call per append, as the Rust, Go, Java, Node and Python clients do.
    Append,
    /// `Streams.BatchAppend`: one long-lived call per connection carrying every append of the
    /// clients on it, as the .NET client does.
    BatchAppend,
}

#[derive(Debug, Serialize)]
struct Figures {
    bench: &'static str,
    server: String,
    client: GrpcClient,
    rpc: GrpcAppendRpc,
    clients: u32,
    connections: u32,
    events: u64,
    rounds: u32,
    elapsed_s: f64,
    events_per_s: f64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
    baseline_events: u64,
    baseline_elapsed_s: f64,
    baseline_events_per_s: f64,
    baseline_p50_us: u64,
    baseline_p99_us: u64,
    baseline_max_us: u64,
    ratio: f64,
    /// The server's CPU time per event over the gRPC rounds, from its `/metrics`
    /// (`null` for a TLS server or one without the metric).
    server_cpu_us_per_event: Option<f64>,
}

/// Events, time and latencies of one side over all rounds.
#[derive(Debug)]
struct Side {
    events: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
    /// The server's CPU seconds over the rounds, when it could be read before and after each.
    server_cpu_s: Option<f64>,
}

impl Side {
    fn new() -> Self {
        Self {
            events: 0,
            elapsed: Duration::ZERO,
            latency_us: latency_histogram(),
            server_cpu_s: Some(0.0),
        }
    }

    fn events_per_s(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

pub(crate) fn run(config: &GrpcAppendConfig) -> Result<(), BenchError> {
    if config.clients == 0 || config.rounds == 0 {
        return Err(BenchError::Options(
            "--clients and --rounds must be at least 1".to_owned(),
        ));
    }
    config.server.check(config.client)?;
    let connections = match config.connections {
        0 => config.clients,
        n => n.min(config.clients),
    };
    let runtime = runtime("the clients")?;
    let clients = runtime.block_on(connect(config, connections))?;
    let baseline_dir = store::baseline_dir(config.baseline_dir.as_deref())?;
    let (engine, _) = store::open(baseline_dir.path(), Durability::Fsync)?;
    let result = measure(&runtime, &clients, &engine, config);
    engine.close();
    let (grpc, baseline) = result?;
    let events_per_s = grpc.events_per_s();
    let baseline_events_per_s = baseline.events_per_s();
    let figures = Figures {
        bench: "grpc-append",
        server: config.server.to_string(),
        client: config.client,
        rpc: config.rpc,
        clients: config.clients,
        connections,
        events: grpc.events,
        rounds: config.rounds,
        elapsed_s: round2(grpc.elapsed.as_secs_f64()),
        events_per_s: round2(events_per_s),
        p50_us: grpc.latency_us.value_at_quantile(0.5),
        p99_us: grpc.latency_us.value_at_quantile(0.99),
        max_us: grpc.latency_us.max(),
        baseline_events: baseline.events,
        baseline_elapsed_s: round2(baseline.elapsed.as_secs_f64()),
        baseline_events_per_s: round2(baseline_events_per_s),
        baseline_p50_us: baseline.latency_us.value_at_quantile(0.5),
        baseline_p99_us: baseline.latency_us.value_at_quantile(0.99),
        baseline_max_us: baseline.latency_us.max(),
        ratio: ratio(events_per_s, baseline_events_per_s),
        server_cpu_us_per_event: grpc
            .server_cpu_s
            .filter(|_| grpc.events > 0)
            .map(|s| round2(s * 1e6 / grpc.events as f64)),
    };
    emit(&figures, config.json)
}

/// One client per bench client, each with the stream it appends to; clients share the
/// `connections` connections round-robin (and with `--rpc batch-append`, the one BatchAppend call
/// of their connection). A `kurrentdb` connection is opened (and the server's features fetched)
/// by a read of a stream that does not exist yet, before any timing; all at once, since that
/// client waits half a second before its first connection attempt.
pub(crate) async fn connect(
    config: &GrpcAppendConfig,
    connections: u32,
) -> Result<Vec<BenchClient>, BenchError> {
    let run: u32 = rand::rng().random();
    let stream = |i: u32| format!("grpc-bench-{run:08x}-{i}");
    let mut shared = Vec::with_capacity(connections as usize);
    for _ in 0..connections {
        shared.push(match config.client {
            GrpcClient::Kurrentdb => Client::Official(official::Client::new(&config.server)?),
            GrpcClient::Annals => Client::Annals(Box::new(lean_client(&config.server).await?)),
        });
    }
    let warm_ups: Vec<_> = (0..connections)
        .zip(&shared)
        .filter_map(|(i, c)| match c {
            Client::Official(k) => Some((stream(i), k.clone())),
            _ => None,
        })
        .map(|(stream, k)| tokio::spawn(async move { k.warm_up(&stream).await }))
        .collect();
    for w in warm_ups {
        w.await.map_err(|e| BenchError::Worker {
            what: "a warm-up task",
            reason: e.to_string(),
        })??;
    }
    if config.rpc == GrpcAppendRpc::BatchAppend {
        for c in &mut shared {
            *c = c.batch_append().await?;
        }
    }
    let mut clients = Vec::with_capacity(config.clients as usize);
    for i in 0..config.clients {
        let client = shared
            .get(i as usize % shared.len())
            .ok_or_else(|| BenchError::Check("no connection".to_owned()))?
            .clone();
        clients.push(BenchClient {
            client,
            stream: stream(i),
        });
    }
    Ok(clients)
}

/// A connection of either client library, or the BatchAppend call opened on one.
#[derive(Clone, Debug)]
enum Client {
    /// Boxed: a client is some 300 bytes, a BatchAppend call a pointer.
    Annals(Box<StreamsClient>),
    AnnalsBatch(BatchAppender),
    Official(official::Client),
    OfficialBatch(official::BatchClient),
}

impl Client {
    /// Opens a BatchAppend call on this connection.
    async fn batch_append(&mut self) -> Result<Self, BenchError> {
        Ok(match self {
            Self::Annals(c) => Self::AnnalsBatch(
                c.batch_appender()
                    .await
                    .context(|| "opening a BatchAppend call".to_owned())?,
            ),
            Self::Official(c) => Self::OfficialBatch(c.batch_appender().await?),
            Self::AnnalsBatch(_) | Self::OfficialBatch(_) => self.clone(),
        })
    }

    /// Appends `template` with the id `id` to `stream`, expected revision any.
    async fn append(
        &mut self,
        stream: &str,
        template: &Template,
        id: uuid::Uuid,
    ) -> Result<(), BenchError> {
        let failed = || format!("append to {stream} failed");
        match self {
            Self::Annals(c) => {
                let mut event = template.annals.clone();
                event.id = id;
                c.append(stream, ExpectedRevision::Any, vec![event])
                    .await
                    .context(failed)?;
            }
            Self::AnnalsBatch(c) => {
                let mut event = template.annals.clone();
                event.id = id;
                c.append(stream, ExpectedRevision::Any, vec![event])
                    .await
                    .context(failed)?;
            }
            Self::Official(c) => c.append(stream, &template.official, 1).await?,
            Self::OfficialBatch(c) => c.append(stream, &template.official, id).await?,
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
pub(crate) struct BenchClient {
    client: Client,
    stream: String,
}

fn measure(
    runtime: &tokio::runtime::Runtime,
    clients: &[BenchClient],
    engine: &Engine,
    config: &GrpcAppendConfig,
) -> Result<(Side, Side), BenchError> {
    let data = event_data();
    let mut grpc = Side::new();
    let mut baseline = Side::new();
    for round in 0..u64::from(config.rounds) {
        let share = config.events / u64::from(config.rounds)
            + u64::from(round < config.events % u64::from(config.rounds));
        let cpu_before = runtime.block_on(server_cpu_seconds(&config.server));
        let started = Instant::now();
        let done = runtime.block_on(grpc_round(clients, share, None, &mut grpc.latency_us))?;
        let grpc_elapsed = started.elapsed();
        let cpu_after = runtime.block_on(server_cpu_seconds(&config.server));
        grpc.server_cpu_s = match (grpc.server_cpu_s, cpu_before, cpu_after) {
            (Some(sum), Some(b), Some(a)) if a >= b => Some(sum + a - b),
            _ => None,
        };
        grpc.events += done;
        grpc.elapsed += grpc_elapsed;
        let started = Instant::now();
        let done = runtime.block_on(engine_round(
            engine,
            clients,
            share,
            &data,
            &mut baseline.latency_us,
        ))?;
        let baseline_elapsed = started.elapsed();
        baseline.events += done;
        baseline.elapsed += baseline_elapsed;
        tracing::info!(
            "bench grpc-append: round {}/{}: gRPC {:.0} events/s, in-process {:.0} events/s",
            round + 1,
            config.rounds,
            share as f64 / grpc_elapsed.as_secs_f64(),
            done as f64 / baseline_elapsed.as_secs_f64(),
        );
    }
    Ok((grpc, baseline))
}

/// Appends `events` one-event appends over gRPC from every client at once; returns the events
/// acknowledged and adds each append's latency to `latency_us`. With `pace`, each client starts
/// an append at most once per `pace` (so all of them together make a fixed rate).
pub(crate) async fn grpc_round(
    clients: &[BenchClient],
    events: u64,
    pace: Option<Duration>,
    latency_us: &mut Histogram<u64>,
) -> Result<u64, BenchError> {
    let remaining = Arc::new(AtomicU64::new(events));
    let acked = Arc::new(AtomicU64::new(0));
    let template = Arc::new(Template::new()?);
    let tasks: Vec<_> = clients
        .iter()
        .map(|c| {
            let (remaining, acked, mut c, template) = (
                Arc::clone(&remaining),
                Arc::clone(&acked),
                c.clone(),
                Arc::clone(&template),
            );
            tokio::spawn(async move {
                let mut hist = latency_histogram();
                let mut ticks = pace.map(|p| {
                    let mut t = tokio::time::interval(p);
                    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    t
                });
                while take(&remaining, 1) == 1 {
                    if let Some(t) = ticks.as_mut() {
                        t.tick().await;
                    }
                    let started = Instant::now();
                    c.client.append(&c.stream, &template, random_id()).await?;
                    hist.saturating_record(micros(started.elapsed()));
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                Ok(hist)
            })
        })
        .collect();
    join_histograms(tasks, latency_us, "a client task").await?;
    Ok(acked.load(Ordering::Relaxed))
}

/// The same workload as [`grpc_round`] through `Engine::append_async`, one task per client,
/// each appending to a stream of its own.
async fn engine_round(
    engine: &Engine,
    clients: &[BenchClient],
    events: u64,
    data: &Bytes,
    latency_us: &mut Histogram<u64>,
) -> Result<u64, BenchError> {
    let event_type = EventType::new(EVENT_TYPE)?;
    let remaining = Arc::new(AtomicU64::new(events));
    let acked = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = clients
        .iter()
        .map(|c| {
            let (remaining, acked) = (Arc::clone(&remaining), Arc::clone(&acked));
            let (engine, event_type, data) = (engine.clone(), event_type.clone(), data.clone());
            let stream = StreamName::new(c.stream.clone());
            tokio::spawn(async move {
                let stream = stream?;
                let mut hist = latency_histogram();
                while take(&remaining, 1) == 1 {
                    let event = NewEvent {
                        id: random_id(),
                        event_type: event_type.clone(),
                        content_type: ContentType::Json,
                        data: data.clone(),
                        metadata: Bytes::new(),
                    };
                    let started = Instant::now();
                    engine
                        .append_async(&stream, ExpectedRevision::Any, vec![event])
                        .await?;
                    hist.saturating_record(micros(started.elapsed()));
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                Ok(hist)
            })
        })
        .collect();
    join_histograms(tasks, latency_us, "an in-process writer task").await?;
    Ok(acked.load(Ordering::Relaxed))
}

/// Waits for every task and merges the latency histograms they return; the first error wins.
async fn join_histograms(
    tasks: Vec<tokio::task::JoinHandle<Result<Histogram<u64>, BenchError>>>,
    latency_us: &mut Histogram<u64>,
    what: &'static str,
) -> Result<(), BenchError> {
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok(Ok(hist)) => merge(latency_us, &hist)?,
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(BenchError::Worker {
                    what,
                    reason: e.to_string(),
                });
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}
