//! The state every handler of every API shares.

use std::sync::Arc;

use annals_auth::Auth;
use annals_engine::Engine;
use annals_persistent::Subscriptions;
use tokio::sync::watch;

use crate::jobs::JobSlot;
use crate::limits::Limits;
use crate::metrics::Metrics;

/// The engine, the bounds, the metrics and the shutdown signal; cheap to clone.
#[derive(Clone, Debug)]
pub struct ServerState {
    pub engine: Engine,
    pub limits: Arc<Limits>,
    pub metrics: Arc<Metrics>,
    /// The server's persistent-subscription groups: here when it runs them (`annals serve`
    /// does; a state built for a test of another API may not), or on the node holding the jobs
    /// lease when several nodes serve one store.
    pub persistent: JobSlot<Subscriptions>,
    /// Users and access control, when the server runs with `--auth`; without, every request
    /// is allowed.
    pub auth: Option<Arc<Auth>>,
    /// `/metrics` answers without credentials even with auth on (`--metrics-open`).
    pub metrics_open: bool,
    stopping: Arc<watch::Sender<bool>>,
}

impl ServerState {
    pub fn new(engine: Engine, limits: Limits) -> Self {
        Self {
            engine,
            limits: Arc::new(limits),
            metrics: Arc::new(Metrics::new()),
            persistent: JobSlot::default(),
            auth: None,
            metrics_open: false,
            stopping: Arc::new(watch::channel(false).0),
        }
    }

    /// The same state, serving `subscriptions`' persistent-subscription groups.
    pub fn with_persistent(mut self, subscriptions: Arc<Subscriptions>) -> Self {
        self.persistent = JobSlot::here(subscriptions);
        self
    }

    /// The same state, with persistent-subscription groups wherever `slot` says.
    pub fn with_persistent_slot(mut self, slot: JobSlot<Subscriptions>) -> Self {
        self.persistent = slot;
        self
    }

    /// The same state, with authentication and access control by `auth`.
    pub fn with_auth(mut self, auth: Arc<Auth>) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Tells long-lived responses (subscriptions, server-sent events) to end: the server is
    /// shutting down.
    pub fn begin_shutdown(&self) {
        self.stopping.send_replace(true);
    }

    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Resolves once shutdown has begun; long-lived responses select on it and end cleanly.
    pub async fn stopping(&self) {
        let mut rx = self.stopping.subscribe();
        // An error means the sender is gone, which only happens with the state itself.
        let _ = rx.wait_for(|stopping| *stopping).await;
    }
}
