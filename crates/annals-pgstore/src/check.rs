//! `annals check` of a store in Postgres: positions dense from 1 up to the head row, every
//! stream's revisions contiguous from 0 up to what its row says comes next, every event in a
//! stream that has a row, each event's category its stream's, the schema at this code's version
//! with every index in place.

use crate::error::PgStoreError;
use crate::schema::SCHEMA_VERSION;
use crate::store::PgStore;
use crate::writer::TOMBSTONE_REVISION;

/// Problems listed at most; the counts still cover all.
const PG_CHECK_PROBLEMS_MAX: i64 = 100;

/// The indexes the writer's look-ups rely on, besides the tables' keys.
const INDEXES: [&str; 1] = ["events_event_id"];

/// What a check found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PgCheckReport {
    pub events: u64,
    pub streams: u64,
    pub head: u64,
    /// Empty when the store is healthy.
    pub problems: Vec<String>,
}

impl PgStore {
    /// Verifies the store (see the module's documentation). Reads only; one snapshot
    /// (`REPEATABLE READ`), so writers going on meanwhile do not show as problems.
    pub async fn check(&self) -> Result<PgCheckReport, PgStoreError> {
        let mut jobs = self.connect_for_write().await?;
        check_with(&mut jobs.0).await
    }
}

/// Verifies the store in the database at `url` without opening it as a node: no schema is
/// created or migrated, nothing is written.
pub async fn check_url(url: &str) -> Result<PgCheckReport, PgStoreError> {
    let config = <tokio_postgres::Config as std::str::FromStr>::from_str(url)
        .map_err(|e| PgStoreError::Input(format!("bad Postgres connection string: {e}")))?;
    let mut client = crate::store::connect(&config).await?;
    let present: bool = client
        .query_one("SELECT to_regclass('annals.meta') IS NOT NULL", &[])
        .await
        .map_err(PgStoreError::from_pg)?
        .get(0);
    if !present {
        return Err(PgStoreError::Input(
            "the database holds no Annals store (no schema annals)".to_owned(),
        ));
    }
    check_with(&mut client).await
}

async fn check_with(client: &mut tokio_postgres::Client) -> Result<PgCheckReport, PgStoreError> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(PgStoreError::from_pg)?;
    // The writer's connection plans every statement as an index step (`writer.rs`); a check
    // reads whole tables, which is what a scan is for.
    tx.batch_execute("SET LOCAL enable_seqscan TO DEFAULT; SET LOCAL jit TO DEFAULT")
        .await?;
    let mut report = PgCheckReport::default();
    let problems = &mut report.problems;

    let version: i32 = tx
        .query_one("SELECT schema_version FROM annals.meta", &[])
        .await?
        .get(0);
    if version != SCHEMA_VERSION {
        problems.push(format!(
            "schema version {version}, this node knows {SCHEMA_VERSION}"
        ));
    }
    let present: Vec<String> = tx
        .query(
            "SELECT indexname::text FROM pg_indexes WHERE schemaname = 'annals'",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for index in INDEXES {
        if !present.iter().any(|p| p == index) {
            problems.push(format!("index {index} is missing"));
        }
    }

    let head: i64 = tx
        .query_one("SELECT position FROM annals.head", &[])
        .await?
        .get(0);
    let row = tx
        .query_one(
            "SELECT count(*), coalesce(max(position), 0) FROM annals.events",
            &[],
        )
        .await?;
    let (count, max): (i64, i64) = (row.get(0), row.get(1));
    report.events = u64::try_from(count).unwrap_or(0);
    report.head = u64::try_from(head).unwrap_or(0);
    if max != head {
        problems.push(format!(
            "the head row says {head}, the last event is at {max}"
        ));
    }
    if count != max {
        problems.push(format!(
            "positions are not dense: {count} events up to position {max}"
        ));
        for row in tx
            .query(
                "SELECT e.position + 1 FROM annals.events e \
                 WHERE e.position < $1 AND NOT EXISTS \
                   (SELECT 1 FROM annals.events n WHERE n.position = e.position + 1) \
                 UNION ALL SELECT 1 WHERE $1 > 0 AND NOT EXISTS \
                   (SELECT 1 FROM annals.events WHERE position = 1) \
                 ORDER BY 1 LIMIT $2",
                &[&max, &PG_CHECK_PROBLEMS_MAX],
            )
            .await?
        {
            problems.push(format!("no event at position {}", row.get::<_, i64>(0)));
        }
    }

    report.streams = u64::try_from(
        tx.query_one("SELECT count(*) FROM annals.streams", &[])
            .await?
            .get::<_, i64>(0),
    )
    .unwrap_or(0);
    for row in tx
        .query(
            "SELECT s.name, s.next_revision, count(e.position), \
               coalesce(max(e.revision) + 1, 0) \
             FROM annals.streams s LEFT JOIN annals.events e \
               ON e.stream_id = s.id AND e.revision < $2 \
             GROUP BY s.id, s.name, s.next_revision \
             HAVING count(e.position) <> coalesce(max(e.revision) + 1, 0) \
               OR s.next_revision <> coalesce(max(e.revision) + 1, 0) \
             ORDER BY s.name LIMIT $1",
            &[&PG_CHECK_PROBLEMS_MAX, &TOMBSTONE_REVISION],
        )
        .await?
    {
        let (name, next, events, upto): (String, i64, i64, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        problems.push(format!(
            "stream {name}: {events} events up to revision {}, its row says {next} come next",
            upto - 1
        ));
    }

    let orphans: i64 = tx
        .query_one(
            "SELECT count(*) FROM annals.events e \
             WHERE NOT EXISTS (SELECT 1 FROM annals.streams s WHERE s.id = e.stream_id)",
            &[],
        )
        .await?
        .get(0);
    if orphans > 0 {
        problems.push(format!("{orphans} events belong to no stream"));
    }

    let miscategorised: i64 = tx
        .query_one(
            "SELECT count(*) FROM annals.events e JOIN annals.streams s ON s.id = e.stream_id \
             WHERE e.category <> split_part(s.name, '-', 1)",
            &[],
        )
        .await?
        .get(0);
    if miscategorised > 0 {
        problems.push(format!(
            "{miscategorised} events carry a category other than their stream's"
        ));
    }
    tx.rollback().await?;
    Ok(report)
}
