//! `annals bench append`: many writer threads append ~200-byte events with fsync durability; the
//! baseline is the disk's own group-commit ceiling, a plain loop of `write_all` + `sync_data` of
//! batches as large as the engine's were (events per segment sync, measured by the probe),
//! appending to a growing file. A second baseline runs the same loop over a file filled with
//! zeros beforehand, as the engine's log is (`prealloc_*` fields): the ceiling when each sync
//! commits no file-system metadata.
//!
//! Engine and baseline alternate in rounds, so a flip of the disk between fast and slow fsync
//! periods hits both sides alike.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use annals_core::{ContentType, EventType, ExpectedRevision, NewEvent, StreamName};
use annals_engine::{Durability, Engine, EngineConfig};
use bytes::Bytes;
use hdrhistogram::Histogram;
use rand::Rng;
use serde::Serialize;

use crate::error::{BenchError, Context};
use crate::measure::{latency_histogram, merge, micros, ratio, runtime, with_progress};
use crate::probe::{ProbedStorage, SyncProbe};
use crate::report::{emit, round2};
use crate::store;
use crate::workload::{EVENT_TYPE, event_data, random_id, take};

/// File the baseline loops write in the data directory; removed afterwards.
const BASELINE_FILE: &str = "bench-baseline.tmp";
/// Zeros written at a time when preallocating the second baseline's file.
const PREALLOC_CHUNK_BYTES: usize = 1024 * 1024;
/// Least time a baseline round may run, so a tiny engine round still gets a fair sample.
const BASELINE_ROUND_MIN: Duration = Duration::from_millis(500);

/// The settings of `bench append`.
#[derive(Clone, Debug)]
pub struct AppendConfig {
    /// Store directory (created if missing).
    pub data: PathBuf,
    /// Concurrent writers.
    pub writers: u32,
    /// Events to append in all.
    pub events: u64,
    /// Events per append (~200 bytes each).
    pub batch: u32,
    /// Streams to spread the appends over, at random.
    pub streams: u32,
    /// Engine and baseline alternate this many times, since the disk's fsync speed drifts.
    pub rounds: u32,
    /// Print the figures as one JSON line.
    pub json: bool,
}
#[derive(Debug, Serialize)]
struct Figures {
    bench: &'static str,
    writers: u32,
    batch: u32,
    events: u64,
    rounds: u32,
    elapsed_s: f64,
    events_per_s: f64,
    appends_per_s: f64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
    group_commits: u64,
    batch_events_avg: f64,
    batch_bytes_avg: f64,
    fsync_p50_us: u64,
    fsync_p99_us: u64,
    fsync_mean_us: f64,
    baseline_events_per_s: f64,
    baseline_fsync_p50_us: u64,
    baseline_fsync_p99_us: u64,
    baseline_fsync_mean_us: f64,
    ratio: f64,
    prealloc_baseline_events_per_s: f64,
    prealloc_baseline_fsync_mean_us: f64,
    prealloc_ratio: f64,
}

/// Totals of the baseline side over all rounds.
#[derive(Debug)]
struct Baseline {
    events: f64,
    elapsed: Duration,
    fsync_us: Histogram<u64>,
}

pub(crate) fn run(config: &AppendConfig) -> Result<(), BenchError> {
    if config.writers == 0 || config.batch == 0 || config.rounds == 0 || config.streams == 0 {
        return Err(BenchError::Options(
            "--writers, --batch, --rounds and --streams must be at least 1".to_owned(),
        ));
    }
    std::fs::create_dir_all(&config.data)
        .context(|| format!("cannot create {}", config.data.display()))?;
    let probe = Arc::new(SyncProbe::new());
    let storage = ProbedStorage::open(&config.data, Arc::clone(&probe))
        .context(|| format!("cannot open store {}", config.data.display()))?;
    let engine_config = EngineConfig {
        durability: Durability::Fsync,
        ..EngineConfig::default()
    };
    let (engine, report) =
        Engine::open(Arc::new(storage), engine_config).map_err(|source| BenchError::OpenStore {
            dir: config.data.clone(),
            source,
        })?;
    store::log_open_report(&config.data, &report);
    let result = measure(&engine, &probe, config);
    engine.close();
    let _ = std::fs::remove_file(config.data.join(BASELINE_FILE));
    emit(&result?, config.json)
}

