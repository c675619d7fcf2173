//! The node's single writer: appends queue to it, and it commits everything queued as one
//! transaction that first takes the head row lock (`SELECT … FROM annals.head FOR UPDATE`).
//! Every commit of every node takes that lock, so commits are serialised and each batch's
//! positions follow exactly the last committed one; Postgres makes a transaction visible before
//! it releases its locks, so a later batch commits only once an earlier one is visible, and no
//! reader can ever see a gap. Expected revisions and idempotency are checked inside the same
//! transaction; an append that fails a check is left out of the batch alone.

use std::collections::HashMap;

use annals_core::{
    AppendResult, ContentType, DomainError, EventType, ExpectedRevision, METADATA_EVENT_TYPE,
    NewEvent, Position, Revision, StreamMetadata, StreamName, category_of,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::{Client, Config, GenericClient, Statement, Transaction};
use uuid::Uuid;

use crate::error::PgStoreError;
use crate::lease::Lease;

/// Most appends one transaction commits.
pub const PG_GROUP_COMMIT_APPENDS_MAX: usize = 1_024;

/// One append waiting for the writer.
pub(crate) struct AppendRequest {
    pub(crate) stream: StreamName,
    pub(crate) expected: ExpectedRevision,
    /// The events; for a tombstone, its one `$streamDeleted` event; none for a soft delete.
    pub(crate) events: Vec<NewEvent>,
    pub(crate) kind: Kind,
    /// A job's write: refused unless this lease is held in this term when it commits.
    pub(crate) fence: Option<Lease>,
    pub(crate) reply: oneshot::Sender<Result<AppendResult, PgStoreError>>,
}

/// What a request does to its stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Appends its events.
    Events,
    /// Marks the stream deleted in its metadata (`$tb`), restored by a later append.
    SoftDelete,
    /// Deletes the stream for good: its one event is written at [`TOMBSTONE_REVISION`].
    Tombstone,
}

/// The revision a tombstone is written at (`Revision::TOMBSTONE`).
pub(crate) const TOMBSTONE_REVISION: i64 = i64::MAX;

/// A stream as the batch being built sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamRow {
    pub(crate) id: i64,
    pub(crate) next_revision: i64,
    pub(crate) tombstoned: bool,
    /// Not in `annals.streams` yet: inserted by this batch.
    pub(crate) new: bool,
}

/// Where an event id already is.
#[derive(Clone, Debug)]
struct Placed {
    stream: String,
    revision: i64,
    position: i64,
}

/// The rows one batch inserts, column by column (inserted with one `unnest` statement).
#[derive(Default)]
pub(crate) struct Columns {
    pub(crate) position: Vec<i64>,
    pub(crate) stream_id: Vec<i64>,
    pub(crate) revision: Vec<i64>,
    pub(crate) event_id: Vec<Uuid>,
    pub(crate) event_type: Vec<String>,
    pub(crate) category: Vec<String>,
    pub(crate) content_type: Vec<i16>,
    pub(crate) created_ns: Vec<i64>,
    pub(crate) data: Vec<Vec<u8>>,
    pub(crate) metadata: Vec<Vec<u8>>,
}

/// The writer's statements, prepared once per connection, so each costs one message and not a
/// round trip of its own to be parsed.
#[derive(Debug)]
pub(crate) struct Statements {
    pub(crate) lock_head: Statement,
    pub(crate) streams: Statement,
    placed: Statement,
    pub(crate) next_stream_id: Statement,
    metadata: Statement,
    insert_streams: Statement,
    update_streams: Statement,
    insert_events: Statement,
    set_head: Statement,
    notify: Statement,
    fences: Statement,
}

