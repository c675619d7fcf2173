//! The node's jobs: projections, relays and persistent-subscription groups, and where they run.
//! A single node runs them all for as long as it serves. With the store in PostgreSQL, several
//! nodes serve one store but the jobs run on one node at a time, the holder of the lease
//! [`JOBS_LEASE`]:
//!
//! - the node that takes the lease first waits until its copy of the store has every commit the
//!   previous holder made (after the lease moved, that holder can commit nothing more: its
//!   writes are fenced), then opens the jobs from their checkpoints, through an engine handle
//!   whose writes are fenced by the lease ([`Engine::fenced`]) and with Postgres projection
//!   targets fenced by the lease's token;
//! - a node that loses the lease (a renewal failed, another node took it) stops its jobs at
//!   once; whatever they still try to write is refused by the fences;
//! - the other nodes answer requests for the jobs by naming the holder (its `--advertise`
//!   address): HTTP with `503 jobs_elsewhere`, gRPC persistent subscriptions with KurrentDB's
//!   `not-leader`, so clients reconnect there.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use annals_engine::Engine;
use annals_persistent::Subscriptions;
use annals_pgstore::{LEASE_RENEW_INTERVAL, LEASE_TTL, Lease, PgStore};
use annals_projections::{Catalog, Fence, Projections, SharedCatalog};
use annals_relay::Relays;
use annals_server::{Held, JobSlot};
use anyhow::Context as _;
use tokio::sync::watch;

use crate::effects::WebhookSink;
use crate::replica::Terms;

/// The lease that says which node runs the jobs.
pub(crate) const JOBS_LEASE: &str = "jobs";
/// Longest a node that took the jobs lease waits for its copy of the store to catch up before
/// it gives up this attempt (and tries again at the next renewal).
const TAKE_OVER_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// What the jobs are opened with.
#[derive(Clone, Debug)]
pub(crate) struct JobsConfig {
    /// The store directory (the single node's projection catalog and SQLite targets).
    pub(crate) data: PathBuf,
    /// A projection definition file to apply when the jobs start.
    pub(crate) projections: Option<PathBuf>,
    /// A relay definition file to apply when the jobs start.
    pub(crate) relays: Option<PathBuf>,
}

/// The slots the APIs reach the jobs through.
#[derive(Clone, Debug, Default)]
pub(crate) struct Slots {
    pub(crate) projections: JobSlot<Catalog>,
    pub(crate) relays: JobSlot<Relays>,
    pub(crate) persistent: JobSlot<Subscriptions>,
}

impl Slots {
    fn fill(&self, jobs: &Running) {
        self.projections.set(Held::Here(Arc::clone(&jobs.catalog)));
        self.relays.set(Held::Here(Arc::clone(&jobs.relays)));
        self.persistent
            .set(Held::Here(Arc::clone(&jobs.persistent)));
    }

    fn elsewhere(&self, holder: Option<String>) {
        self.projections.set(Held::Elsewhere(holder.clone()));
        self.relays.set(Held::Elsewhere(holder.clone()));
        self.persistent.set(Held::Elsewhere(holder));
    }
}

/// The jobs running on this node.
pub(crate) struct Running {
    projections: Arc<Projections>,
    catalog: Arc<Catalog>,
    relays: Arc<Relays>,
    persistent: Arc<Subscriptions>,
}

/// Where the shared catalog keeps its projections and fences them.
struct Shared {
    store_url: String,
    lease: Lease,
}

/// Opens every job from its checkpoint, with `engine` for its reads and writes.
async fn open(
    engine: Engine,
    config: &JobsConfig,
    shared: Option<Shared>,
) -> anyhow::Result<Running> {
    // Projections run on their own threads (and their webhook client has a runtime of its own,
    // which must not be made or dropped on this one).
    let (projections, (catalog, failed)) = {
        let engine = engine.clone();
        let data = config.data.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let projections = Arc::new(Projections::with_effect_sink(
                engine.clone(),
                Arc::new(WebhookSink::new()?),
            ));
            let opened = match shared {
                None => Catalog::open(Arc::clone(&projections), &data),
                Some(shared) => Catalog::open_shared(
                    Arc::clone(&projections),
                    engine,
                    SharedCatalog {
                        default_target: shared.store_url,
                        fence: Some(Fence {
                            name: shared.lease.name,
                            token: shared.lease.token,
                        }),
                    },
                ),
            };
            Ok((
                projections,
                opened.context("cannot open the projection catalog")?,
            ))
        })
        .await
        .context("the projection catalog's task failed")??
    };
    let catalog = Arc::new(catalog);
    for e in &failed {
        tracing::error!(error = %e, "a stored projection did not start");
    }
    if let Some(file) = &config.projections {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let applied = {
            let catalog = Arc::clone(&catalog);
            tokio::task::spawn_blocking(move || catalog.apply(&text))
                .await
                .context("the projection catalog's task failed")?
        };
        for applied in applied.with_context(|| format!("projections in {}", file.display()))? {
            tracing::info!(?applied, "projection definition applied");
        }
    }
    // Persistent-subscription groups start from their checkpoints before the first client can
    // reach them.
    let persistent = Subscriptions::open(engine.clone())
        .await
        .context("cannot start the persistent subscriptions")?;
    // Relays start from their checkpoints; the file's definitions are applied over the stored
    // ones.
    let relays = Relays::open(engine)
        .await
        .context("cannot start the relays")?;
    if let Some(file) = &config.relays {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        for applied in relays
            .apply(&text)
            .await
            .with_context(|| format!("relays in {}", file.display()))?
        {
            tracing::info!(?applied, "relay definition applied");
        }
    }
    Ok(Running {
        projections,
        catalog,
        relays,
        persistent,
    })
}

