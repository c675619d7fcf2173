//! `annals bench read-stream`: reads whole 100-event streams chosen at random, one at a time, and
//! reports the latency of each read and the reads per second. Streams are filled first where they
//! hold fewer than 100 events (no fsync: the fill is not what is measured).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use annals_core::{
    ContentType, Direction, DomainError, EventType, ExpectedRevision, NewEvent, Revision,
    StreamName,
};
use annals_engine::{Durability, Engine};
use bytes::Bytes;
use rand::Rng;
use serde::Serialize;

use crate::error::{BenchError, ensure};
use crate::measure::{latency_histogram, micros, with_progress};
use crate::report::{emit, round2};
use crate::store;
use crate::workload::{EVENT_TYPE, event_data};

/// Events in every stream this bench reads.
const EVENTS_PER_STREAM: u64 = 100;
/// Threads filling streams.
const FILL_WRITERS: u32 = 4;

/// The settings of `bench read-stream`.
#[derive(Clone, Debug)]
pub struct ReadStreamConfig {
    /// Store directory (created if missing); its streams are filled first where short.
    pub data: PathBuf,
    /// Streams of 100 events each to read from.
    pub streams: u32,
    /// Stream reads to time.
    pub reads: u64,
    /// Print the figures as one JSON line.
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Figures {
    bench: &'static str,
    streams: u32,
    reads: u64,
    elapsed_s: f64,
    reads_per_s: f64,
    events_per_s: f64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
}

pub(crate) fn run(config: &ReadStreamConfig) -> Result<(), BenchError> {
    if config.streams == 0 || config.reads == 0 {
        return Err(BenchError::Options(
            "--streams and --reads must be at least 1".to_owned(),
        ));
    }
    let (engine, _) = store::open(&config.data, Durability::None)?;
    let result = fill(&engine, config.streams).and_then(|()| measure(&engine, config));
    engine.close();
    emit(&result?, config.json)
}

fn stream_name(i: u64) -> Result<StreamName, BenchError> {
    Ok(StreamName::new(format!("rs-{i}"))?)
}

/// Tops every stream `rs-0` .. `rs-{streams-1}` up to [`EVENTS_PER_STREAM`] events.
fn fill(engine: &Engine, streams: u32) -> Result<(), BenchError> {
    let event_type = EventType::new(EVENT_TYPE)?;
    let data = event_data();
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    with_progress("bench read-stream fill", u64::from(streams), &done, || {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..FILL_WRITERS)
                .map(|_| {
                    let (next, done, event_type, data) = (&next, &done, &event_type, &data);
                    s.spawn(move || -> Result<(), BenchError> {
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= u64::from(streams) {
                                return Ok(());
                            }
                            top_up(engine, &stream_name(i)?, event_type, data)?;
                            done.fetch_add(1, Ordering::Relaxed);
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

/// Appends to `stream` what it lacks of [`EVENTS_PER_STREAM`] events.
fn top_up(
    engine: &Engine,
    stream: &StreamName,
    event_type: &EventType,
    data: &Bytes,
) -> Result<(), BenchError> {
    let held = match engine.read_stream(stream, Revision::END, Direction::Backwards, 1) {
        Ok(events) => events.first().map_or(0, |e| e.revision.0 + 1),
        Err(e) if matches!(e.domain(), Some(DomainError::StreamNotFound { .. })) => 0,
        Err(e) => return Err(e.into()),
    };
    if held >= EVENTS_PER_STREAM {
        return Ok(());
    }
    let expected = match held {
        0 => ExpectedRevision::NoStream,
        n => ExpectedRevision::Exact(n - 1),
    };
    let events = (held..EVENTS_PER_STREAM)
        .map(|_| NewEvent {
            id: uuid::Uuid::new_v4(),
            event_type: event_type.clone(),
            content_type: ContentType::Json,
            data: data.clone(),
            metadata: Bytes::new(),
        })
        .collect();
    engine.append(stream, expected, events)?;
    Ok(())
}

fn measure(engine: &Engine, config: &ReadStreamConfig) -> Result<Figures, BenchError> {
    let mut rng = rand::rng();
    let mut latency_us = latency_histogram();
    let done = AtomicU64::new(0);
    let started = Instant::now();
    with_progress("bench read-stream", config.reads, &done, || {
        for _ in 0..config.reads {
            let stream = stream_name(u64::from(rng.random_range(0..config.streams)))?;
            let t = Instant::now();
            let events = engine.read_stream(
                &stream,
                Revision(0),
                Direction::Forwards,
                EVENTS_PER_STREAM as usize,
            )?;
            latency_us.saturating_record(micros(t.elapsed()));
            ensure(events.len() as u64 == EVENTS_PER_STREAM, || {
                format!(
                    "{stream} has {} events, expected {EVENTS_PER_STREAM}",
                    events.len()
                )
            })?;
            done.fetch_add(1, Ordering::Relaxed);
        }
        Ok::<_, BenchError>(())
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let reads_per_s = config.reads as f64 / elapsed;
    Ok(Figures {
        bench: "read-stream",
        streams: config.streams,
        reads: config.reads,
        elapsed_s: round2(elapsed),
        reads_per_s: round2(reads_per_s),
        events_per_s: round2(reads_per_s * EVENTS_PER_STREAM as f64),
        p50_us: latency_us.value_at_quantile(0.5),
        p99_us: latency_us.value_at_quantile(0.99),
        p999_us: latency_us.value_at_quantile(0.999),
        max_us: latency_us.max(),
    })
}
