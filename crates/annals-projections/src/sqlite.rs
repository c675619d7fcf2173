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
//! ([`SlotMaps`]): looking names up on every execution cost a few percent of a rebuild.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use annals_core::Position;
use rusqlite::types::ToSqlOutput;
use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};

use crate::target::{
    Failure, FailureAction, Parked, PartitionCommit, SnapshotRecord, StoredGeneration,
    StoredProjection, TableRows, Target, TargetError, TargetKind, Value, check_identifier,
    generation_object,
};

/// How long a connection waits for another one's write lock before answering `Unavailable`.
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared statements each connection keeps (handler templates resolve to a few distinct SQL
/// texts, so this holds all of them in practice).
const STATEMENT_CACHE_CAPACITY: usize = 256;
/// Statement texts whose parameter slots a connection remembers; past this the memory is cleared
/// (it only saves work).
const SLOT_MAPS_MAX: usize = 1_024;
/// SQLite's page cache per connection, in KiB. The default (2 MiB) makes a batch that touches
/// pages all over a view's indexes spill and re-read pages within the transaction; measured with
/// `annals bench project`, it spent most of a rebuild's time in the kernel copying pages.
pub const SQLITE_CACHE_KIB: i64 = 64 * 1024;

const INSTALL: &str = "
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

/// A SQLite database as a projection target.
#[derive(Debug)]
pub struct SqliteTarget {
    path: PathBuf,
    conn: Connection,
    slots: SlotMaps,
}

/// For each statement text seen, the value index bound to each parameter slot (`$3` in slot 1
/// → value 2), or `None` for a name that is not `$n`. Keyed by the text's address: handlers
/// hand out clones of one `Arc<str>` per template, and the kept clone pins the address, so an
/// entry can never be taken for another text.
#[derive(Debug, Default)]
struct SlotMaps {
    maps: HashMap<usize, (Arc<str>, Vec<Option<usize>>)>,
}

impl SlotMaps {
    fn get(&self, sql: &Arc<str>) -> Option<&[Option<usize>]> {
        let (kept, slots) = self.maps.get(&slot_key(sql))?;
        Arc::ptr_eq(kept, sql).then_some(slots.as_slice())
    }

    fn insert(&mut self, sql: &Arc<str>, slots: Vec<Option<usize>>) {
        if self.maps.len() >= SLOT_MAPS_MAX {
            self.maps.clear();
        }
        self.maps.insert(slot_key(sql), (Arc::clone(sql), slots));
    }
}

fn slot_key(sql: &Arc<str>) -> usize {
    Arc::as_ptr(sql).cast::<u8>() as usize
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

/// Binds a [`Value`] the way SQLite stores it (`Json` as text, `Bool` as 0/1).
struct Bound<'a>(&'a Value);

impl rusqlite::ToSql for Bound<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        use rusqlite::types::ValueRef;
        Ok(ToSqlOutput::Borrowed(match self.0 {
            Value::Null => ValueRef::Null,
            Value::Bool(b) => ValueRef::Integer(i64::from(*b)),
            Value::Integer(n) => ValueRef::Integer(*n),
            Value::Real(r) => ValueRef::Real(*r),
            Value::Text(s) | Value::Json(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn transient(code: Option<ErrorCode>) -> bool {
    matches!(
        code,
        Some(
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::CannotOpen
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::OutOfMemory
                | ErrorCode::FileLockingProtocolFailed
        )
    )
}

fn unavailable(e: rusqlite::Error) -> TargetError {
    TargetError::Unavailable(e.to_string())
}

fn definition(e: rusqlite::Error) -> TargetError {
    if transient(e.sqlite_error_code()) {
        return unavailable(e);
    }
    TargetError::Definition(e.to_string())
}

/// Errors of bookkeeping statements: transient ones are `Unavailable`, the rest `Other`.
fn classify_other(e: rusqlite::Error) -> TargetError {
    if transient(e.sqlite_error_code()) {
        return unavailable(e);
    }
    TargetError::Other(e.to_string())
}

/// Errors of a projection's own statement: transient ones are `Unavailable`, the rest (syntax,
/// constraint, type, missing parameter) are the statement's fault.
fn classify_statement(e: rusqlite::Error, index: usize, sql: &str) -> TargetError {
    if transient(e.sqlite_error_code()) {
        return unavailable(e);
    }
    TargetError::Statement {
        index: Some(index),
        message: format!("{e} (in `{}`)", abbreviate(sql)),
    }
}

fn abbreviate(sql: &str) -> String {
    const SHOWN_CHARS_MAX: usize = 200;
    let one_line = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= SHOWN_CHARS_MAX {
        return one_line;
    }
    let mut s: String = one_line.chars().take(SHOWN_CHARS_MAX).collect();
    s.push('…');
    s
}

fn position_to_sql(p: Position) -> Result<i64, TargetError> {
    i64::try_from(p.0).map_err(|_| TargetError::Other(format!("position {p} out of range")))
}

fn position_from_sql(n: i64) -> Result<Position, TargetError> {
    u64::try_from(n)
        .map(Position)
        .map_err(|_| TargetError::Other(format!("negative position {n} in bookkeeping")))
}

fn revision_to_sql(r: u64) -> i64 {
    // Tombstones carry revision i64::MAX; nothing larger is ever assigned.
    i64::try_from(r).unwrap_or(i64::MAX)
}

/// Runs one statement with `$n` parameters bound by name.
fn run_statement(
    tx: &rusqlite::Transaction<'_>,
    slots: &mut SlotMaps,
    sql: &Arc<str>,
    values: &[Value],
    index: usize,
) -> Result<(), TargetError> {
    let mut stmt = tx
        .prepare_cached(sql)
        .map_err(|e| classify_statement(e, index, sql))?;
    if slots.get(sql).is_none() {
        let map = (1..=stmt.parameter_count())
            .map(|slot| {
                stmt.parameter_name(slot)
                    .and_then(|name| name.strip_prefix('$'))
                    .and_then(|n| n.parse::<usize>().ok())
                    .and_then(|n| n.checked_sub(1))
            })
            .collect();
        slots.insert(sql, map);
    }
    for (slot, value_index) in slots.get(sql).unwrap_or_default().iter().enumerate() {
        let slot = slot + 1;
        let Some(value) = value_index.and_then(|n| values.get(n)) else {
            return Err(TargetError::Statement {
                index: Some(index),
                message: format!(
                    "parameter {} has no value ({} given) in `{}`",
                    stmt.parameter_name(slot).unwrap_or("?"),
                    values.len(),
                    abbreviate(sql)
                ),
            });
        };
        stmt.raw_bind_parameter(slot, Bound(value))
            .map_err(|e| classify_statement(e, index, sql))?;
    }
    // A statement may return rows (`… RETURNING`); step through them.
    let mut rows = stmt.raw_query();
    while rows
        .next()
        .map_err(|e| classify_statement(e, index, sql))?
        .is_some()
    {}
    Ok(())
}

fn delete_generation_rows(
    tx: &rusqlite::Transaction<'_>,
    projection: &str,
    generation: u32,
) -> Result<(), TargetError> {
    for table in [
        "annals_projections",
        "annals_checkpoints",
        "annals_failures",
        "annals_parked",
    ] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE projection = ?1 AND generation = ?2"),
            params![projection, generation],
        )
        .map_err(classify_other)?;
    }
    let prefix = format!("projection:{projection}:g{generation}:");
    tx.execute(
        "DELETE FROM annals_snapshots WHERE substr(key, 1, length(?1)) = ?1",
        params![prefix],
    )
    .map_err(classify_other)?;
    Ok(())
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn point_views(
    tx: &rusqlite::Transaction<'_>,
    views: &[String],
    generation: u32,
) -> Result<(), TargetError> {
    for view in views {
        let real = generation_object(view, generation);
        tx.execute_batch(&format!(
            "DROP VIEW IF EXISTS {v}; CREATE VIEW {v} AS SELECT * FROM {t};",
            v = quote_ident(view),
            t = quote_ident(&real)
        ))
        .map_err(definition)?;
    }
    Ok(())
}

impl Target for SqliteTarget {
    fn kind(&self) -> TargetKind {
        TargetKind::Sqlite
    }

    fn connect_another(&self) -> Result<Box<dyn Target>, TargetError> {
        Ok(Box::new(SqliteTarget::open(&self.path)?))
    }

    fn install(&mut self) -> Result<(), TargetError> {
        self.conn.execute_batch(INSTALL).map_err(classify_other)
    }

    fn check(&mut self, setup: &[String], statements: &[String]) -> Result<(), TargetError> {
        let tx = self.begin()?;
        for (i, sql) in setup.iter().enumerate() {
            tx.execute_batch(sql).map_err(|e| match definition(e) {
                TargetError::Definition(m) => TargetError::Definition(format!(
                    "setup statement {} (`{}`) failed: {m}",
                    i + 1,
                    abbreviate(sql)
                )),
                other => other,
            })?;
        }
        for (i, sql) in statements.iter().enumerate() {
            tx.prepare(sql).map_err(|e| match definition(e) {
                TargetError::Definition(m) => TargetError::Definition(format!(
                    "statement {} (`{}`) does not prepare: {m}",
                    i + 1,
                    abbreviate(sql)
                )),
                other => other,
            })?;
        }
        tx.rollback().map_err(classify_other)
    }

    fn create_generation(
        &mut self,
        projection: &str,
        generation: u32,
        setup: &[String],
        serving: bool,
        views: &[String],
    ) -> Result<(), TargetError> {
        let tx = self.begin()?;
        let exists: Option<i64> = tx
            .query_row(
                "SELECT 1 FROM annals_projections WHERE projection = ?1 AND generation = ?2",
                params![projection, generation],
                |r| r.get(0),
            )
            .optional()
            .map_err(classify_other)?;
        if exists.is_some() {
            return tx.commit().map_err(classify_other);
        }
        for (i, sql) in setup.iter().enumerate() {
            tx.execute_batch(sql).map_err(|e| match definition(e) {
                TargetError::Definition(m) => {
                    TargetError::Definition(format!("setup statement {} failed: {m}", i + 1))
                }
                other => other,
            })?;
        }
        tx.execute(
            "INSERT INTO annals_projections (projection, generation, state) VALUES (?1, ?2, ?3)",
            params![
                projection,
                generation,
                if serving { "serving" } else { "building" }
            ],
        )
        .map_err(classify_other)?;
        if serving {
            point_views(&tx, views, generation)?;
        }
        tx.commit().map_err(classify_other)
    }

    fn load(&mut self, projection: &str) -> Result<StoredProjection, TargetError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT generation, state FROM annals_projections WHERE projection = ?1 \
                 ORDER BY generation",
            )
            .map_err(classify_other)?;
        let gens = stmt
            .query_map(params![projection], |r| {
                Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(classify_other)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(classify_other)?;
        drop(stmt);
        let mut out = StoredProjection::default();
        for (generation, state) in gens {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT partition, position FROM annals_checkpoints \
                     WHERE projection = ?1 AND generation = ?2 ORDER BY partition",
                )
                .map_err(classify_other)?;
            let rows = stmt
                .query_map(params![projection, generation], |r| {
                    Ok((r.get::<_, u32>(0)?, r.get::<_, i64>(1)?))
                })
                .map_err(classify_other)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(classify_other)?;
            let checkpoints = rows
                .into_iter()
                .map(|(p, pos)| Ok((p, position_from_sql(pos)?)))
                .collect::<Result<Vec<_>, TargetError>>()?;
            out.generations.push(StoredGeneration {
                generation,
                serving: state == "serving",
                checkpoints,
            });
        }
        Ok(out)
    }

    fn commit(&mut self, c: &PartitionCommit<'_>) -> Result<(), TargetError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(classify_other)?;
        for (i, statement) in c.statements.iter().enumerate() {
            run_statement(&tx, &mut self.slots, &statement.sql, &statement.params, i)?;
        }
        tx.prepare_cached(
            "INSERT INTO annals_checkpoints (projection, generation, partition, position) \
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (projection, generation, partition) \
             DO UPDATE SET position = excluded.position",
        )
        .and_then(|mut s| {
            s.execute(params![
                c.projection,
                c.generation,
                c.partition,
                i64::try_from(c.checkpoint.0).unwrap_or(i64::MAX)
            ])
        })
        .map_err(classify_other)?;
        for f in c.failures {
            tx.prepare_cached(
                "INSERT INTO annals_failures (projection, generation, position, stream, \
                 revision, event_type, message, action, recorded_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    c.projection,
                    c.generation,
                    i64::try_from(f.position.0).unwrap_or(i64::MAX),
                    f.stream,
                    revision_to_sql(f.revision),
                    f.event_type,
                    f.message,
                    f.action.as_str(),
                    f.recorded_at_ms
                ])
            })
            .map_err(classify_other)?;
        }
        for p in c.parked {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO annals_parked (projection, generation, position, stream, \
                 revision, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    c.projection,
                    c.generation,
                    i64::try_from(p.position.0).unwrap_or(i64::MAX),
                    p.stream,
                    revision_to_sql(p.revision),
                    p.reason
                ])
            })
            .map_err(classify_other)?;
        }
        for p in c.released {
            tx.prepare_cached(
                "DELETE FROM annals_parked WHERE projection = ?1 AND generation = ?2 \
                 AND position = ?3",
            )
            .and_then(|mut s| {
                s.execute(params![
                    c.projection,
                    c.generation,
                    i64::try_from(p.0).unwrap_or(i64::MAX)
                ])
            })
            .map_err(classify_other)?;
        }
        if let Some(snapshot) = c.snapshot {
            upsert_snapshot(&tx, snapshot)?;
        }
        tx.commit().map_err(classify_other)
    }

    fn swap(
        &mut self,
        projection: &str,
        from: Option<u32>,
        to: u32,
        views: &[String],
    ) -> Result<(), TargetError> {
        let tx = self.begin()?;
        point_views(&tx, views, to)?;
        tx.execute(
            "UPDATE annals_projections SET state = 'serving' WHERE projection = ?1 \
             AND generation = ?2",
            params![projection, to],
        )
        .map_err(classify_other)?;
        if let Some(from) = from.filter(|f| *f != to) {
            for table in views {
                tx.execute_batch(&format!(
                    "DROP TABLE IF EXISTS {};",
                    quote_ident(&generation_object(table, from))
                ))
                .map_err(classify_other)?;
            }
            delete_generation_rows(&tx, projection, from)?;
        }
        tx.commit().map_err(classify_other)
    }

    fn drop_generation(
        &mut self,
        projection: &str,
        generation: u32,
        tables: &[String],
        drop_views: bool,
    ) -> Result<(), TargetError> {
        let tx = self.begin()?;
        for table in tables {
            if drop_views {
                tx.execute_batch(&format!("DROP VIEW IF EXISTS {};", quote_ident(table)))
                    .map_err(classify_other)?;
            }
            tx.execute_batch(&format!(
                "DROP TABLE IF EXISTS {};",
                quote_ident(&generation_object(table, generation))
            ))
            .map_err(classify_other)?;
        }
        delete_generation_rows(&tx, projection, generation)?;
        tx.commit().map_err(classify_other)
    }

    fn parked(&mut self, projection: &str, generation: u32) -> Result<Vec<Parked>, TargetError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT position, stream, revision, reason FROM annals_parked \
                 WHERE projection = ?1 AND generation = ?2 ORDER BY position",
            )
            .map_err(classify_other)?;
        let rows = stmt
            .query_map(params![projection, generation], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })
            .map_err(classify_other)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(classify_other)?;
        rows.into_iter()
            .map(|(pos, stream, revision, reason)| {
                Ok(Parked {
                    position: position_from_sql(pos)?,
                    stream,
                    revision: u64::try_from(revision).unwrap_or(0),
                    reason,
                })
            })
            .collect()
    }

    fn failures(
        &mut self,
        projection: &str,
        generation: u32,
        limit: usize,
    ) -> Result<Vec<Failure>, TargetError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT position, stream, revision, event_type, message, action, recorded_at \
                 FROM annals_failures WHERE projection = ?1 AND generation = ?2 \
                 ORDER BY recorded_at DESC, rowid DESC LIMIT ?3",
            )
            .map_err(classify_other)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![projection, generation, limit], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            })
            .map_err(classify_other)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(classify_other)?;
        rows.into_iter()
            .map(|(pos, stream, revision, event_type, message, action, at)| {
                let action = FailureAction::parse(&action)?;
                Ok(Failure {
                    position: position_from_sql(pos)?,
                    stream,
                    revision: u64::try_from(revision).unwrap_or(0),
                    event_type,
                    message,
                    action,
                    recorded_at_ms: at,
                })
            })
            .collect()
    }

    fn save_snapshot(&mut self, snapshot: &SnapshotRecord) -> Result<(), TargetError> {
        let tx = self.begin()?;
        upsert_snapshot(&tx, snapshot)?;
        tx.commit().map_err(classify_other)
    }

    fn read_table(
        &mut self,
        view: &str,
        limit: usize,
        offset: usize,
    ) -> Result<TableRows, TargetError> {
        check_identifier(view)?;
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT * FROM {view} ORDER BY 1 LIMIT ?1 OFFSET ?2"
            ))
            .map_err(definition)?;
        let columns: Vec<String> = stmt
            .column_names()
            .iter()
            .map(|c| (*c).to_owned())
            .collect();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let mut rows = stmt.query(params![limit, offset]).map_err(classify_other)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(classify_other)? {
            let mut values = Vec::with_capacity(columns.len());
            for i in 0..columns.len() {
                use rusqlite::types::ValueRef;
                values.push(match row.get_ref(i).map_err(classify_other)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(n) => Value::Integer(n),
                    ValueRef::Real(r) => Value::Real(r),
                    ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Value::Blob(b.to_vec()),
                });
            }
            out.push(values);
        }
        Ok(TableRows { columns, rows: out })
    }

    fn load_snapshot(&mut self, key: &str) -> Result<Option<SnapshotRecord>, TargetError> {
        let row = self
            .conn
            .query_row(
                "SELECT position, state FROM annals_snapshots WHERE key = ?1",
                params![key],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
            )
            .optional()
            .map_err(classify_other)?;
        row.map(|(pos, state)| {
            Ok(SnapshotRecord {
                key: key.to_owned(),
                position: position_from_sql(pos)?,
                state,
            })
        })
        .transpose()
    }
}

