//! `annals serve`: opens the store and holds it until SIGINT or SIGTERM, then closes it cleanly.
//! The network API will be served from here; for now the process only owns the store (and its
//! lock), so nothing else can write it.

use std::process::ExitCode;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};

use crate::args::ServeArgs;
use crate::store;

pub(crate) fn run(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let (engine, _report) = store::open(&args.data, args.durability.into())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let signal_name = runtime.block_on(shutdown_signal())?;
    tracing::info!(signal = signal_name, "shutting down");
    // Closing waits for the writer threads, so every append in flight is answered first.
    engine.close();
    tracing::info!(head = engine.head().0, "store closed");
    Ok(ExitCode::SUCCESS)
}

/// Waits for SIGINT or SIGTERM; returns which came.
async fn shutdown_signal() -> anyhow::Result<&'static str> {
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    tracing::info!("serving; stop with SIGINT or SIGTERM");
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    Ok(name)
}
