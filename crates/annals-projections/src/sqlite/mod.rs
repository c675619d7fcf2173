//! The SQLite [`Target`]: one file, WAL journal, `synchronous=FULL`, one connection per worker.
//!
//! Every call that changes something runs in one `BEGIN IMMEDIATE` transaction, so a partition's
//! rows, checkpoint, failures, parked rows and snapshot are durable together or not at all (the
//! contract of [`Target::commit`]). `BEGIN IMMEDIATE` takes the write lock up front: two workers
//! never both read under a shared lock and then deadlock upgrading it; the loser waits up to
//! [`SQLITE_BUSY_TIMEOUT`] and then answers [`TargetError::Unavailable`], which the runtime
//! retries.
//!
//! Statements use `$1`, `$2`, …; to SQLite those are *named* parameters numbered in order of
//! first appearance, so values are bound by looking up each name (`parameter_index("$3")`), never
//! by position. The slot → value mapping is worked out once per statement text and kept
//! (see `bind`): looking names up on every execution cost a few percent of a rebuild.
//!
//! ## Files
//! - this one: opening the file and the connection's settings;
//! - `classify`: which errors are `Unavailable` and which are faults;
//! - `bind`: statements run with `$n` parameters bound by name;
//! - `objects`: bookkeeping DDL, reader views, a generation's tables and rows;
//! - `target`: the [`Target`] calls.

mod bind;
mod classify;
mod objects;
mod target;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use crate::target::{Target, TargetError};
use bind::SlotMaps;
use classify::{classify_other, definition, unavailable};

/// How long a connection waits for another one's write lock before answering `Unavailable`.
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared statements each connection keeps (handler templates resolve to a few distinct SQL
/// texts, so this holds all of them in practice).
const STATEMENT_CACHE_CAPACITY: usize = 256;
/// SQLite's page cache per connection, in KiB. The default (2 MiB) makes a batch that touches
/// pages all over a view's indexes spill and re-read pages within the transaction; measured with
/// `annals bench project`, it spent most of a rebuild's time in the kernel copying pages.
pub const SQLITE_CACHE_KIB: i64 = 64 * 1024;

/// A SQLite database as a projection target.
#[derive(Debug)]
pub struct SqliteTarget {
    path: PathBuf,
    conn: Connection,
    slots: SlotMaps,
}

impl SqliteTarget {
    /// Opens (creating if needed) the database file at `path` and installs the bookkeeping
    /// tables.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, TargetError> {
        let path = path.as_ref().to_path_buf();
        let conn = Connection::open(&path).map_err(unavailable)?;
        conn.busy_timeout(SQLITE_BUSY_TIMEOUT)
            .map_err(unavailable)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(unavailable)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(unavailable)?;
        conn.pragma_update(None, "cache_size", -SQLITE_CACHE_KIB)
            .map_err(unavailable)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
        let mut target = Self {
            path,
            conn,
            slots: SlotMaps::default(),
        };
        target.install()?;
        Ok(target)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs a read-only query and returns every row as text values, for tests and tools that
    /// look at a view (`NULL` as `None`, numbers formatted, blobs as lowercase hex).
    pub fn query_rows(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, TargetError> {
        let mut stmt = self.conn.prepare(sql).map_err(definition)?;
        let columns = stmt.column_count();
        let mut rows = stmt.query([]).map_err(classify_other)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(classify_other)? {
            let mut values = Vec::with_capacity(columns);
            for i in 0..columns {
                use rusqlite::types::ValueRef;
                let v = match row.get_ref(i).map_err(classify_other)? {
                    ValueRef::Null => None,
                    ValueRef::Integer(n) => Some(n.to_string()),
                    ValueRef::Real(r) => Some(r.to_string()),
                    ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Some(b.iter().map(|x| format!("{x:02x}")).collect()),
                };
                values.push(v);
            }
            out.push(values);
        }
        Ok(out)
    }

    fn begin(&mut self) -> Result<rusqlite::Transaction<'_>, TargetError> {
        self.conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(classify_other)
    }
}
