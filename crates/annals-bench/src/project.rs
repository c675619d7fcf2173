//! `annals bench project`: rebuilds a declarative projection over N events into one view row per
//! event, against the same database's own bulk insert of the same rows (one transaction, one
//! prepared statement) in the same run; then measures live latency, from an append to its row
//! being committed in the view (`wait_for` the append's position).
//!
//! The store under `--data` is filled up to N `OrderPlaced` events first (kept between runs).
//! Each run registers a projection with a fresh name and drops its tables at the end.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals_core::{ContentType, EventType, ExpectedRevision, NewEvent, Position, StreamName};
use annals_engine::{Durability, Engine, EngineConfig};
use annals_projections::{
    PostgresTarget, ProjectionSpec, Projections, SqliteTarget, Target, parse_definitions,
};
use bytes::Bytes;
use serde::Serialize;
use uuid::Uuid;

use crate::error::{BenchError, Context};
use crate::measure::{latency_histogram, micros};
use crate::report::{emit, round2};
use crate::store::log_open_report;

/// Events per append while filling the store.
const FILL_BATCH_EVENTS: u64 = 500;
/// Streams the filled events spread over.
const FILL_STREAMS: u64 = 10_000;
/// Longest a rebuild may take before the bench gives up.
const REBUILD_TIMEOUT: Duration = Duration::from_secs(1_800);
/// Longest one live append may take to show in the view.
const LIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// The Postgres database used when no `--target-url` is given.
const POSTGRES_URL_DEFAULT: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

/// Which database `bench project` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProjectTarget {
    Sqlite,
    Postgres,
}

/// The settings of `bench project`.
#[derive(Clone, Debug)]
pub struct ProjectConfig {
    pub target: ProjectTarget,
    /// Postgres connection (URL or key=value); default: the `test` database on 127.0.0.1:5432.
    pub target_url: Option<String>,
    /// Store directory; filled with `OrderPlaced` events up to `events` first.
    pub data: PathBuf,
    pub events: u64,
    /// Partitions the projection runs in parallel.
    pub partitions: u32,
    /// Single appends timed from append to row committed in the view.
    pub live_appends: u64,
    /// Print the figures as one JSON line.
    pub json: bool,
}

#[derive(Serialize)]
struct Figures {
    target: &'static str,
    events: u64,
    partitions: u32,
    events_per_s: f64,
    baseline_events_per_s: f64,
    ratio: f64,
    rebuild_s: f64,
    baseline_s: f64,
    live_appends: u64,
    live_p50_ms: f64,
    live_p99_ms: f64,
    live_max_ms: f64,
}

/// One view row, as both sides write it.
struct Row {
    id: String,
    stream: String,
    revision: i64,
    customer: String,
    total: i64,
}

