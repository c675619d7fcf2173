//! The catalog kept in the store's log, for several nodes on one store: stream
//! [`SHARED_CATALOG_STREAM`], whose newest event (type [`SHARED_CATALOG_EVENT_TYPE`], JSON)
//! holds every registered definition with its generations.
//!
//! As relays keep their definitions in `$relays`: opening reads the newest event, and every
//! change appends the whole new set. Each append expects the revision of the event last read or
//! written, so two writers cannot silently undo each other: the second one's append fails
//! ([`CatalogError::Conflict`]) and changes nothing. The stream keeps its newest
//! [`SHARED_CATALOG_EVENTS_KEPT`] events (`$maxCount`), the older ones a short history.
//!
//! ```json
//! {"version":1,"projections":[{"name":"orders","generation":2,"text":"[[projection]]\n…"}]}
//! ```

use annals_core::limits::STORE_EVENT_BYTES_MAX;
use annals_core::{DomainError, ExpectedRevision, METADATA_EVENT_TYPE, NewEvent, StreamName};
use annals_engine::{Engine, EngineError};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::CatalogError;
use super::storage::Stored;

/// The stream that holds the shared catalog.
pub const SHARED_CATALOG_STREAM: &str = "$projections-catalog";
/// The type of its events.
pub const SHARED_CATALOG_EVENT_TYPE: &str = "$projectionsCatalog";
/// Events the stream keeps (its `$maxCount`); only the newest is read.
pub const SHARED_CATALOG_EVENTS_KEPT: u64 = 16;
/// The version of the event's JSON this code writes and reads.
const SHARED_CATALOG_FORMAT_VERSION: u32 = 1;

/// An event of the shared catalog.
#[derive(Serialize, Deserialize)]
struct CatalogEvent {
    version: u32,
    projections: Vec<StoredDefinition>,
}

/// One generation's text of one projection.
#[derive(Serialize, Deserialize)]
struct StoredDefinition {
    name: String,
    generation: u32,
    text: String,
}

/// The catalog's stream in one store.
#[derive(Debug)]
pub(super) struct Log {
    engine: Engine,
    stream: StreamName,
    /// Revision of the newest event read or written; `None`: the stream has none.
    revision: Mutex<Option<u64>>,
}

impl Log {
    /// Reads the newest event of the stream: the stored set (empty without one).
    pub(super) fn open(engine: Engine) -> Result<(Self, Stored), CatalogError> {
        let stream = StreamName::new(SHARED_CATALOG_STREAM)
            .map_err(|e| CatalogError::Corrupt(format!("{SHARED_CATALOG_STREAM}: {e}")))?;
        let newest = engine
            .last_event(&stream)
            .map_err(|source| CatalogError::Store { source })?;
        let (stored, revision) = match newest {
            Some(event) => (decode(&event.data)?, Some(event.revision.0)),
            None => (Stored::new(), None),
        };
        let log = Self {
            engine,
            stream,
            revision: Mutex::new(revision),
        };
        Ok((log, stored))
    }

    /// Appends `stored` as the new catalog, expecting the revision last read or written.
    pub(super) fn write(&self, stored: &Stored) -> Result<(), CatalogError> {
        let data = encode(stored)?;
        let event = NewEvent::json(SHARED_CATALOG_EVENT_TYPE, data)
            .map_err(|e| CatalogError::Corrupt(e.to_string()))?;
        let mut revision = self.revision.lock();
        let expected = match *revision {
            Some(r) => ExpectedRevision::Exact(r),
            None => ExpectedRevision::NoStream,
        };
        let written = match self.engine.append(&self.stream, expected, vec![event]) {
            Ok(written) => written,
            Err(EngineError::Domain(DomainError::WrongExpectedRevision { actual, .. })) => {
                return Err(CatalogError::Conflict {
                    expected: *revision,
                    actual,
                });
            }
            Err(source) => return Err(CatalogError::Store { source }),
        };
        *revision = Some(written.next_revision.0);
        if written.next_revision.0 == 0 {
            self.keep_newest();
        }
        Ok(())
    }

    /// Sets the stream's `$maxCount` (after its first event, as relays do for their
    /// checkpoints). The catalog is written already, so a failure is only logged: the stream
    /// then keeps every event.
    fn keep_newest(&self) {
        let metadata = serde_json::json!({ "$maxCount": SHARED_CATALOG_EVENTS_KEPT }).to_string();
        let result = self
            .stream
            .metadata_stream()
            .map_err(EngineError::from)
            .and_then(|meta| {
                let event = NewEvent::json(METADATA_EVENT_TYPE, metadata.into_bytes())?;
                self.engine
                    .append(&meta, ExpectedRevision::Any, vec![event])
            });
        if let Err(e) = result {
            tracing::warn!(stream = SHARED_CATALOG_STREAM, error = %e,
                "cannot set the projection catalog's $maxCount");
        }
    }
}

fn encode(stored: &Stored) -> Result<Vec<u8>, CatalogError> {
    let projections = stored
        .iter()
        .flat_map(|(name, generations)| {
            generations
                .iter()
                .map(|(generation, text)| StoredDefinition {
                    name: name.clone(),
                    generation: *generation,
                    text: text.clone(),
                })
        })
        .collect();
    let data = serde_json::to_vec(&CatalogEvent {
        version: SHARED_CATALOG_FORMAT_VERSION,
        projections,
    })
    .map_err(|e| CatalogError::Corrupt(format!("{SHARED_CATALOG_STREAM}: {e}")))?;
    if data.len() > STORE_EVENT_BYTES_MAX {
        return Err(CatalogError::CatalogTooLarge {
            bytes: data.len(),
            max: STORE_EVENT_BYTES_MAX,
        });
    }
    Ok(data)
}

fn decode(data: &[u8]) -> Result<Stored, CatalogError> {
    let corrupt =
        |reason: String| CatalogError::Corrupt(format!("{SHARED_CATALOG_STREAM}: {reason}"));
    let event: CatalogEvent = serde_json::from_slice(data).map_err(|e| corrupt(e.to_string()))?;
    if event.version != SHARED_CATALOG_FORMAT_VERSION {
        return Err(corrupt(format!(
            "format version {} (this build reads {SHARED_CATALOG_FORMAT_VERSION})",
            event.version
        )));
    }
    let mut stored = Stored::new();
    for d in event.projections {
        stored
            .entry(d.name)
            .or_default()
            .insert(d.generation, d.text);
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_set_round_trips_and_other_versions_are_refused() {
        let mut stored = Stored::new();
        stored
            .entry("a".to_owned())
            .or_default()
            .insert(1, "one".to_owned());
        stored
            .entry("a".to_owned())
            .or_default()
            .insert(2, "two".to_owned());
        stored
            .entry("b".to_owned())
            .or_default()
            .insert(7, "seven".to_owned());
        let data = encode(&stored).unwrap();
        assert_eq!(decode(&data).unwrap(), stored);
        assert!(matches!(
            decode(br#"{"version":2,"projections":[]}"#),
            Err(CatalogError::Corrupt(_))
        ));
        assert!(matches!(decode(b"[]"), Err(CatalogError::Corrupt(_))));
    }
}
