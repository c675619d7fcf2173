//! `Streams.Append`: one append per call. Also what BatchAppend shares with it: checking events
//! against the server's limits as they arrive ([`EventCollector`]) and running an append
//! ([`run_append`], metrics included).

use std::collections::HashMap;
use std::time::Instant;

use annals_core::{
    ContentType, DomainError, EventType, ExpectedRevision, NewEvent, Revision, StreamName,
    StreamRight,
};
use annals_engine::EngineError;
use annals_proto::shared;
use annals_proto::streams::{AppendReq, AppendResp, append_req, append_resp};
use annals_server::{Api, AppendBudget, Principal, ServerState};
use bytes::Bytes;
use tonic::{Status, Streaming};

use crate::convert::{parse_uuid, stream_name};
use crate::error::GrpcError;

/// Serves one `Streams.Append` call: its options, then its events, appended at once.
pub(super) async fn append(
    state: &ServerState,
    who: &Principal,
    mut inbound: Streaming<AppendReq>,
) -> Result<AppendResp, Status> {
    let first = inbound
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("append without options"))?;
    let Some(append_req::Content::Options(options)) = first.content else {
        return Err(Status::invalid_argument(
            "the first message of an append must carry its options",
        ));
    };
    let stream = stream_name(options.stream_identifier.as_ref())?;
    state
        .check_stream(who, stream.as_str(), StreamRight::Write)
        .map_err(GrpcError::from)?;
    let expected = expected_revision!(append_req, options.expected_stream_revision.as_ref());
    let mut collector = EventCollector::new(state);
    while let Some(msg) = inbound.message().await? {
        match msg.content {
            Some(append_req::Content::ProposedMessage(m)) => {
                if let Err(e) =
                    collector.push(m.id.as_ref(), &m.metadata, m.custom_metadata, m.data)
                {
                    state
                        .metrics
                        .append(Api::Grpc, "rejected", 0, std::time::Duration::ZERO);
                    return Err(e.into());
                }
            }
            Some(append_req::Content::Options(_)) => {
                return Err(Status::invalid_argument(
                    "an append carries its options only once, first",
                ));
            }
            None => {}
        }
    }
    let outcome = run_append(state, &stream, expected, collector.events).await?;
    Ok(append_resp(outcome))
}

/// The outcome of an append, before it is put in wire form.
pub(super) enum AppendOutcome {
    Success {
        revision: Option<u64>,
        position: Option<u64>,
    },
    WrongExpected {
        expected: ExpectedRevision,
        actual: Option<u64>,
    },
}

/// Builds and checks events against the server's limits while they arrive.
pub(super) struct EventCollector<'a> {
    pub(super) state: &'a ServerState,
    pub(super) events: Vec<NewEvent>,
    pub(super) budget: AppendBudget,
}

impl<'a> EventCollector<'a> {
    pub(super) fn new(state: &'a ServerState) -> Self {
        Self {
            state,
            events: Vec::new(),
            budget: AppendBudget::default(),
        }
    }

    pub(super) fn push(
        &mut self,
        id: Option<&shared::Uuid>,
        metadata: &HashMap<String, String>,
        custom_metadata: Bytes,
        data: Bytes,
    ) -> Result<(), GrpcError> {
        let id = parse_uuid(id)?;
        let event_type = metadata.get("type").ok_or_else(|| {
            GrpcError::InvalidArgument("event metadata lacks \"type\"".to_owned())
        })?;
        let content_type = metadata.get("content-type").ok_or_else(|| {
            GrpcError::InvalidArgument("event metadata lacks \"content-type\"".to_owned())
        })?;
        let content_type = if content_type == "application/json" {
            ContentType::Json
        } else {
            ContentType::Binary
        };
        let event_type =
            EventType::new(event_type).map_err(|e| GrpcError::InvalidArgument(e.to_string()))?;
        let event = NewEvent {
            id,
            event_type,
            content_type,
            data,
            metadata: custom_metadata,
        };
        self.budget
            .admit(&self.state.limits, event.size_bytes())
            .map_err(|e| GrpcError::InvalidArgument(e.to_string()))?;
        self.events.push(event);
        Ok(())
    }
}

