//! The effects `annals serve` performs for live projections: HTTP calls (webhooks). Messages to
//! a broker need the relay, which this server does not run yet, so they are refused with a
//! clear error (the runtime records it and goes on).

use std::time::Duration;

use annals_projections::{Effect, EffectSink};

/// Longest one webhook call may take.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// Delivers [`Effect::Http`] with a blocking HTTP client (effects run on projection worker
/// threads, never on the async runtime).
#[derive(Debug)]
pub(crate) struct WebhookSink {
    client: reqwest::blocking::Client,
}

impl WebhookSink {
    pub(crate) fn new() -> anyhow::Result<Self> {
        Ok(Self {
            client: reqwest::blocking::Client::builder()
                .timeout(WEBHOOK_TIMEOUT)
                .build()?,
        })
    }
}

impl EffectSink for WebhookSink {
    fn deliver(&self, projection: &str, effect: &Effect) -> Result<(), String> {
        match effect {
            Effect::Http {
                method,
                url,
                content_type,
                body,
            } => {
                let method = reqwest::Method::from_bytes(method.as_bytes())
                    .map_err(|e| format!("bad method {method:?}: {e}"))?;
                let answer = self
                    .client
                    .request(method, url)
                    .header("content-type", content_type)
                    .header("x-annals-projection", projection)
                    .body(body.clone())
                    .send()
                    .map_err(|e| format!("{url}: {e}"))?;
                if answer.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("{url}: answered {}", answer.status()))
                }
            }
            Effect::Message { subject, .. } => Err(format!(
                "message to {subject:?}: no message broker is configured on this server"
            )),
        }
    }
}
