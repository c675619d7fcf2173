//! `annals import FILE`: brings a file of JSON lines (`{"stream","type","data","id"?,
//! "metadata"?}`) into a store, offline on a data directory or through a running server's HTTP
//! API, as fast as the store takes it, and so that running it again is harmless.
//!
//! - **Batches.** Consecutive lines of one stream become one append, up to
//!   [`IMPORT_BATCH_EVENTS_MAX`] events and [`IMPORT_BATCH_BYTES_MAX`] bytes. Appends run on
//!   [`IMPORT_WORKERS`] threads; a stream always goes to the same one, so its events keep the
//!   file's order, and several appends are in flight (group commit, or requests to the server).
//! - **Idempotent.** A line's event id is its `id`, or one derived from the SHA-256 of the file's
//!   content up to and including that line, and the line number: the same content always yields
//!   the same ids, and a file that grew (or whose bad line was fixed) keeps the ids of the lines
//!   before the change. Appending ids the store already holds in the same stream returns the
//!   first result, so a batch sent again after a crash is not written twice.
//! - **Resumable.** The progress (lines done, their byte offset and the SHA-256 of the content up
//!   to there) is kept in `FILE.annals-import` or `--progress`, replaced atomically, and only
//!   ever claims lines whose appends were acknowledged. A re-run checks that the file still
//!   begins with that content and goes on after it.
//!
//! Batching depends only on the lines since the last batch, and progress always ends at a batch's
//! end, so a resumed run sends the very batches the interrupted one may have sent already.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use annals_core::limits::{
    APPEND_EVENTS_MAX, NETWORK_APPEND_BYTES_MAX, NETWORK_APPEND_EVENTS_MAX,
    NETWORK_EVENT_BYTES_MAX, STORE_APPEND_BYTES_MAX, STORE_EVENT_BYTES_MAX,
};
use annals_core::{ContentType, EventType, ExpectedRevision, NewEvent, StreamName};
use annals_engine::{Engine, IDEMPOTENCY_WINDOW_EVENTS};
use anyhow::{Context, bail};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::args::ImportArgs;
use crate::output::line_now;
use crate::store;

/// Most events in one append.
const IMPORT_BATCH_EVENTS_MAX: usize = 1_000;
/// Most bytes (data + metadata + type) in one append; a larger single event goes alone.
const IMPORT_BATCH_BYTES_MAX: usize = 1024 * 1024;
/// Longest line read; a longer one is a malformed line (and is not held in memory).
const IMPORT_LINE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Threads appending, each one append at a time: the most appends in flight.
const IMPORT_WORKERS: usize = 8;
/// Batches waiting for each worker, so reading stays a little ahead of appending.
const IMPORT_WORKER_QUEUE_MAX: usize = 2;
/// The progress file is replaced at least this often while lines get done...
const IMPORT_PROGRESS_SAVE_INTERVAL: Duration = Duration::from_secs(1);
/// ...and whenever this many more events are done, so a crash never leaves more unrecorded
/// appends than the store's idempotency window remembers.
const IMPORT_PROGRESS_SAVE_EVENTS_MAX: usize = 10_000;
/// How often the progress line is printed on a terminal.
const IMPORT_REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// How long one append request to a server may take.
const IMPORT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// What the default progress file adds to the input's name.
const IMPORT_PROGRESS_SUFFIX: &str = ".annals-import";
/// The progress file's format version.
const IMPORT_PROGRESS_VERSION: u32 = 1;
/// Mixed into every derived id, so they cannot meet ids derived for another purpose.
const IMPORT_ID_DOMAIN: &[u8] = b"annals-import-v1";

