//! Wire ↔ Annals for persistent subscriptions: a `Create`/`Update` request into a
//! [`GroupDefinition`], a group into a `SubscriptionInfo`, a delivery into a `ReadResp`, and a
//! [`PersistentError`] into the status and trailers KurrentDB's clients recognise.

use std::collections::HashMap;
use std::time::Duration;

use annals_core::EventRecord;
use annals_persistent::{
    FilterDefinition, GroupDefinition, GroupInfo, GroupKey, GroupSettings, PersistentError, Source,
    StartFrom, Strategy,
};
use annals_proto::persistent_subscriptions::{
    ReadResp, SubscriptionInfo, create_req, read_resp, subscription_info, update_req,
};
use annals_proto::shared::StreamIdentifier;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::convert::{stream_identifier, stream_name, wire_uuid};
use crate::error::GrpcError;

/// .NET ticks (the unit of the `*_ticks` settings) per millisecond.
const TICKS_PER_MS: i64 = 10_000;

fn insert(status: &mut Status, key: &'static str, value: &str) {
    if let Ok(v) = MetadataValue::try_from(value) {
        status.metadata_mut().insert(key, v);
    }
}

/// The status a client expects for `e`.
pub(crate) fn status(e: PersistentError) -> Status {
    let message = e.to_string();
    let group_status = |code: Code, exception: &str, stream: &str, group: &str| {
        let mut s = Status::new(code, message.clone());
        insert(&mut s, "exception", exception);
        insert(&mut s, "stream-name", stream);
        insert(&mut s, "group-name", group);
        s
    };
    match &e {
        PersistentError::AlreadyExists { stream, group } => group_status(
            Code::AlreadyExists,
            "persistent-subscription-exists",
            stream,
            group,
        ),
        PersistentError::NotFound { stream, group } => group_status(
            Code::NotFound,
            "persistent-subscription-does-not-exist",
            stream,
            group,
        ),
        PersistentError::MaxSubscribersReached { stream, group } => group_status(
            Code::FailedPrecondition,
            "maximum-subscribers-reached",
            stream,
            group,
        ),
        PersistentError::InvalidSettings {
            stream,
            group,
            reason,
        } => {
            let mut s = group_status(
                Code::Internal,
                "persistent-subscription-failed",
                stream,
                group,
            );
            insert(&mut s, "reason", reason);
            s
        }
        PersistentError::Dropped { stream, group } => group_status(
            Code::Cancelled,
            "persistent-subscription-dropped",
            stream,
            group,
        ),
        PersistentError::Invalid(_) => Status::invalid_argument(message),
        PersistentError::Engine(_) | PersistentError::Corrupt(_) => match e {
            PersistentError::Engine(engine) => GrpcError::from_engine(engine, false).into(),
            _ => Status::internal(message),
        },
        _ => Status::internal(message),
    }
}

fn invalid(what: impl Into<String>) -> Status {
    Status::invalid_argument(what.into())
}

/// A source named by a stream identifier or `all`.
pub(crate) fn source(stream: Option<&StreamIdentifier>, all: bool) -> Result<Source, Status> {
    if all {
        return Ok(Source::All);
    }
    let name = stream_name(stream).map_err(Status::from)?;
    Ok(Source::Stream(name))
}

pub(crate) fn key(source: Source, group: &str) -> Result<GroupKey, Status> {
    GroupKey::new(source, group).map_err(status)
}

fn count(value: i32, what: &str) -> Result<u64, Status> {
    u64::try_from(value).map_err(|_| invalid(format!("{what} must not be negative, got {value}")))
}

fn size(value: i32, what: &str) -> Result<usize, Status> {
    usize::try_from(value).map_err(|_| invalid(format!("{what} must not be negative, got {value}")))
}

fn duration(ticks: Option<i64>, ms: Option<i32>, what: &str) -> Result<Duration, Status> {
    let ms = match (ms, ticks) {
        (Some(ms), _) => i64::from(ms),
        (None, Some(ticks)) => ticks / TICKS_PER_MS,
        (None, None) => 0,
    };
    u64::try_from(ms)
        .map(Duration::from_millis)
        .map_err(|_| invalid(format!("{what} must not be negative, got {ms} ms")))
}

