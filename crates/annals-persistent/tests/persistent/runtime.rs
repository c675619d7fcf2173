//! [`Subscriptions`] over a real engine in a temporary directory: groups on a stream and on
//! `$all` share their events among consumers, acks move the checkpoint, a reopened registry
//! resumes from it, parked events are written as links to the parked stream and replayed, and a
//! deleted group leaves nothing behind.

use std::time::Duration;

use annals_core::{Direction, EventRecord, ExpectedRevision, NewEvent, Revision, StreamName};
use annals_engine::{Engine, EngineConfig};
use annals_persistent::{
    ConnectionLabel, Consumer, ConsumerEvent, FilterDefinition, GroupDefinition, GroupKey,
    GroupSettings, PersistentError, Source, StartFrom, Strategy, Subscriptions,
};

/// Longest a test waits for one event.
const WAIT: Duration = Duration::from_secs(10);

fn engine() -> (Engine, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (engine, _) = Engine::open_dir(dir.path(), EngineConfig::default()).unwrap();
    (engine, dir)
}

async fn append(engine: &Engine, stream: &str, n: usize) {
    let events = (0..n)
        .map(|i| NewEvent::json("Thing", format!("{{\"i\":{i}}}")).unwrap())
        .collect();
    engine
        .append_async(
            &StreamName::new(stream).unwrap(),
            ExpectedRevision::Any,
            events,
        )
        .await
        .unwrap();
}

fn definition(source: Source, group: &str, settings: GroupSettings) -> GroupDefinition {
    GroupDefinition {
        key: GroupKey::new(source, group).unwrap(),
        start: StartFrom::Start,
        resolve_links: false,
        extra_statistics: false,
        filter: None,
        settings,
    }
}

fn stream(name: &str) -> Source {
    Source::Stream(StreamName::new(name).unwrap())
}

/// The next event a consumer gets (its payload event and retry count).
async fn next(consumer: &mut Consumer) -> (EventRecord, Option<EventRecord>, u32) {
    match tokio::time::timeout(WAIT, consumer.next()).await {
        Ok(Some(ConsumerEvent::Event(d))) => (
            d.message.payload.event().clone(),
            d.message.payload.link().cloned(),
            d.retry_count,
        ),
        other => panic!("expected an event, got {other:?}"),
    }
}

async fn nothing_more(consumer: &mut Consumer) {
    if let Ok(got) = tokio::time::timeout(Duration::from_millis(300), consumer.next()).await {
        panic!("expected nothing, got {got:?}");
    }
}

