//! Errors of the index layer.

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    #[error("index store: {0}")]
    Store(#[from] redb::Error),
    #[error("index is inconsistent: {0}")]
    Inconsistent(String),
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
