//! Crash-recovery tests of the log layer, through its public API only.
//!
//! Each test writes commit records the way the engine does (encode, `LogWriter::append`,
//! `SyncTicket::sync`, `Log::publish`), damages the stored bytes the way a crash or a bad disk
//! would (a torn last write, lost un-synced writes at every sync, bit flips, a half-created
//! segment, a bad recovery start), reopens the log and checks exactly what recovery keeps, cuts,
//! removes or refuses. Most tests run on [`FaultStorage`]; the last ones run on [`FileStorage`] in
//! a temporary directory.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions fail the test by panicking"
)]

use std::sync::Arc;

use annals_core::{NewEvent, Position, Revision, StreamName, Timestamp};
use annals_log::codec::{RecordKind, encode_commit};
use annals_log::{
    FaultStorage, FileStorage, Log, LogConfig, LogError, LogWriter, Record, RecoveryReport,
    RecoveryStart, SEGMENT_HEADER_BYTES, TORN_TAIL_WINDOW_BYTES,
};
use uuid::Uuid;

/// A segment size small enough that a few dozen records span several segments.
fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes_max: 4096,
        ..Default::default()
    }
}

/// One commit record as the test wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Written {
    address: u64,
    first_position: u64,
    events: u64,
    frame: Vec<u8>,
}

impl Written {
    fn end(&self) -> u64 {
        self.address + self.frame.len() as u64
    }

    fn next_position(&self) -> u64 {
        self.first_position + self.events
    }
}

/// Position the record after `records` gets.
fn next_position_after(records: &[Written]) -> Position {
    Position(records.last().map_or(1, Written::next_position))
}

