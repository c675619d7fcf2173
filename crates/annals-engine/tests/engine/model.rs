//! The engine against the reference model of `annals-testkit`: random sequences of appends (every
//! expected-revision kind, right and wrong), appends at and past the input limits (empty, too many
//! events, too large, repeated ids, bad metadata appends), retries of earlier appends (whole,
//! partial, elsewhere), metadata writes, soft deletes, tombstones, stream and `$all` reads in both
//! directions with limits and filters, and reopening the store, on [`FaultStorage`] with the
//! default config. Every answer must be the model's answer: the same result, the same error, the
//! same events.
//!
//! The same runs go against a replica of a store in PostgreSQL (`annals_replica`: appends,
//! deletes and tombstones committed by Postgres and imported back; reads from the local copy),
//! one database per seed on one throwaway server: the two stores answer alike.
//!
//! A failure prints its seed; `ANNALS_MODEL_SEED=<seed>` replays just that one and
//! `ANNALS_MODEL_SEEDS=<n>` runs more. Seeds that once failed stay below as named tests.

use std::cell::RefCell;
use std::fmt;
use std::sync::{Arc, LazyLock};

use annals_core::limits::{APPEND_EVENTS_MAX, STORE_APPEND_BYTES_MAX, STORE_EVENT_BYTES_MAX};
use annals_core::{
    ContentType, Direction, EventRecord, EventType, ExpectedRevision, Filter, FilterTarget,
    NewEvent, Position, Revision, StreamName,
};
use annals_engine::{Engine, EngineConfig};
use annals_log::{FaultStorage, LogConfig};
use annals_testkit::compare::{compare_events, compare_outcome, compare_page, compare_read};
use annals_testkit::{Model, random};
use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use rand::Rng;
use rand::rngs::StdRng;
use uuid::Uuid;

const STREAMS: [&str; 4] = ["order-1", "order-2", "cart-1", "user-7"];
/// Operations per seed.
const OPS_PER_SEED: usize = 150;
/// Seeds run by `engine_matches_model` unless `ANNALS_MODEL_SEEDS` says otherwise.
const SEEDS_DEFAULT: u64 = 100;
/// Seeds run by `engine_on_postgres_matches_model` (each a database of its own).
const SEEDS_POSTGRES: u64 = 20;

fn name(s: &str) -> StreamName {
    StreamName::new(s).unwrap()
}

/// One past append, kept for retries.
#[derive(Clone, Debug)]
struct Sent {
    stream: StreamName,
    expected: ExpectedRevision,
    events: Vec<NewEvent>,
}

/// Where the engines under test keep their events.
enum Backend {
    /// Their own log and index.
    Embedded,
    /// Each a replica of a store in PostgreSQL, a database of its own on `server`.
    Postgres {
        server: annals_testkit::postgres::TempPostgres,
        runtime: tokio::runtime::Runtime,
    },
}

impl Backend {
    fn postgres() -> Self {
        Backend::Postgres {
            server: annals_testkit::postgres::TempPostgres::start(),
            runtime: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
        }
    }
}

/// A run's store in PostgreSQL, when it has one.
struct Upstream<'b> {
    store: annals_pgstore::PgStore,
    runtime: &'b tokio::runtime::Runtime,
}

impl Upstream<'_> {
    /// Makes `engine` the replica of this store.
    fn replicate(&self, engine: &Engine) {
        let _in = self.runtime.enter();
        annals_replica::replicate(&self.store, engine);
    }
}

struct Run<'b> {
    upstream: Option<Upstream<'b>>,
    seed: u64,
    config: EngineConfig,
    rng: StdRng,
    storage: FaultStorage,
    engine: Option<Engine>,
    model: Model,
    sent: Vec<Sent>,
    /// What was done, for the failure message.
    log: Vec<String>,
}

