//! `annals serve`: opens the store and serves the KurrentDB gRPC protocol and the HTTP/JSON API on
//! one port until SIGINT or SIGTERM; then stops accepting, lets requests in flight finish, closes
//! the store (every append in flight is answered and the index flushed) and exits 0.

use std::process::ExitCode;
use std::sync::Arc;

use annals_persistent::Subscriptions;
use annals_projections::{Catalog, Projections};
use annals_relay::Relays;
use annals_server::{Limits, ServerState, TlsFiles};
use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};

use crate::args::ServeArgs;
use crate::effects::WebhookSink;
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
    let _pg = match &args.store {
        Some(url) => Some(runtime.block_on(crate::replica::start(url, &engine))?),
        None => None,
    };
    let limits = Limits {
        connections_max: args.connections_max,
        live_page_interval: std::time::Duration::from_micros(args.live_page_interval_us),
        ..Limits::default()
    };
    // Projections run on their own threads; they start before the listener so a read-your-writes
    // wait never meets a projection that is still being registered.
    let projections = Arc::new(Projections::with_effect_sink(
        engine.clone(),
        Arc::new(WebhookSink::new()?),
    ));
    let (catalog, failed) = Catalog::open(Arc::clone(&projections), &args.data)
        .context("cannot open the projection catalog")?;
    for e in &failed {
        tracing::error!(error = %e, "a stored projection did not start");
    }
    if let Some(file) = &args.projections {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        for applied in catalog
            .apply(&text)
            .with_context(|| format!("projections in {}", file.display()))?
        {
            tracing::info!(?applied, "projection definition applied");
        }
    }
    // Persistent-subscription groups start from their checkpoints before the first client can
    // reach them.
    let persistent = runtime
        .block_on(Subscriptions::open(engine.clone()))
        .context("cannot start the persistent subscriptions")?;
    // Relays start from their checkpoints; the file's definitions are applied over the stored
    // ones.
    let relays = runtime
        .block_on(Relays::open(engine.clone()))
        .context("cannot start the relays")?;
    if let Some(file) = &args.relays {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        for applied in runtime
            .block_on(relays.apply(&text))
            .with_context(|| format!("relays in {}", file.display()))?
        {
            tracing::info!(?applied, "relay definition applied");
        }
    }
    let mut state =
        ServerState::new(engine.clone(), limits).with_persistent(Arc::clone(&persistent));
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
    let catalog = Arc::new(catalog);
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let local = listener.local_addr().context("listener address")?;
        let http = annals_http::HttpState::new(
            state.clone(),
            Some(catalog),
            Some(Arc::clone(&relays)),
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
    // Persistent-subscription groups write their last checkpoints while the store still takes
    // writes; projections stop after their commits in flight. Each resumes from its checkpoint.
    runtime.block_on(persistent.shutdown());
    runtime.block_on(relays.shutdown());
    projections.shutdown();
    // Closing waits for the writer threads, so every append in flight is answered first.
    // A pipeline thread that panicked during the run is reported, and the exit is a failure.
    let closed = engine.close_checked();
    tracing::info!(head = engine.head().0, "store closed");
    closed.context("the store's pipeline failed during the run")?;
    runtime.shutdown_timeout(annals_server::SHUTDOWN_GRACE);
    served?;
    Ok(ExitCode::SUCCESS)
}
