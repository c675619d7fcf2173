//! `annals bench replay`: reads all of `$all` through the engine, page by page, against a plain
//! sequential read of the same segment files; and `annals bench fill`, which fills a store quickly
//! (no fsync, 100-event appends) up to a number of events.
//!
//! The fill runs in a child process, so the open time and resident memory this process reports
//! are those of opening an existing store, not of having written it. Both sides read from the page
//! cache: one untimed pass over the files warms it first, then engine and baseline alternate.

use std::fs::File;
use std::io::Read;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use annals_core::{ContentType, Direction, EventType, ExpectedRevision, NewEvent, Position};
use annals_core::{StreamName, limits::APPEND_EVENTS_MAX};
use annals_engine::{Durability, Engine};
use bytes::Bytes;
use rand::Rng;
use serde::Serialize;

use crate::error::{BenchError, Context, ensure};
use crate::measure::{ratio, rss_mb, with_progress};
use crate::report::{emit, round2};
use crate::store;
use crate::workload::{EVENT_TYPE, event_data, take};

/// Events asked for per `read_all` call.
const REPLAY_PAGE_EVENTS: usize = 4_096;
/// Buffer of the baseline's plain reads.
const BASELINE_READ_BYTES: usize = 8 * 1024 * 1024;
/// Writer threads of the fill; enough to keep the single engine writer busy.
const FILL_WRITERS: u32 = 4;

/// The settings of `bench replay`.
///
/// The store is filled first by a child process: the current executable run as
/// `<exe> bench fill --events N --data DIR`, so the bench must run in a binary with that command
/// (`annals`), whose `bench fill` runs [`crate::Bench::Fill`].
#[derive(Clone, Debug)]
pub struct ReplayConfig {
    /// Store directory; filled up to `events` first.
    pub data: PathBuf,
    /// Events the store should hold.
    pub events: u64,
    /// Engine and baseline alternate this many times.
    pub rounds: u32,
    /// Print the figures as one JSON line.
    pub json: bool,
}

/// The settings of `bench fill`.
#[derive(Clone, Debug)]
pub struct FillConfig {
    /// Store directory (created if missing).
    pub data: PathBuf,
    /// Events the store should hold in all.
    pub events: u64,
    /// Streams to spread the appends over.
    pub streams: u32,
    /// Events per append.
    pub batch: u32,
}

#[derive(Debug, Serialize)]
struct Figures {
    bench: &'static str,
    events: u64,
    rounds: u32,
    data_bytes: u64,
    segment_bytes: u64,
    open_ms: f64,
    /// `Engine::replay_all`: the visitor replay, what a rebuild uses.
    events_per_s: f64,
    mb_per_s: f64,
    /// `Engine::read_all` in pages of owned events.
    paged_events_per_s: f64,
    baseline_events_per_s: f64,
    baseline_mb_per_s: f64,
    ratio: f64,
    paged_ratio: f64,
    rss_mb_after_open: f64,
    rss_mb: f64,
}

pub(crate) fn run(config: &ReplayConfig) -> Result<(), BenchError> {
    if config.rounds == 0 {
        return Err(BenchError::Options(
            "--rounds must be at least 1".to_owned(),
        ));
    }
    fill_in_child(&config.data, config.events)?;
    let started = Instant::now();
    let (engine, report) = store::open(&config.data, Durability::Fsync)?;
    let open_ms = started.elapsed().as_secs_f64() * 1e3;
    let rss_mb_after_open = rss_mb();
    let result = measure(&engine, report.head, config);
    let rss_mb = rss_mb();
    engine.close();
    let mut figures = result?;
    figures.open_ms = round2(open_ms);
    figures.rss_mb_after_open = round2(rss_mb_after_open);
    figures.rss_mb = round2(rss_mb);
    emit(&figures, config.json)
}

fn measure(engine: &Engine, head: Position, config: &ReplayConfig) -> Result<Figures, BenchError> {
    let files = segment_files(&config.data)?;
    // Warm the page cache for both sides alike.
    let segment_bytes = read_files(&files)?;
    ensure(head.0 > 0, || "the store is empty".to_owned())?;
    let bytes_per_event = segment_bytes as f64 / head.0 as f64;
    let (mut engine_events, mut engine_time, mut data_bytes) = (0u64, Duration::ZERO, 0u64);
    let (mut visited, mut visit_time) = (0u64, Duration::ZERO);
    let (mut baseline_bytes, mut baseline_time) = (0u64, Duration::ZERO);
    for round in 0..config.rounds {
        // The visitor replay runs right after the baseline's warm read, before the paged read
        // fills the allocator with millions of freed events.
        let started = Instant::now();
        let (visited_now, _) = visit(engine)?;
        let visit_elapsed = started.elapsed();
        visited += visited_now;
        visit_time += visit_elapsed;
        let started = Instant::now();
        let (events, bytes) = replay(engine)?;
        let elapsed = started.elapsed();
        if events != head.0 {
            tracing::warn!(events, head = head.0, "replay read other than head events");
        }
        engine_events += events;
        data_bytes = bytes;
        engine_time += elapsed;
        let started = Instant::now();
        let read = read_files(&files)?;
        let baseline_elapsed = started.elapsed();
        baseline_bytes += read;
        baseline_time += baseline_elapsed;
        tracing::info!(
            "bench replay: round {}/{}: read_all {:.0} events/s, replay_all {:.0} events/s, baseline {:.0} events/s",
            round + 1,
            config.rounds,
            events as f64 / elapsed.as_secs_f64(),
            visited_now as f64 / visit_elapsed.as_secs_f64(),
            read as f64 / bytes_per_event / baseline_elapsed.as_secs_f64(),
        );
    }
    let events_per_s = engine_events as f64 / engine_time.as_secs_f64();
    let baseline_events_per_s =
        baseline_bytes as f64 / bytes_per_event / baseline_time.as_secs_f64();
    let replay_all_events_per_s = visited as f64 / visit_time.as_secs_f64();
    let mb = 1024.0 * 1024.0;
    Ok(Figures {
        bench: "replay",
        events: head.0,
        rounds: config.rounds,
        data_bytes,
        segment_bytes,
        open_ms: 0.0,
        events_per_s: round2(replay_all_events_per_s),
        mb_per_s: round2(
            segment_bytes as f64 * f64::from(config.rounds) / mb / visit_time.as_secs_f64(),
        ),
        paged_events_per_s: round2(events_per_s),
        baseline_events_per_s: round2(baseline_events_per_s),
        baseline_mb_per_s: round2(baseline_bytes as f64 / mb / baseline_time.as_secs_f64()),
        ratio: ratio(replay_all_events_per_s, baseline_events_per_s),
        paged_ratio: ratio(events_per_s, baseline_events_per_s),
        rss_mb_after_open: 0.0,
        rss_mb: 0.0,
    })
}