/// Stops the jobs: persistent-subscription groups write their last checkpoints while the store
/// still takes writes; projections stop after their commits in flight. Each resumes from its
/// checkpoint, here or on another node.
pub(crate) async fn shutdown(jobs: Running) {
    jobs.persistent.shutdown().await;
    jobs.relays.shutdown().await;
    let projections = jobs.projections;
    if let Err(e) = tokio::task::spawn_blocking(move || projections.shutdown()).await {
        tracing::error!(error = %e, "the projections did not shut down cleanly");
    }
}

/// A single node's jobs: all of them, here, until [`shutdown`].
pub(crate) async fn run_here(
    engine: &Engine,
    config: &JobsConfig,
    slots: &Slots,
) -> anyhow::Result<Running> {
    let jobs = open(engine.clone(), config, None).await?;
    slots.fill(&jobs);
    Ok(jobs)
}

/// One of several nodes: keeps trying to hold [`JOBS_LEASE`] as `holder` and runs the jobs
/// while it does, until `stop` says true; then stops them and hands the lease over at once.
#[expect(
    clippy::too_many_arguments,
    reason = "the node's parts, each needed once"
)]
pub(crate) async fn keep(
    store: PgStore,
    store_url: String,
    terms: Terms,
    engine: Engine,
    config: JobsConfig,
    slots: Slots,
    holder: String,
    mut stop: watch::Receiver<bool>,
) {
    let keeper = store.keep_lease(JOBS_LEASE, &holder, LEASE_TTL, LEASE_RENEW_INTERVAL);
    let mut term = keeper.watch();
    let mut running: Option<(Lease, Running)> = None;
    slots.elsewhere(None);
    loop {
        let now = term.borrow_and_update().clone();
        let unchanged = matches!((&running, &now), (Some((held, _)), Some(lease)) if held == lease);
        if !unchanged {
            if let Some((lease, jobs)) = running.take() {
                terms.write().remove(JOBS_LEASE);
                slots.elsewhere(None);
                tracing::warn!(
                    token = lease.token,
                    "lost the jobs lease; stopping the jobs"
                );
                shutdown(jobs).await;
            }
            if let Some(lease) = now {
                terms.write().insert(JOBS_LEASE.to_owned(), lease.clone());
                match take_over(&store, &store_url, &engine, &config, &lease).await {
                    Ok(jobs) => {
                        slots.fill(&jobs);
                        tracing::info!(
                            token = lease.token,
                            "took the jobs lease: running projections, relays and persistent subscriptions"
                        );
                        running = Some((lease, jobs));
                    }
                    Err(e) => {
                        terms.write().remove(JOBS_LEASE);
                        tracing::error!(error = %e, "cannot start the jobs; trying again");
                    }
                }
            }
        }
        if running.is_none() {
            match store.lease_holder(JOBS_LEASE).await {
                Ok(at) => slots.elsewhere(at.filter(|h| *h != holder)),
                Err(e) => tracing::debug!(error = %e, "cannot learn who runs the jobs"),
            }
        }
        tokio::select! {
            changed = term.changed() => if changed.is_err() { break },
            () = tokio::time::sleep(LEASE_RENEW_INTERVAL) => {}
            _ = stop.changed() => break,
        }
    }
    drop(keeper);
    if let Some((lease, jobs)) = running {
        shutdown(jobs).await;
        terms.write().remove(JOBS_LEASE);
        if let Err(e) = store.release_lease(&lease).await {
            tracing::warn!(error = %e, "cannot hand the jobs lease over; it lapses by itself");
        }
    }
}

/// Opens the jobs under `lease` once this node's copy holds every commit made before it.
async fn take_over(
    store: &PgStore,
    store_url: &str,
    engine: &Engine,
    config: &JobsConfig,
    lease: &Lease,
) -> anyhow::Result<Running> {
    // Every write of the previous holder's term committed before this term began (they hold
    // the lease row while they commit), so they are all at or below this head.
    let head = store.committed_head().await?;
    let mut local = engine.head_watch();
    tokio::time::timeout(TAKE_OVER_CATCH_UP_TIMEOUT, async {
        while *local.borrow_and_update() < head {
            if local.changed().await.is_err() {
                break;
            }
        }
    })
    .await
    .context("this node's copy did not catch up with the store in time")?;
    anyhow::ensure!(engine.head() >= head, "the store closed while catching up");
    open(
        engine.fenced(JOBS_LEASE),
        config,
        Some(Shared {
            store_url: store_url.to_owned(),
            lease: lease.clone(),
        }),
    )
    .await
}
