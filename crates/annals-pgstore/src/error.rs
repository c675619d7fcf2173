//! The errors of the Postgres store.

use annals_core::DomainError;

#[derive(Debug, thiserror::Error)]
pub enum PgStoreError {
    /// The append broke a rule of the store (expected revision, deleted stream).
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// Postgres cannot be reached or the connection was lost: the operation did not happen (or,
    /// for an append whose commit outcome could not be learned, it is unknown; a retry with the
    /// same event ids is idempotent).
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The database holds a schema newer than this node knows.
    #[error(
        "the database's Annals schema is version {found}, newer than this node knows ({known}); upgrade the node"
    )]
    SchemaTooNew { found: i32, known: i32 },
    /// A row the store cannot make sense of.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// Any other error Postgres returned.
    #[error("postgres: {}", pg_message(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// A job's write was refused: its writer no longer holds the lease in the term it wrote
    /// for (another node took it over).
    #[error("lease {lease} is no longer held with token {token}; the write was refused")]
    Fenced { lease: String, token: i64 },
    /// The request itself is wrong (it changes nothing).
    #[error("{0}")]
    Input(String),
    /// The store was closed.
    #[error("the store is closed")]
    Closed,
}

impl PgStoreError {
    /// Whether the error means the connection is gone (as opposed to a failed statement).
    pub(crate) fn from_pg(e: tokio_postgres::Error) -> Self {
        if e.is_closed() {
            PgStoreError::Unavailable(e.to_string())
        } else {
            PgStoreError::Postgres(e)
        }
    }
}

/// What Postgres said, when it said something (a bare `tokio_postgres::Error` displays only
/// "db error").
pub(crate) fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}