impl Statements {
    pub(crate) async fn prepare(c: &Client) -> Result<Self, tokio_postgres::Error> {
        let (lock_head, streams, placed, next_stream_id, metadata) = futures::try_join!(
            c.prepare("SELECT position FROM annals.head FOR UPDATE"),
            c.prepare(
                "SELECT name, id, next_revision, tombstoned FROM annals.streams \
                 WHERE name = ANY($1) FOR UPDATE",
            ),
            c.prepare(PLACED_SQL),
            c.prepare("SELECT coalesce(max(id), 0) + 1 FROM annals.streams"),
            c.prepare(
                // Each stream's last event, one backward step of its index: written so the
                // planner can do nothing else (a join it may flatten went through the whole
                // index while the tables had no statistics).
                "SELECT s.name, m.data FROM annals.streams s CROSS JOIN LATERAL \
                 (SELECT e.data FROM annals.events e WHERE e.stream_id = s.id \
                 AND e.revision < 9223372036854775807 ORDER BY e.revision DESC LIMIT 1) m \
                 WHERE s.name = ANY($1)",
            ),
        )?;
        let (insert_streams, update_streams, insert_events, set_head, notify, fences) = futures::try_join!(
            c.prepare(
                "INSERT INTO annals.streams (id, name, next_revision, tombstoned) \
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bool[])",
            ),
            c.prepare(
                "UPDATE annals.streams s SET next_revision = u.next, tombstoned = u.tomb \
                 FROM unnest($1::bigint[], $2::bigint[], $3::bool[]) AS u(id, next, tomb) \
                 WHERE s.id = u.id AND (s.next_revision <> u.next OR s.tombstoned <> u.tomb)",
            ),
            c.prepare(
                "INSERT INTO annals.events (position, stream_id, revision, event_id, event_type, \
                 category, content_type, created_ns, data, metadata) \
                 SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::uuid[], \
                 $5::text[], $6::text[], $7::int2[], $8::bigint[], $9::bytea[], $10::bytea[])",
            ),
            c.prepare("UPDATE annals.head SET position = $1"),
            c.prepare("SELECT pg_notify('annals_head', $1)"),
            c.prepare(
                "SELECT name, holder, token FROM annals.leases \
                 WHERE name = ANY($1) AND expires_at > now() FOR SHARE",
            ),
        )?;
        Ok(Self {
            lock_head,
            streams,
            placed,
            next_stream_id,
            metadata,
            insert_streams,
            update_streams,
            insert_events,
            set_head,
            notify,
            fences,
        })
    }
}

/// A statement parameter.
pub(crate) type Param = dyn tokio_postgres::types::ToSql + Sync;

/// Where event ids already are.
const PLACED_SQL: &str = "SELECT e.event_id, \
                          (SELECT s.name FROM annals.streams s WHERE s.id = e.stream_id), \
                          e.revision, e.position FROM annals.events e WHERE e.event_id = ANY($1)";

impl Columns {
    /// One event's row.
    pub(crate) fn push(
        &mut self,
        position: i64,
        stream_id: i64,
        revision: i64,
        stream: &str,
        e: &NewEvent,
        created: i64,
    ) {
        self.position.push(position);
        self.stream_id.push(stream_id);
        self.revision.push(revision);
        self.event_id.push(e.id);
        self.event_type.push(e.event_type.as_str().to_owned());
        self.category.push(category_of(stream).to_owned());
        self.content_type.push(i16::from(e.content_type.code()));
        self.created_ns.push(created);
        self.data.push(e.data.to_vec());
        self.metadata.push(e.metadata.to_vec());
    }
}

/// The writer task: takes what is queued, commits it, answers; until every sender is gone.
pub(crate) async fn run(
    config: Config,
    mut client: Option<(Client, Statements)>,
    mut requests: mpsc::Receiver<AppendRequest>,
    head: std::sync::Arc<watch::Sender<Position>>,
) {
    let mut batch = Vec::new();
    while let Some(first) = requests.recv().await {
        batch.push(first);
        gather(&mut requests, &mut batch, PG_GROUP_COMMIT_APPENDS_MAX).await;
        if client.as_ref().is_none_or(|(c, _)| c.is_closed()) {
            client = match connect_prepared(&config).await {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "the writer cannot reach Postgres");
                    for r in batch.drain(..) {
                        let _ = r.reply.send(Err(PgStoreError::Unavailable(e.to_string())));
                    }
                    continue;
                }
            };
        }
        let Some((c, statements)) = client.as_mut() else {
            continue;
        };
        match commit(c, statements, &mut batch).await {
            Ok((answers, new_head)) => {
                head.send_if_modified(|h| advance(h, new_head));
                for (r, answer) in batch.drain(..).zip(answers) {
                    let _ = r.reply.send(answer);
                }
            }
            Err(e) if c.is_closed() => {
                // The connection died: the commit may or may not have happened.
                tracing::warn!(error = %e, "connection lost while committing; looking the batch up");
                let outcome = find_out(&config, &event_ids(&batch)).await;
                client = None;
                answer_unknown(&mut batch, outcome, &head);
            }
            Err(e) => {
                tracing::warn!(error = %e, "a batch failed to commit; nothing of it was written");
                let text = crate::error::pg_message(&e);
                for r in batch.drain(..) {
                    let _ = r.reply.send(Err(PgStoreError::Unavailable(format!(
                        "the commit failed: {text}"
                    ))));
                }
            }
        }
    }
}