/// Encodes one commit record of `events` JSON events, each with about `data_bytes` of data. Ids
/// and timestamps derive from the positions, so the bytes are the same in every run.
fn encode_record(first_position: u64, events: u64, data_bytes: usize) -> Vec<u8> {
    let stream = StreamName::new(format!("order-{first_position}")).unwrap();
    let pad = "x".repeat(data_bytes);
    let events: Vec<NewEvent> = (first_position..first_position + events)
        .map(|p| {
            let mut e =
                NewEvent::json("OrderPlaced", format!(r#"{{"p":{p},"pad":"{pad}"}}"#)).unwrap();
            e.id = Uuid::from_u128(u128::from(p));
            e
        })
        .collect();
    let mut out = Vec::new();
    encode_commit(
        &mut out,
        RecordKind::Events,
        &stream,
        Position(first_position),
        Revision(0),
        Timestamp(i64::try_from(first_position).unwrap()),
        &events,
    );
    out
}

/// A batch written but not yet synced.
struct Pending {
    ticket: annals_log::SyncTicket,
    records: Vec<Written>,
}

/// Writes batches of records with dense positions and remembers the acknowledged ones.
struct Appender {
    log: Arc<Log>,
    writer: LogWriter,
    next_position: u64,
    /// Every record of every acknowledged batch, in log order.
    written: Vec<Written>,
}

impl Appender {
    /// Continues a log whose acknowledged records are `written`.
    fn new(log: Arc<Log>, writer: LogWriter, written: Vec<Written>) -> Self {
        Self {
            log,
            writer,
            next_position: next_position_after(&written).0,
            written,
        }
    }

    /// Writes one batch: a record per entry of `events` (that many events each).
    fn write(&mut self, events: &[u64], data_bytes: usize) -> Result<Pending, LogError> {
        let mut buf = Vec::new();
        let mut parts = Vec::new();
        let mut position = self.next_position;
        for &n in events {
            let frame = encode_record(position, n, data_bytes);
            parts.push((buf.len() as u64, position, n, frame.len()));
            buf.extend_from_slice(&frame);
            position += n;
        }
        let (address, ticket) = self.writer.append(&buf)?;
        assert_eq!(ticket.end, address + buf.len() as u64);
        let records = parts
            .into_iter()
            .map(|(offset, first_position, events, len)| {
                let start = usize::try_from(offset).unwrap();
                Written {
                    address: address + offset,
                    first_position,
                    events,
                    frame: buf[start..start + len].to_vec(),
                }
            })
            .collect();
        Ok(Pending { ticket, records })
    }

    /// Syncs and publishes a written batch; once this returns `Ok` the batch is acknowledged.
    fn acknowledge(&mut self, pending: Pending) -> Result<(), LogError> {
        pending.ticket.sync(&self.log)?;
        self.log.publish(pending.ticket.end);
        self.next_position = next_position_after(&pending.records).0;
        self.written.extend(pending.records);
        Ok(())
    }

    /// Writes, syncs and publishes one batch.
    fn commit(&mut self, events: &[u64], data_bytes: usize) -> Result<(), LogError> {
        let pending = self.write(events, data_bytes)?;
        self.acknowledge(pending)
    }
}

type Opened = (Arc<Log>, LogWriter, RecoveryReport);

fn open(
    storage: &FaultStorage,
    config: LogConfig,
    start: RecoveryStart,
) -> Result<Opened, LogError> {
    Log::open(Arc::new(storage.clone()), config, start)
}

fn open_ok(storage: &FaultStorage, config: LogConfig, start: RecoveryStart) -> Opened {
    open(storage, config, start).unwrap_or_else(|e| panic!("open failed: {e}"))
}

/// A fresh log on `storage` with the batches of `batches` committed (`data_bytes` per event).
fn write_log(
    storage: &FaultStorage,
    config: LogConfig,
    batches: &[&[u64]],
    data_bytes: usize,
) -> Appender {
    let (log, writer, _) = open_ok(storage, config, RecoveryStart::BEGINNING);
    let mut app = Appender::new(log, writer, Vec::new());
    for batch in batches {
        app.commit(batch, data_bytes).unwrap();
    }
    app
}

/// `n` batches of one to three records of one to three events each.
fn mixed_batches(n: usize) -> Vec<&'static [u64]> {
    const SHAPES: [&[u64]; 4] = [&[1], &[2, 1], &[1, 3, 1], &[3]];
    (0..n).map(|i| SHAPES[i % SHAPES.len()]).collect()
}

/// Every readable record, by a full scan.
fn scan_all(log: &Arc<Log>) -> Result<Vec<Record>, LogError> {
    let mut scan = log.scan(log.start_address(), log.readable_end());
    let mut out = Vec::new();
    while let Some(record) = scan.next()? {
        out.push(record);
    }
    Ok(out)
}

/// Asserts that a full scan returns exactly `expected`, byte for byte, with positions dense from 1.
fn assert_log_holds(log: &Arc<Log>, expected: &[Written]) {
    let records = scan_all(log).unwrap_or_else(|e| panic!("scan failed: {e}"));
    let got: Vec<(u64, u64, u64)> = records
        .iter()
        .map(|r| {
            (
                r.address,
                r.header.first_position.0,
                u64::from(r.header.event_count),
            )
        })
        .collect();
    let want: Vec<(u64, u64, u64)> = expected
        .iter()
        .map(|w| (w.address, w.first_position, w.events))
        .collect();
    assert_eq!(
        got, want,
        "(address, first position, events) of the scanned records"
    );
    for (r, w) in records.iter().zip(expected) {
        assert!(
            r.frame[..] == w.frame[..],
            "record at {} differs from what was written",
            w.address
        );
    }
    let mut next = 1;
    for r in &records {
        assert_eq!(
            r.header.first_position.0, next,
            "positions not dense at {}",
            r.address
        );
        next = r.header.last_position().0 + 1;
    }
}

/// The base address a segment file name stands for.
fn segment_base(name: &str) -> u64 {
    name.strip_suffix(".seg").unwrap().parse().unwrap()
}

/// The only segment of `log`.
fn only_segment(log: &Log) -> String {
    let names = log.segment_names();
    assert_eq!(names.len(), 1, "expected one segment, found {names:?}");
    names[0].clone()
}

/// The bytes of `segment` up to `end` (an address in it), after checking that the writer left
/// nothing but preallocated zeros after them.
fn written_bytes(storage: &FaultStorage, segment: &str, end: u64) -> Vec<u8> {
    let mut bytes = storage.bytes(segment).unwrap();
    let len = usize::try_from(end - segment_base(segment)).unwrap();
    // Compared as slices (a `memcmp`), not a byte at a time: the tail is megabytes of zeros.
    assert!(
        bytes[len..] == vec![0u8; bytes.len() - len][..],
        "non-zero bytes after the log end of {segment}"
    );
    bytes.truncate(len);
    bytes
}

/// `bytes` followed by `n` zeros, as a preallocated tail leaves them.
fn with_zeros(bytes: &[u8], n: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out.resize(bytes.len() + n, 0);
    out
}

/// `bytes` with one bit flipped at `at`.
fn flipped(bytes: &[u8], at: u64) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let at = usize::try_from(at).unwrap();
    out[at] ^= 1 << (at % 8);
    out
}

/// A storage holding exactly the given files, all durable.
fn storage_with(files: &[(&str, Vec<u8>)]) -> FaultStorage {
    let storage = FaultStorage::new();
    for (name, bytes) in files {
        storage.set_bytes(name, bytes.clone());
    }
    storage
}

fn assert_corrupt(result: Result<Opened, LogError>, file: &str, offset: u64) {
    match result {
        Err(LogError::Corrupt {
            file: f,
            offset: o,
            reason,
        }) => {
            assert_eq!(
                (f.as_str(), o),
                (file, offset),
                "corruption reported at the wrong place ({reason})"
            );
        }
        Err(e) => panic!("expected Corrupt in {file} at {offset}, got {e}"),
        Ok((_, _, report)) => panic!("expected Corrupt in {file} at {offset}, opened: {report:?}"),
    }
}

