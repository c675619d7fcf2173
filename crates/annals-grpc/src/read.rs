//! `Streams.Read`: reads of one stream or of `$all` (forwards or backwards, optionally filtered)
//! and catch-up/live subscriptions, streamed to the client through a bounded channel. Reads of
//! `$ce-`/`$et-` streams send link records, or with `resolve_links` each event with its link;
//! subscriptions to them follow the stream by revision ([`crate::stream_cursor`]).
//!
//! The task answering a read hands over whole pages of events ([`Batch::Events`]), so the
//! channel and the wake-ups it causes cost once per page, not once per event; [`ReadItems`]
//! flattens them back into one response per event, which [`crate::read_route`] encodes by hand
//! straight into the response buffer.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use annals_core::{
    ALL_STREAM, Direction, DomainError, EventRecord, Filter, FilterTarget, Position, ResolvedEvent,
    Revision, StreamName, StreamRight,
};
use annals_engine::EngineError;
use annals_server::{Api, Principal, ServerState};
use tokio::sync::mpsc;
use tonic::Status;

use crate::convert::{stream_identifier, stream_name};
use crate::error::GrpcError;
pub(crate) use crate::read_items::{Batch, ReadItem, ReadItems};
pub(crate) use crate::read_tx::Tx;
use annals_proto::streams::read_req::options::{
    self as opts, AllOptions, FilterOptions, StreamOptions, all_options, stream_options,
};
use annals_proto::streams::{ReadReq, ReadResp, read_resp};

/// Events read from the engine per step, and so the most one [`Batch::Events`] holds; for `$all`
/// reads, the first step's.
pub(crate) const PAGE_EVENTS: usize = 512;
/// The most events one step of an `$all` read asks for. Each `Engine::read_all` call starts a
/// fresh log scan that reads a whole chunk ahead, so small pages of small events waste most of
/// each chunk: after the first page, an `$all` read sizes its pages to about
/// [`ALL_PAGE_BYTES`] of events, between [`ALL_PAGE_EVENTS_MIN`] and this.
const ALL_PAGE_EVENTS_MAX: usize = 4_096;
/// The fewest events one step of an `$all` read asks for (when events are large).
const ALL_PAGE_EVENTS_MIN: usize = 64;
/// The event bytes (data and metadata) an `$all` read aims to hold per page.
const ALL_PAGE_BYTES: usize = 1024 * 1024;
/// Batches buffered towards a slow client: with the page being read and the one being sent, a
/// read holds at most `CHANNEL_PAGES + 2` pages.
const CHANNEL_PAGES: usize = 2;

pub(crate) fn msg(content: read_resp::Content) -> Result<Batch, Status> {
    Ok(Batch::Message(Box::new(ReadResp {
        content: Some(content),
    })))
}

pub(crate) fn now() -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::now())
}

/// Where a subscription or read starts in `$all`.
enum AllFrom {
    Start,
    End,
    At(u64),
}

