//! The PostgreSQL [`Target`], over the blocking `postgres` client: one connection per worker,
//! every change in one transaction.
//!
//! ## Binding
//! Statements are prepared, so PostgreSQL infers each parameter's type from the SQL; a
//! [`Value`] is converted to that type in [`bind`] (an integer into `int2`/`int4`/`int8` with a
//! range check, into `numeric` or `float8`, into `text`; a text into `uuid`, `timestamptz`,
//! `numeric` or any other type by sending it in PostgreSQL's text format, which the server
//! parses; JSON into `json`/`jsonb`). A value that cannot become the parameter's type is this
//! statement's fault ([`TargetError::Statement`], naming the parameter); values never enter the
//! SQL text.
//!
//! ## Errors
//! A lost connection, an I/O error, a server shutting down or starting (`57P01`–`57P03`), any
//! SQLSTATE of class `08` (connection exception), a serialization failure (`40001`) or a
//! deadlock (`40P01`) is [`TargetError::Unavailable`]: the connection is dropped and the next
//! call connects again, so the runtime's retries resume by themselves once the server is back.
//! Other database errors in a batch are [`TargetError::Statement`] with the statement's index.
//!
//! A connection lost after `COMMIT` was sent leaves the outcome unknown: the server may have
//! committed. Each commit writes a fresh token into its checkpoint row; when the answer to a
//! `COMMIT` is lost, the target remembers the token and, before running the runtime's retry of
//! that batch, reads the row back: if the token is there the batch committed and the retry
//! returns Ok without applying it twice. (Killing the server mid-run found this: one event
//! applied twice.)
//!
//! ## Objects
//! Bookkeeping tables are created with `CREATE TABLE IF NOT EXISTS` under a transaction-level
//! advisory lock, so concurrent installs do not race on the catalog. Reader views are dropped and
//! created again on a swap (`CREATE OR REPLACE VIEW` cannot change a view's columns) in the same
//! transaction that marks the new generation serving and drops the old tables, so a reader sees
//! the old rows or the new ones: PostgreSQL's DDL is transactional.

use std::borrow::Cow;
use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use annals_core::Position;
use bytes::BytesMut;
use postgres::error::SqlState;
use postgres::types::{Format, IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, Config, NoTls, Transaction};

use crate::target::{
    Failure, FailureAction, Parked, PartitionCommit, SnapshotRecord, Statement, StoredGeneration,
    StoredProjection, TableRows, Target, TargetError, TargetKind, Value, check_identifier,
    generation_object,
};

/// Prepared statements each connection keeps, by SQL text. Handler templates resolve to a few
/// distinct texts per generation, so this holds all of them in practice; past it the cache
/// starts over rather than grow with handlers that build SQL per event.
pub const POSTGRES_STATEMENT_CACHE_MAX: usize = 256;

/// Advisory lock key serializing [`Target::install`] across connections ("annalsin").
const INSTALL_LOCK_KEY: i64 = 0x616e_6e61_6c73_696e;

const INSTALL: &str = "
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
";

/// A PostgreSQL database as a projection target.
pub struct PostgresTarget {
    url: String,
    config: Config,
    /// `None` after the connection was lost; the next call connects again.
    client: Option<Client>,
    statements: HashMap<String, postgres::Statement>,
    /// A commit whose COMMIT was sent but whose answer was lost.
    in_doubt: Option<InDoubt>,
}

/// What is needed to tell whether a commit with a lost answer took effect.
#[derive(Debug)]
struct InDoubt {
    projection: String,
    generation: u32,
    partition: u32,
    checkpoint: Position,
    statements: usize,
    token: i64,
}

/// A token unlikely to equal the one a checkpoint row holds already: the clock, the process
/// and a counter mixed.
fn next_commit_token() -> i64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mixed = nanos
        ^ (u64::from(std::process::id()) << 40)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    i64::from_ne_bytes(mixed.to_ne_bytes())
}

impl std::fmt::Debug for PostgresTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresTarget")
            .field("host", &self.config.get_hosts())
            .field("port", &self.config.get_ports())
            .field("dbname", &self.config.get_dbname())
            .field("connected", &self.client.is_some())
            .field("cached_statements", &self.statements.len())
            .finish()
    }
}

impl PostgresTarget {
    /// Connects to `url` (`postgres://user@host:port/db`, or a libpq key=value string) without
    /// TLS and creates the bookkeeping tables if missing. A server that cannot be reached is
    /// [`TargetError::Unavailable`]; a URL that does not parse is [`TargetError::Definition`].
    pub fn connect(url: &str) -> Result<Self, TargetError> {
        let config: Config = url
            .parse()
            .map_err(|e| TargetError::Definition(format!("bad PostgreSQL URL: {e}")))?;
        let mut target = Self {
            url: url.to_owned(),
            config,
            client: None,
            statements: HashMap::new(),
            in_doubt: None,
        };
        target.client()?;
        target.install()?;
        Ok(target)
    }

