//! `GET /streams/{stream}` and `GET /all`: pages of one stream by revision and of the global log
//! by position, with the place to continue from. `$ce-`/`$et-` streams read as link records, or
//! with `resolveLinks=true` as the events with their links.

use annals_core::{Direction, Position, ResolvedEvent, Revision, StreamName};
use annals_server::{Api, ServerState};
use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use serde::Serialize;

use crate::error::ApiError;
use crate::wire::{EventJson, ReadFrom, ReadParams};

/// The answer to `GET /streams/{stream}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamPage {
    pub events: Vec<EventJson>,
    /// The revision to pass as `from` (same direction) for the next page; `null` when a backwards
    /// read has passed revision 0, or when nothing was read and `from` was not a number.
    pub next: Option<u64>,
    /// Fewer events than asked came back: this direction has nothing more for now.
    pub end_reached: bool,
}

/// The answer to `GET /all`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AllPageJson {
    pub events: Vec<EventJson>,
    /// The position to pass as `from` (same direction) for the next page.
    pub next: u64,
    /// Forwards: the read reached the head. Backwards: it reached the beginning.
    pub end_reached: bool,
}

fn query(params: Result<Query<ReadParams>, QueryRejection>) -> Result<ReadParams, ApiError> {
    params
        .map(|Query(p)| p)
        .map_err(|e| ApiError::BadRequest(format!("bad query string: {}", e.body_text())))
}

pub(crate) async fn read_stream(
    State(state): State<ServerState>,
    stream: Result<Path<String>, PathRejection>,
    params: Result<Query<ReadParams>, QueryRejection>,
) -> Result<Json<StreamPage>, ApiError> {
    let Path(stream) = stream.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let stream =
        StreamName::new(&stream).map_err(|e| ApiError::BadRequest(format!("stream name: {e}")))?;
    let params = query(params)?;
    let direction = params.direction()?;
    let from = params.from(direction)?;
    let count = params.count(state.limits.read_count_max)?;
    let from_revision = match from {
        ReadFrom::Start => Revision(0),
        ReadFrom::End => Revision::END,
        ReadFrom::At(r) => Revision(r),
    };
    let resolve = params.resolve_links()?;
    let limit = usize::try_from(count).unwrap_or(usize::MAX);
    let engine = state.engine.clone();
    let records = tokio::task::spawn_blocking(move || {
        if resolve {
            engine.read_stream_resolved(&stream, from_revision, direction, limit)
        } else {
            engine
                .read_stream(&stream, from_revision, direction, limit)
                .map(|events| {
                    events
                        .into_iter()
                        .map(|event| ResolvedEvent { event, link: None })
                        .collect()
                })
        }
    })
    .await
    .map_err(|e| ApiError::Internal(format!("read task failed: {e}")))??;
    state.metrics.read(Api::Http, records.len() as u64);
    // The revision in the stream read: the link's when read through one.
    let next = match (records.last().map(|r| r.original().revision), direction) {
        (Some(last), Direction::Forwards) => Some(last.0.saturating_add(1)),
        (Some(last), Direction::Backwards) => last.0.checked_sub(1),
        (None, _) => match from {
            ReadFrom::At(r) => Some(r),
            _ => None,
        },
    };
    let end_reached =
        (records.len() as u64) < count || (direction == Direction::Backwards && next.is_none());
    Ok(Json(StreamPage {
        events: records.iter().map(EventJson::from_resolved).collect(),
        next,
        end_reached,
    }))
}

pub(crate) async fn read_all(
    State(state): State<ServerState>,
    params: Result<Query<ReadParams>, QueryRejection>,
) -> Result<Json<AllPageJson>, ApiError> {
    let params = query(params)?;
    let direction = params.direction()?;
    let from = params.from(direction)?;
    let count = params.count(state.limits.read_count_max)?;
    let filter = params.filter()?;
    let head = state.engine.head();
    let from_position = match (from, direction) {
        (ReadFrom::Start, _) => Position(1),
        (ReadFrom::End, Direction::Forwards) => head.next(),
        (ReadFrom::End, Direction::Backwards) => head,
        (ReadFrom::At(p), _) => Position(p),
    };
    let limit = usize::try_from(count).unwrap_or(usize::MAX);
    let engine = state.engine.clone();
    let page = tokio::task::spawn_blocking(move || {
        engine.read_all(from_position, direction, limit, filter.as_ref())
    })
    .await
    .map_err(|e| ApiError::Internal(format!("read task failed: {e}")))??;
    state.metrics.read(Api::Http, page.events.len() as u64);
    Ok(Json(AllPageJson {
        events: page.events.iter().map(EventJson::from_record).collect(),
        next: page.next.0,
        end_reached: page.end_reached,
    }))
}
