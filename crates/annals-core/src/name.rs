//! Stream names and event types: validated, cheaply clonable strings.
//!
//! A stream's category is its name up to the first `-` (`order-42` is in `order`); a name without a
//! `-` is its own category. The metadata of stream `s` lives in stream `$$s`, as in KurrentDB.

use std::fmt;
use std::sync::Arc;

use crate::error::InputError;
use crate::limits::{EVENT_TYPE_BYTES_MAX, STREAM_NAME_BYTES_MAX};

/// A validated stream name: non-empty UTF-8 of at most [`STREAM_NAME_BYTES_MAX`] bytes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamName(Arc<str>);

/// Prefix of the stream holding another stream's metadata.
const METADATA_PREFIX: &str = "$$";

impl StreamName {
    /// Validates `name`.
    pub fn new(name: impl AsRef<str>) -> Result<Self, InputError> {
        let name = name.as_ref();
        if name.is_empty() {
            return Err(InputError::EmptyStreamName);
        }
        if name.len() > STREAM_NAME_BYTES_MAX {
            return Err(InputError::StreamNameTooLong {
                len: name.len(),
                max: STREAM_NAME_BYTES_MAX,
            });
        }
        Ok(Self(Arc::from(name)))
    }

    /// Wraps an already shared string; used by decoders that intern names.
    pub fn from_arc(name: Arc<str>) -> Result<Self, InputError> {
        if name.is_empty() {
            return Err(InputError::EmptyStreamName);
        }
        if name.len() > STREAM_NAME_BYTES_MAX {
            return Err(InputError::StreamNameTooLong {
                len: name.len(),
                max: STREAM_NAME_BYTES_MAX,
            });
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn as_arc(&self) -> &Arc<str> {
        &self.0
    }

    /// The category: the name up to the first `-`, or the whole name.
    pub fn category(&self) -> &str {
        category_of(&self.0)
    }

    /// True for `$$name` streams, which hold stream metadata.
    pub fn is_metadata_stream(&self) -> bool {
        self.0.starts_with(METADATA_PREFIX) && self.0.len() > METADATA_PREFIX.len()
    }

    /// True for streams whose name starts with `$` (system streams).
    pub fn is_system(&self) -> bool {
        self.0.starts_with('$')
    }

    /// The stream that holds this stream's metadata (`$$name`).
    pub fn metadata_stream(&self) -> Result<StreamName, InputError> {
        StreamName::new(format!("{METADATA_PREFIX}{}", self.0))
    }

    /// For `$$name`, the stream `name` whose metadata it holds.
    pub fn metadata_target(&self) -> Option<StreamName> {
        if !self.is_metadata_stream() {
            return None;
        }
        self.0
            .get(METADATA_PREFIX.len()..)
            .and_then(|rest| StreamName::new(rest).ok())
    }
}

/// The category of a stream name, as defined on [`StreamName::category`].
pub fn category_of(name: &str) -> &str {
    match name.find('-') {
        Some(i) => name.get(..i).unwrap_or(name),
        None => name,
    }
}

impl fmt::Debug for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for StreamName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A validated event type: non-empty UTF-8 of at most [`EVENT_TYPE_BYTES_MAX`] bytes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventType(pub(crate) Arc<str>);

impl EventType {
    pub fn new(name: impl AsRef<str>) -> Result<Self, InputError> {
        Self::from_arc(Arc::from(name.as_ref()))
    }

    pub fn from_arc(name: Arc<str>) -> Result<Self, InputError> {
        if name.is_empty() {
            return Err(InputError::EmptyEventType);
        }
        if name.len() > EVENT_TYPE_BYTES_MAX {
            return Err(InputError::EventTypeTooLong {
                len: name.len(),
                max: EVENT_TYPE_BYTES_MAX,
            });
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn as_arc(&self) -> &Arc<str> {
        &self.0
    }
}

impl fmt::Debug for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn category_is_prefix_before_first_dash() {
        assert_eq!(StreamName::new("order-42").unwrap().category(), "order");
        assert_eq!(StreamName::new("order-42-x").unwrap().category(), "order");
        assert_eq!(StreamName::new("plain").unwrap().category(), "plain");
        assert_eq!(StreamName::new("-x").unwrap().category(), "");
    }

    #[test]
    fn bad_names_are_refused() {
        assert_eq!(StreamName::new(""), Err(InputError::EmptyStreamName));
        let long = "a".repeat(STREAM_NAME_BYTES_MAX + 1);
        assert!(matches!(
            StreamName::new(long),
            Err(InputError::StreamNameTooLong { .. })
        ));
        assert!(StreamName::new("a".repeat(STREAM_NAME_BYTES_MAX)).is_ok());
    }

    #[test]
    fn metadata_stream_round_trips() {
        let s = StreamName::new("order-1").unwrap();
        let m = s.metadata_stream().unwrap();
        assert_eq!(m.as_str(), "$$order-1");
        assert!(m.is_metadata_stream());
        assert_eq!(m.metadata_target(), Some(s));
        assert!(!StreamName::new("$$").unwrap().is_metadata_stream());
    }
}