    /// The URL this target connects to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs a read-only query in PostgreSQL's text format: each row's columns as text (`None`
    /// for NULL). For tests and diagnostics.
    pub fn query_rows(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, TargetError> {
        let result = self.client().and_then(|client| {
            client.simple_query(sql).map_err(|e| match classify(&e) {
                Class::Unavailable => TargetError::Unavailable(describe(&e)),
                Class::Fault => TargetError::Other(describe(&e)),
            })
        });
        let messages = self.settle(result)?;
        Ok(messages
            .into_iter()
            .filter_map(|m| match m {
                postgres::SimpleQueryMessage::Row(row) => Some(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_owned))
                        .collect(),
                ),
                _ => None,
            })
            .collect())
    }

    /// The open connection, connecting first if there is none.
    fn client(&mut self) -> Result<&mut Client, TargetError> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
        }
        if self.client.is_none() {
            self.statements.clear();
            let client = self.config.connect(NoTls).map_err(|e| {
                TargetError::Unavailable(format!("cannot connect to PostgreSQL: {}", describe(&e)))
            })?;
            tracing::debug!(dbname = ?self.config.get_dbname(), "connected to PostgreSQL");
            self.client = Some(client);
        }
        self.client
            .as_mut()
            .ok_or_else(|| TargetError::Unavailable("not connected".to_owned()))
    }

    /// Settles a commit whose answer was lost, before `c` (the runtime's retry of it) runs: true
    /// if it did commit and `c` is the same batch, so `c` must not be applied again.
    fn resolve_in_doubt(&mut self, c: &PartitionCommit<'_>) -> Result<bool, TargetError> {
        let Some(doubt) = self.in_doubt.take() else {
            return Ok(false);
        };
        if doubt.projection != c.projection
            || doubt.generation != c.generation
            || doubt.partition != c.partition
        {
            tracing::warn!(projection = %doubt.projection, partition = doubt.partition,
                "a commit whose answer was lost is not retried; its outcome is left to the checkpoint");
            return Ok(false);
        }
        let key = (
            c.projection,
            i64::from(c.generation),
            i64::from(c.partition),
        );
        let stored = self.in_transaction(|tx, cache| {
            let rows = query(
                tx,
                cache,
                "SELECT commit_token FROM annals_checkpoints \
                 WHERE projection = $1 AND generation = $2 AND partition = $3",
                &[&key.0, &key.1, &key.2],
            )?;
            rows.first()
                .map(|row| row.try_get::<_, i64>(0).map_err(other))
                .transpose()
        });
        match stored {
            Err(e) => {
                self.in_doubt = Some(doubt);
                Err(e)
            }
            Ok(Some(token)) if token == doubt.token => {
                let same =
                    doubt.checkpoint == c.checkpoint && doubt.statements == c.statements.len();
                if same {
                    tracing::info!(projection = %doubt.projection, partition = doubt.partition,
                        checkpoint = %doubt.checkpoint,
                        "a commit whose answer was lost had committed; not applying it again");
                } else {
                    tracing::warn!(projection = %doubt.projection, partition = doubt.partition,
                        "a commit whose answer was lost had committed, and a different batch followed");
                }
                Ok(same)
            }
            Ok(_) => Ok(false),
        }
    }

    /// Forgets the connection after an `Unavailable` answer, so the next call reconnects.
    fn settle<T>(&mut self, result: Result<T, TargetError>) -> Result<T, TargetError> {
        if let Err(TargetError::Unavailable(message)) = &result {
            tracing::warn!(%message, "PostgreSQL target unavailable; will reconnect");
            self.client = None;
            self.statements.clear();
        }
        result
    }

    /// Runs `work` in one transaction on the connection (with the statement cache at hand) and
    /// commits it; any error rolls back.
    fn in_transaction<T>(
        &mut self,
        work: impl FnOnce(
            &mut Transaction<'_>,
            &mut HashMap<String, postgres::Statement>,
        ) -> Result<T, TargetError>,
    ) -> Result<T, TargetError> {
        let result = (|| {
            self.client()?;
            let Self {
                client, statements, ..
            } = self;
            let client = client
                .as_mut()
                .ok_or_else(|| TargetError::Unavailable("not connected".to_owned()))?;
            let mut tx = client.transaction().map_err(other)?;
            let value = work(&mut tx, statements)?;
            tx.commit().map_err(other)?;
            Ok(value)
        })();
        self.settle(result)
    }
}

/// How an error from the server or the connection counts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Class {
    /// Connection lost, server down or starting, or the transaction must be retried.
    Unavailable,
    /// The statement or its values.
    Fault,
}

fn classify(e: &postgres::Error) -> Class {
    if e.is_closed() {
        return Class::Unavailable;
    }
    let Some(code) = e.code() else {
        // No SQLSTATE: I/O, a protocol error, a connect failure. Never a statement's fault: our
        // values are converted before they reach the client, so its ToSql never fails.
        return Class::Unavailable;
    };
    let transient = code.code().starts_with("08")
        || [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::IDLE_SESSION_TIMEOUT,
        ]
        .contains(code);
    if transient {
        Class::Unavailable
    } else {
        Class::Fault
    }
}

