//! Users as the log keeps them: stream [`USERS_STREAM`] holds one event per change, each a whole
//! [`UserRecord`] (`$UserUpdated`) or a removal (`$UserDeleted`). At open the stream is folded
//! into memory; every later change is appended first and applied to memory once durable.
//!
//! The password hash is stored, never the password, and [`UserRecord`]'s `Debug` leaves the hash
//! out so no log line carries it.

use std::collections::HashMap;

use annals_core::{ExpectedRevision, NewEvent, Revision, StreamName, Timestamp};
use annals_engine::Engine;
use serde::{Deserialize, Serialize};

use crate::AuthError;

/// The stream holding every user change.
pub const USERS_STREAM: &str = "$users";
/// The event type of a created or changed user: the whole record.
pub const USER_UPDATED_EVENT_TYPE: &str = "$UserUpdated";
/// The event type of a deleted user.
pub const USER_DELETED_EVENT_TYPE: &str = "$UserDeleted";
/// The longest login name, in bytes.
pub const LOGIN_BYTES_MAX: usize = 128;
/// The most groups one user may be in.
pub const USER_GROUPS_MAX: usize = 64;
/// Events read from the users stream per page at open.
const FOLD_PAGE_EVENTS: usize = 512;

/// One user.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub login: String,
    pub full_name: String,
    pub groups: Vec<String>,
    pub disabled: bool,
    /// Argon2id, PHC form.
    pub password_hash: String,
    /// When the record last changed, nanoseconds since the Unix epoch.
    pub updated_nanos: i64,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("login", &self.login)
            .field("full_name", &self.full_name)
            .field("groups", &self.groups)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Deleted {
    login: String,
}

/// What a login name may be: 1 to [`LOGIN_BYTES_MAX`] bytes, no control characters, no `:`
/// (HTTP basic credentials end the login at the first colon), not starting with `$` (group and
/// role names do).
pub fn check_login(login: &str) -> Result<(), AuthError> {
    if login.is_empty() {
        return Err(AuthError::Invalid(
            "a login name cannot be empty".to_owned(),
        ));
    }
    if login.len() > LOGIN_BYTES_MAX {
        return Err(AuthError::Invalid(format!(
            "a login name is at most {LOGIN_BYTES_MAX} bytes"
        )));
    }
    if login.starts_with('$') || login.contains(':') || login.chars().any(char::is_control) {
        return Err(AuthError::Invalid(format!(
            "login name {login:?} may not start with '$' or hold ':' or control characters"
        )));
    }
    Ok(())
}

/// Groups: at most [`USER_GROUPS_MAX`], each non-empty, without control characters.
pub fn check_groups(groups: &[String]) -> Result<(), AuthError> {
    if groups.len() > USER_GROUPS_MAX {
        return Err(AuthError::Invalid(format!(
            "a user is in at most {USER_GROUPS_MAX} groups"
        )));
    }
    for g in groups {
        if g.is_empty() || g.len() > LOGIN_BYTES_MAX || g.chars().any(char::is_control) {
            return Err(AuthError::Invalid(format!("bad group name {g:?}")));
        }
    }
    Ok(())
}

pub(crate) fn users_stream() -> StreamName {
    // A constant, valid name.
    StreamName::new(USERS_STREAM).unwrap_or_else(|_| unreachable!("valid stream name"))
}

/// One change of the users stream.
pub(crate) enum UserChange {
    /// A user created or changed: its whole record.
    Put(UserRecord),
    /// A user deleted.
    Remove(String),
}

/// The change one event of the users stream makes; `None` for one that is not a user change
/// or does not parse (logged and skipped: a bad record must not lock everyone out).
pub(crate) fn change_of(e: &annals_core::EventRecord) -> Option<UserChange> {
    match e.event_type.as_str() {
        USER_UPDATED_EVENT_TYPE => match serde_json::from_slice::<UserRecord>(&e.data) {
            Ok(u) if check_login(&u.login).is_ok() => Some(UserChange::Put(u)),
            _ => {
                tracing::warn!(
                    revision = e.revision.0,
                    "skipping a user record that does not parse"
                );
                None
            }
        },
        USER_DELETED_EVENT_TYPE => match serde_json::from_slice::<Deleted>(&e.data) {
            Ok(d) => Some(UserChange::Remove(d.login)),
            Err(_) => {
                tracing::warn!(
                    revision = e.revision.0,
                    "skipping a user removal that does not parse"
                );
                None
            }
        },
        _ => None,
    }
}

/// Reads every user change and returns the users as they stand, and the stream's last revision.
pub(crate) fn fold(
    engine: &Engine,
) -> Result<(HashMap<String, UserRecord>, Option<u64>), AuthError> {
    let stream = users_stream();
    let mut users = HashMap::new();
    let mut last = None;
    let mut from = Revision(0);
    loop {
        let page = match engine.read_stream(
            &stream,
            from,
            annals_core::Direction::Forwards,
            FOLD_PAGE_EVENTS,
        ) {
            Ok(page) => page,
            Err(annals_engine::EngineError::Domain(annals_core::DomainError::StreamNotFound {
                ..
            })) => break,
            Err(e) => return Err(e.into()),
        };
        let Some(tail) = page.last() else { break };
        from = Revision(tail.revision.0 + 1);
        for e in &page {
            last = Some(e.revision.0);
            match change_of(e) {
                Some(UserChange::Put(u)) => {
                    users.insert(u.login.clone(), u);
                }
                Some(UserChange::Remove(login)) => {
                    users.remove(&login);
                }
                None => {}
            }
        }
        if page.len() < FOLD_PAGE_EVENTS {
            break;
        }
    }
    Ok((users, last))
}

/// Appends a user's new record, expecting the stream at `expected` (`None`: no stream yet).
pub(crate) async fn write_record(
    engine: &Engine,
    expected: Option<u64>,
    record: &UserRecord,
) -> Result<u64, AuthError> {
    let data = serde_json::to_vec(record).map_err(|e| AuthError::Internal(e.to_string()))?;
    append(engine, expected, USER_UPDATED_EVENT_TYPE, data).await
}

/// Appends a user's removal.
pub(crate) async fn write_deleted(
    engine: &Engine,
    expected: Option<u64>,
    login: &str,
) -> Result<u64, AuthError> {
    let data = serde_json::to_vec(&Deleted {
        login: login.to_owned(),
    })
    .map_err(|e| AuthError::Internal(e.to_string()))?;
    append(engine, expected, USER_DELETED_EVENT_TYPE, data).await
}

async fn append(
    engine: &Engine,
    expected: Option<u64>,
    event_type: &str,
    data: Vec<u8>,
) -> Result<u64, AuthError> {
    let event = NewEvent::json(event_type, data)?;
    let expected = match expected {
        None => ExpectedRevision::NoStream,
        Some(r) => ExpectedRevision::Exact(r),
    };
    let result = engine
        .append_async(&users_stream(), expected, vec![event])
        .await?;
    Ok(result.next_revision.0)
}

/// Nanoseconds since the Unix epoch, now.
pub(crate) fn now_nanos() -> i64 {
    Timestamp::now().0
}
