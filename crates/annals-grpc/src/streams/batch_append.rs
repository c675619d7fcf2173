//! `Streams.BatchAppend`: many appends on one long-lived call, as the .NET client makes every
//! append of a process. A batch (one or more chunks sharing a correlation id) is handed to the
//! engine once complete and answered when it commits, in any order, within named bounds on the
//! batches and bytes in flight; errors inside a batch's answer are `google.rpc.Status` values.

use std::collections::HashMap;
use std::pin::Pin;

use annals_core::{ExpectedRevision, NewEvent, StreamName, StreamRight};
use annals_proto::google::rpc;
use annals_proto::shared;
use annals_proto::streams::{BatchAppendReq, BatchAppendResp, batch_append_req, batch_append_resp};
use annals_server::{AppendBudget, Principal, ServerState};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use prost::Message;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::ResponseStream;
use super::append::{AppendOutcome, EventCollector, run_append};
use crate::convert::{stream_identifier, stream_name};
use crate::error::GrpcError;

/// gRPC status codes used inside BatchAppend responses.
const CODE_INVALID_ARGUMENT: i32 = 3;
const CODE_ALREADY_EXISTS: i32 = 6;
const CODE_RESOURCE_EXHAUSTED: i32 = 8;
const CODE_FAILED_PRECONDITION: i32 = 9;
const CODE_PERMISSION_DENIED: i32 = 7;
const CODE_INTERNAL: i32 = 13;
const CODE_UNAUTHENTICATED: i32 = 16;
const CODE_UNAVAILABLE: i32 = 14;

/// The batches of one BatchAppend call still waiting for their final chunk, by correlation id.
type PendingBatches = HashMap<Option<shared::Uuid>, PendingBatch>;

/// One batch of a BatchAppend call, gathered until its final chunk.
struct PendingBatch {
    stream: StreamName,
    expected: ExpectedRevision,
    options: batch_append_req::Options,
    events: Vec<NewEvent>,
    budget: AppendBudget,
}

fn expected_from_batch(
    opt: Option<&batch_append_req::options::ExpectedStreamPosition>,
) -> ExpectedRevision {
    use batch_append_req::options::ExpectedStreamPosition as E;
    match opt {
        Some(E::StreamPosition(r)) => ExpectedRevision::Exact(*r),
        Some(E::NoStream(_)) => ExpectedRevision::NoStream,
        Some(E::StreamExists(_)) => ExpectedRevision::StreamExists,
        Some(E::Any(_)) | None => ExpectedRevision::Any,
    }
}

fn rpc_status(code: i32, message: String, details: Option<prost_types::Any>) -> rpc::Status {
    rpc::Status {
        code,
        message,
        details,
    }
}

/// The detail of an error KurrentDB's protocol has no detail message for. Clients read the
/// detail's type to tell errors apart, and the Node client fails with a `TypeError` on an error
/// without one; an `Empty` makes each client report the error with its message.
fn no_detail() -> Option<prost_types::Any> {
    Some(prost_types::Any {
        type_url: "type.googleapis.com/google.protobuf.Empty".to_owned(),
        value: Vec::new(),
    })
}

fn batch_error(err: &GrpcError) -> rpc::Status {
    match err {
        GrpcError::InvalidArgument(m) => rpc_status(CODE_INVALID_ARGUMENT, m.clone(), no_detail()),
        GrpcError::StreamDeleted { stream } => rpc_status(
            CODE_FAILED_PRECONDITION,
            err.to_string(),
            Some(prost_types::Any {
                type_url: "type.googleapis.com/event_store.client.StreamDeleted".to_owned(),
                value: shared::StreamDeleted {
                    stream_identifier: Some(stream_identifier(stream)),
                }
                .encode_to_vec(),
            }),
        ),
        GrpcError::Unavailable(m) => rpc_status(CODE_UNAVAILABLE, m.clone(), no_detail()),
        GrpcError::AccessDenied => rpc_status(
            CODE_PERMISSION_DENIED,
            err.to_string(),
            Some(prost_types::Any {
                type_url: "type.googleapis.com/event_store.client.AccessDenied".to_owned(),
                value: Vec::new(),
            }),
        ),
        GrpcError::Unauthenticated(m) => rpc_status(CODE_UNAUTHENTICATED, m.clone(), no_detail()),
        other => rpc_status(CODE_INTERNAL, other.to_string(), no_detail()),
    }
}