/// The [`WireSettings`] of a `Create` or `Update` request's settings: the two messages have the
/// same fields but are distinct generated types (`$module` is `create_req` or `update_req`).
macro_rules! wire_settings {
    ($settings:expr, $module:ident, $strategy:expr) => {{
        let settings = $settings;
        WireSettings {
            resolve_links: settings.resolve_links,
            extra_statistics: settings.extra_statistics,
            max_retry_count: settings.max_retry_count,
            min_checkpoint_count: settings.min_checkpoint_count,
            max_checkpoint_count: settings.max_checkpoint_count,
            max_subscriber_count: settings.max_subscriber_count,
            live_buffer_size: settings.live_buffer_size,
            read_batch_size: settings.read_batch_size,
            history_buffer_size: settings.history_buffer_size,
            message_timeout: match settings.message_timeout {
                Some($module::settings::MessageTimeout::MessageTimeoutMs(ms)) => {
                    duration(None, Some(ms), "message_timeout")?
                }
                Some($module::settings::MessageTimeout::MessageTimeoutTicks(t)) => {
                    duration(Some(t), None, "message_timeout")?
                }
                None => Duration::ZERO,
            },
            checkpoint_after: match settings.checkpoint_after {
                Some($module::settings::CheckpointAfter::CheckpointAfterMs(ms)) => {
                    duration(None, Some(ms), "checkpoint_after")?
                }
                Some($module::settings::CheckpointAfter::CheckpointAfterTicks(t)) => {
                    duration(Some(t), None, "checkpoint_after")?
                }
                None => Duration::ZERO,
            },
            strategy: $strategy,
        }
    }};
}

/// The settings fields `Create` and `Update` share.
struct WireSettings {
    resolve_links: bool,
    extra_statistics: bool,
    max_retry_count: i32,
    min_checkpoint_count: i32,
    max_checkpoint_count: i32,
    max_subscriber_count: i32,
    live_buffer_size: i32,
    read_batch_size: i32,
    history_buffer_size: i32,
    message_timeout: Duration,
    checkpoint_after: Duration,
    strategy: Strategy,
}

impl WireSettings {
    fn into_settings(self, conflate_behind: Option<u64>) -> Result<GroupSettings, Status> {
        Ok(GroupSettings {
            strategy: self.strategy,
            message_timeout: self.message_timeout,
            max_retry_count: u32::try_from(self.max_retry_count).map_err(|_| {
                invalid(format!(
                    "max_retry_count must not be negative, got {}",
                    self.max_retry_count
                ))
            })?,
            live_buffer_size: size(self.live_buffer_size, "live_buffer_size")?,
            read_batch_size: size(self.read_batch_size, "read_batch_size")?,
            history_buffer_size: size(self.history_buffer_size, "history_buffer_size")?,
            checkpoint_after: self.checkpoint_after,
            min_checkpoint_count: count(self.min_checkpoint_count, "min_checkpoint_count")?,
            max_checkpoint_count: count(self.max_checkpoint_count, "max_checkpoint_count")?,
            max_subscriber_count: size(self.max_subscriber_count, "max_subscriber_count")?,
            conflate_behind,
        })
    }
}

/// A strategy by name, refused with KurrentDB's validation error.
fn strategy_named(name: &str, source: &Source, group: &str) -> Result<Strategy, Status> {
    Strategy::parse(name).map_err(|e| {
        status(PersistentError::InvalidSettings {
            stream: source.to_string(),
            group: group.to_owned(),
            reason: e.to_string(),
        })
    })
}

fn enum_strategy(value: i32) -> Option<Strategy> {
    match value {
        0 => Some(Strategy::DispatchToSingle),
        1 => Some(Strategy::RoundRobin),
        2 => Some(Strategy::Pinned),
        _ => None,
    }
}

