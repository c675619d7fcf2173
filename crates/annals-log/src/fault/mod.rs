//! A fault-injecting, in-memory [`Storage`] for crash tests.
//!
//! Every file keeps two images: what has been written (`current`) and what a crash would leave
//! (`durable`). `sync` makes the durable image equal to the current one; a file's creation or
//! removal survives a crash only after `sync_dir`. Both images are copy-on-write pages
//! ([`paged_image`]), so a sync or a crash image copies only what changed, not whole files. A test can make the N-th sync fail and every later operation fail too (the
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

mod paged_image;

use paged_image::PagedImage;

#[derive(Default, Clone)]
struct FileImage {
    current: PagedImage,
    durable: PagedImage,
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
    /// When set, the disk is full: a write that would grow a file fails with `ENOSPC` and
    /// writes nothing; shrinking a file, and overwriting inside it, still work.
    full: bool,
    /// When set, `fail_syncs` and `full` hit only the file of this name (the others, and the
    /// directory, work).
    fault_scope: Option<String>,
}

impl State {
    /// Whether the faults hit file `name` (`None`: the directory).
    fn in_fault_scope(&self, name: Option<&str>) -> bool {
        match &self.fault_scope {
            None => true,
            Some(scope) => name == Some(scope.as_str()),
        }
    }
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

    /// Makes the disk full (`true`) or frees space again (`false`): while full, every write past
    /// a file's current end, and every growth by `set_len`, fails with `StorageFull`.
    pub fn set_full(&self, full: bool) {
        self.state.lock().full = full;
    }

    /// Limits what [`FaultStorage::fail_syncs`] and [`FaultStorage::set_full`] hit to the file
    /// named `name` (`None`: every file, and syncs of the directory).
    pub fn scope_faults(&self, name: Option<&str>) {
        self.state.lock().fault_scope = name.map(str::to_owned);
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
            .map(|f| f.current.to_vec())
    }