const _: () = assert!(IMPORT_BATCH_EVENTS_MAX <= APPEND_EVENTS_MAX);
const _: () = assert!(IMPORT_BATCH_EVENTS_MAX <= NETWORK_APPEND_EVENTS_MAX);
const _: () = assert!(IMPORT_BATCH_BYTES_MAX <= NETWORK_APPEND_BYTES_MAX);
const _: () = assert!(STORE_EVENT_BYTES_MAX <= STORE_APPEND_BYTES_MAX);
const _: () = assert!(NETWORK_EVENT_BYTES_MAX <= NETWORK_APPEND_BYTES_MAX);
const _: () = assert!(IMPORT_LINE_BYTES_MAX > STORE_EVENT_BYTES_MAX);
// After a crash, everything after the saved progress is sent again: the unsaved done events plus
// every batch that may have been in flight or queued. The store must still remember their ids.
const _: () = assert!(
    IMPORT_PROGRESS_SAVE_EVENTS_MAX
        + 2 * IMPORT_WORKERS * (IMPORT_WORKER_QUEUE_MAX + 1) * IMPORT_BATCH_EVENTS_MAX
        < IDEMPOTENCY_WINDOW_EVENTS
);

/// Where the reader stands: lines read, bytes read and the SHA-256 of the content so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mark {
    lines: u64,
    offset: u64,
    digest: [u8; 32],
}

/// The progress file's content.
#[derive(Debug, Serialize, Deserialize)]
struct ProgressFile {
    version: u32,
    lines: u64,
    offset: u64,
    sha256: String,
}

/// One line of the input as its writer means it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LineJson {
    stream: String,
    #[serde(rename = "type")]
    event_type: String,
    data: serde_json::Value,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
}

/// What one read of a line found.
enum LineRead {
    Eof,
    Line,
    /// Longer than [`IMPORT_LINE_BYTES_MAX`]; skipped to its end, its bytes hashed.
    TooLong,
}

/// Reads lines, bounded in length, hashing the content as it goes. A line is hashed as its bytes
/// without the newline, then a newline, so a last line without one hashes the same as with.
struct LineReader<R> {
    inner: R,
    hasher: Sha256,
    lines: u64,
    offset: u64,
    buf: Vec<u8>,
}

impl<R: BufRead> LineReader<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            lines: 0,
            offset: 0,
            buf: Vec::new(),
        }
    }

    fn next_line(&mut self) -> io::Result<LineRead> {
        self.buf.clear();
        let limit = IMPORT_LINE_BYTES_MAX as u64 + 1;
        let n = (&mut self.inner)
            .take(limit)
            .read_until(b'\n', &mut self.buf)?;
        if n == 0 {
            return Ok(LineRead::Eof);
        }
        self.offset += n as u64;
        let ended = self.buf.last() == Some(&b'\n');
        if ended {
            self.buf.pop();
        }
        self.hasher.update(&self.buf);
        let too_long = !ended && n as u64 == limit;
        if too_long {
            self.buf.clear();
            loop {
                let chunk = self.inner.fill_buf()?;
                if chunk.is_empty() {
                    break;
                }
                let (used, found) = match chunk.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        self.hasher.update(chunk.get(..i).unwrap_or_default());
                        (i + 1, true)
                    }
                    None => {
                        self.hasher.update(chunk);
                        (chunk.len(), false)
                    }
                };
                self.inner.consume(used);
                self.offset += used as u64;
                if found {
                    break;
                }
            }
        }
        self.hasher.update(b"\n");
        self.lines += 1;
        Ok(if too_long {
            LineRead::TooLong
        } else {
            LineRead::Line
        })
    }

    fn mark(&self) -> Mark {
        Mark {
            lines: self.lines,
            offset: self.offset,
            digest: self.hasher.clone().finalize().into(),
        }
    }

    /// Reads past the lines a saved progress covers, checking the input still begins with them.
    fn skip_to(&mut self, saved: &Mark, input: &str, progress: &Path) -> anyhow::Result<()> {
        let changed = || {
            anyhow::anyhow!(
                "{input} does not begin with the {} lines {} recorded as imported: the file \
                 changed; remove {} to import it as a new file (its lines get new ids)",
                saved.lines,
                progress.display(),
                progress.display()
            )
        };
        while self.lines < saved.lines {
            match self
                .next_line()
                .with_context(|| format!("cannot read {input}"))?
            {
                LineRead::Eof => return Err(changed()),
                LineRead::Line | LineRead::TooLong => {}
            }
        }
        if self.mark() != *saved {
            return Err(changed());
        }
        Ok(())
    }
}

