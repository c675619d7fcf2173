//! What the one-shot commands print on stdout, and its encodings: one JSON object per event (data
//! inline when it is JSON, base64 otherwise), append results, `ack` lines of the load generator
//! and the check summary.
//!
//! Everything is written with `writeln!` to a locked stdout rather than `println!`, so a closed
//! pipe (`annals read-all | head`) is an error the caller can end quietly on instead of a panic.

use std::io::{self, BufWriter, StdoutLock, Write};

use annals_core::{AppendResult, ContentType, EventRecord, Timestamp};
use annals_engine::{CheckReport, OpenReport};
use serde::Serialize;

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

#[derive(Serialize)]
struct EventLine<'a> {
    position: u64,
    stream: &'a str,
    revision: u64,
    #[serde(rename = "type")]
    event_type: &'a str,
    id: String,
    created: String,
    content_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata_base64: Option<String>,
}

/// Bytes as a JSON value if they parse as JSON, else as base64.
fn payload(bytes: &[u8], content_type: ContentType) -> (Option<serde_json::Value>, Option<String>) {
    if content_type == ContentType::Json
        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes)
    {
        return (Some(v), None);
    }
    (None, Some(base64(bytes)))
}

/// One event as a JSON line.
pub(crate) fn event_json(e: &EventRecord) -> String {
    let (data, data_base64) = payload(&e.data, e.content_type);
    let (metadata, metadata_base64) = if e.metadata.is_empty() {
        (None, None)
    } else {
        payload(&e.metadata, ContentType::Json)
    };
    let line = EventLine {
        position: e.position.0,
        stream: e.stream.as_str(),
        revision: e.revision.0,
        event_type: e.event_type.as_str(),
        id: e.id.to_string(),
        created: rfc3339(e.created),
        content_type: e.content_type.mime(),
        data,
        data_base64,
        metadata,
        metadata_base64,
    };
    // Serializing a struct of strings and numbers cannot fail.
    serde_json::to_string(&line).unwrap_or_default()
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
    writeln!(out, "problems {}", report.problems.len())?;
    for p in &report.problems {
        writeln!(out, "problem: {p}")?;
    }
    let ok = report.problems.is_empty();
    writeln!(out, "{}", if ok { "OK" } else { "FAILED" })?;
    out.flush()?;
    Ok(ok)
}

/// Prints why a check could not finish (the error names the file and offset of a corrupt record).
pub(crate) fn check_failed(what: &str, error: &dyn std::fmt::Display) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{what}: {error}")?;
    writeln!(out, "FAILED")?;
    out.flush()
}

const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub(crate) fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    let sym = |i: u32| char::from(BASE64_ALPHABET[(i & 63) as usize]);
    for chunk in bytes.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        out.push(sym(n >> 18));
        out.push(sym(n >> 12));
        out.push(if chunk.len() > 1 { sym(n >> 6) } else { '=' });
        out.push(if chunk.len() > 2 { sym(n) } else { '=' });
    }
    out
}

/// A timestamp as RFC 3339 in UTC with nanoseconds, e.g. `2026-01-02T03:04:05.000000006Z`.
pub(crate) fn rfc3339(ts: Timestamp) -> String {
    let secs = ts.0.div_euclid(1_000_000_000);
    let nanos = ts.0.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
        assert_eq!(base64(&[0xff, 0xfe]), "//4=");
    }

    #[test]
    fn timestamps_format_as_rfc3339() {
        assert_eq!(rfc3339(Timestamp(0)), "1970-01-01T00:00:00.000000000Z");
        // 2024-02-29T12:34:56.000000789Z, a leap day.
        assert_eq!(
            rfc3339(Timestamp(1_709_210_096_000_000_789)),
            "2024-02-29T12:34:56.000000789Z"
        );
        assert_eq!(rfc3339(Timestamp(-1)), "1969-12-31T23:59:59.999999999Z");
    }
}