impl<'b> Run<'b> {
    fn new(seed: u64, config: EngineConfig, backend: &'b Backend) -> Self {
        let storage = FaultStorage::new();
        let (engine, _) = Engine::open(Arc::new(storage.clone()), config.clone()).unwrap();
        let upstream = match backend {
            Backend::Embedded => None,
            Backend::Postgres { server, runtime } => {
                static DATABASES: std::sync::atomic::AtomicU64 =
                    std::sync::atomic::AtomicU64::new(0);
                let n = DATABASES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let url = server.create_database(&format!("model_{seed}_{n}"));
                let store = runtime
                    .block_on(annals_pgstore::PgStore::open(&url))
                    .unwrap();
                let upstream = Upstream { store, runtime };
                upstream.replicate(&engine);
                Some(upstream)
            }
        };
        Self {
            upstream,
            seed,
            config,
            rng: random::rng(seed),
            storage,
            engine: Some(engine),
            model: Model::new(),
            sent: Vec::new(),
            log: Vec::new(),
        }
    }

    fn engine(&self) -> &Engine {
        self.engine.as_ref().unwrap()
    }

    fn fail(&self, what: String) -> String {
        let tail: Vec<_> = self.log.iter().rev().take(25).rev().cloned().collect();
        format!(
            "seed {} (replay with ANNALS_MODEL_SEED={}), op {}: {what}\nlast operations:\n  {}",
            self.seed,
            self.seed,
            self.log.len(),
            tail.join("\n  ")
        )
    }

    fn pick_stream(&mut self) -> StreamName {
        let i = self.rng.random_range(0..STREAMS.len());
        name(STREAMS[i])
    }

    /// A stream to delete: now and then a `$$` stream, which must be refused.
    fn pick_deletable(&mut self) -> StreamName {
        let stream = self.pick_stream();
        if self.rng.random_range(0..10) == 0 {
            stream.metadata_stream().unwrap()
        } else {
            stream
        }
    }

    fn expected_for(&mut self, stream: &str) -> ExpectedRevision {
        let current = self.model.current(stream);
        match self.rng.random_range(0..12) {
            0..=2 => ExpectedRevision::Any,
            3 => ExpectedRevision::NoStream,
            4 => ExpectedRevision::StreamExists,
            5..=9 => ExpectedRevision::Exact(current.unwrap_or(0)),
            _ => ExpectedRevision::Exact(self.rng.random_range(0..current.unwrap_or(0) + 3)),
        }
    }

    fn step(&mut self) -> Result<(), String> {
        let roll = self.rng.random_range(0..1000);
        match roll {
            0..=329 => {
                let stream = self.pick_stream();
                let expected = self.expected_for(stream.as_str());
                // Mostly small appends; some long enough to read from their middle and to
                // cross the index's 128-position buckets.
                let count_max = if self.rng.random_range(0..6) == 0 {
                    24
                } else {
                    4
                };
                let events = random::random_events(&mut self.rng, count_max, 40);
                self.append(stream, expected, events)
            }
            330..=449 => self.retry(),
            450..=519 => self.set_metadata(),
            520..=569 => {
                let stream = self.pick_deletable();
                let expected = self.expected_for(stream.as_str());
                self.log.push(format!("delete {stream} {expected}"));
                let e = self.engine().delete(&stream, expected);
                let m = self.model.delete(&stream, expected);
                compare_outcome(&e, &m).map_err(|d| self.fail(d))
            }
            570..=577 => {
                let stream = self.pick_deletable();
                let expected = self.expected_for(stream.as_str());
                self.log.push(format!("tombstone {stream} {expected}"));
                let e = self.engine().tombstone(&stream, expected);
                let m = self.model.tombstone(&stream, expected);
                compare_outcome(&e, &m).map_err(|d| self.fail(d))
            }
            578..=629 => {
                // Appends at and past the input limits, to streams and to metadata streams:
                // refused (or, at a limit, taken) the same way.
                let stream = self.pick_stream();
                let to_metadata = self.rng.random_bool(0.4);
                let stream = if to_metadata {
                    stream.metadata_stream().unwrap()
                } else {
                    stream
                };
                let events = random::random_edge_append(&mut self.rng, to_metadata);
                self.append(stream, ExpectedRevision::Any, events)
            }
            630..=749 => self.read_stream(),
            750..=909 => self.read_all(),
            910..=979 => self.read_postings(),
            _ => self.reopen(),
        }
    }

