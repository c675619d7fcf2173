//! The objects the PostgreSQL target owns in the database: the bookkeeping tables' DDL, the
//! advisory locks that serialize changes to them, the names it accepts for a projection's
//! objects, the reader views, and the rows a generation leaves behind.
//!
//! PostgreSQL's DDL is transactional, so everything here runs inside the caller's transaction:
//! a swap repoints the views, marks the new generation serving and drops the old one at once.

use postgres::Transaction;

use super::classify::{definition, other};
use super::{StatementCache, exec, query};
use crate::bookkeeping::{GENERATION_TABLES, generation_snapshot_prefix};
use crate::sql_text::{point_view_sql, quote_ident};
use crate::target::TargetError;

/// Advisory lock key serializing [`crate::Target::install`] across connections ("annalsin").
const INSTALL_LOCK_KEY: i64 = 0x616e_6e61_6c73_696e;

/// The bookkeeping tables (see `target`'s module doc), created if missing. `annals_fences` is
/// the `fence` module's. The server's notices that a table already exists (every install after
/// the first) are left out of the logs.
const INSTALL: &str = "
SET LOCAL client_min_messages = warning;
CREATE TABLE IF NOT EXISTS annals_projections (
    projection TEXT NOT NULL,
    generation BIGINT NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (projection, generation)
);
CREATE TABLE IF NOT EXISTS annals_checkpoints (
    projection TEXT NOT NULL,
    generation BIGINT NOT NULL,
    partition BIGINT NOT NULL,
    position BIGINT NOT NULL,
    commit_token BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (projection, generation, partition)
);
CREATE TABLE IF NOT EXISTS annals_failures (
    id BIGSERIAL PRIMARY KEY,
    projection TEXT NOT NULL,
    generation BIGINT NOT NULL,
    position BIGINT NOT NULL,
    stream TEXT NOT NULL,
    revision BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    message TEXT NOT NULL,
    action TEXT NOT NULL,
    recorded_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS annals_failures_by_generation
    ON annals_failures (projection, generation, id);
CREATE TABLE IF NOT EXISTS annals_parked (
    projection TEXT NOT NULL,
    generation BIGINT NOT NULL,
    position BIGINT NOT NULL,
    stream TEXT NOT NULL,
    revision BIGINT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (projection, generation, position)
);
CREATE TABLE IF NOT EXISTS annals_snapshots (
    key TEXT PRIMARY KEY,
    position BIGINT NOT NULL,
    state BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS annals_fences (
    name TEXT PRIMARY KEY,
    token BIGINT NOT NULL
);
";

/// Creates the bookkeeping tables if missing, under [`INSTALL_LOCK_KEY`] so that connections
/// installing at once do not race on the catalog.
pub(super) fn install(
    tx: &mut Transaction<'_>,
    cache: &mut StatementCache,
) -> Result<(), TargetError> {
    query(
        tx,
        cache,
        "SELECT pg_advisory_xact_lock($1)",
        &[&INSTALL_LOCK_KEY],
    )?;
    tx.batch_execute(INSTALL).map_err(other)
}

/// Projection, table and view names become identifiers: only `[a-z][a-z0-9_]*`.
pub(super) fn check_name(name: &str) -> Result<(), TargetError> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63 - 12;
    if ok {
        Ok(())
    } else {
        Err(TargetError::Definition(format!(
            "`{name}` is not a valid object name ([a-z][a-z0-9_]*, at most 51 bytes)"
        )))
    }
}

/// Takes a transaction-level advisory lock on a projection, serializing changes to its objects
/// across connections.
pub(super) fn lock_projection(
    tx: &mut Transaction<'_>,
    cache: &mut StatementCache,
    projection: &str,
) -> Result<(), TargetError> {
    query(
        tx,
        cache,
        "SELECT pg_advisory_xact_lock(hashtext('annals:' || $1::text))",
        &[&projection],
    )?;
    Ok(())
}

/// Points every reader view of `views` at its table in `generation`.
pub(super) fn point_views(
    tx: &mut Transaction<'_>,
    views: &[String],
    generation: u32,
) -> Result<(), TargetError> {
    for view in views {
        check_name(view)?;
        let (real, sql) = point_view_sql(view, generation);
        tx.batch_execute(&sql)
            .map_err(|e| definition(&e, || format!("cannot point view `{view}` at `{real}`")))?;
    }
    Ok(())
}

/// Drops table `name` with whatever depends on it (its indexes, a view still over it).
pub(super) fn drop_table(tx: &mut Transaction<'_>, name: &str) -> Result<(), TargetError> {
    tx.batch_execute(&format!(
        "DROP TABLE IF EXISTS {} CASCADE",
        quote_ident(name)
    ))
    .map_err(|e| definition(&e, || format!("cannot drop `{name}`")))
}

/// Drops reader view `name`.
pub(super) fn drop_view(tx: &mut Transaction<'_>, name: &str) -> Result<(), TargetError> {
    tx.batch_execute(&format!("DROP VIEW IF EXISTS {}", quote_ident(name)))
        .map_err(|e| definition(&e, || format!("cannot drop view `{name}`")))
}

/// Deletes a generation's bookkeeping rows and snapshots.
pub(super) fn delete_generation_rows(
    tx: &mut Transaction<'_>,
    cache: &mut StatementCache,
    projection: &str,
    generation: u32,
) -> Result<(), TargetError> {
    let stored_generation = i64::from(generation);
    for table in GENERATION_TABLES {
        exec(
            tx,
            cache,
            &format!("DELETE FROM {table} WHERE projection = $1 AND generation = $2"),
            &[&projection, &stored_generation],
        )?;
    }
    let prefix = generation_snapshot_prefix(projection, generation);
    exec(
        tx,
        cache,
        "DELETE FROM annals_snapshots WHERE left(key, length($1)) = $1",
        &[&prefix],
    )?;
    Ok(())
}
