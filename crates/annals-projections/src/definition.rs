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
//! event type; they run in file order. Effects carry the event as a JSON document
//! ([`event_json`]) and run only live, after the batch commits.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use annals_core::{ContentType, EventRecord};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::handler::{Effect, Handler, HandlerContext, HandlerError, Mode};
use crate::runtime::PROJECTION_NAME_BYTES_MAX;
use crate::spec::{ErrorPolicy, OnFailure, PARTITIONS_MAX, ProjectionSpec, Source};
use crate::target::Value;

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

/// Where a statement parameter's value comes from.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ParamSource {
    Stream,
    Category,
    Revision,
    Position,
    EventType,
    EventId,
    /// Unix milliseconds.
    CreatedMs,
    /// RFC 3339, UTC, microseconds.
    CreatedRfc3339,
    /// A value in the event's data (the whole document for an empty path).
    Data(Vec<PathStep>),
    /// A value in the event's metadata (the whole document for an empty path).
    Metadata(Vec<PathStep>),
}

/// One step into a JSON document.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum PathStep {
    Key(String),
    Index(usize),
}

impl ParamSource {
    /// Parses `data.lines[0].sku` and the other sources named in the module doc.
    pub fn parse(text: &str) -> Result<ParamSource, String> {
        let simple = match text {
            "stream" => Some(ParamSource::Stream),
            "category" => Some(ParamSource::Category),
            "revision" => Some(ParamSource::Revision),
            "position" => Some(ParamSource::Position),
            "event_type" => Some(ParamSource::EventType),
            "event_id" => Some(ParamSource::EventId),
            "created" => Some(ParamSource::CreatedMs),
            "created_rfc3339" => Some(ParamSource::CreatedRfc3339),
            _ => None,
        };
        if let Some(source) = simple {
            return Ok(source);
        }
        let bad_path = |why: String| format!("bad path `{text}`: {why}");
        if let Some(rest) = text.strip_prefix("metadata") {
            return parse_path(rest)
                .map(ParamSource::Metadata)
                .map_err(bad_path);
        }
        if let Some(rest) = text.strip_prefix("data") {
            return parse_path(rest).map(ParamSource::Data).map_err(bad_path);
        }
        Err(format!(
            "unknown parameter source `{text}` (expected stream, category, revision, position, \
             event_type, event_id, created, created_rfc3339, data, data.<path>, metadata or \
             metadata.<path>)"
        ))
    }
}

/// Parses `.a.b[0][1].c` (the part after `data`/`metadata`).
fn parse_path(mut rest: &str) -> Result<Vec<PathStep>, String> {
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let (key, tail) = after.split_at(end);
            if key.is_empty() {
                return Err("empty key".to_owned());
            }
            if key.contains(']') {
                return Err(format!("`]` without `[` in key `{key}`"));
            }
            steps.push(PathStep::Key(key.to_owned()));
            rest = tail;
        } else if let Some(after) = rest.strip_prefix('[') {
            let close = after.find(']').ok_or("`[` without `]`")?;
            let (digits, tail) = after.split_at(close);
            let index = digits
                .parse::<usize>()
                .map_err(|_| format!("`[{digits}]` is not an array index"))?;
            steps.push(PathStep::Index(index));
            rest = tail.get(1..).unwrap_or("");
        } else {
            return Err("expected `.key` or `[n]`".to_owned());
        }
    }
    Ok(steps)
}

/// One statement of a handler entry.
#[derive(Clone, Debug)]
struct CompiledStatement {
    sql: String,
    params: Vec<ParamSource>,
}

/// A declared effect, filled in per event.
#[derive(Clone, Debug)]
enum EffectTemplate {
    Http { method: String, url: String },
    Message { subject: String },
}

/// What one event type does.
#[derive(Clone, Debug, Default)]
struct Entry {
    statements: Vec<CompiledStatement>,
    effects: Vec<EffectTemplate>,
}

/// Runs a declarative projection: looks the event's type up, binds each statement's parameters
/// from the event, executes the statements, declares the effects. Events of types it has no
/// entry for are passed over. Keeps no state.
#[derive(Clone, Debug)]
pub struct DeclarativeHandler {
    entries: Arc<HashMap<String, Entry>>,
}

