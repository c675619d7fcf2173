//! How a SQLite error counts: [`TargetError::Unavailable`] when another connection holds the
//! lock or the file cannot be used for now (the runtime retries), otherwise the fault of a
//! statement, a definition or the bookkeeping.
//!
//! Kept apart from the target so that the one list of transient result codes decides every
//! call's answer alike.

use rusqlite::ErrorCode;

use crate::sql_text::abbreviate;
use crate::target::TargetError;

/// Result codes that say "not now" rather than "never": a busy or locked database, a file that
/// cannot be opened or written for the moment.
fn transient(code: Option<ErrorCode>) -> bool {
    matches!(
        code,
        Some(
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::CannotOpen
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::OutOfMemory
                | ErrorCode::FileLockingProtocolFailed
        )
    )
}

/// A connection-level error (opening the file, setting a pragma).
pub(super) fn unavailable(e: rusqlite::Error) -> TargetError {
    TargetError::Unavailable(e.to_string())
}

/// Errors of a definition's setup or SQL: transient ones are `Unavailable`, the rest `Definition`.
pub(super) fn definition(e: rusqlite::Error) -> TargetError {
    if transient(e.sqlite_error_code()) {
        return unavailable(e);
    }
    TargetError::Definition(e.to_string())
}

/// Errors of bookkeeping statements: transient ones are `Unavailable`, the rest `Other`.
pub(super) fn classify_other(e: rusqlite::Error) -> TargetError {
    if transient(e.sqlite_error_code()) {
        return unavailable(e);
    }
    TargetError::Other(e.to_string())
}

/// Errors of a projection's own statement: transient ones are `Unavailable`, the rest (syntax,
/// constraint, type, missing parameter) are the statement's fault.
pub(super) fn classify_statement(e: rusqlite::Error, index: usize, sql: &str) -> TargetError {
    if transient(e.sqlite_error_code()) {
        return unavailable(e);
    }
    TargetError::Statement {
        index: Some(index),
        message: format!("{e} (in `{}`)", abbreviate(sql)),
    }
}
