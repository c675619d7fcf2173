//! `annals users …`: a client of a running server's `/users` routes (HTTP/JSON), for a server
//! started with `--auth`. It prints the server's JSON answers, one line each.

use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use crate::args::{UsersArgs, UsersCommand};
use crate::output::line_now;

/// How long one request may take (a password hash takes tens of milliseconds).
const USERS_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) fn run(args: &UsersArgs) -> anyhow::Result<()> {
    let base = args.server.base_url();
    let client = crate::http::client(USERS_REQUEST_TIMEOUT, &args.auth)?;
    let url = |tail: &str| format!("{base}/users{tail}");
    let answer = match &args.command {
        UsersCommand::List => client.get(url("")).send(),
        UsersCommand::Show { login } => client.get(url(&format!("/{login}"))).send(),
        UsersCommand::Create {
            login,
            full_name,
            groups,
            new_password,
        } => client
            .post(url(""))
            .json(&json!({
                "login": login, "fullName": full_name, "groups": groups, "password": new_password
            }))
            .send(),
        UsersCommand::Update {
            login,
            full_name,
            groups,
            new_password,
        } => client
            .put(url(&format!("/{login}")))
            .json(&json!({ "fullName": full_name, "groups": groups, "password": new_password }))
            .send(),
        UsersCommand::Delete { login } => client.delete(url(&format!("/{login}"))).send(),
        UsersCommand::Enable { login } => client.post(url(&format!("/{login}/enable"))).send(),
        UsersCommand::Disable { login } => client.post(url(&format!("/{login}/disable"))).send(),
        UsersCommand::ChangePassword {
            login,
            current_password,
            new_password,
        } => client
            .post(url(&format!("/{login}/password")))
            .json(&json!({ "currentPassword": current_password, "newPassword": new_password }))
            .send(),
        UsersCommand::ResetPassword {
            login,
            new_password,
        } => client
            .post(url(&format!("/{login}/reset-password")))
            .json(&json!({ "newPassword": new_password }))
            .send(),
    }
    .with_context(|| format!("cannot reach the server at {base}"))?;
    let body = crate::http::answer_text(answer)?;
    line_now(&body)?;
    Ok(())
}
