//! Writing from the shell: `annals append` (one event from an argument, a file or stdin) and the
//! hidden `annals load` generator, which the process crash test kills mid-run: it prints an `ack`
//! line only after the engine has acknowledged the append, so every printed line is a promise the
//! store must keep after any crash.

use std::io::Read;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use annals_core::{ContentType, EventType, ExpectedRevision, NewEvent, StreamName};
use anyhow::{Context, bail};
use bytes::Bytes;
use rand::Rng;

use crate::args::{AppendArgs, LoadArgs};
use crate::{output, store};

pub(crate) fn append(args: &AppendArgs) -> anyhow::Result<ExitCode> {
    let stream = StreamName::new(&args.stream)?;
    let (data, content_type) = event_data(args)?;
    let event = NewEvent {
        id: args.id.unwrap_or_else(uuid::Uuid::new_v4),
        event_type: EventType::new(&args.event_type)?,
        content_type,
        data,
        metadata: Bytes::new(),
    };
    let (engine, _) = store::open(&args.data, args.durability.into())?;
    let result = engine.append(&stream, args.expected, vec![event]);
    engine
        .close_checked()
        .context("the store's pipeline failed")?;
    let result = result.with_context(|| format!("append to {stream} failed"))?;
    output::append_result(&result)?;
    Ok(ExitCode::SUCCESS)
}

/// The event's data and content type: `--json` must be JSON; a file or stdin is stored as JSON
/// when it parses as JSON and as binary otherwise.
fn event_data(args: &AppendArgs) -> anyhow::Result<(Bytes, ContentType)> {
    if let Some(json) = &args.json {
        serde_json::from_str::<serde_json::Value>(json).context("--json is not valid JSON")?;
        return Ok((Bytes::from(json.clone().into_bytes()), ContentType::Json));
    }
    let bytes = match &args.file {
        Some(path) => {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
        }
        None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("cannot read event data from stdin")?;
            buf
        }
    };
    let content_type = if serde_json::from_slice::<serde_json::Value>(&bytes).is_ok() {
        ContentType::Json
    } else {
        ContentType::Binary
    };
    Ok((Bytes::from(bytes), content_type))
}

pub(crate) fn load(args: &LoadArgs) -> anyhow::Result<ExitCode> {
    if args.writers == 0 || args.streams == 0 {
        bail!("--writers and --streams must be at least 1");
    }
    let (engine, _) = store::open(&args.data, args.durability.into())?;
    let event_type = EventType::new("LoadEvent")?;
    let remaining = AtomicU64::new(args.events);
    let stop = AtomicBool::new(false);
    let results: Vec<anyhow::Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.writers)
            .map(|writer| {
                let (engine, event_type, remaining, stop) =
                    (&engine, &event_type, &remaining, &stop);
                s.spawn(move || -> anyhow::Result<()> {
                    let mut rng = rand::rng();
                    while !stop.load(Ordering::Relaxed) && take_one(remaining) {
                        let stream =
                            StreamName::new(format!("load-{}", rng.random_range(0..args.streams)))?;
                        let id = uuid::Uuid::new_v4();
                        let event = NewEvent {
                            id,
                            event_type: event_type.clone(),
                            content_type: ContentType::Json,
                            data: Bytes::from(format!("{{\"writer\":{writer},\"id\":\"{id}\"}}")),
                            metadata: Bytes::new(),
                        };
                        let result = engine
                            .append(&stream, ExpectedRevision::Any, vec![event])
                            .inspect_err(|_| stop.store(true, Ordering::Relaxed))
                            .with_context(|| format!("append to {stream} failed"))?;
                        if let Err(e) = output::ack(stream.as_str(), &result, &id) {
                            // Whoever read the acks is gone; nobody is left to promise to.
                            stop.store(true, Ordering::Relaxed);
                            return Err(e).context("cannot print ack");
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("writer thread panicked")))
            })
            .collect()
    });
    engine
        .close_checked()
        .context("the store's pipeline failed")?;
    for r in results {
        r?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Takes one event from the shared budget; false once it is spent.
fn take_one(remaining: &AtomicU64) -> bool {
    remaining
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
}