fn measure(
    engine: &Engine,
    probe: &SyncProbe,
    config: &AppendConfig,
) -> Result<Figures, BenchError> {
    let baseline_path = config.data.join(BASELINE_FILE);
    let data = event_data();
    let mut latency_us = latency_histogram();
    let mut engine_elapsed = Duration::ZERO;
    let (mut events, mut syncs, mut bytes, mut appends) = (0u64, 0u64, 0u64, 0u64);
    let mut baseline = Baseline::new();
    let mut prealloc = Baseline::new();
    for round in 0..u64::from(config.rounds) {
        let share = config.events / u64::from(config.rounds)
            + u64::from(round < config.events % u64::from(config.rounds));
        let (syncs0, bytes0) = (probe.syncs(), engine.log().bytes());
        let started = Instant::now();
        let done = run_writers(engine, config, share, &data, &mut latency_us)?;
        let elapsed = started.elapsed();
        let round_syncs = probe.syncs() - syncs0;
        let round_bytes = engine.log().bytes() - bytes0;
        engine_elapsed += elapsed;
        events += done.events;
        appends += done.appends;
        syncs += round_syncs;
        bytes += round_bytes;
        if round_syncs == 0 {
            continue;
        }
        let batch_bytes = round_bytes / round_syncs;
        let batch_events = done.events as f64 / round_syncs as f64;
        let time_max = (elapsed * 2).max(BASELINE_ROUND_MIN);
        let growing = baseline.run(
            &baseline_path,
            false,
            batch_bytes,
            batch_events,
            round_syncs,
            time_max,
        )?;
        let zeroed = prealloc.run(
            &baseline_path,
            true,
            batch_bytes,
            batch_events,
            round_syncs,
            time_max,
        )?;
        tracing::info!(
            "bench append: round {}/{}: engine {:.0} events/s (batch {:.1} events), baseline {:.0} events/s, preallocated baseline {:.0} events/s",
            round + 1,
            config.rounds,
            done.events as f64 / elapsed.as_secs_f64(),
            batch_events,
            growing,
            zeroed,
        );
    }
    let fsync_us = probe.latency_us();
    let events_per_s = events as f64 / engine_elapsed.as_secs_f64();
    let baseline_events_per_s = baseline.events_per_s();
    let prealloc_events_per_s = prealloc.events_per_s();
    Ok(Figures {
        bench: "append",
        writers: config.writers,
        batch: config.batch,
        events,
        rounds: config.rounds,
        elapsed_s: round2(engine_elapsed.as_secs_f64()),
        events_per_s: round2(events_per_s),
        appends_per_s: round2(appends as f64 / engine_elapsed.as_secs_f64()),
        p50_us: latency_us.value_at_quantile(0.5),
        p99_us: latency_us.value_at_quantile(0.99),
        p999_us: latency_us.value_at_quantile(0.999),
        max_us: latency_us.max(),
        group_commits: syncs,
        batch_events_avg: round2(events as f64 / syncs.max(1) as f64),
        batch_bytes_avg: round2(bytes as f64 / syncs.max(1) as f64),
        fsync_p50_us: fsync_us.value_at_quantile(0.5),
        fsync_p99_us: fsync_us.value_at_quantile(0.99),
        fsync_mean_us: round2(fsync_us.mean()),
        baseline_events_per_s: round2(baseline_events_per_s),
        baseline_fsync_p50_us: baseline.fsync_us.value_at_quantile(0.5),
        baseline_fsync_p99_us: baseline.fsync_us.value_at_quantile(0.99),
        baseline_fsync_mean_us: round2(baseline.fsync_us.mean()),
        ratio: ratio(events_per_s, baseline_events_per_s),
        prealloc_baseline_events_per_s: round2(prealloc_events_per_s),
        prealloc_baseline_fsync_mean_us: round2(prealloc.fsync_us.mean()),
        prealloc_ratio: ratio(events_per_s, prealloc_events_per_s),
    })
}

#[derive(Debug, Default)]
struct Done {
    events: u64,
    appends: u64,
}