/// The server's message with its SQLSTATE, detail and hint; or the client's.
fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} ({})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                s.push_str(": ");
                s.push_str(detail);
            }
            if let Some(hint) = db.hint() {
                s.push_str(" (hint: ");
                s.push_str(hint);
                s.push(')');
            }
            s
        }
        None => match e.source() {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

/// Bookkeeping and transaction-control errors.
fn other(e: postgres::Error) -> TargetError {
    match classify(&e) {
        Class::Unavailable => TargetError::Unavailable(describe(&e)),
        Class::Fault => TargetError::Other(describe(&e)),
    }
}

fn definition(e: &postgres::Error, what: impl FnOnce() -> String) -> TargetError {
    match classify(e) {
        Class::Unavailable => TargetError::Unavailable(describe(e)),
        Class::Fault => TargetError::Definition(format!("{}: {}", what(), describe(e))),
    }
}

fn statement_error(e: &postgres::Error, index: usize, sql: &str) -> TargetError {
    match classify(e) {
        Class::Unavailable => TargetError::Unavailable(describe(e)),
        Class::Fault => TargetError::Statement {
            index: Some(index),
            message: format!("{} (in `{}`)", describe(e), abbreviate(sql)),
        },
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

/// The prepared statement for `sql`, from the cache or prepared now.
fn prepare_cached(
    tx: &mut Transaction<'_>,
    cache: &mut HashMap<String, postgres::Statement>,
    sql: &str,
) -> Result<postgres::Statement, postgres::Error> {
    if let Some(statement) = cache.get(sql) {
        return Ok(statement.clone());
    }
    let statement = tx.prepare(sql)?;
    if cache.len() >= POSTGRES_STATEMENT_CACHE_MAX {
        cache.clear();
    }
    cache.insert(sql.to_owned(), statement.clone());
    Ok(statement)
}

/// Runs a bookkeeping statement (values of our own, so any failure is not a batch's fault).
fn exec(
    tx: &mut Transaction<'_>,
    cache: &mut HashMap<String, postgres::Statement>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, TargetError> {
    let statement = prepare_cached(tx, cache, sql).map_err(other)?;
    tx.execute(&statement, params).map_err(other)
}

fn query(
    tx: &mut Transaction<'_>,
    cache: &mut HashMap<String, postgres::Statement>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<postgres::Row>, TargetError> {
    let statement = prepare_cached(tx, cache, sql).map_err(other)?;
    tx.query(&statement, params).map_err(other)
}

/// A value converted for one parameter type. Conversions happen before the client sees the
/// value, so a value that does not fit is reported with the parameter's number.
#[derive(Debug)]
enum Bound<'a> {
    Null,
    Bool(bool),
    I16(i16),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    /// Binary bytes (`bytea`).
    Bytes(&'a [u8]),
    /// Text-like types in binary format (the UTF-8 bytes).
    Text(Cow<'a, str>),
    /// Any type in PostgreSQL's text format, parsed by the server (`uuid`, `timestamptz`,
    /// `numeric`, `json`, enums…).
    TextFormat(Cow<'a, str>),
}

impl ToSql for Bound<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self {
            Bound::Null => Ok(IsNull::Yes),
            Bound::Bool(v) => v.to_sql(ty, out),
            Bound::I16(v) => v.to_sql(ty, out),
            Bound::I32(v) => v.to_sql(ty, out),
            Bound::I64(v) => v.to_sql(ty, out),
            Bound::F32(v) => v.to_sql(ty, out),
            Bound::F64(v) => v.to_sql(ty, out),
            Bound::Bytes(v) => {
                out.extend_from_slice(v);
                Ok(IsNull::No)
            }
            Bound::Text(v) | Bound::TextFormat(v) => {
                out.extend_from_slice(v.as_bytes());
                Ok(IsNull::No)
            }
        }
    }

    fn accepts(_ty: &Type) -> bool {
        // `bind` already chose a representation for the parameter's type.
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        match self {
            Bound::TextFormat(_) => Format::Text,
            _ => Format::Binary,
        }
    }

    to_sql_checked!();
}

fn is_text_like(ty: &Type) -> bool {
    [
        Type::TEXT,
        Type::VARCHAR,
        Type::BPCHAR,
        Type::NAME,
        Type::UNKNOWN,
    ]
    .contains(ty)
        || ty.name() == "citext"
}

fn is_time_like(ty: &Type) -> bool {
    [
        Type::TIMESTAMPTZ,
        Type::TIMESTAMP,
        Type::DATE,
        Type::TIME,
        Type::TIMETZ,
        Type::INTERVAL,
    ]
    .contains(ty)
}

fn value_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Integer(_) => "an integer",
        Value::Real(_) => "a real",
        Value::Text(_) => "a text",
        Value::Blob(_) => "a blob",
        Value::Json(_) => "a JSON document",
    }
}

/// Converts `value` for parameter `$n` of type `ty`; the error says why it does not fit.
fn bind<'a>(value: &'a Value, ty: &Type) -> Result<Bound<'a>, String> {
    let misfit = || {
        format!(
            "{} cannot be bound to type {}",
            value_kind(value),
            ty.name()
        )
    };
    let int_range = |n: i64| format!("integer {n} is out of range for type {}", ty.name());
    Ok(match value {
        Value::Null => Bound::Null,
        _ if is_text_like(ty) => Bound::Text(match value {
            Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Value::Integer(n) => Cow::Owned(n.to_string()),
            Value::Real(r) => Cow::Owned(r.to_string()),
            Value::Text(s) | Value::Json(s) => Cow::Borrowed(s.as_str()),
            Value::Null | Value::Blob(_) => return Err(misfit()),
        }),
        Value::Integer(n) if *ty == Type::INT8 => Bound::I64(*n),
        Value::Integer(n) if *ty == Type::INT4 => {
            Bound::I32(i32::try_from(*n).map_err(|_| int_range(*n))?)
        }
        Value::Integer(n) if *ty == Type::INT2 => {
            Bound::I16(i16::try_from(*n).map_err(|_| int_range(*n))?)
        }
        Value::Integer(n) if *ty == Type::FLOAT8 => Bound::F64(*n as f64),
        Value::Integer(n) if *ty == Type::FLOAT4 => Bound::F32(*n as f32),
        Value::Integer(n) if *ty == Type::NUMERIC || *ty == Type::OID => {
            Bound::TextFormat(Cow::Owned(n.to_string()))
        }
        Value::Real(r) if *ty == Type::FLOAT8 => Bound::F64(*r),
        Value::Real(r) if *ty == Type::FLOAT4 => Bound::F32(*r as f32),
        Value::Real(r) if *ty == Type::NUMERIC => {
            if !r.is_finite() {
                return Err(format!("{r} cannot be bound to type numeric"));
            }
            Bound::TextFormat(Cow::Owned(r.to_string()))
        }
        Value::Bool(b) if *ty == Type::BOOL => Bound::Bool(*b),
        Value::Blob(b) if *ty == Type::BYTEA => Bound::Bytes(b),
        Value::Text(s) if *ty == Type::BYTEA => Bound::Bytes(s.as_bytes()),
        Value::Json(s) | Value::Text(s) if *ty == Type::JSON || *ty == Type::JSONB => {
            // Checked here so the error names the parameter; the server would only say "invalid
            // input syntax for type json".
            serde_json::from_str::<serde::de::IgnoredAny>(s)
                .map_err(|e| format!("text is not JSON ({e}) for type {}", ty.name()))?;
            Bound::TextFormat(Cow::Borrowed(s.as_str()))
        }
        Value::Integer(n) if *ty == Type::JSON || *ty == Type::JSONB => {
            Bound::TextFormat(Cow::Owned(n.to_string()))
        }
        Value::Real(r) if *ty == Type::JSON || *ty == Type::JSONB => {
            if !r.is_finite() {
                return Err(format!("{r} cannot be bound to type {}", ty.name()));
            }
            Bound::TextFormat(Cow::Owned(r.to_string()))
        }
        Value::Bool(b) if *ty == Type::JSON || *ty == Type::JSONB => {
            Bound::TextFormat(Cow::Borrowed(if *b { "true" } else { "false" }))
        }
        Value::Text(s) if *ty == Type::INT2 || *ty == Type::INT4 || *ty == Type::INT8 => {
            let n: i64 = s
                .trim()
                .parse()
                .map_err(|_| format!("text {s:?} is not an integer (type {})", ty.name()))?;
            bind_owned_int(n, ty).map_err(|()| int_range(n))?
        }
        Value::Text(s) if *ty == Type::FLOAT4 || *ty == Type::FLOAT8 => {
            let r: f64 = s
                .trim()
                .parse()
                .map_err(|_| format!("text {s:?} is not a number (type {})", ty.name()))?;
            if *ty == Type::FLOAT8 {
                Bound::F64(r)
            } else {
                Bound::F32(r as f32)
            }
        }
        Value::Text(s) if *ty == Type::UUID => {
            if !looks_like_uuid(s) {
                return Err(format!("text {s:?} is not a UUID"));
            }
            Bound::TextFormat(Cow::Borrowed(s.as_str()))
        }
        // Numbers are not times: say so rather than let the server read `5` as something.
        Value::Integer(_) | Value::Real(_) | Value::Bool(_) if is_time_like(ty) => {
            return Err(format!(
                "{}; bind an RFC 3339 text (e.g. `created_rfc3339`) or convert in SQL \
                 (to_timestamp($n / 1000.0))",
                misfit()
            ));
        }
        // Anything else: the server parses the text form (numeric, timestamptz, inet, enums…).
        Value::Text(s) => Bound::TextFormat(Cow::Borrowed(s.as_str())),
        Value::Integer(n) if *ty != Type::BOOL && *ty != Type::UUID && *ty != Type::BYTEA => {
            Bound::TextFormat(Cow::Owned(n.to_string()))
        }
        _ => return Err(misfit()),
    })
}

fn bind_owned_int(n: i64, ty: &Type) -> Result<Bound<'static>, ()> {
    if *ty == Type::INT8 {
        Ok(Bound::I64(n))
    } else if *ty == Type::INT4 {
        i32::try_from(n).map(Bound::I32).map_err(|_| ())
    } else {
        i16::try_from(n).map(Bound::I16).map_err(|_| ())
    }
}