/// A `Create` request's group.
pub(crate) fn create_definition(options: create_req::Options) -> Result<GroupDefinition, Status> {
    use create_req::options::StreamOption;
    let settings = options
        .settings
        .ok_or_else(|| invalid("a group needs settings"))?;
    let (source, start, filter) = match options.stream_option {
        Some(StreamOption::Stream(s)) => {
            use create_req::stream_options::RevisionOption as R;
            let start = match s.revision_option {
                Some(R::Revision(r)) => StartFrom::At(r),
                Some(R::End(_)) => StartFrom::End,
                Some(R::Start(_)) | None => StartFrom::Start,
            };
            (source(s.stream_identifier.as_ref(), false)?, start, None)
        }
        Some(StreamOption::All(a)) => {
            use create_req::all_options::{AllOption as A, FilterOption as F};
            let start = match a.all_option {
                Some(A::Position(p)) => StartFrom::At(p.commit_position),
                Some(A::End(_)) => StartFrom::End,
                Some(A::Start(_)) | None => StartFrom::Start,
            };
            let filter = match a.filter_option {
                Some(F::Filter(f)) => Some(filter_definition(&f)?),
                Some(F::NoFilter(_)) | None => None,
            };
            (Source::All, start, filter)
        }
        // Older clients: the stream in the deprecated field, the start in the settings.
        #[expect(deprecated, reason = "older clients still send the deprecated fields")]
        None => (
            source(options.stream_identifier.as_ref(), false)?,
            match settings.revision {
                u64::MAX => StartFrom::End,
                r => StartFrom::At(r),
            },
            None,
        ),
    };
    let group = options.group_name;
    let strategy = if settings.consumer_strategy.is_empty() {
        #[expect(deprecated, reason = "the enum is how older clients name the strategy")]
        let named = settings.named_consumer_strategy;
        enum_strategy(named).ok_or_else(|| {
            status(PersistentError::InvalidSettings {
                stream: source.to_string(),
                group: group.clone(),
                reason: format!("Consumer strategy {named} does not exist."),
            })
        })?
    } else {
        strategy_named(&settings.consumer_strategy, &source, &group)?
    };
    let wire = wire_settings!(&settings, create_req, strategy);
    Ok(GroupDefinition {
        key: key(source, &group)?,
        start,
        resolve_links: wire.resolve_links,
        extra_statistics: wire.extra_statistics,
        filter,
        settings: wire.into_settings(None)?,
    })
}

fn filter_definition(
    f: &create_req::all_options::FilterOptions,
) -> Result<FilterDefinition, Status> {
    use create_req::all_options::filter_options::Filter as F;
    let (on_stream, expr) = match &f.filter {
        Some(F::StreamIdentifier(e)) => (true, e),
        Some(F::EventType(e)) => (false, e),
        None => return Err(invalid("a filter without a target")),
    };
    let definition = FilterDefinition {
        on_stream,
        regex: (!expr.regex.is_empty()).then(|| expr.regex.clone()),
        prefixes: expr.prefix.clone(),
    };
    definition.compile().map_err(status)?;
    Ok(definition)
}

/// An `Update` request applied to the group's current definition: the filter and the
/// conflation setting (which `Update` has no field for) are kept.
pub(crate) fn update_definition(
    options: update_req::Options,
    current: &GroupDefinition,
) -> Result<GroupDefinition, Status> {
    use update_req::options::StreamOption;
    let settings = options
        .settings
        .ok_or_else(|| invalid("a group needs settings"))?;
    let start = match options.stream_option {
        Some(StreamOption::Stream(s)) => {
            use update_req::stream_options::RevisionOption as R;
            match s.revision_option {
                Some(R::Revision(r)) => StartFrom::At(r),
                Some(R::End(_)) => StartFrom::End,
                Some(R::Start(_)) | None => StartFrom::Start,
            }
        }
        Some(StreamOption::All(a)) => {
            use update_req::all_options::AllOption as A;
            match a.all_option {
                Some(A::Position(p)) => StartFrom::At(p.commit_position),
                Some(A::End(_)) => StartFrom::End,
                Some(A::Start(_)) | None => StartFrom::Start,
            }
        }
        None => current.start,
    };
    let source = &current.key.source;
    let strategy = enum_strategy(settings.named_consumer_strategy).ok_or_else(|| {
        status(PersistentError::InvalidSettings {
            stream: source.to_string(),
            group: current.key.group.clone(),
            reason: format!(
                "Consumer strategy {} does not exist.",
                settings.named_consumer_strategy
            ),
        })
    })?;
    // An update cannot name PinnedByCorrelation; a group that has it keeps it.
    let strategy = match (current.settings.strategy, strategy) {
        (Strategy::PinnedByCorrelation, Strategy::Pinned) => Strategy::PinnedByCorrelation,
        (_, s) => s,
    };
    let wire = wire_settings!(&settings, update_req, strategy);
    Ok(GroupDefinition {
        key: current.key.clone(),
        start,
        resolve_links: wire.resolve_links,
        extra_statistics: wire.extra_statistics,
        filter: current.filter.clone(),
        settings: wire.into_settings(current.settings.conflate_behind)?,
    })
}

