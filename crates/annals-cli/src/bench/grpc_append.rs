//! `annals bench grpc-append`: concurrent single-event appends over the KurrentDB gRPC protocol
//! to a running `annals serve`; the baseline is the same workload in this process (as many
//! concurrent tasks calling `Engine::append_async`) on a temporary store with the durability
//! `annals serve` has by default (fsync).
//!
//! The clients are Annals's lean client (`annals_grpc::client`, `--client annals`, the default)
//! or the official Rust `kurrentdb` crate (`--client kurrentdb`). Each client is a task with its
//! own connection by default, as separate client processes would have. Both multiplex: one
//! client keeps one HTTP/2 connection and sends concurrent calls as streams on it, so
//! `--connections N` spreads the clients over N shared connections instead. With
//! `--rpc batch-append` every append is a request message on one `Streams.BatchAppend` call per
//! connection, as the .NET client makes them. Each client appends to a stream of its own
//! (`grpc-bench-<run>-<client>`, expected revision any), so no two clients contend for one
//! stream's revision, and a second run against the same server writes to new streams.
//!
//! The two sides alternate in rounds, so a change of the disk's fsync speed hits both alike.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use annals_core::{ContentType, EventType, ExpectedRevision, NewEvent, StreamName};
use annals_engine::{Durability, Engine};
use annals_grpc::client::{BatchAppender, ProposedEvent, StreamsClient};
use anyhow::{Context, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use kurrentdb::{
    AppendToStreamOptions, BatchAppendClient, BatchAppendOptions, EventData, ReadStreamOptions,
    StreamState,
};
use rand::Rng;
use serde::Serialize;

use super::report::{emit, round2};
use super::{EVENT_TYPE, event_data, latency_histogram, micros, take};
use crate::args::{BenchGrpcAppendArgs, GrpcAppendRpcArg, GrpcClientArg};
use crate::store;

/// Worker threads of the clients' async runtime, as in `bench append`: one per core of the
/// machine the targets are set for.
const BENCH_RUNTIME_THREADS: usize = 2;

#[derive(Debug, Serialize)]
struct Figures {
    bench: &'static str,
    server: String,
    client: GrpcClientArg,
    rpc: GrpcAppendRpcArg,
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
}

/// Events, time and latencies of one side over all rounds.
#[derive(Debug)]
struct Side {
    events: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
}

impl Side {
    fn new() -> Self {
        Self {
            events: 0,
            elapsed: Duration::ZERO,
            latency_us: latency_histogram(),
        }
    }

    fn events_per_s(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

pub(super) fn run(args: &BenchGrpcAppendArgs) -> anyhow::Result<ExitCode> {
    if args.clients == 0 || args.rounds == 0 {
        bail!("--clients and --rounds must be at least 1");
    }
    let connections = match args.connections {
        0 => args.clients,
        n => n.min(args.clients),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(BENCH_RUNTIME_THREADS)
        .enable_all()
        .build()
        .context("starting the clients' runtime")?;
    let clients = runtime.block_on(connect(
        args.client,
        args.rpc,
        &args.server,
        connections,
        args.clients,
    ))?;
    let baseline_dir = super::baseline_dir(args.baseline_dir.as_ref())?;
    let (engine, _) = store::open(baseline_dir.path(), Durability::Fsync)?;
    let result = measure(&runtime, &clients, &engine, args);
    engine.close();
    let (grpc, baseline) = result?;
    let events_per_s = grpc.events_per_s();
    let baseline_events_per_s = baseline.events_per_s();
    let figures = Figures {
        bench: "grpc-append",
        server: args.server.clone(),
        client: args.client,
        rpc: args.rpc,
        clients: args.clients,
        connections,
        events: grpc.events,
        rounds: args.rounds,
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
        ratio: super::ratio(events_per_s, baseline_events_per_s),
    };
    emit(&figures, args.json)?;
    Ok(ExitCode::SUCCESS)
}

/// One client per bench client, each with the stream it appends to; clients share the
/// `connections` connections round-robin (and with `--rpc batch-append`, the one BatchAppend call
/// of their connection). A `kurrentdb` connection is opened (and the server's features fetched)
/// by a read of a stream that does not exist yet, before any timing; all at once, since that
/// client waits half a second before its first connection attempt.
async fn connect(
    kind: GrpcClientArg,
    rpc: GrpcAppendRpcArg,
    server: &str,
    connections: u32,
    clients: u32,
) -> anyhow::Result<Vec<BenchClient>> {
    let run: u32 = rand::rng().random();
    let stream = |i: u32| format!("grpc-bench-{run:08x}-{i}");
    let mut shared = Vec::with_capacity(connections as usize);
    for _ in 0..connections {
        shared.push(match kind {
            GrpcClientArg::Kurrentdb => {
                Client::Kurrent(super::grpc_client(&super::client_url(server))?)
            }
            GrpcClientArg::Annals => Client::Annals(super::lean_client(server).await?),
        });
    }
    let warm_ups: Vec<_> = (0..connections)
        .zip(&shared)
        .filter_map(|(i, c)| match c {
            Client::Kurrent(k) => Some((k.clone(), stream(i))),
            _ => None,
        })
        .map(|(k, stream)| tokio::spawn(async move { warm_up(&k, &stream).await }))
        .collect();
    for w in warm_ups {
        w.await
            .context("warm-up task failed")?
            .with_context(|| format!("cannot reach the server at {server}"))?;
    }
    if rpc == GrpcAppendRpcArg::BatchAppend {
        for c in &mut shared {
            *c = c
                .batch_append()
                .await
                .context("opening a BatchAppend call")?;
        }
    }
    (0..clients)
        .map(|i| {
            let client = shared
                .get(i as usize % shared.len())
                .context("no connection")?
                .clone();
            Ok(BenchClient {
                client,
                stream: stream(i),
            })
        })
        .collect()
}

/// Reads `stream`, which does not exist yet: opens the connection without writing anything.
async fn warm_up(client: &kurrentdb::Client, stream: &str) -> anyhow::Result<()> {
    let options = ReadStreamOptions::default().max_count(1);
    match client.read_stream(stream, &options).await {
        Ok(mut read) => match read.next().await {
            Ok(_) | Err(kurrentdb::Error::ResourceNotFound) => Ok(()),
            Err(e) => Err(e.into()),
        },
        Err(kurrentdb::Error::ResourceNotFound) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A connection of either client library, or the BatchAppend call opened on one.
#[derive(Clone)]
enum Client {
    Annals(StreamsClient),
    AnnalsBatch(BatchAppender),
    Kurrent(kurrentdb::Client),
    KurrentBatch(Arc<BatchAppendClient>),
}

impl Client {
    /// Opens a BatchAppend call on this connection.
    async fn batch_append(&mut self) -> anyhow::Result<Self> {
        Ok(match self {
            Self::Annals(c) => Self::AnnalsBatch(c.batch_appender().await?),
            Self::Kurrent(c) => Self::KurrentBatch(Arc::new(
                c.batch_append(&BatchAppendOptions::default()).await?,
            )),
            Self::AnnalsBatch(_) | Self::KurrentBatch(_) => self.clone(),
        })
    }

    /// Appends `template` with the id `id` to `stream`, expected revision any.
    async fn append(
        &mut self,
        stream: &str,
        template: &Template,
        id: uuid::Uuid,
    ) -> anyhow::Result<()> {
        match self {
            Self::Annals(c) => {
                let mut event = template.annals.clone();
                event.id = id;
                c.append(stream, ExpectedRevision::Any, vec![event]).await?;
            }
            Self::AnnalsBatch(c) => {
                let mut event = template.annals.clone();
                event.id = id;
                c.append(stream, ExpectedRevision::Any, vec![event]).await?;
            }
            Self::Kurrent(c) => {
                let event = template.kurrent.clone().id(id);
                c.append_to_stream(stream, &AppendToStreamOptions::default(), event)
                    .await?;
            }
            Self::KurrentBatch(c) => {
                let event = template.kurrent.clone().id(id);
                c.append_to_stream(stream, StreamState::Any, vec![event])
                    .await?;
            }
        }
        Ok(())
    }
}

/// The bench's event in each library's form, built once: `EventData::json` would serialise the
/// data again for every append.
#[derive(Clone)]
struct Template {
    annals: ProposedEvent,
    kurrent: EventData,
}

impl Template {
    fn new(data: &Bytes) -> anyhow::Result<Self> {
        let json: serde_json::Value = serde_json::from_slice(data)?;
        Ok(Self {
            annals: ProposedEvent {
                id: uuid::Uuid::nil(),
                event_type: EVENT_TYPE.to_owned(),
                json: true,
                data: data.clone(),
                metadata: Bytes::new(),
            },
            kurrent: EventData::json(EVENT_TYPE, &json)?,
        })
    }
}

#[derive(Clone)]
struct BenchClient {
    client: Client,
    stream: String,
}

impl std::fmt::Debug for BenchClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BenchClient")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

fn measure(
    runtime: &tokio::runtime::Runtime,
    clients: &[BenchClient],
    engine: &Engine,
    args: &BenchGrpcAppendArgs,
) -> anyhow::Result<(Side, Side)> {
    let data = event_data();
    let mut grpc = Side::new();
    let mut baseline = Side::new();
    for round in 0..u64::from(args.rounds) {
        let share = args.events / u64::from(args.rounds)
            + u64::from(round < args.events % u64::from(args.rounds));
        let started = Instant::now();
        let done = runtime.block_on(grpc_round(clients, share, &data, &mut grpc.latency_us))?;
        let grpc_elapsed = started.elapsed();
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
        eprintln!(
            "bench grpc-append: round {}/{}: gRPC {:.0} events/s, in-process {:.0} events/s",
            round + 1,
            args.rounds,
            share as f64 / grpc_elapsed.as_secs_f64(),
            done as f64 / baseline_elapsed.as_secs_f64(),
        );
    }
    Ok((grpc, baseline))
}

/// Appends `events` one-event appends over gRPC from every client at once; returns the events
/// acknowledged and adds each append's latency to `latency_us`.
async fn grpc_round(
    clients: &[BenchClient],
    events: u64,
    data: &Bytes,
    latency_us: &mut Histogram<u64>,
) -> anyhow::Result<u64> {
    let remaining = Arc::new(AtomicU64::new(events));
    let acked = Arc::new(AtomicU64::new(0));
    let template = Arc::new(Template::new(data)?);
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
                while take(&remaining, 1) == 1 {
                    let started = Instant::now();
                    c.client
                        .append(&c.stream, &template, random_id())
                        .await
                        .with_context(|| format!("append to {} failed", c.stream))?;
                    hist.saturating_record(micros(started.elapsed()));
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(hist)
            })
        })
        .collect();
    join_histograms(tasks, latency_us, "client").await?;
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
) -> anyhow::Result<u64> {
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
                anyhow::Ok(hist)
            })
        })
        .collect();
    join_histograms(tasks, latency_us, "in-process writer").await?;
    Ok(acked.load(Ordering::Relaxed))
}

/// Waits for every task and merges the latency histograms they return.
async fn join_histograms(
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<Histogram<u64>>>>,
    latency_us: &mut Histogram<u64>,
    what: &str,
) -> anyhow::Result<()> {
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok(Ok(hist)) => latency_us
                .add(&hist)
                .context("merging latency histograms")?,
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(anyhow::anyhow!("{what} task failed: {e}"));
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// A v4 id from the thread's fast generator: a getrandom syscall per event would load the cores
/// the server uses.
fn random_id() -> uuid::Uuid {
    uuid::Builder::from_random_bytes(rand::rng().random()).into_uuid()
}