/// The id of line `line` whose content up to and including it hashes to `digest`.
fn derived_id(digest: &[u8; 32], line: u64) -> uuid::Uuid {
    let hash = Sha256::new()
        .chain_update(IMPORT_ID_DOMAIN)
        .chain_update(digest)
        .chain_update(line.to_le_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    for (b, h) in bytes.iter_mut().zip(hash.iter()) {
        *b = *h;
    }
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// A line as an event for `stream`, or why it is not one.
fn parse_line(
    text: &[u8],
    default_id: uuid::Uuid,
    event_bytes_max: usize,
) -> Result<(StreamName, NewEvent), String> {
    let line: LineJson = serde_json::from_slice(text).map_err(|e| e.to_string())?;
    let stream = StreamName::new(&line.stream).map_err(|e| format!("stream: {e}"))?;
    let event_type = EventType::new(&line.event_type).map_err(|e| format!("type: {e}"))?;
    let id = match line.id.as_deref() {
        None => default_id,
        Some(s) => uuid::Uuid::parse_str(s).map_err(|e| format!("id {s:?} is not a UUID: {e}"))?,
    };
    let metadata = match line.metadata {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(m @ serde_json::Value::Object(_)) => {
            serde_json::to_vec(&m).map_err(|e| format!("metadata: {e}"))?
        }
        Some(other) => return Err(format!("metadata must be a JSON object, not {other}")),
    };
    let data = serde_json::to_vec(&line.data).map_err(|e| format!("data: {e}"))?;
    let event = NewEvent {
        id,
        event_type,
        content_type: ContentType::Json,
        data: Bytes::from(data),
        metadata: Bytes::from(metadata),
    };
    let size = event.size_bytes();
    if size > event_bytes_max {
        return Err(format!(
            "the event is {size} bytes, over the limit of {event_bytes_max}"
        ));
    }
    Ok((stream, event))
}

/// Where appends go.
enum Sink<'a> {
    Store(&'a Engine),
    Server {
        client: reqwest::blocking::Client,
        base: reqwest::Url,
    },
}

impl Sink<'_> {
    /// Largest single event this sink takes.
    fn event_bytes_max(&self) -> usize {
        match self {
            Sink::Store(_) => STORE_EVENT_BYTES_MAX,
            Sink::Server { .. } => NETWORK_EVENT_BYTES_MAX,
        }
    }

    /// The store's last position before the import appends anything.
    fn head(&self) -> anyhow::Result<u64> {
        match self {
            Sink::Store(engine) => Ok(engine.head().0),
            Sink::Server { client, base } => {
                let url = base.join("health").context("bad server URL")?;
                let answer = client
                    .get(url)
                    .send()
                    .and_then(reqwest::blocking::Response::error_for_status)
                    .with_context(|| format!("cannot reach the server at {base}"))?;
                let health: serde_json::Value =
                    answer.json().context("the server's /health is not JSON")?;
                health
                    .get("head")
                    .and_then(serde_json::Value::as_u64)
                    .context("the server's /health has no head")
            }
        }
    }

    /// Appends one batch; returns the position of its last event.
    fn append(&self, stream: &StreamName, events: Vec<NewEvent>) -> anyhow::Result<u64> {
        match self {
            Sink::Store(engine) => Ok(engine
                .append(stream, ExpectedRevision::Any, events)?
                .position
                .0),
            Sink::Server { client, base } => {
                let mut url = base.clone();
                url.path_segments_mut()
                    .map_err(|()| anyhow::anyhow!("the server URL {base} cannot take a path"))?
                    .pop_if_empty()
                    .push("streams")
                    .push(stream.as_str());
                let answer = client
                    .post(url)
                    .header("content-type", "application/json")
                    .body(append_body(&events)?)
                    .send()
                    .with_context(|| format!("cannot reach the server at {base}"))?;
                let status = answer.status();
                let body = answer.text().context("cannot read the server's answer")?;
                let json = serde_json::from_str::<serde_json::Value>(&body).ok();
                if !status.is_success() {
                    let message = json
                        .as_ref()
                        .and_then(|v| v.get("message").and_then(|m| m.as_str()))
                        .unwrap_or(&body);
                    bail!("{status}: {message}");
                }
                json.as_ref()
                    .and_then(|v| v.get("position").and_then(serde_json::Value::as_u64))
                    .with_context(|| format!("the server's answer has no position: {body}"))
            }
        }
    }
}

/// The body of `POST /streams/{stream}` for `events` (`annals_http`'s `AppendBody`). Data and
/// metadata are already JSON text.
fn append_body(events: &[NewEvent]) -> io::Result<Vec<u8>> {
    let bytes: usize = events.iter().map(NewEvent::size_bytes).sum();
    let mut body = Vec::with_capacity(bytes + events.len() * 96 + 16);
    body.extend_from_slice(b"{\"events\":[");
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        write!(body, "{{\"id\":\"{}\",\"type\":", e.id)?;
        serde_json::to_writer(&mut body, e.event_type.as_str())?;
        body.extend_from_slice(b",\"data\":");
        body.extend_from_slice(&e.data);
        if !e.metadata.is_empty() {
            body.extend_from_slice(b",\"metadata\":");
            body.extend_from_slice(&e.metadata);
        }
        body.push(b'}');
    }
    body.extend_from_slice(b"]}");
    Ok(body)
}