/// 32 hexadecimal digits, hyphens anywhere between groups of four, optionally in braces: the
/// forms PostgreSQL's `uuid` input accepts.
fn looks_like_uuid(s: &str) -> bool {
    let inner = s
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or(s);
    let digits = inner.chars().filter(char::is_ascii_hexdigit).count();
    digits == 32 && inner.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// Converts every value of `statement` for its prepared parameter types.
fn bind_all<'a>(
    statement: &'a Statement,
    types: &[Type],
    index: usize,
) -> Result<Vec<Bound<'a>>, TargetError> {
    if statement.params.len() != types.len() {
        return Err(TargetError::Statement {
            index: Some(index),
            message: format!(
                "the statement has {} parameter(s) but {} value(s) were given (in `{}`)",
                types.len(),
                statement.params.len(),
                abbreviate(&statement.sql)
            ),
        });
    }
    statement
        .params
        .iter()
        .zip(types)
        .enumerate()
        .map(|(i, (value, ty))| {
            bind(value, ty).map_err(|why| TargetError::Statement {
                index: Some(index),
                message: format!(
                    "parameter ${}: {why} (in `{}`)",
                    i + 1,
                    abbreviate(&statement.sql)
                ),
            })
        })
        .collect()
}

fn run_statement(
    tx: &mut Transaction<'_>,
    cache: &mut HashMap<String, postgres::Statement>,
    statement: &Statement,
    index: usize,
) -> Result<(), TargetError> {
    let prepared = prepare_cached(tx, cache, &statement.sql)
        .map_err(|e| statement_error(&e, index, &statement.sql))?;
    let bound = bind_all(statement, prepared.params(), index)?;
    let params: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|b| b as &(dyn ToSql + Sync)).collect();
    tx.execute(&prepared, &params)
        .map_err(|e| statement_error(&e, index, &statement.sql))?;
    Ok(())
}