fn read(engine: &Engine, stream: &str) -> Vec<EventRecord> {
    engine
        .read_stream(
            &StreamName::new(stream).unwrap(),
            Revision(0),
            Direction::Forwards,
            1_000,
        )
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_group_shares_events_and_resumes_from_its_checkpoint() {
    let (engine, _dir) = engine();
    append(&engine, "order-1", 6).await;
    let subs = Subscriptions::open(engine.clone()).await.unwrap();
    let settings = GroupSettings {
        strategy: Strategy::RoundRobin,
        min_checkpoint_count: 0,
        max_checkpoint_count: 1,
        ..GroupSettings::default()
    };
    subs.create(definition(stream("order-1"), "g", settings))
        .await
        .unwrap();
    let key = GroupKey::new(stream("order-1"), "g").unwrap();
    let mut a = subs
        .connect(&key, 3, ConnectionLabel::default())
        .await
        .unwrap();
    let mut b = subs
        .connect(&key, 3, ConnectionLabel::default())
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (ea, _, _) = next(&mut a).await;
        let (eb, _, _) = next(&mut b).await;
        a.ack(vec![ea.id]).await;
        b.ack(vec![eb.id]).await;
        seen.push(ea.revision.0);
        seen.push(eb.revision.0);
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        [0, 1, 2, 3, 4, 5],
        "each event to exactly one consumer"
    );
    // The checkpoint follows the acks (one per handled event with this setting).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let info = subs.info(&key).await.unwrap();
        if info.state.as_ref().and_then(|s| s.last_checkpoint) == Some(5) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no checkpoint: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop((a, b));
    subs.shutdown().await;

    // A new registry on the same store has the group and starts after the checkpoint.
    append(&engine, "order-1", 2).await;
    let subs = Subscriptions::open(engine.clone()).await.unwrap();
    let mut c = subs
        .connect(&key, 10, ConnectionLabel::default())
        .await
        .unwrap();
    let (e, _, retry) = next(&mut c).await;
    assert_eq!((e.revision.0, retry), (6, 0));
    let (e, _, _) = next(&mut c).await;
    assert_eq!(e.revision.0, 7);
    nothing_more(&mut c).await;
    subs.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_events_are_links_in_the_parked_stream_and_come_back_on_replay() {
    let (engine, _dir) = engine();
    append(&engine, "cart-1", 3).await;
    let subs = Subscriptions::open(engine.clone()).await.unwrap();
    subs.create(definition(stream("cart-1"), "g", GroupSettings::default()))
        .await
        .unwrap();
    let key = GroupKey::new(stream("cart-1"), "g").unwrap();
    let mut c = subs
        .connect(&key, 10, ConnectionLabel::default())
        .await
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(next(&mut c).await.0.id);
    }
    c.nack(
        vec![ids[1]],
        annals_persistent::NackAction::Park,
        "bad data".to_owned(),
    )
    .await;
    c.ack(vec![ids[0], ids[2]]).await;
    let parked_stream = "$persistentsubscription-cart-1::g-parked";
    let deadline = tokio::time::Instant::now() + WAIT;
    while read(&engine, parked_stream).is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "nothing parked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let links = read(&engine, parked_stream);
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].event_type.as_str(), "$>");
    assert_eq!(&links[0].data[..], b"1@cart-1");
    let info = subs.info(&key).await.unwrap();
    assert_eq!(info.state.unwrap().parked, 1);

    assert_eq!(subs.replay_parked(&key, None).await.unwrap(), 1);
    let (event, link, retry) = next(&mut c).await;
    assert_eq!((event.id, event.revision.0, retry), (ids[1], 1, 0));
    let link = link.expect("a replayed event comes with its parked link");
    assert_eq!(link.id, links[0].id);
    c.ack(vec![link.id]).await;
    assert!(
        read(&engine, parked_stream).is_empty(),
        "replayed links are truncated away"
    );
    assert_eq!(subs.info(&key).await.unwrap().state.unwrap().parked, 0);
    subs.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_all_group_takes_its_filter_and_deleting_it_leaves_nothing() {
    let (engine, _dir) = engine();
    append(&engine, "order-1", 2).await;
    append(&engine, "user-1", 2).await;
    let subs = Subscriptions::open(engine.clone()).await.unwrap();
    let mut def = definition(
        Source::All,
        "orders",
        GroupSettings {
            max_subscriber_count: 1,
            min_checkpoint_count: 0,
            max_checkpoint_count: 1,
            ..GroupSettings::default()
        },
    );
    def.filter = Some(FilterDefinition {
        on_stream: true,
        regex: None,
        prefixes: vec!["order-".to_owned()],
    });
    subs.create(def.clone()).await.unwrap();
    assert!(matches!(
        subs.create(def).await,
        Err(PersistentError::AlreadyExists { .. })
    ));
    let key = GroupKey::new(Source::All, "orders").unwrap();
    let mut c = subs
        .connect(&key, 10, ConnectionLabel::default())
        .await
        .unwrap();
    assert!(matches!(
        subs.connect(&key, 10, ConnectionLabel::default()).await,
        Err(PersistentError::MaxSubscribersReached { .. })
    ));
    for revision in 0..2 {
        let (e, _, _) = next(&mut c).await;
        assert_eq!((e.stream.as_str(), e.revision.0), ("order-1", revision));
        c.ack(vec![e.id]).await;
    }
    nothing_more(&mut c).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while read(&engine, "$persistentsubscription-$all::orders-checkpoint").is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no checkpoint written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    subs.delete(&key).await.unwrap();
    assert!(matches!(
        tokio::time::timeout(WAIT, c.next()).await,
        Ok(Some(ConsumerEvent::Dropped) | None)
    ));
    assert!(matches!(
        subs.info(&key).await,
        Err(PersistentError::NotFound { .. })
    ));
    assert!(read(&engine, "$persistentsubscription-$all::orders-checkpoint").is_empty());
    // The deletion is saved: a reopened registry does not know the group.
    subs.shutdown().await;
    let subs = Subscriptions::open(engine.clone()).await.unwrap();
    assert!(subs.list(None).await.is_empty());
}
