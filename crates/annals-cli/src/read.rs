//! `annals read` and `annals read-all`: page through a stream or `$all` with the engine's read
//! API and print one JSON line per event. Pages are bounded so a long read never holds more than
//! one page in memory.

use std::process::ExitCode;

use annals_core::{Direction, Filter, FilterTarget, Position, Revision, StreamName};
use annals_engine::{Durability, Engine};
use anyhow::Context as _;

use crate::args::{ReadAllArgs, ReadArgs};
use crate::output::{self, Out};
use crate::store;

/// Events asked for per engine call.
const READ_PAGE_EVENTS_MAX: u64 = 4_096;

pub(crate) fn stream(args: &ReadArgs) -> anyhow::Result<ExitCode> {
    let stream = StreamName::new(&args.stream)?;
    let (engine, _) = store::open_existing(&args.data, Durability::Fsync)?;
    let result = print_stream(&engine, &stream, args);
    engine
        .close_checked()
        .context("the store's pipeline failed")?;
    finish(result)
}

fn print_stream(engine: &Engine, stream: &StreamName, args: &ReadArgs) -> anyhow::Result<()> {
    let direction = direction(args.backwards);
    let mut from = match (args.from, direction) {
        (Some(r), _) => Revision(r),
        (None, Direction::Forwards) => Revision(0),
        (None, Direction::Backwards) => Revision::END,
    };
    let mut left = args.limit.unwrap_or(u64::MAX);
    let mut out = Out::new();
    while left > 0 {
        let want = left.min(READ_PAGE_EVENTS_MAX);
        let events = engine.read_stream(stream, from, direction, want as usize)?;
        for e in &events {
            out.line(&output::event_json(e))?;
        }
        left -= events.len() as u64;
        let Some(last) = events.last() else { break };
        if (events.len() as u64) < want {
            break;
        }
        from = match direction {
            Direction::Forwards => Revision(last.revision.0 + 1),
            Direction::Backwards => match last.revision.0.checked_sub(1) {
                Some(r) => Revision(r),
                None => break,
            },
        };
    }
    out.flush()?;
    Ok(())
}

pub(crate) fn all(args: &ReadAllArgs) -> anyhow::Result<ExitCode> {
    let filter = filter(args)?;
    let (engine, _) = store::open_existing(&args.data, Durability::Fsync)?;
    let result = print_all(&engine, filter.as_ref(), args);
    engine
        .close_checked()
        .context("the store's pipeline failed")?;
    finish(result)
}

/// The one filter the options ask for (clap allows at most one kind).
fn filter(args: &ReadAllArgs) -> anyhow::Result<Option<Filter>> {
    let f = if !args.stream_prefix.is_empty() {
        Filter::prefixes(FilterTarget::StreamName, args.stream_prefix.clone())?
    } else if !args.type_prefix.is_empty() {
        Filter::prefixes(FilterTarget::EventType, args.type_prefix.clone())?
    } else if let Some(re) = &args.stream_regex {
        Filter::regex(FilterTarget::StreamName, re)?
    } else if let Some(re) = &args.type_regex {
        Filter::regex(FilterTarget::EventType, re)?
    } else {
        return Ok(None);
    };
    Ok(Some(f))
}

fn print_all(engine: &Engine, filter: Option<&Filter>, args: &ReadAllArgs) -> anyhow::Result<()> {
    let direction = direction(args.backwards);
    let mut from = match (args.from, direction) {
        (Some(p), _) => Position(p),
        (None, Direction::Forwards) => Position(1),
        (None, Direction::Backwards) => Position::END,
    };
    let mut left = args.limit.unwrap_or(u64::MAX);
    let mut out = Out::new();
    while left > 0 {
        let want = left.min(READ_PAGE_EVENTS_MAX);
        let page = engine.read_all(from, direction, want as usize, filter)?;
        for e in &page.events {
            out.line(&output::event_json(e))?;
        }
        left = left.saturating_sub(page.events.len() as u64);
        let stuck = match direction {
            Direction::Forwards => page.next <= from && page.events.is_empty(),
            Direction::Backwards => {
                page.next.0 == 0 || (page.next >= from && from != Position::END)
            }
        };
        if page.end_reached || stuck {
            break;
        }
        from = page.next;
    }
    out.flush()?;
    Ok(())
}

fn direction(backwards: bool) -> Direction {
    if backwards {
        Direction::Backwards
    } else {
        Direction::Forwards
    }
}

/// A reader that closed the pipe early (`| head`) is not a failure.
fn finish(result: anyhow::Result<()>) -> anyhow::Result<ExitCode> {
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(e),
    }
}
