//! The PostgreSQL [`Target`], over the blocking `postgres` client: one connection per worker,
//! every change in one transaction.
//!
//! ## Binding
//! Statements are prepared, so PostgreSQL infers each parameter's type from the SQL; a
//! [`Value`](crate::Value) is converted to that type in `bind` (an integer into `int2`/`int4`/`int8` with a
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
//! ## Fencing
//! A target given a [`Fence`] ([`PostgresTarget::connect_fenced`]; `connect_another` keeps it)
//! claims the lease's token in `annals_fences` when it installs and again when it loads a
//! projection, and every transaction that writes first checks, under a share lock, that the
//! database still holds that token: once another node's target claimed a higher one, each
//! write fails with [`TargetError::Fenced`] and rolls back. A target without a fence runs no
//! statement of these. See `fence`.
//!
//! ## Objects
//! Bookkeeping tables are created with `CREATE TABLE IF NOT EXISTS` under a transaction-level
//! advisory lock, so concurrent installs do not race on the catalog. Reader views are dropped and
//! created again on a swap (`CREATE OR REPLACE VIEW` cannot change a view's columns) in the same
//! transaction that marks the new generation serving and drops the old tables, so a reader sees
//! the old rows or the new ones: PostgreSQL's DDL is transactional.
//!
//! ## Files
//! - this one: the target, its connection and its prepared-statement cache;
//! - `classify`: which errors are `Unavailable` and which are faults;
//! - `bind`: values converted for the parameter types the server inferred;
//! - `in_doubt`: commit tokens and the settling of a commit whose answer was lost;
//! - `fence`: [`Fence`], its claim and the check of a write transaction;
//! - `objects`: bookkeeping DDL, advisory locks, object names, reader views, a generation's rows;
//! - `target`: the [`Target`] calls, each one transaction.

mod bind;
mod classify;
mod fence;
mod in_doubt;
mod objects;
mod target;

use std::collections::HashMap;

use postgres::types::ToSql;
use postgres::{Client, Config, NoTls, Transaction};

use crate::target::{Target, TargetError};
use classify::{describe, other};
use in_doubt::InDoubt;

pub use fence::Fence;

/// Prepared statements each connection keeps, by SQL text. Handler templates resolve to a few
/// distinct texts per generation, so this holds all of them in practice; past it the cache
/// starts over rather than grow with handlers that build SQL per event.
pub const POSTGRES_STATEMENT_CACHE_MAX: usize = 256;

/// Prepared statements of one connection, by SQL text.
type StatementCache = HashMap<String, postgres::Statement>;

/// A PostgreSQL database as a projection target.
pub struct PostgresTarget {
    url: String,
    config: Config,
    /// `None` after the connection was lost; the next call connects again.
    client: Option<Client>,
    statements: StatementCache,
    /// A commit whose COMMIT was sent but whose answer was lost.
    in_doubt: Option<InDoubt>,
    /// The lease this target writes under, if any (see the module doc).
    fence: Option<Fence>,
}

impl std::fmt::Debug for PostgresTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresTarget")
            .field("host", &self.config.get_hosts())
            .field("port", &self.config.get_ports())
            .field("dbname", &self.config.get_dbname())
            .field("connected", &self.client.is_some())
            .field("cached_statements", &self.statements.len())
            .field("fence", &self.fence)
            .finish()
    }
}

impl PostgresTarget {
    /// Connects to `url` (`postgres://user@host:port/db`, or a libpq key=value string) without
    /// TLS and creates the bookkeeping tables if missing. A server that cannot be reached is
    /// [`TargetError::Unavailable`]; a URL that does not parse is [`TargetError::Definition`].
    pub fn connect(url: &str) -> Result<Self, TargetError> {
        Self::open(url, None)
    }

    /// [`PostgresTarget::connect`] for a target that writes under `fence`: it claims the
    /// fence's token in the database now (and again whenever it loads a projection), and each of
    /// its writes fails with [`TargetError::Fenced`] once a higher token has claimed the same
    /// lease. A higher token already there is [`TargetError::Fenced`] at once.
    pub fn connect_fenced(url: &str, fence: Fence) -> Result<Self, TargetError> {
        Self::open(url, Some(fence))
    }

    /// The fence this target writes under, if it has one.
    pub fn fence(&self) -> Option<&Fence> {
        self.fence.as_ref()
    }

    fn open(url: &str, fence: Option<Fence>) -> Result<Self, TargetError> {
        let config: Config = url
            .parse()
            .map_err(|e| TargetError::Definition(format!("bad PostgreSQL URL: {e}")))?;
        let mut target = Self {
            url: url.to_owned(),
            config,
            client: None,
            statements: HashMap::new(),
            in_doubt: None,
            fence,
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
        let result = self
            .client()
            .and_then(|client| client.simple_query(sql).map_err(other));
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

    /// The open connection with its statement cache beside it, connecting first if there is
    /// none: a transaction borrows the one while its statements are prepared into the other.
    fn connection(&mut self) -> Result<(&mut Client, &mut StatementCache), TargetError> {
        self.client()?;
        let Self {
            client, statements, ..
        } = self;
        let client = client
            .as_mut()
            .ok_or_else(|| TargetError::Unavailable("not connected".to_owned()))?;
        Ok((client, statements))
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
        work: impl FnOnce(&mut Transaction<'_>, &mut StatementCache) -> Result<T, TargetError>,
    ) -> Result<T, TargetError> {
        let result = (|| {
            let (client, statements) = self.connection()?;
            let mut tx = client.transaction().map_err(other)?;
            let value = work(&mut tx, statements)?;
            tx.commit().map_err(other)?;
            Ok(value)
        })();
        self.settle(result)
    }

    /// [`PostgresTarget::in_transaction`] for work that writes: with a fence, the transaction
    /// first checks that the database still holds its token (and keeps it share-locked), so a
    /// target whose lease passed on writes nothing.
    fn in_write_transaction<T>(
        &mut self,
        work: impl FnOnce(&mut Transaction<'_>, &mut StatementCache) -> Result<T, TargetError>,
    ) -> Result<T, TargetError> {
        let fence = self.fence.clone();
        self.in_transaction(move |tx, cache| {
            if let Some(fence) = &fence {
                fence::check(tx, cache, fence)?;
            }
            work(tx, cache)
        })
    }
}

/// The prepared statement for `sql`, from the cache or prepared now.
fn prepare_cached(
    tx: &mut Transaction<'_>,
    cache: &mut StatementCache,
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
    cache: &mut StatementCache,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, TargetError> {
    let statement = prepare_cached(tx, cache, sql).map_err(other)?;
    tx.execute(&statement, params).map_err(other)
}

/// Runs a bookkeeping query (values of our own, so any failure is not a batch's fault).
fn query(
    tx: &mut Transaction<'_>,
    cache: &mut StatementCache,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<postgres::Row>, TargetError> {
    let statement = prepare_cached(tx, cache, sql).map_err(other)?;
    tx.query(&statement, params).map_err(other)
}