fn wrong_expected_detail(expected: ExpectedRevision, actual: Option<u64>) -> prost_types::Any {
    use shared::wrong_expected_version as w;
    let e = ();
    let current = match actual {
        Some(r) => w::CurrentStreamRevisionOption::CurrentStreamRevision(r),
        None => w::CurrentStreamRevisionOption::CurrentNoStream(e),
    };
    let expected = match expected {
        ExpectedRevision::Exact(r) => w::ExpectedStreamPositionOption::ExpectedStreamPosition(r),
        ExpectedRevision::NoStream => w::ExpectedStreamPositionOption::ExpectedNoStream(e),
        ExpectedRevision::StreamExists => w::ExpectedStreamPositionOption::ExpectedStreamExists(e),
        _ => w::ExpectedStreamPositionOption::ExpectedAny(e),
    };
    prost_types::Any {
        type_url: "type.googleapis.com/event_store.client.WrongExpectedVersion".to_owned(),
        value: shared::WrongExpectedVersion {
            current_stream_revision_option: Some(current),
            expected_stream_position_option: Some(expected),
        }
        .encode_to_vec(),
    }
}

/// Batches of one BatchAppend call that may be appending at once. The .NET client sends every
/// append of a process over one call; answering them one at a time would give each its own fsync.
/// When this many are in flight, the call stops reading until one is answered.
pub(crate) const BATCH_APPEND_IN_FLIGHT_MAX: usize = 1_024;

/// Event bytes of one BatchAppend call that may be appending at once; past this the call stops
/// reading until answers free some (one batch is at most the append byte limit).
pub(crate) const BATCH_APPEND_IN_FLIGHT_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Batches of one BatchAppend call sent in several chunks whose final chunk has not come yet.
/// A batch started beyond this is refused (each batch's own size is bounded by the append
/// limits).
pub(crate) const BATCH_APPEND_UNFINISHED_MAX: usize = 64;

/// A batch handed to the engine: its event bytes, and the future that appends it and makes the
/// answer.
struct AppendingBatch {
    bytes: usize,
    append: Pin<Box<dyn Future<Output = BatchAppendResp> + Send>>,
}

/// What one BatchAppend request message leads to.
enum BatchStep {
    /// The batch is refused: answer now.
    Answer(BatchAppendResp),
    /// The batch is complete: this future appends it and makes the answer.
    Append(AppendingBatch),
    /// More chunks of the batch are to come.
    Wait,
}

