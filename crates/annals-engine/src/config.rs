//! Engine settings and their named defaults.

use std::time::Duration;

use annals_index::RedbIndexConfig;
use annals_log::LogConfig;

/// When an append is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// After its batch is `fdatasync`ed (the default).
    Fsync,
    /// After its batch is written to the OS, with no sync: a machine crash can lose acknowledged
    /// appends. For throwaway stores and tests only.
    None,
}

/// Most appends waiting for the writer; senders wait when it is full.
pub const WRITER_QUEUE_APPENDS_MAX: usize = 8_192;
/// Most appends in one group-commit batch.
pub const GROUP_COMMIT_APPENDS_MAX: usize = 8_192;
/// Streams whose state the writer keeps in memory beyond those not yet indexed.
pub const STREAM_CACHE_ENTRIES_MAX: usize = 200_000;
/// Most recent event ids remembered for idempotent appends.
pub const IDEMPOTENCY_WINDOW_EVENTS: usize = 100_000;
/// How often the index is made durable.
pub const INDEX_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Records per index transaction while catching up from the log on open.
pub(crate) const REINDEX_BATCH_RECORDS_MAX: usize = 20_000;

/// How an engine is opened.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub durability: Durability,
    pub log: LogConfig,
    pub index: RedbIndexConfig,
    pub stream_cache_entries_max: usize,
    pub idempotency_window_events: usize,
    pub index_flush_interval: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            durability: Durability::Fsync,
            log: LogConfig::default(),
            index: RedbIndexConfig::default(),
            stream_cache_entries_max: STREAM_CACHE_ENTRIES_MAX,
            idempotency_window_events: IDEMPOTENCY_WINDOW_EVENTS,
            index_flush_interval: INDEX_FLUSH_INTERVAL,
        }
    }
}
