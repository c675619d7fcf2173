//! Which events a reader of the log takes, as projections and relays declare it: all of `$all`
//! (system events excluded), one category, some event types, or some streams. Owns the
//! declaration's parsing (`{ category = "order" }` and its siblings), the server-side filter
//! that selects it, and the exact check on top of that filter.

use serde::Deserialize;

use crate::event::EventRecord;
use crate::filter::{Filter, FilterError, FilterTarget};

/// Which events a reader takes.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Source {
    /// Every event in `$all` (system events, `$`-prefixed types, excluded).
    All,
    /// Streams of one category: names starting with `{category}-`.
    Category(String),
    /// Events of exactly these types.
    EventTypes(Vec<String>),
    /// Exactly these streams.
    Streams(Vec<String>),
}

/// A source as declared: exactly one of its fields given.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    #[serde(default)]
    pub all: Option<bool>,
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub event_types: Option<Vec<String>>,
    #[serde(default)]
    pub streams: Option<Vec<String>>,
}

impl Source {
    /// The source a declaration names, or what is wrong with it. A source whose filter would
    /// not compile (too many or too long names) is refused here, where its definition is read.
    pub fn from_spec(raw: &SourceSpec) -> Result<Self, String> {
        let source = Self::from_spec_unchecked(raw)?;
        source
            .filter()
            .map_err(|e| format!("the source's filter: {e}"))?;
        Ok(source)
    }

    fn from_spec_unchecked(raw: &SourceSpec) -> Result<Self, String> {
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

    /// The server-side filter that selects the source's events; prefix filters also match
    /// longer names, so readers check [`Source::matches`] on top.
    pub fn filter(&self) -> Result<Filter, FilterError> {
        match self {
            Source::All => Filter::regex(FilterTarget::EventType, r"^[^$]"),
            Source::Category(c) => {
                Filter::prefixes(FilterTarget::StreamName, vec![format!("{c}-")])
            }
            Source::EventTypes(types) => Filter::prefixes(FilterTarget::EventType, types.clone()),
            Source::Streams(streams) => Filter::prefixes(FilterTarget::StreamName, streams.clone()),
        }
    }

    /// Whether an event the filter let through is one of the source's.
    pub fn matches(&self, event: &EventRecord) -> bool {
        match self {
            Source::All | Source::Category(_) => true,
            Source::EventTypes(types) => types.iter().any(|t| t == event.event_type.as_str()),
            Source::Streams(streams) => streams.iter().any(|s| s == event.stream.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_form_is_taken() {
        let spec = |text: &str| -> SourceSpec { serde_json::from_str(text).unwrap() };
        assert_eq!(
            Source::from_spec(&spec(r#"{"category":"order"}"#)),
            Ok(Source::Category("order".to_owned()))
        );
        assert_eq!(Source::from_spec(&spec(r#"{"all":true}"#)), Ok(Source::All));
        assert!(Source::from_spec(&spec(r#"{"all":false}"#)).is_err());
        assert!(Source::from_spec(&spec(r#"{"category":"a-b"}"#)).is_err());
        assert!(Source::from_spec(&spec(r#"{"streams":[]}"#)).is_err());
        assert!(Source::from_spec(&spec(r#"{"all":true,"category":"x"}"#)).is_err());
        assert!(Source::from_spec(&spec("{}")).is_err());
    }
}
