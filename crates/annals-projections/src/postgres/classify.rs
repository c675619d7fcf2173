//! How a PostgreSQL error counts: [`TargetError::Unavailable`] (reconnect and retry) or the
//! fault of a statement, a definition or the bookkeeping, with the server's message.
//!
//! The runtime retries `Unavailable` without end and pins any other error on an event, so this
//! split decides whether a server restart is waited out or blamed on the batch; it lives apart
//! from the target so the rule (see the `postgres` module doc) reads in one place.

use std::error::Error as StdError;

use postgres::error::SqlState;

use crate::sql_text::abbreviate;
use crate::target::TargetError;

/// How an error from the server or the connection counts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Class {
    /// Connection lost, server down or starting, or the transaction must be retried.
    Unavailable,
    /// The statement or its values.
    Fault,
}

/// Whether `e` is the connection's or the server's state (retry) or the work's fault.
fn classify(e: &postgres::Error) -> Class {
    if e.is_closed() {
        return Class::Unavailable;
    }
    let Some(code) = e.code() else {
        // No SQLSTATE: I/O, a protocol error, a connect failure. Never a statement's fault: our
        // values are converted before they reach the client, so its ToSql never fails.
        return Class::Unavailable;
    };
    let transient = code.code().starts_with("08")
        || [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::IDLE_SESSION_TIMEOUT,
        ]
        .contains(code);
    if transient {
        Class::Unavailable
    } else {
        Class::Fault
    }
}

/// The server's message with its SQLSTATE, detail and hint; or the client's.
pub(super) fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} ({})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                s.push_str(": ");
                s.push_str(detail);
            }
            if let Some(hint) = db.hint() {
                s.push_str(" (hint: ");
                s.push_str(hint);
                s.push(')');
            }
            s
        }
        None => match e.source() {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

/// Bookkeeping and transaction-control errors.
pub(super) fn other(e: postgres::Error) -> TargetError {
    match classify(&e) {
        Class::Unavailable => TargetError::Unavailable(describe(&e)),
        Class::Fault => TargetError::Other(describe(&e)),
    }
}

/// Errors of a definition's setup or SQL: what failed (`what`) and the server's message.
pub(super) fn definition(e: &postgres::Error, what: impl FnOnce() -> String) -> TargetError {
    match classify(e) {
        Class::Unavailable => TargetError::Unavailable(describe(e)),
        Class::Fault => TargetError::Definition(format!("{}: {}", what(), describe(e))),
    }
}

/// Errors of a projection's own statement number `index`, naming its SQL.
pub(super) fn statement_error(e: &postgres::Error, index: usize, sql: &str) -> TargetError {
    match classify(e) {
        Class::Unavailable => TargetError::Unavailable(describe(e)),
        Class::Fault => TargetError::Statement {
            index: Some(index),
            message: format!("{} (in `{}`)", describe(e), abbreviate(sql)),
        },
    }
}