/// Consecutive lines of one stream, appended together.
struct Batch {
    seq: u64,
    stream: StreamName,
    events: Vec<NewEvent>,
    bytes: usize,
    first_line: u64,
    /// The reader's mark right after the batch's last line.
    end: Mark,
}

/// A worker's answer for one batch.
struct Done {
    seq: u64,
    events: usize,
    end: Mark,
    /// The position of the batch's last event, or why the append failed.
    result: anyhow::Result<u64>,
}

/// What the run counts, for the summary line.
#[derive(Debug, Default)]
struct Tally {
    lines: u64,
    appended: u64,
    skipped: u64,
    already: u64,
}

/// Which batches are done, and the progress file's view of them: only a run of done batches from
/// the first one on counts, since an earlier batch may still fail.
struct Tracker<'p> {
    path: Option<&'p Path>,
    /// Every batch before this one is done.
    next_seq: u64,
    done_later: BTreeMap<u64, Mark>,
    done: Mark,
    saved: Mark,
    events_unsaved: usize,
    last_save: Instant,
}

impl Tracker<'_> {
    fn finish(&mut self, seq: u64, end: Mark, events: usize) -> anyhow::Result<()> {
        self.done_later.insert(seq, end);
        self.events_unsaved += events;
        while let Some(end) = self.done_later.remove(&self.next_seq) {
            self.done = end;
            self.next_seq += 1;
        }
        if self.events_unsaved >= IMPORT_PROGRESS_SAVE_EVENTS_MAX
            || self.last_save.elapsed() >= IMPORT_PROGRESS_SAVE_INTERVAL
        {
            self.save()?;
        }
        Ok(())
    }

    /// Replaces the progress file with the done mark, if it moved.
    fn save(&mut self) -> anyhow::Result<()> {
        self.last_save = Instant::now();
        let Some(path) = self.path else {
            return Ok(());
        };
        if self.done == self.saved {
            return Ok(());
        }
        save_progress(path, &self.done)?;
        self.saved = self.done;
        self.events_unsaved = 0;
        Ok(())
    }
}