/// Opens `storage` (one segment `segment` whose original bytes ended at the last written record)
/// and checks that recovery kept exactly `kept`, cut everything after them, and that the cut is
/// durable and a second open is clean.
fn assert_recovers_to(storage: &FaultStorage, segment: &str, kept: &[Written], case: &str) {
    let kept_end = kept.last().map_or(SEGMENT_HEADER_BYTES, Written::end);
    // Zeros after the last non-zero byte are preallocated space, cut without a report.
    let data_end = storage
        .bytes(segment)
        .unwrap()
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i as u64 + 1)
        .max(kept_end);
    let (log, _writer, report) = open_ok(storage, LogConfig::default(), RecoveryStart::BEGINNING);
    assert_eq!(report.end_address, kept_end, "{case}: end address");
    assert_eq!(
        report.next_position,
        next_position_after(kept),
        "{case}: next position"
    );
    assert_eq!(
        report.records_scanned,
        kept.len() as u64,
        "{case}: records scanned"
    );
    assert!(report.removed_segments.is_empty(), "{case}: {report:?}");
    let truncated = report
        .truncated
        .as_ref()
        .map(|t| (t.file.as_str(), t.offset, t.bytes_dropped));
    let expected = (data_end > kept_end).then_some((segment, kept_end, data_end - kept_end));
    assert_eq!(
        truncated, expected,
        "{case}: truncation (file, offset, bytes dropped)"
    );
    assert_eq!(log.readable_end(), kept_end, "{case}: readable end");
    assert_log_holds(&log, kept);
    // The cut is made and synced: a crash right after recovery keeps it.
    let end = usize::try_from(kept_end).unwrap();
    assert_eq!(
        storage.bytes(segment).unwrap().len(),
        end,
        "{case}: file length after recovery"
    );
    assert_eq!(
        storage.crash_image().bytes(segment).unwrap().len(),
        end,
        "{case}: cut not durable"
    );
    drop((log, _writer));

    let (log, _writer, again) = open_ok(storage, LogConfig::default(), RecoveryStart::BEGINNING);
    assert_eq!(again.truncated, None, "{case}: second open truncated again");
    assert_eq!(
        (again.end_address, again.next_position),
        (kept_end, next_position_after(kept)),
        "{case}: second open"
    );
    assert_log_holds(&log, kept);
}

// 1. Torn last write.

#[test]
fn torn_last_batch_is_cut_at_every_byte_offset() {
    let storage = FaultStorage::new();
    let mut app = write_log(&storage, LogConfig::default(), &mixed_batches(6), 30);
    let durable_end = app.written.last().unwrap().end();
    app.commit(&[2, 1, 3], 30).unwrap();
    let segment = only_segment(&app.log);
    let full_end = app.written.last().unwrap().end();
    let bytes = written_bytes(&storage, &segment, full_end);
    let written = app.written.clone();
    drop(app);

    for k in durable_end..=full_end {
        let kept: Vec<Written> = written.iter().filter(|w| w.end() <= k).cloned().collect();
        let cut = usize::try_from(k).unwrap();

        let storage = storage_with(&[(&segment, bytes[..cut].to_vec())]);
        assert_recovers_to(&storage, &segment, &kept, &format!("cut at {k}"));

        let mut zeroed = bytes.clone();
        zeroed[cut..].fill(0);
        let storage = storage_with(&[(&segment, zeroed)]);
        assert_recovers_to(&storage, &segment, &kept, &format!("zeroed from {k}"));

        // The batch torn inside preallocated space: its first bytes, then zeros.
        let storage = storage_with(&[(&segment, with_zeros(&bytes[..cut], 4096))]);
        assert_recovers_to(
            &storage,
            &segment,
            &kept,
            &format!("cut at {k}, zeros after"),
        );
    }

    // Preallocated zeros count for nothing, however far past the torn-tail window they reach.
    let window = usize::try_from(TORN_TAIL_WINDOW_BYTES).unwrap();
    let k = (durable_end + full_end) / 2;
    let kept: Vec<Written> = written.iter().filter(|w| w.end() <= k).cloned().collect();
    let cut = usize::try_from(k).unwrap();
    let storage = storage_with(&[(&segment, with_zeros(&bytes[..cut], 2 * window))]);
    assert_recovers_to(
        &storage,
        &segment,
        &kept,
        "torn batch, zeros past the window",
    );
}

#[test]
fn torn_bytes_past_the_window_inside_zeros_are_corruption() {
    // A crash tears at most one batch; non-zero bytes further out than the window, even with
    // zeros before them, are damage to the log, not a torn tail.
    let storage = FaultStorage::new();
    let app = write_log(&storage, LogConfig::default(), &mixed_batches(4), 30);
    let segment = only_segment(&app.log);
    let end = app.written.last().unwrap().end();
    let bytes = written_bytes(&storage, &segment, end);
    let window = usize::try_from(TORN_TAIL_WINDOW_BYTES).unwrap();
    let mut damaged = with_zeros(&bytes, window + 100);
    damaged[bytes.len() + window + 10] = 0x5a;
    let storage = storage_with(&[(&segment, damaged)]);
    assert_corrupt(
        open(&storage, LogConfig::default(), RecoveryStart::BEGINNING),
        &segment,
        end,
    );

    // A hole of zeros over the first record, the records after it intact: within one batch of
    // the end that cannot be told from a torn batch, so it is cut and reported; further out it
    // is corruption.
    let (first, _) = app.written.split_first().unwrap();
    let start = usize::try_from(first.address).unwrap();
    let mut holed = bytes.clone();
    holed[start..start + first.frame.len()].fill(0);
    let storage = storage_with(&[(&segment, with_zeros(&holed, 4096))]);
    let (_, _, report) = open_ok(&storage, LogConfig::default(), RecoveryStart::BEGINNING);
    let t = report
        .truncated
        .expect("the hole and what follows are cut and reported");
    assert_eq!(
        (t.offset, t.bytes_dropped),
        (first.address, end - first.address)
    );
    let mut far = with_zeros(&holed, window);
    far[bytes.len() + window - 1] = 0x5a;
    let storage = storage_with(&[(&segment, far)]);
    assert_corrupt(
        open(&storage, LogConfig::default(), RecoveryStart::BEGINNING),
        &segment,
        first.address,
    );
}

