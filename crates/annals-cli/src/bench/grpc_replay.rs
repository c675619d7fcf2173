//! `annals bench grpc-replay`: one Rust client reads `$all` from the start over the KurrentDB
//! gRPC protocol from a running `annals serve`; the baseline is an in-process `Engine::read_all`
//! paging over a temporary store filled with as many events of the same shape. The client that
//! reads is Annals's lean client (`annals_grpc::client`, `--client annals`, the default) or the
//! official `kurrentdb` crate (`--client kurrentdb`); the fill always uses the latter.
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

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use annals_core::{ContentType, Direction, EventType, ExpectedRevision, NewEvent, Position};
use annals_core::{StreamName, limits::APPEND_EVENTS_MAX};
use annals_engine::{Durability, Engine};
use annals_grpc::client::StreamsClient;
use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use kurrentdb::{AppendToStreamOptions, Client, EventData, ReadAllOptions, StreamPosition};
use rand::Rng;
use serde::Serialize;

use super::report::{emit, round2};
use super::{EVENT_TYPE, event_data, take, with_progress};
use crate::args::{BenchGrpcReplayArgs, GrpcClientArg};
use crate::store;

/// Events per append when filling either store: large appends make the fill quick.
const FILL_BATCH_EVENTS: u64 = 1_000;
/// Concurrent appends while filling, over the one client's connection.
const FILL_TASKS: usize = 4;
/// Streams the fill spreads its appends over.
const FILL_STREAMS: u32 = 1_000;
/// Events asked for per `Engine::read_all` call by the baseline, as in `bench replay`.
const BASELINE_PAGE_EVENTS: usize = 4_096;
/// Worker threads of the client's async runtime.
const BENCH_RUNTIME_THREADS: usize = 2;

const _: () = assert!(FILL_BATCH_EVENTS as usize <= APPEND_EVENTS_MAX);

#[derive(Debug, Serialize)]
struct Figures {
    bench: &'static str,
    server: String,
    client: GrpcClientArg,
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
}

pub(super) fn run(args: &BenchGrpcReplayArgs) -> anyhow::Result<ExitCode> {
    if args.events == 0 || args.rounds == 0 {
        bail!("--events and --rounds must be at least 1");
    }
    let url = super::client_url(&args.server);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(BENCH_RUNTIME_THREADS)
        .enable_all()
        .build()
        .context("starting the client's runtime")?;
    let client = runtime.block_on(async { super::grpc_client(&url) })?;
    let head = runtime
        .block_on(last_position(&client))
        .with_context(|| format!("cannot read $all from {url}"))?;
    let need = args.events.saturating_sub(head);
    let mut fill_events_per_s = 0.0;
    if need > 0 {
        eprintln!("bench grpc-replay: the server holds {head} events; appending {need}");
        let started = Instant::now();
        runtime.block_on(fill_grpc(&client, need))?;
        fill_events_per_s = need as f64 / started.elapsed().as_secs_f64();
    }
    let baseline_dir = super::baseline_dir(args.baseline_dir.as_ref())?;
    let (engine, _) = store::open(baseline_dir.path(), Durability::None)?;
    let result = fill_engine(&runtime, &engine, args.events).and_then(|()| {
        let reader = match args.client {
            GrpcClientArg::Kurrentdb => Reader::Kurrent(client.clone()),
            GrpcClientArg::Annals => {
                Reader::Annals(runtime.block_on(super::lean_client(&args.server))?)
            }
        };
        measure(&runtime, &reader, &engine, args)
    });
    engine.close();
    let (grpc, baseline) = result?;
    let events_per_s = grpc.events as f64 / grpc.elapsed.as_secs_f64();
    let baseline_events_per_s = baseline.events as f64 / baseline.elapsed.as_secs_f64();
    let figures = Figures {
        bench: "grpc-replay",
        server: args.server.clone(),
        client: args.client,
        events: args.events,
        rounds: args.rounds,
        filled: need,
        fill_events_per_s: round2(fill_events_per_s),
        elapsed_s: round2(grpc.elapsed.as_secs_f64()),
        events_per_s: round2(events_per_s),
        mb_per_s: round2(grpc.data_bytes as f64 / (1024.0 * 1024.0) / grpc.elapsed.as_secs_f64()),
        baseline_elapsed_s: round2(baseline.elapsed.as_secs_f64()),
        baseline_events_per_s: round2(baseline_events_per_s),
        ratio: super::ratio(events_per_s, baseline_events_per_s),
    };
    emit(&figures, args.json)?;
    Ok(ExitCode::SUCCESS)
}

/// Events, data bytes and time of one side over all rounds.
#[derive(Debug, Default)]
struct Side {
    events: u64,
    data_bytes: u64,
    elapsed: Duration,
}

/// The client that reads, of either library.
#[derive(Clone)]
enum Reader {
    Annals(StreamsClient),
    Kurrent(Client),
}