/// Handles one BatchAppend request message. It does not wait for the engine: a complete batch
/// comes back as a future, so the call can read and start the next batches while this one waits
/// for its fsync.
fn batch_step(
    state: &ServerState,
    who: &Principal,
    pending: &mut PendingBatches,
    req: BatchAppendReq,
) -> BatchStep {
    let base = |options: Option<&batch_append_req::Options>| {
        let mut resp = BatchAppendResp {
            correlation_id: req.correlation_id.clone(),
            ..Default::default()
        };
        if let Some(o) = options {
            resp.stream_identifier = o.stream_identifier.clone();
            use batch_append_req::options::ExpectedStreamPosition as E;
            use batch_append_resp::ExpectedStreamPosition as R;
            resp.expected_stream_position = o.expected_stream_position.as_ref().map(|p| match p {
                E::StreamPosition(r) => R::StreamPosition(*r),
                E::NoStream(()) => R::NoStream(()),
                E::Any(()) => R::Any(()),
                E::StreamExists(()) => R::StreamExists(()),
            });
        }
        resp
    };
    // A batch sent whole (the usual case) never enters the map.
    let earlier = match pending.is_empty() {
        true => None,
        false => pending.remove(&req.correlation_id),
    };
    let mut batch = match earlier {
        Some(batch) => batch,
        None => {
            let Some(options) = req.options.clone() else {
                let mut resp = base(None);
                resp.result = Some(batch_append_resp::Result::Error(rpc_status(
                    CODE_INVALID_ARGUMENT,
                    "the first message of a batch must carry its options".to_owned(),
                    no_detail(),
                )));
                return BatchStep::Answer(resp);
            };
            let stream = match stream_name(options.stream_identifier.as_ref()).and_then(|s| {
                state.check_stream(who, s.as_str(), StreamRight::Write)?;
                Ok(s)
            }) {
                Ok(s) => s,
                Err(e) => {
                    let mut resp = base(Some(&options));
                    resp.result = Some(batch_append_resp::Result::Error(batch_error(&e)));
                    return BatchStep::Answer(resp);
                }
            };
            PendingBatch {
                stream,
                expected: expected_from_batch(options.expected_stream_position.as_ref()),
                options,
                events: Vec::new(),
                budget: AppendBudget::default(),
            }
        }
    };
    let mut collector = EventCollector {
        state,
        events: std::mem::take(&mut batch.events),
        budget: std::mem::take(&mut batch.budget),
    };
    for m in req.proposed_messages {
        if let Err(e) = collector.push(m.id.as_ref(), &m.metadata, m.custom_metadata, m.data) {
            let mut resp = base(Some(&batch.options));
            resp.result = Some(batch_append_resp::Result::Error(batch_error(&e)));
            return BatchStep::Answer(resp);
        }
    }
    batch.events = collector.events;
    batch.budget = collector.budget;
    if !req.is_final {
        if pending.len() >= BATCH_APPEND_UNFINISHED_MAX {
            let mut resp = base(Some(&batch.options));
            resp.result = Some(batch_append_resp::Result::Error(rpc_status(
                CODE_RESOURCE_EXHAUSTED,
                format!(
                    "more than {BATCH_APPEND_UNFINISHED_MAX} batches of this call are \
                         unfinished; send each batch's final chunk first"
                ),
                None,
            )));
            return BatchStep::Answer(resp);
        }
        pending.insert(req.correlation_id, batch);
        return BatchStep::Wait;
    }
    let mut resp = base(Some(&batch.options));
    let state = state.clone();
    BatchStep::Append(AppendingBatch {
        bytes: batch.budget.bytes(),
        append: Box::pin(async move {
            let outcome = run_append(&state, &batch.stream, batch.expected, batch.events).await;
            resp.result = Some(batch_outcome(outcome));
            resp
        }),
    })
}

/// A finished append in BatchAppend's wire form.
fn batch_outcome(outcome: Result<AppendOutcome, GrpcError>) -> batch_append_resp::Result {
    match outcome {
        Ok(AppendOutcome::Success { revision, position }) => {
            use batch_append_resp::success as s;
            batch_append_resp::Result::Success(batch_append_resp::Success {
                current_revision_option: Some(match revision {
                    Some(r) => s::CurrentRevisionOption::CurrentRevision(r),
                    None => s::CurrentRevisionOption::NoStream(()),
                }),
                position_option: Some(match position {
                    Some(p) => s::PositionOption::Position(shared::AllStreamPosition {
                        commit_position: p,
                        prepare_position: p,
                    }),
                    None => s::PositionOption::NoPosition(()),
                }),
            })
        }
        Ok(AppendOutcome::WrongExpected { expected, actual }) => {
            batch_append_resp::Result::Error(rpc_status(
                CODE_ALREADY_EXISTS,
                "WrongExpectedVersion".to_owned(),
                Some(wrong_expected_detail(expected, actual)),
            ))
        }
        Err(e) => batch_append_resp::Result::Error(batch_error(&e)),
    }
}

