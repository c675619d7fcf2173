//! The one place the engine names its index store's implementation (redb): finding, opening and
//! destroying the index file while a store opens. From then on the engine holds the index as an
//! `Arc<dyn Index>`, so swapping redb means implementing [`Index`] and changing only this file
//! (and the index settings in `EngineConfig`).
//!
//! A trait object rather than a type parameter keeps `Engine` (a public type) free of one. Its
//! indirect calls come per batch staged or per stream the writer looks up, never per event.

use std::sync::Arc;

use annals_index::{INDEX_FILE, Index, IndexCheckpoint, RedbIndex, RedbIndexConfig};
use annals_log::Storage;

use crate::error::EngineError;

/// Whether the index file is missing or empty.
pub(crate) fn index_missing(storage: &dyn Storage) -> bool {
    storage
        .open(INDEX_FILE, false)
        .and_then(|f| f.len())
        .map_or(true, |len| len == 0)
}

/// Opens (creating it if needed) the index in `storage`, with the checkpoint it covers.
pub(crate) fn open_index(
    storage: &dyn Storage,
    config: &RedbIndexConfig,
) -> Result<(Arc<dyn Index>, IndexCheckpoint), EngineError> {
    let index: Arc<dyn Index> = Arc::new(RedbIndex::open(storage, config)?);
    let checkpoint = index.checkpoint()?;
    Ok((index, checkpoint))
}

/// Removes the index so the next open starts empty (when it is damaged or ahead of the log). The
/// caller has dropped every handle to it.
pub(crate) fn destroy_index(storage: &dyn Storage) -> Result<(), EngineError> {
    RedbIndex::destroy(storage)?;
    Ok(())
}
