//! `annals serve --store postgres://…`: the node's store directory becomes a replica of the
//! store in PostgreSQL. At start it catches up (refusing a directory that holds another store);
//! then it is the store's replica (`annals_replica`): a follower pages every new commit of any
//! node into it, and the engine's appends go to Postgres, each answered once this node has
//! imported it. Reads, subscriptions, projections and relays run on the local copy
//! unchanged; the directory is a cache, rebuilt from Postgres if wiped.

use annals_engine::Engine;
use annals_pgstore::PgStore;
pub(crate) use annals_replica::Terms;
use anyhow::Context as _;

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
    let terms = annals_replica::replicate(&store, engine);
    Ok((store, terms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use annals_core::{
        ContentType, Direction, EventType, ExpectedRevision, NewEvent, Revision, StreamName,
    };
    use annals_engine::{Durability, EngineConfig};
    use annals_testkit::postgres::TempPostgres;

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
