//! Opening a store for a command, and saying on stderr what recovery did (head, torn tail
//! dropped, records re-indexed), so an operator sees every repair the engine made.

use std::path::Path;

use annals_engine::{Durability, Engine, EngineConfig, OpenReport};
use anyhow::Context;

/// Opens (creating if needed) the store in `dir`.
pub(crate) fn open(dir: &Path, durability: Durability) -> anyhow::Result<(Engine, OpenReport)> {
    let config = EngineConfig {
        durability,
        ..EngineConfig::default()
    };
    let (engine, report) = Engine::open_dir(dir, config)
        .with_context(|| format!("cannot open store {}", dir.display()))?;
    log_open_report(dir, &report);
    Ok((engine, report))
}

/// Like [`open`], for commands that only look: a missing directory is an error rather than a new,
/// empty store.
pub(crate) fn open_existing(
    dir: &Path,
    durability: Durability,
) -> anyhow::Result<(Engine, OpenReport)> {
    ensure_exists(dir)?;
    open(dir, durability)
}

/// Fails unless `dir` is an existing directory.
pub(crate) fn ensure_exists(dir: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        dir.is_dir(),
        "no store at {}: not a directory",
        dir.display()
    );
    Ok(())
}

/// Logs what opening did; a dropped torn tail is a warning since acknowledged data is never in it
/// but an operator may want to know the process died mid-write.
pub(crate) fn log_open_report(dir: &Path, report: &OpenReport) {
    if let Some(t) = &report.log.truncated {
        tracing::warn!(
            dir = %dir.display(),
            file = %t.file,
            offset = t.offset,
            bytes_dropped = t.bytes_dropped,
            reason = %t.reason,
            "torn tail dropped"
        );
    }
    for name in &report.log.removed_segments {
        tracing::warn!(file = %name, "half-created segment removed");
    }
    tracing::info!(
        dir = %dir.display(),
        head = report.head.0,
        torn_tail_dropped_bytes = report.log.truncated.as_ref().map_or(0, |t| t.bytes_dropped),
        records_reindexed = report.records_reindexed,
        index_rebuilt = report.index_rebuilt,
        "store opened"
    );
}