/// Reads all of `$all` from position 1; returns the events read and the sum of their data sizes,
/// which makes every event's data be looked at.
fn replay(engine: &Engine) -> Result<(u64, u64), BenchError> {
    let (mut events, mut bytes) = (0u64, 0u64);
    let mut from = Position(1);
    loop {
        let page = engine.read_all(from, Direction::Forwards, REPLAY_PAGE_EVENTS, None)?;
        for e in &page.events {
            events += 1;
            bytes += std::hint::black_box(e.data.len()) as u64;
        }
        if page.end_reached || page.events.is_empty() {
            break;
        }
        from = page.next;
    }
    Ok((events, bytes))
}

/// Visits all of `$all` from position 1 with borrowed views (no allocation per event); returns
/// the events visited and the sum of their data sizes.
fn visit(engine: &Engine) -> Result<(u64, u64), BenchError> {
    let (mut events, mut bytes) = (0u64, 0u64);
    engine.replay_all(Position(1), |e| {
        events += 1;
        bytes += std::hint::black_box(e.data.len()) as u64;
        ControlFlow::Continue(())
    })?;
    Ok((events, bytes))
}

/// The store's segment files, in log order.
fn segment_files(dir: &Path) -> Result<Vec<PathBuf>, BenchError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    files.sort();
    Ok(files)
}

/// Reads every file from start to end into one large buffer; returns the bytes read.
fn read_files(files: &[PathBuf]) -> Result<u64, BenchError> {
    let mut buf = vec![0u8; BASELINE_READ_BYTES];
    let mut total = 0u64;
    for path in files {
        let mut f = File::open(path).context(|| format!("cannot open {}", path.display()))?;
        loop {
            let n = f
                .read(&mut buf)
                .context(|| format!("cannot read {}", path.display()))?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
    }
    Ok(total)
}

/// Runs `annals bench fill` as a child process (the current executable) and waits for it.
fn fill_in_child(dir: &Path, events: u64) -> Result<(), BenchError> {
    let exe = std::env::current_exe().context(|| "cannot find the annals binary".to_owned())?;
    let status = std::process::Command::new(exe)
        .args(["bench", "fill", "--events", &events.to_string(), "--data"])
        .arg(dir)
        .status()
        .context(|| "cannot start the fill process".to_owned())?;
    ensure(status.success(), || {
        format!("filling the store failed: {status}")
    })
}

/// `annals bench fill`: appends ~200-byte events without fsync until the store holds
/// `config.events`.
pub(crate) fn fill(config: &FillConfig) -> Result<(), BenchError> {
    if config.streams == 0 || config.batch == 0 || config.batch as usize > APPEND_EVENTS_MAX {
        return Err(BenchError::Options(format!(
            "--streams must be at least 1 and --batch within 1..={APPEND_EVENTS_MAX}"
        )));
    }
    let (engine, report) = store::open(&config.data, Durability::None)?;
    let need = config.events.saturating_sub(report.head.0);
    if need == 0 {
        tracing::info!("bench fill: the store already holds {} events", report.head);
        engine.close();
        return Ok(());
    }
    tracing::info!("bench fill: appending {need} events");
    let result = append_events(&engine, need, config);
    engine.close();
    result
}

fn append_events(engine: &Engine, events: u64, config: &FillConfig) -> Result<(), BenchError> {
    let event_type = EventType::new(EVENT_TYPE)?;
    let data = event_data();
    let remaining = AtomicU64::new(events);
    let done = AtomicU64::new(0);
    with_progress("bench fill", events, &done, || {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..FILL_WRITERS)
                .map(|_| {
                    let (remaining, done, event_type, data) =
                        (&remaining, &done, &event_type, &data);
                    s.spawn(move || -> Result<(), BenchError> {
                        let mut rng = rand::rng();
                        loop {
                            let n = take(remaining, u64::from(config.batch));
                            if n == 0 {
                                return Ok(());
                            }
                            let stream = StreamName::new(format!(
                                "fill-{}",
                                rng.random_range(0..config.streams)
                            ))?;
                            let batch = (0..n)
                                .map(|_| NewEvent {
                                    id: uuid::Uuid::new_v4(),
                                    event_type: event_type.clone(),
                                    content_type: ContentType::Json,
                                    data: data.clone(),
                                    metadata: Bytes::new(),
                                })
                                .collect();
                            engine.append(&stream, ExpectedRevision::Any, batch)?;
                            done.fetch_add(n, Ordering::Relaxed);
                        }
                    })
                })
                .collect();
            handles.into_iter().try_for_each(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(BenchError::Worker {
                        what: "a fill thread",
                        reason: "it panicked".to_owned(),
                    })
                })
            })
        })
    })
}
