//! The stores the benches open: an existing or new store for a bench of the engine, and the
//! temporary directory of a baseline's store. What recovery repaired is logged.

use std::path::Path;

use annals_engine::{Durability, Engine, EngineConfig, OpenReport};

use crate::error::{BenchError, Context};

/// Opens (creating if needed) the store in `dir`.
pub(crate) fn open(dir: &Path, durability: Durability) -> Result<(Engine, OpenReport), BenchError> {
    let config = EngineConfig {
        durability,
        ..EngineConfig::default()
    };
    let (engine, report) =
        Engine::open_dir(dir, config).map_err(|source| BenchError::OpenStore {
            dir: dir.to_owned(),
            source,
        })?;
    log_open_report(dir, &report);
    Ok((engine, report))
}

/// Logs what opening did: a warning if recovery cut a torn tail or removed a half-created
/// segment, else the head at debug level.
pub(crate) fn log_open_report(dir: &Path, report: &OpenReport) {
    if report.log.truncated.is_some() || !report.log.removed_segments.is_empty() {
        tracing::warn!(dir = %dir.display(), ?report, "recovery repaired the store");
    } else {
        tracing::debug!(dir = %dir.display(), head = report.head.0, "store opened");
    }
}

/// A fresh temporary directory for a baseline's store, in `dir` if given (it should be on the
/// same disk as the server's store), else in the system's temporary directory. Removed on drop.
pub(crate) fn baseline_dir(dir: Option<&Path>) -> Result<tempfile::TempDir, BenchError> {
    let builder = tempfile::Builder::new()
        .prefix("annals-bench-baseline-")
        .clone();
    match dir {
        Some(d) => builder
            .tempdir_in(d)
            .context(|| format!("cannot create a directory in {}", d.display())),
        None => builder
            .tempdir()
            .context(|| "cannot create a temporary directory".to_owned()),
    }
}
