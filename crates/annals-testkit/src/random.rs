//! Seeded random events. Every id and payload comes from the caller's [`StdRng`], so a test that
//! prints its seed can be replayed exactly.

use std::sync::LazyLock;

use annals_core::limits::{APPEND_EVENTS_MAX, STORE_APPEND_BYTES_MAX, STORE_EVENT_BYTES_MAX};
use annals_core::{ContentType, EventType, METADATA_EVENT_TYPE, NewEvent};
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

/// Event types the generators pick from; two share the prefix `Order` for type filters.
pub const EVENT_TYPES: [&str; 4] = ["OrderPlaced", "OrderPaid", "CartEmptied", "Shipped"];

/// The generator for `seed`.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// A random (version 4) event id.
pub fn random_id(rng: &mut StdRng) -> Uuid {
    uuid::Builder::from_random_bytes(rng.random()).into_uuid()
}

/// One event with a random id, type and content type, data of up to `data_bytes_max` bytes and
/// sometimes metadata.
pub fn random_event(rng: &mut StdRng, data_bytes_max: usize) -> NewEvent {
    let event_type = EVENT_TYPES
        .get(rng.random_range(0..EVENT_TYPES.len()))
        .copied()
        .unwrap_or("T");
    let len = rng.random_range(0..=data_bytes_max);
    let (content_type, data) = if rng.random_bool(0.7) {
        let pad: String = (0..len)
            .map(|_| char::from(rng.random_range(b'a'..=b'z')))
            .collect();
        let n: u32 = rng.random();
        (
            ContentType::Json,
            Bytes::from(format!("{{\"n\":{n},\"pad\":\"{pad}\"}}")),
        )
    } else {
        let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        (ContentType::Binary, Bytes::from(bytes))
    };
    let metadata = if rng.random_bool(0.2) {
        Bytes::from(format!("{{\"by\":{}}}", rng.random_range(0..100u32)))
    } else {
        Bytes::new()
    };
    NewEvent {
        id: random_id(rng),
        event_type: EventType::new(event_type).unwrap(),
        content_type,
        data,
        metadata,
    }
}

/// Between 1 and `count_max` random events.
pub fn random_events(rng: &mut StdRng, count_max: usize, data_bytes_max: usize) -> Vec<NewEvent> {
    let n = rng.random_range(1..=count_max.max(1));
    (0..n).map(|_| random_event(rng, data_bytes_max)).collect()
}

/// A binary event of exactly `data_bytes` random bytes, for tests that need volume.
pub fn event_with_payload(rng: &mut StdRng, data_bytes: usize) -> NewEvent {
    let mut data = vec![0u8; data_bytes];
    rng.fill(&mut data[..]);
    NewEvent {
        id: random_id(rng),
        event_type: EventType::new("Blob").unwrap(),
        content_type: ContentType::Binary,
        data: Bytes::from(data),
        metadata: Bytes::new(),
    }
}

/// Filler that events of a chosen size are cut from, so events at the size limits cost no copy.
static FILLER: LazyLock<Bytes> = LazyLock::new(|| Bytes::from(vec![b'x'; STORE_APPEND_BYTES_MAX]));

// Three events of a third of the append limit each stay under the event limit, so their total
// is refused as an append too large, not as one event too large.
const _: () =
    assert!(STORE_APPEND_BYTES_MAX - 2 * (STORE_APPEND_BYTES_MAX / 3) < STORE_EVENT_BYTES_MAX);

/// An event of type `event_type` whose size as the limits count it (data, metadata and type) is
/// exactly `size_bytes`, or as close above as the type allows.
fn event_of_size(rng: &mut StdRng, event_type: &str, size_bytes: usize) -> NewEvent {
    let data_bytes = size_bytes.saturating_sub(event_type.len());
    NewEvent {
        id: random_id(rng),
        event_type: EventType::new(event_type).unwrap(),
        content_type: ContentType::Binary,
        data: FILLER.slice(..data_bytes.min(FILLER.len())),
        metadata: Bytes::new(),
    }
}

