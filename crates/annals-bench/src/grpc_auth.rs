//! `annals bench grpc-append --auth`: what authentication costs the server. The same workload
//! as `bench grpc-append` (concurrent single-event appends, the official `kurrentdb` client,
//! one connection per client) against two running servers, each started for the bench: one
//! without authentication (cleartext) and one with `--auth` over TLS, the clients sending
//! credentials with every call (verified once, then answered from the credential cache).
//!
//! With `rate`, both sides append at the same fixed rate, so their group commits are alike
//! (the CPU per append falls as batches grow, and the side whose clients spend more CPU on TLS
//! would otherwise run slower with smaller batches). The figure is the server process's CPU
//! per append on each side, read from the kernel's
//! per-thread run time (`/proc/PID/task/*/schedstat`, nanoseconds) before and after each round,
//! so the clients' own TLS and the disk's speed do not enter it. The sides alternate in rounds.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::error::BenchError;
use crate::grpc::{GrpcClient, GrpcServer};
use crate::grpc_append::{GrpcAppendConfig, GrpcAppendRpc, connect, grpc_round};
use crate::measure::{latency_histogram, runtime};
use crate::report::{emit, round2};

/// The settings of `bench grpc-append --auth`.
#[derive(Clone, Debug)]
pub struct GrpcAuthConfig {
    /// The server without authentication, and its process id.
    pub plain: (GrpcServer, u32),
    /// The server over TLS without `--auth` (CA file set), and its process id: what TLS alone
    /// costs, so the figures tell it apart from what authentication costs.
    pub tls: (GrpcServer, u32),
    /// The server with `--auth` over TLS (credentials and CA file set), and its process id.
    pub secure: (GrpcServer, u32),
    pub clients: u32,
    /// Events per side in all.
    pub events: u64,
    pub rounds: u32,
    /// Appends per second of all clients together on each side, so both run at the same rate
    /// and so with batches of the same size (CPU per append falls as batches grow); `None`:
    /// as fast as each side goes.
    pub rate: Option<u64>,
    /// CPU per request of the authentication layer alone (a cached credential checked and a
    /// stream's write right decided), measured in this process by the caller: the part of the
    /// difference between the sides that is authentication rather than noise.
    pub auth_check_cpu_us: f64,
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Figures {
    bench: &'static str,
    clients: u32,
    events: u64,
    rounds: u32,
    rate: Option<u64>,
    plain_events_per_s: f64,
    plain_server_cpu_us_per_append: f64,
    plain_p50_us: u64,
    plain_p99_us: u64,
    tls_events_per_s: f64,
    tls_server_cpu_us_per_append: f64,
    auth_events_per_s: f64,
    auth_server_cpu_us_per_append: f64,
    auth_p50_us: u64,
    auth_p99_us: u64,
    /// What authentication and TLS add to the server's CPU per append (against cleartext).
    added_server_cpu_us_per_append: f64,
    /// What authentication alone adds (against TLS without auth).
    auth_only_server_cpu_us_per_append: f64,
    /// The authentication layer's own CPU per request, measured in process.
    auth_check_cpu_us: f64,
}

#[derive(Debug)]
struct Side {
    events: u64,
    elapsed: Duration,
    cpu_ns: u64,
    latency_us: Histogram<u64>,
}

impl Side {
    fn new() -> Self {
        Self {
            events: 0,
            elapsed: Duration::ZERO,
            cpu_ns: 0,
            latency_us: latency_histogram(),
        }
    }

    fn cpu_us_per_append(&self) -> f64 {
        self.cpu_ns as f64 / 1000.0 / self.events.max(1) as f64
    }

