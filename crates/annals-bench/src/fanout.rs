//! `bench fanout`: what live subscribers cost a server and its writers. Writers append single
//! events over gRPC (the lean client) in two phases: without subscribers, then with `N` light
//! subscribers of this bench following `$all` live, each on a connection of its own and counting
//! the events it is sent: over server-sent events (`GET /all/live`, HTTP/1.1) or a gRPC
//! subscription (`Streams.Read`, HTTP/2), as `--via` says. It reports appends a
//! second in both phases and their ratio, and the server's CPU (from its `/metrics`) per append
//! without subscribers and per event delivered to a subscriber.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{BenchError, Context, ensure};
use crate::grpc::{GrpcClient, GrpcServer, lean_client};
use crate::grpc_append::{GrpcAppendConfig, GrpcAppendRpc, connect, grpc_round};
use crate::measure::{latency_histogram, ratio, runtime};
use crate::report::{emit, round2};
use crate::server_cpu::server_cpu_seconds;
use crate::status_feed::{get, http1, next_frame};

/// How long the subscribers may take to receive every event after the writers finish.
const FANOUT_DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Settings of `bench fanout`.
#[derive(Clone, Debug)]
pub struct FanoutConfig {
    /// The running server (cleartext).
    pub server: GrpcServer,
    /// Live subscribers on `$all` in the second phase.
    pub subscribers: u32,
    /// How they follow it.
    pub via: FanoutVia,
    /// Concurrent writers, each appending one event at a time.
    pub writers: u32,
    /// Events appended in each phase.
    pub events: u64,
    /// Print the figures as one JSON line.
    pub json: bool,
}

/// How the subscribers of `bench fanout` follow `$all`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FanoutVia {
    /// Server-sent events (`GET /all/live`), one HTTP/1.1 connection each.
    Sse,
    /// A gRPC subscription (`Streams.Read`), one HTTP/2 connection each.
    Grpc,
}

#[derive(Debug, Serialize)]
struct Figures {
    bench: &'static str,
    server: String,
    subscribers: u32,
    via: FanoutVia,
    writers: u32,
    events: u64,
    appends_per_s_alone: f64,
    appends_per_s_with_subscribers: f64,
    /// Appends a second with subscribers against without (target: at least 0.5).
    ratio: f64,
    p99_us_alone: u64,
    p99_us_with_subscribers: u64,
    /// Events the subscribers received in all (`subscribers × events` when none fell behind).
    delivered: u64,
    server_cpu_us_per_append: Option<f64>,
    /// The server's CPU beyond the phase without subscribers, per event delivered.
    server_cpu_us_per_delivered_event: Option<f64>,
}