/// A `$metadata` event: mostly metadata JSON, sometimes data that is not.
fn metadata_event(rng: &mut StdRng) -> NewEvent {
    let json = match rng.random_range(0..8) {
        0..=2 => format!(r#"{{"$maxCount":{}}}"#, rng.random_range(0..5)),
        3 => format!(r#"{{"$tb":{},"custom":"kept"}}"#, rng.random_range(0..6)),
        4 => "{}".to_owned(),
        5 => r#"{"$maxCount":-1}"#.to_owned(),
        6 => "[1,2]".to_owned(),
        _ => "not json".to_owned(),
    };
    NewEvent {
        id: random_id(rng),
        event_type: EventType::new(METADATA_EVENT_TYPE).unwrap(),
        content_type: ContentType::Json,
        data: Bytes::from(json),
        metadata: Bytes::new(),
    }
}

/// The events of an append at or past the input limits of `annals_core` (so mostly refused): none;
/// one more than [`APPEND_EVENTS_MAX`]; an event of exactly [`STORE_EVENT_BYTES_MAX`] or one byte
/// more; a total of exactly [`STORE_APPEND_BYTES_MAX`] or one byte more; a repeated id; or, for an
/// append to a metadata stream (`metadata_stream`), `$metadata` events with good or bad JSON mixed
/// with other types. Now and then a second rule is broken too, so the order in which the rules are
/// checked shows. Events at the limits but not past them are rare: they are written.
pub fn random_edge_append(rng: &mut StdRng, metadata_stream: bool) -> Vec<NewEvent> {
    // Past the limit nine times in ten: an append at the limit is taken, and its megabytes then
    // slow every later read and reopen of the run.
    let over = usize::from(rng.random_bool(0.9));
    let mut events = match rng.random_range(0..10) {
        0 => Vec::new(),
        1 => {
            // Copies of one event under consecutive ids: cheap to make and to check.
            let event = event_of_size(rng, "T", 1);
            let base: u128 = rng.random();
            (0..=APPEND_EVENTS_MAX as u128)
                .map(|i| NewEvent {
                    id: Uuid::from_u128(base.wrapping_add(i)),
                    ..event.clone()
                })
                .collect()
        }
        2 => {
            let mut events = random_events(rng, 3, 20);
            let big = event_of_size(rng, "Big", STORE_EVENT_BYTES_MAX + over);
            let at = rng.random_range(0..=events.len());
            events.insert(at, big);
            events
        }
        3 => {
            // Three events under the event limit that together reach the append limit.
            let third = STORE_APPEND_BYTES_MAX / 3;
            vec![
                event_of_size(rng, "Third", third),
                event_of_size(rng, "Third", third),
                event_of_size(rng, "Third", STORE_APPEND_BYTES_MAX - 2 * third + over),
            ]
        }
        4 => {
            let mut events = random_events(rng, 4, 20);
            let copy = events.first().map(|e| e.id).unwrap_or_default();
            events.push(NewEvent {
                id: copy,
                ..random_event(rng, 20)
            });
            events
        }
        _ if metadata_stream => (0..rng.random_range(1..4))
            .map(|_| {
                if rng.random_bool(0.8) {
                    metadata_event(rng)
                } else {
                    random_event(rng, 20)
                }
            })
            .collect(),
        _ => random_events(rng, 4, 20),
    };
    if events.len() >= 2 && rng.random_bool(0.2) {
        let last = events.len() - 1;
        let id = events.first().map(|e| e.id).unwrap_or_default();
        if let Some(e) = events.get_mut(last) {
            e.id = id;
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every limit is reached and passed, alone and with a repeated id, so a model that checks
    /// one of them differently, or in another order, differs from the engine.
    #[test]
    fn edge_appends_reach_every_limit() {
        let mut rng = rng(11);
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..600 {
            let metadata_stream = i % 2 == 0;
            let events = random_edge_append(&mut rng, metadata_stream);
            let sizes: Vec<usize> = events.iter().map(NewEvent::size_bytes).collect();
            let total: usize = sizes.iter().sum();
            let mut ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
            ids.sort_unstable();
            let repeated = ids.windows(2).any(|w| w.first() == w.last());
            let largest = sizes.iter().copied().max().unwrap_or(0);
            let kinds = [
                ("empty", events.is_empty()),
                ("too many events", events.len() > APPEND_EVENTS_MAX),
                ("an event at the limit", largest == STORE_EVENT_BYTES_MAX),
                ("an event past the limit", largest > STORE_EVENT_BYTES_MAX),
                ("an append at the limit", total == STORE_APPEND_BYTES_MAX),
                (
                    "an append past the limit",
                    total > STORE_APPEND_BYTES_MAX && largest <= STORE_EVENT_BYTES_MAX,
                ),
                ("a repeated id", repeated),
                (
                    "an append past the limit with a repeated id",
                    repeated && total > STORE_APPEND_BYTES_MAX && largest <= STORE_EVENT_BYTES_MAX,
                ),
                (
                    "a metadata append with another type",
                    metadata_stream
                        && events
                            .iter()
                            .any(|e| e.event_type.as_str() != METADATA_EVENT_TYPE),
                ),
                (
                    "several metadata events",
                    metadata_stream
                        && events.len() > 1
                        && events
                            .iter()
                            .all(|e| e.event_type.as_str() == METADATA_EVENT_TYPE),
                ),
            ];
            seen.extend(kinds.iter().filter(|(_, hit)| *hit).map(|(kind, _)| *kind));
        }
        assert_eq!(seen.len(), 10, "only {seen:?}");
    }

    #[test]
    fn same_seed_same_events() {
        let a = random_events(&mut rng(7), 5, 50);
        let b = random_events(&mut rng(7), 5, 50);
        assert_eq!(a, b);
        let c = random_events(&mut rng(8), 5, 50);
        assert_ne!(a, c);
    }
}