// 2. Lost un-synced writes.

/// Where a run of [`write_until_crash`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stopped {
    /// Opening the fresh log (creating its first segment) failed.
    InOpen,
    /// `append` failed: the crash hit a segment rollover.
    InAppend,
    /// `SyncTicket::sync` failed.
    InSync,
    /// Every batch was acknowledged.
    Never,
}

const CRASH_RUN_BATCHES: usize = 60;
const CRASH_RUN_DATA_BYTES: usize = 100;

/// Writes the same batches as every other run until a write or sync fails; returns the
/// acknowledged records and where the run stopped.
fn write_until_crash(storage: &FaultStorage) -> (Vec<Written>, Stopped) {
    let Ok((log, writer, _)) = open(storage, small_segments(), RecoveryStart::BEGINNING) else {
        return (Vec::new(), Stopped::InOpen);
    };
    let mut app = Appender::new(log, writer, Vec::new());
    for batch in mixed_batches(CRASH_RUN_BATCHES) {
        let stopped = match app.write(batch, CRASH_RUN_DATA_BYTES) {
            Err(_) => Stopped::InAppend,
            Ok(pending) => match app.acknowledge(pending) {
                Err(_) => Stopped::InSync,
                Ok(()) => continue,
            },
        };
        assert!(app.log.is_poisoned(), "a failed sync must poison the log");
        assert!(matches!(app.writer.append(b"x"), Err(LogError::Poisoned)));
        return (app.written, stopped);
    }
    (app.written, Stopped::Never)
}

#[test]
fn crash_at_every_sync_keeps_exactly_the_acknowledged_batches() {
    let dry_run = FaultStorage::new();
    let (everything, stopped) = write_until_crash(&dry_run);
    assert_eq!(stopped, Stopped::Never);
    let syncs = dry_run.syncs();
    assert!(
        dry_run.names().len() >= 4,
        "the run should cross several rollovers: {:?}",
        dry_run.names()
    );

    let mut stops = Vec::new();
    for n in 1..=syncs {
        let storage = FaultStorage::new();
        storage.crash_at_sync(n);
        let (acked, stopped) = write_until_crash(&storage);
        assert!(storage.has_crashed(), "sync {n}: no crash");
        assert_ne!(stopped, Stopped::Never, "sync {n}");
        assert!(
            everything.starts_with(&acked),
            "sync {n}: acknowledged records differ from the dry run"
        );
        stops.push(stopped);

        let image = storage.crash_image();
        let (log, writer, report) = open(&image, small_segments(), RecoveryStart::BEGINNING)
            .unwrap_or_else(|e| panic!("sync {n}: reopen failed: {e}"));
        // A rollover whose new segment became durable before the crash leaves it holding only
        // its header; recovery then ends after that header.
        let last_base = image.names().iter().map(|name| segment_base(name)).max();
        let acked_end = acked.last().map_or(0, Written::end);
        let expected_end = match last_base {
            Some(base) if base >= acked_end => {
                assert!(
                    base == acked_end || acked.is_empty(),
                    "sync {n}: stray segment {base}"
                );
                base + SEGMENT_HEADER_BYTES
            }
            Some(_) => acked_end,
            None => SEGMENT_HEADER_BYTES,
        };
        assert_eq!(report.end_address, expected_end, "sync {n}: end address");
        assert_eq!(
            report.next_position,
            next_position_after(&acked),
            "sync {n}: next position"
        );
        assert_eq!(
            report.records_scanned,
            acked.len() as u64,
            "sync {n}: records scanned"
        );
        assert_eq!(
            report.truncated, None,
            "sync {n}: the crash image holds no torn write"
        );
        assert!(report.removed_segments.is_empty(), "sync {n}: {report:?}");
        assert_log_holds(&log, &acked);

        // The recovered log takes new appends, and they survive another reopen.
        let mut app = Appender::new(log, writer, acked);
        app.commit(&[2, 1], CRASH_RUN_DATA_BYTES)
            .unwrap_or_else(|e| panic!("sync {n}: append after recovery failed: {e}"));
        let expected = app.written.clone();
        drop(app);
        let (log, _writer, report) = open_ok(&image, small_segments(), RecoveryStart::BEGINNING);
        assert_eq!(report.truncated, None, "sync {n}");
        assert_log_holds(&log, &expected);
    }

    // The loop crossed every kind of sync: the first segment's creation (file, then directory),
    // rollovers and batch syncs.
    assert_eq!(&stops[..2], &[Stopped::InOpen, Stopped::InOpen]);
    let rollovers = stops.iter().filter(|s| **s == Stopped::InAppend).count();
    assert!(rollovers >= 9, "only {rollovers} crashes inside a rollover");
    assert!(stops.contains(&Stopped::InSync));
}

// 3. Bit flips.

