//! A [`Storage`] wrapper that counts and times the `fdatasync`s of log segments, so the append
//! bench knows how many group commits the engine made (and so its average batch) and how long the
//! disk took for each, without any counter inside the engine.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use annals_log::{FileStorage, SEGMENT_SUFFIX, Storage, StorageFile};
use hdrhistogram::Histogram;
use parking_lot::Mutex;

use crate::measure::{latency_histogram, micros};

/// Segment syncs seen so far and their latencies.
#[derive(Debug)]
pub(crate) struct SyncProbe {
    syncs: AtomicU64,
    latency_us: Mutex<Histogram<u64>>,
}

impl SyncProbe {
    pub(crate) fn new() -> Self {
        Self {
            syncs: AtomicU64::new(0),
            latency_us: Mutex::new(latency_histogram()),
        }
    }

    pub(crate) fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    pub(crate) fn latency_us(&self) -> Histogram<u64> {
        self.latency_us.lock().clone()
    }
}

/// [`FileStorage`] with its segment files' syncs observed by a [`SyncProbe`].
#[derive(Debug)]
pub(crate) struct ProbedStorage {
    inner: FileStorage,
    probe: Arc<SyncProbe>,
}

impl ProbedStorage {
    pub(crate) fn open(dir: &Path, probe: Arc<SyncProbe>) -> io::Result<Self> {
        Ok(Self {
            inner: FileStorage::open(dir)?,
            probe,
        })
    }
}

impl Storage for ProbedStorage {
    fn open(&self, name: &str, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let file = self.inner.open(name, create)?;
        // Only syncs of segment files are group commits; the index's are not.
        if name.ends_with(SEGMENT_SUFFIX) {
            Ok(Arc::new(ProbedFile {
                inner: file,
                probe: Arc::clone(&self.probe),
            }))
        } else {
            Ok(file)
        }
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

#[derive(Debug)]
struct ProbedFile {
    inner: Arc<dyn StorageFile>,
    probe: Arc<SyncProbe>,
}

impl StorageFile for ProbedFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_at(buf, offset)
    }

    fn sync(&self) -> io::Result<()> {
        let started = Instant::now();
        let result = self.inner.sync();
        let us = micros(started.elapsed());
        self.probe.syncs.fetch_add(1, Ordering::Relaxed);
        self.probe.latency_us.lock().saturating_record(us);
        result
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }

    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
}
