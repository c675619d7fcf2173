//! `bench connections`: what idle established connections cost a server. It opens `N` HTTP/2
//! connections (cleartext, prior knowledge, as gRPC clients connect), makes one request on each
//! (`GET /health`) so every one is fully established, holds them idle, and reads the server's
//! resident memory, threads and open files from its `/metrics` before and after. The bench
//! raises its own soft open-file limit as far as the hard limit allows.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;

use crate::error::{BenchError, Context, ensure};
use crate::grpc::GrpcServer;
use crate::measure::runtime;
use crate::report::{emit, round2};
use crate::server_cpu::server_metric;

/// Connections being opened at once.
const CONNECTIONS_OPENING_MAX: usize = 128;
/// How long the idle connections are held before the server is measured.
const CONNECTIONS_SETTLE: Duration = Duration::from_secs(2);

/// Settings of `bench connections`.
#[derive(Clone, Debug)]
pub struct ConnectionsConfig {
    /// The running server (cleartext).
    pub server: GrpcServer,
    /// Idle connections to hold.
    pub connections: u32,
    /// Print the figures as one JSON line.
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Figures {
    bench: &'static str,
    server: String,
    connections: u32,
    open_seconds: f64,
    rss_mb_before: Option<f64>,
    rss_mb_with_connections: Option<f64>,
    /// The server's resident memory beyond the figure before, per connection.
    rss_kb_per_connection: Option<f64>,
    threads_with_connections: Option<f64>,
    open_fds_with_connections: Option<f64>,
}

/// One idle connection: its request handle and the task driving it.
struct Idle {
    _sender: hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Idle {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

pub(crate) fn run(config: &ConnectionsConfig) -> Result<(), BenchError> {
    ensure(config.connections > 0, || {
        "--connections must be at least 1".to_owned()
    })?;
    ensure(!config.server.tls, || {
        "bench connections opens cleartext HTTP/2 connections: give a cleartext server".to_owned()
    })?;
    let runtime = runtime("the connections")?;
    let figures = runtime.block_on(async {
        let mb = |v: Option<f64>| v.map(|b| round2(b / (1024.0 * 1024.0)));
        let rss_before = server_metric(&config.server, "process_resident_memory_bytes").await;
        let started = Instant::now();
        let authority = config.server.authority.clone();
        let opened: Vec<Result<Idle, BenchError>> = futures::stream::iter(0..config.connections)
            .map(|_| open(authority.clone()))
            .buffer_unordered(CONNECTIONS_OPENING_MAX)
            .collect()
            .await;
        let open_seconds = started.elapsed().as_secs_f64();
        let idle = opened.into_iter().collect::<Result<Vec<_>, _>>()?;
        tokio::time::sleep(CONNECTIONS_SETTLE).await;
        let rss_with = server_metric(&config.server, "process_resident_memory_bytes").await;
        let threads = server_metric(&config.server, "process_threads").await;
        let fds = server_metric(&config.server, "process_open_fds").await;
        let per_connection = match (rss_before, rss_with) {
            (Some(b), Some(w)) => Some(round2((w - b).max(0.0) / 1024.0 / idle.len() as f64)),
            _ => None,
        };
        drop(idle);
        Ok::<_, BenchError>(Figures {
            bench: "connections",
            server: config.server.to_string(),
            connections: config.connections,
            open_seconds: round2(open_seconds),
            rss_mb_before: mb(rss_before),
            rss_mb_with_connections: mb(rss_with),
            rss_kb_per_connection: per_connection,
            threads_with_connections: threads,
            open_fds_with_connections: fds,
        })
    })?;
    emit(&figures, config.json)
}

/// Opens one HTTP/2 connection and makes one request on it.
async fn open(authority: String) -> Result<Idle, BenchError> {
    let tcp = tokio::net::TcpStream::connect(&authority)
        .await
        .context(|| format!("cannot connect to {authority}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .map_err(|e| BenchError::Check(format!("HTTP/2 handshake with {authority}: {e}")))?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = hyper::Request::get(format!("http://{authority}/health"))
        .body(Empty::<Bytes>::new())
        .map_err(|e| BenchError::Check(format!("a request: {e}")))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| BenchError::Check(format!("GET /health over HTTP/2: {e}")))?;
    ensure(response.status().is_success(), || {
        format!("GET /health answered {}", response.status())
    })?;
    Ok(Idle {
        _sender: sender,
        driver,
    })
}