#[test]
fn bit_flip_in_the_last_record_is_cut_as_a_torn_tail() {
    let storage = FaultStorage::new();
    let app = write_log(&storage, LogConfig::default(), &mixed_batches(5), 30);
    let segment = only_segment(&app.log);
    let bytes = storage.bytes(&segment).unwrap();
    assert!(
        bytes.len() as u64 > app.written.last().unwrap().end(),
        "the writer preallocates"
    );
    let (last, kept) = app.written.split_last().unwrap();
    for at in last.address..last.end() {
        let storage = storage_with(&[(&segment, flipped(&bytes, at))]);
        assert_recovers_to(&storage, &segment, kept, &format!("bit flip at {at}"));
    }
}

#[test]
fn bit_flip_beyond_the_torn_tail_window_is_corruption() {
    // 64 KiB events, eight MiB batches, a little more than the window in all.
    const DATA: usize = 64 * 1024;
    let record_bytes = encode_record(1, 1, DATA).len() as u64;
    let records = TORN_TAIL_WINDOW_BYTES / record_bytes + 24;
    let per_batch = 128;
    let batches: Vec<Vec<u64>> = (0..records.div_ceil(per_batch))
        .map(|b| vec![1; usize::try_from(per_batch.min(records - b * per_batch)).unwrap()])
        .collect();
    let storage = FaultStorage::new();
    let batch_refs: Vec<&[u64]> = batches.iter().map(Vec::as_slice).collect();
    let app = write_log(&storage, LogConfig::default(), &batch_refs, DATA);
    let segment = only_segment(&app.log);
    let end = app.written.last().unwrap().end();
    let bytes = written_bytes(&storage, &segment, end);
    assert!(end - app.written[1].address > TORN_TAIL_WINDOW_BYTES);

    // The first record that starts within the window of the end is the oldest one a crash could
    // have torn: a bad one is cut; the one before it is corruption.
    let first_in_window = app
        .written
        .iter()
        .position(|w| end - w.address <= TORN_TAIL_WINDOW_BYTES)
        .unwrap();
    let middle = |w: &Written| w.address + w.frame.len() as u64 / 2;

    let w = &app.written[first_in_window];
    let storage = storage_with(&[(&segment, flipped(&bytes, middle(w)))]);
    let (log, _writer, report) = open_ok(&storage, LogConfig::default(), RecoveryStart::BEGINNING);
    let t = report
        .truncated
        .as_ref()
        .expect("a bad record in the window is cut");
    assert_eq!(
        (t.file.as_str(), t.offset, t.bytes_dropped),
        (segment.as_str(), w.address, end - w.address)
    );
    assert_eq!(report.next_position, Position(w.first_position));
    assert_log_holds(&log, &app.written[..first_in_window]);
    drop((log, _writer));

    for index in [first_in_window - 1, 1] {
        let w = &app.written[index];
        let storage = storage_with(&[(&segment, flipped(&bytes, middle(w)))]);
        let result = open(&storage, LogConfig::default(), RecoveryStart::BEGINNING);
        assert_corrupt(result, &segment, w.address);
        assert!(
            storage.bytes(&segment).unwrap() == flipped(&bytes, middle(w)),
            "a refused open must not change the file"
        );
    }
}

#[test]
fn bit_flip_in_a_sealed_segment_is_corruption() {
    let storage = FaultStorage::new();
    let app = write_log(&storage, small_segments(), &mixed_batches(40), 100);
    let names = app.log.segment_names();
    assert!(names.len() >= 3, "{names:?}");
    let files: Vec<(String, Vec<u8>)> = names
        .iter()
        .map(|n| (n.clone(), storage.bytes(n).unwrap()))
        .collect();

    for (i, (name, _)) in files.iter().enumerate() {
        let base = segment_base(name);
        let next_base = files.get(i + 1).map_or(u64::MAX, |(n, _)| segment_base(n));
        let inside: Vec<&Written> = app
            .written
            .iter()
            .filter(|w| w.address >= base && w.address < next_base)
            .collect();
        let is_last = i + 1 == files.len();
        // Its first and its last record: in the last segment the last one is a torn tail.
        for w in [inside[0], inside[inside.len() - 1]] {
            let at = w.address + 20;
            let damaged: Vec<(&str, Vec<u8>)> = files
                .iter()
                .map(|(n, b)| {
                    (
                        n.as_str(),
                        if n == name {
                            flipped(b, at - base)
                        } else {
                            b.clone()
                        },
                    )
                })
                .collect();
            let storage = storage_with(&damaged);
            let result = open(&storage, small_segments(), RecoveryStart::BEGINNING);
            if is_last {
                let (_, _, report) =
                    result.unwrap_or_else(|e| panic!("flip at {at} in the last segment: {e}"));
                let t = report.truncated.unwrap();
                assert_eq!(
                    (t.file.as_str(), t.offset),
                    (name.as_str(), w.address - base)
                );
                assert_eq!(report.next_position, Position(w.first_position));
            } else {
                assert_corrupt(result, name, w.address - base);
            }
        }
    }
}