pub(crate) fn run(args: &ImportArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let input_name = args.file.display().to_string();
    let stdin = args.file.as_os_str() == "-";
    let progress_path = match (&args.progress, stdin) {
        (Some(p), _) => Some(p.clone()),
        (None, true) => None,
        (None, false) => {
            let mut name = args.file.as_os_str().to_owned();
            name.push(IMPORT_PROGRESS_SUFFIX);
            Some(PathBuf::from(name))
        }
    };
    let saved = match &progress_path {
        Some(p) => load_progress(p)?,
        None => None,
    };
    let input: Box<dyn BufRead> = if stdin {
        Box::new(io::stdin().lock())
    } else {
        let file =
            std::fs::File::open(&args.file).with_context(|| format!("cannot open {input_name}"))?;
        Box::new(BufReader::with_capacity(256 * 1024, file))
    };
    let mut reader = LineReader::new(input);
    if let (Some(saved), Some(path)) = (&saved, &progress_path) {
        reader.skip_to(saved, &input_name, path)?;
    }
    let (tally, outcome) = match (&args.data, &args.server) {
        (Some(dir), None) => {
            let (engine, _) = store::open(dir, args.durability.into())?;
            let result = import(
                &Sink::Store(&engine),
                &mut reader,
                args,
                progress_path.as_deref(),
            );
            engine
                .close_checked()
                .context("the store's pipeline failed")?;
            result?
        }
        (None, Some(server)) => {
            let client = crate::http::client(IMPORT_REQUEST_TIMEOUT, &args.auth)?;
            let base = reqwest::Url::parse(&format!("{}/", server.base_url()))
                .with_context(|| format!("bad server address {server}"))?;
            import(
                &Sink::Server { client, base },
                &mut reader,
                args,
                progress_path.as_deref(),
            )?
        }
        _ => bail!("give exactly one of --data and --server"),
    };
    // Written by hand to keep the fields in this order (serde_json's maps sort their keys).
    line_now(&format!(
        "{{\"lines\":{},\"appended\":{},\"skipped\":{},\"already\":{},\"seconds\":{:.3}}}",
        tally.lines,
        tally.appended,
        tally.skipped,
        tally.already,
        started.elapsed().as_secs_f64()
    ))?;
    outcome.map(|()| ExitCode::SUCCESS)
}