/// Projection, table and view names become identifiers: only `[a-z][a-z0-9_]*`.
fn check_name(name: &str) -> Result<(), TargetError> {
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

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn to_i64(n: u64, what: &str) -> Result<i64, TargetError> {
    i64::try_from(n).map_err(|_| TargetError::Other(format!("{what} {n} is out of range")))
}

fn position_from_sql(n: i64) -> Result<Position, TargetError> {
    u64::try_from(n)
        .map(Position)
        .map_err(|_| TargetError::Other(format!("negative position {n} in bookkeeping")))
}

fn u64_from_sql(n: i64, what: &str) -> Result<u64, TargetError> {
    u64::try_from(n).map_err(|_| TargetError::Other(format!("negative {what} {n} in bookkeeping")))
}

fn u32_from_sql(n: i64, what: &str) -> Result<u32, TargetError> {
    u32::try_from(n)
        .map_err(|_| TargetError::Other(format!("{what} {n} out of range in bookkeeping")))
}

/// Takes a transaction-level advisory lock on a projection, serializing changes to its objects
/// across connections.
fn lock_projection(
    tx: &mut Transaction<'_>,
    cache: &mut HashMap<String, postgres::Statement>,
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

fn point_views(
    tx: &mut Transaction<'_>,
    views: &[String],
    generation: u32,
) -> Result<(), TargetError> {
    for view in views {
        check_name(view)?;
        let real = generation_object(view, generation);
        tx.batch_execute(&format!(
            "DROP VIEW IF EXISTS {v}; CREATE VIEW {v} AS SELECT * FROM {t};",
            v = quote_ident(view),
            t = quote_ident(&real)
        ))
        .map_err(|e| definition(&e, || format!("cannot point view `{view}` at `{real}`")))?;
    }
    Ok(())
}

fn delete_generation_rows(
    tx: &mut Transaction<'_>,
    cache: &mut HashMap<String, postgres::Statement>,
    projection: &str,
    generation: i64,
) -> Result<(), TargetError> {
    for table in [
        "annals_projections",
        "annals_checkpoints",
        "annals_failures",
        "annals_parked",
    ] {
        exec(
            tx,
            cache,
            &format!("DELETE FROM {table} WHERE projection = $1 AND generation = $2"),
            &[&projection, &generation],
        )?;
    }
    let prefix = format!("projection:{projection}:g{generation}:");
    exec(
        tx,
        cache,
        "DELETE FROM annals_snapshots WHERE left(key, length($1)) = $1",
        &[&prefix],
    )?;
    Ok(())
}

impl Target for PostgresTarget {
    fn kind(&self) -> TargetKind {
        TargetKind::Postgres
    }

    fn connect_another(&self) -> Result<Box<dyn Target>, TargetError> {
        Ok(Box::new(PostgresTarget::connect(&self.url)?))
    }

    fn install(&mut self) -> Result<(), TargetError> {
        self.in_transaction(|tx, cache| {
            query(
                tx,
                cache,
                "SELECT pg_advisory_xact_lock($1)",
                &[&INSTALL_LOCK_KEY],
            )?;
            tx.batch_execute(INSTALL).map_err(other)
        })
    }

    fn check(&mut self, setup: &[String], statements: &[String]) -> Result<(), TargetError> {
        let result = (|| {
            let client = self.client()?;
            let mut tx = client.transaction().map_err(other)?;
            for (i, sql) in setup.iter().enumerate() {
                tx.batch_execute(sql).map_err(|e| {
                    definition(&e, || {
                        format!("setup statement {} (`{}`) failed", i + 1, abbreviate(sql))
                    })
                })?;
            }
            for (i, sql) in statements.iter().enumerate() {
                // Not cached: these name scratch objects that the rollback removes.
                tx.prepare(sql).map_err(|e| {
                    definition(&e, || {
                        format!(
                            "statement {} (`{}`) does not prepare",
                            i + 1,
                            abbreviate(sql)
                        )
                    })
                })?;
            }
            tx.rollback().map_err(other)
        })();
        self.settle(result)
    }

    fn create_generation(
        &mut self,
        projection: &str,
        generation: u32,
        setup: &[String],
        serving: bool,
        views: &[String],
    ) -> Result<(), TargetError> {
        check_name(projection)?;
        // Statements prepared against an earlier object of the same name must be prepared anew.
        self.statements.clear();
        let generation = i64::from(generation);
        self.in_transaction(|tx, cache| {
            lock_projection(tx, cache, projection)?;
            let exists = query(
                tx,
                cache,
                "SELECT 1 FROM annals_projections WHERE projection = $1 AND generation = $2",
                &[&projection, &generation],
            )?;
            if !exists.is_empty() {
                return Ok(());
            }
            for (i, sql) in setup.iter().enumerate() {
                tx.batch_execute(sql).map_err(|e| {
                    definition(&e, || {
                        format!("setup statement {} (`{}`) failed", i + 1, abbreviate(sql))
                    })
                })?;
            }
            exec(
                tx,
                cache,
                "INSERT INTO annals_projections (projection, generation, state) VALUES ($1, $2, $3)",
                &[
                    &projection,
                    &generation,
                    &if serving { "serving" } else { "building" },
                ],
            )?;
            if serving {
                let g = u32::try_from(generation).unwrap_or(u32::MAX);
                point_views(tx, views, g)?;
            }
            Ok(())
        })
    }

    fn load(&mut self, projection: &str) -> Result<StoredProjection, TargetError> {
        self.in_transaction(|tx, cache| {
            let generations = query(
                tx,
                cache,
                "SELECT generation, state FROM annals_projections WHERE projection = $1 \
                 ORDER BY generation",
                &[&projection],
            )?;
            let checkpoints = query(
                tx,
                cache,
                "SELECT generation, partition, position FROM annals_checkpoints \
                 WHERE projection = $1 ORDER BY generation, partition",
                &[&projection],
            )?;
            let mut out = StoredProjection::default();
            for row in generations {
                let generation: i64 = row.try_get(0).map_err(other)?;
                let state: String = row.try_get(1).map_err(other)?;
                let mut partitions = Vec::new();
                for c in &checkpoints {
                    let g: i64 = c.try_get(0).map_err(other)?;
                    if g == generation {
                        let partition: i64 = c.try_get(1).map_err(other)?;
                        let position: i64 = c.try_get(2).map_err(other)?;
                        partitions.push((
                            u32_from_sql(partition, "partition")?,
                            position_from_sql(position)?,
                        ));
                    }
                }
                out.generations.push(StoredGeneration {
                    generation: u32_from_sql(generation, "generation")?,
                    serving: state == "serving",
                    checkpoints: partitions,
                });
            }
            Ok(out)
        })
    }

    fn commit(&mut self, c: &PartitionCommit<'_>) -> Result<(), TargetError> {
        if self.resolve_in_doubt(c)? {
            return Ok(());
        }
        let token = next_commit_token();
        let mut committing = false;
        let result = (|| {
            self.client()?;
            let Self {
                client, statements, ..
            } = self;
            let client = client
                .as_mut()
                .ok_or_else(|| TargetError::Unavailable("not connected".to_owned()))?;
            let mut tx = client.transaction().map_err(other)?;
            write_commit(&mut tx, statements, c, token)?;
            committing = true;
            tx.commit().map_err(other)
        })();
        if committing && matches!(result, Err(TargetError::Unavailable(_))) {
            // COMMIT was sent and its answer lost: the server may have committed.
            self.in_doubt = Some(InDoubt {
                projection: c.projection.to_owned(),
                generation: c.generation,
                partition: c.partition,
                checkpoint: c.checkpoint,
                statements: c.statements.len(),
                token,
            });
        }
        self.settle(result)
    }

    fn swap(
        &mut self,
        projection: &str,
        from: Option<u32>,
        to: u32,
        views: &[String],
    ) -> Result<(), TargetError> {
        check_name(projection)?;
        for view in views {
            check_name(view)?;
        }
        self.statements.clear();
        self.in_transaction(|tx, cache| {
            lock_projection(tx, cache, projection)?;
            let updated = exec(
                tx,
                cache,
                "UPDATE annals_projections SET state = 'serving' \
                 WHERE projection = $1 AND generation = $2",
                &[&projection, &i64::from(to)],
            )?;
            if updated == 0 {
                return Err(TargetError::Other(format!(
                    "projection `{projection}` has no generation {to} to swap to"
                )));
            }
            point_views(tx, views, to)?;
            if let Some(from) = from.filter(|f| *f != to) {
                for view in views {
                    let table = generation_object(view, from);
                    tx.batch_execute(&format!(
                        "DROP TABLE IF EXISTS {} CASCADE",
                        quote_ident(&table)
                    ))
                    .map_err(|e| definition(&e, || format!("cannot drop `{table}`")))?;
                }
                delete_generation_rows(tx, cache, projection, i64::from(from))?;
            }
            Ok(())
        })
    }

    fn drop_generation(
        &mut self,
        projection: &str,
        generation: u32,
        tables: &[String],
        drop_views: bool,
    ) -> Result<(), TargetError> {
        check_name(projection)?;
        for table in tables {
            check_name(table)?;
        }
        self.statements.clear();
        self.in_transaction(|tx, cache| {
            lock_projection(tx, cache, projection)?;
            if !drop_views {
                let serving = query(
                    tx,
                    cache,
                    "SELECT 1 FROM annals_projections WHERE projection = $1 AND generation = $2 \
                     AND state = 'serving'",
                    &[&projection, &i64::from(generation)],
                )?;
                if !serving.is_empty() {
                    return Err(TargetError::Other(format!(
                        "generation {generation} of `{projection}` is serving; drop it with its \
                         views"
                    )));
                }
            }
            for table in tables {
                if drop_views {
                    tx.batch_execute(&format!("DROP VIEW IF EXISTS {}", quote_ident(table)))
                        .map_err(|e| definition(&e, || format!("cannot drop view `{table}`")))?;
                }
                let real = generation_object(table, generation);
                tx.batch_execute(&format!(
                    "DROP TABLE IF EXISTS {} CASCADE",
                    quote_ident(&real)
                ))
                .map_err(|e| definition(&e, || format!("cannot drop `{real}`")))?;
            }
            delete_generation_rows(tx, cache, projection, i64::from(generation))
        })
    }

    fn parked(&mut self, projection: &str, generation: u32) -> Result<Vec<Parked>, TargetError> {
        self.in_transaction(|tx, cache| {
            let rows = query(
                tx,
                cache,
                "SELECT position, stream, revision, reason FROM annals_parked \
                 WHERE projection = $1 AND generation = $2 ORDER BY position",
                &[&projection, &i64::from(generation)],
            )?;
            rows.iter()
                .map(|row| {
                    Ok(Parked {
                        position: position_from_sql(row.try_get(0).map_err(other)?)?,
                        stream: row.try_get(1).map_err(other)?,
                        revision: u64_from_sql(row.try_get(2).map_err(other)?, "revision")?,
                        reason: row.try_get(3).map_err(other)?,
                    })
                })
                .collect()
        })
    }

    fn failures(
        &mut self,
        projection: &str,
        generation: u32,
        limit: usize,
    ) -> Result<Vec<Failure>, TargetError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.in_transaction(|tx, cache| {
            let rows = query(
                tx,
                cache,
                "SELECT position, stream, revision, event_type, message, action, recorded_at \
                 FROM annals_failures WHERE projection = $1 AND generation = $2 \
                 ORDER BY id DESC LIMIT $3",
                &[&projection, &i64::from(generation), &limit],
            )?;
            rows.iter()
                .map(|row| {
                    let action: String = row.try_get(5).map_err(other)?;
                    Ok(Failure {
                        position: position_from_sql(row.try_get(0).map_err(other)?)?,
                        stream: row.try_get(1).map_err(other)?,
                        revision: u64_from_sql(row.try_get(2).map_err(other)?, "revision")?,
                        event_type: row.try_get(3).map_err(other)?,
                        message: row.try_get(4).map_err(other)?,
                        action: FailureAction::parse(&action)?,
                        recorded_at_ms: row.try_get(6).map_err(other)?,
                    })
                })
                .collect()
        })
    }

    fn save_snapshot(&mut self, snapshot: &SnapshotRecord) -> Result<(), TargetError> {
        self.in_transaction(|tx, cache| save_snapshot_in(tx, cache, snapshot))
    }

    fn read_table(
        &mut self,
        view: &str,
        limit: usize,
        offset: usize,
    ) -> Result<TableRows, TargetError> {
        check_identifier(view)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let inner = format!("SELECT * FROM {view} ORDER BY 1 LIMIT $1 OFFSET $2");
        self.in_transaction(|tx, _| {
            let reading = || format!("reading {view}");
            let columns: Vec<String> = tx
                .prepare(&inner)
                .map_err(|e| definition(&e, reading))?
                .columns()
                .iter()
                .map(|c| c.name().to_owned())
                .collect();
            // Every column type comes back as JSON, converted by the server.
            let rows = tx
                .query(
                    &format!("SELECT row_to_json(r)::text FROM ({inner}) r"),
                    &[&limit, &offset],
                )
                .map_err(|e| definition(&e, reading))?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let text: String = row.try_get(0).map_err(other)?;
                let object: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(&text)
                        .map_err(|e| TargetError::Other(format!("row of {view}: {e}")))?;
                out.push(
                    columns
                        .iter()
                        .map(|c| {
                            object
                                .get(c)
                                .map_or(Value::Null, crate::definition::json_value)
                        })
                        .collect(),
                );
            }
            Ok(TableRows { columns, rows: out })
        })
    }

    fn load_snapshot(&mut self, key: &str) -> Result<Option<SnapshotRecord>, TargetError> {
        self.in_transaction(|tx, cache| {
            let rows = query(
                tx,
                cache,
                "SELECT position, state FROM annals_snapshots WHERE key = $1",
                &[&key],
            )?;
            rows.first()
                .map(|row| {
                    Ok(SnapshotRecord {
                        key: key.to_owned(),
                        position: position_from_sql(row.try_get(0).map_err(other)?)?,
                        state: row.try_get(1).map_err(other)?,
                    })
                })
                .transpose()
        })
    }
}

