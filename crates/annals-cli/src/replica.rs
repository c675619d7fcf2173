//! `annals serve --store postgres://…`: the node's store directory becomes a replica of the
//! store in PostgreSQL. At start it catches up (refusing a directory that holds another store);
//! then a follower task pages every new commit of any node into it through `Engine::import`,
//! and the engine's appends go to Postgres (`annals_engine::Upstream`), each answered once this
//! node has imported it. Reads, subscriptions, projections and relays run on the local copy
//! unchanged; the directory is a cache, rebuilt from Postgres if wiped.

use std::sync::Arc;
use std::time::Duration;

use annals_core::{ExpectedRevision, NewEvent, Position, StreamName};
use annals_engine::{Engine, EngineError, Upstream, UpstreamAppend};
use annals_pgstore::{PgStore, PgStoreError};
use anyhow::Context as _;

/// Events the follower imports per step.
const REPLICA_PAGE_EVENTS: usize = 4_096;
/// How long the follower waits before trying again after a failed step, and at most between
/// two looks at the upstream's head.
const REPLICA_RETRY: Duration = Duration::from_secs(1);

/// Appends through a store in Postgres.
#[derive(Debug)]
struct PgUpstream {
    store: PgStore,
}

impl Upstream for PgUpstream {
    fn append(
        &self,
        stream: StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> UpstreamAppend {
        let store = self.store.clone();
        Box::pin(async move {
            store
                .append(&stream, expected, events)
                .await
                .map_err(engine_error)
        })
    }

    fn tombstone(&self, stream: StreamName, expected: ExpectedRevision) -> UpstreamAppend {
        let store = self.store.clone();
        Box::pin(async move {
            store
                .tombstone(&stream, expected)
                .await
                .map_err(engine_error)
        })
    }
}

fn engine_error(e: PgStoreError) -> EngineError {
    match e {
        PgStoreError::Domain(d) => EngineError::Domain(d),
        other => EngineError::Stopped(format!("the store in PostgreSQL: {other}")),
    }
}

/// Opens the store at `url`, brings `engine` up to its head, and makes `engine` its replica
/// (appends go there; a follower on this runtime keeps the copy current).
pub(crate) async fn start(url: &str, engine: &Engine) -> anyhow::Result<PgStore> {
    let store = PgStore::open(url)
        .await
        .context("cannot open the store in PostgreSQL")?;
    let local = engine.head();
    anyhow::ensure!(
        local <= store.head(),
        "the store directory holds {} events, more than the store in PostgreSQL ({}): it is \
         another store",
        local.0,
        store.head().0
    );
    if local.0 > 0 {
        let ours = engine.read_all(local, annals_core::Direction::Forwards, 1, None)?;
        let theirs = store.read_all(local, 1).await?;
        let same = matches!((ours.events.first(), theirs.first()),
            (Some(o), Some(t)) if o.id == t.id && o.position == t.position);
        anyhow::ensure!(
            same,
            "the store directory's event at position {} is not the PostgreSQL store's: it holds \
             another store",
            local.0
        );
    }
    let target = store.head();
    while engine.head() < target {
        step(&store, engine).await?;
    }
    tracing::info!(head = target.0, "caught up with the store in PostgreSQL");
    engine.replicate_from(Arc::new(PgUpstream {
        store: store.clone(),
    }));
    tokio::spawn(follow(store.clone(), engine.clone()));
    Ok(store)
}

/// Imports the next page; returns the new head.
async fn step(store: &PgStore, engine: &Engine) -> anyhow::Result<Position> {
    let events = store
        .read_all(engine.head().next(), REPLICA_PAGE_EVENTS)
        .await?;
    if events.is_empty() {
        return Ok(engine.head());
    }
    Ok(engine.import_async(&events).await?)
}

/// Keeps `engine` current with `store` until the engine closes.
async fn follow(store: PgStore, engine: Engine) {
    let mut head = store.head_watch();
    // The engine's head signal closes with the engine.
    let closed = |engine: &Engine| engine.head_watch().has_changed().is_err();
    while !closed(&engine) {
        let target = *head.borrow_and_update();
        while engine.head() < target && !closed(&engine) {
            if let Err(e) = step(&store, &engine).await {
                tracing::warn!(error = %e, "cannot copy from the store in PostgreSQL; retrying");
                tokio::time::sleep(REPLICA_RETRY).await;
                break;
            }
        }
        if let Ok(Err(_)) = tokio::time::timeout(REPLICA_RETRY, head.changed()).await {
            return;
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
