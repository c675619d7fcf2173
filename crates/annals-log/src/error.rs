//! Errors of the log layer. Each names the file and, where it matters, the offset.

use std::io;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    #[error("{op} {file}: {source}")]
    Io {
        op: &'static str,
        file: String,
        #[source]
        source: io::Error,
    },
    #[error("corrupt record in {file} at offset {offset}: {reason}")]
    Corrupt {
        file: String,
        offset: u64,
        reason: String,
    },
    #[error("bad segment header in {file}: {reason}")]
    BadSegmentHeader { file: String, reason: String },
    #[error("segments are not contiguous: {file} starts at {found}, expected {expected}")]
    SegmentGap {
        file: String,
        expected: u64,
        found: u64,
    },
    #[error("address {address} is outside the log")]
    AddressOutOfRange { address: u64 },
    #[error("recovery start {address} is not a record boundary of the log: {reason}")]
    BadRecoveryStart { address: u64, reason: String },
    #[error("the log stopped after an earlier write or sync failed; reopen the store")]
    Poisoned,
    /// The failure left the log's last good end in an earlier segment than the one appended
    /// to; only reopening the store repairs that.
    #[error(
        "cannot repair the log in place: its last good end {good_end} is before the tail segment at {tail_base}"
    )]
    NotRepairable { good_end: u64, tail_base: u64 },
}

impl LogError {
    pub(crate) fn io<'a>(
        op: &'static str,
        file: &'a str,
    ) -> impl FnOnce(io::Error) -> LogError + 'a {
        move |source| LogError::Io {
            op,
            file: file.to_owned(),
            source,
        }
    }
}