/// Runs an append, with the empty append answered from the stream's current revision.
pub(super) async fn run_append(
    state: &ServerState,
    stream: &StreamName,
    expected: ExpectedRevision,
    events: Vec<NewEvent>,
) -> Result<AppendOutcome, GrpcError> {
    if events.is_empty() {
        let current = current_revision(state, stream)?;
        if expected.is_satisfied_by(current) {
            return Ok(AppendOutcome::Success {
                revision: current,
                position: None,
            });
        }
        return Ok(AppendOutcome::WrongExpected {
            expected,
            actual: current,
        });
    }
    let count = events.len() as u64;
    let started = Instant::now();
    let result = state.engine.append_async(stream, expected, events).await;
    let took = started.elapsed();
    match result {
        Ok(r) => {
            state.metrics.append(Api::Grpc, "ok", count, took);
            Ok(AppendOutcome::Success {
                revision: Some(r.next_revision.0),
                position: Some(r.position.0),
            })
        }
        Err(EngineError::Domain(DomainError::WrongExpectedRevision {
            expected, actual, ..
        })) => {
            state
                .metrics
                .append(Api::Grpc, "wrong_expected_version", count, took);
            Ok(AppendOutcome::WrongExpected { expected, actual })
        }
        Err(e) => {
            let outcome = match &e {
                EngineError::Input(_) | EngineError::Domain(_) => "rejected",
                _ => "error",
            };
            state.metrics.append(Api::Grpc, outcome, count, took);
            Err(GrpcError::from_engine(e, false))
        }
    }
}

/// The stream's last revision (None: no events); an error if it was tombstoned.
fn current_revision(state: &ServerState, stream: &StreamName) -> Result<Option<u64>, GrpcError> {
    match state
        .engine
        .read_stream(stream, Revision::END, annals_core::Direction::Backwards, 1)
    {
        Ok(events) => Ok(events.first().map(|e| e.revision.0)),
        Err(EngineError::Domain(DomainError::StreamNotFound { .. })) => Ok(None),
        Err(e) => Err(GrpcError::from_engine(e, false)),
    }
}

fn append_resp(outcome: AppendOutcome) -> AppendResp {
    use append_resp::wrong_expected_version as w;
    let result = match outcome {
        AppendOutcome::Success { revision, position } => {
            append_resp::Result::Success(append_resp::Success {
                current_revision_option: Some(match revision {
                    Some(r) => append_resp::success::CurrentRevisionOption::CurrentRevision(r),
                    None => append_resp::success::CurrentRevisionOption::NoStream(shared::Empty {}),
                }),
                position_option: Some(match position {
                    Some(p) => {
                        append_resp::success::PositionOption::Position(append_resp::Position {
                            commit_position: p,
                            prepare_position: p,
                        })
                    }
                    None => append_resp::success::PositionOption::NoPosition(shared::Empty {}),
                }),
            })
        }
        AppendOutcome::WrongExpected { expected, actual } => {
            let e = shared::Empty {};
            let (legacy_current, current) = match actual {
                Some(r) => (
                    w::CurrentRevisionOption2060::CurrentRevision2060(r),
                    w::CurrentRevisionOption::CurrentRevision(r),
                ),
                None => (
                    w::CurrentRevisionOption2060::NoStream2060(e),
                    w::CurrentRevisionOption::CurrentNoStream(e),
                ),
            };
            let (legacy_expected, expected) = match expected {
                ExpectedRevision::Exact(r) => (
                    Some(w::ExpectedRevisionOption2060::ExpectedRevision2060(r)),
                    w::ExpectedRevisionOption::ExpectedRevision(r),
                ),
                ExpectedRevision::NoStream => {
                    (None, w::ExpectedRevisionOption::ExpectedNoStream(e))
                }
                ExpectedRevision::StreamExists => (
                    Some(w::ExpectedRevisionOption2060::StreamExists2060(e)),
                    w::ExpectedRevisionOption::ExpectedStreamExists(e),
                ),
                _ => (
                    Some(w::ExpectedRevisionOption2060::Any2060(e)),
                    w::ExpectedRevisionOption::ExpectedAny(e),
                ),
            };
            append_resp::Result::WrongExpectedVersion(append_resp::WrongExpectedVersion {
                current_revision_option_20_6_0: Some(legacy_current),
                expected_revision_option_20_6_0: legacy_expected,
                current_revision_option: Some(current),
                expected_revision_option: Some(expected),
            })
        }
    };
    AppendResp {
        result: Some(result),
    }
}