#[test]
fn corruption_before_a_later_recovery_start_is_found_by_reads() {
    let storage = FaultStorage::new();
    let app = write_log(&storage, LogConfig::default(), &mixed_batches(8), 50);
    let segment = only_segment(&app.log);
    let bytes = written_bytes(&storage, &segment, app.written.last().unwrap().end());
    let (bad, start) = (&app.written[2], &app.written[5]);
    let storage = storage_with(&[(&segment, flipped(&bytes, bad.address + 30))]);

    let checkpoint = RecoveryStart {
        address: start.address,
        next_position: Position(start.first_position),
        previous_record: None,
    };
    let (log, _writer, report) = open_ok(&storage, LogConfig::default(), checkpoint);
    assert_eq!(report.truncated, None);
    assert_eq!(report.records_scanned, app.written.len() as u64 - 5);
    assert_eq!(report.next_position, next_position_after(&app.written));
    assert_eq!(report.end_address, bytes.len() as u64);

    match log.read_record(bad.address) {
        Err(LogError::Corrupt { file, offset, .. }) => {
            assert_eq!((file, offset), (segment.clone(), bad.address))
        }
        other => panic!("read of the damaged record: {other:?}"),
    }
    let good = log.read_record(start.address).unwrap();
    assert!(good.frame[..] == start.frame[..]);
    match scan_all(&log) {
        Err(LogError::Corrupt { file, offset, .. }) => {
            assert_eq!((file, offset), (segment.clone(), bad.address))
        }
        other => panic!("full scan over the damaged record: {other:?}"),
    }
}

// 4. Half-created segments.

#[test]
fn half_created_last_segment_is_removed() {
    let storage = FaultStorage::new();
    let mut app = write_log(&storage, small_segments(), &[], 100);
    while app.log.segment_names().len() < 2 {
        app.commit(&[1, 2], 100).unwrap();
    }
    let names = app.log.segment_names();
    let (sealed, newest) = (names[0].clone(), names[1].clone());
    let sealed_bytes = storage.bytes(&sealed).unwrap();
    let header = storage.bytes(&newest).unwrap()[..64].to_vec();
    let sealed_end = segment_base(&newest);
    let kept: Vec<Written> = app
        .written
        .iter()
        .filter(|w| w.address < sealed_end)
        .cloned()
        .collect();
    assert_eq!(kept.last().unwrap().end(), sealed_end);
    drop(app);

    // The header's checked fields are its first 28 bytes; the rest is zeros. A short file, or a
    // 64-byte one whose write stopped before byte 28, is half-created; a header whose zero tail
    // was lost is whole.
    let mut cases = Vec::new();
    for k in 0..64 {
        cases.push((
            format!("short header of {k} bytes"),
            header[..k].to_vec(),
            true,
        ));
        let mut padded = header[..k].to_vec();
        padded.resize(64, 0);
        cases.push((format!("header written up to byte {k}"), padded, k < 28));
    }
    cases.push(("whole header".to_owned(), header, false));

    for (case, newest_bytes, half_created) in cases {
        let storage = storage_with(&[(&sealed, sealed_bytes.clone()), (&newest, newest_bytes)]);
        let (log, writer, report) = open_ok(&storage, small_segments(), RecoveryStart::BEGINNING);
        assert_eq!(report.truncated, None, "{case}");
        assert_eq!(report.next_position, next_position_after(&kept), "{case}");
        assert_log_holds(&log, &kept);
        if half_created {
            assert_eq!(report.removed_segments, vec![newest.clone()], "{case}");
            assert_eq!(report.end_address, sealed_end, "{case}");
            assert_eq!(log.segment_names(), vec![sealed.clone()], "{case}");
            assert_eq!(storage.names(), vec![sealed.clone()], "{case}");
            assert_eq!(
                storage.crash_image().names(),
                vec![sealed.clone()],
                "{case}: removal not durable"
            );
        } else {
            assert!(report.removed_segments.is_empty(), "{case}");
            assert_eq!(
                report.end_address,
                sealed_end + SEGMENT_HEADER_BYTES,
                "{case}"
            );
            assert_eq!(log.segment_names(), names, "{case}");
        }

        // The log goes on: new records land in a (fresh) second segment and survive a reopen.
        let mut app = Appender::new(log, writer, kept.clone());
        app.commit(&[1; 12], 100).unwrap();
        let expected = app.written.clone();
        assert_eq!(app.log.segment_names(), names, "{case}");
        drop(app);
        let (log, _writer, report) = open_ok(&storage, small_segments(), RecoveryStart::BEGINNING);
        assert!(report.removed_segments.is_empty(), "{case}");
        assert_eq!(report.truncated, None, "{case}");
        assert_log_holds(&log, &expected);
    }
}

#[test]
fn half_created_first_segment_is_replaced() {
    let name = format!("{:020}.seg", 0);
    for k in 0..64 {
        let storage = storage_with(&[(&name, vec![0; k])]);
        let (log, writer, report) =
            open_ok(&storage, LogConfig::default(), RecoveryStart::BEGINNING);
        assert_eq!(report.removed_segments, vec![name.clone()], "{k} bytes");
        assert_eq!(
            (report.end_address, report.next_position),
            (SEGMENT_HEADER_BYTES, Position(1))
        );
        assert_eq!(log.segment_names(), vec![name.clone()]);
        assert_eq!(
            storage.bytes(&name).unwrap().len(),
            64,
            "a fresh header is written"
        );
        let mut app = Appender::new(log, writer, Vec::new());
        app.commit(&[1, 2], 10).unwrap();
        assert_log_holds(&app.log, &app.written);
    }
}

