//! The names a group goes by: its source (a stream or `$all`), its id `{source}::{group}` (what
//! clients see in the subscription confirmation), and the system streams that keep its state:
//! the definitions of every group in one config stream, each group's checkpoint and its parked
//! events in streams of their own, named as KurrentDB names them.

use std::fmt;

use annals_core::StreamName;

use crate::error::PersistentError;

/// The stream holding every group's definition: one event per change, the whole list.
pub const CONFIG_STREAM: &str = "$persistentSubscriptionConfig";
/// The type of the events of [`CONFIG_STREAM`].
pub const CONFIG_EVENT_TYPE: &str = "$PersistentConfig";
/// The type of checkpoint events.
pub const CHECKPOINT_EVENT_TYPE: &str = "$SubscriptionCheckpoint";
/// The type of a parked event's link record: the one `annals-core` defines for every link.
pub use annals_core::LINK_EVENT_TYPE;
/// The source name of groups on `$all`.
pub const ALL_SOURCE: &str = "$all";

/// What a group reads: one stream, or `$all`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Source {
    Stream(StreamName),
    All,
}

impl Source {
    /// The stream's name, or `$all`.
    pub fn name(&self) -> &str {
        match self {
            Source::Stream(s) => s.as_str(),
            Source::All => ALL_SOURCE,
        }
    }

    /// Parses a source name (`$all` is `$all`).
    pub fn parse(name: &str) -> Result<Self, PersistentError> {
        if name == ALL_SOURCE {
            return Ok(Source::All);
        }
        StreamName::new(name)
            .map(Source::Stream)
            .map_err(|e| PersistentError::Invalid(format!("stream {name:?}: {e}")))
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A group: its source and its name.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct GroupKey {
    pub source: Source,
    pub group: String,
}

impl GroupKey {
    /// A key, with the group name checked: not empty, and short enough that the group's state
    /// streams have valid names.
    pub fn new(source: Source, group: &str) -> Result<Self, PersistentError> {
        if group.is_empty() {
            return Err(PersistentError::Invalid(
                "the group name is empty".to_owned(),
            ));
        }
        let key = Self {
            source,
            group: group.to_owned(),
        };
        key.parked_stream()?;
        key.checkpoint_stream()?;
        Ok(key)
    }

    /// `{source}::{group}`, as clients see it.
    pub fn id(&self) -> String {
        format!("{}::{}", self.source, self.group)
    }

    /// Where the group's checkpoint is kept.
    pub fn checkpoint_stream(&self) -> Result<StreamName, PersistentError> {
        self.state_stream("checkpoint")
    }

    /// Where the group's parked events are kept, readable like any stream.
    pub fn parked_stream(&self) -> Result<StreamName, PersistentError> {
        self.state_stream("parked")
    }

    fn state_stream(&self, what: &str) -> Result<StreamName, PersistentError> {
        let name = format!("$persistentsubscription-{}-{what}", self.id());
        StreamName::new(&name).map_err(|e| {
            PersistentError::Invalid(format!("group {} on {}: {e}", self.group, self.source))
        })
    }
}

impl fmt::Display for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}::{}", self.source, self.group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_streams_are_named_as_kurrentdb_names_them() {
        let key = GroupKey::new(Source::parse("orders").unwrap(), "g1").unwrap();
        assert_eq!(key.id(), "orders::g1");
        assert_eq!(
            key.parked_stream().unwrap().as_str(),
            "$persistentsubscription-orders::g1-parked"
        );
        let all = GroupKey::new(Source::parse("$all").unwrap(), "g").unwrap();
        assert_eq!(
            all.checkpoint_stream().unwrap().as_str(),
            "$persistentsubscription-$all::g-checkpoint"
        );
        assert!(GroupKey::new(Source::All, "").is_err());
        assert!(GroupKey::new(Source::All, &"x".repeat(2_000)).is_err());
    }
}
