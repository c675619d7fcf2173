//! Stream-metadata rules and how reads apply them.
//!
//! A stream's metadata is the last `$metadata` event of `$$stream`. The engine keeps the parsed
//! rules of every stream that has metadata in memory (most streams have none, so the common read
//! pays one hash lookup). Reads of a stream, a category or an event type honour max-count,
//! max-age, truncate-before, soft delete and tombstones; reads of `$all` return the log as written,
//! as KurrentDB does until space is reclaimed.

use std::collections::HashMap;
use std::sync::Arc;

use annals_core::{EventRecord, StreamMetadata, Timestamp};
use annals_index::StreamHead;
use bytes::Bytes;

/// The current metadata of one stream.
#[derive(Clone, Debug)]
pub(crate) struct MetaState {
    pub(crate) json: Bytes,
    pub(crate) rules: StreamMetadata,
}

impl MetaState {
    pub(crate) fn from_event(json: Bytes) -> Self {
        // Appends to `$$` streams are validated, so a parse failure can only come from data
        // written by another tool; such metadata imposes no rules.
        let rules = StreamMetadata::parse(&json).unwrap_or_default();
        Self { json, rules }
    }
}

/// Target stream name → its metadata.
pub(crate) type MetaMap = HashMap<Arc<str>, Arc<MetaState>>;

/// Which events of one stream a read may return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Visibility {
    /// Tombstoned or soft-deleted: nothing, and the stream reads as deleted / not found.
    pub(crate) hidden: bool,
    /// Lowest visible revision.
    pub(crate) from_revision: u64,
    /// Events created before this are hidden (max-age).
    pub(crate) created_min: Option<Timestamp>,
}

impl Visibility {
    pub(crate) const ALL: Visibility = Visibility {
        hidden: false,
        from_revision: 0,
        created_min: None,
    };

    /// Derives what is visible from the stream's head and metadata, at time `now`.
    pub(crate) fn of(head: &StreamHead, meta: Option<&MetaState>, now: Timestamp) -> Self {
        if head.tombstoned {
            return Visibility {
                hidden: true,
                ..Visibility::ALL
            };
        }
        let Some(meta) = meta else {
            return Visibility::ALL;
        };
        let rules = &meta.rules;
        if rules.is_soft_deleted() {
            return Visibility {
                hidden: true,
                ..Visibility::ALL
            };
        }
        let next_revision = head.last_revision.map_or(0, |r| r + 1);
        let by_count = rules
            .max_count
            .map_or(0, |c| next_revision.saturating_sub(c));
        let from_revision = rules.truncate_before.unwrap_or(0).max(by_count);
        let created_min = rules.max_age_secs.map(|secs| {
            let nanos = i64::try_from(secs.saturating_mul(1_000_000_000)).unwrap_or(i64::MAX);
            Timestamp(now.0.saturating_sub(nanos))
        });
        Visibility {
            hidden: false,
            from_revision,
            created_min,
        }
    }

    pub(crate) fn shows(&self, event: &EventRecord) -> bool {
        !self.hidden
            && event.revision.0 >= self.from_revision
            && self.created_min.is_none_or(|min| event.created >= min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use annals_core::Position;

    fn head(last: Option<u64>) -> StreamHead {
        StreamHead {
            id: 1,
            last_revision: last,
            last_position: Position(10),
            tombstoned: false,
        }
    }

    fn meta(json: &str) -> MetaState {
        MetaState::from_event(Bytes::from(json.to_owned()))
    }

    #[test]
    fn max_count_and_truncate_before_combine() {
        let v = Visibility::of(
            &head(Some(9)),
            Some(&meta(r#"{"$maxCount":3}"#)),
            Timestamp(0),
        );
        assert_eq!(v.from_revision, 7);
        let v = Visibility::of(
            &head(Some(9)),
            Some(&meta(r#"{"$maxCount":3,"$tb":8}"#)),
            Timestamp(0),
        );
        assert_eq!(v.from_revision, 8);
        let v = Visibility::of(
            &head(Some(9)),
            Some(&meta(r#"{"$tb":9223372036854775807}"#)),
            Timestamp(0),
        );
        assert!(v.hidden);
        let mut t = head(Some(1));
        t.tombstoned = true;
        assert!(Visibility::of(&t, None, Timestamp(0)).hidden);
    }
}
