//! A group's settings and their validation, with the rules and messages KurrentDB gives, so a
//! client that creates a group sees the same refusals from Annals.

use std::time::Duration;

/// How a group hands its events to its consumers.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum Strategy {
    /// Each event to the first consumer (in connection order) with room for it.
    DispatchToSingle,
    /// Each event to the next consumer in turn that has room.
    RoundRobin,
    /// All events of one stream to the same consumer while it stays connected.
    Pinned,
    /// All events of one correlation id (metadata `$correlationId`, else the stream) to the same
    /// consumer while it stays connected.
    PinnedByCorrelation,
}

impl Strategy {
    /// The name clients send and show.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::DispatchToSingle => "DispatchToSingle",
            Strategy::RoundRobin => "RoundRobin",
            Strategy::Pinned => "Pinned",
            Strategy::PinnedByCorrelation => "PinnedByCorrelation",
        }
    }

    /// Parses a strategy name; an unknown one is the error KurrentDB gives.
    pub fn parse(name: &str) -> Result<Self, SettingsError> {
        match name {
            "DispatchToSingle" => Ok(Strategy::DispatchToSingle),
            "RoundRobin" => Ok(Strategy::RoundRobin),
            "Pinned" => Ok(Strategy::Pinned),
            "PinnedByCorrelation" => Ok(Strategy::PinnedByCorrelation),
            other => Err(SettingsError::UnknownStrategy(other.to_owned())),
        }
    }

    /// Whether events are routed by an affinity key rather than by free room alone.
    pub fn is_pinned(self) -> bool {
        matches!(self, Strategy::Pinned | Strategy::PinnedByCorrelation)
    }
}

/// What a group does with its events, as a client sets it at create or update.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct GroupSettings {
    pub strategy: Strategy,
    /// An event not acknowledged within this long is retried (checked on each tick).
    pub message_timeout: Duration,
    /// Deliveries after the first before an event that keeps failing is parked.
    pub max_retry_count: u32,
    /// Most events buffered from the live head.
    pub live_buffer_size: usize,
    /// Events read from history per read.
    pub read_batch_size: usize,
    /// Most events buffered from history.
    pub history_buffer_size: usize,
    /// Checkpoint on a tick once this long has passed since the last checkpoint (and at least
    /// `min_checkpoint_count` events were handled); zero: never on time alone.
    pub checkpoint_after: Duration,
    pub min_checkpoint_count: u64,
    /// Checkpoint at once when this many events were handled since the last checkpoint.
    pub max_checkpoint_count: u64,
    /// Most consumers connected at once; 0: no limit.
    pub max_subscriber_count: usize,
    /// Beyond KurrentDB: when the group is more than this many events behind the head, deliver
    /// only the newest buffered event of each stream (the others count as handled). `None`: off.
    pub conflate_behind: Option<u64>,
}

impl Default for GroupSettings {
    /// The defaults KurrentDB's clients send.
    fn default() -> Self {
        Self {
            strategy: Strategy::RoundRobin,
            message_timeout: Duration::from_secs(30),
            max_retry_count: 10,
            live_buffer_size: 500,
            read_batch_size: 20,
            history_buffer_size: 500,
            checkpoint_after: Duration::from_secs(2),
            min_checkpoint_count: 10,
            max_checkpoint_count: 1_000,
            max_subscriber_count: 0,
            conflate_behind: None,
        }
    }
}

/// Settings a group refuses; the texts are KurrentDB's, which clients show as the reason.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    #[error("Consumer strategy {0} does not exist.")]
    UnknownStrategy(String),
    #[error("ReadBatchSize may not be greater than or equal to BufferSize")]
    ReadBatchNotBelowHistoryBuffer,
    #[error("{0} must be positive")]
    NotPositive(&'static str),
    #[error("MinCheckPointCount may not be greater than MaxCheckPointCount")]
    CheckpointCountsReversed,
}

impl GroupSettings {
    /// Checks the settings against each other.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.read_batch_size == 0 {
            return Err(SettingsError::NotPositive("ReadBatchSize"));
        }
        if self.history_buffer_size <= self.read_batch_size {
            return Err(SettingsError::ReadBatchNotBelowHistoryBuffer);
        }
        if self.live_buffer_size == 0 {
            return Err(SettingsError::NotPositive("LiveBufferSize"));
        }
        if self.max_checkpoint_count == 0 {
            return Err(SettingsError::NotPositive("MaxCheckPointCount"));
        }
        if self.min_checkpoint_count > self.max_checkpoint_count {
            return Err(SettingsError::CheckpointCountsReversed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_round_trip_and_unknown_ones_are_refused() {
        for s in [
            Strategy::DispatchToSingle,
            Strategy::RoundRobin,
            Strategy::Pinned,
            Strategy::PinnedByCorrelation,
        ] {
            assert_eq!(Strategy::parse(s.name()), Ok(s));
        }
        let e = Strategy::parse("Random").unwrap_err();
        assert_eq!(e.to_string(), "Consumer strategy Random does not exist.");
    }

    #[test]
    fn buffer_sizes_are_checked_against_each_other() {
        assert_eq!(GroupSettings::default().validate(), Ok(()));
        let s = GroupSettings {
            read_batch_size: 500,
            history_buffer_size: 500,
            ..GroupSettings::default()
        };
        assert_eq!(
            s.validate(),
            Err(SettingsError::ReadBatchNotBelowHistoryBuffer)
        );
        let s = GroupSettings {
            min_checkpoint_count: 11,
            max_checkpoint_count: 10,
            ..GroupSettings::default()
        };
        assert_eq!(s.validate(), Err(SettingsError::CheckpointCountsReversed));
    }
}