impl Handler for DeclarativeHandler {
    fn handle(
        &mut self,
        event: &EventRecord,
        ctx: &mut HandlerContext<'_>,
    ) -> Result<(), HandlerError> {
        let Some(entry) = self.entries.get(event.event_type.as_str()) else {
            return Ok(());
        };
        let mut documents = Documents::default();
        for statement in &entry.statements {
            let params = statement
                .params
                .iter()
                .map(|source| param_value(source, event, &mut documents))
                .collect::<Result<Vec<_>, _>>()?;
            ctx.execute(&statement.sql, params);
        }
        if !entry.effects.is_empty() && ctx.mode() == Mode::Live {
            let body = event_json(event).to_string().into_bytes();
            for effect in &entry.effects {
                ctx.effect(match effect {
                    EffectTemplate::Http { method, url } => Effect::Http {
                        method: method.clone(),
                        url: url.clone(),
                        content_type: "application/json".to_owned(),
                        body: body.clone(),
                    },
                    EffectTemplate::Message { subject } => Effect::Message {
                        subject: subject.clone(),
                        payload: body.clone(),
                    },
                });
            }
        }
        Ok(())
    }
}

/// The event's data and metadata, each checked and split into its top-level members once per
/// event, and only if a parameter needs it. A value is converted straight from the raw text of
/// the member a path names; no tree of the whole document is built (that cost about a tenth of
/// a SQLite rebuild's time).
#[derive(Default)]
struct Documents<'e> {
    data: Option<Document<'e>>,
    metadata: Option<Document<'e>>,
}

/// One parsed document.
enum Document<'e> {
    /// Empty or only whitespace: every path is NULL.
    Empty,
    /// An object, as its members in document order (raw values still unparsed).
    Object(&'e [u8], Vec<(Cow<'e, str>, &'e RawValue)>),
    /// Any other JSON value.
    Other(&'e RawValue),
}

/// The members of a JSON object with their values left raw; keys borrowed where they hold no
/// escapes.
struct Members<'e>(Vec<(Cow<'e, str>, &'e RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(key) = map.next_key::<Key<'de>>()? {
                    members.push((key.0, map.next_value::<&'de RawValue>()?));
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// An object key, borrowed from the document when it can be.
struct Key<'e>(Cow<'e, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(Visit)
    }
}

fn parse_document<'e>(bytes: &'e [u8], what: &str) -> Result<Document<'e>, HandlerError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Document::Empty);
    }
    let not_json =
        |e: serde_json::Error| HandlerError(format!("the event's {what} is not JSON: {e}"));
    match serde_json::from_slice::<Members<'e>>(bytes) {
        Ok(members) => Ok(Document::Object(bytes, members.0)),
        // Well-formed so far but not an object: check it whole as any value.
        Err(e) if e.is_data() => serde_json::from_slice::<&RawValue>(bytes)
            .map(Document::Other)
            .map_err(not_json),
        Err(e) => Err(not_json(e)),
    }
}

fn param_value<'e>(
    source: &ParamSource,
    event: &'e EventRecord,
    documents: &mut Documents<'e>,
) -> Result<Value, HandlerError> {
    Ok(match source {
        ParamSource::Stream => Value::Text(event.stream.as_str().to_owned()),
        ParamSource::Category => Value::Text(event.stream.category().to_owned()),
        ParamSource::Revision => {
            Value::Integer(i64::try_from(event.revision.0).unwrap_or(i64::MAX))
        }
        ParamSource::Position => Value::Integer(
            i64::try_from(event.position.0)
                .map_err(|_| HandlerError(format!("position {} out of range", event.position)))?,
        ),
        ParamSource::EventType => Value::Text(event.event_type.as_str().to_owned()),
        ParamSource::EventId => Value::Text(event.id.to_string()),
        ParamSource::CreatedMs => Value::Integer(event.created.0.div_euclid(1_000_000)),
        ParamSource::CreatedRfc3339 => Value::Text(rfc3339(event.created.0)),
        ParamSource::Data(path) => {
            if documents.data.is_none() {
                documents.data = Some(parse_document(&event.data, "data")?);
            }
            lookup(documents.data.as_ref(), path)
        }
        ParamSource::Metadata(path) => {
            if documents.metadata.is_none() {
                documents.metadata = Some(parse_document(&event.metadata, "metadata")?);
            }
            lookup(documents.metadata.as_ref(), path)
        }
    })
}