fn measure(
    runtime: &tokio::runtime::Runtime,
    reader: &Reader,
    engine: &Engine,
    args: &BenchGrpcReplayArgs,
) -> anyhow::Result<(Side, Side)> {
    let (mut grpc, mut baseline) = (Side::default(), Side::default());
    for round in 0..args.rounds {
        let started = Instant::now();
        let (events, bytes) = match reader {
            Reader::Kurrent(client) => runtime.block_on(read_grpc(client, args.events))?,
            Reader::Annals(client) => {
                runtime.block_on(read_grpc_lean(&mut client.clone(), args.events))?
            }
        };
        let grpc_elapsed = started.elapsed();
        ensure!(
            events == args.events,
            "read {events} events of $all over gRPC, not {}: some of the server's events are hidden (deleted streams?); use a fresh server",
            args.events
        );
        grpc.events += events;
        grpc.data_bytes += bytes;
        grpc.elapsed += grpc_elapsed;
        let started = Instant::now();
        let (events, bytes) = read_engine(engine, args.events)?;
        let baseline_elapsed = started.elapsed();
        ensure!(events == args.events, "the baseline read {events} events");
        baseline.events += events;
        baseline.data_bytes += bytes;
        baseline.elapsed += baseline_elapsed;
        eprintln!(
            "bench grpc-replay: round {}/{}: gRPC {:.0} events/s, in-process {:.0} events/s",
            round + 1,
            args.rounds,
            args.events as f64 / grpc_elapsed.as_secs_f64(),
            args.events as f64 / baseline_elapsed.as_secs_f64(),
        );
    }
    Ok((grpc, baseline))
}

/// The commit position of the last event in `$all`, 0 if there is none.
async fn last_position(client: &Client) -> anyhow::Result<u64> {
    let options = ReadAllOptions::default()
        .backwards()
        .position(StreamPosition::End)
        .max_count(1);
    let mut read = client.read_all(&options).await?;
    Ok(read
        .next()
        .await?
        .map_or(0, |e| e.get_original_event().position.commit))
}

/// Reads the first `events` events of `$all` over gRPC; returns the events read and the sum of
/// their data sizes.
async fn read_grpc(client: &Client, events: u64) -> anyhow::Result<(u64, u64)> {
    let (mut read, mut bytes) = (0u64, 0u64);
    let mut last: Option<u64> = None;
    while read < events {
        let position = match last {
            None => StreamPosition::Start,
            Some(p) => StreamPosition::Position(kurrentdb::Position {
                commit: p,
                prepare: p,
            }),
        };
        // One more than needed after the first read: it starts with the last event seen.
        let count = events - read + u64::from(last.is_some());
        let options = ReadAllOptions::default()
            .forwards()
            .position(position)
            .max_count(usize::try_from(count).unwrap_or(usize::MAX));
        let mut stream = client.read_all(&options).await?;
        let mut got = 0u64;
        while let Some(e) = stream.next().await? {
            let e = e.get_original_event();
            if last.is_some_and(|l| e.position.commit <= l) {
                continue;
            }
            last = Some(e.position.commit);
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

/// [`read_grpc`] with Annals's lean client.
async fn read_grpc_lean(client: &mut StreamsClient, events: u64) -> anyhow::Result<(u64, u64)> {
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
fn read_engine(engine: &Engine, events: u64) -> anyhow::Result<(u64, u64)> {
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
async fn fill_grpc(client: &Client, events: u64) -> anyhow::Result<()> {
    let json: serde_json::Value = serde_json::from_slice(&event_data())?;
    let template = EventData::json(EVENT_TYPE, &json)?;
    let run: u32 = rand::rng().random();
    let remaining = Arc::new(AtomicU64::new(events));
    let tasks: Vec<_> = (0..FILL_TASKS)
        .map(|_| {
            let (client, template, remaining) =
                (client.clone(), template.clone(), Arc::clone(&remaining));
            tokio::spawn(async move {
                let options = AppendToStreamOptions::default();
                loop {
                    let n = take(&remaining, FILL_BATCH_EVENTS);
                    if n == 0 {
                        return anyhow::Ok(());
                    }
                    let stream = format!(
                        "grpc-fill-{run:08x}-{}",
                        rand::rng().random_range(0..FILL_STREAMS)
                    );
                    let batch: Vec<EventData> = (0..n)
                        .map(|_| template.clone().id(uuid::Uuid::new_v4()))
                        .collect();
                    client
                        .append_to_stream(stream.as_str(), &options, batch)
                        .await
                        .with_context(|| format!("filling: append to {stream} failed"))?;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.context("fill task failed")??;
    }
    Ok(())
}

/// Fills the baseline's store with `events` events of the same shape as [`fill_grpc`]'s, in
/// appends of the same size.
fn fill_engine(
    runtime: &tokio::runtime::Runtime,
    engine: &Engine,
    events: u64,
) -> anyhow::Result<()> {
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
                for task in tasks {
                    task.await.context("fill task failed")??;
                }
                anyhow::Ok(())
            })
        },
    )
}

/// One of [`fill_engine`]'s appenders: appends from the shared budget until it is spent.
async fn fill_engine_task(
    engine: &Engine,
    remaining: &AtomicU64,
    done: &AtomicU64,
) -> anyhow::Result<()> {
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