#[test]
fn bad_header_of_a_segment_holding_records_is_refused() {
    let storage = FaultStorage::new();
    let app = write_log(&storage, small_segments(), &mixed_batches(40), 100);
    let names = app.log.segment_names();
    assert!(names.len() >= 3, "{names:?}");
    // Every header of a segment that holds records was synced before its first record went in, so
    // a bad one is damage, not a crash, and the records after it may have been acknowledged: the
    // open must refuse, not drop them, whether the segment is sealed or the newest.
    for damaged in &names {
        let files: Vec<(&str, Vec<u8>)> = names
            .iter()
            .map(|n| {
                let bytes = storage.bytes(n).unwrap();
                (
                    n.as_str(),
                    if n == damaged {
                        flipped(&bytes, 17)
                    } else {
                        bytes
                    },
                )
            })
            .collect();
        let storage = storage_with(&files);
        match open(&storage, small_segments(), RecoveryStart::BEGINNING) {
            Err(LogError::BadSegmentHeader { file, .. }) => assert_eq!(&file, damaged),
            Err(e) => panic!("bad header of {damaged}: expected BadSegmentHeader, got {e}"),
            Ok((_, _, report)) => panic!("bad header of {damaged}: opened, {report:?}"),
        }
        assert_eq!(
            storage.names(),
            names,
            "a refused open must not remove files"
        );
    }
}

// 5. Recovery starts.

/// Opens from `start` and checks the log recovered to `written`, scanning only what lies after.
fn assert_start_accepted(storage: &FaultStorage, written: &[Written], start: RecoveryStart) {
    let (log, _writer, report) = open(storage, small_segments(), start)
        .unwrap_or_else(|e| panic!("start {start:?} refused: {e}"));
    let after = written
        .iter()
        .filter(|w| w.address >= start.address)
        .count();
    assert_eq!(report.records_scanned, after as u64, "start {start:?}");
    assert_eq!(
        report.next_position,
        next_position_after(written),
        "start {start:?}"
    );
    assert_eq!(
        report.end_address,
        written.last().unwrap().end(),
        "start {start:?}"
    );
    assert_eq!(report.truncated, None, "start {start:?}");
    let mut scan = log.scan(start.address, log.readable_end());
    let mut scanned = Vec::new();
    while let Some(r) = scan
        .next()
        .unwrap_or_else(|e| panic!("scan from {start:?}: {e}"))
    {
        scanned.push(r.address);
    }
    let expected: Vec<u64> = written
        .iter()
        .filter(|w| w.address >= start.address)
        .map(|w| w.address)
        .collect();
    assert_eq!(scanned, expected, "scan from {start:?}");
}

#[test]
fn recovery_start_must_be_a_record_boundary() {
    let storage = FaultStorage::new();
    let app = write_log(&storage, small_segments(), &mixed_batches(16), 100);
    assert!(app.log.segment_names().len() >= 2);
    let written = app.written.clone();
    let end = written.last().unwrap().end();
    drop(app);

    // Every record's address, and the end of the log, with the position of the record there.
    let mut boundaries: Vec<(u64, u64)> = written
        .iter()
        .map(|w| (w.address, w.first_position))
        .collect();
    boundaries.push((end, next_position_after(&written).0));

    for address in 1..end + 100 {
        let boundary = boundaries.iter().find(|(a, _)| *a == address);
        let start = RecoveryStart {
            address,
            next_position: Position(boundary.map_or(1, |b| b.1)),
            previous_record: None,
        };
        if boundary.is_some() {
            assert_start_accepted(&storage, &written, start);
            continue;
        }
        // A segment boundary (the end of a sealed segment's last record) is handled by
        // `recovery_start_at_a_segment_boundary_is_accepted`.
        if written.iter().any(|w| w.end() == address) {
            continue;
        }
        match open(&storage, small_segments(), start) {
            Err(LogError::BadRecoveryStart { address: a, .. }) => assert_eq!(a, address),
            Err(e) => panic!("start {address}: expected BadRecoveryStart, got {e}"),
            Ok((_, _, report)) => panic!("start {address} accepted: {report:?}"),
        }
    }

    // A record boundary with the wrong position.
    for w in &written {
        for wrong in [w.first_position - 1, w.first_position + 1] {
            let start = RecoveryStart {
                address: w.address,
                next_position: Position(wrong),
                previous_record: None,
            };
            match open(&storage, small_segments(), start) {
                Err(LogError::BadRecoveryStart { address, .. }) => assert_eq!(address, w.address),
                other => panic!(
                    "start {start:?}: expected BadRecoveryStart, got {:?}",
                    other.map(|o| o.2)
                ),
            }
        }
    }

    // Nothing was changed by the refused opens.
    let (log, _writer, report) = open_ok(&storage, small_segments(), RecoveryStart::BEGINNING);
    assert_eq!(report.truncated, None);
    assert_log_holds(&log, &written);
}

