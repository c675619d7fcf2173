//! Global positions, stream revisions and expected revisions.
//!
//! Positions are dense: the first event is at 1, each committed event is exactly one more than the
//! one before it in commit order, and 0 means "before everything". Revisions count from 0 within a
//! stream and are contiguous.

use std::fmt;

/// A position in the global log (`$all`). `Position(0)` is before the first event.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Position(pub u64);

impl Position {
    pub const START: Position = Position(0);
    pub const END: Position = Position(u64::MAX);

    pub fn next(self) -> Position {
        Position(self.0.saturating_add(1))
    }
}

impl fmt::Debug for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "@{}", self.0)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A 0-based revision within one stream.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Revision(pub u64);

impl Revision {
    /// The revision a tombstone is written at, as KurrentDB does (`i64::MAX`).
    pub const TOMBSTONE: Revision = Revision(i64::MAX as u64);
    pub const END: Revision = Revision(u64::MAX);
}

impl fmt::Debug for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What an append expects of the stream's current state (optimistic concurrency).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum ExpectedRevision {
    /// No check.
    Any,
    /// The stream must have no events.
    NoStream,
    /// The stream must have at least one event.
    StreamExists,
    /// The stream's last event must be at exactly this revision.
    Exact(u64),
}

impl ExpectedRevision {
    /// Judges this against `stream`, whose last revision is `current`, by KurrentDB's rules
    /// (every store applies the same):
    /// - a soft-deleted stream counts as existing for an exact revision (its last one) and
    ///   `any`, takes `no_stream` too (the write restores it, revisions going on), and refuses
    ///   `stream_exists` as deleted;
    /// - a soft delete (`soft_delete`) needs a stream with events: a stream that never had any
    ///   is answered with a wrong expected revision whose actual revision is "none", whatever
    ///   was expected (clients read that as stream-not-found).
    pub fn check(
        self,
        stream: &str,
        current: Option<u64>,
        soft_deleted: bool,
        soft_delete: bool,
    ) -> Result<(), crate::DomainError> {
        let wrong = || crate::DomainError::WrongExpectedRevision {
            stream: stream.to_owned(),
            expected: self,
            actual: current,
        };
        if soft_delete && current.is_none() {
            return Err(wrong());
        }
        if soft_deleted {
            match self {
                ExpectedRevision::StreamExists => {
                    return Err(crate::DomainError::StreamDeleted {
                        stream: stream.to_owned(),
                    });
                }
                ExpectedRevision::NoStream => return Ok(()),
                _ => {}
            }
        }
        if self.is_satisfied_by(current) {
            Ok(())
        } else {
            Err(wrong())
        }
    }

    /// KurrentDB's rule for an append that may be a retry (every store applies the same). The
    /// append's events' ids are looked up with `placed` (the stream, revision and position an
    /// id was written at, if it was). It is a retry when its first event was written to this
    /// stream at a place this expected revision allows: then every event must have been written
    /// there, in order, and the answer is the original one (`Ok(Some)`); if only some were, it is
    /// neither a retry nor new, and is refused as a wrong expected revision (`current` is the
    /// stream's last revision now). Anything else is a new append (`Ok(None)`).
    pub fn retry_of<'a>(
        self,
        stream: &str,
        ids: impl IntoIterator<Item = Option<(&'a str, u64, u64)>>,
        current: Option<u64>,
    ) -> Result<Option<AppendResult>, crate::DomainError> {
        let mut ids = ids.into_iter();
        let Some(Some((first_stream, first_revision, first_position))) = ids.next() else {
            return Ok(None);
        };
        if first_stream != stream || !self.is_satisfied_by(first_revision.checked_sub(1)) {
            return Ok(None);
        }
        let mut last = (first_revision, first_position);
        for (i, placed) in ids.enumerate() {
            match placed {
                Some((s, revision, position))
                    if s == stream
                        && first_revision.checked_add(i as u64 + 1) == Some(revision) =>
                {
                    last = (revision, position);
                }
                _ => {
                    return Err(crate::DomainError::WrongExpectedRevision {
                        stream: stream.to_owned(),
                        expected: self,
                        actual: current,
                    });
                }
            }
        }
        Ok(Some(AppendResult {
            next_revision: Revision(last.0),
            position: Position(last.1),
        }))
    }

    /// Whether a stream whose last revision is `current` (None: no events) satisfies this.
    pub fn is_satisfied_by(self, current: Option<u64>) -> bool {
        match self {
            ExpectedRevision::Any => true,
            ExpectedRevision::NoStream => current.is_none(),
            ExpectedRevision::StreamExists => current.is_some(),
            ExpectedRevision::Exact(r) => current == Some(r),
        }
    }
}

impl fmt::Display for ExpectedRevision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedRevision::Any => f.write_str("any"),
            ExpectedRevision::NoStream => f.write_str("no_stream"),
            ExpectedRevision::StreamExists => f.write_str("stream_exists"),
            ExpectedRevision::Exact(r) => write!(f, "{r}"),
        }
    }
}

/// The answer to a successful append.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AppendResult {
    /// The stream's revision after the append (that of its last event).
    pub next_revision: Revision,
    /// The global position of the append's last event.
    pub position: Position,
}

/// Which way a read goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Direction {
    Forwards,
    Backwards,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A retry is judged by where its ids were written: the whole append where the expected
    /// revision put it answers as before; part of it is refused; anything else is new.
    #[test]
    fn a_retry_is_what_its_first_id_and_expected_revision_say() {
        use ExpectedRevision::*;
        // Two events written to "s" at revisions 3 and 4, positions 10 and 11.
        let at = |r: u64, p: u64| Some(("s", r, p));
        let whole = [at(3, 10), at(4, 11)];
        let answer = Exact(2).retry_of("s", whole, Some(4)).unwrap().unwrap();
        assert_eq!(
            (answer.next_revision, answer.position),
            (Revision(4), Position(11))
        );
        assert!(Any.retry_of("s", whole, Some(4)).unwrap().is_some());
        // The expected revision does not fit where the first event went: a new append.
        assert!(Exact(4).retry_of("s", whole, Some(4)).unwrap().is_none());
        assert!(NoStream.retry_of("s", whole, Some(4)).unwrap().is_none());
        // Written to another stream, or never: new.
        assert!(Any.retry_of("t", whole, Some(4)).unwrap().is_none());
        assert!(
            Any.retry_of("s", [None, at(4, 11)], Some(4))
                .unwrap()
                .is_none()
        );
        // Only part of it, or out of order: neither.
        for partial in [
            [at(3, 10), None],
            [at(3, 10), at(5, 12)],
            [at(3, 10), Some(("t", 4, 11))],
        ] {
            assert!(matches!(
                Any.retry_of("s", partial, Some(5)),
                Err(crate::DomainError::WrongExpectedRevision {
                    actual: Some(5),
                    ..
                })
            ));
        }
    }

    #[test]
    fn expected_revision_rules() {
        use ExpectedRevision::*;
        assert!(Any.is_satisfied_by(None));
        assert!(Any.is_satisfied_by(Some(3)));
        assert!(NoStream.is_satisfied_by(None));
        assert!(!NoStream.is_satisfied_by(Some(0)));
        assert!(StreamExists.is_satisfied_by(Some(0)));
        assert!(!StreamExists.is_satisfied_by(None));
        assert!(Exact(2).is_satisfied_by(Some(2)));
        assert!(!Exact(2).is_satisfied_by(Some(3)));
        assert!(!Exact(0).is_satisfied_by(None));
    }
}