/// Serves one `Streams.BatchAppend` call: reads its batches, hands each complete one to the engine
/// at once and answers each as it commits, in any order, within the in-flight bounds above.
pub(super) fn batch_append(
    state: ServerState,
    who: Principal,
    mut inbound: Streaming<BatchAppendReq>,
) -> ResponseStream<BatchAppendResp> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let mut pending = PendingBatches::new();
        let mut in_flight = FuturesUnordered::new();
        // Reading stops at shutdown, at the end of the request stream or on its error; the
        // batches already appending are still answered.
        let mut reading = true;
        let mut in_flight_bytes = 0_usize;
        while reading || !in_flight.is_empty() {
            let can_read = reading
                && in_flight.len() < BATCH_APPEND_IN_FLIGHT_MAX
                && in_flight_bytes < BATCH_APPEND_IN_FLIGHT_BYTES_MAX;
            let resp = tokio::select! {
                biased;
                Some((resp, bytes)) = in_flight.next(), if !in_flight.is_empty() => {
                    in_flight_bytes = in_flight_bytes.saturating_sub(bytes);
                    resp
                }
                () = state.stopping(), if reading => {
                    reading = false;
                    continue;
                }
                next = inbound.next(), if can_read => match next {
                    Some(Ok(req)) => match batch_step(&state, &who, &mut pending, req) {
                        BatchStep::Answer(resp) => resp,
                        BatchStep::Append(AppendingBatch { bytes, append }) => {
                            in_flight_bytes += bytes;
                            in_flight.push(append.map(move |resp| (resp, bytes)));
                            continue;
                        }
                        BatchStep::Wait => continue,
                    },
                    Some(Err(status)) => {
                        tracing::debug!(%status, "batch append stream ended with an error");
                        reading = false;
                        continue;
                    }
                    None => {
                        reading = false;
                        continue;
                    }
                },
            };
            if tx.send(Ok(resp)).await.is_err() {
                // The client is gone; appends already handed to the engine still commit.
                break;
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

#[cfg(test)]
mod tests {
    //! BatchAppend batches sent in several chunks, which neither official client sends but the
    //! protocol allows: driven through `batch_step` over an engine on in-memory storage.
    use std::sync::Arc;

    use annals_engine::{Engine, EngineConfig};
    use annals_server::Limits;

    use super::*;
    use bytes::Bytes;

    fn service() -> ServerState {
        let storage = Arc::new(annals_log::FaultStorage::new());
        let (engine, _) = Engine::open(storage, EngineConfig::default()).unwrap();
        ServerState::new(engine, Limits::default())
    }

    fn id(n: i64) -> Option<shared::Uuid> {
        Some(shared::Uuid {
            value: Some(shared::uuid::Value::Structured(shared::uuid::Structured {
                most_significant_bits: n,
                least_significant_bits: n,
            })),
        })
    }

    fn message(n: u8, event_type: &str) -> batch_append_req::ProposedMessage {
        batch_append_req::ProposedMessage {
            id: Some(shared::Uuid {
                value: Some(shared::uuid::Value::String(
                    uuid::Uuid::from_bytes([n; 16]).to_string(),
                )),
            }),
            metadata: HashMap::from([
                ("type".to_owned(), event_type.to_owned()),
                ("content-type".to_owned(), "application/json".to_owned()),
            ]),
            custom_metadata: Bytes::new(),
            data: Bytes::from_static(b"{}"),
        }
    }

    /// A chunk of batch `batch`; the first chunk carries the options.
    fn chunk(
        batch: i64,
        stream: Option<&str>,
        events: Vec<batch_append_req::ProposedMessage>,
        is_final: bool,
    ) -> BatchAppendReq {
        BatchAppendReq {
            correlation_id: id(batch),
            options: stream.map(|s| batch_append_req::Options {
                stream_identifier: Some(stream_identifier(s)),
                expected_stream_position: Some(
                    batch_append_req::options::ExpectedStreamPosition::Any(()),
                ),
                deadline_option: None,
            }),
            proposed_messages: events,
            is_final,
        }
    }

    async fn answer(step: BatchStep) -> BatchAppendResp {
        match step {
            BatchStep::Answer(resp) => resp,
            BatchStep::Append(batch) => batch.append.await,
            BatchStep::Wait => panic!("the batch was not answered"),
        }
    }

    fn revision(resp: &BatchAppendResp) -> Option<u64> {
        match &resp.result {
            Some(batch_append_resp::Result::Success(s)) => match s.current_revision_option {
                Some(batch_append_resp::success::CurrentRevisionOption::CurrentRevision(r)) => {
                    Some(r)
                }
                _ => None,
            },
            _ => None,
        }
    }

    fn error_code(resp: &BatchAppendResp) -> Option<i32> {
        match &resp.result {
            Some(batch_append_resp::Result::Error(e)) => Some(e.code),
            _ => None,
        }
    }

    #[tokio::test]
    async fn interleaved_chunked_batches_append_whole() {
        let service = service();
        let mut pending = PendingBatches::new();
        let steps = [
            chunk(1, Some("one"), vec![message(1, "A")], false),
            chunk(2, Some("two"), vec![message(2, "A")], false),
            chunk(1, None, vec![message(3, "B"), message(4, "C")], false),
            chunk(2, None, vec![], true),
        ];
        let mut answers = Vec::new();
        for req in steps {
            match batch_step(&service, &Principal::Open, &mut pending, req) {
                BatchStep::Wait => {}
                step => answers.push(answer(step).await),
            }
        }
        assert_eq!(answers.len(), 1, "only batch 2 is complete");
        assert_eq!(answers[0].correlation_id, id(2));
        assert_eq!(revision(&answers[0]), Some(0));
        assert_eq!(
            answers[0].stream_identifier,
            Some(stream_identifier("two")),
            "the answer names the stream of the batch's first chunk"
        );
        // Nothing of batch 1 is written before its final chunk.
        let state = &service;
        assert_eq!(state.engine.head().0, 1);

        let done = answer(batch_step(
            &service,
            &Principal::Open,
            &mut pending,
            chunk(1, None, vec![message(5, "D")], true),
        ))
        .await;
        assert_eq!(revision(&done), Some(3), "four events in stream one");
        assert!(pending.is_empty());
        assert_eq!(state.engine.head().0, 5);
    }

    #[tokio::test]
    async fn a_bad_chunk_fails_its_whole_batch_and_writes_nothing() {
        let service = service();
        let mut pending = PendingBatches::new();
        let first = batch_step(
            &service,
            &Principal::Open,
            &mut pending,
            chunk(1, Some("s"), vec![message(1, "A")], false),
        );
        assert!(matches!(first, BatchStep::Wait));
        let bad = answer(batch_step(
            &service,
            &Principal::Open,
            &mut pending,
            chunk(1, None, vec![message(2, "")], false),
        ))
        .await;
        assert_eq!(error_code(&bad), Some(CODE_INVALID_ARGUMENT), "{bad:?}");
        assert!(pending.is_empty(), "the failed batch is forgotten");
        // Its final chunk is now the first of an unknown batch: refused for lacking options.
        let last = answer(batch_step(
            &service,
            &Principal::Open,
            &mut pending,
            chunk(1, None, vec![message(3, "A")], true),
        ))
        .await;
        assert_eq!(error_code(&last), Some(CODE_INVALID_ARGUMENT), "{last:?}");
        assert_eq!(service.engine.head().0, 0);
    }

    #[tokio::test]
    async fn unfinished_batches_are_bounded() {
        let service = service();
        let mut pending = PendingBatches::new();
        for n in 0..BATCH_APPEND_UNFINISHED_MAX {
            let step = batch_step(
                &service,
                &Principal::Open,
                &mut pending,
                chunk(n as i64, Some("s"), vec![message(1, "A")], false),
            );
            assert!(matches!(step, BatchStep::Wait), "batch {n}");
        }
        let over = batch_step(
            &service,
            &Principal::Open,
            &mut pending,
            chunk(-1, Some("s"), vec![message(1, "A")], false),
        );
        let over = answer(over).await;
        assert_eq!(error_code(&over), Some(CODE_RESOURCE_EXHAUSTED), "{over:?}");
        assert_eq!(pending.len(), BATCH_APPEND_UNFINISHED_MAX);
        // A batch sent whole still goes through.
        let whole = answer(batch_step(
            &service,
            &Principal::Open,
            &mut pending,
            chunk(-2, Some("t"), vec![message(9, "A")], true),
        ))
        .await;
        assert_eq!(revision(&whole), Some(0), "{whole:?}");
    }
}