/// Validates the request and starts the task that answers it.
pub(crate) fn start(
    state: ServerState,
    who: &Principal,
    req: ReadReq,
) -> Result<ReadItems, Status> {
    let options = req
        .options
        .ok_or_else(|| Status::invalid_argument("read without options"))?;
    // Access first: a refused read learns nothing, not even whether its options were valid.
    match &options.stream_option {
        Some(opts::StreamOption::Stream(s)) => {
            let stream = stream_name(s.stream_identifier.as_ref())?;
            state
                .check_stream(who, stream.as_str(), StreamRight::Read)
                .map_err(GrpcError::from)?;
        }
        Some(opts::StreamOption::All(_)) => {
            state
                .check_stream(who, ALL_STREAM, StreamRight::Read)
                .map_err(GrpcError::from)?;
        }
        None => {}
    }
    let structured = matches!(
        options
            .uuid_option
            .as_ref()
            .and_then(|u| u.content.as_ref()),
        Some(opts::uuid_option::Content::Structured(_))
    );
    let backwards = options.read_direction == opts::ReadDirection::Backwards as i32;
    let resolve = options.resolve_links;
    // Clients that ask for compatibility level 1 also get first/last stream positions.
    let positions = options
        .control_option
        .as_ref()
        .is_some_and(|c| c.compatibility >= 1);
    let filter = match &options.filter_option {
        Some(opts::FilterOption::Filter(f)) => Some(compile_filter(f)?),
        _ => None,
    };
    let (inner, rx) = mpsc::channel(CHANNEL_PAGES);
    let too_slow = Arc::new(parking_lot::Mutex::new(None));
    let tx = Tx {
        inner,
        too_slow: Arc::clone(&too_slow),
        blocked_max: state.limits.subscriber_blocked_max,
    };
    match (options.stream_option, options.count_option) {
        (Some(opts::StreamOption::Stream(s)), Some(opts::CountOption::Count(count))) => {
            if filter.is_some() {
                return Err(Status::invalid_argument("a stream read cannot be filtered"));
            }
            let stream = stream_name(s.stream_identifier.as_ref())?;
            let count = count.min(state.limits.read_count_max);
            let from = stream_from(&s, backwards);
            let read = StreamRead {
                from,
                backwards,
                count,
                structured,
                positions,
                // Only the streams the index serves hold links.
                resolve: resolve && stream.indexed().is_some(),
            };
            tokio::task::spawn_blocking(move || read_stream(&state, &tx, &stream, &read));
        }
        (Some(opts::StreamOption::All(a)), Some(opts::CountOption::Count(count))) => {
            let count = count.min(state.limits.read_count_max);
            let from = all_from(&a);
            tokio::task::spawn_blocking(move || {
                read_all(
                    &state,
                    &tx,
                    from,
                    backwards,
                    count,
                    filter.map(|f| f.0),
                    structured,
                );
            });
        }
        (Some(stream_option), Some(opts::CountOption::Subscription(_))) => {
            if backwards {
                return Err(Status::invalid_argument("subscriptions go forwards only"));
            }
            let limit = state.limits.subscriptions_max;
            if usize::try_from(state.metrics.subscriptions_active()).unwrap_or(0) >= limit {
                return Err(GrpcError::TooManySubscriptions.into());
            }
            let target = match stream_option {
                opts::StreamOption::Stream(s) => {
                    if filter.is_some() {
                        return Err(Status::invalid_argument(
                            "a stream subscription cannot be filtered",
                        ));
                    }
                    let stream = stream_name(s.stream_identifier.as_ref())?;
                    let after = match s.revision_option {
                        Some(stream_options::RevisionOption::Revision(r)) => Some(Some(r)),
                        Some(stream_options::RevisionOption::End(_)) => None,
                        _ => Some(None),
                    };
                    if stream.indexed().is_some() {
                        let guard = state.metrics.subscription_started(Api::Grpc);
                        let sub = crate::stream_cursor::IndexedSubscription {
                            stream,
                            after,
                            resolve,
                            structured,
                        };
                        tokio::spawn(crate::stream_cursor::subscribe(state, tx, sub, guard));
                        return Ok(ReadItems::new(rx, too_slow));
                    }
                    Target::Stream { stream, after }
                }
                opts::StreamOption::All(a) => Target::All {
                    from: all_from(&a),
                    filter,
                },
            };
            let guard = state.metrics.subscription_started(Api::Grpc);
            tokio::spawn(subscribe(state, tx, target, structured, guard));
        }
        _ => {
            return Err(Status::invalid_argument(
                "a read needs a stream or $all, and a count or a subscription",
            ));
        }
    }
    Ok(ReadItems::new(rx, too_slow))
}

fn stream_from(s: &StreamOptions, backwards: bool) -> Option<Revision> {
    match s.revision_option {
        Some(stream_options::RevisionOption::Revision(r)) => Some(Revision(r)),
        Some(stream_options::RevisionOption::End(_)) => {
            if backwards {
                Some(Revision::END)
            } else {
                None
            }
        }
        _ => {
            if backwards {
                None
            } else {
                Some(Revision(0))
            }
        }
    }
}

fn all_from(a: &AllOptions) -> AllFrom {
    match &a.all_option {
        Some(all_options::AllOption::Position(p)) => AllFrom::At(p.commit_position),
        Some(all_options::AllOption::End(_)) => AllFrom::End,
        _ => AllFrom::Start,
    }
}

/// A compiled filter and the checkpoint interval (events scanned between checkpoints).
struct CompiledFilter(Filter, u64);

fn compile_filter(f: &FilterOptions) -> Result<CompiledFilter, Status> {
    use opts::filter_options::Filter as F;
    let (target, expr) = match &f.filter {
        Some(F::StreamIdentifier(e)) => (FilterTarget::StreamName, e),
        Some(F::EventType(e)) => (FilterTarget::EventType, e),
        None => return Err(Status::invalid_argument("filter without a target")),
    };
    let filter = if !expr.regex.is_empty() {
        Filter::regex(target, &expr.regex)
    } else {
        Filter::prefixes(target, expr.prefix.clone())
    }
    .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let window = match f.window {
        Some(opts::filter_options::Window::Max(m)) => u64::from(m.max(1)),
        _ => 32,
    };
    let interval = window.saturating_mul(u64::from(f.checkpoint_interval_multiplier.max(1)));
    Ok(CompiledFilter(filter, interval))
}