/// Writes one partition commit into `tx` (not yet committed); `token` marks the checkpoint row
/// so a commit whose answer was lost can be recognised.
fn write_commit(
    tx: &mut Transaction<'_>,
    cache: &mut HashMap<String, postgres::Statement>,
    c: &PartitionCommit<'_>,
    token: i64,
) -> Result<(), TargetError> {
    let generation = i64::from(c.generation);
    let partition = i64::from(c.partition);
    let checkpoint = to_i64(c.checkpoint.0, "checkpoint")?;
    for (i, statement) in c.statements.iter().enumerate() {
        run_statement(tx, cache, statement, i)?;
    }
    exec(
        tx,
        cache,
        "INSERT INTO annals_checkpoints (projection, generation, partition, position, \
         commit_token) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (projection, generation, partition) \
         DO UPDATE SET position = EXCLUDED.position, commit_token = EXCLUDED.commit_token",
        &[&c.projection, &generation, &partition, &checkpoint, &token],
    )?;
    for f in c.failures {
        let position = to_i64(f.position.0, "position")?;
        let revision = i64::try_from(f.revision).unwrap_or(i64::MAX);
        exec(
            tx,
            cache,
            "INSERT INTO annals_failures (projection, generation, position, stream, \
             revision, event_type, message, action, recorded_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &c.projection,
                &generation,
                &position,
                &f.stream,
                &revision,
                &f.event_type,
                &f.message,
                &f.action.as_str(),
                &f.recorded_at_ms,
            ],
        )?;
    }
    for p in c.parked {
        let position = to_i64(p.position.0, "position")?;
        let revision = i64::try_from(p.revision).unwrap_or(i64::MAX);
        exec(
            tx,
            cache,
            "INSERT INTO annals_parked (projection, generation, position, stream, \
             revision, reason) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (projection, generation, position) \
             DO UPDATE SET stream = EXCLUDED.stream, revision = EXCLUDED.revision, \
             reason = EXCLUDED.reason",
            &[
                &c.projection,
                &generation,
                &position,
                &p.stream,
                &revision,
                &p.reason,
            ],
        )?;
    }
    if !c.released.is_empty() {
        let released = c
            .released
            .iter()
            .map(|p| to_i64(p.0, "position"))
            .collect::<Result<Vec<i64>, _>>()?;
        exec(
            tx,
            cache,
            "DELETE FROM annals_parked WHERE projection = $1 AND generation = $2 \
             AND position = ANY($3)",
            &[&c.projection, &generation, &released],
        )?;
    }
    if let Some(snapshot) = c.snapshot {
        save_snapshot_in(tx, cache, snapshot)?;
    }
    Ok(())
}

