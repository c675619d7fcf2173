//! Errors of the index layer.

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    #[error("index store: {0}")]
    Store(#[from] redb::Error),
    #[error("index is inconsistent: {0}")]
    Inconsistent(String),
    /// The file was written by another index format (format 1 numbered no category or event-type
    /// revisions); the engine rebuilds it from the log.
    #[error("index file has format {found}, this version reads format {current}")]
    Format { found: u64, current: u64 },
}

macro_rules! from_redb {
    ($($t:ty),*) => {
        $(impl From<$t> for IndexError {
            fn from(e: $t) -> Self {
                IndexError::Store(e.into())
            }
        })*
    };
}

from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);
