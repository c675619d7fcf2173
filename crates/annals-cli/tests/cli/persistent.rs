//! Persistent subscriptions across a SIGKILL of `annals serve`, through the official Rust client:
//! the group, its checkpoint and its parked events are in the store, so after the restart the
//! group exists with its settings, nothing that was not acknowledged before the kill is lost
//! (at least once), what was checkpointed is not delivered again, and the parked event replays.

use std::collections::BTreeSet;
use std::time::Duration;

use kurrentdb::{
    AppendToStreamOptions, Client, EventData, GetPersistentSubscriptionInfoOptions, NakAction,
    PersistentSubscription, PersistentSubscriptionOptions, ReplayParkedMessagesOptions,
    StreamPosition, SubscribeToPersistentSubscriptionOptions,
};

use crate::support::{Server, runtime};

/// Events in the stream.
const EVENTS: u64 = 200;
/// Events acknowledged before the kill; the next one is parked.
const ACKED_BEFORE_KILL: u64 = 50;
/// Longest wait for one delivery, or for the checkpoint to reach a place.
const WAIT: Duration = Duration::from_secs(15);

fn client(server: &Server) -> Client {
    Client::new(server.url().parse().unwrap()).unwrap()
}

async fn next(sub: &mut PersistentSubscription) -> (u64, kurrentdb::ResolvedEvent) {
    let e = tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("a delivery within the wait")
        .unwrap();
    let n = e
        .event
        .as_ref()
        .expect("the resolved event")
        .as_json::<serde_json::Value>()
        .unwrap()["n"]
        .as_u64()
        .unwrap();
    (n, e)
}

#[test]
fn a_group_survives_sigkill_with_its_checkpoint_and_parked_events() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let server = Server::start(dir.path(), &[]);
    let checkpointed = rt.block_on(async {
        let c = client(&server);
        let events: Vec<EventData> = (0..EVENTS)
            .map(|n| {
                EventData::json("Numbered", &serde_json::json!({ "n": n }))
                    .unwrap()
                    .id(uuid::Uuid::new_v4())
            })
            .collect();
        c.append_to_stream("ledger-1", &AppendToStreamOptions::default(), events)
            .await
            .unwrap();
        c.create_persistent_subscription(
            "ledger-1",
            "g",
            &PersistentSubscriptionOptions::default()
                .start_from(StreamPosition::Start)
                .max_retry_count(4)
                .checkpoint_after(Duration::from_millis(100))
                .checkpoint_lower_bound(1)
                .checkpoint_upper_bound(10),
        )
        .await
        .unwrap();
        let mut sub = c
            .subscribe_to_persistent_subscription(
                "ledger-1",
                "g",
                &SubscribeToPersistentSubscriptionOptions::default().buffer_size(10),
            )
            .await
            .unwrap();
        let mut n = 0;
        while n < ACKED_BEFORE_KILL {
            let (got, e) = next(&mut sub).await;
            assert_eq!(got, n, "a stream group delivers in order");
            sub.ack(&e).await.unwrap();
            n += 1;
        }
        let (got, e) = next(&mut sub).await;
        assert_eq!(got, ACKED_BEFORE_KILL);
        sub.nack(&e, NakAction::Park, "poison").await.unwrap();
        // The checkpoint passes the parked event once it is written to the parked stream.
        let started = std::time::Instant::now();
        loop {
            let info = c
                .get_persistent_subscription_info(
                    "ledger-1",
                    "g",
                    &GetPersistentSubscriptionInfoOptions::default(),
                )
                .await
                .unwrap();
            if info.stats.parked_message_count == 1
                && info
                    .stats
                    .last_checkpointed_event_revision
                    .is_some_and(|r| r >= ACKED_BEFORE_KILL)
            {
                break info.stats.last_checkpointed_event_revision.unwrap();
            }
            assert!(
                started.elapsed() < WAIT,
                "no checkpoint past the park: {info:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    // SIGKILL: no shutdown, no last checkpoint.
    drop(server);

    let server = Server::start(dir.path(), &[]);
    rt.block_on(async {
        let c = client(&server);
        let info = c
            .get_persistent_subscription_info(
                "ledger-1",
                "g",
                &GetPersistentSubscriptionInfoOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(info.settings.as_ref().unwrap().max_retry_count, 4);
        assert_eq!(info.stats.parked_message_count, 1, "{info:?}");
        let mut sub = c
            .subscribe_to_persistent_subscription(
                "ledger-1",
                "g",
                &SubscribeToPersistentSubscriptionOptions::default().buffer_size(10),
            )
            .await
            .unwrap();
        let mut seen = BTreeSet::new();
        while seen.len() < usize::try_from(EVENTS - checkpointed - 1).unwrap() {
            let (n, e) = next(&mut sub).await;
            assert!(n > checkpointed, "{n} was checkpointed at {checkpointed}");
            sub.ack(&e).await.unwrap();
            seen.insert(n);
        }
        assert_eq!(seen, (checkpointed + 1..EVENTS).collect());
        c.replay_parked_messages("ledger-1", "g", &ReplayParkedMessagesOptions::default())
            .await
            .unwrap();
        let (n, e) = next(&mut sub).await;
        assert_eq!(
            n, ACKED_BEFORE_KILL,
            "the parked event replays after the restart"
        );
        sub.ack(&e).await.unwrap();
    });
}
