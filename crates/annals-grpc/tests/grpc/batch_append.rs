//! `Streams.BatchAppend` as the .NET client uses it: every append of a process on one long-lived
//! call, many in flight at once. The server must not make them wait for each other's fsync, and
//! must keep their order. Driven by Annals's lean client (`BatchAppender`) against the router
//! served on a real socket, over an engine on the fault-injecting storage whose syncs the test
//! can hold.

use std::sync::Arc;
use std::time::Duration;

use annals_bench::client::{BatchAppender, ClientError, ProposedEvent, StreamsClient};
use annals_core::ExpectedRevision;
use annals_engine::{Engine, EngineConfig};
use annals_log::FaultStorage;
use annals_server::{Limits, ServerState};

struct Server {
    addr: String,
    storage: FaultStorage,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start() -> Server {
    let storage = FaultStorage::new();
    let (engine, _) = Engine::open(Arc::new(storage.clone()), EngineConfig::default()).unwrap();
    let state = ServerState::new(engine, Limits::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = annals_grpc::router(state.clone());
    tokio::spawn(async move {
        let _ = annals_server::serve(listener, router, None, state, async {
            let _ = stopped.await;
        })
        .await;
    });
    Server {
        addr,
        storage,
        _stop: stop,
    }
}

/// Releases held syncs when dropped.
struct Release(FaultStorage);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.hold_syncs(false);
    }
}

fn event(n: u64) -> ProposedEvent {
    ProposedEvent {
        id: uuid::Uuid::new_v4(),
        event_type: "Counted".to_owned(),
        json: true,
        data: format!("{{\"n\":{n}}}").into(),
        metadata: bytes::Bytes::new(),
    }
}

async fn appender(server: &Server) -> (StreamsClient, BatchAppender) {
    let mut client = StreamsClient::connect(&server.addr).await.unwrap();
    let appender = client.batch_appender().await.unwrap();
    (client, appender)
}

/// While one append waits for a stalled fsync, a later batch on the same call is answered: the
/// call does not process its batches one at a time.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_is_answered_while_an_earlier_one_waits_for_its_fsync() {
    let server = start().await;
    let (_client, appender) = appender(&server).await;
    appender
        .append("warm-up", ExpectedRevision::Any, vec![event(0)])
        .await
        .unwrap();

    server.storage.hold_syncs(true);
    // Released however the test ends, so a failure does not leave the engine stuck in a sync.
    let _release = Release(server.storage.clone());
    let held = {
        let appender = appender.clone();
        tokio::spawn(async move {
            appender
                .append("slow", ExpectedRevision::NoStream, vec![event(1)])
                .await
        })
    };
    // Wait until that append is in the engine, stuck in its sync.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while server.storage.held_syncs() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the append never reached its sync"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A batch the server refuses without the engine is answered while the first one waits.
    let refused = tokio::time::timeout(
        Duration::from_secs(20),
        appender.append("", ExpectedRevision::Any, vec![event(2)]),
    )
    .await
    .expect("a later batch waited for the stalled one");
    assert!(
        matches!(&refused, Err(ClientError::Status(s)) if s.code() == tonic::Code::InvalidArgument),
        "{refused:?}"
    );
    assert!(
        !held.is_finished(),
        "the stalled append was answered before its sync"
    );

    server.storage.hold_syncs(false);
    let appended = held.await.unwrap().unwrap();
    assert_eq!((appended.revision, appended.position), (0, 2));
}

/// Many appends to one stream in flight on one call, each expecting the revision the previous
/// one makes: all succeed, so they reach the engine in the order they were sent; a wrong
/// expected revision is still reported as such.
#[tokio::test(flavor = "multi_thread")]
async fn pipelined_batches_keep_their_order() {
    let server = start().await;
    let (_client, appender) = appender(&server).await;
    const APPENDS: u64 = 300;
    let mut answers = Vec::new();
    for i in 0..APPENDS {
        let expected = match i {
            0 => ExpectedRevision::NoStream,
            _ => ExpectedRevision::Exact(i - 1),
        };
        let appender = appender.clone();
        // Sent in order: each send completes before the next starts, the answers are awaited
        // later, all together.
        let (sent_tx, sent_rx) = tokio::sync::oneshot::channel();
        answers.push(tokio::spawn(async move {
            let answer = appender.append("ordered", expected, vec![event(i)]);
            tokio::pin!(answer);
            // Poll once so the request is queued on the call, then report it sent.
            let first = futures::poll!(answer.as_mut());
            let _ = sent_tx.send(());
            match first {
                std::task::Poll::Ready(r) => r,
                std::task::Poll::Pending => answer.await,
            }
        }));
        sent_rx.await.unwrap();
    }
    for (i, a) in answers.into_iter().enumerate() {
        let appended = a
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("append {i}: {e}"));
        assert_eq!(appended.revision, i as u64);
    }
    let err = appender
        .append("ordered", ExpectedRevision::Exact(3), vec![event(0)])
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::WrongExpectedVersion { current: Some(c) } if c == APPENDS - 1),
        "{err:?}"
    );
}

/// Batches waiting for the engine hold their events in memory: past 64 MiB of them a call stops
/// reading, so a later batch, even one refused without the engine, waits until answers free
/// some.
#[tokio::test(flavor = "multi_thread")]
async fn a_call_stops_reading_past_its_in_flight_bytes() {
    let server = start().await;
    let (_client, appender) = appender(&server).await;
    let big = |n: u64| {
        (0..4)
            .map(|i| ProposedEvent {
                id: uuid::Uuid::new_v4(),
                event_type: format!("Big{n}-{i}"),
                json: false,
                data: vec![7_u8; 1_000_000].into(),
                metadata: bytes::Bytes::new(),
            })
            .collect::<Vec<_>>()
    };
    server.storage.hold_syncs(true);
    let _release = Release(server.storage.clone());
    // 17 batches of 4 MB: more than 64 MiB in flight. An append puts its batch on the call when
    // first polled: poll each once here, in order, so all 17 are on the call before the batch
    // below, however the machine schedules the tasks that then wait for the answers.
    let mut pending: Vec<_> = (0..17)
        .map(|n| {
            let appender = appender.clone();
            let events = big(n);
            Box::pin(async move { appender.append("big", ExpectedRevision::Any, events).await })
        })
        .collect();
    for p in &mut pending {
        assert!(futures::poll!(p.as_mut()).is_pending());
    }
    let held: Vec<_> = pending.into_iter().map(tokio::spawn).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while server.storage.held_syncs() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no append reached its sync"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let refused = {
        let appender = appender.clone();
        tokio::spawn(async move {
            appender
                .append("", ExpectedRevision::Any, vec![event(0)])
                .await
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !refused.is_finished(),
        "a batch was read while more than 64 MiB were appending"
    );
    server.storage.hold_syncs(false);
    let refused = tokio::time::timeout(Duration::from_secs(60), refused)
        .await
        .expect("the call never read again")
        .unwrap();
    assert!(
        matches!(&refused, Err(ClientError::Status(s)) if s.code() == tonic::Code::InvalidArgument),
        "{refused:?}"
    );
    let mut revisions = Vec::new();
    for h in held {
        revisions.push(h.await.unwrap().unwrap().revision);
    }
    revisions.sort_unstable();
    assert_eq!(revisions, (0..17).map(|n| n * 4 + 3).collect::<Vec<_>>());
}