#[test]
fn recovery_start_at_a_segment_boundary_is_accepted() {
    // The index checkpoints "every record before `address`", so a checkpoint taken right after
    // the last record of a sealed segment names the end of that segment, which is also the base
    // address of the next one.
    let storage = FaultStorage::new();
    let app = write_log(&storage, small_segments(), &mixed_batches(16), 100);
    let names = app.log.segment_names();
    assert!(names.len() >= 2);
    let written = app.written.clone();
    drop(app);
    for name in &names[1..] {
        let base = segment_base(name);
        let before: Vec<Written> = written
            .iter()
            .filter(|w| w.address < base)
            .cloned()
            .collect();
        assert_eq!(before.last().unwrap().end(), base);
        let start = RecoveryStart {
            address: base,
            next_position: next_position_after(&before),
            previous_record: None,
        };
        assert_start_accepted(&storage, &written, start);
    }
}

#[test]
fn torn_write_at_the_recovery_start_is_cut() {
    // The index checkpoint is the end of the log when the index last caught up; the writer's next
    // batch goes exactly there, and a crash can tear it. Recovery from that checkpoint must cut
    // the torn batch, as recovery from the beginning does, not refuse to open.
    let storage = FaultStorage::new();
    let mut app = write_log(&storage, LogConfig::default(), &mixed_batches(4), 30);
    let checkpoint = RecoveryStart {
        address: app.written.last().unwrap().end(),
        next_position: next_position_after(&app.written),
        previous_record: Some(app.written.last().unwrap().address),
    };
    let kept = app.written.clone();
    app.commit(&[1, 2], 30).unwrap();
    let segment = only_segment(&app.log);
    let bytes = storage.bytes(&segment).unwrap();
    drop(app);

    let cut = usize::try_from(checkpoint.address).unwrap() + 10;
    let storage = storage_with(&[(&segment, bytes[..cut].to_vec())]);
    let (log, _writer, report) = open(&storage, LogConfig::default(), checkpoint)
        .unwrap_or_else(|e| panic!("open from the checkpoint: {e}"));
    let t = report.truncated.expect("the torn batch is cut");
    assert_eq!((t.offset, t.bytes_dropped), (checkpoint.address, 10));
    assert_eq!(
        (report.end_address, report.next_position),
        (checkpoint.address, checkpoint.next_position)
    );
    assert_log_holds(&log, &kept);
    drop(log);

    // A previous record that does not end at the start does not prove it.
    let wrong = RecoveryStart {
        previous_record: Some(kept[0].address),
        ..checkpoint
    };
    match open(&storage, LogConfig::default(), wrong) {
        Err(LogError::BadRecoveryStart { address, .. }) => assert_eq!(address, checkpoint.address),
        other => panic!("expected BadRecoveryStart, got {:?}", other.map(|o| o.2)),
    }
}

// The real file system.

#[test]
fn file_storage_round_trip_lock_and_torn_tail() {
    let dir = tempfile::TempDir::new().unwrap();
    let storage = FileStorage::open(dir.path()).unwrap();
    let err = FileStorage::open(dir.path()).expect_err("a second open of a locked directory");
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);

    let (log, writer, report) = Log::open(
        Arc::new(storage),
        small_segments(),
        RecoveryStart::BEGINNING,
    )
    .unwrap();
    assert_eq!(
        (report.end_address, report.next_position),
        (SEGMENT_HEADER_BYTES, Position(1))
    );
    let mut app = Appender::new(log, writer, Vec::new());
    for batch in mixed_batches(30) {
        app.commit(batch, 100).unwrap();
    }
    let written = app.written.clone();
    let names = app.log.segment_names();
    assert!(names.len() >= 2, "{names:?}");
    drop(app);

    // Dropping the log released the lock.
    let storage = FileStorage::open(dir.path()).unwrap();
    let (log, _writer, report) = Log::open(
        Arc::new(storage),
        small_segments(),
        RecoveryStart::BEGINNING,
    )
    .unwrap();
    assert_eq!(report.truncated, None);
    assert_eq!(report.end_address, written.last().unwrap().end());
    assert_eq!(report.next_position, next_position_after(&written));
    assert_eq!(log.segment_names(), names);
    assert_log_holds(&log, &written);
    assert!(
        FileStorage::open(dir.path()).is_err(),
        "the reopened log holds the lock"
    );
    drop((log, _writer));

    // Tear the last record on disk.
    let last = written.last().unwrap();
    let newest = names.last().unwrap();
    let base = segment_base(newest);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join(newest))
        .unwrap();
    // The frame's first four bytes (its magic) are non-zero.
    file.set_len(last.address - base + 4).unwrap();
    drop(file);
    let storage = FileStorage::open(dir.path()).unwrap();
    let (log, _writer, report) = Log::open(
        Arc::new(storage),
        small_segments(),
        RecoveryStart::BEGINNING,
    )
    .unwrap();
    let t = report.truncated.expect("torn tail cut");
    assert_eq!(
        (t.file.as_str(), t.offset, t.bytes_dropped),
        (newest.as_str(), last.address - base, 4)
    );
    assert_log_holds(&log, &written[..written.len() - 1]);
    let on_disk = std::fs::metadata(dir.path().join(newest)).unwrap().len();
    assert_eq!(on_disk, last.address - base);
}
