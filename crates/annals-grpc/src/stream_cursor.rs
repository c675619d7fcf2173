//! Subscriptions to the streams the index serves (`$ce-{category}`, `$et-{event type}`) over
//! `Streams.Read`: an engine [`annals_engine::StreamSubscription`], a cursor over the stream by
//! revision that waits on the head signal between pages, so catching up and going live are one
//! path and the switch neither skips nor repeats a revision.
//!
//! As KurrentDB's: the confirmation first, then the events (link records, or with
//! `resolve_links` each event with its link), `caught_up` once with the last revision delivered,
//! and the end when the server stops or the client goes.

use annals_core::{Revision, StreamName};
use annals_server::{Api, ServerState};

use crate::error::GrpcError;
use crate::read::{Batch, PAGE_EVENTS, Tx, msg, now};
use annals_proto::streams::read_resp;

/// What one subscription follows and how it answers.
pub(crate) struct IndexedSubscription {
    pub(crate) stream: StreamName,
    /// `Some(None)` from the start, `Some(Some(r))` after revision r, `None` from the end.
    pub(crate) after: Option<Option<u64>>,
    pub(crate) resolve: bool,
    pub(crate) structured: bool,
}

/// Runs one subscription; `_guard` counts it as active.
pub(crate) async fn subscribe<G: Send + 'static>(
    state: ServerState,
    tx: Tx,
    sub: IndexedSubscription,
    _guard: G,
) {
    let id = uuid::Uuid::new_v4().to_string();
    tracing::debug!(subscription = %id, stream = %sub.stream, "gRPC subscription started");
    let confirmation = read_resp::SubscriptionConfirmation {
        subscription_id: id.clone(),
    };
    if tx
        .send(msg(read_resp::Content::Confirmation(confirmation)))
        .await
        .is_err()
    {
        return;
    }
    let from = match sub.after {
        None => Revision::END,
        Some(None) => Revision(0),
        Some(Some(r)) => Revision(r.saturating_add(1)),
    };
    let mut cursor = match state.engine.subscribe_stream(&sub.stream, from) {
        Ok(c) => c.with_page_events_max(PAGE_EVENTS),
        Err(e) => {
            let _ = tx.send(Err(GrpcError::from_engine(e, false).into())).await;
            return;
        }
    };
    // The last revision delivered (or skipped over by the start), for `caught_up`.
    let mut last_revision = cursor.revision().0.checked_sub(1);
    let mut caught_up = false;
    loop {
        let page = tokio::select! {
            () = state.stopping() => break,
            () = tx.closed() => break,
            page = cursor.next_page() => page,
        };
        let page = match page {
            Ok(page) => page,
            Err(e) => {
                let _ = tx.send(Err(GrpcError::from_engine(e, false).into())).await;
                break;
            }
        };
        if let Some(last) = page.events.last() {
            last_revision = Some(last.original().revision.0);
        }
        let delivered = page.events.len() as u64;
        if delivered > 0 {
            let batch = if sub.resolve {
                Batch::Resolved {
                    events: page.events,
                    structured: sub.structured,
                }
            } else {
                Batch::Events {
                    events: page.events.into_iter().map(|r| r.into_original()).collect(),
                    structured: sub.structured,
                }
            };
            if tx.send(Ok(batch)).await.is_err() {
                break;
            }
            state.metrics.subscription_events(Api::Grpc, delivered);
        }
        if page.caught_up && !caught_up {
            caught_up = true;
            let resp = read_resp::CaughtUp {
                timestamp: Some(now()),
                stream_revision: last_revision.and_then(|r| i64::try_from(r).ok()),
                position: None,
            };
            if tx
                .send(msg(read_resp::Content::CaughtUp(resp)))
                .await
                .is_err()
            {
                break;
            }
        }
    }
    tracing::debug!(subscription = %id, "gRPC subscription ended");
}
