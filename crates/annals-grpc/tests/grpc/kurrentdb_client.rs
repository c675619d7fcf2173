//! End-to-end tests: the real `kurrentdb` Rust client against `annals_grpc::router` served by
//! `annals_server::serve` over an engine in a temporary directory (with `ANNALS_TEST_STORE`, the
//! replica of a store in PostgreSQL: the same tests on the other store).

use std::time::Duration;

use annals_server::{Limits, ServerState};
use kurrentdb::{
    AppendToStreamOptions, Client, DeleteStreamOptions, EventData, ReadAllOptions,
    ReadStreamOptions, StreamMetadata, StreamMetadataResult, StreamPosition, StreamState,
    SubscribeToAllOptions, SubscribeToStreamOptions, SubscriptionFilter, TombstoneStreamOptions,
};
use serde_json::json;

pub(crate) struct Server {
    pub(crate) client: Client,
    /// `HOST:PORT` of the server, for Annals's lean client.
    addr: String,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

pub(crate) async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let engine = annals_testkit::store::open_test_store(dir.path()).await;
    let state = ServerState::new(engine, Limits::default());
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
        addr: format!("127.0.0.1:{port}"),
        _dir: dir,
        _stop: stop,
    }
}

pub(crate) fn event(kind: &str, n: u64) -> EventData {
    EventData::json(kind, &json!({ "n": n }))
        .unwrap()
        .id(uuid::Uuid::new_v4())
}

