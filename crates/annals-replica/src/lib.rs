//! A node's embedded store as the replica of the store in PostgreSQL. The engine's appends,
//! soft deletes and tombstones go to Postgres ([`PgUpstream`], an [`Upstream`]), the only
//! writer of positions, and are answered once this node has imported them; a follower task
//! pages every node's commits in through [`Engine::import`]. Writes of a job (through an
//! [`Engine::fenced`] handle) carry this node's term of the job's lease ([`Terms`]), checked in
//! Postgres's commit transaction.
//!
//! `annals serve --store` builds on this; so do the tests that run one suite on both stores.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use annals_core::{AppendResult, ExpectedRevision, NewEvent, Position, StreamName};
use annals_engine::{Engine, EngineError, Upstream, UpstreamAppend, WriteFence};
use annals_pgstore::{Lease, PgStore, PgStoreError};

/// Events the follower imports per step.
pub const REPLICA_PAGE_EVENTS: usize = 4_096;
/// How long the follower waits before trying again after a failed step, and at most between
/// two looks at the upstream's head.
pub const REPLICA_RETRY: Duration = Duration::from_secs(1);

/// A step of the follower failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("the store in PostgreSQL: {0}")]
    Store(#[from] PgStoreError),
    #[error("the local copy: {0}")]
    Engine(#[from] EngineError),
}

/// Makes `engine` the replica of `store`: from now on its writes go there, and a follower task
/// (on the current tokio runtime) imports every commit of any node, from the engine's head on.
/// The engine must hold a prefix of `store` (a fresh directory does); `annals serve` checks
/// that first. Returns the terms the node's fenced writes go by.
pub fn replicate(store: &PgStore, engine: &Engine) -> Terms {
    let terms = Terms::default();
    let reach = Reach::default();
    engine.replicate_from(Arc::new(PgUpstream {
        store: store.clone(),
        terms: Arc::clone(&terms),
        reach: reach.clone(),
    }));
    tokio::spawn(follow(store.clone(), engine.clone(), reach));
    terms
}

/// Whether the store in PostgreSQL answered this node's last request (an append, a page, the
/// follower's look at the head every [`REPLICA_RETRY`]): why not, if it did not. The engine
/// reports it as its write failure, so `/health` says the node cannot take writes, and why.
#[derive(Clone, Debug, Default)]
struct Reach(Arc<parking_lot::Mutex<Option<String>>>);

impl Reach {
    /// Notes how a request to the store ended: any answer of Postgres's (a refused append
    /// included) means it is reachable.
    fn note<T>(&self, outcome: &Result<T, PgStoreError>) {
        match outcome {
            Ok(_) => *self.0.lock() = None,
            Err(e) => self.failed(e),
        }
    }

    fn failed(&self, e: &PgStoreError) {
        *self.0.lock() = match e {
            PgStoreError::Unavailable(_) | PgStoreError::Closed => {
                Some(format!("the store in PostgreSQL cannot be reached: {e}"))
            }
            _ => None,
        };
    }
}

/// The lease terms this node holds now, by lease name: a fenced write carries its lease's
/// term, and is refused at once when this node holds none.
pub type Terms = Arc<parking_lot::RwLock<HashMap<String, Lease>>>;

/// Appends through a store in Postgres.
#[derive(Debug)]
pub struct PgUpstream {
    store: PgStore,
    terms: Terms,
    reach: Reach,
}

impl PgUpstream {
    /// Runs one write on the store under `fence`'s term (refused at once when this node holds
    /// none), noting whether Postgres answered.
    fn write<F, Fut>(&self, fence: &WriteFence, write: F) -> UpstreamAppend
    where
        F: FnOnce(PgStore, Option<Lease>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<AppendResult, PgStoreError>> + Send + 'static,
    {
        let term = match self.term(fence) {
            Ok(term) => term,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let (store, reach) = (self.store.clone(), self.reach.clone());
        Box::pin(async move {
            let done = write(store, term).await;
            reach.note(&done);
            done.map_err(engine_error)
        })
    }

    /// The term a fenced write commits under.
    fn term(&self, fence: &WriteFence) -> Result<Option<Lease>, EngineError> {
        let Some(name) = fence else {
            return Ok(None);
        };
        match self.terms.read().get(&**name) {
            Some(lease) => Ok(Some(lease.clone())),
            None => Err(EngineError::Fenced(format!(
                "this node does not hold the lease {name}; another node runs its jobs"
            ))),
        }
    }
}

impl Upstream for PgUpstream {
    fn unavailable(&self) -> Option<String> {
        self.reach.0.lock().clone()
    }

    fn append(
        &self,
        stream: StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
        fence: WriteFence,
    ) -> UpstreamAppend {
        self.write(&fence, move |store, term| async move {
            store.append_fenced(&stream, expected, events, term).await
        })
    }

    fn soft_delete(
        &self,
        stream: StreamName,
        expected: ExpectedRevision,
        fence: WriteFence,
    ) -> UpstreamAppend {
        self.write(&fence, move |store, term| async move {
            store.soft_delete_fenced(&stream, expected, term).await
        })
    }

    fn tombstone(
        &self,
        stream: StreamName,
        expected: ExpectedRevision,
        fence: WriteFence,
    ) -> UpstreamAppend {
        self.write(&fence, move |store, term| async move {
            store.tombstone_fenced(&stream, expected, term).await
        })
    }
}

pub fn engine_error(e: PgStoreError) -> EngineError {
    match e {
        PgStoreError::Domain(d) => EngineError::Domain(d),
        e @ PgStoreError::Fenced { .. } => EngineError::Fenced(e.to_string()),
        other => EngineError::Stopped(format!("the store in PostgreSQL: {other}")),
    }
}

/// Imports every commit of `store` that `engine` does not hold yet, up to the head the database
/// has now (what a node on a wiped directory does first); the engine's new head. The next page
/// is read from Postgres while the last one is imported, so the two overlap.
pub async fn catch_up(store: &PgStore, engine: &Engine) -> Result<Position, ReplicaError> {
    let target = store.committed_head().await?;
    if engine.head() >= target {
        return Ok(engine.head());
    }
    let mut page = store
        .read_all(engine.head().next(), REPLICA_PAGE_EVENTS)
        .await?;
    while let Some(last) = page.last() {
        let after = last.position.next();
        let read_next = async {
            if after > target {
                Ok(Vec::new())
            } else {
                store.read_all(after, REPLICA_PAGE_EVENTS).await
            }
        };
        let (imported, next) = tokio::join!(engine.import_async(&page), read_next);
        imported?;
        page = next?;
    }
    Ok(engine.head())
}

/// Imports the next page; returns the new head.
async fn step(store: &PgStore, engine: &Engine) -> Result<Position, ReplicaError> {
    let events = store
        .read_all(engine.head().next(), REPLICA_PAGE_EVENTS)
        .await?;
    if events.is_empty() {
        return Ok(engine.head());
    }
    Ok(engine.import_async(&events).await?)
}

/// Keeps `engine` current with `store` until the engine closes.
async fn follow(store: PgStore, engine: Engine, reach: Reach) {
    let mut head = store.head_watch();
    while !engine.is_closed() {
        let target = *head.borrow_and_update();
        while engine.head() < target && !engine.is_closed() {
            if let Err(e) = step(&store, &engine).await {
                if let ReplicaError::Store(e) = &e {
                    reach.failed(e);
                }
                tracing::warn!(error = %e, "cannot copy from the store in PostgreSQL; retrying");
                tokio::time::sleep(REPLICA_RETRY).await;
                break;
            }
        }
        // Wakes for a new commit, for the engine's close (its head signal fires; this task's
        // handle is what keeps the store open, so it must end then), or after a while anyway.
        let mut local = engine.head_watch();
        let closing = async { while local.changed().await.is_ok() && !engine.is_closed() {} };
        tokio::select! {
            changed = head.changed() => if changed.is_err() { return },
            () = closing => return,
            // Quiet: a look at the head says whether Postgres answers (and catches a lost
            // notification).
            () = tokio::time::sleep(REPLICA_RETRY) => reach.note(&store.committed_head().await),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_domain_error_stays_one_and_the_rest_says_unavailable() {
        let d = annals_core::DomainError::StreamNotFound {
            stream: "s".to_owned(),
        };
        assert!(matches!(
            engine_error(PgStoreError::Domain(d)),
            EngineError::Domain(_)
        ));
        assert!(matches!(
            engine_error(PgStoreError::Unavailable("down".to_owned())),
            EngineError::Stopped(_)
        ));
    }
}
