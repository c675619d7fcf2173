//! The compile step: a parsed definition file checked field by field and turned into
//! [`Definition`]s, each a [`ProjectionSpec`] with a [`DeclarativeHandler`] and a target.
//!
//! Everything that can be checked without a database is checked here, so a bad file is refused
//! with the projection and the field named before anything runs; SQL that does not prepare is
//! left to [`crate::Target::check`] at registration.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::handler::{CompiledStatement, DeclarativeHandler, EffectTemplate, Entry};
use super::param_source::ParamSource;
use super::schema::{RawEffect, RawHandler, RawPolicy, RawProjection};
use super::sql_lex::{check_braces, placeholders};
use super::{
    DEFINITION_ATTEMPTS_MAX, DEFINITION_BACKOFF_MAX, DEFINITION_PARAMS_MAX, Definition,
    DefinitionError, DefinitionTarget,
};
use crate::handler::Handler;
use crate::runtime::PROJECTION_NAME_BYTES_MAX;
use crate::spec::{ErrorPolicy, OnFailure, PARTITIONS_MAX, ProjectionSpec, Source};
use annals_core::SourceSpec as RawSource;

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
    let source = Source::from_spec(&raw_source).map_err(|m| errors.at("source", m))?;

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
