//! `annals projections …`: a client of a running server's projection routes (HTTP/JSON). It
//! prints the server's JSON answers; `list` and `status` also have a short table form.

use std::time::Duration;

use anyhow::Context;

use crate::args::{ProjectionsArgs, ProjectionsCommand};
use crate::output::line_now;

/// How long one request may take; `wait` adds its own timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(130);

pub(crate) fn run(args: &ProjectionsArgs) -> anyhow::Result<()> {
    let base = args.server.base_url();
    let client = crate::http::client(REQUEST_TIMEOUT, &args.auth)?;
    let url = |tail: &str| format!("{base}/projections{tail}");
    let answer = match &args.command {
        ProjectionsCommand::List => client.get(url("")).send(),
        ProjectionsCommand::Status { name } => client.get(url(&format!("/{name}"))).send(),
        ProjectionsCommand::Failures { name } => {
            client.get(url(&format!("/{name}/failures"))).send()
        }
        ProjectionsCommand::Apply { file } => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            client
                .post(url(""))
                .header("content-type", "application/toml")
                .body(text)
                .send()
        }
        ProjectionsCommand::Pause { name } => client.post(url(&format!("/{name}/pause"))).send(),
        ProjectionsCommand::Resume { name } => client.post(url(&format!("/{name}/resume"))).send(),
        ProjectionsCommand::Reset { name } => client.post(url(&format!("/{name}/reset"))).send(),
        ProjectionsCommand::Rebuild { name } => {
            client.post(url(&format!("/{name}/rebuild"))).send()
        }
        ProjectionsCommand::RetryParked { name } => {
            client.post(url(&format!("/{name}/retry-parked"))).send()
        }
        ProjectionsCommand::Wait {
            name,
            position,
            timeout_ms,
        } => client
            .get(url(&format!(
                "/{name}/wait?position={position}&timeoutMs={timeout_ms}"
            )))
            .send(),
    }
    .with_context(|| format!("cannot reach the server at {base}"))?;
    let body = crate::http::answer_text(answer)?;
    let json: serde_json::Value =
        serde_json::from_str(&body).context("the server's answer is not JSON")?;
    if !args.json {
        match &args.command {
            ProjectionsCommand::List => {
                let rows = json.get("projections").and_then(|p| p.as_array());
                line_now(&table_header())?;
                for row in rows.into_iter().flatten() {
                    line_now(&table_row(row))?;
                }
                return Ok(());
            }
            ProjectionsCommand::Status { .. } => {
                line_now(&table_header())?;
                line_now(&table_row(&json))?;
                return Ok(());
            }
            _ => {}
        }
    }
    line_now(&json.to_string())?;
    Ok(())
}

fn table_header() -> String {
    format!(
        "{:<24} {:<10} {:>4} {:>12} {:>12} {:>9} {:>10} {:>7}  last error",
        "name", "state", "gen", "position", "lag", "lag s", "events/s", "parked"
    )
}

fn table_row(v: &serde_json::Value) -> String {
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_owned();
    let n = |k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
    let f = |k: &str| v.get(k).and_then(|x| x.as_f64()).unwrap_or(0.0);
    let mut state = s("state");
    if let Some(r) = v.get("rebuild").filter(|r| !r.is_null()) {
        let position = r.get("position").and_then(|x| x.as_u64()).unwrap_or(0);
        state = format!(
            "{state} (g{} at {position})",
            r.get("generation").unwrap_or(&0.into())
        );
    }
    format!(
        "{:<24} {:<10} {:>4} {:>12} {:>12} {:>9.3} {:>10.1} {:>7}  {}",
        s("name"),
        state,
        n("generation"),
        n("position"),
        n("lag_events"),
        f("lag_seconds"),
        f("rate_events_per_second"),
        n("parked"),
        s("last_error"),
    )
}
