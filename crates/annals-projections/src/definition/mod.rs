//! Declarative projections: SQL per event type, written in TOML, no Rust needed.
//!
//! A file holds one or more `[[projection]]` tables; [`parse_definitions`] turns each into a
//! [`Definition`]: a [`ProjectionSpec`] whose handler is a [`DeclarativeHandler`], plus where
//! its view lives. Everything that can be checked without a database is checked here, and each
//! error names the projection and the field: unknown keys, names, sources, policies, partitions,
//! parameter paths, `$n` placeholders without a parameter (or parameters no `$n` uses), brace
//! names that are not declared. SQL that does not prepare is caught by [`crate::Target::check`]
//! when the runtime registers the projection.
//!
//! ```toml
//! [[projection]]
//! name = "order_totals"
//! target = "postgres://annals@db/views"     # or "sqlite:views.db"; absent: the server's default
//! source = { category = "order" }           # or { all = true }, { event_types = [..] }, { streams = [..] }
//! tables = ["order_totals"]
//! indexes = ["order_totals_by_customer"]
//! setup = [
//!   "CREATE TABLE {order_totals} (id TEXT PRIMARY KEY, customer TEXT, total BIGINT NOT NULL)",
//!   "CREATE INDEX {order_totals_by_customer} ON {order_totals}(customer)",
//! ]
//! partitions = 4
//! on_error = { policy = "park", attempts = 5, backoff_ms = 50, backoff_max_ms = 5000 }
//!
//! [[projection.handler]]
//! event_type = "OrderPlaced"
//! sql = "INSERT INTO {order_totals} (id, customer, total) VALUES ($1, $2, $3)"
//! params = ["data.id", "data.customer", "data.total"]
//!
//! [[projection.handler]]
//! event_type = "OrderShipped"
//! sql = "UPDATE {order_totals} SET total = total WHERE id = $1"
//! params = ["data.id"]
//! effects = [{ http = { url = "https://hooks.example/shipped", method = "POST" } }]
//! ```
//!
//! Parameter sources: `stream`, `category`, `revision`, `position`, `event_type`, `event_id`,
//! `created` (Unix milliseconds, an integer), `created_rfc3339` (text, UTC, microseconds),
//! `data` and `metadata` (the whole document as JSON), and `data.<path>` / `metadata.<path>`
//! with dotted keys and `[n]` array indexes (`data.lines[0].sku`). JSON numbers become integers
//! (or reals when fractional or too large), strings texts, booleans booleans, null and missing
//! keys NULL, objects and arrays JSON. Several `[[projection.handler]]` entries may name the same
//! event type; they run in file order. Effects carry the event as a JSON document in the shape
//! every Annals surface uses ([`annals_core::EventJson`]) and run only live, after the batch
//! commits.
//!
//! ## Files
//! - this one: the public types and limits;
//! - `schema`: the TOML shape as serde reads it;
//! - `compile`: [`parse_definitions`], every check, and the building of a [`Definition`];
//! - `param_source`: [`ParamSource`], what a `params` entry names;
//! - `handler`: [`DeclarativeHandler`], which runs a compiled definition per event;
//! - `json_path`: values at paths in raw JSON, and JSON to [`crate::Value`];
//! - `sql_lex`: the spans of SQL outside literals and comments, `$n` and `{name}` in them.

mod compile;
mod handler;
mod json_path;
mod param_source;
mod schema;
mod sql_lex;

use std::path::PathBuf;
use std::time::Duration;

use crate::spec::ProjectionSpec;

pub use compile::parse_definitions;
pub use handler::DeclarativeHandler;
pub(crate) use json_path::json_value;
pub use param_source::{ParamSource, PathStep};

/// Most attempts an `on_error` policy may ask for.
pub const DEFINITION_ATTEMPTS_MAX: u32 = 1_000;
/// Longest backoff an `on_error` policy may ask for.
pub const DEFINITION_BACKOFF_MAX: Duration = Duration::from_secs(3_600);
/// Most parameters one statement may bind.
pub const DEFINITION_PARAMS_MAX: usize = 100;

/// Where a projection's view tables live.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum DefinitionTarget {
    /// `sqlite:PATH`: a SQLite file.
    Sqlite(PathBuf),
    /// `postgres://…` or `postgresql://…`: a PostgreSQL database (the URL as written).
    Postgres(String),
}

/// One parsed projection.
#[derive(Clone, Debug)]
pub struct Definition {
    pub spec: ProjectionSpec,
    /// `None`: the server's default SQLite database.
    pub target: Option<DefinitionTarget>,
}

/// A definition file was rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DefinitionError {
    /// The text is not TOML, or its top level is not a list of `[[projection]]` tables.
    #[error("projection definitions: {0}")]
    Syntax(String),
    /// One field of one projection is wrong.
    #[error("projection `{projection}`: {field}: {message}")]
    Invalid {
        projection: String,
        field: String,
        message: String,
    },
    /// Two projections have the same name.
    #[error("projection `{0}` is defined more than once")]
    Duplicate(String),
}