/// Most times the writer lets other tasks run to hand it their appends before it commits.
pub(crate) const PG_GATHER_YIELDS_MAX: usize = 8;

/// Takes what is queued into `batch` (up to `max`), then lets the runtime run the tasks that
/// are ready and takes what they queued, for as long as that brings more (at most
/// [`PG_GATHER_YIELDS_MAX`] times). Answering a batch wakes every one of its appenders, and the
/// first to append again wakes the writer at once: taking only what is queued then commits
/// that one alone and leaves the rest to the batch after. Measured with 64 appenders waiting
/// each for its answer, batches alternated between a few appends and the rest, two commits (two
/// WAL flushes) for every 64 appends; a commit costs milliseconds, a yield microseconds.
async fn gather<T>(requests: &mut mpsc::Receiver<T>, batch: &mut Vec<T>, max: usize) {
    let drain = |requests: &mut mpsc::Receiver<T>, batch: &mut Vec<T>| {
        while batch.len() < max {
            match requests.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
    };
    drain(requests, batch);
    for _ in 0..PG_GATHER_YIELDS_MAX {
        let had = batch.len();
        if had >= max {
            return;
        }
        tokio::task::yield_now().await;
        drain(requests, batch);
        if batch.len() == had {
            return;
        }
    }
}

/// A writer's connection with its statements prepared.
pub(crate) async fn connect_prepared(
    config: &Config,
) -> Result<(Client, Statements), PgStoreError> {
    let client = crate::store::connect(config).await?;
    // Every statement of the writer is a look-up by key or a short range of an index, and a
    // scan of a whole table is never the right plan for one. The planner picks it anyway when
    // the tables have no statistics yet (a new store, until autovacuum's first `ANALYZE`): the
    // idempotency look-up then scanned all of `annals.events` on every batch, 4 ms at 8,000
    // events and growing with the table (measured in `annals bench append --store`). Such a
    // scan stays possible where nothing else can run (the one-row head), so JIT, which the
    // cost of a discouraged plan would start on every batch, is off too: the writer's
    // statements are all small.
    client
        .batch_execute("SET enable_seqscan = off; SET jit = off")
        .await
        .map_err(PgStoreError::from_pg)?;
    let statements = Statements::prepare(&client)
        .await
        .map_err(PgStoreError::from_pg)?;
    Ok((client, statements))
}

/// Every event id of a batch, in order.
fn event_ids(batch: &[AppendRequest]) -> Vec<Uuid> {
    batch
        .iter()
        .flat_map(|r| r.events.iter().map(|e| e.id))
        .collect()
}

/// Moves `head` to `to` if that is further; whether it moved.
pub(crate) fn advance(head: &mut Position, to: Position) -> bool {
    if to > *head {
        *head = to;
        true
    } else {
        false
    }
}

/// Commits `batch` as one transaction; one answer per request, in order, and the new head.
async fn commit(
    client: &mut Client,
    st: &Statements,
    batch: &mut [AppendRequest],
) -> Result<(Vec<Result<AppendResult, PgStoreError>>, Position), tokio_postgres::Error> {
    let outcome = commit_in_two_round_trips(client, st, batch).await;
    if outcome.is_err() && !client.is_closed() {
        // Whatever round failed, the transaction must not stay open on the connection (after a
        // failed `COMMIT` it has ended already, and this is a harmless warning on the server).
        let _ = client.batch_execute("ROLLBACK").await;
    }
    outcome
}

/// [`commit`]'s work: `BEGIN` travels with the first round (the head lock and the reads) and
/// `COMMIT` with the second (the writes), so a batch costs two round trips and holds the head
/// lock for one round trip and the flush. The server runs a connection's statements in order,
/// and after a failed one the transaction is aborted: the statements behind it fail too and a
/// `COMMIT` behind it rolls back, so nothing of the batch is committed; the first error is what
/// this returns.
async fn commit_in_two_round_trips(
    tx: &Client,
    st: &Statements,
    batch: &mut [AppendRequest],
) -> Result<(Vec<Result<AppendResult, PgStoreError>>, Position), tokio_postgres::Error> {
    // The streams written, with their `$$` metadata streams (a soft delete writes there, and an
    // append to a soft-deleted stream restores it there first).
    let mut names: Vec<String> = Vec::new();
    let mut meta_names: Vec<String> = Vec::new();
    for r in batch.iter() {
        names.push(r.stream.to_string());
        if let Ok(meta) = r.stream.metadata_stream()
            && !r.stream.is_metadata_stream()
        {
            names.push(meta.to_string());
            meta_names.push(meta.to_string());
        }
    }
    names.sort_unstable();
    names.dedup();
    meta_names.sort_unstable();
    meta_names.dedup();
    let ids = event_ids(batch);
    let mut leases: Vec<String> = batch
        .iter()
        .filter_map(|r| r.fence.as_ref().map(|f| f.name.clone()))
        .collect();
    leases.sort_unstable();
    leases.dedup();
    // One round trip: the server runs them in order, the head lock first.
    let by_name: [&Param; 1] = [&names];
    let by_id: [&Param; 1] = [&ids];
    let by_meta: [&Param; 1] = [&meta_names];
    let by_lease: [&Param; 1] = [&leases];
    let fence_rows = async {
        if leases.is_empty() {
            Ok(Vec::new())
        } else {
            tx.query(&st.fences, &by_lease).await
        }
    };
    // The event ids are looked up with the rest when an append could be a retry whatever its
    // stream holds (see [`surely_new`]); otherwise only if the streams' rows say one could be.
    let look_up_first = !batch.iter().all(|r| surely_new(r, None));
    let placed_rows = async {
        if look_up_first {
            tx.query(&st.placed, &by_id).await
        } else {
            Ok(Vec::new())
        }
    };
    let (_, head, stream_rows, mut placed_rows, next_id, meta_rows, fence_rows) = futures::try_join!(
        tx.batch_execute("BEGIN"),
        tx.query_one(&st.lock_head, &[]),
        tx.query(&st.streams, &by_name),
        placed_rows,
        tx.query_one(&st.next_stream_id, &[]),
        tx.query(&st.metadata, &by_meta),
        fence_rows,
    )?;
    let streams = streams_from(stream_rows);
    if !look_up_first && !batch.iter().all(|r| surely_new(r, Some(&streams))) {
        placed_rows = tx.query(&st.placed, &by_id).await?;
    }
    let head: i64 = head.get(0);
    let mut b = Building {
        streams,
        placed: placed_from(placed_rows),
        meta: HashMap::new(),
        next_stream_id: next_id.get(0),
        cols: Columns::default(),
        created: annals_core::Timestamp::now().0,
        position: head,
        held: fence_rows
            .iter()
            .map(|row| Lease {
                name: row.get(0),
                holder: row.get::<_, Option<String>>(1).unwrap_or_default(),
                token: row.get(2),
            })
            .collect(),
    };
    for row in meta_rows {
        let meta_name: String = row.get(0);
        if let Some(target) = meta_name.strip_prefix("$$") {
            b.meta.insert(target.to_owned(), row.get(1));
        }
    }
    let answers = batch.iter().map(|r| b.request(r)).collect();
    if b.cols.position.is_empty() {
        tx.batch_execute("ROLLBACK").await?;
        return Ok((answers, Position(u64::try_from(head).unwrap_or(0))));
    }
    futures::try_join!(
        write(tx, st, &b.streams, &b.cols, b.position),
        tx.batch_execute("COMMIT"),
    )?;
    Ok((answers, Position(u64::try_from(b.position).unwrap_or(0))))
}

/// Whether `r` cannot be a retry of an append already in the store, so its event ids need no
/// look-up: an append expecting exactly the revision its stream is at, or no stream where there
/// is none. KurrentDB's rule (`ExpectedRevision::retry_of`) counts an append as a retry only
/// when its first event is in its stream right after the revision it expects, and such a stream
/// ends there. An earlier append of the same batch with the same ids is found anyway (the batch
/// keeps its own placements). With `streams` unknown (`None`), only the kind of request decides
/// whether a look-up may be avoided. Optimistic appends with exact expected revisions, the
/// usual kind, thus skip a look-up costing one index descent per event (measured: 15% of the
/// writer's database time).
fn surely_new(r: &AppendRequest, streams: Option<&HashMap<String, StreamRow>>) -> bool {
    if r.kind != Kind::Events {
        return true;
    }
    let current = |streams: &HashMap<String, StreamRow>| {
        streams
            .get(r.stream.as_str())
            .and_then(|s| u64::try_from(s.next_revision).ok())
            .and_then(|n| n.checked_sub(1))
    };
    match (r.expected, streams) {
        (ExpectedRevision::Exact(_) | ExpectedRevision::NoStream, None) => true,
        (ExpectedRevision::Exact(_) | ExpectedRevision::NoStream, Some(streams)) => {
            r.expected.is_satisfied_by(current(streams))
        }
        _ => false,
    }
}

/// One batch being built: the rows it writes and the state its requests see, each request's
/// effect included for the ones after it.
struct Building {
    streams: HashMap<String, StreamRow>,
    placed: HashMap<Uuid, Placed>,
    /// A stream's current metadata (the last event of its `$$` stream), by stream.
    meta: HashMap<String, Vec<u8>>,
    next_stream_id: i64,
    cols: Columns,
    created: i64,
    position: i64,
    /// The leases held now, as the fenced requests' checks see them (their rows are held
    /// `FOR SHARE` until the transaction ends, so no node can take one meanwhile).
    held: Vec<Lease>,
}

impl Building {
    /// `name`'s row, a new one (with the next stream id) if it has none yet.
    fn row(&mut self, name: &str) -> StreamRow {
        let next_stream_id = &mut self.next_stream_id;
        *self.streams.entry(name.to_owned()).or_insert_with(|| {
            let id = *next_stream_id;
            *next_stream_id += 1;
            StreamRow {
                id,
                next_revision: 0,
                tombstoned: false,
                new: true,
            }
        })
    }

    /// Adds `events` to `name` from its next revision; the last one's revision and position.
    fn push(&mut self, name: &str, events: &[NewEvent]) -> AppendResult {
        let row = self.row(name);
        let mut revision = row.next_revision;
        for e in events {
            self.position += 1;
            self.cols
                .push(self.position, row.id, revision, name, e, self.created);
            self.placed.insert(
                e.id,
                Placed {
                    stream: name.to_owned(),
                    revision,
                    position: self.position,
                },
            );
            revision += 1;
        }
        if let Some(s) = self.streams.get_mut(name) {
            s.next_revision = revision;
        }
        if let Some(target) = name.strip_prefix("$$")
            && let Some(last) = events.last()
        {
            self.meta.insert(target.to_owned(), last.data.to_vec());
        }
        AppendResult {
            next_revision: Revision(u64::try_from(revision - 1).unwrap_or(0)),
            position: Position(u64::try_from(self.position).unwrap_or(0)),
        }
    }

    /// Writes `json` as `target`'s new metadata (a `$metadata` event in `$$target`).
    fn push_metadata(&mut self, target: &str, json: Vec<u8>) -> Result<AppendResult, PgStoreError> {
        let event = NewEvent {
            id: Uuid::new_v4(),
            event_type: EventType::new(METADATA_EVENT_TYPE)
                .map_err(|e| PgStoreError::Input(e.to_string()))?,
            content_type: ContentType::Json,
            data: bytes::Bytes::from(json),
            metadata: bytes::Bytes::new(),
        };
        Ok(self.push(&format!("$${target}"), std::slice::from_ref(&event)))
    }

    /// Checks one request and adds what it writes; its answer.
    fn request(&mut self, r: &AppendRequest) -> Result<AppendResult, PgStoreError> {
        if let Some(fence) = &r.fence
            && !self.held.contains(fence)
        {
            return Err(PgStoreError::Fenced {
                lease: fence.name.clone(),
                token: fence.token,
            });
        }
        let name = r.stream.as_str();
        let row = self.row(name);
        if row.tombstoned {
            return Err(DomainError::StreamDeleted {
                stream: name.to_owned(),
            }
            .into());
        }
        let current = u64::try_from(row.next_revision)
            .ok()
            .and_then(|n| n.checked_sub(1));
        // A retry is judged after the tombstone and before everything else, as every store does.
        if r.kind == Kind::Events
            && let Some(result) = retry_of(r, &self.placed, current)?
        {
            return Ok(result);
        }
        let soft_deleted = !r.stream.is_metadata_stream()
            && self
                .meta
                .get(name)
                .and_then(|json| StreamMetadata::parse(json).ok())
                .is_some_and(|m| m.is_soft_deleted());
        r.expected
            .check(name, current, soft_deleted, r.kind == Kind::SoftDelete)?;
        match r.kind {
            Kind::Events => {
                if soft_deleted {
                    // Appending restores a soft-deleted stream from here on, as KurrentDB does:
                    // its metadata gets `$tb` = the first new revision.
                    let json = StreamMetadata::undelete_json(
                        self.meta.get(name).map(Vec::as_slice),
                        u64::try_from(row.next_revision).unwrap_or(0),
                    );
                    self.push_metadata(name, json)?;
                }
                Ok(self.push(name, &r.events))
            }
            Kind::SoftDelete => {
                let json = StreamMetadata::soft_delete_json(self.meta.get(name).map(Vec::as_slice));
                let written = self.push_metadata(name, json)?;
                Ok(AppendResult {
                    next_revision: Revision(current.unwrap_or(0)),
                    position: written.position,
                })
            }
            Kind::Tombstone => {
                if let Some(e) = r.events.first() {
                    self.position += 1;
                    self.cols.push(
                        self.position,
                        row.id,
                        TOMBSTONE_REVISION,
                        name,
                        e,
                        self.created,
                    );
                }
                if let Some(s) = self.streams.get_mut(name) {
                    s.tombstoned = true;
                }
                Ok(AppendResult {
                    next_revision: Revision(current.unwrap_or(0)),
                    position: Position(u64::try_from(self.position).unwrap_or(0)),
                })
            }
        }
    }
}

/// Inserts the batch's rows, moves the streams and the head, and notifies every node, in one
/// round trip.
pub(crate) async fn write(
    tx: &impl GenericClient,
    st: &Statements,
    streams: &HashMap<String, StreamRow>,
    cols: &Columns,
    head: i64,
) -> Result<(), tokio_postgres::Error> {
    let (mut new_ids, mut new_names, mut new_next, mut new_tomb) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut ids, mut next, mut tomb) = (Vec::new(), Vec::new(), Vec::new());
    for (name, s) in streams {
        if s.new {
            if s.next_revision > 0 || s.tombstoned {
                new_ids.push(s.id);
                new_names.push(name.clone());
                new_next.push(s.next_revision);
                new_tomb.push(s.tombstoned);
            }
        } else {
            ids.push(s.id);
            next.push(s.next_revision);
            tomb.push(s.tombstoned);
        }
    }
    let head_text = head.to_string();
    let new_streams: [&Param; 4] = [&new_ids, &new_names, &new_next, &new_tomb];
    let moved_streams: [&Param; 3] = [&ids, &next, &tomb];
    let events: [&Param; 10] = [
        &cols.position,
        &cols.stream_id,
        &cols.revision,
        &cols.event_id,
        &cols.event_type,
        &cols.category,
        &cols.content_type,
        &cols.created_ns,
        &cols.data,
        &cols.metadata,
    ];
    let new_head: [&Param; 1] = [&head];
    let note: [&Param; 1] = [&head_text];
    futures::try_join!(
        tx.execute(&st.insert_streams, &new_streams),
        tx.execute(&st.update_streams, &moved_streams),
        tx.execute(&st.insert_events, &events),
        tx.execute(&st.set_head, &new_head),
        tx.query(&st.notify, &note),
    )?;
    Ok(())
}

