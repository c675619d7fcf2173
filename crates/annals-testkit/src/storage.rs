//! Storage wrappers for tests that check the order of writes and syncs, not only their results.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use annals_log::{FaultStorage, Storage, StorageFile};
use parking_lot::Mutex;

/// How long each segment sync of [`SealCheckingStorage`] takes.
const SLOW_SYNC: Duration = Duration::from_millis(2);

/// A [`FaultStorage`] whose segment syncs are slow (so appends pile up while a batch syncs) and
/// which records every segment created while an earlier one still had writes that were not
/// durable.
#[derive(Debug)]
pub struct SealCheckingStorage {
    inner: FaultStorage,
    violations: Arc<Mutex<Vec<String>>>,
}

impl SealCheckingStorage {
    /// Wraps `inner`; a test keeps a clone of `inner` to look at the files.
    pub fn new(inner: FaultStorage) -> Self {
        Self {
            inner,
            violations: Arc::default(),
        }
    }

    /// Every segment created too early so far, with the segment that was not yet durable.
    pub fn violations(&self) -> Arc<Mutex<Vec<String>>> {
        Arc::clone(&self.violations)
    }
}

#[derive(Debug)]
struct SlowSyncFile(Arc<dyn StorageFile>);

impl StorageFile for SlowSyncFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_at(buf, offset)
    }
    fn sync(&self) -> io::Result<()> {
        std::thread::sleep(SLOW_SYNC);
        self.0.sync()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }
}

impl Storage for SealCheckingStorage {
    fn open(&self, name: &str, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let is_segment = name.ends_with(".seg");
        if is_segment && create && !self.inner.names().iter().any(|n| n == name) {
            let durable = self.inner.crash_image();
            for other in self.inner.names().iter().filter(|n| n.ends_with(".seg")) {
                if self.inner.bytes(other) != durable.bytes(other) {
                    self.violations.lock().push(format!(
                        "{name} created while {other} had writes not yet synced"
                    ));
                }
            }
        }
        let file = self.inner.open(name, create)?;
        Ok(if is_segment {
            Arc::new(SlowSyncFile(file))
        } else {
            file
        })
    }
    fn list(&self) -> io::Result<Vec<String>> {
        self.inner.list()
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        self.inner.remove(name)
    }
    fn sync_dir(&self) -> io::Result<()> {
        self.inner.sync_dir()
    }
}
