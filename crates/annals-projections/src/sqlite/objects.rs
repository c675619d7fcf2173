//! The objects the SQLite target owns in its file: the bookkeeping tables' DDL, the reader
//! views, and the tables and rows a generation leaves behind.
//!
//! Everything here runs inside the caller's `BEGIN IMMEDIATE` transaction, so a swap repoints
//! the views, marks the new generation serving and drops the old one at once.

use rusqlite::params;

use super::classify::{classify_other, definition};
use crate::bookkeeping::{GENERATION_TABLES, generation_snapshot_prefix};
use crate::sql_text::{point_view_sql, quote_ident};
use crate::target::TargetError;

/// The bookkeeping tables (see `target`'s module doc), created if missing.
pub(super) const INSTALL: &str = "
CREATE TABLE IF NOT EXISTS annals_projections (
    projection TEXT NOT NULL,
    generation INTEGER NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (projection, generation)
);
CREATE TABLE IF NOT EXISTS annals_checkpoints (
    projection TEXT NOT NULL,
    generation INTEGER NOT NULL,
    partition INTEGER NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (projection, generation, partition)
);
CREATE TABLE IF NOT EXISTS annals_failures (
    projection TEXT NOT NULL,
    generation INTEGER NOT NULL,
    position INTEGER NOT NULL,
    stream TEXT NOT NULL,
    revision INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    message TEXT NOT NULL,
    action TEXT NOT NULL,
    recorded_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS annals_failures_by_generation
    ON annals_failures (projection, generation, recorded_at);
CREATE TABLE IF NOT EXISTS annals_parked (
    projection TEXT NOT NULL,
    generation INTEGER NOT NULL,
    position INTEGER NOT NULL,
    stream TEXT NOT NULL,
    revision INTEGER NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (projection, generation, position)
);
CREATE TABLE IF NOT EXISTS annals_snapshots (
    key TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    state BLOB NOT NULL
);
";

/// Points every reader view of `views` at its table in `generation`.
pub(super) fn point_views(
    tx: &rusqlite::Transaction<'_>,
    views: &[String],
    generation: u32,
) -> Result<(), TargetError> {
    for view in views {
        let (_, sql) = point_view_sql(view, generation);
        tx.execute_batch(&sql).map_err(definition)?;
    }
    Ok(())
}

/// Drops table `name` (its indexes go with it).
pub(super) fn drop_table(tx: &rusqlite::Transaction<'_>, name: &str) -> Result<(), TargetError> {
    tx.execute_batch(&format!("DROP TABLE IF EXISTS {};", quote_ident(name)))
        .map_err(classify_other)
}

/// Drops reader view `name`.
pub(super) fn drop_view(tx: &rusqlite::Transaction<'_>, name: &str) -> Result<(), TargetError> {
    tx.execute_batch(&format!("DROP VIEW IF EXISTS {};", quote_ident(name)))
        .map_err(classify_other)
}

/// Deletes a generation's bookkeeping rows and snapshots.
pub(super) fn delete_generation_rows(
    tx: &rusqlite::Transaction<'_>,
    projection: &str,
    generation: u32,
) -> Result<(), TargetError> {
    for table in GENERATION_TABLES {
        tx.execute(
            &format!("DELETE FROM {table} WHERE projection = ?1 AND generation = ?2"),
            params![projection, generation],
        )
        .map_err(classify_other)?;
    }
    let prefix = generation_snapshot_prefix(projection, generation);
    tx.execute(
        "DELETE FROM annals_snapshots WHERE substr(key, 1, length(?1)) = ?1",
        params![prefix],
    )
    .map_err(classify_other)?;
    Ok(())
}
