//! Shared pieces of the runtime tests: a real engine on a temporary directory, a small Rust
//! handler (account balances), a fault-injecting target wrapper, a recording effect sink, and
//! the from-scratch computation a view is compared with.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use annals_core::{Direction, EventRecord, ExpectedRevision, NewEvent, Position, StreamName};
use annals_engine::{Durability, Engine, EngineConfig};
use annals_projections::{
    Effect, EffectSink, ErrorPolicy, Failure, Handler, HandlerContext, HandlerError, OnFailure,
    Parked, PartitionCommit, ProjectionSpec, SnapshotRecord, Source, SqliteTarget,
    StoredProjection, TableRows, Target, TargetError, TargetKind, Value,
};
use parking_lot::Mutex;

pub(crate) const WAIT: Duration = Duration::from_secs(20);

pub(crate) struct Store {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) engine: Engine,
}

impl Store {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let engine = open_engine(&dir.path().join("store"));
        Store { dir, engine }
    }

    pub(crate) fn db(&self) -> PathBuf {
        self.dir.path().join("views.db")
    }

    pub(crate) fn append(&self, stream: &str, event_type: &str, amount: i64) -> Position {
        let data = format!("{{\"amount\":{amount}}}");
        self.engine
            .append(
                &StreamName::new(stream).unwrap(),
                ExpectedRevision::Any,
                vec![NewEvent::json(event_type, data).unwrap()],
            )
            .unwrap()
            .position
    }

    /// Deposits in `streams` accounts, `rounds` times, with amounts varying by round.
    pub(crate) fn deposits(&self, streams: usize, rounds: usize) -> Position {
        let mut last = Position(0);
        for r in 0..rounds {
            for s in 0..streams {
                last = self.append(&format!("acct-{s}"), "Deposited", (r * 7 + s) as i64 % 50);
            }
        }
        last
    }
}

pub(crate) fn open_engine(dir: &Path) -> Engine {
    let config = EngineConfig {
        durability: Durability::None,
        ..EngineConfig::default()
    };
    Engine::open_dir(dir, config).unwrap().0
}

/// Every event of `$all`.
pub(crate) fn all_events(engine: &Engine) -> Vec<EventRecord> {
    let mut out = Vec::new();
    let mut from = Position(1);
    loop {
        let page = engine
            .read_all(from, Direction::Forwards, 1_000, None)
            .unwrap();
        out.extend(page.events);
        if page.end_reached || page.next <= from {
            break;
        }
        from = page.next;
    }
    out
}

/// The balances view computed from the log: stream → (total, events), skipping the event
/// types the handler refuses and the positions in `excluded`.
pub(crate) fn expected_balances(
    engine: &Engine,
    excluded: &HashSet<u64>,
) -> Vec<Vec<Option<String>>> {
    let mut map: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for e in all_events(engine) {
        if !e.stream.as_str().starts_with("acct-") || excluded.contains(&e.position.0) {
            continue;
        }
        if !matches!(e.event_type.as_str(), "Deposited" | "Flaky") {
            continue;
        }
        let amount = amount_of(&e);
        let entry = map.entry(e.stream.to_string()).or_default();
        entry.0 += amount;
        entry.1 += 1;
    }
    map.into_iter()
        .map(|(s, (t, n))| vec![Some(s), Some(t.to_string()), Some(n.to_string())])
        .collect()
}

pub(crate) fn amount_of(e: &EventRecord) -> i64 {
    serde_json::from_slice::<serde_json::Value>(&e.data)
        .ok()
        .and_then(|v| v.get("amount").and_then(|a| a.as_i64()))
        .unwrap_or(0)
}

pub(crate) fn view_rows(db: &Path) -> Vec<Vec<Option<String>>> {
    let mut t = SqliteTarget::open(db).unwrap();
    t.query_rows("SELECT stream, total, events FROM balances ORDER BY stream")
        .unwrap()
}

pub(crate) const SETUP: &str = "CREATE TABLE {balances} (stream TEXT PRIMARY KEY, \
    total INTEGER NOT NULL, events INTEGER NOT NULL)";
pub(crate) const UPSERT: &str = "INSERT INTO {balances} (stream, total, events) VALUES ($1, $2, 1) \
    ON CONFLICT (stream) DO UPDATE SET total = total + excluded.total, events = events + 1";

/// Balances: `Deposited` adds its amount; `Poison` fails in the handler; `BadSql` runs a
/// statement that violates NOT NULL; `Flaky` fails while `flaky_failures` is above 0 and is then a deposit; `Notify`
/// declares an effect (and counts as a deposit of 0).
pub(crate) struct Balances {
    pub(crate) flaky_failures: Arc<AtomicU64>,
}

impl Handler for Balances {
    fn handle(
        &mut self,
        event: &EventRecord,
        ctx: &mut HandlerContext<'_>,
    ) -> Result<(), HandlerError> {
        let stream = Value::Text(event.stream.to_string());
        match event.event_type.as_str() {
            "Deposited" => ctx.execute(UPSERT, vec![stream, Value::Integer(amount_of(event))]),
            "Poison" => return Err(HandlerError("poison event".into())),
            "BadSql" => ctx.execute(
                "INSERT INTO {balances} (stream, total, events) VALUES ($1, NULL, 1)",
                vec![Value::Text(format!("bad-{}", event.position.0))],
            ),
            "Flaky" => {
                let left = self.flaky_failures.load(Ordering::SeqCst);
                if left > 0 {
                    self.flaky_failures.store(left - 1, Ordering::SeqCst);
                    return Err(HandlerError("flaky".into()));
                }
                ctx.execute(UPSERT, vec![stream, Value::Integer(amount_of(event))]);
            }
            "Notify" => ctx.effect(Effect::Message {
                subject: event.stream.to_string(),
                payload: event.position.0.to_string().into_bytes(),
            }),
            _ => {}
        }
        Ok(())
    }
}

