//! `bench replay --store postgres://…`: how fast a node brings a copy of a store in PostgreSQL
//! up to date (what a node on a wiped directory, or one far behind, does: `annals_replica`'s
//! catch-up, pages of `$all` read from Postgres and imported into the node's store with an
//! fsync per page), against the baseline of the same pages only read from Postgres, in the same
//! run. The store is filled with ~200-byte events first, in a database the bench creates and
//! drops.

use std::str::FromStr;
use std::time::Instant;

use annals_core::{ContentType, EventRecord, EventType, Position, Revision, StreamName, Timestamp};
use annals_engine::{Durability, Engine, EngineConfig};
use annals_pgstore::{Config, PgStore};
use bytes::Bytes;
use serde::Serialize;
use tokio_postgres::NoTls;

use crate::error::{BenchError, ensure};
use crate::measure::{ratio, runtime};
use crate::report::{emit, round2};

/// Events the fill imports per transaction, and the baseline reads per page.
const PG_REPLAY_PAGE_EVENTS: usize = 4_096;
/// Streams the events are spread over, round robin.
const PG_REPLAY_STREAMS: u64 = 1_000;

/// Settings of `bench replay --store postgres://…`.
#[derive(Clone, Debug)]
pub struct PgReplayConfig {
    /// A database on the server to connect to first (the bench creates its own beside it).
    pub url: String,
    pub events: u64,
    pub rounds: u32,
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Figures {
    bench: &'static str,
    events: u64,
    event_bytes: usize,
    /// The best round of a node catching up (read from Postgres, imported, fsynced).
    annals_events_per_s: f64,
    /// The best round of reading the same pages from Postgres only.
    baseline_events_per_s: f64,
    ratio: f64,
}

pub(crate) fn run(config: &PgReplayConfig) -> Result<(), BenchError> {
    ensure(config.events > 0 && config.rounds > 0, || {
        "--events and --rounds must be at least 1".to_owned()
    })?;
    let base = Config::from_str(&config.url)
        .map_err(|e| BenchError::Check(format!("bad Postgres connection string: {e}")))?;
    let runtime = runtime("the Postgres replay bench")?;
    let figures = runtime.block_on(async {
        let db = format!("annals_replay_{}", std::process::id());
        let admin = connect(&base).await?;
        for statement in [
            format!("DROP DATABASE IF EXISTS {db}"),
            format!("CREATE DATABASE {db}"),
        ] {
            admin.batch_execute(&statement).await.map_err(pg)?;
        }
        let mut store_config = base.clone();
        store_config.dbname(&db);
        let ran = measure(config, store_config).await;
        let _ = admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .await;
        ran
    })?;
    emit(&figures, config.json)
}

async fn measure(config: &PgReplayConfig, store_config: Config) -> Result<Figures, BenchError> {
    let store = PgStore::open_config(store_config)
        .await
        .map_err(|e| BenchError::Check(format!("Annals on Postgres: {e}")))?;
    let event_bytes = fill(&store, config.events).await?;
    let (mut best_annals, mut best_baseline) = (0f64, 0f64);
    for _ in 0..config.rounds {
        // The baseline: the pages read, nothing done with them.
        let started = Instant::now();
        let mut from = Position(1);
        let mut read = 0u64;
        loop {
            let page = store
                .read_all(from, PG_REPLAY_PAGE_EVENTS)
                .await
                .map_err(|e| BenchError::Check(format!("reading the store: {e}")))?;
            let Some(last) = page.last() else { break };
            read += page.len() as u64;
            from = last.position.next();
        }
        ensure(read == config.events, || {
            format!("the baseline read {read} events, not {}", config.events)
        })?;
        best_baseline = best_baseline.max(read as f64 / started.elapsed().as_secs_f64());

        // A node catching up on a fresh directory.
        let dir = tempfile::tempdir().map_err(|e| BenchError::Check(e.to_string()))?;
        let engine_config = EngineConfig {
            durability: Durability::Fsync,
            ..EngineConfig::default()
        };
        let (engine, _) = Engine::open_dir(dir.path(), engine_config)
            .map_err(|e| BenchError::Check(format!("opening the node's store: {e}")))?;
        let started = Instant::now();
        let head = annals_replica::catch_up(&store, &engine)
            .await
            .map_err(|e| BenchError::Check(format!("catching up: {e}")))?;
        let elapsed = started.elapsed();
        engine.close();
        ensure(head.0 == config.events, || {
            format!("the node caught up to {}, not {}", head.0, config.events)
        })?;
        best_annals = best_annals.max(head.0 as f64 / elapsed.as_secs_f64());
    }
    Ok(Figures {
        bench: "replay-postgres",
        events: config.events,
        event_bytes,
        annals_events_per_s: round2(best_annals),
        baseline_events_per_s: round2(best_baseline),
        ratio: ratio(best_annals, best_baseline),
    })
}

/// Fills the store with `events` ~200-byte events spread over [`PG_REPLAY_STREAMS`] streams;
/// one event's data size.
async fn fill(store: &PgStore, events: u64) -> Result<usize, BenchError> {
    let event_type = EventType::new("BenchEvent").map_err(|e| BenchError::Check(e.to_string()))?;
    let data = Bytes::from(format!("{{\"i\":0,\"pad\":\"{}\"}}", "x".repeat(180)));
    let mut page = Vec::with_capacity(PG_REPLAY_PAGE_EVENTS);
    for i in 0..events {
        let stream = StreamName::new(format!("bench-{}", i % PG_REPLAY_STREAMS))
            .map_err(|e| BenchError::Check(e.to_string()))?;
        page.push(EventRecord {
            id: uuid::Uuid::new_v4(),
            stream,
            revision: Revision(i / PG_REPLAY_STREAMS),
            position: Position(i + 1),
            event_type: event_type.clone(),
            content_type: ContentType::Json,
            created: Timestamp::now(),
            data: data.clone(),
            metadata: Bytes::new(),
        });
        if page.len() == PG_REPLAY_PAGE_EVENTS || i + 1 == events {
            store
                .import(&page)
                .await
                .map_err(|e| BenchError::Check(format!("filling the store: {e}")))?;
            page.clear();
        }
    }
    Ok(data.len())
}

async fn connect(config: &Config) -> Result<tokio_postgres::Client, BenchError> {
    let (client, connection) = config.connect(NoTls).await.map_err(pg)?;
    tokio::spawn(connection);
    Ok(client)
}

fn pg(e: tokio_postgres::Error) -> BenchError {
    BenchError::Check(format!("postgres: {e}"))
}
