//! `$ce-{category}` and `$et-{event type}` through the official Rust `kurrentdb` client: reads
//! forwards and backwards with and without resolving links (a link record of type `$>` with data
//! `{revision}@{stream}`, in the `$ce-`/`$et-` stream at its dense revision), a stream subscription
//! that catches up and goes live, and appends to them refused.

use std::time::Duration;

use kurrentdb::{
    ReadStreamOptions, ResolvedEvent, StreamPosition, SubscribeToStreamOptions, SubscriptionEvent,
};

use crate::kurrentdb_client::{event, start};

/// What a read returned: (stream, revision, type, data as text) of the event read and of its
/// link, if any.
type Seen = (
    (String, u64, String, String),
    Option<(String, u64, String, String)>,
);

fn seen(e: &ResolvedEvent) -> Seen {
    let brief = |r: &kurrentdb::RecordedEvent| {
        (
            r.stream_id().to_owned(),
            r.revision,
            r.event_type.clone(),
            String::from_utf8_lossy(&r.data).into_owned(),
        )
    };
    (brief(e.event.as_ref().unwrap()), e.link.as_ref().map(brief))
}

async fn read(c: &kurrentdb::Client, stream: &str, opts: &ReadStreamOptions) -> Vec<Seen> {
    let mut s = c.read_stream(stream, opts).await.unwrap();
    let mut out = Vec::new();
    while let Some(e) = s.next().await.unwrap() {
        out.push(seen(&e));
    }
    out
}

