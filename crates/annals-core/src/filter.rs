//! Server-side filters for `$all` reads and subscriptions.
//!
//! A filter matches either the stream name or the event type, by a list of prefixes (any may match)
//! or by one regular expression. Regexes are compiled with `fancy-regex` because clients send
//! look-arounds (the Python client's default filter is a negative look-ahead).
//!
//! A filter comes from the network and runs against every event a read or a subscription scans,
//! so what one may cost is bounded, each by a named constant:
//! - the pattern's length ([`FILTER_REGEX_BYTES_MAX`]) and the number and length of prefixes
//!   ([`FILTER_PREFIXES_MAX`]; a prefix longer than the longest name could never match);
//! - the compiled size: the program `fancy-regex` runs ([`FILTER_REGEX_PROGRAM_MAX`]
//!   instructions; recursive subroutine calls inline without end otherwise) and each part it hands
//!   to the `regex` crate ([`FILTER_REGEX_COMPILED_BYTES_MAX`], the lazy DFA's cache too, strictly);
//!   a pattern over any bound fails to compile, a clear error for the caller;
//! - the cost of one match: backtracking (look-arounds, backreferences) stops after
//!   [`FILTER_REGEX_BACKTRACK_MAX`] backtracks. The parts without backtracking run in time
//!   linear in the subject, which is a stream name or an event type, themselves bounded.
//!
//! A match that hits the backtracking limit counts as **no match** ([`Filter::matches_str`]): the
//! read or subscription moves on instead of stalling or failing for every later event, and
//! [`Filter::try_matches_str`] tells that case apart for callers that want to report it.

use std::sync::Arc;

use crate::event::EventRecord;
use crate::limits::{
    EVENT_TYPE_BYTES_MAX, FILTER_PREFIXES_MAX, FILTER_REGEX_BACKTRACK_MAX, FILTER_REGEX_BYTES_MAX,
    FILTER_REGEX_COMPILED_BYTES_MAX, FILTER_REGEX_PROGRAM_MAX, STREAM_NAME_BYTES_MAX,
};

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
    #[error("a prefix filter takes at most {FILTER_PREFIXES_MAX} prefixes, not {count}")]
    TooManyPrefixes { count: usize },
    #[error("a filter prefix is longer than {max} bytes (a name is never longer)", max = PREFIX_BYTES_MAX)]
    PrefixTooLong,
    /// A match gave up after [`FILTER_REGEX_BACKTRACK_MAX`] backtracks.
    #[error("filter regex {pattern:?} gave up after {FILTER_REGEX_BACKTRACK_MAX} backtracks")]
    MatchLimit { pattern: String },
}

/// A prefix longer than any stream name or event type could never match.
const PREFIX_BYTES_MAX: usize = if STREAM_NAME_BYTES_MAX > EVENT_TYPE_BYTES_MAX {
    STREAM_NAME_BYTES_MAX
} else {
    EVENT_TYPE_BYTES_MAX
};

impl Filter {
    /// Matches when the target starts with any of `prefixes`.
    pub fn prefixes(target: FilterTarget, prefixes: Vec<String>) -> Result<Self, FilterError> {
        if prefixes.is_empty() {
            return Err(FilterError::NoPrefixes);
        }
        if prefixes.len() > FILTER_PREFIXES_MAX {
            return Err(FilterError::TooManyPrefixes {
                count: prefixes.len(),
            });
        }
        if prefixes.iter().any(|p| p.len() > PREFIX_BYTES_MAX) {
            return Err(FilterError::PrefixTooLong);
        }
        Ok(Self {
            target,
            matcher: Matcher::Prefixes(prefixes.into()),
        })
    }