fn upsert_snapshot(
    tx: &rusqlite::Transaction<'_>,
    snapshot: &SnapshotRecord,
) -> Result<(), TargetError> {
    tx.prepare_cached(
        "INSERT INTO annals_snapshots (key, position, state) VALUES (?1, ?2, ?3) \
         ON CONFLICT (key) DO UPDATE SET position = excluded.position, state = excluded.state",
    )
    .and_then(|mut s| {
        s.execute(params![
            snapshot.key,
            position_to_sql(snapshot.position).unwrap_or(i64::MAX),
            snapshot.state
        ])
    })
    .map_err(classify_other)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::target::Statement;

    fn stmt(sql: &str, params: Vec<Value>) -> Statement {
        Statement {
            sql: Arc::from(sql),
            params,
        }
    }

    #[test]
    fn binds_dollar_parameters_by_name_and_classifies_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = SqliteTarget::open(dir.path().join("v.db")).unwrap();
        let views = vec!["t".to_owned()];
        t.create_generation(
            "p",
            1,
            &["CREATE TABLE t__g1 (id TEXT PRIMARY KEY, n INTEGER, doc TEXT)".to_owned()],
            true,
            &views,
        )
        .unwrap();
        // `$2` appears before `$1`: binding by position would swap them.
        let ok = [stmt(
            "INSERT INTO t__g1 (n, id, doc) VALUES ($2, $1, $3)",
            vec![
                Value::Text("a".into()),
                Value::Integer(7),
                Value::Json("{\"x\":1}".into()),
            ],
        )];
        let commit = PartitionCommit {
            projection: "p",
            generation: 1,
            partition: 0,
            statements: &ok,
            checkpoint: Position(5),
            failures: &[],
            parked: &[],
            released: &[],
            snapshot: None,
        };
        t.commit(&commit).unwrap();
        assert_eq!(
            t.query_rows("SELECT id, n, doc FROM t").unwrap(),
            vec![vec![
                Some("a".to_owned()),
                Some("7".to_owned()),
                Some("{\"x\":1}".to_owned())
            ]]
        );
        // A duplicate key fails the second statement; nothing of the batch lands.
        let bad = [
            stmt(
                "INSERT INTO t__g1 (id, n) VALUES ($1, 1)",
                vec![Value::Text("b".into())],
            ),
            stmt(
                "INSERT INTO t__g1 (id, n) VALUES ($1, 1)",
                vec![Value::Text("a".into())],
            ),
        ];
        let err = t
            .commit(&PartitionCommit {
                statements: &bad,
                checkpoint: Position(9),
                ..commit
            })
            .unwrap_err();
        assert!(
            matches!(err, TargetError::Statement { index: Some(1), .. }),
            "{err:?}"
        );
        assert_eq!(t.query_rows("SELECT id FROM t").unwrap().len(), 1);
        let stored = t.load("p").unwrap();
        assert_eq!(stored.generations[0].checkpoints, vec![(0, Position(5))]);
        // A missing parameter value is the statement's fault, not a silent NULL.
        let missing = [stmt("INSERT INTO t__g1 (id, n) VALUES ($1, $2)", vec![])];
        let err = t
            .commit(&PartitionCommit {
                statements: &missing,
                ..commit
            })
            .unwrap_err();
        assert!(matches!(err, TargetError::Statement { index: Some(0), .. }));
        // One statement text shared by several statements (as handlers emit them): the slots
        // worked out for the first hold for the rest.
        let shared: Arc<str> = Arc::from("INSERT INTO t__g1 (n, id) VALUES ($2, $1)");
        let rows: Vec<Statement> = ["c", "d", "e"]
            .iter()
            .zip(1..)
            .map(|(id, n)| Statement {
                sql: Arc::clone(&shared),
                params: vec![Value::Text((*id).into()), Value::Integer(n)],
            })
            .collect();
        t.commit(&PartitionCommit {
            statements: &rows,
            checkpoint: Position(12),
            ..commit
        })
        .unwrap();
        assert_eq!(
            t.query_rows("SELECT id, n FROM t WHERE id > 'b' ORDER BY id")
                .unwrap(),
            vec![
                vec![Some("c".to_owned()), Some("1".to_owned())],
                vec![Some("d".to_owned()), Some("2".to_owned())],
                vec![Some("e".to_owned()), Some("3".to_owned())],
            ]
        );
    }

    #[test]
    fn busy_database_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.db");
        let mut a = SqliteTarget::open(&path).unwrap();
        a.conn.busy_timeout(Duration::from_millis(10)).unwrap();
        let b = SqliteTarget::open(&path).unwrap();
        b.conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        let err = a.save_snapshot(&SnapshotRecord {
            key: "k".into(),
            position: Position(1),
            state: vec![1],
        });
        assert!(matches!(err, Err(TargetError::Unavailable(_))), "{err:?}");
        b.conn.execute_batch("ROLLBACK").unwrap();
    }
}