/// The value at `path`, NULL where the path leads nowhere (a missing key, an index past the
/// end, a step into a scalar).
fn lookup(document: Option<&Document<'_>>, path: &[PathStep]) -> Value {
    let (mut node, rest) = match (document, path.split_first()) {
        (None | Some(Document::Empty), _) => return Value::Null,
        (Some(Document::Object(bytes, _)), None) => {
            return serde_json::from_slice::<serde_json::Value>(bytes)
                .map_or(Value::Null, |v| json_value(&v));
        }
        (Some(Document::Other(raw)), None) => return raw_value(raw),
        (Some(Document::Object(_, members)), Some((step, rest))) => match step {
            PathStep::Key(key) => match members.iter().rev().find(|(k, _)| k == key) {
                Some((_, raw)) => (*raw, rest),
                None => return Value::Null,
            },
            PathStep::Index(_) => return Value::Null,
        },
        (Some(Document::Other(raw)), Some(_)) => (*raw, path),
    };
    for step in rest {
        let next = match step {
            PathStep::Key(key) => serde_json::from_str::<Members<'_>>(node.get())
                .ok()
                .and_then(|m| m.0.into_iter().rev().find(|(k, _)| k == key))
                .map(|(_, raw)| raw),
            PathStep::Index(i) => serde_json::from_str::<Vec<&RawValue>>(node.get())
                .ok()
                .and_then(|items| items.get(*i).copied()),
        };
        match next {
            Some(raw) => node = raw,
            None => return Value::Null,
        }
    }
    raw_value(node)
}

/// A raw JSON value → [`Value`], as the module doc says.
fn raw_value(raw: &RawValue) -> Value {
    let text = raw.get().trim_start();
    match text.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(text).map_or(Value::Null, Value::Text),
        Some(b'{' | b'[') => {
            serde_json::from_str::<serde_json::Value>(text).map_or(Value::Null, |v| json_value(&v))
        }
        Some(b't') => Value::Bool(true),
        Some(b'f') => Value::Bool(false),
        Some(b'n') | None => Value::Null,
        Some(_) => serde_json::from_str::<serde_json::Number>(text)
            .map_or(Value::Null, |n| json_number(&n)),
    }
}

/// JSON → [`Value`] as the module doc says.
pub(crate) fn json_value(json: &serde_json::Value) -> Value {
    match json {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => json_number(n),
        serde_json::Value::String(s) => Value::Text(s.clone()),
        serde_json::Value::Array(_) | serde_json::Value::Object(_) => Value::Json(json.to_string()),
    }
}

fn json_number(n: &serde_json::Number) -> Value {
    match n.as_i64() {
        Some(i) => Value::Integer(i),
        None => n.as_f64().map_or(Value::Null, Value::Real),
    }
}

