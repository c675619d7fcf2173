//! Stream metadata as KurrentDB stores it: a JSON object in the last `$metadata` event of stream
//! `$$name`, with `$maxCount`, `$maxAge` (seconds), `$tb` (truncate before), `$acl` (the access list,
//! [`crate::acl`]) and any custom keys.
//!
//! Soft delete writes `$tb` = `i64::MAX`: the stream reads as not found until a later append, whose
//! events are visible again (the engine compares positions to tell them apart).

use std::sync::Arc;

use crate::acl::StreamAcl;
use crate::error::InputError;

/// The rules from a stream's metadata that reads honour.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamMetadata {
    pub max_count: Option<u64>,
    pub max_age_secs: Option<u64>,
    pub truncate_before: Option<u64>,
    /// The stream's access list, if its metadata has one.
    pub acl: Option<Arc<StreamAcl>>,
}

/// `$tb` value a soft delete writes.
pub const SOFT_DELETE_TRUNCATE_BEFORE: u64 = i64::MAX as u64;

impl StreamMetadata {
    /// Parses a metadata event's JSON body. Unknown keys are kept by the store but ignored here.
    pub fn parse(json: &[u8]) -> Result<Self, InputError> {
        let value: serde_json::Value = serde_json::from_slice(json)
            .map_err(|e| InputError::InvalidMetadata(format!("not JSON: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| InputError::InvalidMetadata("not a JSON object".to_owned()))?;
        let field = |key: &str| -> Result<Option<u64>, InputError> {
            match obj.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                    InputError::InvalidMetadata(format!("{key} must be a non-negative integer"))
                }),
            }
        };
        let acl = match obj.get("$acl") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(Arc::new(StreamAcl::from_json(v)?)),
        };
        Ok(Self {
            max_count: field("$maxCount")?,
            max_age_secs: field("$maxAge")?,
            truncate_before: field("$tb")?,
            acl,
        })
    }

    /// The JSON a soft delete writes, keeping `previous`'s other keys.
    pub fn soft_delete_json(previous: Option<&[u8]>) -> Vec<u8> {
        let mut obj = previous
            .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default();
        obj.insert(
            "$tb".to_owned(),
            serde_json::Value::from(SOFT_DELETE_TRUNCATE_BEFORE),
        );
        serde_json::to_vec(&serde_json::Value::Object(obj)).unwrap_or_default()
    }

    /// The JSON an append to a soft-deleted stream writes first, restoring it from revision
    /// `truncate_before` on (`$tb`), keeping `previous`'s other keys.
    pub fn undelete_json(previous: Option<&[u8]>, truncate_before: u64) -> Vec<u8> {
        let mut obj = previous
            .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default();
        obj.insert("$tb".to_owned(), serde_json::Value::from(truncate_before));
        serde_json::to_vec(&serde_json::Value::Object(obj)).unwrap_or_default()
    }

    /// Whether these rules mark the stream soft-deleted.
    pub fn is_soft_deleted(&self) -> bool {
        self.truncate_before == Some(SOFT_DELETE_TRUNCATE_BEFORE)
    }

    /// Whether any rule hides events.
    pub fn restricts(&self) -> bool {
        self.max_count.is_some() || self.max_age_secs.is_some() || self.truncate_before.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_keys() {
        let m = StreamMetadata::parse(br#"{"$maxCount":3,"$maxAge":60,"$tb":2,"x":"y"}"#).unwrap();
        assert_eq!(m.max_count, Some(3));
        assert_eq!(m.max_age_secs, Some(60));
        assert_eq!(m.truncate_before, Some(2));
        assert!(StreamMetadata::parse(br#"{"$maxCount":-1}"#).is_err());
        assert!(StreamMetadata::parse(b"[]").is_err());
        assert!(StreamMetadata::parse(b"nope").is_err());
        assert!(StreamMetadata::parse(br#"{"$acl":{"$w":7}}"#).is_err());
        let m = StreamMetadata::parse(br#"{"$acl":{"$w":"ann"}}"#).unwrap();
        let acl = m.acl.unwrap();
        assert_eq!(
            acl.roles(crate::StreamRight::Write),
            Some(&["ann".to_owned()][..])
        );
    }

    #[test]
    fn soft_delete_keeps_other_keys() {
        let json = StreamMetadata::soft_delete_json(Some(br#"{"$maxCount":3,"k":1}"#));
        let m = StreamMetadata::parse(&json).unwrap();
        assert!(m.is_soft_deleted());
        assert_eq!(m.max_count, Some(3));
        assert!(String::from_utf8(json).unwrap().contains("\"k\":1"));
    }
}