    fn events_per_s(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// CPU time the calling thread has run so far, in nanoseconds.
pub fn thread_cpu_ns() -> Result<u64, BenchError> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat")
        .map_err(|e| BenchError::Check(format!("cannot read this thread's schedstat: {e}")))?;
    text.split_whitespace()
        .next()
        .and_then(|f| f.parse::<u64>().ok())
        .ok_or_else(|| BenchError::Check(format!("bad schedstat {text:?}")))
}

/// CPU time all threads of process `pid` have run so far, in nanoseconds.
pub fn process_cpu_ns(pid: u32) -> Result<u64, BenchError> {
    let dir = format!("/proc/{pid}/task");
    let tasks = std::fs::read_dir(&dir)
        .map_err(|e| BenchError::Check(format!("cannot list {dir}: {e}")))?;
    let mut total = 0u64;
    for task in tasks.flatten() {
        // A thread that ended between the listing and the read ran no more.
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        let ns = text
            .split_whitespace()
            .next()
            .and_then(|f| f.parse::<u64>().ok())
            .ok_or_else(|| BenchError::Check(format!("bad schedstat in {dir}: {text:?}")))?;
        total += ns;
    }
    Ok(total)
}

pub(crate) fn run(config: &GrpcAuthConfig) -> Result<(), BenchError> {
    if config.clients == 0 || config.rounds == 0 {
        return Err(BenchError::Options(
            "--clients and --rounds must be at least 1".to_owned(),
        ));
    }
    let load = |server: &GrpcServer| GrpcAppendConfig {
        server: server.clone(),
        clients: config.clients,
        connections: config.clients,
        client: GrpcClient::Kurrentdb,
        rpc: GrpcAppendRpc::Append,
        events: config.events,
        rounds: config.rounds,
        baseline_dir: None,
        json: config.json,
    };
    let (plain_load, tls_load, secure_load) = (
        load(&config.plain.0),
        load(&config.tls.0),
        load(&config.secure.0),
    );
    plain_load.server.check(GrpcClient::Kurrentdb)?;
    let runtime = runtime("the clients")?;
    let plain_clients = runtime.block_on(connect(&plain_load, config.clients))?;
    let tls_clients = runtime.block_on(connect(&tls_load, config.clients))?;
    let secure_clients = runtime.block_on(connect(&secure_load, config.clients))?;
    let pace = config
        .rate
        .filter(|r| *r > 0)
        .map(|r| Duration::from_secs_f64(f64::from(config.clients) / r as f64));
    let mut plain = Side::new();
    let mut tls = Side::new();
    let mut secure = Side::new();
    for round in 0..u64::from(config.rounds) {
        let share = config.events / u64::from(config.rounds)
            + u64::from(round < config.events % u64::from(config.rounds));
        // The order rotates each round, so no side always runs first or last.
        let mut order = [
            (&plain_clients, config.plain.1, &mut plain),
            (&tls_clients, config.tls.1, &mut tls),
            (&secure_clients, config.secure.1, &mut secure),
        ];
        order.rotate_left(usize::try_from(round % 3).unwrap_or(0));
        for (clients, pid, side) in order {
            let cpu = process_cpu_ns(pid)?;
            let started = Instant::now();
            side.events +=
                runtime.block_on(grpc_round(clients, share, pace, &mut side.latency_us))?;
            side.elapsed += started.elapsed();
            side.cpu_ns += process_cpu_ns(pid)?.saturating_sub(cpu);
        }
        tracing::info!(
            "bench grpc-append --auth: round {}/{}: server CPU per append {:.1} µs cleartext, {:.1} µs TLS, {:.1} µs TLS and auth",
            round + 1,
            config.rounds,
            plain.cpu_us_per_append(),
            tls.cpu_us_per_append(),
            secure.cpu_us_per_append(),
        );
    }
    let figures = Figures {
        bench: "grpc-append-auth",
        clients: config.clients,
        events: config.events,
        rounds: config.rounds,
        rate: config.rate,
        plain_events_per_s: round2(plain.events_per_s()),
        plain_server_cpu_us_per_append: round2(plain.cpu_us_per_append()),
        plain_p50_us: plain.latency_us.value_at_quantile(0.5),
        plain_p99_us: plain.latency_us.value_at_quantile(0.99),
        tls_events_per_s: round2(tls.events_per_s()),
        tls_server_cpu_us_per_append: round2(tls.cpu_us_per_append()),
        auth_events_per_s: round2(secure.events_per_s()),
        auth_server_cpu_us_per_append: round2(secure.cpu_us_per_append()),
        auth_p50_us: secure.latency_us.value_at_quantile(0.5),
        auth_p99_us: secure.latency_us.value_at_quantile(0.99),
        added_server_cpu_us_per_append: round2(
            secure.cpu_us_per_append() - plain.cpu_us_per_append(),
        ),
        auth_only_server_cpu_us_per_append: round2(
            secure.cpu_us_per_append() - tls.cpu_us_per_append(),
        ),
        auth_check_cpu_us: (config.auth_check_cpu_us * 1000.0).round() / 1000.0,
    };
    emit(&figures, config.json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_cpu_time_grows_as_it_works() {
        let pid = std::process::id();
        let before = process_cpu_ns(pid).unwrap();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(process_cpu_ns(pid).unwrap() > before);
    }
}
