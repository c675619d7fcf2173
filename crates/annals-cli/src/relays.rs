//! `annals relays …`: a client of a running server's relay routes (HTTP/JSON). It prints the
//! server's JSON answers, one line each.

use std::time::Duration;

use anyhow::Context;

use crate::args::{RelaysArgs, RelaysCommand};
use crate::output::line_now;

/// How long one request may take.
const RELAYS_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) fn run(args: &RelaysArgs) -> anyhow::Result<()> {
    let base = args.server.base_url();
    let client = crate::http::client(RELAYS_REQUEST_TIMEOUT, &args.auth)?;
    let url = |tail: &str| format!("{base}/relays{tail}");
    let answer = match &args.command {
        RelaysCommand::List => client.get(url("")).send(),
        RelaysCommand::Status { name } => client.get(url(&format!("/{name}"))).send(),
        RelaysCommand::Apply { file } => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            client
                .post(url(""))
                .header("content-type", "application/toml")
                .body(text)
                .send()
        }
        RelaysCommand::Remove { name } => client.delete(url(&format!("/{name}"))).send(),
        RelaysCommand::Pause { name } => client.post(url(&format!("/{name}/pause"))).send(),
        RelaysCommand::Resume { name } => client.post(url(&format!("/{name}/resume"))).send(),
        RelaysCommand::Reset { name, position } => client
            .post(url(&format!("/{name}/reset?position={position}")))
            .send(),
        RelaysCommand::Parked { name } => client.get(url(&format!("/{name}/parked"))).send(),
        RelaysCommand::RetryParked { name } => {
            client.post(url(&format!("/{name}/retry-parked"))).send()
        }
    }
    .with_context(|| format!("cannot reach the server at {base}"))?;
    let body = crate::http::answer_text(answer)?;
    line_now(&body)?;
    Ok(())
}