    fn append(
        &mut self,
        stream: StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> Result<(), String> {
        self.log.push(format!(
            "append {stream} {expected} {} events, ids {:?}, bytes {}",
            events.len(),
            events
                .iter()
                .take(8)
                .map(|e| e.id.as_u128() as u16)
                .collect::<Vec<_>>(),
            events.iter().map(NewEvent::size_bytes).sum::<usize>()
        ));
        let e = self.engine().append(&stream, expected, events.clone());
        let m = self.model.append(&stream, expected, &events);
        compare_outcome(&e, &m).map_err(|d| self.fail(d))?;
        if !events.is_empty() {
            self.sent.push(Sent {
                stream,
                expected,
                events,
            });
        }
        Ok(())
    }

    /// Sends the ids of an earlier append again: the same request, or with another expected
    /// revision, or only its tail, or mixed with new events, or to another stream.
    fn retry(&mut self) -> Result<(), String> {
        if self.sent.is_empty() {
            return Ok(());
        }
        let i = self.rng.random_range(0..self.sent.len());
        let Sent {
            mut stream,
            mut expected,
            mut events,
        } = self.sent[i].clone();
        match self.rng.random_range(0..10) {
            0..=3 => {}
            4 => expected = ExpectedRevision::Any,
            5 => expected = self.expected_for(stream.as_str()),
            6 if events.len() > 1 => {
                let skip = self.rng.random_range(1..events.len());
                events.drain(..skip);
                expected = self.expected_for(stream.as_str());
            }
            7 => events.push(random::random_event(&mut self.rng, 10)),
            8 => {
                let at = self.rng.random_range(0..=events.len());
                events.insert(at, random::random_event(&mut self.rng, 10));
            }
            _ => {
                stream = self.pick_stream();
                expected = ExpectedRevision::Any;
            }
        }
        self.append(stream, expected, events)
    }

    fn set_metadata(&mut self) -> Result<(), String> {
        let stream = self.pick_stream();
        let meta = stream.metadata_stream().unwrap();
        let json = match self.rng.random_range(0..10) {
            0..=4 => format!(r#"{{"$maxCount":{}}}"#, self.rng.random_range(0..5)),
            5 => format!(
                r#"{{"$maxCount":{},"$tb":{}}}"#,
                self.rng.random_range(1..6),
                self.rng.random_range(0..6)
            ),
            6 => format!(r#"{{"$tb":{}}}"#, self.rng.random_range(0..8)),
            7 => r#"{"custom":"kept"}"#.to_owned(),
            8 => "{}".to_owned(),
            _ => r#"{"$maxCount":-1}"#.to_owned(),
        };
        let mut event = NewEvent::json("$metadata", json).unwrap();
        event.id = random::random_id(&mut self.rng);
        if self.rng.random_range(0..20) == 0 {
            event.event_type = annals_core::EventType::new("NotMetadata").unwrap();
        }
        let expected = if self.rng.random_bool(0.8) {
            ExpectedRevision::Any
        } else {
            self.expected_for(meta.as_str())
        };
        self.append(meta, expected, vec![event])
    }

    fn read_stream(&mut self) -> Result<(), String> {
        let stream = match self.rng.random_range(0..10) {
            0 => self.pick_stream().metadata_stream().unwrap(),
            1 => name("never-written"),
            _ => self.pick_stream(),
        };
        let current = self.model.current(stream.as_str()).unwrap_or(0);
        let direction = if self.rng.random_bool(0.5) {
            Direction::Forwards
        } else {
            Direction::Backwards
        };
        let from = match self.rng.random_range(0..4) {
            0 if direction == Direction::Backwards => Revision::END,
            0 => Revision(0),
            _ => Revision(self.rng.random_range(0..current + 3)),
        };
        let limit = if self.rng.random_range(0..5) == 0 {
            10_000
        } else {
            self.rng.random_range(0..7)
        };
        self.log.push(format!(
            "read {stream} from {from:?} {direction:?} limit {limit}"
        ));
        let e = self.engine().read_stream(&stream, from, direction, limit);
        let m = self.model.read_stream(&stream, from, direction, limit);
        compare_read(&e, &m).map_err(|d| self.fail(d))
    }

    fn read_all(&mut self) -> Result<(), String> {
        let head = self.model.head().0;
        let direction = if self.rng.random_bool(0.5) {
            Direction::Forwards
        } else {
            Direction::Backwards
        };
        let from = match self.rng.random_range(0..5) {
            0 if direction == Direction::Backwards => Position::END,
            0 => Position::START,
            _ => Position(self.rng.random_range(0..head + 3)),
        };
        let limit = if self.rng.random_range(0..5) == 0 {
            10_000
        } else {
            self.rng.random_range(0..9)
        };
        let filter = match self.rng.random_range(0..10) {
            0 => Some(Filter::prefixes(FilterTarget::StreamName, vec!["order".into()]).unwrap()),
            1 => Some(
                Filter::prefixes(
                    FilterTarget::StreamName,
                    vec!["cart-1".into(), "user".into()],
                )
                .unwrap(),
            ),
            2 => Some(Filter::prefixes(FilterTarget::StreamName, vec!["$$".into()]).unwrap()),
            3 => Some(Filter::prefixes(FilterTarget::EventType, vec!["Order".into()]).unwrap()),
            4 => Some(Filter::regex(FilterTarget::StreamName, r"^(?!\$).*-[12]$").unwrap()),
            _ => None,
        };
        self.log.push(format!(
            "read $all from {from:?} {direction:?} limit {limit} filter {filter:?}"
        ));
        let e = self
            .engine()
            .read_all(from, direction, limit, filter.as_ref())
            .map_err(|e| self.fail(format!("read_all failed: {e}")))?;
        let m = self.model.read_all(from, direction, limit, filter.as_ref());
        compare_page(&e, &m).map_err(|d| self.fail(d))
    }

    /// A read of a `$ce-` or `$et-` stream, which the index serves with dense revisions and
    /// which applies every original stream's metadata rules: as link records (the stream read a
    /// client that does not resolve links makes) or resolved, compared event and link alike.
    fn read_postings(&mut self) -> Result<(), String> {
        let direction = if self.rng.random_bool(0.5) {
            Direction::Forwards
        } else {
            Direction::Backwards
        };
        let events = self.model.head().0;
        let from = match self.rng.random_range(0..4) {
            0 if direction == Direction::Backwards => Revision::END,
            0 => Revision(0),
            _ => Revision(self.rng.random_range(0..events + 3)),
        };
        let limit = if self.rng.random_range(0..4) == 0 {
            10_000
        } else {
            self.rng.random_range(0..7)
        };
        let stream = if self.rng.random_bool(0.5) {
            let categories = ["order", "cart", "user", "$$order", "none"];
            format!(
                "$ce-{}",
                categories[self.rng.random_range(0..categories.len())]
            )
        } else {
            let types: Vec<&str> = random::EVENT_TYPES
                .iter()
                .copied()
                .chain(["$metadata", "$streamDeleted"])
                .collect();
            format!("$et-{}", types[self.rng.random_range(0..types.len())])
        };
        let resolve = self.rng.random_bool(0.5);
        self.log.push(format!(
            "read {stream} from {from:?} {direction:?} limit {limit} resolve {resolve}"
        ));
        let name = StreamName::new(&stream).unwrap();
        let m = self.model.read_indexed(&stream, from, direction, limit);
        if resolve {
            let e = self
                .engine()
                .read_stream_resolved(&name, from, direction, limit);
            match (e, m) {
                (Ok(e), Ok(m)) => {
                    let e_links: Vec<EventRecord> =
                        e.iter().map(|r| r.link.clone().unwrap()).collect();
                    let e_events: Vec<EventRecord> = e.into_iter().map(|r| r.event).collect();
                    let (m_links, m_events): (Vec<_>, Vec<_>) = m.into_iter().unzip();
                    compare_events(&e_links, &m_links)
                        .and_then(|()| compare_events(&e_events, &m_events))
                        .map_err(|d| self.fail(d))
                }
                (e, m) => compare_read(&e.map(|_| Vec::new()), &m.map(|_| Vec::new()))
                    .map_err(|d| self.fail(d)),
            }
        } else {
            let e = self.engine().read_stream(&name, from, direction, limit);
            let m = m.map(|pairs| pairs.into_iter().map(|(link, _)| link).collect());
            compare_read(&e, &m).map_err(|d| self.fail(d))
        }
    }

    fn reopen(&mut self) -> Result<(), String> {
        self.log.push("reopen".to_owned());
        let engine = self.engine.take().unwrap();
        engine.close();
        drop(engine);
        let (engine, report) = Engine::open(Arc::new(self.storage.clone()), self.config.clone())
            .map_err(|e| self.fail(format!("reopen failed: {e}")))?;
        if let Some(upstream) = &self.upstream {
            upstream.replicate(&engine);
        }
        self.engine = Some(engine);
        if report.head != self.model.head() || report.log.truncated.is_some() {
            return Err(self.fail(format!("reopen report {report:?}")));
        }
        Ok(())
    }

    /// Everything in `$all`, the head and the store check agree with the model.
    fn final_check(&mut self) -> Result<(), String> {
        let head = self.model.head();
        if self.engine().head() != head {
            return Err(self.fail(format!("head {:?}, model {head:?}", self.engine().head())));
        }
        let all = self
            .engine()
            .read_all(Position::START, Direction::Forwards, 100_000, None)
            .map_err(|e| self.fail(e.to_string()))?;
        compare_events(&all.events, self.model.events()).map_err(|d| self.fail(d))?;
        let check = self
            .engine()
            .check(|_| {})
            .map_err(|e| self.fail(e.to_string()))?;
        if !check.problems.is_empty() || check.events != head.0 {
            return Err(self.fail(format!("check: {check:?}")));
        }
        Ok(())
    }
}

impl Drop for Run<'_> {
    /// Closes the engine: a replica's follower holds a handle of its own and ends only then,
    /// and with it the run's connections to PostgreSQL.
    fn drop(&mut self) {
        if let Some(engine) = self.engine.take() {
            engine.close();
        }
    }
}

/// Names the seed if a run panics instead of returning a difference.
struct SeedGuard(u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "panicked in seed {} (replay with ANNALS_MODEL_SEED={})",
                self.0, self.0
            );
        }
    }
}

