//! Persistent subscriptions through the official Rust `kurrentdb` client: competing consumers,
//! acks, nacks (retry, park, skip), message timeouts, parking after the last retry, replaying
//! parked events, group management (create, update, delete, info, list) and its errors.

use std::collections::BTreeSet;
use std::time::Duration;

use annals_engine::{Engine, EngineConfig};
use annals_persistent::Subscriptions;
use annals_server::{Limits, ServerState};
use kurrentdb::{
    AppendToStreamOptions, Client, DeletePersistentSubscriptionOptions, EventData,
    GetPersistentSubscriptionInfoOptions, ListPersistentSubscriptionsOptions, NakAction,
    PersistentSubscription, PersistentSubscriptionOptions, PersistentSubscriptionToAllOptions,
    ReplayParkedMessagesOptions, StreamPosition, SubscribeToPersistentSubscriptionOptions,
    SubscriptionFilter, SystemConsumerStrategy,
};
use serde_json::json;

/// Longest a test waits for one delivery it expects.
const DELIVERY_WAIT: Duration = Duration::from_secs(10);

struct Server {
    client: Client,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let (engine, _) = Engine::open_dir(dir.path(), EngineConfig::default()).unwrap();
    let persistent = Subscriptions::open(engine.clone()).await.unwrap();
    let state = ServerState::new(engine, Limits::default()).with_persistent(persistent);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = annals_grpc::router(state.clone());
    tokio::spawn(async move {
        let _ = annals_server::serve(listener, router, None, state, async {
            let _ = stopped.await;
        })
        .await;
    });
    let settings = format!("kurrentdb://127.0.0.1:{port}?tls=false")
        .parse()
        .unwrap();
    Server {
        client: Client::new(settings).unwrap(),
        _dir: dir,
        _stop: stop,
    }
}

async fn append(client: &Client, stream: &str, from: u64, count: u64) {
    let events: Vec<EventData> = (from..from + count)
        .map(|n| {
            EventData::json("Numbered", &json!({ "n": n }))
                .unwrap()
                .id(uuid::Uuid::new_v4())
        })
        .collect();
    client
        .append_to_stream(stream, &AppendToStreamOptions::default(), events)
        .await
        .unwrap();
}

/// The next delivery: the event's `n` and its retry count.
async fn next(sub: &mut PersistentSubscription) -> (u64, usize, kurrentdb::ResolvedEvent) {
    loop {
        let event = tokio::time::timeout(DELIVERY_WAIT, sub.next_subscription_event())
            .await
            .expect("a delivery within the wait")
            .unwrap();
        if let kurrentdb::PersistentSubscriptionEvent::EventAppeared { retry_count, event } = event
        {
            let n = event
                .event
                .as_ref()
                .expect("the resolved event")
                .as_json::<serde_json::Value>()
                .unwrap()["n"]
                .as_u64()
                .unwrap();
            return (n, retry_count, event);
        }
    }
}

/// Waits until the server drops the consumer (its call ends with an error).
async fn dropped(sub: &mut PersistentSubscription) {
    let ended = async {
        loop {
            if let Err(e) = sub.next_subscription_event().await {
                return e;
            }
        }
    };
    tokio::time::timeout(DELIVERY_WAIT, ended)
        .await
        .expect("the consumer is dropped within the wait");
}

/// Asserts nothing is delivered for a while.
async fn quiet(sub: &mut PersistentSubscription, wait: Duration) {
    if let Ok(Ok(kurrentdb::PersistentSubscriptionEvent::EventAppeared { event, .. })) =
        tokio::time::timeout(wait, sub.next_subscription_event()).await
    {
        panic!("unexpected delivery of {:?}", event.get_original_event());
    }
}

fn from_start() -> PersistentSubscriptionOptions {
    PersistentSubscriptionOptions::default().start_from(StreamPosition::Start)
}

fn consumer(buffer: usize) -> SubscribeToPersistentSubscriptionOptions {
    SubscribeToPersistentSubscriptionOptions::default().buffer_size(buffer)
}

