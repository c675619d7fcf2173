//! Values at paths in an event's data and metadata, read from the raw JSON text without
//! building a tree of the whole document, and JSON converted to [`Value`].
//!
//! Building a `serde_json::Value` per event cost about a tenth of a SQLite rebuild's time; a
//! document here is split into its top-level members once, and only the member a path names is
//! parsed further.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::param_source::PathStep;
use crate::handler::HandlerError;
use crate::target::Value;

/// The event's data and metadata, each checked and split into its top-level members once per
/// event, and only if a parameter needs it. A value is converted straight from the raw text of
/// the member a path names; no tree of the whole document is built (that cost about a tenth of
/// a SQLite rebuild's time).
#[derive(Default)]
pub(super) struct Documents<'e> {
    pub(super) data: Option<Document<'e>>,
    pub(super) metadata: Option<Document<'e>>,
}

/// One parsed document.
pub(super) enum Document<'e> {
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

/// Checks `bytes` (the event's `what`) as JSON and splits an object into its members.
pub(super) fn parse_document<'e>(
    bytes: &'e [u8],
    what: &str,
) -> Result<Document<'e>, HandlerError> {
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

/// The value at `path`, NULL where the path leads nowhere (a missing key, an index past the
/// end, a step into a scalar).
pub(super) fn lookup(document: Option<&Document<'_>>, path: &[PathStep]) -> Value {
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

/// A JSON number as an integer where it is one that fits, else a real.
fn json_number(n: &serde_json::Number) -> Value {
    match n.as_i64() {
        Some(i) => Value::Integer(i),
        None => n.as_f64().map_or(Value::Null, Value::Real),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::ParamSource;

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
}
