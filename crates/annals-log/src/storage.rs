//! The one narrow trait all disk I/O goes through.
//!
//! The log and the index open their files through [`Storage`] and touch them only through
//! [`StorageFile`], so a test can swap in [`crate::FaultStorage`], which drops un-synced writes at a
//! chosen sync, and check that recovery keeps exactly what was acknowledged.

use std::fmt::Debug;
use std::io;
use std::sync::Arc;

/// A flat directory of files.
pub trait Storage: Send + Sync + Debug + 'static {
    /// Opens `name`, creating it empty if `create` is set and it does not exist.
    fn open(&self, name: &str, create: bool) -> io::Result<Arc<dyn StorageFile>>;
    /// Names of the files in the directory.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Removes `name`; the removal is durable only after [`Storage::sync_dir`].
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Makes creations and removals of files durable.
    fn sync_dir(&self) -> io::Result<()>;
}

/// One open file. Offsets are absolute; there is no cursor, so the file can be shared by readers
/// and the single writer without locking.
#[expect(
    clippy::len_without_is_empty,
    reason = "mirrors the system calls; emptiness is never asked"
)]
pub trait StorageFile: Send + Sync + Debug {
    /// Fills `buf` from `offset`; reading past the end is an `UnexpectedEof` error.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, extending the file if needed.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every write so far durable (`fdatasync`).
    fn sync(&self) -> io::Result<()>;
    /// Truncates or extends (with zeros) to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The current length in bytes.
    fn len(&self) -> io::Result<u64>;
}
