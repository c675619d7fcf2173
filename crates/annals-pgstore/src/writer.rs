//! The node's single writer: appends queue to it, and it commits everything queued as one
//! transaction that first takes the head row lock (`SELECT … FROM annals.head FOR UPDATE`).
//! Every commit of every node takes that lock, so commits are serialised and each batch's
//! positions follow exactly the last committed one; Postgres makes a transaction visible before
//! it releases its locks, so a later batch commits only once an earlier one is visible, and no
//! reader can ever see a gap. Expected revisions and idempotency are checked inside the same
//! transaction; an append that fails a check is left out of the batch alone.

use std::collections::HashMap;

use annals_core::{
    AppendResult, DomainError, ExpectedRevision, NewEvent, Position, Revision, StreamName,
    category_of,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::{Client, Config, Statement, Transaction};
use uuid::Uuid;

use crate::error::PgStoreError;

/// Most appends one transaction commits.
pub const PG_GROUP_COMMIT_APPENDS_MAX: usize = 1_024;

/// One append waiting for the writer.
pub(crate) struct AppendRequest {
    pub(crate) stream: StreamName,
    pub(crate) expected: ExpectedRevision,
    /// The events; for a tombstone, its one `$streamDeleted` event.
    pub(crate) events: Vec<NewEvent>,
    /// Deletes the stream for good: its one event is written at [`TOMBSTONE_REVISION`].
    pub(crate) tombstone: bool,
    pub(crate) reply: oneshot::Sender<Result<AppendResult, PgStoreError>>,
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
    insert_streams: Statement,
    update_streams: Statement,
    insert_events: Statement,
    set_head: Statement,
    notify: Statement,
}

impl Statements {
    pub(crate) async fn prepare(c: &Client) -> Result<Self, tokio_postgres::Error> {
        let (lock_head, streams, placed, next_stream_id) = futures::try_join!(
            c.prepare("SELECT position FROM annals.head FOR UPDATE"),
            c.prepare(
                "SELECT name, id, next_revision, tombstoned FROM annals.streams \
                 WHERE name = ANY($1) FOR UPDATE",
            ),
            c.prepare(PLACED_SQL),
            c.prepare("SELECT coalesce(max(id), 0) + 1 FROM annals.streams"),
        )?;
        let (insert_streams, update_streams, insert_events, set_head, notify) = futures::try_join!(
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
        )?;
        Ok(Self {
            lock_head,
            streams,
            placed,
            next_stream_id,
            insert_streams,
            update_streams,
            insert_events,
            set_head,
            notify,
        })
    }
}

/// A statement parameter.
pub(crate) type Param = dyn tokio_postgres::types::ToSql + Sync;

/// Where event ids already are.
const PLACED_SQL: &str = "SELECT e.event_id, s.name, e.revision, e.position FROM annals.events e \
                          JOIN annals.streams s ON s.id = e.stream_id WHERE e.event_id = ANY($1)";

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
        while batch.len() < PG_GROUP_COMMIT_APPENDS_MAX {
            match requests.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
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
        let ids: Vec<Uuid> = batch
            .iter()
            .flat_map(|r| r.events.iter().map(|e| e.id))
            .collect();
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
                let outcome = find_out(&config, &ids).await;
                client = None;
                answer_unknown(&mut batch, outcome, &head);
            }
            Err(e) => {
                tracing::warn!(error = %e, "a batch failed to commit; nothing of it was written");
                let text = e.to_string();
                for r in batch.drain(..) {
                    let _ = r.reply.send(Err(PgStoreError::Unavailable(format!(
                        "the commit failed: {text}"
                    ))));
                }
            }
        }
    }
}

/// A writer's connection with its statements prepared.
pub(crate) async fn connect_prepared(
    config: &Config,
) -> Result<(Client, Statements), PgStoreError> {
    let client = crate::store::connect(config).await?;
    let statements = Statements::prepare(&client)
        .await
        .map_err(PgStoreError::from_pg)?;
    Ok((client, statements))
}

