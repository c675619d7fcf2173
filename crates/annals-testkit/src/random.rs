//! Seeded random events. Every id and payload comes from the caller's [`StdRng`], so a test that
//! prints its seed can be replayed exactly.

use annals_core::{ContentType, EventType, NewEvent};
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
        event_type: EventType::new(event_type).unwrap_or_else(|_| unreachable!("valid type")),
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
        event_type: EventType::new("Blob").unwrap_or_else(|_| unreachable!("valid type")),
        content_type: ContentType::Binary,
        data: Bytes::from(data),
        metadata: Bytes::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_events() {
        let a = random_events(&mut rng(7), 5, 50);
        let b = random_events(&mut rng(7), 5, 50);
        assert_eq!(a, b);
        let c = random_events(&mut rng(8), 5, 50);
        assert_ne!(a, c);
    }
}
