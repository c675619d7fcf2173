//! `annals serve`: opens the store and serves the KurrentDB gRPC protocol and the HTTP/JSON API on
//! one port until SIGINT or SIGTERM; then stops accepting, lets requests in flight finish, closes
//! the store (every append in flight is answered and the index flushed) and exits 0.

use std::process::ExitCode;
use std::sync::Arc;

use annals_server::{Limits, ServerState, TlsFiles};
use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};

use crate::args::ServeArgs;
use crate::jobs::{self, JobsConfig, Slots};
use crate::store;

/// Unknown paths: UNIMPLEMENTED for gRPC requests (clients expect it), a JSON 404 otherwise.
async fn fallback(req: axum::extract::Request) -> axum::response::Response {
    use axum::response::IntoResponse;
    let grpc = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        annals_grpc::unimplemented_fallback(req).await
    } else {
        annals_http::not_found(req.uri().clone())
            .await
            .into_response()
    }
}

/// File descriptors kept beyond one per connection: the store's files, the index, projection
/// databases, broker connections, listeners.
const FD_RESERVE: u64 = 1_024;

/// Raises the soft limit on open files towards the hard one, so `connections` connections and
/// the store's own files fit; says so when they cannot.
pub(crate) fn raise_fd_limit(connections: usize) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let want = u64::try_from(connections)
        .unwrap_or(u64::MAX)
        .saturating_add(FD_RESERVE);
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current >= want {
        return;
    }
    let target = limit.maximum.map_or(want, |max| max.min(want));
    let raised = rustix::process::Rlimit {
        current: Some(target),
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) if target >= want => {
            tracing::info!(from = current, to = target, "raised the open-file limit");
        }
        Ok(()) => tracing::warn!(
            limit = target,
            connections,
            "the open-file limit's hard maximum is below what --connections-max needs; raise it (ulimit -Hn) or lower --connections-max"
        ),
        Err(e) => tracing::warn!(error = %e, current, "cannot raise the open-file limit"),
    }
}

/// Worker threads of the server's async runtime.
const SERVER_RUNTIME_THREADS: usize = 2;

pub(crate) fn run(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    if args.auth && args.tls_cert.is_none() && !args.insecure_allow_plaintext_auth {
        anyhow::bail!(
            "--auth needs TLS (--tls-cert and --tls-key), or --insecure-allow-plaintext-auth \
             to send passwords in clear (loopback tests only)"
        );
    }
    raise_fd_limit(args.connections_max);
    let (engine, _report) = store::open(&args.data, args.durability.into())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(SERVER_RUNTIME_THREADS)
        .thread_name("annals-server")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // With a store in PostgreSQL, the directory is its replica before anything appends.
    let replica = match &args.store {
        Some(url) => Some(runtime.block_on(crate::replica::start(url, &engine))?),
        None => None,
    };
    let limits = Limits {
        connections_max: args.connections_max,
        live_page_interval: std::time::Duration::from_micros(args.live_page_interval_us),
        ..Limits::default()
    };
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(args.listen))
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr().context("listener address")?;
    let config = JobsConfig {
        data: args.data.clone(),
        projections: args.projections.clone(),
        relays: args.relays.clone(),
    };
    let slots = Slots::default();
    // A single node runs its jobs before it serves; one of several runs them while it holds
    // the jobs lease.
    let (here, keeper, stop_jobs) = match (&replica, &args.store) {
        (Some((store, terms)), Some(url)) => {
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let holder = args.advertise.clone().unwrap_or_else(|| local.to_string());
            let keeper = runtime.spawn(jobs::keep(
                store.clone(),
                url.clone(),
                Arc::clone(terms),
                engine.clone(),
                config,
                slots.clone(),
                holder,
                stopped,
            ));
            (None, Some(keeper), Some(stop))
        }
        _ => (
            Some(runtime.block_on(jobs::run_here(&engine, &config, &slots))?),
            None,
            None,
        ),
    };
    let mut state =
        ServerState::new(engine.clone(), limits).with_persistent_slot(slots.persistent.clone());
    state.metrics_open = args.metrics_open;
    if args.auth {
        let auth = runtime
            .block_on(annals_server::Auth::open(
                engine.clone(),
                args.admin_password.clone(),
            ))
            .context("cannot start authentication")?;
        state = state.with_auth(auth);
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    let served = runtime.block_on(async {
        let http = annals_http::HttpState::with_slots(
            state.clone(),
            slots.projections.clone(),
            slots.relays.clone(),
        );
        let mut router =
            annals_grpc::routes(state.clone()).merge(annals_http::routes(http.clone()));
        if !args.no_ui {
            router = router.merge(annals_ui::router(http));
        }
        let router = router.fallback(fallback);
        // Handlers first: the address line tells scripts and tests the server is up, and a
        // SIGTERM that follows it at once must shut down cleanly, not kill the process.
        let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
        tracing::info!(
            address = %local,
            tls = tls.is_some(),
            auth = args.auth,
            ui = !args.no_ui,
            "serving gRPC (KurrentDB protocol) and HTTP; stop with SIGINT or SIGTERM"
        );
        if !args.auth {
            tracing::warn!(
                "authentication is off: anyone who reaches this port may read, write and \
                 delete every stream and run every admin command (start with --auth to require users)"
            );
        }
        let shutdown = async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!(signal = name, "shutting down");
        };
        annals_server::serve(listener, router, tls, state, shutdown)
            .await
            .context("serving failed")
    });
    // The jobs stop while the store still takes writes; each resumes from its checkpoint (on
    // another node, if one takes the lease).
    if let Some(jobs) = here {
        runtime.block_on(jobs::shutdown(jobs));
    }
    if let (Some(stop), Some(keeper)) = (stop_jobs, keeper) {
        stop.send_replace(true);
        if let Err(e) = runtime.block_on(keeper) {
            tracing::error!(error = %e, "the jobs' task failed");
        }
    }
    // Closing waits for the writer threads, so every append in flight is answered first.
    // A pipeline thread that panicked during the run is reported, and the exit is a failure.
    let closed = engine.close_checked();
    tracing::info!(head = engine.head().0, "store closed");
    closed.context("the store's pipeline failed during the run")?;
    runtime.shutdown_timeout(annals_server::SHUTDOWN_GRACE);
    served?;
    Ok(ExitCode::SUCCESS)
}