/// Runs `ops` random operations from `seed`; `Err` describes the first difference.
fn run_seed(seed: u64, ops: usize, config: &EngineConfig, backend: &Backend) -> Result<(), String> {
    let _guard = SeedGuard(seed);
    let mut run = Run::new(seed, config.clone(), backend);
    for _ in 0..ops {
        run.step()?;
    }
    run.final_check()?;
    // Reopened, the store still agrees.
    run.reopen()?;
    run.final_check()
}

fn env_u64(key: &str) -> Option<u64> {
    std::env::var(key).ok().and_then(|v| v.parse().ok())
}

/// Runs the seeds the environment asks for, or `0..seeds_default`, and fails naming the first
/// failing seed.
fn run_seeds(seeds_default: u64, config: &EngineConfig, backend: &Backend) {
    if let Some(seed) = env_u64("ANNALS_MODEL_SEED") {
        if let Err(e) = run_seed(seed, OPS_PER_SEED, config, backend) {
            panic!("{e}");
        }
        return;
    }
    let seeds = env_u64("ANNALS_MODEL_SEEDS").unwrap_or(seeds_default);
    let failures: Vec<String> = (0..seeds)
        .filter_map(|seed| run_seed(seed, OPS_PER_SEED, config, backend).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {seeds} seeds failed; the first:\n{}",
        failures.len(),
        failures[0]
    );
}