fn save_snapshot_in(
    tx: &mut Transaction<'_>,
    cache: &mut HashMap<String, postgres::Statement>,
    snapshot: &SnapshotRecord,
) -> Result<(), TargetError> {
    let position = to_i64(snapshot.position.0, "position")?;
    exec(
        tx,
        cache,
        "INSERT INTO annals_snapshots (key, position, state) VALUES ($1, $2, $3) \
         ON CONFLICT (key) DO UPDATE SET position = EXCLUDED.position, state = EXCLUDED.state",
        &[&snapshot.key, &position, &snapshot.state],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_by_parameter_type() {
        assert!(matches!(
            bind(&Value::Integer(7), &Type::INT8),
            Ok(Bound::I64(7))
        ));
        assert!(matches!(
            bind(&Value::Integer(70_000), &Type::INT2),
            Err(e) if e.contains("out of range")
        ));
        assert!(matches!(
            bind(&Value::Integer(7), &Type::TEXT),
            Ok(Bound::Text(t)) if t == "7"
        ));
        assert!(matches!(
            bind(&Value::Text("x".into()), &Type::INT4),
            Err(e) if e.contains("not an integer")
        ));
        assert!(matches!(
            bind(&Value::Text("{\"a\":1}".into()), &Type::JSONB),
            Ok(Bound::TextFormat(_))
        ));
        assert!(bind(&Value::Text("{bad".into()), &Type::JSONB).is_err());
        assert!(bind(&Value::Text("not-a-uuid".into()), &Type::UUID).is_err());
        assert!(bind(&Value::Integer(5), &Type::TIMESTAMPTZ).is_err());
        assert!(matches!(
            bind(
                &Value::Text("2024-01-02T03:04:05Z".into()),
                &Type::TIMESTAMPTZ
            ),
            Ok(Bound::TextFormat(_))
        ));
        assert!(matches!(bind(&Value::Null, &Type::UUID), Ok(Bound::Null)));
        assert!(bind(&Value::Blob(vec![1]), &Type::INT8).is_err());
    }

    #[test]
    fn uuid_forms() {
        assert!(looks_like_uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"));
        assert!(looks_like_uuid("{a0eebc999c0b4ef8bb6d6bb9bd380a11}"));
        assert!(!looks_like_uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1"));
        assert!(!looks_like_uuid("z0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"));
    }
}
