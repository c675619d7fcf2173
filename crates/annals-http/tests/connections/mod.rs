//! Slow and silent clients: connections that send no request are closed after the
//! first-request timeout while other clients are served; an idle HTTP/1.1 connection is closed
//! after the idle timeout; an HTTP/2 connection whose client answers the server's pings is kept
//! however long it waits.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::Server;

fn short_limits() -> annals_server::Limits {
    annals_server::Limits {
        first_request_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(1),
        ping_interval: Duration::from_millis(200),
        ..annals_server::Limits::default()
    }
}

/// The value of counter `annals_{name}` in the server's metrics, read over `client`.
async fn counter(client: &reqwest::Client, base: &str, name: &str) -> u64 {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("annals_{name}_total ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .expect("the counter is in the metrics")
        .trim()
        .parse()
        .unwrap()
}

/// Waits until the peer closes `conn`, at most `within`.
async fn closed_within(conn: &mut tokio::net::TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_while_others_are_served() {
    let s = Server::start_with(short_limits()).await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let health = s.client.get(format!("{}/health", s.base)).send().await;
    assert_eq!(health.unwrap().status(), 200);
    for conn in &mut silent {
        assert!(
            closed_within(conn, Duration::from_secs(20)).await,
            "a silent connection was kept"
        );
    }
    let fresh = reqwest::Client::new();
    assert!(counter(&fresh, &s.base, "connections_closed_silent").await >= 50);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http1_connections_are_closed_and_pinged_http2_ones_kept() {
    let s = Server::start_with(short_limits()).await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let accepted = counter(&h2, &s.base, "connections_accepted").await;

    // HTTP/1.1: one request, answered; then nothing: closed after the idle timeout.
    let mut http1 = tokio::net::TcpStream::connect(&addr).await.unwrap();
    http1
        .write_all(b"GET /health HTTP/1.1\r\nHost: annals\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    http1.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    assert!(closed_within(&mut http1, Duration::from_secs(20)).await);

    // The HTTP/2 client has been quiet for well over the idle timeout; the server's pings kept
    // its connection: this request goes over it, no new connection is accepted.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let now_accepted = counter(&h2, &s.base, "connections_accepted").await;
    assert_eq!(
        now_accepted,
        accepted + 1,
        "only the HTTP/1.1 connection was new"
    );
    assert!(counter(&h2, &s.base, "connections_closed_idle").await >= 1);
    s.stop().await;
}
