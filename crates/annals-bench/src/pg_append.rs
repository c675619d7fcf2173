//! `bench append --store postgres://…`: Annals on PostgreSQL (`annals-pgstore`: group commit, one
//! transaction per batch, dense positions under the head row lock) against the usual design of
//! a Postgres event store on the same server in the same run: one transaction per append, a
//! `bigserial` position and a unique `(stream, revision)`. Each side runs in a database of its
//! own that the bench creates and drops. Writers append single events to streams of their own;
//! a reader pages each side by position while they write and counts the positions it found
//! only after a higher one was already visible (what a reader following the log would have
//! skipped); at the end the bench counts each side's holes. `--rounds` repeats both sides in
//! fresh databases, their order alternating, and reports the medians.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use annals_core::{ContentType, EventType, ExpectedRevision, NewEvent, StreamName};
use annals_pgstore::{Config, PgStore};
use bytes::Bytes;
use serde::Serialize;
use tokio_postgres::NoTls;

use crate::error::{BenchError, ensure};
use crate::measure::{ratio, runtime};
use crate::report::{emit, round2};

/// Settings of `bench append --store postgres://…`.
#[derive(Clone, Debug)]
pub struct PgAppendConfig {
    /// A database on the server to connect to first (the bench creates its own beside it).
    pub url: String,
    pub writers: u32,
    pub events: u64,
    /// Rounds of the two sides, each in fresh databases, their order alternating: the disk's
    /// fsync speed drifts within seconds, so one round says little.
    pub rounds: u32,
    pub json: bool,
}

/// What the bench prints: the rounds taken together, and every round.
#[derive(Debug, Serialize)]
struct Figures {
    bench: &'static str,
    writers: u32,
    events: u64,
    /// Appends a second and the ratio: medians over the rounds; late positions and holes: sums.
    #[serde(flatten)]
    overall: Round,
    rounds: Vec<Round>,
}

/// One round: both sides, each in a fresh database.
#[derive(Debug, Serialize)]
struct Round {
    annals_events_per_s: f64,
    baseline_events_per_s: f64,
    /// Annals's appends a second over the baseline's (target: at least 3).
    ratio: f64,
    /// Positions a reader following the log found only after a higher one was visible.
    annals_late_positions: u64,
    baseline_late_positions: u64,
    /// Positions below the highest that no event holds, at the end.
    annals_holes: i64,
    baseline_holes: i64,
}

/// The baseline's table: the usual design.
const BASELINE_SCHEMA: &str = "
CREATE TABLE events (
    position bigserial PRIMARY KEY,
    stream text NOT NULL,
    revision bigint NOT NULL,
    event_id uuid NOT NULL,
    event_type text NOT NULL,
    data bytea NOT NULL,
    metadata bytea NOT NULL,
    UNIQUE (stream, revision)
);";

