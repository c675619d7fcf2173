//! A fault-injecting, in-memory [`Storage`] for crash tests.
//!
//! Every file keeps two images: what has been written (`current`) and what a crash would leave
//! (`durable`). `sync` copies one to the other; a file's creation or removal survives a crash only
//! after `sync_dir`. A test can make the N-th sync fail and every later operation fail too (the
//! process "dies" there), then take [`FaultStorage::crash_image`]: a new storage holding only what
//! was durable, which it may tear or corrupt further with [`FaultStorage::set_bytes`] before
//! reopening the store on it.
//! A test can also hold every file sync ([`FaultStorage::hold_syncs`], a stalled disk) to keep
//! writes in flight for as long as it needs.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::sync::Arc;

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Condvar, Mutex};

use crate::storage::{Storage, StorageFile};

#[derive(Default, Clone)]
struct FileImage {
    current: Vec<u8>,
    durable: Vec<u8>,
    /// The file's directory entry survives a crash.
    entry_durable: bool,
    /// Removed, but the removal is not yet durable.
    removed: bool,
}

#[derive(Default)]
struct State {
    files: BTreeMap<String, FileImage>,
    syncs: u64,
    crash_at_sync: Option<u64>,
    crashed: bool,
    /// When set, `sync` returns an error without crashing (an `EIO` from the disk).
    fail_syncs: bool,
}

/// An in-memory storage that can lose un-synced writes. Clones share the same files.
#[derive(Clone, Default)]
pub struct FaultStorage {
    state: Arc<Mutex<State>>,
    gate: Arc<SyncGate>,
}

/// While held, file syncs wait for release, as on a disk that stalls: a test can keep appends
/// in flight for as long as it needs.
#[derive(Default)]
struct SyncGate {
    held: Mutex<bool>,
    released: Condvar,
    /// File syncs waiting at the gate now.
    waiting: AtomicU64,
}

impl SyncGate {
    fn pass(&self) {
        let mut held = self.held.lock();
        if *held {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            while *held {
                self.released.wait(&mut held);
            }
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl fmt::Debug for FaultStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.state.lock();
        f.debug_struct("FaultStorage")
            .field("files", &s.files.len())
            .field("syncs", &s.syncs)
            .field("crashed", &s.crashed)
            .finish()
    }
}

fn crashed_error() -> io::Error {
    io::Error::other("simulated crash: storage is gone")
}

impl FaultStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// The `n`-th sync from now on (1-based, counting file and directory syncs) and everything
    /// after it fail, as if the machine lost power while that sync ran.
    pub fn crash_at_sync(&self, n: u64) {
        let mut s = self.state.lock();
        s.crash_at_sync = Some(s.syncs + n);
    }

    /// Makes every later sync fail with an I/O error (the process lives on).
    pub fn fail_syncs(&self, fail: bool) {
        self.state.lock().fail_syncs = fail;
    }

    /// Holds every later file sync until `hold_syncs(false)` (directory syncs pass).
    pub fn hold_syncs(&self, hold: bool) {
        *self.gate.held.lock() = hold;
        if !hold {
            self.gate.released.notify_all();
        }
    }

    /// File syncs waiting at a held gate now.
    pub fn held_syncs(&self) -> u64 {
        self.gate.waiting.load(Ordering::SeqCst)
    }

    /// Syncs so far.
    pub fn syncs(&self) -> u64 {
        self.state.lock().syncs
    }

    /// Whether the simulated crash has happened.
    pub fn has_crashed(&self) -> bool {
        self.state.lock().crashed
    }

    /// A new storage holding only what would survive a power loss now.
    pub fn crash_image(&self) -> FaultStorage {
        let s = self.state.lock();
        let mut files = BTreeMap::new();
        for (name, image) in &s.files {
            // A durable entry survives even if its removal was not yet synced.
            if image.entry_durable {
                files.insert(
                    name.clone(),
                    FileImage {
                        current: image.durable.clone(),
                        durable: image.durable.clone(),
                        entry_durable: true,
                        removed: false,
                    },
                );
            }
        }
        FaultStorage {
            state: Arc::new(Mutex::new(State {
                files,
                ..State::default()
            })),
            gate: Arc::default(),
        }
    }

    /// The current bytes of `name`, if it exists.
    pub fn bytes(&self, name: &str) -> Option<Vec<u8>> {
        let s = self.state.lock();
        s.files
            .get(name)
            .filter(|f| !f.removed)
            .map(|f| f.current.clone())
    }

    /// Replaces the bytes of `name` as if they had always been durable (for tearing and bit
    /// flips).
    pub fn set_bytes(&self, name: &str, bytes: Vec<u8>) {
        let mut s = self.state.lock();
        let image = s.files.entry(name.to_owned()).or_default();
        image.current = bytes.clone();
        image.durable = bytes;
        image.entry_durable = true;
        image.removed = false;
    }