    /// Replaces the bytes of `name` as if they had always been durable (for tearing and bit
    /// flips).
    pub fn set_bytes(&self, name: &str, bytes: Vec<u8>) {
        let mut s = self.state.lock();
        let image = s.files.entry(name.to_owned()).or_default();
        image.current = PagedImage::from_bytes(&bytes);
        image.durable = image.current.clone();
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

    /// Counts a sync of file `name` (`None`: the directory), failing it as the faults say.
    fn count_sync(s: &mut State, name: Option<&str>) -> io::Result<()> {
        if s.crashed {
            return Err(crashed_error());
        }
        s.syncs += 1;
        if s.crash_at_sync.is_some_and(|n| s.syncs >= n) {
            s.crashed = true;
            return Err(crashed_error());
        }
        if s.fail_syncs && s.in_fault_scope(name) {
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
        Self::count_sync(&mut s, None)?;
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
    fn with<R>(&self, f: impl FnOnce(&mut FileImage, bool) -> io::Result<R>) -> io::Result<R> {
        let mut s = self.state.lock();
        if s.crashed {
            return Err(crashed_error());
        }
        let full = s.full && s.in_fault_scope(Some(&self.name));
        match s.files.get_mut(&self.name) {
            Some(image) if !image.removed => f(image, full),
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
        self.with(|image, _| {
            if image.current.read(buf, to_usize(offset)?) {
                Ok(())
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "read past end",
                ))
            }
        })
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.with(|image, full| {
            let offset = to_usize(offset)?;
            if full && offset.saturating_add(buf.len()) > image.current.len() {
                return Err(io::Error::from(io::ErrorKind::StorageFull));
            }
            image.current.write(buf, offset);
            Ok(())
        })
    }

    fn sync(&self) -> io::Result<()> {
        self.gate.pass();
        let mut s = self.state.lock();
        FaultStorage::count_sync(&mut s, Some(&self.name))?;
        match s.files.get_mut(&self.name) {
            Some(image) if !image.removed => {
                let FileImage {
                    current, durable, ..
                } = image;
                durable.assign_from(current);
                Ok(())
            }
            _ => Err(io::Error::new(io::ErrorKind::NotFound, self.name.clone())),
        }
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(|image, full| {
            let len = to_usize(len)?;
            if full && len > image.current.len() {
                return Err(io::Error::from(io::ErrorKind::StorageFull));
            }
            image.current.set_len(len);
            Ok(())
        })
    }

    fn len(&self) -> io::Result<u64> {
        self.with(|image, _| Ok(image.current.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::paged_image::PAGE_BYTES;
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
        s.sync_dir().unwrap();
        s.crash_at_sync(2);
        a.write_at(b"1", 0).unwrap();
        a.sync().unwrap();
        a.write_at(b"2", 1).unwrap();
        assert!(a.sync().is_err());
        assert!(a.write_at(b"3", 2).is_err());
        assert!(s.has_crashed());
        // The sync that crashed made nothing durable.
        assert_eq!(s.crash_image().bytes("a").unwrap(), b"1");
    }

    /// A file synced, then overwritten in part, grown and cut again, keeps exactly what its last
    /// sync saw; other files keep their own last sync.
    #[test]
    fn a_crash_keeps_each_file_as_its_last_sync_left_it() {
        let s = FaultStorage::new();
        let a = s.open("a", true).unwrap();
        let b = s.open("b", true).unwrap();
        s.sync_dir().unwrap();
        let first: Vec<u8> = (0..3 * PAGE_BYTES + 17).map(|i| (i % 251) as u8).collect();
        a.write_at(&first, 0).unwrap();
        b.write_at(b"b-synced", 0).unwrap();
        a.sync().unwrap();
        b.sync().unwrap();
        // After the syncs: an overwrite across a page boundary, growth, and a cut.
        a.write_at(&[0xee; 40], PAGE_BYTES as u64 - 20).unwrap();
        a.set_len(5 * PAGE_BYTES as u64).unwrap();
        a.write_at(b"tail", 4 * PAGE_BYTES as u64).unwrap();
        b.write_at(b"-lost", 8).unwrap();
        assert_eq!(s.crash_image().bytes("a").unwrap(), first);
        assert_eq!(s.crash_image().bytes("b").unwrap(), b"b-synced");

        // A second sync of `a` alone: `a` moves on, `b` does not.
        a.set_len(PAGE_BYTES as u64 + 5).unwrap();
        a.sync().unwrap();
        let mut expected = first[..PAGE_BYTES + 5].to_vec();
        expected[PAGE_BYTES - 20..PAGE_BYTES + 5].fill(0xee);
        let image = s.crash_image();
        assert_eq!(image.bytes("a").unwrap(), expected);
        assert_eq!(image.bytes("b").unwrap(), b"b-synced");
        // Growing a cut file reads zeros where the cut bytes were, before and after a crash.
        a.set_len(2 * PAGE_BYTES as u64).unwrap();
        a.sync().unwrap();
        expected.resize(2 * PAGE_BYTES, 0);
        assert_eq!(s.bytes("a").unwrap(), expected);
        assert_eq!(s.crash_image().bytes("a").unwrap(), expected);
    }

    /// A crash image is a copy: writes to it do not reach the storage it came from, and writes to
    /// that storage do not reach the image.
    #[test]
    fn crash_images_are_independent_of_their_storage() {
        let s = FaultStorage::new();
        let a = s.open("a", true).unwrap();
        s.sync_dir().unwrap();
        a.write_at(&vec![1u8; 2 * PAGE_BYTES], 0).unwrap();
        a.sync().unwrap();
        let image = s.crash_image();
        a.write_at(b"after", 10).unwrap();
        a.sync().unwrap();
        let in_image = image.open("a", false).unwrap();
        in_image.write_at(b"image", PAGE_BYTES as u64).unwrap();
        in_image.sync().unwrap();
        let mut expected_image = vec![1u8; 2 * PAGE_BYTES];
        expected_image[PAGE_BYTES..PAGE_BYTES + 5].copy_from_slice(b"image");
        assert_eq!(image.bytes("a").unwrap(), expected_image);
        let mut expected = vec![1u8; 2 * PAGE_BYTES];
        expected[10..15].copy_from_slice(b"after");
        assert_eq!(s.bytes("a").unwrap(), expected);
        assert_eq!(s.crash_image().bytes("a").unwrap(), expected);
    }

    /// Random writes, cuts, syncs and failed syncs on two files, against two plain byte vectors
    /// per file: what is written now and what a crash would keep.
    #[test]
    fn random_operations_match_a_copying_reference() {
        let s = FaultStorage::new();
        let names = ["a", "b"];
        let files: Vec<_> = names.iter().map(|n| s.open(n, true).unwrap()).collect();
        s.sync_dir().unwrap();
        let mut current = vec![Vec::<u8>::new(); 2];
        let mut durable = vec![Vec::<u8>::new(); 2];
        // A small linear congruential generator: the same operations in every run.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |bound: usize| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as usize % bound
        };
        for step in 0..3_000usize {
            let f = next(2);
            match next(12) {
                0..=5 => {
                    let start = next(4 * PAGE_BYTES);
                    let len = next(PAGE_BYTES + PAGE_BYTES / 2);
                    let buf: Vec<u8> = (0..len).map(|i| ((step + i) % 255) as u8 + 1).collect();
                    files[f].write_at(&buf, start as u64).unwrap();
                    let c = &mut current[f];
                    if c.len() < start + len {
                        c.resize(start + len, 0);
                    }
                    c[start..start + len].copy_from_slice(&buf);
                }
                6 => {
                    let len = next(5 * PAGE_BYTES);
                    files[f].set_len(len as u64).unwrap();
                    current[f].resize(len, 0);
                }
                7..=9 => {
                    files[f].sync().unwrap();
                    durable[f] = current[f].clone();
                }
                10 => {
                    // An I/O error from the disk: nothing becomes durable.
                    s.fail_syncs(true);
                    assert!(files[f].sync().is_err());
                    s.fail_syncs(false);
                }
                _ => {
                    let image = s.crash_image();
                    for (i, name) in names.iter().enumerate() {
                        assert_eq!(image.bytes(name).unwrap(), durable[i], "step {step}");
                    }
                }
            }
            assert_eq!(files[f].len().unwrap(), current[f].len() as u64);
            assert_eq!(s.bytes(names[f]).unwrap(), current[f], "step {step}");
        }
    }

    /// A held sync waits, and completes once released.
    #[test]
    fn held_syncs_wait_for_release() {
        let s = FaultStorage::new();
        let a = s.open("a", true).unwrap();
        a.write_at(b"held", 0).unwrap();
        s.hold_syncs(true);
        std::thread::scope(|scope| {
            let syncing = scope.spawn(|| a.sync());
            while s.held_syncs() == 0 {
                std::thread::yield_now();
            }
            assert_eq!(s.syncs(), 0, "the held sync has not happened yet");
            assert!(s.crash_image().bytes("a").is_none());
            s.hold_syncs(false);
            syncing.join().unwrap().unwrap();
        });
        assert_eq!(s.held_syncs(), 0);
        assert_eq!(s.syncs(), 1);
    }
}
