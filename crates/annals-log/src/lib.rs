//! Annals's log: the only source of truth.
//!
//! Appends become framed, checksummed commit records ([`codec`]) written to segment files
//! (`segment` layout) through the [`Storage`] trait. Recovery cuts a torn tail and refuses
//! corruption anywhere else. See `docs/design/storage-format.md` for the byte layout and the crash
//! analysis.
//!
//! This crate knows nothing of threads, async runtimes, indexes or the network.

pub mod codec;
mod error;
mod fault;
mod file_storage;
mod log;
mod segment;
mod storage;

pub use error::LogError;
pub use fault::FaultStorage;
pub use file_storage::FileStorage;
pub use log::{
    GROUP_COMMIT_BYTES_MAX, Log, LogConfig, LogWriter, PREALLOCATE_BYTES_DEFAULT, Record,
    RecoveryReport, RecoveryStart, SEGMENT_BYTES_MAX_DEFAULT, Scanner, SyncTicket,
    TORN_TAIL_WINDOW_BYTES, Truncation, UNSYNCED_BATCHES_MAX,
};
pub use segment::{FORMAT_VERSION, SEGMENT_HEADER_BYTES, SEGMENT_SUFFIX};
pub use storage::{Storage, StorageFile};
