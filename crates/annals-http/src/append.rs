//! `POST /streams/{stream}`: appends events with an optional expected revision, taken from the
//! body's `expectedRevision` or the `Expected-Revision` header.

use std::time::Instant;

use annals_core::{AppendResult, ExpectedRevision, StreamName};
use annals_server::{Api, AppendBudget, ServerState};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::ApiError;
use crate::wire::{AppendBody, parse_expected_json, parse_expected_str};

/// Header that may carry the expected revision instead of the body.
pub const EXPECTED_REVISION_HEADER: &str = "expected-revision";

pub(crate) async fn append(
    State(state): State<ServerState>,
    stream: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let (events, result) = match prepare(&state, stream, &headers, body) {
        Ok((stream, expected, events)) => {
            let n = events.len() as u64;
            let result = state
                .engine
                .append_async(&stream, expected, events)
                .await
                .map_err(ApiError::from);
            (n, result)
        }
        Err(e) => (0, Err(e)),
    };
    match result {
        Ok(AppendResult {
            next_revision,
            position,
        }) => {
            state
                .metrics
                .append(Api::Http, "ok", events, started.elapsed());
            (
                StatusCode::OK,
                axum::Json(json!({
                    "nextRevision": next_revision.0,
                    "position": position.0,
                })),
            )
                .into_response()
        }
        Err(e) => {
            state
                .metrics
                .append(Api::Http, e.append_outcome(), events, started.elapsed());
            e.into_response()
        }
    }
}

/// Checks everything about the request that can be checked before the engine sees it.
fn prepare(
    state: &ServerState,
    stream: Result<Path<String>, PathRejection>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StreamName, ExpectedRevision, Vec<annals_core::NewEvent>), ApiError> {
    let limits = &state.limits;
    let Path(stream) = stream.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let stream =
        StreamName::new(&stream).map_err(|e| ApiError::BadRequest(format!("stream name: {e}")))?;
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(format!(
                "request body is over the limit of {} bytes",
                limits.request_bytes_max
            ))
        } else {
            ApiError::BadRequest(e.body_text())
        }
    })?;
    let body: AppendBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid append body: {e}")))?;
    let from_header = match headers.get(EXPECTED_REVISION_HEADER) {
        None => None,
        Some(v) => {
            let s = v.to_str().map_err(|_| {
                ApiError::BadRequest("the Expected-Revision header is not text".to_owned())
            })?;
            Some(parse_expected_str(s)?)
        }
    };
    let from_body = body
        .expected_revision
        .as_ref()
        .map(parse_expected_json)
        .transpose()?;
    let expected = match (from_header, from_body) {
        (Some(header), Some(body)) if header != body => {
            return Err(ApiError::ExpectedRevisionConflict { header, body });
        }
        (Some(e), _) | (None, Some(e)) => e,
        (None, None) => ExpectedRevision::Any,
    };
    if body.events.is_empty() {
        return Err(ApiError::BadRequest(
            "events is empty: an append needs at least one event".to_owned(),
        ));
    }
    let mut events = Vec::with_capacity(body.events.len());
    let mut budget = AppendBudget::default();
    for (i, e) in body.events.into_iter().enumerate() {
        let event = e.into_event(i)?;
        budget
            .admit(limits, event.size_bytes())
            .map_err(|e| ApiError::TooLarge(e.to_string()))?;
        events.push(event);
    }
    Ok((stream, expected, events))
}
