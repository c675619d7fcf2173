//! The CLI's side of the server's HTTP API: a blocking client for a command, and a server's
//! answer read as text, an error answer turned into the server's own message.

use std::time::Duration;

use anyhow::{Context, bail};

/// A blocking HTTP client whose requests may take `timeout` each.
pub(crate) fn client(timeout: Duration) -> anyhow::Result<reqwest::blocking::Client> {
    reqwest::blocking::Client::builder()
        .timeout(timeout)
        .build()
        .context("cannot build an HTTP client")
}

/// The body of a successful answer; for an error answer, an error with its status and the
/// `message` of its JSON body (the whole body when it has none).
pub(crate) fn answer_text(answer: reqwest::blocking::Response) -> anyhow::Result<String> {
    let status = answer.status();
    let body = answer.text().context("cannot read the server's answer")?;
    if !status.is_success() {
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or(body);
        bail!("{status}: {message}");
    }
    Ok(body)
}