#[test]
fn engine_matches_model() {
    run_seeds(SEEDS_DEFAULT, &EngineConfig::default(), &Backend::Embedded);
}

/// The same runs on a replica of a store in PostgreSQL.
#[test]
fn engine_on_postgres_matches_model() {
    run_seeds(
        SEEDS_POSTGRES,
        &EngineConfig::default(),
        &Backend::postgres(),
    );
}

/// The same with 4 KiB segments, so reads, scans and reopens cross many segment boundaries.
#[test]
fn engine_matches_model_with_small_segments() {
    let config = EngineConfig {
        log: LogConfig {
            segment_bytes_max: 4096,
            ..Default::default()
        },
        ..EngineConfig::default()
    };
    run_seeds(SEEDS_DEFAULT / 4, &config, &Backend::Embedded);
}

/// The same append sent from several threads at once (a client retrying before its first try
/// was answered) is written once; every sender gets the one result.
#[test]
fn concurrent_retries_of_one_append_write_it_once() {
    let storage = FaultStorage::new();
    let (engine, _) = Engine::open(Arc::new(storage), EngineConfig::default()).unwrap();
    let mut rng = random::rng(77);
    for round in 0..30u64 {
        let stream = name(&format!("dup-{}", round % 3));
        let events = random::random_events(&mut rng, 4, 20);
        let expected = ExpectedRevision::Any;
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let engine = engine.clone();
                    let (stream, events) = (stream.clone(), events.clone());
                    s.spawn(move || engine.append(&stream, expected, events).unwrap())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(
            results.iter().all(|r| *r == results[0]),
            "round {round}: {results:?}"
        );
        let n = events.len() as u64;
        assert_eq!(
            engine.head(),
            results[0].position,
            "round {round}: written more than once"
        );
        let stored = engine
            .read_all(
                Position(results[0].position.0 + 1 - n),
                Direction::Forwards,
                100,
                None,
            )
            .unwrap()
            .events;
        assert_eq!(
            stored.iter().map(|e| e.id).collect::<Vec<_>>(),
            events.iter().map(|e| e.id).collect::<Vec<_>>()
        );
    }
}