/// Reads, batches and appends every line after the reader's place. The outer error is one that
/// leaves no summary to print; the inner one stopped the import after some lines were done.
fn import<R: BufRead>(
    sink: &Sink<'_>,
    reader: &mut LineReader<R>,
    args: &ImportArgs,
    progress_path: Option<&Path>,
) -> anyhow::Result<(Tally, anyhow::Result<()>)> {
    let start_head = sink.head()?;
    let start = reader.mark();
    let mut tally = Tally {
        lines: start.lines,
        already: start.lines,
        ..Tally::default()
    };
    let mut tracker = Tracker {
        path: progress_path,
        next_seq: 0,
        done_later: BTreeMap::new(),
        done: start,
        saved: start,
        events_unsaved: 0,
        last_save: Instant::now(),
    };
    let began = Instant::now();
    let stop = AtomicBool::new(false);
    let report = io::stderr().is_terminal();
    let input_name = args.file.display().to_string();
    let (done_tx, done_rx) = mpsc::channel::<Done>();
    // An append that failed; then a malformed line the import stopped at.
    let mut failure: Option<anyhow::Error> = None;
    let mut bad_line: Option<anyhow::Error> = None;
    let mut dispatched: u64 = 0;

    std::thread::scope(|s| -> anyhow::Result<()> {
        let mut queues = Vec::with_capacity(IMPORT_WORKERS);
        for _ in 0..IMPORT_WORKERS {
            let (tx, rx) = mpsc::sync_channel::<Batch>(IMPORT_WORKER_QUEUE_MAX);
            queues.push(tx);
            let (done_tx, stop) = (done_tx.clone(), &stop);
            s.spawn(move || {
                for batch in rx {
                    if stop.load(Ordering::Relaxed) {
                        continue;
                    }
                    let n = batch.events.len();
                    let (first, last) = (batch.first_line, batch.end.lines);
                    let result = sink.append(&batch.stream, batch.events).with_context(|| {
                        format!(
                            "append of lines {first}..={last} to {} failed",
                            batch.stream
                        )
                    });
                    if result.is_err() {
                        stop.store(true, Ordering::Relaxed);
                    }
                    let done = Done {
                        seq: batch.seq,
                        events: n,
                        end: batch.end,
                        result,
                    };
                    if done_tx.send(done).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);

        let on_done = |done: Done,
                       tally: &mut Tally,
                       tracker: &mut Tracker<'_>,
                       failure: &mut Option<anyhow::Error>|
         -> anyhow::Result<()> {
            match done.result {
                Ok(position) => {
                    let n = done.events as u64;
                    // Events at or before the head we started from were there already: the
                    // store answered a retry of ids it holds with their first result.
                    if position <= start_head {
                        tally.already += n;
                    } else {
                        tally.appended += n;
                    }
                    tracker.finish(done.seq, done.end, done.events)
                }
                Err(e) => {
                    failure.get_or_insert(e);
                    Ok(())
                }
            }
        };

        let mut pending: Option<Batch> = None;
        let mut before = start;
        let mut last_report = Instant::now();
        let dispatch = |batch: Batch| -> bool {
            let mut h = std::hash::DefaultHasher::new();
            batch.stream.as_str().hash(&mut h);
            let worker = (h.finish() % IMPORT_WORKERS as u64) as usize;
            queues.get(worker).is_some_and(|q| q.send(batch).is_ok())
        };
        loop {
            while let Ok(done) = done_rx.try_recv() {
                on_done(done, &mut tally, &mut tracker, &mut failure)?;
            }
            if failure.is_some() {
                break;
            }
            if report && last_report.elapsed() >= IMPORT_REPORT_INTERVAL {
                last_report = Instant::now();
                let lines = tracker.done.lines.saturating_sub(start.lines);
                let rate = lines as f64 / began.elapsed().as_secs_f64().max(1e-3);
                eprintln!("imported {} lines ({rate:.0}/s)", tracker.done.lines);
            }
            let read = reader
                .next_line()
                .with_context(|| format!("cannot read {input_name}"))?;
            let bad = match read {
                LineRead::Eof => break,
                LineRead::TooLong => Some(format!(
                    "the line is longer than {IMPORT_LINE_BYTES_MAX} bytes"
                )),
                LineRead::Line => None,
            };
            let mark = reader.mark();
            tally.lines = mark.lines;
            if bad.is_none() && reader.buf.iter().all(u8::is_ascii_whitespace) {
                before = mark;
                continue;
            }
            let parsed = match bad {
                Some(why) => Err(why),
                None => parse_line(
                    &reader.buf,
                    derived_id(&mark.digest, mark.lines),
                    sink.event_bytes_max(),
                ),
            };
            let (stream, event) = match parsed {
                Ok(parsed) => parsed,
                Err(why) if args.skip_bad => {
                    eprintln!("skipped line {} of {input_name}: {why}", mark.lines);
                    tally.skipped += 1;
                    before = mark;
                    continue;
                }
                Err(why) => {
                    bad_line = Some(anyhow::anyhow!(
                        "line {} of {input_name} is not an event: {why}; the lines before it \
                         are imported, none after it (--skip-bad goes on past such lines)",
                        mark.lines
                    ));
                    break;
                }
            };
            let size = event.size_bytes();
            let fits = pending.as_ref().is_some_and(|b| {
                b.stream == stream
                    && b.events.len() < IMPORT_BATCH_EVENTS_MAX
                    && b.bytes + size <= IMPORT_BATCH_BYTES_MAX
            });
            if !fits && let Some(batch) = pending.take() {
                dispatched += 1;
                if !dispatch(batch) {
                    break;
                }
            }
            let batch = pending.get_or_insert_with(|| Batch {
                seq: dispatched,
                stream,
                events: Vec::new(),
                bytes: 0,
                first_line: mark.lines,
                end: mark,
            });
            batch.events.push(event);
            batch.bytes += size;
            batch.end = mark;
            before = mark;
        }
        if let Some(batch) = pending.take()
            && failure.is_none()
        {
            dispatched += 1;
            dispatch(batch);
        }
        drop(queues);
        for done in done_rx.iter() {
            on_done(done, &mut tally, &mut tracker, &mut failure)?;
        }
        // Every batch answered and none failed: the lines after the last batch (blank or
        // skipped) are done too.
        if tracker.next_seq == dispatched && failure.is_none() {
            tracker.done = before;
        }
        Ok(())
    })?;
    let saved = tracker.save();
    let outcome = match (failure.or(bad_line), saved) {
        (Some(e), _) | (None, Err(e)) => Err(e),
        (None, Ok(())) => Ok(()),
    };
    Ok((tally, outcome))
}

/// The saved progress at `path`, if there is one.
fn load_progress(path: &Path) -> anyhow::Result<Option<Mark>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let bad = || format!("{} is not an import progress file", path.display());
    let file: ProgressFile = serde_json::from_str(&text).with_context(bad)?;
    if file.version != IMPORT_PROGRESS_VERSION {
        bail!(
            "{} is of progress format {}, this annals knows {IMPORT_PROGRESS_VERSION}",
            path.display(),
            file.version
        );
    }
    let digest = hex_decode(&file.sha256).with_context(bad)?;
    Ok(Some(Mark {
        lines: file.lines,
        offset: file.offset,
        digest,
    }))
}

/// Replaces the progress file atomically: a temporary file written and synced, renamed over it,
/// and the directory synced, so a crash leaves the old progress or the new one.
fn save_progress(path: &Path, mark: &Mark) -> anyhow::Result<()> {
    let file = ProgressFile {
        version: IMPORT_PROGRESS_VERSION,
        lines: mark.lines,
        offset: mark.offset,
        sha256: hex_encode(&mark.digest),
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let write = || -> io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(serde_json::to_string(&file)?.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        std::fs::File::open(dir)?.sync_all()
    };
    write().with_context(|| format!("cannot save the import's progress to {}", path.display()))
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(text: &str) -> anyhow::Result<[u8; 32]> {
    let mut out = [0u8; 32];
    anyhow::ensure!(
        text.len() == out.len() * 2 && text.is_ascii(),
        "sha256 is not 64 hex digits"
    );
    for (i, b) in out.iter_mut().enumerate() {
        let pair = text.get(i * 2..i * 2 + 2).context("sha256 is not hex")?;
        *b = u8::from_str_radix(pair, 16).context("sha256 is not hex")?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(text: &str) -> Vec<(LineReadKind, Mark)> {
        let mut r = LineReader::new(text.as_bytes());
        let mut out = Vec::new();
        loop {
            match r.next_line().unwrap() {
                LineRead::Eof => return out,
                LineRead::Line => out.push((LineReadKind::Line, r.mark())),
                LineRead::TooLong => out.push((LineReadKind::TooLong, r.mark())),
            }
        }
    }

    #[derive(Debug, PartialEq)]
    enum LineReadKind {
        Line,
        TooLong,
    }

    #[test]
    fn a_missing_last_newline_hashes_the_same() {
        let with = lines_of("a\nb\n");
        let without = lines_of("a\nb");
        assert_eq!(with.len(), 2);
        assert_eq!(with[1].1.digest, without[1].1.digest);
        assert_eq!(with[1].1.offset, 4);
        assert_eq!(without[1].1.offset, 3);
    }

    #[test]
    fn ids_depend_on_the_content_up_to_the_line_only() {
        let a = lines_of("x\ny\nz\n");
        let b = lines_of("x\ny\nother\n");
        assert_eq!(a[1].1, b[1].1);
        assert_ne!(a[2].1.digest, b[2].1.digest);
        let id = |m: &Mark| derived_id(&m.digest, m.lines);
        assert_eq!(id(&a[1].1), id(&b[1].1));
        assert_ne!(id(&a[2].1), id(&b[2].1));
        assert_ne!(id(&a[0].1), id(&a[1].1));
        assert_eq!(id(&a[0].1).get_version_num(), 8);
    }

    #[test]
    fn an_overlong_line_is_skipped_to_its_end() {
        let long = "x".repeat(IMPORT_LINE_BYTES_MAX + 10);
        let text = format!("{long}\nnext\n");
        let lines = lines_of(&text);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].0, LineReadKind::TooLong);
        assert_eq!(lines[1].0, LineReadKind::Line);
        assert_eq!(lines[1].1.offset, text.len() as u64);
    }

    #[test]
    fn lines_parse_into_events_or_say_why_not() {
        let id = uuid::Uuid::nil();
        let (stream, e) = parse_line(
            br#"{"stream":"s-1","type":"T","data":{"b":1,"a":2},"metadata":{"m":true}}"#,
            id,
            STORE_EVENT_BYTES_MAX,
        )
        .unwrap();
        assert_eq!(stream.as_str(), "s-1");
        assert_eq!(e.id, id);
        assert_eq!(&e.data[..], br#"{"a":2,"b":1}"#);
        assert_eq!(&e.metadata[..], br#"{"m":true}"#);
        let given = "6f2c1d3e-0000-4000-8000-000000000001";
        let line = format!(r#"{{"stream":"s","type":"T","data":1,"id":"{given}"}}"#);
        let (_, e) = parse_line(line.as_bytes(), id, STORE_EVENT_BYTES_MAX).unwrap();
        assert_eq!(e.id.to_string(), given);
        for (text, why) in [
            (r#"{"stream":"s","type":"T"}"#, "data"),
            (r#"{"stream":"s","data":1}"#, "type"),
            (r#"{"stream":"s","type":"T","data":1,"id":"x"}"#, "UUID"),
            (
                r#"{"stream":"s","type":"T","data":1,"metadata":[1]}"#,
                "object",
            ),
            (r#"{"stream":"s","type":"T","data":1,"typo":1}"#, "typo"),
            (r#"{"stream":"s","type":"T","#, "EOF"),
            (r#"{"stream":"s","type":"T","data":"xxxxxxxx"}"#, "limit"),
        ] {
            let err = parse_line(text.as_bytes(), id, 8).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn progress_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl.annals-import");
        assert_eq!(load_progress(&path).unwrap(), None);
        let mark = lines_of("a\nb\n")[1].1;
        save_progress(&path, &mark).unwrap();
        assert_eq!(load_progress(&path).unwrap(), Some(mark));
        std::fs::write(&path, "{}").unwrap();
        assert!(load_progress(&path).is_err());
    }

    #[test]
    fn the_body_is_what_the_http_api_takes() {
        let e = NewEvent {
            id: uuid::Uuid::nil(),
            event_type: EventType::new("T\"1").unwrap(),
            content_type: ContentType::Json,
            data: Bytes::from_static(b"{\"a\":1}"),
            metadata: Bytes::new(),
        };
        let body = append_body(&[e]).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"events":[{
                "id": "00000000-0000-0000-0000-000000000000", "type": "T\"1", "data": {"a": 1}
            }]})
        );
    }
}
