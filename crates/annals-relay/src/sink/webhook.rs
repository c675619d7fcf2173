//! The webhook sink: one POST of the event as JSON (the HTTP API's event shape) per event, the
//! event id in `Idempotency-Key`. A 2xx answer counts; 5xx, 408 and 429 are tried again; any
//! other answer makes the event poison; no answer in time means the endpoint is down.

use std::sync::Arc;

use annals_core::{EventJson, EventRecord};
use futures::FutureExt as _;
use futures::future::BoxFuture;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::{
    HEADER_EVENT_ID, HEADER_EVENT_TYPE, HEADER_POSITION, HEADER_REVISION, HEADER_STREAM, Sink,
    SinkError,
};
use crate::config::WebhookSink;
use crate::redact;

/// Most idle connections kept per host: enough for a relay's concurrency.
const IDLE_CONNECTIONS_PER_HOST: usize = 1_024;

pub(crate) struct WebhookEndpoint {
    url: String,
    client: reqwest::Client,
}

impl WebhookEndpoint {
    pub(crate) fn new(config: WebhookSink) -> Result<Self, String> {
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("`{name}` is not a header name"))?;
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| format!("the value of header `{name}` is not valid"))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .pool_max_idle_per_host(IDLE_CONNECTIONS_PER_HOST)
            .default_headers(headers)
            .build()
            .map_err(|e| format!("an HTTP client: {e}"))?;
        Ok(Self {
            url: config.url,
            client,
        })
    }
}

impl Sink for WebhookEndpoint {
    fn prepare(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        // A webhook has no target to check before the first call.
        async { Ok(()) }.boxed()
    }

    fn send(&self, event: Arc<EventRecord>) -> BoxFuture<'static, Result<(), SinkError>> {
        let client = self.client.clone();
        let url = self.url.clone();
        let endpoint = self.endpoint();
        async move {
            let body = serde_json::to_vec(&EventJson::from_record(&event))
                .map_err(|e| SinkError::Poison(format!("the event as JSON: {e}")))?;
            let id = event.id.to_string();
            let answer = client
                .post(url)
                .header("content-type", "application/json")
                .header("idempotency-key", &id)
                .header(HEADER_STREAM, event.stream.as_str())
                .header(HEADER_REVISION, event.revision.0.to_string())
                .header(HEADER_POSITION, event.position.0.to_string())
                .header(HEADER_EVENT_TYPE, event.event_type.as_str())
                .header(HEADER_EVENT_ID, &id)
                .body(body)
                .send()
                .await
                .map_err(|e| SinkError::Down(format!("{endpoint}: {}", without_url(&e))))?;
            let status = answer.status();
            if status.is_success() {
                return Ok(());
            }
            let text = format!("{endpoint} answered {status}");
            if status.is_server_error()
                || status == StatusCode::REQUEST_TIMEOUT
                || status == StatusCode::TOO_MANY_REQUESTS
            {
                Err(SinkError::Refused(text))
            } else {
                Err(SinkError::Poison(text))
            }
        }
        .boxed()
    }

    fn endpoint(&self) -> String {
        redact::url(&self.url)
    }
}

/// A request error's text without the URL it names (which may hold credentials).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    match std::error::Error::source(e) {
        Some(source) => format!("{kind}: {source}"),
        None => kind.to_owned(),
    }
}
