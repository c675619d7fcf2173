//! Listing streams by name, for browsing (the admin UI's stream search): the names that start
//! with a prefix, in name order, with each stream's last revision and position, as the index
//! store holds them.

use annals_core::Position;
use annals_index::Index;

use crate::engine::Engine;
use crate::error::EngineError;

/// Streams read from the index store per call while listing.
const LIST_STREAMS_BATCH: usize = 256;

/// Most streams one listing returns.
pub const LIST_STREAMS_MAX: usize = 1_000;

/// A stream as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSummary {
    pub name: String,
    /// The last revision, `None` for a stream that has none left (deleted).
    pub last_revision: Option<u64>,
    pub last_position: Position,
    pub tombstoned: bool,
}

impl Engine {
    /// Up to `limit` (at most [`LIST_STREAMS_MAX`]) streams whose names start with `prefix`, in
    /// name order, after the name `after` when given (the last one of the previous page). It
    /// reads what the index store has committed: a stream first written in the last few
    /// milliseconds may not be listed yet.
    pub fn list_streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StreamSummary>, EngineError> {
        let index = &self.inner.shared.index;
        let limit = limit.min(LIST_STREAMS_MAX);
        let mut out = Vec::new();
        // Names with the prefix are one run in name order, starting at the prefix itself,
        // which the exclusive `after` of the index would skip.
        let mut cursor = match after {
            Some(a) => a.to_owned(),
            None => {
                if !prefix.is_empty()
                    && let Some(head) = index.stream_head(prefix)?
                {
                    out.push(summary(prefix.to_owned(), &head));
                }
                prefix.to_owned()
            }
        };
        let mut first = after.is_none() && prefix.is_empty();
        while out.len() < limit {
            let page = index.streams((!first).then_some(cursor.as_str()), LIST_STREAMS_BATCH)?;
            first = false;
            let Some((last, _)) = page.last() else {
                break;
            };
            let next = last.clone();
            let full = page.len() == LIST_STREAMS_BATCH;
            for (name, head) in page {
                if !name.starts_with(prefix) {
                    return Ok(out);
                }
                if out.len() < limit {
                    out.push(summary(name, &head));
                }
            }
            if !full {
                break;
            }
            cursor = next;
        }
        Ok(out)
    }
}

fn summary(name: String, head: &annals_index::StreamHead) -> StreamSummary {
    StreamSummary {
        name,
        last_revision: head.last_revision,
        last_position: head.last_position,
        tombstoned: head.tombstoned,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use annals_core::{ExpectedRevision, NewEvent, StreamName};
    use annals_index::Index;
    use annals_log::FaultStorage;

    use crate::{Engine, EngineConfig};

    #[test]
    fn streams_are_listed_by_prefix_in_name_order_page_by_page() {
        let engine = Engine::open(Arc::new(FaultStorage::new()), EngineConfig::default())
            .unwrap()
            .0;
        let names = ["order", "order-2", "order-1", "cart-1", "orders-9", "p"];
        for name in names {
            let stream = StreamName::new(name).unwrap();
            let event = NewEvent::json("T", "{}").unwrap();
            engine
                .append(&stream, ExpectedRevision::Any, vec![event])
                .unwrap();
        }
        engine.inner.shared.index.commit_staged().unwrap();
        let list = |prefix: &str, after: Option<&str>, limit: usize| -> Vec<String> {
            engine
                .list_streams(prefix, after, limit)
                .unwrap()
                .into_iter()
                .map(|s| s.name)
                .collect()
        };
        assert_eq!(
            list("order", None, 10),
            ["order", "order-1", "order-2", "orders-9"]
        );
        assert_eq!(list("order-", None, 10), ["order-1", "order-2"]);
        assert_eq!(list("order", None, 2), ["order", "order-1"]);
        assert_eq!(list("order", Some("order-1"), 10), ["order-2", "orders-9"]);
        assert_eq!(list("", None, 3), ["cart-1", "order", "order-1"]);
        assert_eq!(list("zz", None, 3), Vec::<String>::new());
        let first = engine.list_streams("p", None, 1).unwrap();
        assert_eq!(first[0].last_revision, Some(0));
        assert_eq!(first[0].last_position.0, 6);
    }
}
