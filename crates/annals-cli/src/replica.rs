//! `annals serve --store postgres://…`: the node's store directory becomes a replica of the
//! store in PostgreSQL. At start it catches up (refusing a directory that holds another store);
//! then a follower task pages every new commit of any node into it through `Engine::import`,
//! and the engine's appends go to Postgres (`annals_engine::Upstream`), each answered once this
//! node has imported it. Reads, subscriptions, projections and relays run on the local copy
//! unchanged; the directory is a cache, rebuilt from Postgres if wiped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use annals_core::{ExpectedRevision, NewEvent, Position, StreamName};
use annals_engine::{Engine, EngineError, Upstream, UpstreamAppend, WriteFence};
use annals_pgstore::{Lease, PgStore, PgStoreError};
use anyhow::Context as _;

/// Events the follower imports per step.
const REPLICA_PAGE_EVENTS: usize = 4_096;
/// How long the follower waits before trying again after a failed step, and at most between
/// two looks at the upstream's head.
const REPLICA_RETRY: Duration = Duration::from_secs(1);

/// The lease terms this node holds now, by lease name: a fenced write carries its lease's
/// term, and is refused at once when this node holds none.
pub(crate) type Terms = Arc<parking_lot::RwLock<HashMap<String, Lease>>>;

/// Appends through a store in Postgres.
#[derive(Debug)]
struct PgUpstream {
    store: PgStore,
    terms: Terms,
}

impl PgUpstream {
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

/// A write refused before it reached the store.
fn refused(e: EngineError) -> UpstreamAppend {
    Box::pin(async move { Err(e) })
}

impl Upstream for PgUpstream {
    fn append(
        &self,
        stream: StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
        fence: WriteFence,
    ) -> UpstreamAppend {
        let term = match self.term(&fence) {
            Ok(term) => term,
            Err(e) => return refused(e),
        };
        let store = self.store.clone();
        Box::pin(async move {
            store
                .append_fenced(&stream, expected, events, term)
                .await
                .map_err(engine_error)
        })
    }

    fn soft_delete(
        &self,
        stream: StreamName,
        expected: ExpectedRevision,
        fence: WriteFence,
    ) -> UpstreamAppend {
        let term = match self.term(&fence) {
            Ok(term) => term,
            Err(e) => return refused(e),
        };
        let store = self.store.clone();
        Box::pin(async move {
            store
                .soft_delete_fenced(&stream, expected, term)
                .await
                .map_err(engine_error)
        })
    }

