//! A subscriber that reads slower than events arrive (here: not at all) holds bounded memory
//! and is ended: once its queue is full and stays full past the blocked limit, the server's
//! task stops, and the response, after what was queued, ends with ABORTED "Consumer too slow".

use std::time::{Duration, Instant};

use annals_core::{ExpectedRevision, NewEvent, StreamName};
use annals_engine::{Engine, EngineConfig};
use annals_proto::streams::read_req::options::{
    self as opts, AllOptions, SubscriptionOptions, UuidOption, all_options, uuid_option,
};
use annals_proto::streams::{ReadReq, read_req};
use annals_server::{Limits, ServerState};
use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use prost::Message;
use tower::ServiceExt;

fn subscribe_all_request() -> Vec<u8> {
    let req = ReadReq {
        options: Some(read_req::Options {
            stream_option: Some(opts::StreamOption::All(AllOptions {
                all_option: Some(all_options::AllOption::Start(
                    annals_proto::shared::Empty {},
                )),
            })),
            read_direction: opts::ReadDirection::Forwards as i32,
            resolve_links: false,
            count_option: Some(opts::CountOption::Subscription(SubscriptionOptions {})),
            filter_option: Some(opts::FilterOption::NoFilter(annals_proto::shared::Empty {})),
            uuid_option: Some(UuidOption {
                content: Some(uuid_option::Content::String(annals_proto::shared::Empty {})),
            }),
            control_option: None,
        }),
    };
    let msg = req.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&u32::try_from(msg.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(&msg);
    framed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_takes_nothing_is_ended_with_consumer_too_slow() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, _) = Engine::open_dir(dir.path(), EngineConfig::default()).unwrap();
    let limits = Limits {
        subscriber_blocked_max: Duration::from_millis(300),
        ..Limits::default()
    };
    let state = ServerState::new(engine.clone(), limits);
    let router = annals_grpc::router(state.clone());
    let req = Request::post("http://localhost/event_store.client.streams.Streams/Read")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Body::from(subscribe_all_request()))
        .unwrap();
    let resp = router.oneshot(req).await.unwrap();
    assert_eq!(state.metrics.subscriptions_active(), 1);

    // Far more than the queue holds, appended while nobody reads the response.
    let stream = StreamName::new("busy").unwrap();
    for batch in 0..20 {
        let events = (0..500)
            .map(|i| NewEvent::json("E", format!("{{\"n\":{}}}", batch * 500 + i)).unwrap())
            .collect();
        engine
            .append_async(&stream, ExpectedRevision::Any, events)
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while state.metrics.subscriptions_active() != 0 {
        assert!(
            Instant::now() < deadline,
            "the blocked subscription was never ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // What was queued is still delivered, then the status says why it ended.
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let body = collected.to_bytes();
    assert!(!body.is_empty(), "the queued pages are delivered first");
    assert!(body.len() < 8 * 1024 * 1024, "held {} bytes", body.len());
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.to_str().unwrap()),
        Some("10"),
        "{trailers:?}"
    );
    let message = trailers.get("grpc-message").unwrap().to_str().unwrap();
    assert!(
        message.contains("Consumer%20too%20slow") || message.contains("Consumer too slow"),
        "{message}"
    );
    engine.close();
}
