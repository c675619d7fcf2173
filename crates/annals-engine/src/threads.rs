//! Starting and joining the engine's pipeline threads, and what happens when one panics.
//!
//! A panic in a pipeline thread is a bug, and the engine cannot go on without the thread: the one
//! that panicked stops the engine at once (every later write fails with the panic in its reason),
//! unblocks the threads that wait on it so that closing does not hang, and ends in the panic. Its
//! join result at close is logged with `tracing::error!` and kept, so [`Engine::close_checked`]
//! can return it as [`EngineError::ThreadPanicked`].
//!
//! [`Engine::close_checked`]: crate::Engine::close_checked

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::error::EngineError;
use crate::writer::Shared;

/// The writer thread: checks, assigns, encodes.
pub(crate) const WRITER_THREAD: &str = "annals-writer";
/// The sync thread: writes, syncs, stages in the index, answers.
pub(crate) const SYNC_THREAD: &str = "annals-sync";
/// The index store thread: commits staged index batches, flushes the index.
pub(crate) const INDEX_STORE_THREAD: &str = "annals-flush";

/// A pipeline thread that ended in a panic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ThreadPanic {
    pub(crate) thread: String,
    pub(crate) message: String,
}

impl From<ThreadPanic> for EngineError {
    fn from(p: ThreadPanic) -> Self {
        EngineError::ThreadPanicked {
            thread: p.thread,
            message: p.message,
        }
    }
}

/// The message of a panic payload when it is a string, as `panic!` makes it.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(the panic payload is not a string)".to_owned())
}

/// Starts thread `name` running `body`. Should `body` panic, the engine is stopped with the
/// panic as the reason, `unblock` runs (it releases whatever the other threads wait for from
/// this one), and the thread ends in the same panic.
pub(crate) fn spawn(
    name: &'static str,
    shared: &Arc<Shared>,
    body: impl FnOnce() + Send + 'static,
    unblock: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, EngineError> {
    let shared = Arc::clone(shared);
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            // Nothing `body` owns is looked at after a panic: the engine only stops and
            // releases the other threads.
            if let Err(payload) = catch_unwind(AssertUnwindSafe(body)) {
                shared.stop(format!(
                    "the {name} thread panicked: {}",
                    panic_message(payload.as_ref())
                ));
                unblock();
                resume_unwind(payload);
            }
        })
        .map_err(|e| EngineError::Stopped(format!("cannot start {name} thread: {e}")))
}

/// Joins `threads`, logging each that panicked; returns those.
pub(crate) fn join(threads: Vec<JoinHandle<()>>) -> Vec<ThreadPanic> {
    let mut panics = Vec::new();
    for t in threads {
        let thread = t.thread().name().unwrap_or("unnamed").to_owned();
        if let Err(payload) = t.join() {
            let message = panic_message(payload.as_ref());
            tracing::error!(%thread, panic = %message, "engine thread panicked");
            panics.push(ThreadPanic { thread, message });
        }
    }
    panics
}

/// A test-only way to make one pipeline thread panic at its next step, so tests can check that
/// the panic is reported instead of swallowed.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct PanicHook {
    thread: parking_lot::Mutex<Option<&'static str>>,
}

#[cfg(test)]
impl PanicHook {
    /// Makes `thread` panic the next time it checks.
    pub(crate) fn arm(&self, thread: &'static str) {
        *self.thread.lock() = Some(thread);
    }