/// The event as effects send it: `id`, `stream`, `revision`, `position`, `event_type`,
/// `created` (RFC 3339), `data` and `metadata` (the documents when JSON, else their text, or
/// null when empty).
pub fn event_json(event: &EventRecord) -> serde_json::Value {
    let document = |bytes: &[u8]| {
        if bytes.is_empty() {
            return serde_json::Value::Null;
        }
        serde_json::from_slice(bytes).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned())
        })
    };
    serde_json::json!({
        "id": event.id.to_string(),
        "stream": event.stream.as_str(),
        "revision": event.revision.0,
        "position": event.position.0,
        "event_type": event.event_type.as_str(),
        "content_type": if event.content_type == ContentType::Json { "application/json" } else { "application/octet-stream" },
        "created": rfc3339(event.created.0),
        "data": document(&event.data),
        "metadata": document(&event.metadata),
    })
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` for nanoseconds since the Unix epoch.
fn rfc3339(nanos: i64) -> String {
    let secs = nanos.div_euclid(1_000_000_000);
    let micros = nanos.rem_euclid(1_000_000_000) / 1_000;
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        of_day / 3_600,
        of_day % 3_600 / 60,
        of_day % 60
    )
}

// ---- the file format -------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProjection {
    name: String,
    #[serde(default)]
    target: Option<String>,
    /// Deserialized apart ([`RawSource`]) so its errors name the field.
    source: toml::Value,
    #[serde(default)]
    tables: Vec<String>,
    #[serde(default)]
    indexes: Vec<String>,
    #[serde(default)]
    setup: Vec<String>,
    #[serde(default)]
    partitions: Option<i64>,
    /// Deserialized apart ([`RawPolicy`]) so its errors name the field.
    #[serde(default)]
    on_error: Option<toml::Value>,
    #[serde(default)]
    handler: Vec<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    #[serde(default)]
    all: Option<bool>,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    event_types: Option<Vec<String>>,
    #[serde(default)]
    streams: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    attempts: Option<i64>,
    #[serde(default)]
    backoff_ms: Option<i64>,
    #[serde(default)]
    backoff_max_ms: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHandler {
    event_type: String,
    #[serde(default)]
    sql: Option<String>,
    #[serde(default)]
    params: Vec<String>,
    #[serde(default)]
    effects: Vec<RawEffect>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum RawEffect {
    Http(RawHttp),
    Message(RawMessage),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    url: String,
    #[serde(default)]
    method: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMessage {
    subject: String,
}

/// Parses a definition file; see the module doc for the format.
pub fn parse_definitions(text: &str) -> Result<Vec<Definition>, DefinitionError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| DefinitionError::Syntax(e.to_string()))?;
    if let Some(key) = table.keys().find(|k| *k != "projection") {
        return Err(DefinitionError::Syntax(format!(
            "unknown top-level key `{key}` (expected `[[projection]]` tables)"
        )));
    }
    let projections = match table.get("projection") {
        None => return Ok(Vec::new()),
        Some(toml::Value::Array(items)) => items,
        Some(_) => {
            return Err(DefinitionError::Syntax(
                "`projection` must be an array of tables (`[[projection]]`)".to_owned(),
            ));
        }
    };
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(projections.len());
    for (i, value) in projections.iter().enumerate() {
        let label = value
            .get("name")
            .and_then(toml::Value::as_str)
            .map_or_else(|| format!("#{}", i + 1), str::to_owned);
        let raw: RawProjection =
            value
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| DefinitionError::Invalid {
                    projection: label.clone(),
                    field: "projection".to_owned(),
                    message: e.message().to_owned(),
                })?;
        let definition = compile(raw)?;
        if !seen.insert(definition.spec.name.clone()) {
            return Err(DefinitionError::Duplicate(definition.spec.name));
        }
        out.push(definition);
    }
    Ok(out)
}

/// Builds errors for one projection.
struct Errors<'a> {
    projection: &'a str,
}

impl Errors<'_> {
    fn at(&self, field: impl Into<String>, message: impl Into<String>) -> DefinitionError {
        DefinitionError::Invalid {
            projection: self.projection.to_owned(),
            field: field.into(),
            message: message.into(),
        }
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= PROJECTION_NAME_BYTES_MAX
}

fn name_rule() -> String {
    format!("must match [a-z][a-z0-9_]* and be at most {PROJECTION_NAME_BYTES_MAX} bytes")
}

fn compile(raw: RawProjection) -> Result<Definition, DefinitionError> {
    let errors = Errors {
        projection: &raw.name,
    };
    if !valid_name(&raw.name) {
        return Err(errors.at("name", format!("`{}` {}", raw.name, name_rule())));
    }
    let target = raw
        .target
        .as_deref()
        .map(|t| parse_target(t).map_err(|m| errors.at("target", m)))
        .transpose()?;
    let raw_source: RawSource = raw
        .source
        .clone()
        .try_into()
        .map_err(|e: toml::de::Error| errors.at("source", e.message()))?;
    let source = compile_source(&raw_source).map_err(|m| errors.at("source", m))?;

    let mut objects: Vec<String> = Vec::new();
    for (field, names) in [("tables", &raw.tables), ("indexes", &raw.indexes)] {
        for name in names {
            if !valid_name(name) {
                return Err(errors.at(field, format!("`{name}` {}", name_rule())));
            }
            if objects.contains(name) {
                return Err(errors.at(field, format!("`{name}` is declared twice")));
            }
            objects.push(name.clone());
        }
    }
    for (i, sql) in raw.setup.iter().enumerate() {
        check_braces(sql, &objects).map_err(|m| errors.at(format!("setup[{i}]"), m))?;
        if sql.trim().is_empty() {
            return Err(errors.at(format!("setup[{i}]"), "empty statement"));
        }
    }
    let partitions = match raw.partitions {
        None => 1,
        Some(n) => u32::try_from(n)
            .ok()
            .filter(|n| (1..=PARTITIONS_MAX).contains(n))
            .ok_or_else(|| {
                errors.at(
                    "partitions",
                    format!("must be between 1 and {PARTITIONS_MAX}, not {n}"),
                )
            })?,
    };
    let policy = match &raw.on_error {
        None => ErrorPolicy::default(),
        Some(value) => {
            let policy: RawPolicy = value
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| errors.at("on_error", e.message()))?;
            compile_policy(&policy, &errors)?
        }
    };

    let mut entries: HashMap<String, Entry> = HashMap::new();
    let mut templates: Vec<String> = Vec::new();
    for (i, value) in raw.handler.into_iter().enumerate() {
        let label = value
            .get("event_type")
            .and_then(toml::Value::as_str)
            .map_or_else(
                || format!("handler[{i}]"),
                |t| format!("handler[{i}] ({t})"),
            );
        let handler: RawHandler = value
            .try_into()
            .map_err(|e: toml::de::Error| errors.at(label.clone(), e.message()))?;
        if handler.event_type.is_empty() {
            return Err(errors.at(format!("{label}.event_type"), "must not be empty"));
        }
        let entry = entries.entry(handler.event_type.clone()).or_default();
        match &handler.sql {
            Some(sql) => {
                let params = compile_statement(sql, &handler.params, &objects)
                    .map_err(|(field, m)| errors.at(format!("{label}.{field}"), m))?;
                if !templates.contains(sql) {
                    templates.push(sql.clone());
                }
                entry.statements.push(CompiledStatement {
                    sql: sql.clone(),
                    params,
                });
            }
            None if !handler.params.is_empty() => {
                return Err(errors.at(format!("{label}.params"), "params given without sql"));
            }
            None if handler.effects.is_empty() => {
                return Err(errors.at(label, "needs `sql`, `effects` or both"));
            }
            None => {}
        }
        for (j, effect) in handler.effects.iter().enumerate() {
            entry.effects.push(
                compile_effect(effect)
                    .map_err(|m| errors.at(format!("{label}.effects[{j}]"), m))?,
            );
        }
    }
    if entries.is_empty() {
        return Err(errors.at("handler", "no [[projection.handler]] entries"));
    }

    let handler = DeclarativeHandler {
        entries: Arc::new(entries),
    };
    let spec = ProjectionSpec {
        name: raw.name.clone(),
        source,
        tables: raw.tables,
        objects,
        setup: raw.setup,
        statements: templates,
        policy,
        partitions,
        snapshot_every: None,
        handler: Arc::new(move || Box::new(handler.clone()) as Box<dyn Handler>),
    };
    crate::runtime::validate_spec(&spec).map_err(|e| errors.at("projection", e.to_string()))?;
    Ok(Definition { spec, target })
}

fn parse_target(text: &str) -> Result<DefinitionTarget, String> {
    if let Some(path) = text.strip_prefix("sqlite:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        if path.is_empty() {
            return Err("`sqlite:` needs a file path (sqlite:views.db)".to_owned());
        }
        return Ok(DefinitionTarget::Sqlite(PathBuf::from(path)));
    }
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        return Ok(DefinitionTarget::Postgres(text.to_owned()));
    }
    Err(format!(
        "`{text}` is not a target URL (expected sqlite:PATH or postgres://…)"
    ))
}

fn compile_source(raw: &RawSource) -> Result<Source, String> {
    let given = [
        raw.all.is_some(),
        raw.category.is_some(),
        raw.event_types.is_some(),
        raw.streams.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    if given != 1 {
        return Err(
            "give exactly one of { all = true }, { category = \"…\" }, { event_types = [..] }, \
             { streams = [..] }"
                .to_owned(),
        );
    }
    let non_empty = |list: &Vec<String>, what: &str| -> Result<Vec<String>, String> {
        if list.is_empty() {
            return Err(format!("{what} must not be empty"));
        }
        if list.iter().any(String::is_empty) {
            return Err(format!("{what} holds an empty name"));
        }
        Ok(list.clone())
    };
    if let Some(all) = raw.all {
        if !all {
            return Err("`all` can only be true".to_owned());
        }
        return Ok(Source::All);
    }
    if let Some(category) = &raw.category {
        if category.is_empty() || category.contains('-') {
            return Err(format!(
                "category `{category}` must be non-empty and contain no `-`"
            ));
        }
        return Ok(Source::Category(category.clone()));
    }
    if let Some(types) = &raw.event_types {
        return non_empty(types, "event_types").map(Source::EventTypes);
    }
    match &raw.streams {
        Some(streams) => non_empty(streams, "streams").map(Source::Streams),
        None => Err("no source".to_owned()),
    }
}

fn compile_policy(raw: &RawPolicy, errors: &Errors<'_>) -> Result<ErrorPolicy, DefinitionError> {
    let defaults = ErrorPolicy::default();
    let on_failure = match raw.policy.as_deref() {
        None | Some("stop") => OnFailure::Stop,
        Some("skip") => OnFailure::Skip,
        Some("park") => OnFailure::Park,
        Some(other) => {
            return Err(errors.at(
                "on_error.policy",
                format!("`{other}` is not one of stop, skip, park"),
            ));
        }
    };
    let attempts = match raw.attempts {
        None => defaults.attempts,
        Some(n) => u32::try_from(n)
            .ok()
            .filter(|n| (1..=DEFINITION_ATTEMPTS_MAX).contains(n))
            .ok_or_else(|| {
                errors.at(
                    "on_error.attempts",
                    format!("must be between 1 and {DEFINITION_ATTEMPTS_MAX}, not {n}"),
                )
            })?,
    };
    let millis = |value: Option<i64>, default: Duration, field: &str| match value {
        None => Ok(default),
        Some(ms) => u64::try_from(ms)
            .ok()
            .map(Duration::from_millis)
            .filter(|d| *d <= DEFINITION_BACKOFF_MAX)
            .ok_or_else(|| {
                errors.at(
                    field,
                    format!(
                        "must be between 0 and {} ms, not {ms}",
                        DEFINITION_BACKOFF_MAX.as_millis()
                    ),
                )
            }),
    };
    let backoff_initial = millis(
        raw.backoff_ms,
        defaults.backoff_initial,
        "on_error.backoff_ms",
    )?;
    let backoff_max = millis(
        raw.backoff_max_ms,
        defaults.backoff_max.max(backoff_initial),
        "on_error.backoff_max_ms",
    )?;
    if backoff_max < backoff_initial {
        return Err(errors.at(
            "on_error.backoff_max_ms",
            "must not be less than backoff_ms",
        ));
    }
    Ok(ErrorPolicy {
        attempts,
        backoff_initial,
        backoff_max,
        on_failure,
    })
}

fn compile_effect(raw: &RawEffect) -> Result<EffectTemplate, String> {
    match raw {
        RawEffect::Http(http) => {
            if !(http.url.starts_with("http://") || http.url.starts_with("https://")) {
                return Err(format!("url `{}` is not http:// or https://", http.url));
            }
            let method = http
                .method
                .as_deref()
                .unwrap_or("POST")
                .to_ascii_uppercase();
            if !["POST", "PUT", "PATCH", "DELETE", "GET"].contains(&method.as_str()) {
                return Err(format!(
                    "method `{method}` is not POST, PUT, PATCH, DELETE or GET"
                ));
            }
            Ok(EffectTemplate::Http {
                method,
                url: http.url.clone(),
            })
        }
        RawEffect::Message(message) => {
            if message.subject.is_empty() {
                return Err("subject must not be empty".to_owned());
            }
            Ok(EffectTemplate::Message {
                subject: message.subject.clone(),
            })
        }
    }
}

/// Checks one handler statement: braces, placeholders against params, param sources. The error
/// is `(field, message)`.
fn compile_statement(
    sql: &str,
    params: &[String],
    objects: &[String],
) -> Result<Vec<ParamSource>, (&'static str, String)> {
    if sql.trim().is_empty() {
        return Err(("sql", "empty statement".to_owned()));
    }
    check_braces(sql, objects).map_err(|m| ("sql", m))?;
    if params.len() > DEFINITION_PARAMS_MAX {
        return Err((
            "params",
            format!("at most {DEFINITION_PARAMS_MAX} parameters"),
        ));
    }
    let used = placeholders(sql);
    if let Some(n) = used.iter().find(|n| **n == 0 || **n > params.len()) {
        return Err((
            "sql",
            format!(
                "`${n}` has no matching parameter ({} given in params)",
                params.len()
            ),
        ));
    }
    if let Some(unused) = (1..=params.len()).find(|n| !used.contains(n)) {
        return Err((
            "params",
            format!(
                "parameter {unused} (`{}`) is never used: the SQL has no `${unused}`",
                params.get(unused - 1).map_or("", String::as_str)
            ),
        ));
    }
    params
        .iter()
        .map(|p| ParamSource::parse(p).map_err(|m| ("params", m)))
        .collect()
}

/// The byte ranges of `sql` outside string literals ('…'), quoted identifiers ("…") and
/// comments (-- … and /* … */).
fn code_spans(sql: &str) -> Vec<(usize, usize)> {
    let bytes = sql.as_bytes();
    let mut spans = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let rest = bytes.get(i..).unwrap_or(&[]);
        let skip_to = if rest.starts_with(b"'") || rest.starts_with(b"\"") {
            let quote = rest.first().copied().unwrap_or(b'\'');
            let mut j = i + 1;
            loop {
                match bytes.get(j) {
                    None => break j,
                    Some(b) if *b == quote => {
                        if bytes.get(j + 1) == Some(&quote) {
                            j += 2;
                        } else {
                            break j + 1;
                        }
                    }
                    Some(_) => j += 1,
                }
            }
        } else if rest.starts_with(b"--") {
            sql.get(i..)
                .and_then(|r| r.find('\n'))
                .map_or(bytes.len(), |n| i + n)
        } else if rest.starts_with(b"/*") {
            sql.get(i + 2..)
                .and_then(|r| r.find("*/"))
                .map_or(bytes.len(), |n| i + 2 + n + 2)
        } else {
            i += 1;
            continue;
        };
        spans.push((start, i));
        i = skip_to;
        start = skip_to;
    }
    spans.push((start, bytes.len()));
    spans
}

/// The `$n` placeholders used in `sql` (outside literals and comments).
fn placeholders(sql: &str) -> BTreeSet<usize> {
    let mut used = BTreeSet::new();
    for (from, to) in code_spans(sql) {
        let code = sql.get(from..to).unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find('$') {
            let after = rest.get(at + 1..).unwrap_or("");
            let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
            if let Ok(n) = digits.parse::<usize>() {
                used.insert(n);
            }
            rest = after;
        }
    }
    used
}

/// Every `{identifier}` outside literals and comments must be a declared object.
fn check_braces(sql: &str, objects: &[String]) -> Result<(), String> {
    for (from, to) in code_spans(sql) {
        let code = sql.get(from..to).unwrap_or("");
        let mut rest = code;
        while let Some(open) = rest.find('{') {
            let after = rest.get(open + 1..).unwrap_or("");
            if let Some(close) = after.find('}') {
                let name = after.get(..close).unwrap_or("");
                let identifier = name
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if identifier && !objects.iter().any(|o| o == name) {
                    return Err(format!(
                        "`{{{name}}}` is not declared in tables or indexes (declared: {})",
                        if objects.is_empty() {
                            "none".to_owned()
                        } else {
                            objects.join(", ")
                        }
                    ));
                }
            }
            rest = after;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse() {
        assert_eq!(ParamSource::parse("data"), Ok(ParamSource::Data(vec![])));
        assert_eq!(
            ParamSource::parse("data.lines[0].sku"),
            Ok(ParamSource::Data(vec![
                PathStep::Key("lines".into()),
                PathStep::Index(0),
                PathStep::Key("sku".into())
            ]))
        );
        assert_eq!(
            ParamSource::parse("metadata[2][1]"),
            Ok(ParamSource::Metadata(vec![
                PathStep::Index(2),
                PathStep::Index(1)
            ]))
        );
        for bad in [
            "data.", "data..a", "data[x]", "data[1", "dataset", "streams", "data.a]",
        ] {
            assert!(ParamSource::parse(bad).is_err(), "{bad} parsed");
        }
    }

    /// The reference: parse the whole document into a tree and walk it.
    fn tree_lookup(bytes: &[u8], path: &[PathStep]) -> Result<Value, ()> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        let doc: serde_json::Value = serde_json::from_slice(bytes).map_err(|_| ())?;
        let mut node = Some(&doc);
        for step in path {
            node = match step {
                PathStep::Key(k) => node.and_then(|n| n.get(k)),
                PathStep::Index(i) => node.and_then(|n| n.get(i)),
            };
        }
        Ok(node.map_or(Value::Null, json_value))
    }

    #[test]
    fn raw_lookups_equal_tree_lookups() {
        let documents: [&[u8]; 12] = [
            br#"{"id":"a-1","customer":"c\u00e9 \"q\"","total":42,"lines":[{"sku":"x","qty":2},{"sku":"y","qty":-3.5}],"ok":true,"none":null}"#,
            br#" { "n" : 18446744073709551615 , "f": 1e3, "nested": {"a": {"b": [1, [2, 3]]}}, "n": 7 } "#,
            br#"{"esc\u0061ped": 1, "empty": {}, "arr": []}"#,
            br#"[10, {"a": "b"}, [true, false]]"#,
            br#""just a string""#,
            b"12",
            b"null",
            b"   ",
            b"",
            br#"{"a": 1"#,
            br#"{"a": [1, }"#,
            b"not json",
        ];
        let paths = [
            "data",
            "data.id",
            "data.customer",
            "data.total",
            "data.lines",
            "data.lines[1].qty",
            "data.lines[0].sku",
            "data.lines[5].sku",
            "data.ok",
            "data.none",
            "data.missing",
            "data.n",
            "data.f",
            "data.nested.a.b[1][0]",
            "data.nested.a.b[0].x",
            "data.escaped",
            "data.empty",
            "data.arr",
            "data[1].a",
            "data[2][0]",
            "data[0]",
            "data.id.x",
        ];
        for doc in documents {
            for path in paths {
                let Ok(ParamSource::Data(steps)) = ParamSource::parse(path) else {
                    panic!("{path} does not parse");
                };
                let expected = tree_lookup(doc, &steps);
                let got = parse_document(doc, "data").map(|d| lookup(Some(&d), &steps));
                match (expected, got) {
                    (Ok(e), Ok(g)) => {
                        assert_eq!(g, e, "{path} of {}", String::from_utf8_lossy(doc))
                    }
                    (Err(()), Err(_)) => {}
                    (e, g) => panic!(
                        "{path} of {}: tree {e:?}, raw {:?}",
                        String::from_utf8_lossy(doc),
                        g.map_err(|e| e.0)
                    ),
                }
            }
        }
    }

    #[test]
    fn placeholders_skip_literals_and_comments() {
        let sql = "SELECT $1, '$2', \"$3\" -- $4\n, $10 /* $5 */ , $$";
        assert_eq!(placeholders(sql), BTreeSet::from([1, 10]));
    }

    #[test]
    fn rfc3339_formats() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456Z"
        );
        assert_eq!(rfc3339(-1_000), "1969-12-31T23:59:59.999999Z");
        assert_eq!(
            rfc3339(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
    }
}