    /// Matches when `pattern` finds a match anywhere in the target (anchor it to match whole).
    pub fn regex(target: FilterTarget, pattern: &str) -> Result<Self, FilterError> {
        if pattern.len() > FILTER_REGEX_BYTES_MAX {
            return Err(FilterError::BadRegex {
                pattern: pattern.chars().take(64).collect(),
                message: format!("longer than {FILTER_REGEX_BYTES_MAX} bytes"),
            });
        }
        let regex = fancy_regex::RegexBuilder::new(pattern)
            .backtrack_limit(FILTER_REGEX_BACKTRACK_MAX)
            .max_prog_size(FILTER_REGEX_PROGRAM_MAX)
            .delegate_size_limit(FILTER_REGEX_COMPILED_BYTES_MAX)
            .delegate_dfa_size_limit(FILTER_REGEX_COMPILED_BYTES_MAX)
            .delegate_dfa_skip_cache_capacity_check(false)
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

    /// Whether `value` (a stream name or event type) passes. A regex match that gives up at the
    /// backtracking limit does not pass: the reader moves on rather than stalling.
    pub fn matches_str(&self, value: &str) -> bool {
        self.try_matches_str(value).unwrap_or(false)
    }

    /// Whether `value` passes, or [`FilterError::MatchLimit`] when the regex gave up.
    pub fn try_matches_str(&self, value: &str) -> Result<bool, FilterError> {
        match &self.matcher {
            Matcher::Prefixes(prefixes) => {
                Ok(prefixes.iter().any(|p| value.starts_with(p.as_str())))
            }
            Matcher::Regex(re) => re.is_match(value).map_err(|_| FilterError::MatchLimit {
                pattern: re.as_str().chars().take(64).collect(),
            }),
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

    /// Nested alternatives of the same letter before a look-ahead: without a backtracking limit
    /// this takes time exponential in the run of `a`s.
    #[test]
    fn catastrophic_backtracking_gives_up_and_does_not_match() {
        let f = Filter::regex(FilterTarget::StreamName, r"^(a|a)*(?!a)b").unwrap();
        let name = "a".repeat(1_000);
        assert!(matches!(
            f.try_matches_str(&name),
            Err(FilterError::MatchLimit { .. })
        ));
        assert!(!f.matches_str(&name));
        // The same filter still answers where it needs little backtracking.
        assert!(f.try_matches_str("aab").unwrap());
    }

    #[test]
    fn a_regex_too_large_once_compiled_is_refused() {
        // 200 Unicode word classes compile to several MiB; the `regex` crate's own default
        // limit lets this through.
        assert!(matches!(
            Filter::regex(FilterTarget::StreamName, r"\w{200}"),
            Err(FilterError::BadRegex { .. })
        ));
        // Subroutine calls are inlined: each group calling the previous one twice doubles the
        // backtracking program, 2^16 copies here (unbounded, 24 groups take seconds to compile).
        let mut doubling = r"(?<g0>a\1?)".to_owned();
        for i in 1..16 {
            doubling.push_str(&format!(r"(?<g{i}>\g<g{p}>\g<g{p}>)", p = i - 1));
        }
        assert!(doubling.len() < FILTER_REGEX_BYTES_MAX);
        assert!(matches!(
            Filter::regex(FilterTarget::StreamName, &doubling),
            Err(FilterError::BadRegex { .. })
        ));
        // A recursive subroutine call never ends.
        assert!(Filter::regex(FilterTarget::StreamName, r"(?<x>a\g<x>)").is_err());
    }

    #[test]
    fn a_long_pattern_or_too_many_prefixes_are_refused() {
        let long = "a".repeat(FILTER_REGEX_BYTES_MAX + 1);
        assert!(matches!(
            Filter::regex(FilterTarget::StreamName, &long),
            Err(FilterError::BadRegex { .. })
        ));
        let many = vec!["p".to_owned(); FILTER_PREFIXES_MAX + 1];
        assert!(matches!(
            Filter::prefixes(FilterTarget::StreamName, many),
            Err(FilterError::TooManyPrefixes { .. })
        ));
        let huge = vec!["p".repeat(PREFIX_BYTES_MAX + 1)];
        assert!(matches!(
            Filter::prefixes(FilterTarget::StreamName, huge),
            Err(FilterError::PrefixTooLong)
        ));
    }

    #[test]
    fn bad_regex_is_an_error() {
        assert!(matches!(
            Filter::regex(FilterTarget::StreamName, "(unclosed"),
            Err(FilterError::BadRegex { .. })
        ));
    }
}