pub(crate) fn spec(name: &str, partitions: u32) -> ProjectionSpec {
    let flaky = Arc::new(AtomicU64::new(0));
    spec_with(name, partitions, OnFailure::Stop, flaky)
}

pub(crate) fn spec_with(
    name: &str,
    partitions: u32,
    on_failure: OnFailure,
    flaky: Arc<AtomicU64>,
) -> ProjectionSpec {
    ProjectionSpec {
        name: name.to_owned(),
        source: Source::Category("acct".to_owned()),
        tables: vec!["balances".to_owned()],
        objects: vec!["balances".to_owned()],
        setup: vec![SETUP.to_owned()],
        statements: vec![UPSERT.to_owned()],
        policy: ErrorPolicy {
            attempts: 3,
            backoff_initial: Duration::from_millis(1),
            backoff_max: Duration::from_millis(4),
            on_failure,
        },
        partitions,
        snapshot_every: None,
        handler: Arc::new(move || {
            Box::new(Balances {
                flaky_failures: Arc::clone(&flaky),
            })
        }),
    }
}

/// Records every delivered effect.
#[derive(Debug, Default)]
pub(crate) struct RecordingSink {
    pub(crate) delivered: Mutex<Vec<(String, Effect)>>,
}

impl EffectSink for RecordingSink {
    fn deliver(&self, projection: &str, effect: &Effect) -> Result<(), String> {
        self.delivered
            .lock()
            .push((projection.to_owned(), effect.clone()));
        Ok(())
    }
}

/// When a [`FaultyTarget`] fails.
#[derive(Debug, Default)]
pub(crate) struct FaultPlan {
    /// Commits seen so far, across every connection.
    pub(crate) commits: AtomicU64,
    /// Commit numbers (1-based) that fail with `Unavailable` before touching the database.
    pub(crate) fail_at: Mutex<HashSet<u64>>,
    /// While set, every commit fails with `Unavailable`.
    pub(crate) down: AtomicBool,
    pub(crate) failed: AtomicU64,
}

/// A SQLite target that fails chosen commits with `Unavailable` (nothing written).
#[derive(Debug)]
pub(crate) struct FaultyTarget {
    pub(crate) inner: SqliteTarget,
    pub(crate) plan: Arc<FaultPlan>,
}

impl FaultyTarget {
    pub(crate) fn open(db: &Path, plan: Arc<FaultPlan>) -> Self {
        FaultyTarget {
            inner: SqliteTarget::open(db).unwrap(),
            plan,
        }
    }
}

impl Target for FaultyTarget {
    fn kind(&self) -> TargetKind {
        self.inner.kind()
    }
    fn connect_another(&self) -> Result<Box<dyn Target>, TargetError> {
        Ok(Box::new(FaultyTarget {
            inner: SqliteTarget::open(self.inner.path())?,
            plan: Arc::clone(&self.plan),
        }))
    }
    fn install(&mut self) -> Result<(), TargetError> {
        self.inner.install()
    }
    fn check(&mut self, setup: &[String], statements: &[String]) -> Result<(), TargetError> {
        self.inner.check(setup, statements)
    }
    fn create_generation(
        &mut self,
        projection: &str,
        generation: u32,
        setup: &[String],
        serving: bool,
        views: &[String],
    ) -> Result<(), TargetError> {
        self.inner
            .create_generation(projection, generation, setup, serving, views)
    }
    fn load(&mut self, projection: &str) -> Result<StoredProjection, TargetError> {
        self.inner.load(projection)
    }
    fn commit(&mut self, commit: &PartitionCommit<'_>) -> Result<(), TargetError> {
        let n = self.plan.commits.fetch_add(1, Ordering::SeqCst) + 1;
        if self.plan.down.load(Ordering::SeqCst) || self.plan.fail_at.lock().contains(&n) {
            self.plan.failed.fetch_add(1, Ordering::SeqCst);
            return Err(TargetError::Unavailable(format!(
                "injected failure at commit {n}"
            )));
        }
        self.inner.commit(commit)
    }
    fn swap(
        &mut self,
        projection: &str,
        from: Option<u32>,
        to: u32,
        views: &[String],
    ) -> Result<(), TargetError> {
        self.inner.swap(projection, from, to, views)
    }
    fn drop_generation(
        &mut self,
        projection: &str,
        generation: u32,
        tables: &[String],
        drop_views: bool,
    ) -> Result<(), TargetError> {
        self.inner
            .drop_generation(projection, generation, tables, drop_views)
    }
    fn parked(&mut self, projection: &str, generation: u32) -> Result<Vec<Parked>, TargetError> {
        self.inner.parked(projection, generation)
    }
    fn failures(
        &mut self,
        projection: &str,
        generation: u32,
        limit: usize,
    ) -> Result<Vec<Failure>, TargetError> {
        self.inner.failures(projection, generation, limit)
    }
    fn save_snapshot(&mut self, snapshot: &SnapshotRecord) -> Result<(), TargetError> {
        self.inner.save_snapshot(snapshot)
    }
    fn load_snapshot(&mut self, key: &str) -> Result<Option<SnapshotRecord>, TargetError> {
        self.inner.load_snapshot(key)
    }
    fn read_table(
        &mut self,
        view: &str,
        limit: usize,
        offset: usize,
    ) -> Result<TableRows, TargetError> {
        self.inner.read_table(view, limit, offset)
    }
}

/// Waits until `cond` holds, failing the test after [`WAIT`].
pub(crate) fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}
