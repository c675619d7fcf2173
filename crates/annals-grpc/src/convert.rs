//! Conversions between the wire types and the Annals ones: UUIDs, stream names, expected
//! revisions and recorded events.

use std::collections::HashMap;

use annals_core::{EventRecord, ExpectedRevision, StreamName};
use bytes::Bytes;

use crate::error::GrpcError;
use crate::proto::shared::uuid as pb_uuid;
use crate::proto::shared::{StreamIdentifier, Uuid};
use crate::proto::streams::read_resp;

/// Parses a wire UUID in either form.
pub(crate) fn parse_uuid(id: Option<&Uuid>) -> Result<::uuid::Uuid, GrpcError> {
    match id.and_then(|u| u.value.as_ref()) {
        Some(pb_uuid::Value::String(s)) => ::uuid::Uuid::parse_str(s)
            .map_err(|e| GrpcError::InvalidArgument(format!("invalid event id {s:?}: {e}"))),
        Some(pb_uuid::Value::Structured(s)) => {
            let hi = u64::from_ne_bytes(s.most_significant_bits.to_ne_bytes());
            let lo = u64::from_ne_bytes(s.least_significant_bits.to_ne_bytes());
            Ok(::uuid::Uuid::from_u64_pair(hi, lo))
        }
        None => Err(GrpcError::InvalidArgument("event id is missing".to_owned())),
    }
}

/// A UUID in the form the client asked for.
pub(crate) fn wire_uuid(id: ::uuid::Uuid, structured: bool) -> Uuid {
    let value = if structured {
        let (hi, lo) = id.as_u64_pair();
        pb_uuid::Value::Structured(pb_uuid::Structured {
            most_significant_bits: i64::from_ne_bytes(hi.to_ne_bytes()),
            least_significant_bits: i64::from_ne_bytes(lo.to_ne_bytes()),
        })
    } else {
        pb_uuid::Value::String(id.hyphenated().to_string())
    };
    Uuid { value: Some(value) }
}

/// The stream a request names.
pub(crate) fn stream_name(id: Option<&StreamIdentifier>) -> Result<StreamName, GrpcError> {
    let id = id.ok_or_else(|| GrpcError::InvalidArgument("stream is missing".to_owned()))?;
    let name = std::str::from_utf8(&id.stream_name)
        .map_err(|_| GrpcError::InvalidArgument("stream name is not UTF-8".to_owned()))?;
    StreamName::new(name).map_err(|e| GrpcError::InvalidArgument(e.to_string()))
}

pub(crate) fn stream_identifier(name: &str) -> StreamIdentifier {
    StreamIdentifier {
        stream_name: Bytes::copy_from_slice(name.as_bytes()),
    }
}

/// KurrentDB's numeric form of an expected revision (any -2, no stream -1, exists -4).
pub(crate) fn expected_version_number(expected: ExpectedRevision) -> i64 {
    match expected {
        ExpectedRevision::Any => -2,
        ExpectedRevision::NoStream => -1,
        ExpectedRevision::StreamExists => -4,
        ExpectedRevision::Exact(r) => i64::try_from(r).unwrap_or(i64::MAX),
        _ => -2,
    }
}

/// KurrentDB's numeric form of a current revision (-1: no stream).
pub(crate) fn wire_actual(actual: Option<u64>) -> i64 {
    actual.map_or(-1, |r| i64::try_from(r).unwrap_or(i64::MAX))
}

/// The wire form of a committed event; commit and prepare positions are the Annals position.
pub(crate) fn recorded_event(e: &EventRecord, structured: bool) -> read_resp::ReadEvent {
    let mut metadata = HashMap::with_capacity(3);
    metadata.insert("type".to_owned(), e.event_type.as_str().to_owned());
    metadata.insert("content-type".to_owned(), e.content_type.mime().to_owned());
    metadata.insert("created".to_owned(), e.created.unix_ticks().to_string());
    read_resp::ReadEvent {
        event: Some(read_resp::read_event::RecordedEvent {
            id: Some(wire_uuid(e.id, structured)),
            stream_identifier: Some(stream_identifier(e.stream.as_str())),
            stream_revision: e.revision.0,
            prepare_position: e.position.0,
            commit_position: e.position.0,
            metadata,
            custom_metadata: e.metadata.clone(),
            data: e.data.clone(),
        }),
        link: None,
        position: Some(read_resp::read_event::Position::CommitPosition(
            e.position.0,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structured_uuid_round_trips() {
        let id = ::uuid::Uuid::new_v4();
        let wire = wire_uuid(id, true);
        assert_eq!(parse_uuid(Some(&wire)).ok(), Some(id));
        let wire = wire_uuid(id, false);
        assert_eq!(parse_uuid(Some(&wire)).ok(), Some(id));
        assert!(parse_uuid(None).is_err());
    }

    #[test]
    fn expected_numbers() {
        assert_eq!(expected_version_number(ExpectedRevision::Any), -2);
        assert_eq!(expected_version_number(ExpectedRevision::Exact(7)), 7);
        assert_eq!(wire_actual(None), -1);
    }
}
