//! Errors of the index layer.

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    #[error("index store: {0}")]
    Store(#[from] redb::Error),
    #[error("index is inconsistent: {0}")]
    Inconsistent(String),
    /// The file opened but failed a check made at open; the engine rebuilds it from the log.
    #[error("index file is damaged ({check}): {detail}")]
    Damaged {
        check: IntegrityCheck,
        detail: String,
    },
    /// The file was written by another index format (format 1 numbered no category or event-type
    /// revisions); the engine rebuilds it from the log.
    #[error("index file has format {found}, this version reads format {current}")]
    Format { found: u64, current: u64 },
}

/// Which check at open found an index file damaged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IntegrityCheck {
    /// redb's own check: the checksum of every page of the committed trees.
    #[error("redb integrity check")]
    Redb,
    /// The streams table holds one entry per stream id handed out.
    #[error("stream count")]
    StreamCount,
    /// The index's answers for the log's last records (made by the engine, which reads the log).
    #[error("log tail")]
    LogTail,
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