pub(crate) fn run(config: &PgAppendConfig) -> Result<(), BenchError> {
    ensure(config.writers > 0 && config.events > 0, || {
        "--writers and --events must be at least 1".to_owned()
    })?;
    let base = Config::from_str(&config.url)
        .map_err(|e| BenchError::Check(format!("bad Postgres connection string: {e}")))?;
    let runtime = runtime("the Postgres append bench")?;
    ensure(config.rounds > 0, || {
        "--rounds must be at least 1".to_owned()
    })?;
    let rounds = runtime.block_on(async {
        let stamp = std::process::id();
        let annals_db = format!("annals_bench_{stamp}");
        let baseline_db = format!("annals_baseline_{stamp}");
        let admin = connect(&base).await?;
        let mut rounds = Vec::new();
        for round in 0..config.rounds {
            for db in [&annals_db, &baseline_db] {
                for statement in [
                    format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
                    format!("CREATE DATABASE {db}"),
                ] {
                    admin.batch_execute(&statement).await.map_err(pg)?;
                }
            }
            let ran = both(config, &base, &annals_db, &baseline_db, round % 2 == 1).await;
            for db in [&annals_db, &baseline_db] {
                let _ = admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                    .await;
            }
            rounds.push(ran?);
        }
        Ok::<_, BenchError>(rounds)
    })?;
    let per_writer = config.events.div_ceil(u64::from(config.writers));
    let median = |f: fn(&Round) -> f64| {
        let mut v: Vec<f64> = rounds.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let overall = Round {
        annals_events_per_s: median(|r| r.annals_events_per_s),
        baseline_events_per_s: median(|r| r.baseline_events_per_s),
        ratio: median(|r| r.ratio),
        annals_late_positions: rounds.iter().map(|r| r.annals_late_positions).sum(),
        baseline_late_positions: rounds.iter().map(|r| r.baseline_late_positions).sum(),
        annals_holes: rounds.iter().map(|r| r.annals_holes).sum(),
        baseline_holes: rounds.iter().map(|r| r.baseline_holes).sum(),
    };
    let figures = Figures {
        bench: "append-postgres",
        writers: config.writers,
        events: per_writer * u64::from(config.writers),
        overall,
        rounds,
    };
    emit(&figures, config.json)
}

async fn both(
    config: &PgAppendConfig,
    base: &Config,
    annals_db: &str,
    baseline_db: &str,
    baseline_first: bool,
) -> Result<Round, BenchError> {
    let mut annals_config = base.clone();
    annals_config.dbname(annals_db);
    let mut baseline_config = base.clone();
    baseline_config.dbname(baseline_db);
    let per_writer = config.events.div_ceil(u64::from(config.writers));
    let events = per_writer * u64::from(config.writers);
    let ((annals_late, annals_elapsed), (baseline_late, baseline_elapsed)) = if baseline_first {
        let baseline = baseline_side(config, &baseline_config, per_writer).await?;
        (
            annals_side(config, &annals_config, per_writer).await?,
            baseline,
        )
    } else {
        let annals = annals_side(config, &annals_config, per_writer).await?;
        (
            annals,
            baseline_side(config, &baseline_config, per_writer).await?,
        )
    };
    let annals_client = connect(&annals_config).await?;
    let baseline_client = connect(&baseline_config).await?;
    let annals_holes = holes(&annals_client, "annals.events").await?;
    let baseline_holes = holes(&baseline_client, "events").await?;
    let annals_rate = events as f64 / annals_elapsed.as_secs_f64().max(1e-9);
    let baseline_rate = events as f64 / baseline_elapsed.as_secs_f64().max(1e-9);
    Ok(Round {
        annals_events_per_s: round2(annals_rate),
        baseline_events_per_s: round2(baseline_rate),
        ratio: ratio(annals_rate, baseline_rate),
        annals_late_positions: annals_late,
        baseline_late_positions: baseline_late,
        annals_holes,
        baseline_holes,
    })
}

/// Annals's side: the late positions its reader found, and how long the appends took.
async fn annals_side(
    config: &PgAppendConfig,
    annals_config: &Config,
    per_writer: u64,
) -> Result<(u64, std::time::Duration), BenchError> {
    let store = PgStore::open_config(annals_config.clone())
        .await
        .map_err(|e| BenchError::Check(format!("Annals on Postgres: {e}")))?;
    let (late, elapsed) = {
        let reader = follow(annals_config.clone(), "annals.events");
        let started = Instant::now();
        let mut writers = Vec::new();
        for w in 0..config.writers {
            let store = store.clone();
            writers.push(tokio::spawn(async move {
                let stream = StreamName::new(format!("bench-{w}"))
                    .map_err(|e| BenchError::Check(e.to_string()))?;
                for i in 0..per_writer {
                    let expected = match i {
                        0 => ExpectedRevision::NoStream,
                        n => ExpectedRevision::Exact(n - 1),
                    };
                    store
                        .append(&stream, expected, vec![event(i)?])
                        .await
                        .map_err(|e| BenchError::Check(format!("an Annals append: {e}")))?;
                }
                Ok::<_, BenchError>(())
            }));
        }
        join(writers).await?;
        let elapsed = started.elapsed();
        (reader.finish().await?, elapsed)
    };
    drop(store);
    Ok((late, elapsed))
}

/// The baseline's side: the late positions its reader found, and how long the appends took.
async fn baseline_side(
    config: &PgAppendConfig,
    baseline_config: &Config,
    per_writer: u64,
) -> Result<(u64, std::time::Duration), BenchError> {
    let setup = connect(baseline_config).await?;
    setup.batch_execute(BASELINE_SCHEMA).await.map_err(pg)?;
    let (late, elapsed) = {
        let reader = follow(baseline_config.clone(), "events");
        let started = Instant::now();
        let mut writers = Vec::new();
        for w in 0..config.writers {
            let baseline_config = baseline_config.clone();
            writers.push(tokio::spawn(async move {
                let client = connect(&baseline_config).await?;
                let insert = client
                    .prepare(
                        "INSERT INTO events (stream, revision, event_id, event_type, data, \
                         metadata) VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .await
                    .map_err(pg)?;
                let stream = format!("bench-{w}");
                for i in 0..per_writer {
                    let e = event(i)?;
                    let revision = i64::try_from(i).unwrap_or(i64::MAX);
                    client
                        .execute(
                            &insert,
                            &[
                                &stream,
                                &revision,
                                &e.id,
                                &e.event_type.as_str(),
                                &e.data.as_ref(),
                                &e.metadata.as_ref(),
                            ],
                        )
                        .await
                        .map_err(pg)?;
                }
                Ok::<_, BenchError>(())
            }));
        }
        join(writers).await?;
        let elapsed = started.elapsed();
        (reader.finish().await?, elapsed)
    };
    Ok((late, elapsed))
}

fn event(i: u64) -> Result<NewEvent, BenchError> {
    Ok(NewEvent {
        id: uuid::Uuid::new_v4(),
        event_type: EventType::new("BenchEvent").map_err(|e| BenchError::Check(e.to_string()))?,
        content_type: ContentType::Json,
        data: Bytes::from(format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(180))),
        metadata: Bytes::new(),
    })
}

async fn join(
    writers: Vec<tokio::task::JoinHandle<Result<(), BenchError>>>,
) -> Result<(), BenchError> {
    for w in writers {
        w.await
            .map_err(|e| BenchError::Check(format!("a writer task failed: {e}")))??;
    }
    Ok(())
}

/// A reader paging `table` by position while the writers write.
struct Follower {
    done: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Result<u64, BenchError>>,
}

impl Follower {
    /// Stops following (after one last page) and returns the late positions it found.
    async fn finish(self) -> Result<u64, BenchError> {
        self.done.store(true, Ordering::Release);
        self.task
            .await
            .map_err(|e| BenchError::Check(format!("the reader task failed: {e}")))?
    }
}

/// Pages `table` from the lowest position not yet seen, as a subscriber following the log by
/// position would; a position that shows up below one already seen is one such a subscriber
/// skipped for good.
fn follow(config: Config, table: &'static str) -> Follower {
    let done = Arc::new(AtomicBool::new(false));
    let stop = Arc::clone(&done);
    let task = tokio::spawn(async move {
        let client = connect(&config).await?;
        let query = format!(
            "SELECT position FROM {table} WHERE position > $1 ORDER BY position LIMIT 10000"
        );
        // Every position up to `dense` has been seen; some above it may have been too.
        let mut dense = 0i64;
        let mut highest = 0i64;
        let mut seen = std::collections::HashSet::new();
        let mut late = 0u64;
        loop {
            let finished = stop.load(Ordering::Acquire);
            let mut new = 0u64;
            for row in client.query(&query, &[&dense]).await.map_err(pg)? {
                let p: i64 = row.get(0);
                if seen.insert(p) {
                    new += 1;
                    if p < highest {
                        late += 1;
                    }
                }
                highest = highest.max(p);
            }
            while seen.remove(&(dense + 1)) {
                dense += 1;
            }
            // Once the writers are done, the end is reached when nothing new comes (a hole a
            // rolled-back append left stays for good).
            if finished && (dense == highest || new == 0) {
                return Ok(late);
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    });
    Follower { done, task }
}

/// Positions below the highest that no row holds.
async fn holes(client: &tokio_postgres::Client, table: &str) -> Result<i64, BenchError> {
    let row = client
        .query_one(
            &format!("SELECT coalesce(max(position), 0) - count(*) FROM {table}"),
            &[],
        )
        .await
        .map_err(pg)?;
    Ok(row.get(0))
}

async fn connect(config: &Config) -> Result<tokio_postgres::Client, BenchError> {
    let (client, connection) = config.connect(NoTls).await.map_err(pg)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

fn pg(e: tokio_postgres::Error) -> BenchError {
    match e.as_db_error() {
        Some(db) => BenchError::Check(format!("postgres: {}", db.message())),
        None => BenchError::Check(format!("postgres: {e}")),
    }
}