pub(crate) fn run(config: &ProjectConfig) -> Result<(), BenchError> {
    if config.events == 0 {
        return Err(BenchError::Options(
            "--events must be at least 1".to_owned(),
        ));
    }
    let (engine, report) = Engine::open_dir(
        &config.data,
        EngineConfig {
            durability: Durability::Fsync,
            ..EngineConfig::default()
        },
    )
    .map_err(|source| BenchError::OpenStore {
        dir: config.data.clone(),
        source,
    })?;
    log_open_report(&config.data, &report);
    fill(&engine, config.events)?;
    let url = match config.target {
        ProjectTarget::Sqlite => None,
        ProjectTarget::Postgres => Some(
            config
                .target_url
                .clone()
                .unwrap_or_else(|| POSTGRES_URL_DEFAULT.to_owned()),
        ),
    };
    let scratch = tempfile::tempdir().context(|| "cannot make a temporary directory".to_owned())?;
    let sqlite_path = scratch.path().join("view.sqlite3");
    let open = || -> Result<Box<dyn Target>, BenchError> {
        Ok(match &url {
            None => Box::new(SqliteTarget::open(&sqlite_path)?),
            Some(u) => Box::new(PostgresTarget::connect(u)?),
        })
    };
    let name = format!("bench_{}", std::process::id());
    let spec = spec(&name, config.partitions)?;

    // Baseline first: the same rows, read from the log beforehand, inserted in bulk. The
    // projection reads the whole store (earlier runs' live appends included), so the baseline
    // inserts a row for every event it will project.
    let head = engine.head();
    let rows = rows_of(&engine, head.0)?;
    let counted = rows.len() as u64;
    let baseline = match &url {
        None => baseline_sqlite(&scratch.path().join("baseline.sqlite3"), &rows)?,
        Some(u) => baseline_postgres(u, &format!("{name}_baseline"), &rows)?,
    };
    drop(rows);

    let projections = Arc::new(Projections::new(engine.clone()));
    let started = Instant::now();
    projections.register(spec, open()?)?;
    projections
        .wait_for(&name, head, REBUILD_TIMEOUT)
        .map_err(|source| BenchError::Wait {
            context: "the rebuild did not finish",
            source,
        })?;
    let rebuild = started.elapsed();
    tracing::info!(seconds = rebuild.as_secs_f64(), "rebuild done");

    let mut hist = latency_histogram();
    let stream = StreamName::new(format!("order-live{}", std::process::id()))?;
    for i in 0..config.live_appends {
        let t = Instant::now();
        let r = engine.append(&stream, ExpectedRevision::Any, vec![event(i)])?;
        projections
            .wait_for(&name, r.position, LIVE_TIMEOUT)
            .map_err(|source| BenchError::Wait {
                context: "a live append did not show",
                source,
            })?;
        let _ = hist.record(micros(t.elapsed()));
    }
    projections.reset(&name).ok();
    projections.shutdown();
    drop_projection(open()?.as_mut(), &name);
    engine.close();

    let eps = counted as f64 / rebuild.as_secs_f64();
    let base_eps = counted as f64 / baseline.as_secs_f64();
    let ms = |q: f64| round2(hist.value_at_quantile(q) as f64 / 1000.0);
    emit(
        &Figures {
            target: if url.is_some() { "postgres" } else { "sqlite" },
            events: counted,
            partitions: config.partitions,
            events_per_s: eps.round(),
            baseline_events_per_s: base_eps.round(),
            ratio: round2(eps / base_eps),
            rebuild_s: round2(rebuild.as_secs_f64()),
            baseline_s: round2(baseline.as_secs_f64()),
            live_appends: config.live_appends,
            live_p50_ms: ms(0.5),
            live_p99_ms: ms(0.99),
            live_max_ms: round2(hist.max() as f64 / 1000.0),
        },
        config.json,
    )
}

fn definition_text(name: &str, partitions: u32) -> String {
    format!(
        r#"
[[projection]]
name = "{name}"
source = {{ category = "order" }}
tables = ["{name}_orders"]
setup = ["CREATE TABLE {{{name}_orders}} (id TEXT PRIMARY KEY, stream TEXT NOT NULL, revision BIGINT NOT NULL, customer TEXT NOT NULL, total BIGINT NOT NULL)"]
partitions = {partitions}

[[projection.handler]]
event_type = "OrderPlaced"
sql = "INSERT INTO {{{name}_orders}} (id, stream, revision, customer, total) VALUES ($1, $2, $3, $4, $5)"
params = ["data.id", "stream", "revision", "data.customer", "data.total"]
"#
    )
}

fn spec(name: &str, partitions: u32) -> Result<ProjectionSpec, BenchError> {
    let mut defs = parse_definitions(&definition_text(name, partitions))?;
    defs.pop()
        .map(|d| d.spec)
        .ok_or_else(|| BenchError::Check("the bench definition holds no projection".to_owned()))
}

#[expect(clippy::expect_used, reason = "\"OrderPlaced\" is a valid event type")]
fn event(i: u64) -> NewEvent {
    let data = serde_json::json!({
        "id": Uuid::new_v4().to_string(),
        "customer": format!("customer-{}", i % 997),
        "total": i % 10_000,
    });
    NewEvent {
        id: Uuid::new_v4(),
        event_type: EventType::new("OrderPlaced").expect("valid event type"),
        content_type: ContentType::Json,
        data: Bytes::from(data.to_string()),
        metadata: Bytes::new(),
    }
}