/// A position as `GetInfo` shows it.
fn position_text(source: &Source, seq: Option<u64>) -> String {
    match (source, seq) {
        (_, None) => String::new(),
        (Source::All, Some(p)) => format!("C:{p}/P:{p}"),
        (Source::Stream(_), Some(r)) => r.to_string(),
    }
}

fn start_text(source: &Source, start: StartFrom) -> String {
    let n = match start {
        StartFrom::Start => "0".to_owned(),
        StartFrom::End => "-1".to_owned(),
        StartFrom::At(n) => n.to_string(),
    };
    match source {
        Source::All => format!("C:{n}/P:{n}"),
        Source::Stream(_) => n,
    }
}

fn int(n: impl TryInto<i32>) -> i32 {
    n.try_into().unwrap_or(i32::MAX)
}

fn long(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// A group as `GetInfo` and `List` show it.
pub(crate) fn subscription_info(info: &GroupInfo) -> SubscriptionInfo {
    let d = &info.definition;
    let s = &d.settings;
    let source = &d.key.source;
    let state = info.state.as_ref();
    let status = match state {
        None => "NotReady",
        Some(st) if st.live => "Live",
        Some(_) => "Behind",
    };
    let connections = state
        .map(|st| {
            st.connections
                .iter()
                .map(|c| subscription_info::ConnectionInfo {
                    from: c.label.from.clone(),
                    username: "anonymous".to_owned(),
                    average_items_per_second: 0,
                    total_items: long(c.delivered),
                    count_since_last_measurement: 0,
                    observed_measurements: Vec::new(),
                    available_slots: int(c.capacity.saturating_sub(c.in_flight)),
                    in_flight_messages: int(c.in_flight),
                    connection_name: if c.label.name.is_empty() {
                        "<unknown>".to_owned()
                    } else {
                        c.label.name.clone()
                    },
                })
                .collect()
        })
        .unwrap_or_default();
    let millis = |d: Duration| int(d.as_millis());
    SubscriptionInfo {
        event_source: source.to_string(),
        group_name: d.key.group.clone(),
        status: status.to_owned(),
        connections,
        average_per_second: 0,
        total_items: long(state.map_or(0, |st| st.counts.delivered)),
        count_since_last_measurement: 0,
        last_checkpointed_event_position: position_text(
            source,
            state.and_then(|st| st.last_checkpoint),
        ),
        last_known_event_position: position_text(source, state.and_then(|st| st.last_known)),
        resolve_link_tos: d.resolve_links,
        start_from: start_text(source, d.start),
        message_timeout_milliseconds: millis(s.message_timeout),
        extra_statistics: d.extra_statistics,
        max_retry_count: int(s.max_retry_count),
        live_buffer_size: int(s.live_buffer_size),
        buffer_size: int(s.history_buffer_size),
        read_batch_size: int(s.read_batch_size),
        check_point_after_milliseconds: millis(s.checkpoint_after),
        min_check_point_count: int(s.min_checkpoint_count),
        max_check_point_count: int(s.max_checkpoint_count),
        read_buffer_count: int(state.map_or(0, |st| st.waiting)),
        live_buffer_count: long(state.map_or(0, |st| st.waiting)),
        retry_buffer_count: 0,
        total_in_flight_messages: int(state.map_or(0, |st| st.in_flight)),
        outstanding_messages_count: int(state.map_or(0, |st| st.in_flight)),
        named_consumer_strategy: s.strategy.name().to_owned(),
        max_subscriber_count: int(s.max_subscriber_count),
        parked_message_count: long(state.map_or(0, |st| st.parked)),
    }
}

fn recorded(e: &EventRecord, structured: bool) -> read_resp::read_event::RecordedEvent {
    let mut metadata = HashMap::with_capacity(3);
    metadata.insert("type".to_owned(), e.event_type.as_str().to_owned());
    metadata.insert("content-type".to_owned(), e.content_type.mime().to_owned());
    metadata.insert("created".to_owned(), e.created.unix_ticks().to_string());
    read_resp::read_event::RecordedEvent {
        id: Some(wire_uuid(e.id, structured)),
        stream_identifier: Some(stream_identifier(e.stream.as_str())),
        stream_revision: e.revision.0,
        prepare_position: e.position.0,
        commit_position: e.position.0,
        metadata,
        custom_metadata: e.metadata.clone(),
        data: e.data.clone(),
    }
}

/// A delivery as a `ReadResp`: the event, the link it came through (a replayed parked event),
/// its position and its retry count.
pub(crate) fn read_event(
    event: &EventRecord,
    link: Option<&EventRecord>,
    retry_count: u32,
    structured: bool,
) -> ReadResp {
    let position = link.unwrap_or(event).position.0;
    ReadResp {
        content: Some(read_resp::Content::Event(read_resp::ReadEvent {
            event: Some(recorded(event, structured)),
            link: link.map(|l| recorded(l, structured)),
            position: Some(read_resp::read_event::Position::CommitPosition(position)),
            count: Some(read_resp::read_event::Count::RetryCount(int(retry_count))),
        })),
    }
}

/// The first answer of a `Read`: `{stream}::{group}`.
pub(crate) fn confirmation(key: &GroupKey) -> ReadResp {
    ReadResp {
        content: Some(read_resp::Content::SubscriptionConfirmation(
            read_resp::SubscriptionConfirmation {
                subscription_id: key.id(),
            },
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(stream: &str, revision: u64, position: u64, data: &[u8]) -> EventRecord {
        use annals_core::{ContentType, EventType, Position, Revision, StreamName, Timestamp};
        EventRecord {
            id: uuid::Uuid::new_v4(),
            stream: StreamName::new(stream).unwrap(),
            revision: Revision(revision),
            position: Position(position),
            event_type: EventType::new("$>").unwrap(),
            content_type: ContentType::Binary,
            created: Timestamp(1_763_000_000_123_456_789),
            data: bytes::Bytes::copy_from_slice(data),
            metadata: bytes::Bytes::from_static(br#"{"Reason":"poison"}"#),
        }
    }

    #[test]
    fn hand_encoded_deliveries_are_what_prost_encodes() {
        use prost::Message;
        let event = record("order-1", 7, 1_234, br#"{"a":1}"#);
        let link = record(
            "$persistentsubscription-order-1::g-parked",
            0,
            99_999,
            b"7@order-1",
        );
        let empty = record("s", 0, 0, b"");
        for (e, l) in [
            (&event, None),
            (&event, Some(&link)),
            (&empty, None),
            (&empty, Some(&event)),
        ] {
            for retry_count in [0, 1, 300, u32::MAX >> 1] {
                for structured in [true, false] {
                    let mut buf = Vec::new();
                    crate::convert::encode_persistent_event(
                        e,
                        l,
                        retry_count,
                        structured,
                        &mut buf,
                    );
                    let expected = read_event(e, l, retry_count, structured);
                    assert_eq!(buf.len(), expected.encoded_len());
                    assert_eq!(ReadResp::decode(buf.as_slice()).unwrap(), expected);
                }
            }
        }
    }

    #[test]
    fn positions_and_starts_read_as_kurrentdb_writes_them() {
        let all = Source::All;
        assert_eq!(position_text(&all, Some(7)), "C:7/P:7");
        assert_eq!(position_text(&all, None), "");
        assert_eq!(start_text(&all, StartFrom::Start), "C:0/P:0");
        assert_eq!(start_text(&all, StartFrom::End), "C:-1/P:-1");
        let stream = Source::Stream(annals_core::StreamName::new("s").unwrap());
        assert_eq!(start_text(&stream, StartFrom::End), "-1");
        assert_eq!(start_text(&stream, StartFrom::At(5)), "5");
        assert_eq!(
            duration(Some(20_000_000), None, "t").unwrap(),
            Duration::from_secs(2)
        );
        assert!(duration(None, Some(-1), "t").is_err());
    }
}