/// Appends `events` events from `config.writers` concurrent writers, `config.batch` per append,
/// recording each append's latency. The writers are tasks on a two-thread async runtime, as in
/// the server, rather than 64 OS threads whose wake-ups would dominate on a 2-core machine.
fn run_writers(
    engine: &Engine,
    config: &AppendConfig,
    events: u64,
    data: &Bytes,
    latency_us: &mut Histogram<u64>,
) -> Result<Done, BenchError> {
    let event_type = EventType::new(EVENT_TYPE)?;
    let remaining = Arc::new(AtomicU64::new(events));
    let acked = Arc::new(AtomicU64::new(0));
    let runtime = runtime("the writers")?;
    let per_writer = with_progress("bench append", events, &acked, || {
        runtime.block_on(async {
            let tasks: Vec<_> = (0..config.writers)
                .map(|_| {
                    let (remaining, acked) = (Arc::clone(&remaining), Arc::clone(&acked));
                    let (engine, event_type, data) =
                        (engine.clone(), event_type.clone(), data.clone());
                    let (batch, streams) = (config.batch, config.streams);
                    tokio::spawn(async move {
                        let mut hist = latency_histogram();
                        let mut appends = 0u64;
                        loop {
                            let n = take(&remaining, u64::from(batch));
                            if n == 0 {
                                break;
                            }
                            let stream = StreamName::new(format!(
                                "bench-{}",
                                rand::rng().random_range(0..streams)
                            ))?;
                            let events = (0..n)
                                .map(|_| NewEvent {
                                    id: random_id(),
                                    event_type: event_type.clone(),
                                    content_type: ContentType::Json,
                                    data: data.clone(),
                                    metadata: Bytes::new(),
                                })
                                .collect();
                            let started = Instant::now();
                            engine
                                .append_async(&stream, ExpectedRevision::Any, events)
                                .await?;
                            hist.saturating_record(micros(started.elapsed()));
                            appends += 1;
                            acked.fetch_add(n, Ordering::Relaxed);
                        }
                        Ok::<_, BenchError>((hist, appends))
                    })
                })
                .collect();
            let mut results = Vec::with_capacity(tasks.len());
            for task in tasks {
                results.push(task.await.unwrap_or_else(|e| {
                    Err(BenchError::Worker {
                        what: "a writer task",
                        reason: e.to_string(),
                    })
                }));
            }
            results
        })
    });
    let mut done = Done::default();
    for r in per_writer {
        let (hist, appends) = r?;
        merge(latency_us, &hist)?;
        done.appends += appends;
    }
    done.events = acked.load(Ordering::Relaxed);
    Ok(done)
}

impl Baseline {
    fn new() -> Self {
        Self {
            events: 0.0,
            elapsed: Duration::ZERO,
            fsync_us: latency_histogram(),
        }
    }

    fn events_per_s(&self) -> f64 {
        self.events / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Writes `batches` batches of `batch_bytes` bytes to a fresh file at `path`, each followed
    /// by `sync_data`, stopping early after `time_max`; with `zeroed`, over a file first filled
    /// with zeros and synced (not timed). Adds the events those batches stand for and returns
    /// this round's rate.
    fn run(
        &mut self,
        path: &Path,
        zeroed: bool,
        batch_bytes: u64,
        batch_events: f64,
        batches: u64,
        time_max: Duration,
    ) -> Result<f64, BenchError> {
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(true)
            .open(path)
            .context(|| "cannot create the baseline file".to_owned())?;
        if zeroed {
            let zeros = vec![0u8; PREALLOC_CHUNK_BYTES];
            let mut left = batch_bytes.saturating_mul(batches);
            while left > 0 {
                let n = left.min(PREALLOC_CHUNK_BYTES as u64);
                file.write_all(zeros.get(..n as usize).unwrap_or_default())
                    .context(|| "baseline preallocation".to_owned())?;
                left -= n;
            }
            file.sync_all()
                .context(|| "baseline preallocation sync".to_owned())?;
            file.seek(SeekFrom::Start(0))
                .context(|| "baseline seek".to_owned())?;
        }
        let len = usize::try_from(batch_bytes.max(1))
            .map_err(|_| BenchError::Check(format!("a batch of {batch_bytes} bytes")))?;
        let buf = vec![0x5a_u8; len];
        let started = Instant::now();
        let mut done = 0;
        while done < batches && started.elapsed() < time_max {
            file.write_all(&buf)
                .context(|| "baseline write".to_owned())?;
            let t = Instant::now();
            file.sync_data().context(|| "baseline sync".to_owned())?;
            self.fsync_us.saturating_record(micros(t.elapsed()));
            done += 1;
        }
        let elapsed = started.elapsed();
        let events = done as f64 * batch_events;
        self.events += events;
        self.elapsed += elapsed;
        Ok(events / elapsed.as_secs_f64().max(1e-9))
    }
}