    fn tombstone(
        &self,
        stream: StreamName,
        expected: ExpectedRevision,
        fence: WriteFence,
    ) -> UpstreamAppend {
        let term = match self.term(&fence) {
            Ok(term) => term,
            Err(e) => return refused(e),
        };
        let store = self.store.clone();
        Box::pin(async move {
            store
                .tombstone_fenced(&stream, expected, term)
                .await
                .map_err(engine_error)
        })
    }
}

fn engine_error(e: PgStoreError) -> EngineError {
    match e {
        PgStoreError::Domain(d) => EngineError::Domain(d),
        e @ PgStoreError::Fenced { .. } => EngineError::Fenced(e.to_string()),
        other => EngineError::Stopped(format!("the store in PostgreSQL: {other}")),
    }
}

/// Opens the store at `url`, brings `engine` up to its head, and makes `engine` its replica
/// (appends go there; a follower on this runtime keeps the copy current). The store, and the
/// terms its fenced writes go by.
pub(crate) async fn start(url: &str, engine: &Engine) -> anyhow::Result<(PgStore, Terms)> {
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
    // The same check and copy as `annals migrate`: the directory must be this store's.
    let (_, head, _) = crate::migrate::copy(&store, engine).await?;
    tracing::info!(head = head.0, "caught up with the store in PostgreSQL");
    let terms = Terms::default();
    engine.replicate_from(Arc::new(PgUpstream {
        store: store.clone(),
        terms: Arc::clone(&terms),
    }));
    tokio::spawn(follow(store.clone(), engine.clone()));
    Ok((store, terms))
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
    use annals_core::{ContentType, Direction, EventType, Revision};
    use annals_engine::{Durability, EngineConfig};
    use annals_testkit::postgres::TempPostgres;

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

    fn event(i: u32) -> NewEvent {
        NewEvent {
            id: uuid::Uuid::new_v4(),
            event_type: EventType::new(format!("T{}", i % 3)).unwrap(),
            content_type: ContentType::Json,
            data: bytes::Bytes::from(format!("{{\"i\":{i}}}")),
            metadata: bytes::Bytes::new(),
        }
    }

    /// One operation of the script both stores run.
    enum Op {
        Append(&'static str, ExpectedRevision, u32),
        Meta(&'static str, &'static str),
        SoftDelete(&'static str, ExpectedRevision),
        Tombstone(&'static str, ExpectedRevision),
    }

    async fn apply(engine: &Engine, op: &Op, events: &[NewEvent]) -> String {
        let name = |s: &str| StreamName::new(s).unwrap();
        let answer = match op {
            Op::Append(s, e, _) => engine.append_async(&name(s), *e, events.to_vec()).await,
            Op::Meta(s, json) => {
                let value: serde_json::Value = serde_json::from_str(json).unwrap();
                engine.set_metadata_async(&name(s), &value).await
            }
            Op::SoftDelete(s, e) => engine.delete_async(&name(s), *e).await,
            Op::Tombstone(s, e) => engine.tombstone_async(&name(s), *e).await,
        };
        format!("{answer:?}")
    }

    /// What a reader sees of `stream` (rules applied), ids and times left out for the
    /// metadata events each store makes itself.
    fn seen(engine: &Engine, stream: &str) -> String {
        let read = engine.read_stream(
            &StreamName::new(stream).unwrap(),
            Revision(0),
            Direction::Forwards,
            1_000,
        );
        match read {
            Ok(events) => format!(
                "{:?}",
                events
                    .iter()
                    .map(|e| (e.position, e.revision, e.event_type.clone(), e.data.clone()))
                    .collect::<Vec<_>>()
            ),
            Err(e) => format!("error: {e}"),
        }
    }

    /// The same script of appends, metadata, soft deletes, undeletes and tombstones, run on
    /// the embedded store and on a replica of a store in PostgreSQL: every answer and every
    /// read is the same, positions included.
    #[test]
    fn a_replica_of_postgres_answers_as_the_embedded_store() {
        use ExpectedRevision::{Any, Exact, NoStream, StreamExists};
        let pg = TempPostgres::start();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let config = || EngineConfig {
            durability: Durability::None,
            ..EngineConfig::default()
        };
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (embedded, _) = Engine::open_dir(a.path(), config()).unwrap();
        let (replica, _) = Engine::open_dir(b.path(), config()).unwrap();
        let _store = runtime.block_on(start(&pg.url(), &replica)).unwrap();
        let script = [
            Op::Append("cart-1", NoStream, 3),
            Op::Append("cart-1", Exact(2), 1),
            Op::Append("cart-1", Exact(0), 1),
            Op::Append("cart-2", Any, 2),
            Op::Meta("cart-2", "{\"$maxCount\":1}"),
            Op::Append("cart-2", StreamExists, 2),
            Op::SoftDelete("cart-1", Exact(3)),
            Op::Append("cart-1", StreamExists, 1),
            Op::Append("cart-1", NoStream, 2),
            Op::SoftDelete("cart-1", Any),
            Op::Append("cart-1", Exact(5), 1),
            Op::SoftDelete("never", Any),
            Op::Tombstone("cart-2", Exact(0)),
            Op::Tombstone("cart-2", Any),
            Op::Append("cart-2", Any, 1),
            Op::SoftDelete("cart-2", Any),
            Op::Append("cart-3", NoStream, 1),
        ];
        let mut i = 0;
        let mut answers = Vec::new();
        for op in &script {
            let n = match op {
                Op::Append(_, _, n) => *n,
                _ => 0,
            };
            let events: Vec<NewEvent> = (0..n)
                .map(|_| {
                    i += 1;
                    event(i)
                })
                .collect();
            let (on_embedded, on_replica) = runtime.block_on(async {
                (
                    apply(&embedded, op, &events).await,
                    apply(&replica, op, &events).await,
                )
            });
            assert_eq!(on_replica, on_embedded);
            answers.push(on_embedded);
        }
        // The script exercises both outcomes: most writes succeed, the wrong ones are refused.
        let ok = answers.iter().filter(|a| a.starts_with("Ok(")).count();
        assert!((9..answers.len()).contains(&ok), "{answers:#?}");
        assert!(replica.head() > annals_core::Position(10));
        for stream in [
            "cart-1", "cart-2", "cart-3", "never", "$$cart-1", "$$cart-2",
        ] {
            assert_eq!(seen(&replica, stream), seen(&embedded, stream), "{stream}");
        }
        assert_eq!(replica.head(), embedded.head());
        replica.close();
        embedded.close();
    }
}
