//! What the one-shot commands print on stdout: one JSON object per event (the HTTP API's shape,
//! `annals_core::EventJson`), append results, `ack` lines of the load generator
//! and the check summary.
//!
//! Everything is written with `writeln!` to a locked stdout rather than `println!`, so a closed
//! pipe (`annals read-all | head`) is an error the caller can end quietly on instead of a panic.

use std::io::{self, BufWriter, StdoutLock, Write};

use annals_core::{AppendResult, EventJson, EventRecord};
use annals_engine::{CheckReport, OpenReport};

/// A buffered stdout for commands that print many lines.
#[derive(Debug)]
pub(crate) struct Out {
    w: BufWriter<StdoutLock<'static>>,
}

impl Out {
    pub(crate) fn new() -> Self {
        Self {
            w: BufWriter::with_capacity(256 * 1024, io::stdout().lock()),
        }
    }

    pub(crate) fn line(&mut self, s: &str) -> io::Result<()> {
        self.w.write_all(s.as_bytes())?;
        self.w.write_all(b"\n")
    }

    pub(crate) fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

/// Prints one line and flushes it at once, as one write, so a reader of a pipe sees whole lines
/// even if the process is killed right after.
pub(crate) fn line_now(s: &str) -> io::Result<()> {
    let mut line = String::with_capacity(s.len() + 1);
    line.push_str(s);
    line.push('\n');
    let mut out = io::stdout().lock();
    out.write_all(line.as_bytes())?;
    out.flush()
}

/// The load generator's acknowledgement of one durable single-event append.
pub(crate) fn ack(stream: &str, result: &AppendResult, id: &uuid::Uuid) -> io::Result<()> {
    line_now(&format!(
        "ack {stream} {} {} {id}",
        result.next_revision.0, result.position.0
    ))
}

pub(crate) fn append_result(result: &AppendResult) -> io::Result<()> {
    line_now(&format!(
        "{{\"revision\":{},\"position\":{}}}",
        result.next_revision.0, result.position.0
    ))
}

/// One event as a JSON line, in the shape the HTTP API uses ([`EventJson`]).
pub(crate) fn event_json(e: &EventRecord) -> String {
    // Serializing a struct of strings, numbers and JSON values cannot fail.
    serde_json::to_string(&EventJson::from_record(e)).unwrap_or_default()
}

/// Prints what `annals check` found. Returns whether the store is healthy.
pub(crate) fn check_summary(open: &OpenReport, report: &CheckReport) -> io::Result<bool> {
    let mut out = io::stdout().lock();
    writeln!(out, "head {}", open.head.0)?;
    if let Some(t) = &open.log.truncated {
        writeln!(
            out,
            "torn tail dropped: {} bytes at {} offset {} ({})",
            t.bytes_dropped, t.file, t.offset, t.reason
        )?;
    }
    if open.index_rebuilt {
        writeln!(out, "index rebuilt from the log")?;
    }
    writeln!(out, "records reindexed on open {}", open.records_reindexed)?;
    writeln!(out, "records {}", report.records)?;
    writeln!(out, "events {}", report.events)?;
    writeln!(out, "streams {}", report.streams)?;
    writeln!(out, "log_bytes {}", report.log_bytes)?;
    problems_and_verdict(&mut out, &report.problems)
}

/// The end of a check's summary: the problems, then `OK` or `FAILED`; whether it is healthy.
fn problems_and_verdict(out: &mut impl Write, problems: &[String]) -> io::Result<bool> {
    writeln!(out, "problems {}", problems.len())?;
    for p in problems {
        writeln!(out, "problem: {p}")?;
    }
    let ok = problems.is_empty();
    writeln!(out, "{}", if ok { "OK" } else { "FAILED" })?;
    out.flush()?;
    Ok(ok)
}

/// Prints what the check of a store in Postgres found; returns whether it is healthy.
pub(crate) fn pg_check_summary(report: &annals_pgstore::PgCheckReport) -> io::Result<bool> {
    let mut out = io::stdout().lock();
    writeln!(out, "head {}", report.head)?;
    writeln!(out, "events {}", report.events)?;
    writeln!(out, "streams {}", report.streams)?;
    problems_and_verdict(&mut out, &report.problems)
}

/// Prints why a check could not finish (the error names the file and offset of a corrupt record).
pub(crate) fn check_failed(what: &str, error: &dyn std::fmt::Display) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{what}: {error}")?;
    writeln!(out, "FAILED")?;
    out.flush()
}