async fn read_all_of(client: &Client, stream: &str, opts: &ReadStreamOptions) -> Vec<(u64, u64)> {
    let mut s = client.read_stream(stream, opts).await.unwrap();
    let mut out = Vec::new();
    while let Some(e) = s.next().await.unwrap() {
        let e = e.get_original_event();
        let v: serde_json::Value = e.as_json().unwrap();
        out.push((e.revision, v["n"].as_u64().unwrap()));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn append_with_every_expected_revision_kind() {
    let s = start().await;
    let c = &s.client;
    let id = uuid::Uuid::new_v4();
    let first = EventData::json("Created", &json!({ "n": 0 }))
        .unwrap()
        .id(id);
    let r = c
        .append_to_stream(
            "order-1",
            &AppendToStreamOptions::default().stream_state(StreamState::NoStream),
            first,
        )
        .await
        .unwrap();
    assert_eq!(r.next_expected_version, 0);
    assert_eq!(r.position.commit, 1);
    assert_eq!(r.position.prepare, 1);
    let r = c
        .append_to_stream(
            "order-1",
            &AppendToStreamOptions::default().stream_state(StreamState::StreamExists),
            event("Updated", 1),
        )
        .await
        .unwrap();
    assert_eq!(r.next_expected_version, 1);
    let r = c
        .append_to_stream(
            "order-1",
            &AppendToStreamOptions::default().stream_state(StreamState::StreamRevision(1)),
            vec![event("Updated", 2), event("Updated", 3)],
        )
        .await
        .unwrap();
    assert_eq!(r.next_expected_version, 3);
    assert_eq!(r.position.commit, 4);
    let r = c
        .append_to_stream(
            "order-1",
            &AppendToStreamOptions::default().stream_state(StreamState::Any),
            event("Updated", 4),
        )
        .await
        .unwrap();
    assert_eq!(r.next_expected_version, 4);

    // Wrong expected revision.
    let err = c
        .append_to_stream(
            "order-1",
            &AppendToStreamOptions::default().stream_state(StreamState::StreamRevision(1)),
            event("Updated", 9),
        )
        .await
        .unwrap_err();
    match err {
        kurrentdb::Error::WrongExpectedVersion { current, expected } => {
            assert_eq!(current, kurrentdb::CurrentRevision::Current(4));
            assert_eq!(expected, StreamState::StreamRevision(1));
        }
        other => panic!("unexpected error {other:?}"),
    }
    let err = c
        .append_to_stream(
            "order-1",
            &AppendToStreamOptions::default().stream_state(StreamState::NoStream),
            event("Updated", 9),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kurrentdb::Error::WrongExpectedVersion { .. }),
        "{err:?}"
    );

    // Forwards and backwards reads with real values.
    let fwd = read_all_of(c, "order-1", &ReadStreamOptions::default()).await;
    assert_eq!(fwd, vec![(0, 0), (1, 1), (2, 2), (3, 3), (4, 4)]);
    let mut stream = c
        .read_stream("order-1", &ReadStreamOptions::default().max_count(1))
        .await
        .unwrap();
    let e = stream.next().await.unwrap().unwrap();
    assert_eq!(e.get_original_event().id, id);
    assert_eq!(e.get_original_event().event_type, "Created");
    assert!(e.get_original_event().is_json);
    let bwd = read_all_of(
        c,
        "order-1",
        &ReadStreamOptions::default()
            .backwards()
            .position(StreamPosition::End)
            .max_count(2),
    )
    .await;
    assert_eq!(bwd, vec![(4, 4), (3, 3)]);
    let from2 = read_all_of(
        c,
        "order-1",
        &ReadStreamOptions::default()
            .position(StreamPosition::Position(2))
            .max_count(2),
    )
    .await;
    assert_eq!(from2, vec![(2, 2), (3, 3)]);

    // A missing stream.
    let mut missing = c
        .read_stream("nope", &ReadStreamOptions::default())
        .await
        .unwrap();
    assert!(matches!(
        missing.next().await,
        Err(kurrentdb::Error::ResourceNotFound)
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn soft_delete_then_append_and_tombstone() {
    let s = start().await;
    let c = &s.client;
    c.append_to_stream(
        "cart-1",
        &Default::default(),
        vec![event("A", 0), event("A", 1)],
    )
    .await
    .unwrap();
    let pos = c
        .delete_stream(
            "cart-1",
            &DeleteStreamOptions::default().stream_state(StreamState::StreamRevision(1)),
        )
        .await
        .unwrap();
    assert!(pos.is_some());
    let mut r = c
        .read_stream("cart-1", &ReadStreamOptions::default())
        .await
        .unwrap();
    assert!(matches!(
        r.next().await,
        Err(kurrentdb::Error::ResourceNotFound)
    ));
    let w = c
        .append_to_stream("cart-1", &Default::default(), event("A", 2))
        .await
        .unwrap();
    assert_eq!(w.next_expected_version, 2);
    let events = read_all_of(c, "cart-1", &ReadStreamOptions::default()).await;
    assert_eq!(events, vec![(2, 2)]);

    // Delete with a wrong expected revision.
    let err = c
        .delete_stream(
            "cart-1",
            &DeleteStreamOptions::default().stream_state(StreamState::StreamRevision(7)),
        )
        .await
        .unwrap_err();
    let text = format!("{err:?}");
    assert!(
        text.contains("FailedPrecondition")
            && text.contains(
                "Delete failed due to WrongExpectedVersion. Stream: cart-1, Expected version: 7, Actual version: 2"
            ),
        "{text}"
    );

    c.tombstone_stream("cart-1", &TombstoneStreamOptions::default())
        .await
        .unwrap();
    let err = c
        .append_to_stream("cart-1", &Default::default(), event("A", 3))
        .await
        .unwrap_err();
    assert!(matches!(err, kurrentdb::Error::ResourceDeleted), "{err:?}");
    let mut r = c
        .read_stream("cart-1", &ReadStreamOptions::default())
        .await
        .unwrap();
    assert!(matches!(
        r.next().await,
        Err(kurrentdb::Error::ResourceDeleted)
    ));
}

/// The position of the last event in `$all`, system events included (0 when empty).
async fn last_position(c: &Client) -> u64 {
    let opts = ReadAllOptions::default()
        .position(StreamPosition::End)
        .backwards()
        .max_count(1);
    let mut r = c.read_all(&opts).await.unwrap();
    match r.next().await.unwrap() {
        Some(e) => e.get_original_event().position.commit,
        None => 0,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deletes_and_metadata_as_kurrentdb_judges_them() {
    let s = start().await;
    let c = &s.client;
    c.append_to_stream("other-1", &Default::default(), event("A", 0))
        .await
        .unwrap();
    let head = last_position(c).await;

    // A soft delete of a stream that never existed fails whatever it expects, and writes nothing.
    for state in [
        StreamState::Any,
        StreamState::NoStream,
        StreamState::StreamExists,
        StreamState::StreamRevision(0),
    ] {
        let err = c
            .delete_stream(
                "never-1",
                &DeleteStreamOptions::default().stream_state(state),
            )
            .await
            .unwrap_err();
        let text = format!("{err:?}");
        assert!(
            text.contains("FailedPrecondition") && text.contains("Actual version: -1"),
            "{state:?}: {text}"
        );
    }
    assert_eq!(last_position(c).await, head);

    // A soft-deleted stream: deleted for stream_exists, restored by no_stream.
    c.append_to_stream(
        "cart-2",
        &Default::default(),
        vec![event("A", 0), event("A", 1)],
    )
    .await
    .unwrap();
    c.delete_stream("cart-2", &Default::default())
        .await
        .unwrap();
    let exists = DeleteStreamOptions::default().stream_state(StreamState::StreamExists);
    let err = c.delete_stream("cart-2", &exists).await.unwrap_err();
    assert!(matches!(err, kurrentdb::Error::ResourceDeleted), "{err:?}");
    let no_stream = AppendToStreamOptions::default().stream_state(StreamState::NoStream);
    let w = c
        .append_to_stream("cart-2", &no_stream, event("A", 2))
        .await
        .unwrap();
    assert_eq!(w.next_expected_version, 2);
    let events = read_all_of(c, "cart-2", &ReadStreamOptions::default()).await;
    assert_eq!(events.iter().map(|e| e.0).collect::<Vec<_>>(), vec![2]);

    // A tombstoned stream's metadata reads as deleted, and still takes writes.
    let metadata = StreamMetadata::builder().max_count(5).build();
    c.set_stream_metadata("cart-2", &Default::default(), &metadata)
        .await
        .unwrap();
    c.tombstone_stream("cart-2", &TombstoneStreamOptions::default())
        .await
        .unwrap();
    let got = c
        .get_stream_metadata("cart-2", &Default::default())
        .await
        .unwrap();
    assert!(got.is_deleted(), "{got:?}");
    let at_two = AppendToStreamOptions::default().stream_state(StreamState::StreamRevision(2));
    c.set_stream_metadata("cart-2", &at_two, &metadata)
        .await
        .unwrap();
    let got = c
        .get_stream_metadata("cart-2", &Default::default())
        .await
        .unwrap();
    assert!(got.is_deleted(), "{got:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn read_all_with_filters() {
    let s = start().await;
    let c = &s.client;
    c.append_to_stream(
        "order-1",
        &Default::default(),
        vec![event("Placed", 0), event("Paid", 1)],
    )
    .await
    .unwrap();
    c.append_to_stream("user-1", &Default::default(), vec![event("Registered", 2)])
        .await
        .unwrap();
    c.append_to_stream("order-2", &Default::default(), vec![event("Placed", 3)])
        .await
        .unwrap();

    let collect = |opts: ReadAllOptions| async move {
        let mut r = c.read_all(&opts).await.unwrap();
        let mut out = Vec::new();
        while let Some(e) = r.next().await.unwrap() {
            let e = e.get_original_event();
            out.push((
                e.stream_id().to_owned(),
                e.event_type.clone(),
                e.position.commit,
            ));
        }
        out
    };
    let by_stream = collect(
        ReadAllOptions::default()
            .filter(SubscriptionFilter::on_stream_name().add_prefix("order-"))
            .max_count(100),
    )
    .await;
    assert_eq!(
        by_stream,
        vec![
            ("order-1".to_owned(), "Placed".to_owned(), 1),
            ("order-1".to_owned(), "Paid".to_owned(), 2),
            ("order-2".to_owned(), "Placed".to_owned(), 4),
        ]
    );
    let by_type = collect(
        ReadAllOptions::default()
            .filter(SubscriptionFilter::on_event_type().regex("^Pla"))
            .max_count(100),
    )
    .await;
    assert_eq!(by_type.iter().map(|e| e.2).collect::<Vec<_>>(), vec![1, 4]);
    let backwards = collect(
        ReadAllOptions::default()
            .backwards()
            .position(StreamPosition::End)
            .max_count(2),
    )
    .await;
    assert_eq!(
        backwards.iter().map(|e| e.2).collect::<Vec<_>>(),
        vec![4, 3]
    );
    // Forwards from a position includes it.
    let from = collect(
        ReadAllOptions::default()
            .position(StreamPosition::Position(kurrentdb::Position {
                commit: 3,
                prepare: 3,
            }))
            .max_count(10),
    )
    .await;
    assert_eq!(from.iter().map(|e| e.2).collect::<Vec<_>>(), vec![3, 4]);
}

#[tokio::test(flavor = "multi_thread")]
async fn catch_up_then_live_subscription() {
    let s = start().await;
    let c = &s.client;
    c.append_to_stream(
        "live-1",
        &Default::default(),
        vec![event("E", 0), event("E", 1)],
    )
    .await
    .unwrap();
    c.append_to_stream("other", &Default::default(), vec![event("E", 100)])
        .await
        .unwrap();
    let mut sub = c
        .subscribe_to_stream(
            "live-1",
            &SubscribeToStreamOptions::default().start_from(StreamPosition::Start),
        )
        .await;
    let mut all = c.subscribe_to_all(&SubscribeToAllOptions::default()).await;
    let mut got = Vec::new();
    for _ in 0..2 {
        let e = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap()
            .unwrap();
        let v: serde_json::Value = e.get_original_event().as_json().unwrap();
        got.push((e.get_original_event().revision, v["n"].as_u64().unwrap()));
    }
    c.append_to_stream(
        "live-1",
        &Default::default(),
        vec![event("E", 2), event("E", 3)],
    )
    .await
    .unwrap();
    for _ in 0..2 {
        let e = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap()
            .unwrap();
        let v: serde_json::Value = e.get_original_event().as_json().unwrap();
        got.push((e.get_original_event().revision, v["n"].as_u64().unwrap()));
    }
    assert_eq!(got, vec![(0, 0), (1, 1), (2, 2), (3, 3)]);

    let mut positions = Vec::new();
    for _ in 0..5 {
        let e = tokio::time::timeout(Duration::from_secs(10), all.next())
            .await
            .unwrap()
            .unwrap();
        positions.push(e.get_original_event().position.commit);
    }
    assert_eq!(positions, vec![1, 2, 3, 4, 5]);
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_metadata_set_and_get() {
    let s = start().await;
    let c = &s.client;
    c.append_to_stream("meta-1", &Default::default(), vec![event("E", 0)])
        .await
        .unwrap();
    let metadata = StreamMetadata::builder().max_count(5).build();
    c.set_stream_metadata("meta-1", &Default::default(), &metadata)
        .await
        .unwrap();
    match c
        .get_stream_metadata("meta-1", &Default::default())
        .await
        .unwrap()
    {
        StreamMetadataResult::Success(m) => {
            assert_eq!(m.metadata().max_count, Some(5));
            assert_eq!(m.version(), 0);
        }
        other => panic!("unexpected {other:?}"),
    }
    let info = c.server_info().await.unwrap();
    assert_eq!(info.version().major(), 25);
}

#[tokio::test(flavor = "multi_thread")]
async fn subscription_sends_confirmation_events_caught_up_then_live() {
    use kurrentdb::SubscriptionEvent;
    let s = start().await;
    let c = &s.client;
    c.append_to_stream(
        "s-1",
        &Default::default(),
        vec![event("E", 0), event("E", 1)],
    )
    .await
    .unwrap();
    // From revision 0 (exclusive): only revision 1 is caught up.
    let mut sub = c
        .subscribe_to_stream(
            "s-1",
            &SubscribeToStreamOptions::default().start_from(StreamPosition::Position(0)),
        )
        .await;
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), sub.next_subscription_event())
            .await
            .unwrap()
            .unwrap()
    };
    assert!(matches!(next().await, SubscriptionEvent::Confirmed(id) if !id.is_empty()));
    match next().await {
        SubscriptionEvent::EventAppeared(e) => assert_eq!(e.get_original_event().revision, 1),
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(next().await, SubscriptionEvent::CaughtUp(Some(_))));
    c.append_to_stream("s-1", &Default::default(), vec![event("E", 2)])
        .await
        .unwrap();
    match next().await {
        SubscriptionEvent::EventAppeared(e) => assert_eq!(e.get_original_event().revision, 2),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn filtered_all_subscription_with_checkpoints() {
    use kurrentdb::SubscriptionEvent;
    let s = start().await;
    let c = &s.client;
    for i in 0..6 {
        c.append_to_stream(
            format!("noise-{i}"),
            &Default::default(),
            vec![event("N", i)],
        )
        .await
        .unwrap();
    }
    c.append_to_stream("wanted-1", &Default::default(), vec![event("W", 7)])
        .await
        .unwrap();
    // From position 2 (exclusive).
    let mut sub = c
        .subscribe_to_all(
            &SubscribeToAllOptions::default()
                .position(StreamPosition::Position(kurrentdb::Position {
                    commit: 2,
                    prepare: 2,
                }))
                .filter(
                    SubscriptionFilter::on_stream_name()
                        .add_prefix("wanted-")
                        .max(2),
                ),
        )
        .await;
    let mut events = Vec::new();
    let mut checkpoints = Vec::new();
    let mut caught_up = false;
    while !caught_up {
        match tokio::time::timeout(Duration::from_secs(10), sub.next_subscription_event())
            .await
            .unwrap()
            .unwrap()
        {
            SubscriptionEvent::EventAppeared(e) => {
                events.push((
                    e.get_original_event().stream_id().to_owned(),
                    e.get_original_event().position.commit,
                ));
            }
            SubscriptionEvent::Checkpoint(p) => checkpoints.push(p.commit),
            SubscriptionEvent::CaughtUp(_) => caught_up = true,
            _ => {}
        }
    }
    assert_eq!(events, vec![("wanted-1".to_owned(), 7)]);
    assert!(!checkpoints.is_empty(), "no checkpoint was sent");
    assert!(
        checkpoints.iter().all(|p| *p >= 2 && *p <= 7),
        "{checkpoints:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_append_through_the_official_client() {
    let s = start().await;
    let c = &s.client;
    let batch = c.batch_append(&Default::default()).await.unwrap();
    let r = batch
        .append_to_stream(
            "b-1",
            StreamState::NoStream,
            vec![event("B", 0), event("B", 1)],
        )
        .await
        .unwrap();
    assert_eq!(r.current_revision(), Some(1));
    assert_eq!(r.current_position().map(|p| p.commit), Some(2));
    let err = batch
        .append_to_stream("b-1", StreamState::NoStream, vec![event("B", 2)])
        .await
        .unwrap_err();
    assert!(
        format!("{err:?}").contains("WrongExpectedVersion"),
        "{err:?}"
    );
    let events = read_all_of(c, "b-1", &ReadStreamOptions::default()).await;
    assert_eq!(events, vec![(0, 0), (1, 1)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_event_is_refused() {
    let s = start().await;
    let c = &s.client;
    let big = EventData::binary(
        "Big",
        vec![0u8; annals_core::limits::NETWORK_EVENT_BYTES_MAX + 1].into(),
    );
    let err = c
        .append_to_stream("big-1", &Default::default(), big)
        .await
        .unwrap_err();
    let text = format!("{err:?}");
    assert!(
        text.contains("InvalidArgument") && text.contains("bytes"),
        "{text}"
    );
    let mut r = c
        .read_stream("big-1", &ReadStreamOptions::default())
        .await
        .unwrap();
    assert!(matches!(
        r.next().await,
        Err(kurrentdb::Error::ResourceNotFound)
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_read_reports_last_stream_position() {
    use kurrentdb::ReadEvent;
    let s = start().await;
    let c = &s.client;
    c.append_to_stream(
        "p-1",
        &Default::default(),
        vec![event("E", 0), event("E", 1), event("E", 2)],
    )
    .await
    .unwrap();
    let mut r = c
        .read_stream("p-1", &ReadStreamOptions::default().max_count(2))
        .await
        .unwrap();
    let mut revisions = Vec::new();
    let mut last = None;
    while let Some(e) = r.next_read_event().await.unwrap() {
        match e {
            ReadEvent::Event(e) => revisions.push(e.get_original_event().revision),
            ReadEvent::LastStreamPosition(p) => last = Some(p),
            _ => panic!("unexpected read event"),
        }
    }
    assert_eq!(revisions, vec![0, 1]);
    assert_eq!(last, Some(2));
}

/// Annals's lean client (the gRPC benches' load generator) and the official client agree on
/// every field of events either of them appended, through the server's hand-encoded reads and
/// the lean client's hand decoding; the lean client's appends report revisions, positions and
/// wrong expected versions as the server decides them.
#[tokio::test(flavor = "multi_thread")]
async fn lean_client_agrees_with_the_official_client() {
    use annals_bench::client::{ClientError, ProposedEvent, StreamsClient};
    use annals_core::ExpectedRevision;

    let server = start().await;
    let mut lean = StreamsClient::connect(&server.addr).await.unwrap();
    let proposed = |n: u64, json: bool| ProposedEvent {
        id: uuid::Uuid::new_v4(),
        event_type: format!("Lean{n}"),
        json,
        data: if json {
            format!("{{\"n\":{n}}}").into()
        } else {
            bytes::Bytes::from(vec![0xfe; n as usize])
        },
        metadata: bytes::Bytes::from_static(b"{\"by\":\"lean\"}"),
    };
    let first = lean
        .append(
            "lean-1",
            ExpectedRevision::NoStream,
            vec![proposed(0, true), proposed(3, false)],
        )
        .await
        .unwrap();
    assert_eq!((first.revision, first.position), (1, 2));
    let err = lean
        .append(
            "lean-1",
            ExpectedRevision::Exact(0),
            vec![proposed(1, true)],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::WrongExpectedVersion { current: Some(1) }),
        "{err:?}"
    );
    server
        .client
        .append_to_stream(
            "official-1",
            &AppendToStreamOptions::default(),
            event("Official", 9),
        )
        .await
        .unwrap();
    let next = lean
        .append(
            "lean-1",
            ExpectedRevision::Exact(1),
            vec![proposed(2, true)],
        )
        .await
        .unwrap();
    assert_eq!((next.revision, next.position), (2, 4));

    let mut read = lean.read_all(0, 100).await.unwrap();
    let mut mine = Vec::new();
    while let Some(e) = read.next().await.unwrap() {
        mine.push(e);
    }
    let options = ReadAllOptions::default()
        .forwards()
        .position(StreamPosition::Start);
    let mut official = server.client.read_all(&options).await.unwrap();
    let mut theirs = Vec::new();
    while let Some(e) = official.next().await.unwrap() {
        theirs.push(e.event.unwrap());
    }
    assert_eq!(mine.len(), 4);
    assert_eq!(mine.len(), theirs.len());
    for (m, t) in mine.iter().zip(&theirs) {
        assert_eq!(m.id, t.id);
        assert_eq!(m.stream.as_ref(), t.stream_id().as_bytes());
        assert_eq!(m.revision, t.revision);
        assert_eq!(m.position, t.position.commit);
        assert_eq!(m.event_type.as_str(), t.event_type);
        assert_eq!(
            Some(m.content_type.as_str()),
            t.metadata.get("content-type").map(String::as_str)
        );
        assert_eq!(m.content_type.as_str() == "application/json", t.is_json);
        assert_eq!(
            Some(m.created.as_str()),
            t.metadata.get("created").map(String::as_str)
        );
        assert_eq!(m.data, t.data);
        assert_eq!(m.metadata, t.custom_metadata);
        let ticks: i64 = m.created.as_str().parse().unwrap();
        assert!(ticks > 0, "created {ticks}");
    }
    assert_eq!(mine[1].content_type.as_str(), "application/octet-stream");
    assert_eq!(mine[1].data.len(), 3);
    assert_eq!(mine[2].event_type.as_str(), "Official");

    // Reading from a position includes it, as the benches' paging assumes.
    let mut from_three = lean.read_all(3, 1).await.unwrap();
    assert_eq!(from_three.next().await.unwrap().unwrap().position, 3);
    assert!(from_three.next().await.unwrap().is_none());
}
