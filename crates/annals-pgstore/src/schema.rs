//! The schema, created or migrated in one transaction under an advisory lock, so nodes starting
//! together do not race; a schema newer than this code is refused, never written.

use tokio_postgres::Client;

use crate::error::PgStoreError;

/// The schema version this code writes and reads: the number of [`MIGRATIONS`].
pub const SCHEMA_VERSION: i32 = 3;

/// The key of the transaction-level advisory lock schema changes take (`annals` in ASCII).
const SCHEMA_LOCK_KEY: i64 = 0x616e_6e61_6c73;

/// The steps from an empty database, in order: step `i` takes the schema to version `i + 1`.
const MIGRATIONS: [&str; 3] = [SCHEMA_V1, SCHEMA_V2, SCHEMA_V3];

/// Version 1: the log, the streams, the head, the leases.
const SCHEMA_V1: &str = "
CREATE SCHEMA IF NOT EXISTS annals;
CREATE TABLE annals.meta (
    singleton bool PRIMARY KEY DEFAULT true CHECK (singleton),
    schema_version int NOT NULL
);
CREATE TABLE annals.head (
    singleton bool PRIMARY KEY DEFAULT true CHECK (singleton),
    position bigint NOT NULL CHECK (position >= 0)
);
INSERT INTO annals.head (position) VALUES (0);
CREATE TABLE annals.streams (
    id bigint PRIMARY KEY,
    name text NOT NULL UNIQUE,
    next_revision bigint NOT NULL CHECK (next_revision >= 0),
    tombstoned bool NOT NULL DEFAULT false
);
CREATE TABLE annals.events (
    position bigint PRIMARY KEY CHECK (position >= 1),
    stream_id bigint NOT NULL REFERENCES annals.streams (id),
    revision bigint NOT NULL CHECK (revision >= 0),
    event_id uuid NOT NULL,
    event_type text NOT NULL,
    category text NOT NULL,
    content_type smallint NOT NULL,
    created_ns bigint NOT NULL,
    data bytea NOT NULL,
    metadata bytea NOT NULL,
    UNIQUE (stream_id, revision)
);
CREATE INDEX events_event_id ON annals.events (event_id);
CREATE INDEX events_category ON annals.events (category, position);
CREATE INDEX events_event_type ON annals.events (event_type, position);
CREATE TABLE annals.leases (
    name text PRIMARY KEY,
    holder text,
    token bigint NOT NULL DEFAULT 0,
    expires_at timestamptz
);
";

/// Version 2: checkpoints of the jobs a lease runs (relays, persistent groups), each with the
/// fencing token of the lease holder that wrote it.
const SCHEMA_V2: &str = "
CREATE TABLE annals.checkpoints (
    name text PRIMARY KEY,
    position bigint NOT NULL CHECK (position >= 0),
    token bigint NOT NULL
);
";

/// Version 3: less to do for each inserted event, measured by `annals bench append --store`.
/// - No foreign key from an event to its stream. Its check ran once per inserted event (a query
///   and a row lock on the stream), about a third of a batch's insert time, to prove what the
///   writer already guarantees: a batch inserts a new stream's row in the same transaction as
///   its first events, and stream rows are never deleted. `annals check` looks for events
///   without a stream instead.
/// - No indexes by category and by event type. Nothing reads Postgres by them: every node
///   serves `$ce-` and `$et-` from its own copy of the store, which it follows by position.
///   Each was one more B-tree insert for every event.
const SCHEMA_V3: &str = "
ALTER TABLE annals.events DROP CONSTRAINT IF EXISTS events_stream_id_fkey;
DROP INDEX IF EXISTS annals.events_category;
DROP INDEX IF EXISTS annals.events_event_type;
";

/// Creates the schema if the database has none, migrates an older one step by step, and
/// refuses a newer one.
pub(crate) async fn migrate(client: &mut Client) -> Result<(), PgStoreError> {
    let tx = client.transaction().await.map_err(PgStoreError::from_pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK_KEY])
        .await?;
    let exists: bool = tx
        .query_one("SELECT to_regclass('annals.meta') IS NOT NULL", &[])
        .await?
        .get(0);
    let found = if exists {
        tx.query_opt("SELECT schema_version FROM annals.meta", &[])
            .await?
            .map(|r| r.get::<_, i32>(0))
    } else {
        None
    };
    let from = match found {
        Some(v) if v > SCHEMA_VERSION => {
            return Err(PgStoreError::SchemaTooNew {
                found: v,
                known: SCHEMA_VERSION,
            });
        }
        Some(v) => v,
        None => 0,
    };
    for (i, step) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(from).unwrap_or(0))
    {
        tx.batch_execute(step).await?;
        let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO annals.meta (schema_version) VALUES ($1) \
             ON CONFLICT (singleton) DO UPDATE SET schema_version = EXCLUDED.schema_version",
            &[&version],
        )
        .await?;
        tracing::info!(version, "migrated the Annals schema");
    }
    tx.commit().await?;
    Ok(())
}
