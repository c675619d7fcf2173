//! Lets redb do its I/O through Annals's [`StorageFile`], so crash tests that drop un-synced
//! writes cover the index file too.

use std::io;
use std::sync::Arc;

use annals_log::StorageFile;

#[derive(Debug)]
pub(crate) struct Backend(pub(crate) Arc<dyn StorageFile>);

impl redb::StorageBackend for Backend {
    fn len(&self) -> Result<u64, io::Error> {
        self.0.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.0.read_at(out, offset)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.0.sync()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.0.write_at(data, offset)
    }
}
