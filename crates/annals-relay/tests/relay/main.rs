//! Relays against real brokers started by the tests: a throwaway NATS JetStream server killed
//! and restarted mid-load, two independent servers with the first killed, and webhooks served
//! by the test (slow, and refusing an event for good).

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests: a failed step fails the test"
)]

mod amqp;
mod nats;
mod webhook;

use std::sync::Arc;
use std::time::{Duration, Instant};

use annals_core::{ExpectedRevision, NewEvent, StreamName};
use annals_engine::{Engine, EngineConfig};
use annals_relay::{RelayStatus, Relays};

/// Longest a relay may take to catch up in a test.
const CATCH_UP_MAX: Duration = Duration::from_secs(90);

pub(crate) fn engine() -> (Engine, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (engine, _) = Engine::open_dir(dir.path(), EngineConfig::default()).unwrap();
    (engine, dir)
}

/// Appends `per_stream` events to each of `streams` streams `order-{i}`, interleaved, in
/// appends of `batch` events to one stream; the data is `{"n":k}` with k the event's index in
/// its stream.
pub(crate) async fn append_orders(
    engine: &Engine,
    streams: usize,
    per_stream: usize,
    batch: usize,
) {
    for round in 0..per_stream.div_ceil(batch) {
        for s in 0..streams {
            let stream = StreamName::new(format!("order-{s}")).unwrap();
            let events: Vec<NewEvent> = (round * batch..((round + 1) * batch).min(per_stream))
                .map(|k| NewEvent::json("Placed", format!("{{\"n\":{k}}}")).unwrap())
                .collect();
            engine
                .append_async(&stream, ExpectedRevision::Any, events)
                .await
                .unwrap();
        }
    }
}

/// Waits until the relay acknowledged everything up to the head.
pub(crate) async fn caught_up(relays: &Arc<Relays>, name: &str, engine: &Engine) -> RelayStatus {
    let deadline = Instant::now() + CATCH_UP_MAX;
    loop {
        let status = relays.status(name).await.unwrap();
        if status.position >= engine.head().0 && status.in_flight == 0 {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "relay {name} did not catch up: {status:?}, head {}",
            engine.head().0
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
