//! Server-side filters for `$all` reads and subscriptions.
//!
//! A filter matches either the stream name or the event type, by a list of prefixes (any may match)
//! or by one regular expression. Regexes are compiled with `fancy-regex` because clients send
//! look-arounds (the Python client's default filter is a negative look-ahead).

use std::sync::Arc;

use crate::event::EventRecord;

/// What a filter looks at.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FilterTarget {
    StreamName,
    EventType,
}

#[derive(Clone, Debug)]
enum Matcher {
    Prefixes(Arc<[String]>),
    Regex(Arc<fancy_regex::Regex>),
}

/// A compiled filter.
#[derive(Clone, Debug)]
pub struct Filter {
    target: FilterTarget,
    matcher: Matcher,
}

/// A filter definition that could not be compiled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FilterError {
    #[error("invalid filter regex {pattern:?}: {message}")]
    BadRegex { pattern: String, message: String },
    #[error("a prefix filter needs at least one prefix")]
    NoPrefixes,
}

/// Longest regex source accepted, in bytes, and the backtracking limit applied while matching, so a
/// hostile pattern cannot stall a reader.
const REGEX_BYTES_MAX: usize = 4_096;
const REGEX_BACKTRACK_MAX: usize = 100_000;

impl Filter {
    /// Matches when the target starts with any of `prefixes`.
    pub fn prefixes(target: FilterTarget, prefixes: Vec<String>) -> Result<Self, FilterError> {
        if prefixes.is_empty() {
            return Err(FilterError::NoPrefixes);
        }
        Ok(Self {
            target,
            matcher: Matcher::Prefixes(prefixes.into()),
        })
    }

    /// Matches when `pattern` finds a match anywhere in the target (anchor it to match whole).
    pub fn regex(target: FilterTarget, pattern: &str) -> Result<Self, FilterError> {
        if pattern.len() > REGEX_BYTES_MAX {
            return Err(FilterError::BadRegex {
                pattern: pattern.chars().take(64).collect(),
                message: format!("longer than {REGEX_BYTES_MAX} bytes"),
            });
        }
        let regex = fancy_regex::RegexBuilder::new(pattern)
            .backtrack_limit(REGEX_BACKTRACK_MAX)
            .build()
            .map_err(|e| FilterError::BadRegex {
                pattern: pattern.to_owned(),
                message: e.to_string(),
            })?;
        Ok(Self {
            target,
            matcher: Matcher::Regex(Arc::new(regex)),
        })
    }

    pub fn target(&self) -> FilterTarget {
        self.target
    }

    /// Whether `value` (a stream name or event type) passes.
    pub fn matches_str(&self, value: &str) -> bool {
        match &self.matcher {
            Matcher::Prefixes(prefixes) => prefixes.iter().any(|p| value.starts_with(p.as_str())),
            // A pattern that exceeds the backtrack limit does not match: the reader moves on
            // rather than stalling.
            Matcher::Regex(re) => re.is_match(value).unwrap_or(false),
        }
    }

    /// Whether `event` passes.
    pub fn matches(&self, event: &EventRecord) -> bool {
        match self.target {
            FilterTarget::StreamName => self.matches_str(event.stream.as_str()),
            FilterTarget::EventType => self.matches_str(event.event_type.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_lookahead_compiles_and_matches() {
        let f = Filter::regex(FilterTarget::StreamName, r"^(?!\$).*").unwrap();
        assert!(f.matches_str("order-1"));
        assert!(!f.matches_str("$$order-1"));
    }

    #[test]
    fn prefixes_match_any() {
        let f =
            Filter::prefixes(FilterTarget::EventType, vec!["Order".into(), "Cart".into()]).unwrap();
        assert!(f.matches_str("OrderPlaced"));
        assert!(f.matches_str("CartEmptied"));
        assert!(!f.matches_str("Shipped"));
        assert!(Filter::prefixes(FilterTarget::EventType, vec![]).is_err());
    }

    #[test]
    fn bad_regex_is_an_error() {
        assert!(matches!(
            Filter::regex(FilterTarget::StreamName, "(unclosed"),
            Err(FilterError::BadRegex { .. })
        ));
    }
}