fn send_blocking(tx: &Tx, item: Result<Batch, Status>) -> bool {
    tx.blocking_send(item).is_ok()
}

/// A stream read's parameters.
struct StreamRead {
    from: Option<Revision>,
    backwards: bool,
    count: u64,
    structured: bool,
    /// Send `first_stream_position` / `last_stream_position` (compatibility level 1).
    positions: bool,
    /// Send each event with the link record it was read through.
    resolve: bool,
}

/// One page of a stream read: events, or events with their links.
enum StreamPage {
    Plain(Vec<EventRecord>),
    Resolved(Vec<ResolvedEvent>),
}

impl StreamPage {
    fn len(&self) -> usize {
        match self {
            StreamPage::Plain(events) => events.len(),
            StreamPage::Resolved(events) => events.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The revision, in the stream read, of the page's last event.
    fn last_revision(&self) -> Option<Revision> {
        match self {
            StreamPage::Plain(events) => events.last().map(|e| e.revision),
            StreamPage::Resolved(events) => events.last().map(|r| r.original().revision),
        }
    }

    fn into_batch(self, structured: bool) -> Batch {
        match self {
            StreamPage::Plain(events) => Batch::Events { events, structured },
            StreamPage::Resolved(events) => Batch::Resolved { events, structured },
        }
    }
}

fn read_stream(state: &ServerState, tx: &Tx, stream: &StreamName, read: &StreamRead) {
    let direction = if read.backwards {
        Direction::Backwards
    } else {
        Direction::Forwards
    };
    let mut sent = 0u64;
    let mut cursor = read.from;
    let mut found = true;
    while sent < read.count {
        let Some(at) = cursor else { break };
        let want = usize::try_from(read.count - sent)
            .unwrap_or(usize::MAX)
            .min(PAGE_EVENTS);
        let page = if read.resolve {
            state
                .engine
                .read_stream_resolved(stream, at, direction, want)
                .map(StreamPage::Resolved)
        } else {
            state
                .engine
                .read_stream(stream, at, direction, want)
                .map(StreamPage::Plain)
        };
        let events = match page {
            Ok(events) => events,
            Err(EngineError::Domain(DomainError::StreamNotFound { .. })) => {
                found = false;
                if sent == 0 {
                    let _ = send_blocking(
                        tx,
                        msg(read_resp::Content::StreamNotFound(
                            read_resp::StreamNotFound {
                                stream_identifier: Some(stream_identifier(stream.as_str())),
                            },
                        )),
                    );
                }
                break;
            }
            Err(e) => {
                let _ = send_blocking(tx, Err(GrpcError::from_engine(e, false).into()));
                return;
            }
        };
        if sent == 0 && events.is_empty() && read.positions && !read.backwards {
            // Nothing at or after the start: say where the stream's visible events begin.
            if let Ok(first) = state
                .engine
                .read_stream(stream, Revision(0), Direction::Forwards, 1)
                && let Some(first) = first.first()
                && Some(first.revision) != read.from
                && !send_blocking(
                    tx,
                    msg(read_resp::Content::FirstStreamPosition(first.revision.0)),
                )
            {
                return;
            }
        }
        let Some(last) = events.last_revision() else {
            break;
        };
        cursor = if read.backwards {
            last.0.checked_sub(1).map(Revision)
        } else {
            Some(Revision(last.0.saturating_add(1)))
        };
        let n = events.len();
        let batch = events.into_batch(read.structured);
        if !send_blocking(tx, Ok(batch)) {
            return;
        }
        sent += n as u64;
        if n < want {
            break;
        }
    }
    if found && read.positions {
        match state
            .engine
            .read_stream(stream, Revision::END, Direction::Backwards, 1)
        {
            Ok(last) => {
                if let Some(last) = last.first() {
                    let _ = send_blocking(
                        tx,
                        msg(read_resp::Content::LastStreamPosition(last.revision.0)),
                    );
                }
            }
            Err(EngineError::Domain(DomainError::StreamNotFound { .. })) => {
                if sent == 0 {
                    let _ = send_blocking(
                        tx,
                        msg(read_resp::Content::StreamNotFound(
                            read_resp::StreamNotFound {
                                stream_identifier: Some(stream_identifier(stream.as_str())),
                            },
                        )),
                    );
                }
            }
            Err(e) => {
                let _ = send_blocking(tx, Err(GrpcError::from_engine(e, false).into()));
                return;
            }
        }
    }
    state.metrics.read(Api::Grpc, sent);
}

fn read_all(
    state: &ServerState,
    tx: &Tx,
    from: AllFrom,
    backwards: bool,
    count: u64,
    filter: Option<Filter>,
    structured: bool,
) {
    let (direction, mut cursor) = match (backwards, from) {
        (false, AllFrom::Start) => (Direction::Forwards, Position(1)),
        (false, AllFrom::At(p)) => (Direction::Forwards, Position(p)),
        (false, AllFrom::End) => (Direction::Forwards, Position::END),
        (true, AllFrom::Start) => (Direction::Backwards, Position(0)),
        // Backwards from P excludes P.
        (true, AllFrom::At(p)) => (Direction::Backwards, Position(p.saturating_sub(1))),
        (true, AllFrom::End) => (Direction::Backwards, Position::END),
    };
    let mut sent = 0u64;
    let mut page_events = PAGE_EVENTS;
    while sent < count {
        if direction == Direction::Backwards && cursor.0 == 0 {
            break;
        }
        let want = usize::try_from(count - sent)
            .unwrap_or(usize::MAX)
            .min(page_events);
        let page = match state
            .engine
            .read_all(cursor, direction, want, filter.as_ref())
        {
            Ok(page) => page,
            Err(e) => {
                let _ = send_blocking(tx, Err(GrpcError::from_engine(e, false).into()));
                break;
            }
        };
        let n = page.events.len();
        if n > 0 {
            let bytes: usize = page
                .events
                .iter()
                .map(|e| e.data.len() + e.metadata.len())
                .sum();
            page_events = (ALL_PAGE_BYTES / bytes.div_ceil(n).max(1))
                .clamp(ALL_PAGE_EVENTS_MIN, ALL_PAGE_EVENTS_MAX);
            let batch = Batch::Events {
                events: page.events,
                structured,
            };
            if !send_blocking(tx, Ok(batch)) {
                return;
            }
        }
        sent += n as u64;
        let progressed = match direction {
            Direction::Forwards => page.next > cursor,
            Direction::Backwards => page.next < cursor,
        };
        if !progressed || (direction == Direction::Forwards && page.end_reached) {
            break;
        }
        cursor = page.next;
    }
    state.metrics.read(Api::Grpc, sent);
}

/// What a subscription follows.
enum Target {
    /// One stream; `after`: `Some(None)` from the start, `Some(Some(r))` after revision r,
    /// `None` from the end.
    Stream {
        stream: StreamName,
        after: Option<Option<u64>>,
    },
    All {
        from: AllFrom,
        filter: Option<CompiledFilter>,
    },
}

/// Runs one subscription; `_guard` counts it as active (it is taken before the task starts so the
/// subscription limit cannot be overrun by concurrent requests slipping past the check).
async fn subscribe<G: Send + 'static>(
    state: ServerState,
    tx: Tx,
    target: Target,
    structured: bool,
    _guard: G,
) {
    let id = uuid::Uuid::new_v4().to_string();
    tracing::debug!(subscription = %id, "gRPC subscription started");
    if tx
        .send(msg(read_resp::Content::Confirmation(
            read_resp::SubscriptionConfirmation {
                subscription_id: id.clone(),
            },
        )))
        .await
        .is_err()
    {
        return;
    }
    let (mut sub, stream_only, min_revision, checkpoint_every) = match target {
        Target::Stream { stream, after } => {
            let head = state.engine.head();
            let start = match after {
                None => head.next(),
                Some(after) => {
                    let first = after.map_or(0, |r| r.saturating_add(1));
                    match state
                        .engine
                        .read_stream(&stream, Revision(first), Direction::Forwards, 1)
                    {
                        Ok(events) => events.first().map_or(head.next(), |e| e.position),
                        Err(EngineError::Domain(DomainError::StreamDeleted { stream })) => {
                            let _ = tx
                                .send(Err(GrpcError::StreamDeleted { stream }.into()))
                                .await;
                            return;
                        }
                        Err(_) => head.next(),
                    }
                }
            };
            let filter = Filter::prefixes(FilterTarget::StreamName, vec![stream.to_string()]).ok();
            let min = after.flatten().map_or(0, |r| r.saturating_add(1));
            (
                state.engine.subscribe_all(start, filter),
                Some(stream),
                min,
                None,
            )
        }
        Target::All { from, filter } => {
            let start = match from {
                AllFrom::Start => Position(1),
                AllFrom::At(p) => Position(p.saturating_add(1)),
                AllFrom::End => state.engine.head().next(),
            };
            let (filter, every) = match filter {
                Some(CompiledFilter(f, every)) => (Some(f), Some(every)),
                None => (None, None),
            };
            (state.engine.subscribe_all(start, filter), None, 0, every)
        }
    };
    sub = sub.with_page_events_max(PAGE_EVENTS);
    let mut caught_up = false;
    // The last stream revision delivered (or skipped over by the start), for `caught_up`.
    let mut last_revision = min_revision.checked_sub(1);
    let mut last_checkpoint = sub.position().0.saturating_sub(1);
    let mut last_sent_at = Instant::now();
    // When the last page went out, if it was live (events, caught up with the head).
    let mut live_sent_at: Option<tokio::time::Instant> = None;
    loop {
        if let Some(at) = live_sent_at.take() {
            tokio::select! {
                () = state.stopping() => break,
                () = tx.closed() => break,
                () = state.limits.live_page_pause(at) => {}
            }
        }
        let page = tokio::select! {
            () = state.stopping() => break,
            () = tx.closed() => break,
            r = tokio::time::timeout(crate::IDLE_CHECKPOINT_INTERVAL, sub.next_page()) => r,
        };
        let page = match page {
            Ok(Ok(page)) => page,
            Ok(Err(e)) => {
                let _ = tx.send(Err(GrpcError::from_engine(e, false).into())).await;
                break;
            }
            Err(_idle) => {
                if checkpoint_every.is_some()
                    && last_sent_at.elapsed() >= crate::IDLE_CHECKPOINT_INTERVAL
                {
                    let p = sub.position().0.saturating_sub(1);
                    if tx.send(checkpoint(p)).await.is_err() {
                        break;
                    }
                    last_checkpoint = p;
                    last_sent_at = Instant::now();
                }
                continue;
            }
        };
        live_sent_at = (page.caught_up && !page.events.is_empty()).then(tokio::time::Instant::now);
        let mut events = match stream_only {
            Some(_) => page.events.into_vec(),
            None => {
                // `$all`: the page goes as it is, shared with other subscriptions at the head.
                let delivered = page.events.len() as u64;
                if delivered > 0 {
                    let batch = Batch::Shared {
                        events: page.events,
                        structured,
                    };
                    if tx.send(Ok(batch)).await.is_err() {
                        return;
                    }
                    state.metrics.subscription_events(Api::Grpc, delivered);
                    last_sent_at = Instant::now();
                }
                Vec::new()
            }
        };
        if stream_only.is_some() {
            events.retain(|e| wanted(e, stream_only.as_ref(), min_revision));
        }
        // The followed stream deleted for good: the events before the tombstone are delivered,
        // then the subscription ends as KurrentDB's does.
        let deleted = match stream_only {
            Some(_) => events.iter().position(EventRecord::is_tombstone).map(|i| {
                let tombstone_and_after = events.split_off(i);
                tombstone_and_after
                    .first()
                    .map(|e| e.stream.to_string())
                    .unwrap_or_default()
            }),
            None => None,
        };
        let delivered = events.len() as u64;
        if let Some(last) = events.last() {
            last_revision = Some(last.revision.0);
        }
        if delivered > 0 {
            let batch = Batch::Events { events, structured };
            if tx.send(Ok(batch)).await.is_err() {
                return;
            }
            state.metrics.subscription_events(Api::Grpc, delivered);
            last_sent_at = Instant::now();
        }
        if let Some(stream) = deleted {
            let _ = tx
                .send(Err(GrpcError::StreamDeleted { stream }.into()))
                .await;
            return;
        }
        if let Some(every) = checkpoint_every
            && page.checkpoint.0.saturating_sub(last_checkpoint) >= every
        {
            if tx.send(checkpoint(page.checkpoint.0)).await.is_err() {
                break;
            }
            last_checkpoint = page.checkpoint.0;
            last_sent_at = Instant::now();
        }
        if page.caught_up && !caught_up {
            caught_up = true;
            let position = read_resp::Position {
                commit_position: page.checkpoint.0,
                prepare_position: page.checkpoint.0,
            };
            let resp = read_resp::CaughtUp {
                timestamp: Some(now()),
                stream_revision: if stream_only.is_some() {
                    last_revision.and_then(|r| i64::try_from(r).ok())
                } else {
                    None
                },
                position: stream_only.is_none().then_some(position),
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

fn wanted(e: &EventRecord, stream: Option<&StreamName>, min_revision: u64) -> bool {
    match stream {
        Some(s) => e.stream.as_str() == s.as_str() && e.revision.0 >= min_revision,
        None => true,
    }
}

fn checkpoint(p: u64) -> Result<Batch, Status> {
    msg(read_resp::Content::Checkpoint(read_resp::Checkpoint {
        commit_position: p,
        prepare_position: p,
        timestamp: Some(now()),
    }))
}
