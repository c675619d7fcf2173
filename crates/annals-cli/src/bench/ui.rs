//! `annals bench ui`: starts the server the bench loads, as a child process of this binary
//! (`annals serve` on a temporary store and a free port of 127.0.0.1) with `--projections`
//! declarative SQLite projections, so each status snapshot has a row per projection; and
//! measures in this process what one snapshot of the overview's live feed costs with as many
//! projections (`annals_http::status::snapshot` and its JSON text, as the feed makes them once a
//! second), caught up and a few events behind.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use annals_bench::{Bench, GrpcServer, UiConfig};
use annals_core::{ExpectedRevision, NewEvent, StreamName};
use annals_engine::{Durability, Engine};
use annals_http::HttpState;
use annals_persistent::Subscriptions;
use annals_projections::{Catalog, Projections};
use annals_relay::Relays;
use annals_server::{Limits, ServerState};
use anyhow::Context;

use super::child::start;
use crate::args::BenchUiArgs;

/// Snapshots timed in process, for each of the two figures.
const SNAPSHOTS: u32 = 2_000;
/// Events every projection trails by in the "behind" figure: about one group commit of 64
/// writers, none of them in its category (as the bench's load is not).
const BEHIND_EVENTS: u64 = 64;
/// How long the in-process projections get to catch up with the store.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the in-process runtime keeps its one blocking thread idle (longer than any pause
/// between the snapshots, so the thread timed is the same one throughout).
const BLOCKING_KEEP_ALIVE: Duration = Duration::from_secs(600);

/// `count` declarative projections on categories `c0`, `c1`, ...: one SQLite table each, one row
/// per `Counted` event.
fn definitions(count: u32) -> String {
    (0..count)
        .map(|i| {
            format!(
                r#"
[[projection]]
name = "p{i}"
source = {{ category = "c{i}" }}
tables = ["p{i}_rows"]
setup = ["CREATE TABLE {{p{i}_rows}} (id TEXT PRIMARY KEY, n INTEGER NOT NULL)"]

[[projection.handler]]
event_type = "Counted"
sql = "INSERT INTO {{p{i}_rows}} (id, n) VALUES ($1, $2)"
params = ["data.id", "data.n"]
"#
            )
        })
        .collect()
}

/// The id (`PID/task/TID`) and CPU time in ns of the runtime's one blocking thread, where a
/// snapshot lists the projections.
async fn blocking_thread_cpu() -> anyhow::Result<(String, u64)> {
    tokio::task::spawn_blocking(|| -> anyhow::Result<(String, u64)> {
        let id = std::fs::read_link("/proc/thread-self")
            .context("cannot tell which thread this is")?
            .to_string_lossy()
            .into_owned();
        Ok((id, annals_bench::thread_cpu_ns()?))
    })
    .await
    .context("the blocking thread failed")?
}

/// CPU of one snapshot and its JSON text, in µs: the calling thread's (the runtime's only
/// worker) and the blocking thread's, over [`SNAPSHOTS`] of them.
async fn time_snapshots(http: &HttpState, projections: u32) -> anyhow::Result<f64> {
    let first = annals_http::status::snapshot(http, true).await;
    let rows = first
        .get("consumers")
        .and_then(serde_json::Value::as_array)
        .map_or(0, Vec::len);
    anyhow::ensure!(
        rows == projections as usize,
        "a snapshot held {rows} consumers, not the {projections} projections"
    );
    let (pool, pool_cpu) = blocking_thread_cpu().await?;
    let cpu = annals_bench::thread_cpu_ns()?;
    let mut bytes = 0usize;
    for _ in 0..SNAPSHOTS {
        bytes += annals_http::status::snapshot(http, true)
            .await
            .to_string()
            .len();
    }
    std::hint::black_box(bytes);
    let spent = annals_bench::thread_cpu_ns()?.saturating_sub(cpu);
    let (pool_after, pool_cpu_after) = blocking_thread_cpu().await?;
    anyhow::ensure!(
        pool == pool_after,
        "the runtime's blocking thread changed while snapshots were timed"
    );
    let spent = spent + pool_cpu_after.saturating_sub(pool_cpu);
    Ok(spent as f64 / 1_000.0 / f64::from(SNAPSHOTS))
}

/// Appends `count` single events to a stream of no projection's category.
fn append_elsewhere(engine: &Engine, count: u64) -> anyhow::Result<()> {
    let stream = StreamName::new("other-1")?;
    for _ in 0..count {
        engine.append(
            &stream,
            ExpectedRevision::Any,
            vec![NewEvent::json("Other", "{}")?],
        )?;
    }
    Ok(())
}

