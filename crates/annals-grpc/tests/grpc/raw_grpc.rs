//! Raw gRPC requests against the router (no client library): unknown services and methods,
//! persistent-subscription List with and without the subsystem, and gossip.

use annals_engine::{Engine, EngineConfig};
use annals_persistent::Subscriptions;
use annals_server::{Limits, ServerState};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;

fn state(dir: &tempfile::TempDir) -> ServerState {
    let (engine, _) = Engine::open_dir(dir.path(), EngineConfig::default()).unwrap();
    ServerState::new(engine, Limits::default())
}

async fn state_with_persistent(dir: &tempfile::TempDir) -> ServerState {
    let state = state(dir);
    let persistent = Subscriptions::open(state.engine.clone()).await.unwrap();
    state.with_persistent(persistent)
}

/// A unary gRPC call with an empty request message; returns the status code, the
/// `grpc-status` header if any, and the body bytes.
async fn call(router: axum::Router, uri: &str) -> (StatusCode, Option<String>, Vec<u8>) {
    let req = Request::post(uri)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Body::from(vec![0u8, 0, 0, 0, 0]))
        .unwrap();
    let resp = router.oneshot(req).await.unwrap();
    let status = resp.status();
    let grpc_status = resp
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, grpc_status, body.to_vec())
}

#[tokio::test]
async fn unknown_service_and_method_are_unimplemented() {
    let dir = tempfile::tempdir().unwrap();
    let router = annals_grpc::router(state(&dir));
    let (status, grpc, _) = call(router.clone(), "http://localhost/no.such.Service/Call").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(grpc.as_deref(), Some("12"));
    let (_, grpc, _) = call(
        router.clone(),
        "http://localhost/event_store.client.persistent_subscriptions.PersistentSubscriptions/NoSuchMethod",
    )
    .await;
    assert_eq!(grpc.as_deref(), Some("12"));
    let (_, grpc, _) = call(
        router,
        "http://localhost/event_store.client.projections.Projections/Create",
    )
    .await;
    assert_eq!(grpc.as_deref(), Some("12"));
}

#[tokio::test]
async fn persistent_list_is_empty_and_gossip_names_the_host() {
    let dir = tempfile::tempdir().unwrap();
    // Without the subsystem, the service says so instead of answering as if there were no groups.
    let (_, grpc, _) = call(
        annals_grpc::router(state(&dir)),
        "http://localhost/event_store.client.persistent_subscriptions.PersistentSubscriptions/List",
    )
    .await;
    assert_eq!(grpc.as_deref(), Some("14"), "unavailable");

    let dir2 = tempfile::tempdir().unwrap();
    let router = annals_grpc::router(state_with_persistent(&dir2).await);
    let (status, grpc, body) = call(
        router.clone(),
        "http://localhost/event_store.client.persistent_subscriptions.PersistentSubscriptions/List",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        grpc, None,
        "a successful call carries its status in trailers"
    );
    // One uncompressed frame holding an empty ListResp.
    assert_eq!(body, vec![0u8, 0, 0, 0, 0]);

    let (_, _, body) = call(
        router,
        "http://db.example:4321/event_store.client.gossip.Gossip/Read",
    )
    .await;
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("db.example"), "{body:?}");
    // EndPoint.port = 4321 as a varint after tag 0x10.
    assert!(body.windows(3).any(|w| w == [0x10, 0xE1, 0x21]), "{body:?}");
}

#[tokio::test]
async fn merges_with_a_router_without_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let other = axum::Router::new().route("/health", axum::routing::get(|| async { "ok" }));
    let router = annals_grpc::router(state(&dir)).merge(other);
    let resp = router
        .clone()
        .oneshot(Request::get("/health").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = router
        .clone()
        .oneshot(Request::get("/nothing").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let (_, grpc, _) = call(router, "http://localhost/no.such.Service/Call").await;
    assert_eq!(grpc.as_deref(), Some("12"));
}
