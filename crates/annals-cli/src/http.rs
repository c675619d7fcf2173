//! The CLI's side of the server's HTTP API: a blocking client for a command (with the caller's
//! credentials for a server running with `--auth`), and a server's answer read as text, an
//! error answer turned into the server's own message.

use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine as _;

use crate::args::ClientAuth;

/// A blocking HTTP client whose requests may take `timeout` each, sending `auth`'s credentials
/// (HTTP basic) with every request and trusting its CA file.
pub(crate) fn client(
    timeout: Duration,
    auth: &ClientAuth,
) -> anyhow::Result<reqwest::blocking::Client> {
    let mut builder = reqwest::blocking::Client::builder().timeout(timeout);
    if let Some(user) = &auth.user {
        let password = auth.password.as_deref().unwrap_or_default();
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Basic {token}"))
            .context("the credentials do not fit in a header")?;
        value.set_sensitive(true);
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::AUTHORIZATION, value);
        builder = builder.default_headers(headers);
    }
    if let Some(file) = &auth.ca_file {
        let pem = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .with_context(|| format!("{} is not a PEM certificate", file.display()))?;
        builder = builder.add_root_certificate(cert);
    }
    builder.build().context("cannot build an HTTP client")
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
