//! Test harness: a server on a real socket over an engine in a temporary directory (with
//! `ANNALS_TEST_STORE`, the replica of a store in PostgreSQL: the same tests on the other
//! store), and a small server-sent-events reader.

use std::time::Duration;

use annals_engine::Engine;
use annals_server::{Limits, ServerState};
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a test waits for any one answer or event.
const WAIT: Duration = Duration::from_secs(20);

pub(crate) struct Server {
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    pub(crate) engine: Engine,
    /// The server's persistent-subscription groups, as `annals serve` runs them.
    pub(crate) persistent: std::sync::Arc<annals_persistent::Subscriptions>,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    pub(crate) async fn start() -> Self {
        Self::start_with(Limits::default()).await
    }

    pub(crate) async fn start_with(limits: Limits) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let engine = annals_testkit::store::open_test_store(dir.path()).await;
        Self::start_on(engine, limits, Some(dir)).await
    }

    /// A server over `engine` (a store on fault-injecting storage, say).
    pub(crate) async fn start_on(
        engine: Engine,
        limits: Limits,
        dir: Option<tempfile::TempDir>,
    ) -> Self {
        let persistent = annals_persistent::Subscriptions::open(engine.clone())
            .await
            .unwrap();
        let state = ServerState::new(engine.clone(), limits)
            .with_persistent(std::sync::Arc::clone(&persistent));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let router = annals_http::router(state.clone(), None);
        let task = tokio::spawn(async move {
            annals_server::serve(listener, router, None, state, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Self {
            base: format!("http://{addr}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            stop: Some(stop),
            task: Some(task),
            engine,
            persistent,
            _dir: dir,
        }
    }

    /// Shuts the server down and waits for it to finish.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("server stops")
                .unwrap();
        }
        self.persistent.shutdown().await;
        self.engine.close();
    }

    pub(crate) async fn append(
        &self,
        stream: &str,
        expected: Option<&str>,
        body: Value,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .post(format!("{}/streams/{stream}", self.base))
            .json(&body);
        if let Some(e) = expected {
            req = req.header("expected-revision", e);
        }
        let resp = tokio::time::timeout(WAIT, req.send())
            .await
            .unwrap()
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        let resp =
            tokio::time::timeout(WAIT, self.client.get(format!("{}{path}", self.base)).send())
                .await
                .unwrap()
                .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn health(&self) -> u64 {
        let (status, body) = self.get("/health").await;
        assert_eq!(status, 200);
        assert_eq!(body["status"], "ok");
        body["head"].as_u64().unwrap()
    }

    pub(crate) async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Opens a live feed; `last_event_id` is sent as the `Last-Event-ID` header.
    pub(crate) async fn live(&self, path: &str, last_event_id: Option<u64>) -> SseReader {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        SseReader {
            body: Box::pin(resp.bytes_stream()),
            buf: String::new(),
        }
    }
}

/// One server-sent event.
#[derive(Debug, Default)]
pub(crate) struct SseEvent {
    pub(crate) id: Option<String>,
    pub(crate) event: Option<String>,
    pub(crate) data: String,
}

type Body = std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

pub(crate) struct SseReader {
    body: Body,
    buf: String,
}

impl SseReader {
    /// The next event (comments skipped); `None` when the feed ended.
    pub(crate) async fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut event = SseEvent::default();
                let mut any = false;
                for line in block.lines() {
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match field {
                        "" => {}
                        "id" => event.id = Some(value.to_owned()),
                        "event" => event.event = Some(value.to_owned()),
                        "data" => {
                            if any {
                                event.data.push('\n');
                            }
                            event.data.push_str(value);
                            any = true;
                        }
                        _ => {}
                    }
                }
                if event.id.is_some() || any {
                    return Some(event);
                }
                continue;
            }
            match tokio::time::timeout(WAIT, self.body.next())
                .await
                .expect("an event in time")
            {
                Some(Ok(chunk)) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                Some(Err(_)) | None => return None,
            }
        }
    }
}
