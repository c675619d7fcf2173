//! Reads by page: `$all` by position, a stream by revision, each a range scan of an index.

use annals_core::{ContentType, EventRecord, EventType, Position, Revision, StreamName, Timestamp};
use bytes::Bytes;
use tokio_postgres::{Client, Row};

use crate::error::PgStoreError;

/// The columns and join every read selects, in the order [`record`] takes them.
macro_rules! select_events {
    ($rest:literal) => {
        concat!(
            "SELECT e.position, s.name, e.revision, e.event_id, e.event_type, e.content_type, ",
            "e.created_ns, e.data, e.metadata ",
            "FROM annals.events e JOIN annals.streams s ON s.id = e.stream_id ",
            $rest
        )
    };
}

const READ_ALL_SQL: &str = select_events!("WHERE e.position >= $1 ORDER BY e.position LIMIT $2");
const READ_STREAM_SQL: &str =
    select_events!("WHERE s.name = $1 AND e.revision >= $2 ORDER BY e.revision LIMIT $3");

pub(crate) async fn read_all(
    client: &Client,
    from: Position,
    limit: usize,
) -> Result<Vec<EventRecord>, PgStoreError> {
    let from = i64::try_from(from.0).unwrap_or(i64::MAX);
    records(client, READ_ALL_SQL, &[&from, &bigint(limit)]).await
}

pub(crate) async fn read_stream(
    client: &Client,
    stream: &StreamName,
    from: Revision,
    limit: usize,
) -> Result<Vec<EventRecord>, PgStoreError> {
    let from = i64::try_from(from.0).unwrap_or(i64::MAX);
    records(
        client,
        READ_STREAM_SQL,
        &[&stream.as_str(), &from, &bigint(limit)],
    )
    .await
}

fn bigint(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

async fn records(
    client: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<EventRecord>, PgStoreError> {
    let rows = client
        .query(sql, params)
        .await
        .map_err(PgStoreError::from_pg)?;
    rows.iter().map(record).collect()
}

fn record(row: &Row) -> Result<EventRecord, PgStoreError> {
    let corrupt = |what: String| PgStoreError::Corrupt(what);
    let position: i64 = row.try_get(0)?;
    let name: &str = row.try_get(1)?;
    let revision: i64 = row.try_get(2)?;
    let event_type: &str = row.try_get(4)?;
    let content_type: i16 = row.try_get(5)?;
    let data: Vec<u8> = row.try_get(7)?;
    let metadata: Vec<u8> = row.try_get(8)?;
    Ok(EventRecord {
        id: row.try_get(3)?,
        stream: StreamName::new(name).map_err(|e| corrupt(format!("stream name {name:?}: {e}")))?,
        revision: Revision(
            u64::try_from(revision).map_err(|_| corrupt(format!("revision {revision}")))?,
        ),
        position: Position(
            u64::try_from(position).map_err(|_| corrupt(format!("position {position}")))?,
        ),
        event_type: EventType::new(event_type)
            .map_err(|e| corrupt(format!("event type {event_type:?}: {e}")))?,
        content_type: u8::try_from(content_type)
            .ok()
            .and_then(ContentType::from_code)
            .ok_or_else(|| corrupt(format!("content type {content_type}")))?,
        created: Timestamp(row.try_get(6)?),
        data: Bytes::from(data),
        metadata: Bytes::from(metadata),
    })
}
