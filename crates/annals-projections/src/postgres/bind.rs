//! Values converted for the types PostgreSQL inferred for a prepared statement's parameters.
//!
//! The server infers each `$n`'s type from the SQL; [`bind`] turns a [`Value`] into that type
//! before the client sees it (integers range-checked, texts sent in the server's text format
//! where it parses them, JSON checked), so a value that does not fit is reported as the
//! statement's fault naming the parameter, and values never enter the SQL text.

use std::borrow::Cow;
use std::error::Error as StdError;

use bytes::BytesMut;
use postgres::types::{Format, IsNull, ToSql, Type, to_sql_checked};

use crate::sql_text::abbreviate;
use crate::target::{Statement, TargetError, Value};

/// A value converted for one parameter type. Conversions happen before the client sees the
/// value, so a value that does not fit is reported with the parameter's number.
#[derive(Debug)]
pub(super) enum Bound<'a> {
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
pub(super) fn bind_all<'a>(
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