pub(crate) fn run(config: &FanoutConfig) -> Result<(), BenchError> {
    ensure(config.writers > 0 && config.events > 0, || {
        "--writers and --events must be at least 1".to_owned()
    })?;
    ensure(!config.server.tls, || {
        "bench fanout subscribes over cleartext HTTP/1.1: give a cleartext server".to_owned()
    })?;
    let runtime = runtime("the writers and subscribers")?;
    let append = GrpcAppendConfig {
        server: config.server.clone(),
        clients: config.writers,
        connections: 0,
        client: GrpcClient::Annals,
        rpc: GrpcAppendRpc::Append,
        events: config.events,
        rounds: 1,
        baseline_dir: None,
        json: false,
    };
    let figures = runtime.block_on(async {
        let writers = connect(&append, config.writers).await?;
        // Alone.
        let mut alone_latency = latency_histogram();
        let cpu_before = server_cpu_seconds(&config.server).await;
        let started = Instant::now();
        let alone = grpc_round(&writers, config.events, None, &mut alone_latency).await?;
        let alone_elapsed = started.elapsed();
        let cpu_alone = cpu_delta(cpu_before, server_cpu_seconds(&config.server).await);
        // With subscribers, from the head on.
        let received = Arc::new(AtomicU64::new(0));
        let mut subscribers = Vec::new();
        for _ in 0..config.subscribers {
            let received = Arc::clone(&received);
            subscribers.push(match config.via {
                FanoutVia::Sse => {
                    tokio::spawn(subscribe_sse(config.server.authority.clone(), received))
                }
                FanoutVia::Grpc => tokio::spawn(subscribe_grpc(config.server.clone(), received)),
            });
        }
        // Every subscriber connected and following before the writers start.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut with_latency = latency_histogram();
        let cpu_before = server_cpu_seconds(&config.server).await;
        let started = Instant::now();
        let with = grpc_round(&writers, config.events, None, &mut with_latency).await?;
        let with_elapsed = started.elapsed();
        let want = u64::from(config.subscribers) * with;
        let drain = Instant::now();
        while received.load(Ordering::Relaxed) < want && drain.elapsed() < FANOUT_DRAIN_TIMEOUT {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let cpu_with = cpu_delta(cpu_before, server_cpu_seconds(&config.server).await);
        for s in &subscribers {
            s.abort();
        }
        let delivered = received.load(Ordering::Relaxed);
        let alone_rate = alone as f64 / alone_elapsed.as_secs_f64().max(1e-9);
        let with_rate = with as f64 / with_elapsed.as_secs_f64().max(1e-9);
        Ok::<_, BenchError>(Figures {
            bench: "fanout",
            server: config.server.to_string(),
            subscribers: config.subscribers,
            via: config.via,
            writers: config.writers,
            events: config.events,
            appends_per_s_alone: round2(alone_rate),
            appends_per_s_with_subscribers: round2(with_rate),
            ratio: ratio(with_rate, alone_rate),
            p99_us_alone: alone_latency.value_at_quantile(0.99),
            p99_us_with_subscribers: with_latency.value_at_quantile(0.99),
            delivered,
            server_cpu_us_per_append: cpu_alone
                .filter(|_| alone > 0)
                .map(|s| round2(s * 1e6 / alone as f64)),
            server_cpu_us_per_delivered_event: match (cpu_alone, cpu_with) {
                (Some(a), Some(w)) if delivered > 0 && alone > 0 => {
                    let extra = w - a * with as f64 / alone as f64;
                    Some(round2(extra.max(0.0) * 1e6 / delivered as f64))
                }
                _ => None,
            },
        })
    })?;
    emit(&figures, config.json)
}

fn cpu_delta(before: Option<f64>, after: Option<f64>) -> Option<f64> {
    match (before, after) {
        (Some(b), Some(a)) if a >= b => Some(a - b),
        _ => None,
    }
}

/// One light subscriber: follows `$all` from its end over SSE and counts the events sent (each
/// a `data:` line; checkpoints and keep-alives are not events).
async fn subscribe_sse(authority: String, received: Arc<AtomicU64>) -> Result<(), BenchError> {
    let (mut sender, driver) = http1(&authority).await?;
    let mut body = get(&mut sender, &authority, "/all/live?eventNames=false").await?;
    // The first bytes of the current line, and whether the current message has an `event:`
    // line (a checkpoint or an error, not an event).
    let mut head = Vec::<u8>::with_capacity(6);
    let mut named = false;
    while let Some(frame) = next_frame(&mut body, "the live feed").await? {
        let Ok(data) = frame.into_data() else {
            continue;
        };
        for &b in data.iter() {
            if b != b'\n' {
                if head.len() < 6 {
                    head.push(b);
                }
                continue;
            }
            if head.is_empty() {
                named = false;
            } else if head.starts_with(b"event:") {
                named = true;
            } else if head.starts_with(b"data:") && !named {
                received.fetch_add(1, Ordering::Relaxed);
            }
            head.clear();
        }
    }
    driver.abort();
    Ok(())
}

/// One light subscriber over gRPC: a `Streams.Read` subscription to `$all` from its end, on a
/// connection of its own, counting the events it is sent.
async fn subscribe_grpc(server: GrpcServer, received: Arc<AtomicU64>) -> Result<(), BenchError> {
    let mut client = lean_client(&server).await?;
    let mut sub = client
        .subscribe_all_from_end()
        .await
        .context(|| "cannot subscribe to $all over gRPC".to_owned())?;
    while sub
        .next()
        .await
        .context(|| "the gRPC subscription failed".to_owned())?
        .is_some()
    {
        received.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}