/// Regression (found by the model, seed 0): a backwards `$all` read with limit 0 answered
/// `next = 0, end_reached = true` — "nothing below" — although it looked at nothing.
#[test]
fn read_all_backwards_with_limit_zero_looks_at_nothing() {
    let (engine, _) = Engine::open(Arc::new(FaultStorage::new()), EngineConfig::default()).unwrap();
    let events = random::random_events(&mut random::rng(3), 4, 10);
    let n = events.len() as u64;
    engine
        .append(&name("z-1"), ExpectedRevision::Any, events)
        .unwrap();
    let page = engine
        .read_all(Position(n), Direction::Backwards, 0, None)
        .unwrap();
    assert!(page.events.is_empty());
    assert_eq!((page.next, page.end_reached), (Position(n), false));
    let empty = engine
        .read_all(Position(0), Direction::Backwards, 0, None)
        .unwrap();
    assert_eq!((empty.next, empty.end_reached), (Position(0), true));
}

/// Filler for events of a chosen size: every event's data is a slice of it, so events near the
/// size limits cost no copying.
static FILLER: LazyLock<Bytes> =
    LazyLock::new(|| Bytes::from(vec![b'x'; STORE_APPEND_BYTES_MAX + 64]));

/// One append as the validation property sends it. Its `Debug` names sizes, not payloads: a
/// failing case may hold megabytes.
#[derive(Clone)]
struct AppendCase {
    stream: StreamName,
    events: Vec<NewEvent>,
}