    /// Panics if `thread` is armed (once).
    pub(crate) fn check(&self, thread: &str) {
        let mut armed = self.thread.lock();
        if *armed == Some(thread) {
            *armed = None;
            drop(armed);
            panic!("injected panic in {thread}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    use annals_core::{ExpectedRevision, NewEvent, StreamName};
    use annals_log::FaultStorage;

    use super::*;
    use crate::{Engine, EngineConfig};

    fn append(engine: &Engine) -> Result<(), EngineError> {
        let stream = StreamName::new("s-1").unwrap();
        let event = NewEvent::json("T", "{}").unwrap();
        engine
            .append(&stream, ExpectedRevision::Any, vec![event])
            .map(|_| ())
    }

    /// `engine.close_checked()`, failing the test if it does not return within `limit` (a thread
    /// left waiting for the one that panicked would make it hang).
    fn close_within(engine: &Engine, limit: Duration) -> Result<(), EngineError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let engine = engine.clone();
        std::thread::spawn(move || {
            let _ = tx.send(engine.close_checked());
        });
        rx.recv_timeout(limit)
            .unwrap_or_else(|_| panic!("close did not return within {limit:?}"))
    }

    /// Arms a panic in `thread`, appends until an append fails (the panic stopped the engine),
    /// and checks that closing reports that thread's panic, also to a second caller.
    fn panic_is_reported(thread: &'static str) {
        let (engine, _) =
            Engine::open(Arc::new(FaultStorage::new()), EngineConfig::default()).unwrap();
        append(&engine).unwrap();
        engine.inner.shared.panic_hook.arm(thread);
        // The writer and sync threads reach the hook with the next append, the index store
        // thread within its commit interval. Appends until then may succeed or fail (a panic
        // drops the answers it was holding).
        let deadline = Instant::now() + Duration::from_secs(20);
        while !engine.inner.shared.has_stopped.load(Ordering::Acquire) {
            assert!(
                Instant::now() < deadline,
                "{thread}: the engine never stopped"
            );
            let _ = append(&engine);
            std::thread::sleep(Duration::from_millis(5));
        }
        // Every later write names the panic.
        match append(&engine) {
            Err(EngineError::Stopped(reason)) => {
                assert!(reason.contains(thread), "{thread}: {reason}");
                assert!(reason.contains("injected panic"), "{thread}: {reason}");
            }
            other => panic!("{thread}: {other:?}"),
        }
        let clone = engine.clone();
        match close_within(&engine, Duration::from_secs(20)) {
            Err(EngineError::ThreadPanicked { thread: t, message }) => {
                assert_eq!(t, thread);
                assert_eq!(message, format!("injected panic in {thread}"));
            }
            other => panic!("{thread}: close answered {other:?}"),
        }
        assert!(
            matches!(
                clone.close_checked(),
                Err(EngineError::ThreadPanicked { .. })
            ),
            "{thread}: a second close forgot the panic"
        );
        drop(clone);
        drop(engine);
    }

    #[test]
    fn a_panic_in_the_writer_thread_is_reported_at_close() {
        panic_is_reported(WRITER_THREAD);
    }

    #[test]
    fn a_panic_in_the_sync_thread_is_reported_at_close() {
        panic_is_reported(SYNC_THREAD);
    }

    #[test]
    fn a_panic_in_the_index_store_thread_is_reported_at_close() {
        panic_is_reported(INDEX_STORE_THREAD);
    }

    /// Appends the sync thread never took when it panicked are answered, not left waiting.
    #[test]
    fn a_sync_thread_panic_answers_the_appends_waiting_for_it() {
        let storage = FaultStorage::new();
        let (engine, _) = Engine::open(Arc::new(storage.clone()), EngineConfig::default()).unwrap();
        append(&engine).unwrap();
        // One append held in its sync, three more handed over behind it.
        storage.hold_syncs(true);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let send = |engine: &Engine| {
            let (engine, done) = (engine.clone(), done_tx.clone());
            std::thread::spawn(move || {
                let _ = done.send(append(&engine));
            })
        };
        let first = send(&engine);
        while storage.held_syncs() == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let waiting: Vec<_> = (0..3).map(|_| send(&engine)).collect();
        // Time for the writer to check them and hand them over to the open batch.
        std::thread::sleep(Duration::from_millis(200));
        engine.inner.shared.panic_hook.arm(SYNC_THREAD);
        storage.hold_syncs(false);
        let answers: Vec<Result<(), EngineError>> = (0..4)
            .map(|_| {
                done_rx
                    .recv_timeout(Duration::from_secs(20))
                    .unwrap_or_else(|_| panic!("an append was left waiting"))
            })
            .collect();
        // The held append was synced and answered before the panic; the others failed.
        let failed = answers
            .iter()
            .filter(|a| matches!(a, Err(EngineError::Stopped(_))))
            .count();
        assert_eq!(failed, 3, "{answers:?}");
        first.join().unwrap();
        waiting.into_iter().for_each(|t| t.join().unwrap());
        assert!(matches!(
            engine.close_checked(),
            Err(EngineError::ThreadPanicked { .. })
        ));
    }

    #[test]
    fn a_clean_close_reports_nothing() {
        let (engine, _) =
            Engine::open(Arc::new(FaultStorage::new()), EngineConfig::default()).unwrap();
        append(&engine).unwrap();
        engine.close_checked().unwrap();
        engine.close_checked().unwrap();
    }

    #[test]
    fn panic_messages_are_read_from_str_and_string_payloads() {
        assert_eq!(panic_message(&"static"), "static");
        assert_eq!(panic_message(&String::from("owned")), "owned");
        assert_eq!(panic_message(&7u32), "(the panic payload is not a string)");
    }
}