/// Appends `OrderPlaced` events until the store holds `events`.
fn fill(engine: &Engine, events: u64) -> Result<(), BenchError> {
    let mut have = engine.head().0;
    let mut i = have;
    while have < events {
        let n = FILL_BATCH_EVENTS.min(events - have);
        let stream = StreamName::new(format!("order-{}", i % FILL_STREAMS))?;
        let batch: Vec<NewEvent> = (0..n).map(|k| event(i + k)).collect();
        engine.append(&stream, ExpectedRevision::Any, batch)?;
        have += n;
        i += n;
    }
    Ok(())
}

/// The text member `key` of a JSON object, empty when absent.
fn text(v: &serde_json::Value, key: &str) -> String {
    v.get(key)
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The view rows of the first `events` events, read from the log.
fn rows_of(engine: &Engine, events: u64) -> Result<Vec<Row>, BenchError> {
    let mut rows = Vec::with_capacity(usize::try_from(events).unwrap_or(0));
    let mut from = Position(1);
    while (rows.len() as u64) < events {
        let page = engine.read_all(from, annals_core::Direction::Forwards, 4_096, None)?;
        for e in &page.events {
            if e.event_type.as_str() != "OrderPlaced" || !e.stream.as_str().starts_with("order-") {
                continue;
            }
            let v: serde_json::Value = serde_json::from_slice(&e.data)?;
            rows.push(Row {
                id: text(&v, "id"),
                stream: e.stream.as_str().to_owned(),
                revision: i64::try_from(e.revision.0).unwrap_or(i64::MAX),
                customer: text(&v, "customer"),
                total: v
                    .get("total")
                    .and_then(serde_json::Value::as_i64)
                    .unwrap_or(0),
            });
        }
        if page.events.is_empty() || page.end_reached {
            break;
        }
        from = page.next;
    }
    Ok(rows)
}

fn baseline_sqlite(path: &std::path::Path, rows: &[Row]) -> Result<Duration, BenchError> {
    let mut db = rusqlite::Connection::open(path)?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.pragma_update(None, "synchronous", "FULL")?;
    // The same page cache the projection's target uses, so both sides differ only in how
    // rows get there.
    db.pragma_update(None, "cache_size", -annals_projections::SQLITE_CACHE_KIB)?;
    db.execute(
        "CREATE TABLE orders (id TEXT PRIMARY KEY, stream TEXT NOT NULL, revision BIGINT NOT NULL, customer TEXT NOT NULL, total BIGINT NOT NULL)",
        [],
    )?;
    let started = Instant::now();
    let tx = db.transaction()?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO orders (id, stream, revision, customer, total) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for r in rows {
            insert.execute(rusqlite::params![
                r.id, r.stream, r.revision, r.customer, r.total
            ])?;
        }
    }
    tx.commit()?;
    Ok(started.elapsed())
}

fn baseline_postgres(url: &str, table: &str, rows: &[Row]) -> Result<Duration, BenchError> {
    let mut db = postgres::Client::connect(url, postgres::NoTls)?;
    db.batch_execute(&format!(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id TEXT PRIMARY KEY, stream TEXT NOT NULL, revision BIGINT NOT NULL, customer TEXT NOT NULL, total BIGINT NOT NULL)"
    ))?;
    let started = Instant::now();
    let mut tx = db.transaction()?;
    let insert = tx.prepare(&format!(
        "INSERT INTO {table} (id, stream, revision, customer, total) VALUES ($1, $2, $3, $4, $5)"
    ))?;
    for r in rows {
        tx.execute(
            &insert,
            &[&r.id, &r.stream, &r.revision, &r.customer, &r.total],
        )?;
    }
    tx.commit()?;
    let elapsed = started.elapsed();
    db.batch_execute(&format!("DROP TABLE IF EXISTS {table}"))?;
    Ok(elapsed)
}

/// Drops what the run left in the target (best effort: a leftover only costs space).
fn drop_projection(target: &mut dyn Target, name: &str) {
    let tables = vec![format!("{name}_orders")];
    if let Ok(stored) = target.load(name) {
        for g in stored.generations {
            let _ = target.drop_generation(name, g.generation, &tables, true);
        }
    }
}