impl fmt::Debug for AppendCase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let events: Vec<String> = self
            .events
            .iter()
            .take(8)
            .map(|e| {
                let data = if e.data.len() <= 40 {
                    String::from_utf8_lossy(&e.data).into_owned()
                } else {
                    format!("{} bytes", e.data.len())
                };
                format!(
                    "{} id {} data {data:?} metadata {} bytes",
                    e.event_type,
                    e.id.as_u128(),
                    e.metadata.len()
                )
            })
            .collect();
        write!(
            f,
            "append to {} of {} events: {events:?}",
            self.stream,
            self.events.len()
        )
    }
}

/// The size an event is built to: small, or at or just past one of the limits.
fn event_size() -> impl Strategy<Value = usize> {
    prop_oneof![
        8 => 0usize..64,
        1 => Just(STORE_EVENT_BYTES_MAX),
        1 => Just(STORE_EVENT_BYTES_MAX + 1),
        2 => Just(STORE_APPEND_BYTES_MAX / 2),
        2 => Just(STORE_APPEND_BYTES_MAX / 2 + 1),
    ]
}

/// Data for an event: metadata JSON, good or bad, or filler.
fn event_data() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just(r#"{"$maxCount":3}"#),
        Just(r#"{"$tb":1,"custom":true}"#),
        Just("{}"),
        Just(r#"{"$maxCount":-1}"#),
        Just("[]"),
        Just("not json"),
        Just(""),
    ]
}

/// One event: an id from a small pool (so appends repeat ids), a type, and data of a chosen size
/// (JSON data when small).
fn event() -> impl Strategy<Value = NewEvent> {
    (
        0u128..6,
        prop_oneof![Just("$metadata"), Just("OrderPlaced"), Just("T")],
        event_size(),
        event_data(),
        0usize..3,
    )
        .prop_map(|(id, ty, size, json, metadata)| {
            let metadata = FILLER.slice(..metadata);
            let data = if size < 64 {
                Bytes::from_static(json.as_bytes())
            } else {
                // Data that brings the whole event (data, metadata, type) to `size`.
                FILLER.slice(..size.saturating_sub(metadata.len() + ty.len()))
            };
            NewEvent {
                id: Uuid::from_u128(id),
                event_type: EventType::new(ty).unwrap(),
                content_type: ContentType::Json,
                data,
                metadata,
            }
        })
}

fn append_case() -> impl Strategy<Value = AppendCase> {
    let events = prop_oneof![
        1 => Just(Vec::new()),
        12 => proptest::collection::vec(event(), 1..4),
        // Over the count limit: tiny events, distinct ids.
        1 => (1usize..3).prop_map(|over| {
            (0..APPEND_EVENTS_MAX + over)
                .map(|i| NewEvent {
                    id: Uuid::from_u128(1_000 + i as u128),
                    ..NewEvent::json("T", "{}").unwrap()
                })
                .collect()
        }),
    ];
    (
        prop_oneof![Just("order-1"), Just("$$order-1"), Just("$$cart-2")],
        events,
        any::<u64>(),
    )
        .prop_map(|(stream, mut events, salt)| {
            // Ids unique to this case, keeping which events of it share one.
            for e in &mut events {
                e.id = Uuid::from_u128(e.id.as_u128() ^ (u128::from(salt) << 64));
            }
            AppendCase {
                stream: StreamName::new(stream).unwrap(),
                events,
            }
        })
}

/// Appends near and past every input limit (empty, too many events, an event or the whole append
/// too large, repeated ids, bad metadata appends, and several at once) give the model's answer:
/// the same error, or the same result.
#[test]
fn append_validation_matches_model() {
    let (engine, _) = Engine::open(Arc::new(FaultStorage::new()), EngineConfig::default()).unwrap();
    let model = RefCell::new(Model::new());
    let config = ProptestConfig {
        cases: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let result = TestRunner::new(config).run(&append_case(), |case| {
        let e = engine.append(&case.stream, ExpectedRevision::Any, case.events.clone());
        let m = model
            .borrow_mut()
            .append(&case.stream, ExpectedRevision::Any, &case.events);
        compare_outcome(&e, &m).map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    engine.close();
}
