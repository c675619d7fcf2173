//! Shutdown: `Engine::close` from two clones at once must not return before the final index flush.

use std::io;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use annals_core::{ExpectedRevision, NewEvent, StreamName};
use annals_engine::{Engine, EngineConfig};
use annals_index::INDEX_FILE;
use annals_log::{FaultStorage, Storage, StorageFile};

/// Gate state: (armed, a sync is waiting at the gate).
type Gate = Arc<(Mutex<(bool, bool)>, Condvar)>;

/// A [`FaultStorage`] whose index-file syncs wait while the gate is armed.
#[derive(Debug)]
struct GatedStorage {
    inner: FaultStorage,
    gate: Gate,
}

#[derive(Debug)]
struct GatedFile {
    inner: Arc<dyn StorageFile>,
    index: bool,
    gate: Gate,
}

impl Storage for GatedStorage {
    fn open(&self, name: &str, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        Ok(Arc::new(GatedFile {
            inner: self.inner.open(name, create)?,
            index: name == INDEX_FILE,
            gate: Arc::clone(&self.gate),
        }))
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

impl StorageFile for GatedFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_at(buf, offset)
    }
    fn sync(&self) -> io::Result<()> {
        if self.index {
            let (lock, cond) = &*self.gate;
            let mut g = lock.lock().unwrap();
            while g.0 {
                g.1 = true;
                cond.notify_all();
                g = cond.wait(g).unwrap();
            }
        }
        self.inner.sync()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
}

/// `close` promises to return only once writes in flight are finished and the index is flushed.
/// A second `close` racing the first must not return early (it would also close the head while
/// the first is still draining, so subscribers could stop before the last acknowledged events).
#[test]
fn concurrent_close_waits_for_the_final_flush() {
    let gate: Gate = Arc::default();
    let storage = GatedStorage {
        inner: FaultStorage::new(),
        gate: Arc::clone(&gate),
    };
    let config = EngineConfig {
        // Only the final flush at close makes the index durable.
        index_flush_interval: Duration::from_secs(3600),
        ..EngineConfig::default()
    };
    let (engine, _) = Engine::open(Arc::new(storage), config).unwrap();
    engine
        .append(
            &StreamName::new("order-1").unwrap(),
            ExpectedRevision::Any,
            vec![NewEvent::json("Placed", "{}").unwrap()],
        )
        .unwrap();
    gate.0.lock().unwrap().0 = true;

    let first = engine.clone();
    let a = std::thread::spawn(move || first.close());
    // Wait until the first close is held in the final index flush.
    {
        let (lock, cond) = &*gate;
        let g = lock.lock().unwrap();
        let (g, timeout) = cond
            .wait_timeout_while(g, Duration::from_secs(10), |g| !g.1)
            .unwrap();
        assert!(!timeout.timed_out(), "the final index flush never synced");
        drop(g);
    }
    let (done_tx, done_rx) = mpsc::channel();
    let second = engine.clone();
    let b = std::thread::spawn(move || {
        second.close();
        let _ = done_tx.send(());
    });
    let returned_early = done_rx.recv_timeout(Duration::from_millis(300)).is_ok();

    {
        let (lock, cond) = &*gate;
        lock.lock().unwrap().0 = false;
        cond.notify_all();
    }
    a.join().unwrap();
    b.join().unwrap();
    assert!(
        !returned_early,
        "a second close returned while the first was still flushing the index"
    );
}
