//! A server run inside the bench's own process, as `annals serve` runs one (the store with fsync
//! durability, persistent subscriptions, the gRPC API) on a free port of 127.0.0.1, on its own
//! runtime threads; stopped like `serve` (groups, then the store).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use annals_engine::{Durability, Engine};
use annals_persistent::Subscriptions;
use annals_server::{Limits, ServerState};
use anyhow::Context;
use tokio::sync::oneshot;

/// Worker threads of the in-process server's runtime (the clients have their own).
const SERVER_THREADS: usize = 2;

pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    engine: Engine,
    persistent: Arc<Subscriptions>,
    runtime: tokio::runtime::Runtime,
    stop: oneshot::Sender<()>,
    served: tokio::task::JoinHandle<Result<(), annals_server::ServeError>>,
}

impl Server {
    pub(crate) fn start(data: &Path) -> anyhow::Result<Self> {
        let (engine, _) = crate::store::open(data, Durability::Fsync)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(SERVER_THREADS)
            .thread_name("annals-server")
            .enable_all()
            .build()
            .context("cannot start the server's runtime")?;
        let persistent = runtime
            .block_on(Subscriptions::open(engine.clone()))
            .context("cannot start the persistent subscriptions")?;
        let state = ServerState::new(engine.clone(), Limits::default())
            .with_persistent(Arc::clone(&persistent));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .context("cannot listen on 127.0.0.1")?;
        let addr = listener.local_addr().context("listener address")?;
        let (stop, stopped) = oneshot::channel::<()>();
        let router = annals_grpc::routes(state.clone());
        let served = runtime.spawn(async move {
            annals_server::serve(listener, router, None, state, async {
                let _ = stopped.await;
            })
            .await
        });
        tracing::info!(%addr, "bench: serving in process");
        Ok(Self {
            addr,
            engine,
            persistent,
            runtime,
            stop,
            served,
        })
    }

    /// Stops serving, stops the groups, closes the store.
    pub(crate) fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        let served = self.runtime.block_on(self.served);
        self.runtime.block_on(self.persistent.shutdown());
        let closed = self.engine.close_checked();
        self.runtime.shutdown_timeout(annals_server::SHUTDOWN_GRACE);
        served
            .context("the server task failed")?
            .context("serving failed")?;
        closed.context("the store's pipeline failed during the run")?;
        Ok(())
    }
}
