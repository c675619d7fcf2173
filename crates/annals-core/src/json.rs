//! An event as JSON: the one shape every surface that shows events as JSON uses (the HTTP API,
//! server-sent events, the CLI's `read` output and webhook effects), so a reader learns it once.
//!
//! Fields (camelCase): `id`, `stream`, `revision`, `position`, `type`, `created` (RFC 3339,
//! UTC, nanoseconds), `isJson`, `data`, `metadataIsJson`, `metadata`. `data` is the event's JSON
//! document when the event is JSON and parses, else its bytes in standard base64 (with `isJson`
//! false); `metadata` likewise, and `null` when the event has none. An event read through a link
//! with links resolved also has `link`, the link record in the same shape.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Serialize;
use serde_json::Value;

use crate::event::{ContentType, EventRecord};
use crate::link::ResolvedEvent;
use crate::timestamp::SubsecondDigits;

/// An event in its JSON shape; serialize it with serde.
#[derive(Clone, PartialEq, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventJson {
    pub id: String,
    pub stream: String,
    pub revision: u64,
    pub position: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub created: String,
    pub is_json: bool,
    pub data: Value,
    pub metadata_is_json: bool,
    pub metadata: Value,
    /// The link record this event was read through, for a reader that resolves links (absent
    /// otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<Box<EventJson>>,
}

impl EventJson {
    pub fn from_record(e: &EventRecord) -> Self {
        let (is_json, data) = payload(&e.data, e.content_type == ContentType::Json);
        let (metadata_is_json, metadata) = if e.metadata.is_empty() {
            (true, Value::Null)
        } else {
            payload(&e.metadata, true)
        };
        Self {
            id: e.id.to_string(),
            stream: e.stream.to_string(),
            revision: e.revision.0,
            position: e.position.0,
            event_type: e.event_type.to_string(),
            created: e.created.rfc3339(SubsecondDigits::Nanos),
            is_json,
            data,
            metadata_is_json,
            metadata,
            link: None,
        }
    }

    /// A resolved event: the event, with the link record it was read through if any.
    pub fn from_resolved(r: &ResolvedEvent) -> Self {
        Self {
            link: r.link.as_ref().map(|l| Box::new(Self::from_record(l))),
            ..Self::from_record(&r.event)
        }
    }

    /// As a `serde_json::Value`, for callers that embed it in a larger document.
    pub fn to_value(&self) -> Value {
        // Serializing strings, numbers and values into a Value cannot fail.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// Bytes as their JSON value when they claim to be JSON and parse, else as base64.
fn payload(bytes: &[u8], claims_json: bool) -> (bool, Value) {
    if claims_json && let Ok(v) = serde_json::from_slice::<Value>(bytes) {
        return (true, v);
    }
    (false, Value::String(BASE64.encode(bytes)))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::{EventType, Position, Revision, StreamName, Timestamp};

    fn record(
        content_type: ContentType,
        data: &'static [u8],
        metadata: &'static [u8],
    ) -> EventRecord {
        EventRecord {
            id: Uuid::nil(),
            stream: StreamName::new("order-1").unwrap(),
            revision: Revision(3),
            position: Position(42),
            event_type: EventType::new("OrderPlaced").unwrap(),
            content_type,
            created: Timestamp(1_700_000_000_000_000_123),
            data: Bytes::from_static(data),
            metadata: Bytes::from_static(metadata),
        }
    }

    #[test]
    fn json_event_is_inline_and_binary_is_base64() {
        let json = EventJson::from_record(&record(ContentType::Json, br#"{"a":1}"#, b""));
        assert_eq!(
            json.to_value(),
            json!({
                "id": "00000000-0000-0000-0000-000000000000",
                "stream": "order-1",
                "revision": 3,
                "position": 42,
                "type": "OrderPlaced",
                "created": "2023-11-14T22:13:20.000000123Z",
                "isJson": true,
                "data": {"a": 1},
                "metadataIsJson": true,
                "metadata": null,
            })
        );
        let binary = EventJson::from_record(&record(ContentType::Binary, &[0xff, 0, 1], b"{}"));
        assert!(!binary.is_json);
        assert_eq!(binary.data, json!("/wAB"));
        assert!(binary.metadata_is_json);
        assert_eq!(binary.metadata, json!({}));
        // Data that claims to be JSON but does not parse is shown as bytes, not dropped.
        let broken = EventJson::from_record(&record(ContentType::Json, b"{oops", b"not json"));
        assert!(!broken.is_json);
        assert_eq!(broken.data, json!("e29vcHM="));
        assert!(!broken.metadata_is_json);
        assert_eq!(broken.metadata, json!("bm90IGpzb24="));
    }
}