/// Where each of `ids` already is.
async fn placed_ids(
    tx: &Transaction<'_>,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Placed>, tokio_postgres::Error> {
    Ok(placed_from(tx.query(PLACED_SQL, &[&ids]).await?))
}

/// The rows of the `streams` statement by stream name.
pub(crate) fn streams_from(rows: Vec<tokio_postgres::Row>) -> HashMap<String, StreamRow> {
    rows.into_iter()
        .map(|row| {
            (
                row.get(0),
                StreamRow {
                    id: row.get(1),
                    next_revision: row.get(2),
                    tombstoned: row.get(3),
                    new: false,
                },
            )
        })
        .collect()
}

/// The rows of [`PLACED_SQL`] by event id.
fn placed_from(rows: Vec<tokio_postgres::Row>) -> HashMap<Uuid, Placed> {
    // An id written more than once (a new append reusing it) counts where it was written last,
    // as in the embedded store.
    let mut placed: HashMap<Uuid, Placed> = HashMap::new();
    for row in rows {
        let at = Placed {
            stream: row.get(1),
            revision: row.get(2),
            position: row.get(3),
        };
        match placed.entry(row.get(0)) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                if e.get().position < at.position {
                    e.insert(at);
                }
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(at);
            }
        }
    }
    placed
}

/// What KurrentDB's retry rule (`ExpectedRevision::retry_of`) says of `r`, given where its
/// event ids already are and its stream's last revision `current`.
fn retry_of(
    r: &AppendRequest,
    placed: &HashMap<Uuid, Placed>,
    current: Option<u64>,
) -> Result<Option<AppendResult>, DomainError> {
    let at = r.events.iter().map(|e| {
        placed.get(&e.id).map(|p| {
            (
                p.stream.as_str(),
                u64::try_from(p.revision).unwrap_or(0),
                u64::try_from(p.position).unwrap_or(0),
            )
        })
    });
    r.expected.retry_of(r.stream.as_str(), at, current)
}