#[tokio::test(flavor = "multi_thread")]
async fn competing_consumers_share_a_stream_each_event_once() {
    let s = start().await;
    let c = &s.client;
    append(c, "orders-1", 0, 30).await;
    c.create_persistent_subscription(
        "orders-1",
        "workers",
        &from_start().consumer_strategy_name(SystemConsumerStrategy::RoundRobin),
    )
    .await
    .unwrap();
    let mut a = c
        .subscribe_to_persistent_subscription("orders-1", "workers", &consumer(4))
        .await
        .unwrap();
    let mut b = c
        .subscribe_to_persistent_subscription("orders-1", "workers", &consumer(4))
        .await
        .unwrap();
    // Both connect before the first event is handed out only if the group waits; it does not,
    // so the first consumer may take the first few. Everything after is shared.
    let mut seen_a = Vec::new();
    let mut seen_b = Vec::new();
    while seen_a.len() + seen_b.len() < 30 {
        tokio::select! {
            (n, retry, e) = next(&mut a) => { assert_eq!(retry, 0); a.ack(&e).await.unwrap(); seen_a.push(n); }
            (n, retry, e) = next(&mut b) => { assert_eq!(retry, 0); b.ack(&e).await.unwrap(); seen_b.push(n); }
        }
    }
    let all: BTreeSet<u64> = seen_a.iter().chain(&seen_b).copied().collect();
    assert_eq!(
        all,
        (0..30).collect(),
        "each event once: {seen_a:?} {seen_b:?}"
    );
    assert!(
        !seen_b.is_empty() && !seen_a.is_empty(),
        "round robin shares: {seen_a:?} {seen_b:?}"
    );
    // Live events go on being shared.
    append(c, "orders-1", 30, 10).await;
    let mut live = BTreeSet::new();
    while live.len() < 10 {
        tokio::select! {
            (n, _, e) = next(&mut a) => { a.ack(&e).await.unwrap(); assert!(live.insert(n)); }
            (n, _, e) = next(&mut b) => { b.ack(&e).await.unwrap(); assert!(live.insert(n)); }
        }
    }
    assert_eq!(live, (30..40).collect());

    let info = c
        .get_persistent_subscription_info(
            "orders-1",
            "workers",
            &GetPersistentSubscriptionInfoOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(info.event_source, "orders-1");
    assert_eq!(info.group_name, "workers");
    assert_eq!(info.connections.len(), 2);
    assert_eq!(info.stats.last_known_event_revision, Some(39));
    let settings = info.settings.unwrap();
    assert_eq!(
        settings.consumer_strategy_name,
        SystemConsumerStrategy::RoundRobin
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nacks_retry_park_and_skip_and_parked_events_replay() {
    let s = start().await;
    let c = &s.client;
    c.create_persistent_subscription("jobs", "g", &from_start().max_retry_count(2))
        .await
        .unwrap();
    append(c, "jobs", 0, 3).await;
    let mut sub = c
        .subscribe_to_persistent_subscription("jobs", "g", &consumer(10))
        .await
        .unwrap();
    // 0 keeps failing: retried with a growing count, parked after the last retry.
    // 1 is parked at once; 2 is skipped.
    let mut retries_of_0 = Vec::new();
    let mut others = BTreeSet::new();
    while retries_of_0.len() < 3 || others.len() < 2 {
        let (n, retry, e) = next(&mut sub).await;
        match n {
            0 => {
                retries_of_0.push(retry);
                sub.nack(&e, NakAction::Retry, "still failing")
                    .await
                    .unwrap();
            }
            1 => {
                assert!(others.insert(1), "a parked event is not delivered again");
                sub.nack(&e, NakAction::Park, "poison").await.unwrap();
            }
            2 => {
                assert!(others.insert(2), "a skipped event is not delivered again");
                sub.nack(&e, NakAction::Skip, "not mine").await.unwrap();
            }
            other => panic!("unexpected event {other}"),
        }
    }
    assert_eq!(retries_of_0, vec![0, 1, 2]);
    quiet(&mut sub, Duration::from_millis(700)).await;
    let info = c
        .get_persistent_subscription_info(
            "jobs",
            "g",
            &GetPersistentSubscriptionInfoOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(info.stats.parked_message_count, 2, "{info:?}");

    // Replaying brings both parked events back, oldest first; acked, they stay handled.
    c.replay_parked_messages("jobs", "g", &ReplayParkedMessagesOptions::default())
        .await
        .unwrap();
    let mut replayed = Vec::new();
    while replayed.len() < 2 {
        let (n, _, e) = next(&mut sub).await;
        sub.ack(&e).await.unwrap();
        replayed.push(n);
    }
    assert_eq!(replayed, vec![0, 1]);
    quiet(&mut sub, Duration::from_millis(700)).await;
    let info = c
        .get_persistent_subscription_info(
            "jobs",
            "g",
            &GetPersistentSubscriptionInfoOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(info.stats.parked_message_count, 0, "{info:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unacknowledged_event_is_retried_after_the_message_timeout() {
    let s = start().await;
    let c = &s.client;
    c.create_persistent_subscription(
        "slow",
        "g",
        &from_start().message_timeout(Duration::from_millis(400)),
    )
    .await
    .unwrap();
    append(c, "slow", 0, 1).await;
    let mut sub = c
        .subscribe_to_persistent_subscription("slow", "g", &consumer(10))
        .await
        .unwrap();
    let (n, retry, _) = next(&mut sub).await;
    assert_eq!((n, retry), (0, 0));
    // Not acknowledged: delivered again once the timeout passes, counted as a retry.
    let (n, retry, e) = next(&mut sub).await;
    assert_eq!((n, retry), (0, 1));
    sub.ack(&e).await.unwrap();
    quiet(&mut sub, Duration::from_millis(900)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn groups_are_managed_and_their_errors_are_kurrentdb_errors() {
    let s = start().await;
    let c = &s.client;
    c.create_persistent_subscription("acct-1", "solo", &from_start().max_subscriber_count(1))
        .await
        .unwrap();
    let again = c
        .create_persistent_subscription("acct-1", "solo", &from_start())
        .await;
    assert!(
        matches!(again, Err(kurrentdb::Error::ResourceAlreadyExists)),
        "{again:?}"
    );
    // An invalid setting is refused and creates nothing.
    let bad = c
        .create_persistent_subscription(
            "acct-1",
            "bad",
            &from_start()
                .checkpoint_lower_bound(10)
                .checkpoint_upper_bound(5),
        )
        .await;
    assert!(bad.is_err(), "{bad:?}");

    append(c, "acct-1", 0, 2).await;
    let mut first = c
        .subscribe_to_persistent_subscription("acct-1", "solo", &consumer(10))
        .await
        .unwrap();
    let (n, _, e) = next(&mut first).await;
    assert_eq!(n, 0);
    first.ack(&e).await.unwrap();
    // The group takes one consumer.
    let second = async {
        let mut sub = c
            .subscribe_to_persistent_subscription("acct-1", "solo", &consumer(10))
            .await?;
        sub.next_subscription_event().await.map(|_| ())
    };
    let second = tokio::time::timeout(DELIVERY_WAIT, second).await.unwrap();
    assert!(
        second.is_err(),
        "a second consumer over the limit: {second:?}"
    );

    // Update keeps the group's place and changes its settings.
    c.update_persistent_subscription(
        "acct-1",
        "solo",
        &from_start().max_subscriber_count(5).max_retry_count(3),
    )
    .await
    .unwrap();
    let info = c
        .get_persistent_subscription_info(
            "acct-1",
            "solo",
            &GetPersistentSubscriptionInfoOptions::default(),
        )
        .await
        .unwrap();
    let settings = info.settings.unwrap();
    assert_eq!(settings.max_subscriber_count, 5);
    assert_eq!(settings.max_retry_count, 3);

    c.create_persistent_subscription("acct-2", "other", &from_start())
        .await
        .unwrap();
    c.create_persistent_subscription_to_all(
        "everything",
        &PersistentSubscriptionToAllOptions::default().start_from(StreamPosition::Start),
    )
    .await
    .unwrap();
    let list = c
        .list_all_persistent_subscriptions(&ListPersistentSubscriptionsOptions::default())
        .await
        .unwrap();
    let mut names: Vec<(String, String)> = list
        .iter()
        .map(|i| (i.event_source.clone(), i.group_name.clone()))
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            ("$all".into(), "everything".into()),
            ("acct-1".into(), "solo".into()),
            ("acct-2".into(), "other".into()),
        ]
    );
    let for_stream = c
        .list_persistent_subscriptions_for_stream(
            "acct-2",
            &ListPersistentSubscriptionsOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(for_stream.len(), 1);
    assert_eq!(for_stream[0].group_name, "other");

    // Deleting drops the connected consumer and forgets the group.
    c.delete_persistent_subscription(
        "acct-1",
        "solo",
        &DeletePersistentSubscriptionOptions::default(),
    )
    .await
    .unwrap();
    dropped(&mut first).await;
    let gone = c
        .get_persistent_subscription_info(
            "acct-1",
            "solo",
            &GetPersistentSubscriptionInfoOptions::default(),
        )
        .await;
    assert!(
        matches!(gone, Err(kurrentdb::Error::ResourceNotFound)),
        "{gone:?}"
    );
    let missing = c
        .delete_persistent_subscription(
            "acct-1",
            "solo",
            &DeletePersistentSubscriptionOptions::default(),
        )
        .await;
    assert!(
        matches!(missing, Err(kurrentdb::Error::ResourceNotFound)),
        "{missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_all_group_delivers_only_what_its_filter_takes() {
    let s = start().await;
    let c = &s.client;
    c.create_persistent_subscription_to_all(
        "billing",
        &PersistentSubscriptionToAllOptions::default()
            .start_from(StreamPosition::Start)
            .filter(SubscriptionFilter::on_stream_name().add_prefix("invoice-")),
    )
    .await
    .unwrap();
    append(c, "invoice-1", 0, 3).await;
    append(c, "order-1", 100, 3).await;
    append(c, "invoice-2", 3, 2).await;
    let mut sub = c
        .subscribe_to_persistent_subscription_to_all("billing", &consumer(10))
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 5 {
        let (n, _, e) = next(&mut sub).await;
        assert!(
            e.get_original_stream_id().starts_with("invoice-"),
            "{:?}",
            e.get_original_stream_id()
        );
        sub.ack(&e).await.unwrap();
        got.push(n);
    }
    got.sort_unstable();
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
    quiet(&mut sub, Duration::from_millis(500)).await;
}

/// Events of `$all` groups: stream (or correlation id) → which consumers got its events.
async fn collect_two(
    a: &mut PersistentSubscription,
    b: &mut PersistentSubscription,
    count: usize,
    key: impl Fn(&kurrentdb::ResolvedEvent) -> String,
) -> std::collections::BTreeMap<String, BTreeSet<char>> {
    let mut owners: std::collections::BTreeMap<String, BTreeSet<char>> = Default::default();
    let mut got = 0;
    while got < count {
        let (who, e) = tokio::select! {
            (_, _, e) = next(a) => { a.ack(&e).await.unwrap(); ('a', e) }
            (_, _, e) = next(b) => { b.ack(&e).await.unwrap(); ('b', e) }
        };
        owners.entry(key(&e)).or_default().insert(who);
        got += 1;
    }
    owners
}

#[tokio::test(flavor = "multi_thread")]
async fn each_strategy_shares_events_as_kurrentdb_does() {
    let s = start().await;
    let c = &s.client;
    let all_from_start = |strategy| {
        PersistentSubscriptionToAllOptions::default()
            .start_from(StreamPosition::Start)
            .filter(SubscriptionFilter::on_stream_name().add_prefix("cart-"))
            .consumer_strategy_name(strategy)
    };
    for (group, strategy) in [
        ("single", SystemConsumerStrategy::DispatchToSingle),
        ("pinned", SystemConsumerStrategy::Pinned),
    ] {
        c.create_persistent_subscription_to_all(group, &all_from_start(strategy))
            .await
            .unwrap();
    }
    let subscribe = |group: &'static str| async move {
        c.subscribe_to_persistent_subscription_to_all(group, &consumer(50))
            .await
            .unwrap()
    };
    let (mut single_a, mut single_b) = (subscribe("single").await, subscribe("single").await);
    let (mut pinned_a, mut pinned_b) = (subscribe("pinned").await, subscribe("pinned").await);
    // Both consumers of each group are connected; now 6 streams of 4 events. (The Rust client
    // refuses to create `PinnedByCorrelation` groups; the Python client's script covers them.)
    for stream in 0..6 {
        let events: Vec<EventData> = (0..4)
            .map(|n| {
                EventData::json("Numbered", &json!({ "n": n }))
                    .unwrap()
                    .metadata_as_json(&json!({ "$correlationId": format!("corr-{}", n % 2) }))
                    .unwrap()
                    .id(uuid::Uuid::new_v4())
            })
            .collect();
        c.append_to_stream(
            format!("cart-{stream}"),
            &AppendToStreamOptions::default(),
            events,
        )
        .await
        .unwrap();
    }
    let by_stream = |e: &kurrentdb::ResolvedEvent| e.get_original_stream_id().to_owned();
    // DispatchToSingle: the first consumer with room takes everything.
    let single = collect_two(&mut single_a, &mut single_b, 24, by_stream).await;
    let takers: BTreeSet<char> = single.values().flatten().copied().collect();
    assert_eq!(takers.len(), 1, "one consumer takes all: {single:?}");
    // Pinned: each stream's events go to one consumer.
    let pinned = collect_two(&mut pinned_a, &mut pinned_b, 24, by_stream).await;
    assert_eq!(pinned.len(), 6);
    assert!(pinned.values().all(|o| o.len() == 1), "{pinned:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn updating_a_group_drops_its_consumers_who_reconnect_where_it_was() {
    let s = start().await;
    let c = &s.client;
    append(c, "upd-1", 0, 4).await;
    c.create_persistent_subscription("upd-1", "g", &from_start())
        .await
        .unwrap();
    let mut sub = c
        .subscribe_to_persistent_subscription("upd-1", "g", &consumer(10))
        .await
        .unwrap();
    for expected in 0..2 {
        let (n, _, e) = next(&mut sub).await;
        assert_eq!(n, expected);
        sub.ack(&e).await.unwrap();
    }
    c.update_persistent_subscription("upd-1", "g", &from_start().max_retry_count(2))
        .await
        .unwrap();
    dropped(&mut sub).await;
    // Reconnected, the consumer gets what was not acked; acked events may come again only if
    // no checkpoint covered them (at least once), never an event lost.
    let mut sub = c
        .subscribe_to_persistent_subscription("upd-1", "g", &consumer(10))
        .await
        .unwrap();
    let mut seen = BTreeSet::new();
    while !(seen.contains(&2) && seen.contains(&3)) {
        let (n, _, e) = next(&mut sub).await;
        sub.ack(&e).await.unwrap();
        seen.insert(n);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn restarting_the_subsystem_drops_consumers_and_keeps_groups() {
    let s = start().await;
    let c = &s.client;
    append(c, "rs-1", 0, 3).await;
    c.create_persistent_subscription("rs-1", "g", &from_start())
        .await
        .unwrap();
    let mut sub = c
        .subscribe_to_persistent_subscription("rs-1", "g", &consumer(10))
        .await
        .unwrap();
    let (n, _, e) = next(&mut sub).await;
    assert_eq!(n, 0);
    sub.ack(&e).await.unwrap();
    c.restart_persistent_subscription_subsystem(&Default::default())
        .await
        .unwrap();
    dropped(&mut sub).await;
    let mut sub = c
        .subscribe_to_persistent_subscription("rs-1", "g", &consumer(10))
        .await
        .unwrap();
    let mut seen = BTreeSet::new();
    while seen.len() < 2 || !seen.contains(&2) {
        let (n, _, e) = next(&mut sub).await;
        sub.ack(&e).await.unwrap();
        seen.insert(n);
    }
    assert!(seen.contains(&1) && seen.contains(&2), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_category_group_resolves_links_when_asked() {
    let s = start().await;
    let c = &s.client;
    // Interleaved appends to two streams of one category: the $ce- stream's order.
    append(c, "shop-1", 0, 2).await;
    append(c, "shop-2", 10, 2).await;
    append(c, "shop-1", 2, 1).await;
    c.create_persistent_subscription(
        "$ce-shop",
        "resolved",
        &from_start().resolve_link_tos(true).max_retry_count(0),
    )
    .await
    .unwrap();
    c.create_persistent_subscription("$ce-shop", "links", &from_start())
        .await
        .unwrap();

    let mut sub = c
        .subscribe_to_persistent_subscription("$ce-shop", "resolved", &consumer(10))
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..5 {
        let (n, _, e) = next(&mut sub).await;
        let link = e
            .link
            .as_ref()
            .expect("a resolved event comes with its link");
        assert_eq!(link.stream_id(), "$ce-shop");
        assert_eq!(link.event_type, "$>");
        let original = e.event.as_ref().unwrap();
        assert_eq!(
            std::str::from_utf8(&link.data).unwrap(),
            format!("{}@{}", original.revision, original.stream_id())
        );
        got.push((link.revision, original.stream_id().to_owned(), n));
        if n == 11 {
            // Parked (no retries), then replayed: it comes back, still the same event.
            sub.nack(&e, NakAction::Retry, "fails once").await.unwrap();
        } else {
            sub.ack(&e).await.unwrap();
        }
    }
    assert_eq!(
        got,
        vec![
            (0, "shop-1".to_owned(), 0),
            (1, "shop-1".to_owned(), 1),
            (2, "shop-2".to_owned(), 10),
            (3, "shop-2".to_owned(), 11),
            (4, "shop-1".to_owned(), 2),
        ]
    );
    let info = async {
        loop {
            let info = c
                .get_persistent_subscription_info(
                    "$ce-shop",
                    "resolved",
                    &GetPersistentSubscriptionInfoOptions::default(),
                )
                .await
                .unwrap();
            if info.stats.parked_message_count == 1 {
                return info;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(DELIVERY_WAIT, info).await.unwrap();
    c.replay_parked_messages(
        "$ce-shop",
        "resolved",
        &ReplayParkedMessagesOptions::default(),
    )
    .await
    .unwrap();
    let (n, _, e) = next(&mut sub).await;
    assert_eq!(n, 11, "the parked event replays");
    sub.ack(&e).await.unwrap();

    // Without resolve_links the consumer gets the link records themselves.
    let mut sub = c
        .subscribe_to_persistent_subscription("$ce-shop", "links", &consumer(10))
        .await
        .unwrap();
    let mut links = Vec::new();
    for _ in 0..5 {
        let e = tokio::time::timeout(DELIVERY_WAIT, sub.next())
            .await
            .unwrap()
            .unwrap();
        assert!(e.link.is_none());
        let record = e.get_original_event();
        assert_eq!(record.event_type, "$>");
        links.push(std::str::from_utf8(&record.data).unwrap().to_owned());
        sub.ack(&e).await.unwrap();
    }
    assert_eq!(
        links,
        ["0@shop-1", "1@shop-1", "0@shop-2", "1@shop-2", "2@shop-1"]
    );
}
