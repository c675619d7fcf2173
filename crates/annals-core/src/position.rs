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
