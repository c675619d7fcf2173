//! `/users…`: user management over HTTP, the same calls as the gRPC `Users` service and
//! `annals users …`. Who may do what is `annals_auth::Auth`'s to decide: admins manage users,
//! a user reads its own details and changes its own password.
//!
//! | Route | What |
//! |---|---|
//! | `GET /users` | every user's details |
//! | `POST /users` | create: `{"login", "password", "fullName", "groups"}` |
//! | `GET /users/{login}` | one user's details |
//! | `PUT /users/{login}` | update: `{"fullName", "groups", "password"?}` |
//! | `DELETE /users/{login}` | delete |
//! | `POST /users/{login}/enable`, `/disable` | enable, disable |
//! | `POST /users/{login}/password` | change: `{"currentPassword", "newPassword"}` |
//! | `POST /users/{login}/reset-password` | reset: `{"newPassword"}` |

use std::sync::Arc;

use annals_server::{Auth, AuthError};
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::HttpState;
use crate::error::ApiError;
use crate::error::ApiPath;

type Result<T> = std::result::Result<T, ApiError>;

fn auth(state: &HttpState) -> Result<Arc<Auth>> {
    state.server.auth.clone().ok_or(ApiError::AuthDisabled)
}

fn details_json(d: &annals_server::UserDetails) -> Value {
    json!({
        "login": d.login,
        "fullName": d.full_name,
        "groups": d.groups,
        "disabled": d.disabled,
        "updatedNanos": d.updated_nanos,
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewUser {
    login: String,
    password: String,
    #[serde(default)]
    full_name: String,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserUpdate {
    #[serde(default)]
    full_name: String,
    #[serde(default)]
    groups: Vec<String>,
    password: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PasswordChange {
    current_password: String,
    new_password: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PasswordReset {
    new_password: String,
}

fn body<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| ApiError::BadRequest(format!("bad body: {e}")))
}

pub async fn list(
    State(state): State<HttpState>,
    extensions: axum::http::Extensions,
) -> Result<axum::Json<Value>> {
    let who = state.server.principal(&extensions);
    let users = auth(&state)?.details(&who, None)?;
    Ok(axum::Json(json!({
        "users": users.iter().map(details_json).collect::<Vec<_>>()
    })))
}

pub async fn create(
    State(state): State<HttpState>,
    extensions: axum::http::Extensions,
    text: String,
) -> Result<axum::Json<Value>> {
    let who = state.server.principal(&extensions);
    let auth = auth(&state)?;
    let new: NewUser = body(&text)?;
    auth.create_user(&who, &new.login, &new.full_name, new.groups, new.password)
        .await?;
    Ok(axum::Json(json!({ "created": new.login })))
}

pub async fn details(
    State(state): State<HttpState>,
    extensions: axum::http::Extensions,
    ApiPath(login): ApiPath<String>,
) -> Result<axum::Json<Value>> {
    let who = state.server.principal(&extensions);
    let users = auth(&state)?.details(&who, Some(&login))?;
    let user = users.first().ok_or(AuthError::UserNotFound(login))?;
    Ok(axum::Json(details_json(user)))
}

pub async fn update(
    State(state): State<HttpState>,
    extensions: axum::http::Extensions,
    ApiPath(login): ApiPath<String>,
    text: String,
) -> Result<axum::Json<Value>> {
    let who = state.server.principal(&extensions);
    let auth = auth(&state)?;
    let change: UserUpdate = body(&text)?;
    auth.update_user(
        &who,
        &login,
        &change.full_name,
        change.groups,
        change.password,
    )
    .await?;
    Ok(axum::Json(json!({ "updated": login })))
}

pub async fn delete(
    State(state): State<HttpState>,
    extensions: axum::http::Extensions,
    ApiPath(login): ApiPath<String>,
) -> Result<axum::Json<Value>> {
    let who = state.server.principal(&extensions);
    auth(&state)?.delete_user(&who, &login).await?;
    Ok(axum::Json(json!({ "deleted": login })))
}

pub async fn command(
    State(state): State<HttpState>,
    extensions: axum::http::Extensions,
    ApiPath((login, command)): ApiPath<(String, String)>,
    text: String,
) -> Result<axum::Json<Value>> {
    let who = state.server.principal(&extensions);
    let auth = auth(&state)?;
    match command.as_str() {
        "enable" | "disable" => {
            auth.set_enabled(&who, &login, command == "enable").await?;
        }
        "password" => {
            let change: PasswordChange = body(&text)?;
            auth.change_password(&who, &login, change.current_password, change.new_password)
                .await?;
        }
        "reset-password" => {
            let reset: PasswordReset = body(&text)?;
            auth.reset_password(&who, &login, reset.new_password)
                .await?;
        }
        other => {
            return Err(ApiError::BadRequest(format!(
                "unknown user command {other:?}: enable, disable, password or reset-password"
            )));
        }
    }
    Ok(axum::Json(json!({ "user": login, "done": command })))
}