    /// Names of the files that exist now.
    pub fn names(&self) -> Vec<String> {
        let s = self.state.lock();
        s.files
            .iter()
            .filter(|(_, f)| !f.removed)
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn count_sync(s: &mut State) -> io::Result<()> {
        if s.crashed {
            return Err(crashed_error());
        }
        s.syncs += 1;
        if s.crash_at_sync.is_some_and(|n| s.syncs >= n) {
            s.crashed = true;
            return Err(crashed_error());
        }
        if s.fail_syncs {
            return Err(io::Error::other("injected sync failure"));
        }
        Ok(())
    }
}

impl Storage for FaultStorage {
    fn open(&self, name: &str, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let mut s = self.state.lock();
        if s.crashed {
            return Err(crashed_error());
        }
        match s.files.get_mut(name) {
            Some(image) if !image.removed => {}
            Some(image) if create => {
                *image = FileImage {
                    entry_durable: image.entry_durable,
                    ..FileImage::default()
                };
            }
            None if create => {
                s.files.insert(name.to_owned(), FileImage::default());
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{name}: no such file"),
                ));
            }
        }
        Ok(Arc::new(FaultFile {
            state: Arc::clone(&self.state),
            gate: Arc::clone(&self.gate),
            name: name.to_owned(),
        }))
    }

    fn list(&self) -> io::Result<Vec<String>> {
        if self.state.lock().crashed {
            return Err(crashed_error());
        }
        Ok(self.names())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut s = self.state.lock();
        if s.crashed {
            return Err(crashed_error());
        }
        match s.files.get_mut(name) {
            Some(image) if !image.removed => {
                image.removed = true;
                Ok(())
            }
            _ => Err(io::Error::new(io::ErrorKind::NotFound, name.to_owned())),
        }
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut s = self.state.lock();
        Self::count_sync(&mut s)?;
        s.files.retain(|_, f| !f.removed);
        for image in s.files.values_mut() {
            image.entry_durable = true;
        }
        Ok(())
    }
}

struct FaultFile {
    state: Arc<Mutex<State>>,
    gate: Arc<SyncGate>,
    name: String,
}

impl fmt::Debug for FaultFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultFile")
            .field("name", &self.name)
            .finish()
    }
}

impl FaultFile {
    fn with<R>(&self, f: impl FnOnce(&mut FileImage) -> io::Result<R>) -> io::Result<R> {
        let mut s = self.state.lock();
        if s.crashed {
            return Err(crashed_error());
        }
        match s.files.get_mut(&self.name) {
            Some(image) if !image.removed => f(image),
            _ => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: removed", self.name),
            )),
        }
    }
}

fn to_usize(v: u64) -> io::Result<usize> {
    usize::try_from(v).map_err(|_| io::Error::other("offset out of range"))
}

impl StorageFile for FaultFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.with(|image| {
            let start = to_usize(offset)?;
            let end = start.saturating_add(buf.len());
            let src = image
                .current
                .get(start..end)
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past end"))?;
            buf.copy_from_slice(src);
            Ok(())
        })
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.with(|image| {
            let start = to_usize(offset)?;
            let end = start.saturating_add(buf.len());
            if image.current.len() < end {
                image.current.resize(end, 0);
            }
            if let Some(dst) = image.current.get_mut(start..end) {
                dst.copy_from_slice(buf);
            }
            Ok(())
        })
    }

    fn sync(&self) -> io::Result<()> {
        self.gate.pass();
        let mut s = self.state.lock();
        FaultStorage::count_sync(&mut s)?;
        match s.files.get_mut(&self.name) {
            Some(image) if !image.removed => {
                image.durable = image.current.clone();
                Ok(())
            }
            _ => Err(io::Error::new(io::ErrorKind::NotFound, self.name.clone())),
        }
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(|image| {
            image.current.resize(to_usize(len)?, 0);
            Ok(())
        })
    }

    fn len(&self) -> io::Result<u64> {
        self.with(|image| Ok(image.current.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use super::*;

    #[test]
    fn unsynced_writes_and_entries_are_lost() {
        let s = FaultStorage::new();
        let a = s.open("a", true).unwrap();
        a.write_at(b"hello", 0).unwrap();
        s.sync_dir().unwrap();
        a.sync().unwrap();
        a.write_at(b" world", 5).unwrap();
        let b = s.open("b", true).unwrap();
        b.write_at(b"x", 0).unwrap();
        b.sync().unwrap();
        let img = s.crash_image();
        assert_eq!(img.bytes("a").unwrap(), b"hello");
        assert!(img.bytes("b").is_none(), "entry of b was never dir-synced");
    }

    #[test]
    fn crash_at_sync_stops_everything() {
        let s = FaultStorage::new();
        let a = s.open("a", true).unwrap();
        s.crash_at_sync(2);
        a.write_at(b"1", 0).unwrap();
        a.sync().unwrap();
        a.write_at(b"2", 1).unwrap();
        assert!(a.sync().is_err());
        assert!(a.write_at(b"3", 2).is_err());
        assert!(s.has_crashed());
    }
}