fn link(stream: &str, revision: u64, target: &str) -> (String, u64, String, String) {
    (
        stream.to_owned(),
        revision,
        "$>".to_owned(),
        target.to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn category_and_type_streams_read_as_links() {
    let s = start().await;
    let c = &s.client;
    // Nothing in the category yet: not found, as for a stream that does not exist.
    let mut r = c
        .read_stream("$ce-order", &ReadStreamOptions::default())
        .await
        .unwrap();
    assert!(matches!(
        r.next().await,
        Err(kurrentdb::Error::ResourceNotFound)
    ));
    c.append_to_stream(
        "order-17",
        &Default::default(),
        vec![event("OrderPlaced", 0), event("OrderPaid", 1)],
    )
    .await
    .unwrap();
    c.append_to_stream("cart-1", &Default::default(), event("OrderPlaced", 2))
        .await
        .unwrap();
    c.append_to_stream("order-18", &Default::default(), event("OrderPlaced", 3))
        .await
        .unwrap();

    // Without resolving: the link records themselves.
    let plain = read(c, "$ce-order", &ReadStreamOptions::default()).await;
    assert_eq!(
        plain,
        vec![
            (link("$ce-order", 0, "0@order-17"), None),
            (link("$ce-order", 1, "1@order-17"), None),
            (link("$ce-order", 2, "0@order-18"), None),
        ]
    );
    // Resolving: the event, with its link.
    let resolved = read(
        c,
        "$ce-order",
        &ReadStreamOptions::default().resolve_link_tos(),
    )
    .await;
    assert_eq!(resolved.len(), 3);
    let ((stream, revision, ty, data), l) = &resolved[1];
    assert_eq!(
        (stream.as_str(), *revision, ty.as_str()),
        ("order-17", 1, "OrderPaid")
    );
    assert!(data.contains("\"n\":1"), "{data}");
    assert_eq!(l.clone(), Some(link("$ce-order", 1, "1@order-17")));
    // Backwards from the end and from a revision, resolving.
    let back = read(
        c,
        "$et-OrderPlaced",
        &ReadStreamOptions::default()
            .backwards()
            .position(StreamPosition::End)
            .resolve_link_tos(),
    )
    .await;
    assert_eq!(
        back.iter()
            .map(|(e, l)| (e.0.clone(), l.clone().unwrap().1))
            .collect::<Vec<_>>(),
        vec![
            ("order-18".to_owned(), 2),
            ("cart-1".to_owned(), 1),
            ("order-17".to_owned(), 0),
        ]
    );
    let from1 = read(
        c,
        "$et-OrderPlaced",
        &ReadStreamOptions::default()
            .backwards()
            .position(StreamPosition::Position(1)),
    )
    .await;
    assert_eq!(
        from1,
        vec![
            (link("$et-OrderPlaced", 1, "0@cart-1"), None),
            (link("$et-OrderPlaced", 0, "0@order-17"), None),
        ]
    );
    let fwd = read(
        c,
        "$ce-order",
        &ReadStreamOptions::default()
            .position(StreamPosition::Position(2))
            .max_count(5),
    )
    .await;
    assert_eq!(fwd, vec![(link("$ce-order", 2, "0@order-18"), None)]);
    // The link's position is its event's (no record of its own) and its id is the same on
    // every read.
    let once = c
        .read_stream(
            "$ce-order",
            &ReadStreamOptions::default().resolve_link_tos(),
        )
        .await
        .unwrap()
        .next()
        .await
        .unwrap()
        .unwrap();
    let again = c
        .read_stream("$ce-order", &ReadStreamOptions::default())
        .await
        .unwrap()
        .next()
        .await
        .unwrap()
        .unwrap();
    let (original, linked) = (once.event.unwrap(), once.link.unwrap());
    assert_eq!(linked.position, original.position);
    assert_eq!(linked.id, again.event.unwrap().id);

    // Appends to them are refused, as invalid arguments.
    let err = c
        .append_to_stream("$ce-order", &Default::default(), event("OrderPlaced", 9))
        .await
        .unwrap_err();
    let text = format!("{err:?}");
    assert!(
        text.contains("InvalidArgument") && text.contains("read-only"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn category_subscription_catches_up_then_goes_live() {
    let s = start().await;
    let c = &s.client;
    for n in 0..3 {
        c.append_to_stream(format!("order-{n}"), &Default::default(), event("E", n))
            .await
            .unwrap();
    }
    c.append_to_stream("cart-1", &Default::default(), event("E", 100))
        .await
        .unwrap();
    let mut resolving = c
        .subscribe_to_stream(
            "$ce-order",
            &SubscribeToStreamOptions::default()
                .start_from(StreamPosition::Start)
                .resolve_link_tos(),
        )
        .await;
    // After revision 0 (exclusive), links only.
    let mut plain = c
        .subscribe_to_stream(
            "$ce-order",
            &SubscribeToStreamOptions::default().start_from(StreamPosition::Position(0)),
        )
        .await;
    let next = async |sub: &mut kurrentdb::Subscription| {
        tokio::time::timeout(Duration::from_secs(10), sub.next_subscription_event())
            .await
            .unwrap()
            .unwrap()
    };
    assert!(matches!(
        next(&mut resolving).await,
        SubscriptionEvent::Confirmed(_)
    ));
    let mut got = Vec::new();
    for _ in 0..3 {
        match next(&mut resolving).await {
            SubscriptionEvent::EventAppeared(e) => got.push(seen(&e)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(matches!(
        next(&mut resolving).await,
        SubscriptionEvent::CaughtUp(_)
    ));
    // Live.
    c.append_to_stream("order-9", &Default::default(), event("E", 9))
        .await
        .unwrap();
    match next(&mut resolving).await {
        SubscriptionEvent::EventAppeared(e) => got.push(seen(&e)),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        got.iter()
            .map(|(e, l)| (e.0.clone(), e.1, l.clone().unwrap().1))
            .collect::<Vec<_>>(),
        vec![
            ("order-0".to_owned(), 0, 0),
            ("order-1".to_owned(), 0, 1),
            ("order-2".to_owned(), 0, 2),
            ("order-9".to_owned(), 0, 3),
        ]
    );
    assert_eq!(got[3].1, Some(link("$ce-order", 3, "0@order-9")));
    let mut plain_got = Vec::new();
    while plain_got.len() < 3 {
        if let SubscriptionEvent::EventAppeared(e) = next(&mut plain).await {
            plain_got.push(seen(&e));
        }
    }
    assert_eq!(
        plain_got,
        vec![
            (link("$ce-order", 1, "0@order-1"), None),
            (link("$ce-order", 2, "0@order-2"), None),
            (link("$ce-order", 3, "0@order-9"), None),
        ]
    );
}