/// After a connection died during a commit: on a new connection, takes the head row lock (so
/// the old transaction, if its backend still runs, has ended) and looks the batch's event ids
/// up. `None` if that cannot be done either.
async fn find_out(config: &Config, ids: &[Uuid]) -> Option<HashMap<Uuid, Placed>> {
    let mut client = crate::store::connect(config).await.ok()?;
    let tx = client.transaction().await.ok()?;
    tx.query_one("SELECT position FROM annals.head FOR UPDATE", &[])
        .await
        .ok()?;
    let placed = placed_ids(&tx, ids).await.ok()?;
    tx.rollback().await.ok()?;
    Some(placed)
}

/// Answers a batch whose commit outcome was unknown, from what [`find_out`] found.
fn answer_unknown(
    batch: &mut Vec<AppendRequest>,
    outcome: Option<HashMap<Uuid, Placed>>,
    head: &watch::Sender<Position>,
) {
    for r in batch.drain(..) {
        let answer = match &outcome {
            // Only an append's event ids tell whether it happened.
            Some(placed) if r.kind == Kind::Events => match retry_of(&r, placed, None) {
                Ok(Some(result)) => {
                    head.send_if_modified(|h| advance(h, result.position));
                    Ok(result)
                }
                _ => Err(PgStoreError::Unavailable(
                    "the connection was lost during the commit, which did not happen".to_owned(),
                )),
            },
            _ => Err(PgStoreError::Unavailable(
                "the connection was lost during the commit; its outcome is unknown (a retry with the same event ids is idempotent)".to_owned(),
            )),
        };
        let _ = r.reply.send(answer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appenders whose tasks are ready when the writer wakes go into the writer's batch, not
    /// into the one after; and the batch stops at its limit.
    #[tokio::test(flavor = "current_thread")]
    async fn ready_appenders_join_the_batch_and_it_stops_at_its_limit() {
        let (tx, mut rx) = mpsc::channel(64);
        for i in 0..10u32 {
            let tx = tx.clone();
            tokio::spawn(async move { tx.send(i).await });
        }
        // On this one thread the spawned tasks run only when the writer yields.
        let mut batch = Vec::new();
        gather(&mut rx, &mut batch, 100).await;
        assert_eq!(batch, (0..10).collect::<Vec<_>>());

        for i in 0..10u32 {
            let tx = tx.clone();
            tokio::spawn(async move { tx.send(i).await });
        }
        let mut batch = Vec::new();
        gather(&mut rx, &mut batch, 4).await;
        assert_eq!(batch.len(), 4);
        let mut rest = Vec::new();
        gather(&mut rx, &mut rest, 100).await;
        assert_eq!(rest.len(), 6);
    }
}
