//! Lets redb do its I/O through Annals's [`StorageFile`], so crash tests that drop un-synced
//! writes cover the index file too.
//!
//! Each open of the index gets a backend with a fence of its own. Reopening the index after a
//! failed write or sync ([`crate::RedbIndex::reopen`]) raises the old backend's fence first: the
//! old redb handle may live on in a reader's snapshot, but it can never again read or write the
//! file the new handle owns.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use annals_log::StorageFile;

#[derive(Debug)]
pub(crate) struct Backend {
    file: Arc<dyn StorageFile>,
    fence: Arc<AtomicBool>,
}

impl Backend {
    /// A backend over `file`, closed for good once `fence` is raised.
    pub(crate) fn new(file: Arc<dyn StorageFile>, fence: Arc<AtomicBool>) -> Self {
        Self { file, fence }
    }

    fn open(&self) -> Result<&dyn StorageFile, io::Error> {
        match self.fence.load(Ordering::Acquire) {
            true => Err(io::Error::other(
                "the index store was reopened: this handle of it is closed",
            )),
            false => Ok(&*self.file),
        }
    }
}

impl redb::StorageBackend for Backend {
    fn len(&self) -> Result<u64, io::Error> {
        self.open()?.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.open()?.read_at(out, offset)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.open()?.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.open()?.sync()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.open()?.write_at(data, offset)
    }
}
