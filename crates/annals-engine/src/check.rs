//! `annals check`: verifies every record's checksum and position, and that the index agrees with
//! the log entry for entry (category and event-type revisions included: they must number each
//! list's events densely in log order).

use std::collections::HashMap;

use annals_core::{Direction, Position, Revision, category_of};
use annals_index::{Index, PostingKind};
use annals_log::codec::{Interner, RecordKind, decode_events};

use crate::engine::Engine;
use crate::error::EngineError;

/// What a check found. `problems` is empty for a healthy store.
#[derive(Clone, Debug, Default)]
pub struct CheckReport {
    pub records: u64,
    pub events: u64,
    pub streams: u64,
    pub log_bytes: u64,
    pub problems: Vec<String>,
}

/// Problems listed at most; the count still covers all.
const CHECK_PROBLEMS_MAX: usize = 100;

impl Engine {
    /// Scans the whole log and compares it with the index. `progress` is called now and then
    /// with the events checked so far. Refused while the engine is stopped for a repair (a
    /// full or failing disk): it commits the index store, which the repair has to reopen first.
    pub fn check(&self, mut progress: impl FnMut(u64)) -> Result<CheckReport, EngineError> {
        let shared = &self.inner.shared;
        if let Some(reason) = self.local_write_failure() {
            return Err(EngineError::Stopped(format!(
                "{reason}; the store is checked once it takes writes again"
            )));
        }
        let log = &shared.log;
        let index = &shared.index;
        let mut report = CheckReport {
            log_bytes: log.bytes(),
            ..CheckReport::default()
        };
        // Counts and stream listings cover committed entries only.
        if let Err(e) = index.commit_staged() {
            shared.stop_for_index_repair(format!("index commit failed: {e}"));
            return Err(e.into());
        }
        let head = shared.head.get();
        let mut scan = log.scan(log.start_address(), log.readable_end());
        let mut interner = Interner::default();
        let mut next = Position(1);
        let mut revisions: HashMap<String, (u64, bool)> = HashMap::new();
        let mut ids: HashMap<String, u64> = HashMap::new();
        let mut list_revisions: HashMap<(PostingKind, String), u64> = HashMap::new();
        while let Some(rec) = scan.next()? {
            report.records += 1;
            if rec.header.first_position != next {
                problem(
                    &mut report,
                    format!(
                        "record at {} has position {}, expected {}",
                        rec.address, rec.header.first_position, next
                    ),
                );
            }
            next = rec.header.last_position().next();
            let mut events = Vec::new();
            decode_events(
                &rec.frame,
                &rec.header,
                &mut interner,
                (rec.header.first_position, rec.header.last_position()),
                |e| events.push(e),
            )
            .map_err(|e| annals_log::LogError::Corrupt {
                file: "log".to_owned(),
                offset: rec.address,
                reason: e.to_string(),
            })?;
            let tombstone = rec.header.kind == RecordKind::Tombstone;
            for e in events {
                report.events += 1;
                let name = e.stream.as_str();
                let state = revisions.entry(name.to_owned()).or_insert((0, false));
                if tombstone {
                    state.1 = true;
                    continue;
                }
                if e.revision.0 != state.0 {
                    problem(
                        &mut report,
                        format!("{name}: revision {} where {} was due", e.revision, state.0),
                    );
                }
                state.0 = e.revision.0 + 1;
                let id = match ids.get(name) {
                    Some(id) => *id,
                    None => match index.stream_head(name)? {
                        Some(h) => {
                            ids.insert(name.to_owned(), h.id);
                            h.id
                        }
                        None => {
                            problem(&mut report, format!("{name}: missing from the index"));
                            continue;
                        }
                    },
                };
                let entry = index.stream_entries(id, e.revision, Direction::Forwards, 1)?;
                match entry.first() {
                    Some(x)
                        if x.revision == e.revision
                            && x.position == e.position
                            && x.address == rec.address => {}
                    other => problem(
                        &mut report,
                        format!(
                            "{name}@{}: index has {other:?}, log has position {} at {}",
                            e.revision, e.position, rec.address
                        ),
                    ),
                }
                // The event is the next revision of its category's and its type's lists.
                for (kind, key) in [
                    (PostingKind::Category, category_of(name)),
                    (PostingKind::EventType, e.event_type.as_str()),
                ] {
                    let due = list_revisions.entry((kind, key.to_owned())).or_insert(0);
                    let revision = Revision(*due);
                    *due += 1;
                    let p = index.postings(kind, key, revision, Direction::Forwards, 1)?;
                    let found = p.first().map(|p| (p.revision, p.position, p.address));
                    if found != Some((revision, e.position, rec.address)) {
                        problem(
                            &mut report,
                            format!(
                                "{kind:?} {key:?}@{revision}: index has {found:?}, log has position {} at {}",
                                e.position, rec.address
                            ),
                        );
                    }
                }
                if report.events.is_multiple_of(100_000) {
                    progress(report.events);
                }
            }
        }
        if Position(next.0 - 1) != head {
            problem(
                &mut report,
                format!("log ends at position {}, head is {}", next.0 - 1, head),
            );
        }
        report.streams = revisions.len() as u64;
        for (name, (next_revision, tombstoned)) in &revisions {
            match index.stream_head(name)? {
                Some(h) => {
                    if h.last_revision != next_revision.checked_sub(1)
                        || h.tombstoned != *tombstoned
                    {
                        problem(
                            &mut report,
                            format!(
                                "{name}: index head {h:?}, log says next revision {next_revision}, tombstoned {tombstoned}"
                            ),
                        );
                    }
                }
                None => problem(&mut report, format!("{name}: no index head")),
            }
        }
        let stats = index.stats()?;
        if stats.streams != report.streams {
            let p = format!(
                "index has {} streams, log {}",
                stats.streams, report.streams
            );
            problem(&mut report, p);
        }
        Ok(report)
    }
}

fn problem(report: &mut CheckReport, p: String) {
    if report.problems.len() < CHECK_PROBLEMS_MAX {
        report.problems.push(p);
    }
}
