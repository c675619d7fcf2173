//! The committed-head signal: the last durable, indexed position, published by the sync thread
//! and awaited by subscriptions (async) and blocking readers alike. Closing the engine closes the
//! signal too, so a subscriber waiting at the head learns that nothing more will come.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use annals_core::Position;
use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

#[derive(Debug)]
pub(crate) struct Head {
    position: AtomicU64,
    /// Set once the engine is closed: the head will not move again.
    closed: AtomicBool,
    watch: watch::Sender<Position>,
    lock: Mutex<()>,
    cond: Condvar,
}

impl Head {
    pub(crate) fn new(position: Position) -> Self {
        let (watch, _) = watch::channel(position);
        Self {
            position: AtomicU64::new(position.0),
            closed: AtomicBool::new(false),
            watch,
            lock: Mutex::new(()),
            cond: Condvar::new(),
        }
    }

    pub(crate) fn get(&self) -> Position {
        Position(self.position.load(Ordering::Acquire))
    }

    pub(crate) fn publish(&self, position: Position) {
        self.position.fetch_max(position.0, Ordering::AcqRel);
        self.watch.send_replace(position);
        let _guard = self.lock.lock();
        self.cond.notify_all();
    }

    /// Marks the head final and wakes every waiter, async and blocking.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.watch.send_modify(|_| {});
        let _guard = self.lock.lock();
        self.cond.notify_all();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Position> {
        self.watch.subscribe()
    }

    /// Blocks until the head passes `after`, the head is closed or `timeout` ends; returns the
    /// head.
    pub(crate) fn wait_past(&self, after: Position, timeout: Duration) -> Position {
        let deadline = Instant::now() + timeout;
        let mut guard = self.lock.lock();
        loop {
            let head = self.get();
            if head > after || self.is_closed() {
                return head;
            }
            if self.cond.wait_until(&mut guard, deadline).timed_out() {
                return self.get();
            }
        }
    }
}