/// CPU of one status snapshot with the `projections` of `text` registered, in µs: with every
/// projection caught up, and with every one paused [`BEHIND_EVENTS`] behind the head.
fn snapshot_cpu_us(dir: &Path, text: &str, projections: u32) -> anyhow::Result<(f64, f64)> {
    let (engine, _) = crate::store::open(dir, Durability::Fsync)?;
    let registry = Arc::new(Projections::new(engine.clone()));
    let measured = measure_snapshots(&engine, &registry, dir, text, projections);
    registry.shutdown();
    engine.close();
    measured
}

fn measure_snapshots(
    engine: &Engine,
    registry: &Arc<Projections>,
    dir: &Path,
    text: &str,
    projections: u32,
) -> anyhow::Result<(f64, f64)> {
    let (catalog, failed) =
        Catalog::open(Arc::clone(registry), dir).context("cannot open the catalog")?;
    anyhow::ensure!(failed.is_empty(), "stored projections failed: {failed:?}");
    catalog.apply(text).context("the bench's projections")?;
    let names: Vec<String> = (0..projections).map(|i| format!("p{i}")).collect();
    // Every projection reads past events of other categories, as under the bench's load.
    append_elsewhere(engine, BEHIND_EVENTS)?;
    let head = engine.head();
    for name in &names {
        registry
            .wait_for(name, head, CATCH_UP_TIMEOUT)
            .with_context(|| format!("projection {name} did not catch up"))?;
    }
    // One worker (this thread) and one blocking thread: the CPU of both is the snapshots'.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(1)
        .thread_keep_alive(BLOCKING_KEEP_ALIVE)
        .build()
        .context("runtime")?;
    let (persistent, relays) = runtime.block_on(async {
        let persistent = Subscriptions::open(engine.clone()).await?;
        let relays = Relays::open(engine.clone()).await?;
        anyhow::Ok((persistent, relays))
    })?;
    let state = ServerState::new(engine.clone(), Limits::default())
        .with_persistent(Arc::clone(&persistent));
    let http = HttpState::new(state, Some(Arc::new(catalog)), Some(Arc::clone(&relays)));
    let timed = (|| {
        let caught_up = runtime.block_on(time_snapshots(&http, projections))?;
        for name in &names {
            registry.pause(name)?;
        }
        append_elsewhere(engine, BEHIND_EVENTS)?;
        let lagging = registry
            .list()
            .iter()
            .filter(|p| p.lag_events >= BEHIND_EVENTS)
            .count();
        anyhow::ensure!(
            lagging == names.len(),
            "{lagging} of {} paused projections are behind",
            names.len()
        );
        let behind = runtime.block_on(time_snapshots(&http, projections))?;
        anyhow::Ok((caught_up, behind))
    })();
    runtime.block_on(relays.shutdown());
    runtime.block_on(persistent.shutdown());
    timed
}

pub(crate) fn run(a: &BenchUiArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.projections > 0, "--projections must be at least 1");
    let dir = tempfile::tempdir().context("cannot make a temporary directory")?;
    let text = definitions(a.projections);
    let (snapshot_cpu_us, snapshot_behind_cpu_us) =
        snapshot_cpu_us(&dir.path().join("in-process"), &text, a.projections)?;
    tracing::info!(
        "bench ui: one status snapshot with {} projections: {snapshot_cpu_us:.1} µs CPU caught up, {snapshot_behind_cpu_us:.1} µs behind",
        a.projections
    );
    let file = dir.path().join("projections.toml");
    std::fs::write(&file, &text).context("cannot write the projections file")?;
    let server = start(
        &dir.path().join("served"),
        &[std::ffi::OsStr::new("--projections"), file.as_os_str()],
    )?;
    let config = UiConfig {
        server: GrpcServer {
            authority: server.authority.clone(),
            ..GrpcServer::default()
        },
        pid: server.child.id(),
        clients: a.clients,
        rate: a.rate,
        seconds: a.seconds,
        projections: a.projections,
        feeds: a.feeds,
        rounds: a.rounds,
        snapshot_cpu_us,
        snapshot_behind_cpu_us,
        json: a.json,
    };
    annals_bench::run(&Bench::Ui(Box::new(config)))?;
    drop(server);
    Ok(())
}