fn advance(head: &mut Position, to: Position) -> bool {
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
    let tx = client.transaction().await?;
    let names: Vec<String> = {
        let mut names: Vec<String> = batch.iter().map(|r| r.stream.to_string()).collect();
        names.sort_unstable();
        names.dedup();
        names
    };
    let ids: Vec<Uuid> = batch
        .iter()
        .flat_map(|r| r.events.iter().map(|e| e.id))
        .collect();
    // One round trip: the server runs them in order, the head lock first.
    let by_name: [&Param; 1] = [&names];
    let by_id: [&Param; 1] = [&ids];
    let (head, stream_rows, placed_rows, next_id) = futures::try_join!(
        tx.query_one(&st.lock_head, &[]),
        tx.query(&st.streams, &by_name),
        tx.query(&st.placed, &by_id),
        tx.query_one(&st.next_stream_id, &[]),
    )?;
    let head: i64 = head.get(0);
    let mut streams: HashMap<String, StreamRow> = HashMap::new();
    for row in stream_rows {
        streams.insert(
            row.get(0),
            StreamRow {
                id: row.get(1),
                next_revision: row.get(2),
                tombstoned: row.get(3),
                new: false,
            },
        );
    }
    let mut placed = placed_from(placed_rows);
    let mut next_stream_id: i64 = next_id.get(0);
    let mut cols = Columns::default();
    let created = annals_core::Timestamp::now().0;
    let mut answers = Vec::with_capacity(batch.len());
    let mut position = head;
    for r in batch.iter() {
        let name = r.stream.as_str();
        if let Some(result) = idempotent(r, &placed).filter(|_| !r.tombstone) {
            answers.push(Ok(result));
            continue;
        }
        let row = *streams.entry(name.to_owned()).or_insert_with(|| {
            let id = next_stream_id;
            next_stream_id += 1;
            StreamRow {
                id,
                next_revision: 0,
                tombstoned: false,
                new: true,
            }
        });
        if row.tombstoned {
            answers.push(Err(DomainError::StreamDeleted {
                stream: name.to_owned(),
            }
            .into()));
            continue;
        }
        let current = u64::try_from(row.next_revision)
            .ok()
            .and_then(|n| n.checked_sub(1));
        if !r.expected.is_satisfied_by(current) {
            answers.push(Err(DomainError::WrongExpectedRevision {
                stream: name.to_owned(),
                expected: r.expected,
                actual: current,
            }
            .into()));
            continue;
        }
        if r.tombstone {
            if let Some(e) = r.events.first() {
                position += 1;
                cols.push(position, row.id, TOMBSTONE_REVISION, name, e, created);
            }
            if let Some(s) = streams.get_mut(name) {
                s.tombstoned = true;
            }
            answers.push(Ok(AppendResult {
                next_revision: Revision(u64::try_from(row.next_revision - 1).unwrap_or(0)),
                position: Position(u64::try_from(position).unwrap_or(0)),
            }));
            continue;
        }
        let mut revision = row.next_revision;
        for e in &r.events {
            position += 1;
            cols.push(position, row.id, revision, name, e, created);
            placed.insert(
                e.id,
                Placed {
                    stream: name.to_owned(),
                    revision,
                    position,
                },
            );
            revision += 1;
        }
        if let Some(s) = streams.get_mut(name) {
            s.next_revision = revision;
        }
        answers.push(Ok(AppendResult {
            next_revision: Revision(u64::try_from(revision - 1).unwrap_or(0)),
            position: Position(u64::try_from(position).unwrap_or(0)),
        }));
    }
    if cols.position.is_empty() {
        tx.rollback().await?;
        return Ok((answers, Position(u64::try_from(head).unwrap_or(0))));
    }
    write(&tx, st, &streams, &cols, position).await?;
    tx.commit().await?;
    Ok((answers, Position(u64::try_from(position).unwrap_or(0))))
}

/// Inserts the batch's rows, moves the streams and the head, and notifies every node, in one
/// round trip.
pub(crate) async fn write(
    tx: &Transaction<'_>,
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

/// The rows of [`PLACED_SQL`] by event id.
fn placed_from(rows: Vec<tokio_postgres::Row>) -> HashMap<Uuid, Placed> {
    rows.into_iter()
        .map(|row| {
            (
                row.get(0),
                Placed {
                    stream: row.get(1),
                    revision: row.get(2),
                    position: row.get(3),
                },
            )
        })
        .collect()
}

/// The original answer to `r` if all its events are already in its stream at consecutive
/// revisions (a retry): the append is idempotent and writes nothing.
fn idempotent(r: &AppendRequest, placed: &HashMap<Uuid, Placed>) -> Option<AppendResult> {
    let mut last: Option<&Placed> = None;
    for e in &r.events {
        let p = placed.get(&e.id)?;
        if p.stream != r.stream.as_str() || last.is_some_and(|l| l.revision + 1 != p.revision) {
            return None;
        }
        last = Some(p);
    }
    let last = last?;
    Some(AppendResult {
        next_revision: Revision(u64::try_from(last.revision).ok()?),
        position: Position(u64::try_from(last.position).ok()?),
    })
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
            Some(placed) => match idempotent(&r, placed) {
                Some(result) => {
                    head.send_if_modified(|h| advance(h, result.position));
                    Ok(result)
                }
                None => Err(PgStoreError::Unavailable(
                    "the connection was lost during the commit, which did not happen".to_owned(),
                )),
            },
            None => Err(PgStoreError::Unavailable(
                "the connection was lost during the commit; its outcome is unknown (a retry with the same event ids is idempotent)".to_owned(),
            )),
        };
        let _ = r.reply.send(answer);
    }
}
