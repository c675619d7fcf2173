//! What every network run shares: a tokio runtime of its own per run (dropping it ends every task
//! the run spawned, so nothing outlives it and holds a store), and the one kind of panic a target
//! tolerates.

use crate::Violation;

/// A single-threaded runtime for one run; the engine has threads of its own.
pub(crate) fn runtime(target: &'static str) -> Result<tokio::runtime::Runtime, Violation> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Violation::new(target, format!("starting a runtime: {e}")))
}

/// Whether a panic hook should let this panic unwind instead of failing the run: redb panics on
/// some damaged files, and `annals-index` catches exactly those (while opening the file) and
/// rebuilds the index. A redb panic elsewhere is not caught there and still fails the run.
pub fn panic_is_tolerated(info: &std::panic::PanicHookInfo<'_>) -> bool {
    info.location()
        .is_some_and(|l| l.file().contains("/redb-") || l.file().contains("\\redb-"))
}
