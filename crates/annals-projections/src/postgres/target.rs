//! [`Target`] for [`PostgresTarget`]: each call as one transaction on the worker's connection,
//! and the writing of one partition commit (statements, checkpoint with its token, failures,
//! parked and released events, snapshot).
//!
//! The connection, the statement cache and the retry of a commit with a lost answer are the
//! parent module's and `in_doubt`'s; this file is what each call of the contract does in SQL.

use postgres::Transaction;
use postgres::types::ToSql;

use super::bind::bind_all;
use super::classify::{definition, other, statement_error};
use super::fence;
use super::in_doubt::{InDoubt, next_commit_token};
use super::objects::{
    check_name, delete_generation_rows, drop_table, drop_view, install, lock_projection,
    point_views,
};
use super::{PostgresTarget, StatementCache, exec, prepare_cached, query};
use crate::bookkeeping::{STATE_SERVING, position_from_sql, saturating_i64, state_name};
use crate::definition::json_value;
use crate::sql_text::{does_not_prepare, setup_failed};
use crate::target::{
    Failure, FailureAction, Parked, PartitionCommit, SnapshotRecord, Statement, StoredGeneration,
    StoredProjection, TableRows, Target, TargetError, TargetKind, Value, check_identifier,
    generation_object,
};

impl Target for PostgresTarget {
    fn kind(&self) -> TargetKind {
        TargetKind::Postgres
    }

    fn connect_another(&self) -> Result<Box<dyn Target>, TargetError> {
        Ok(Box::new(PostgresTarget::open(
            &self.url,
            self.fence.clone(),
        )?))
    }

    fn install(&mut self) -> Result<(), TargetError> {
        let fence = self.fence.clone();
        self.in_transaction(|tx, cache| {
            install(tx, cache)?;
            match &fence {
                Some(fence) => fence::claim(tx, cache, fence),
                None => Ok(()),
            }
        })
    }

    fn check(&mut self, setup: &[String], statements: &[String]) -> Result<(), TargetError> {
        let result = (|| {
            let client = self.client()?;
            let mut tx = client.transaction().map_err(other)?;
            for (i, sql) in setup.iter().enumerate() {
                tx.batch_execute(sql)
                    .map_err(|e| definition(&e, || setup_failed(i, sql)))?;
            }
            for (i, sql) in statements.iter().enumerate() {
                // Not cached: these name scratch objects that the rollback removes.
                tx.prepare(sql)
                    .map_err(|e| definition(&e, || does_not_prepare(i, sql)))?;
            }
            tx.rollback().map_err(other)
        })();
        self.settle(result)
    }

    fn create_generation(
        &mut self,
        projection: &str,
        generation: u32,
        setup: &[String],
        serving: bool,
        views: &[String],
    ) -> Result<(), TargetError> {
        let stored = i64::from(generation);
        self.changing_objects(projection, &[], |tx, cache| {
            let exists = query(
                tx,
                cache,
                "SELECT 1 FROM annals_projections WHERE projection = $1 AND generation = $2",
                &[&projection, &stored],
            )?;
            if !exists.is_empty() {
                return Ok(());
            }
            for (i, sql) in setup.iter().enumerate() {
                tx.batch_execute(sql)
                    .map_err(|e| definition(&e, || setup_failed(i, sql)))?;
            }
            exec(
                tx,
                cache,
                "INSERT INTO annals_projections (projection, generation, state) VALUES ($1, $2, $3)",
                &[&projection, &stored, &state_name(serving)],
            )?;
            if serving {
                point_views(tx, views, generation)?;
            }
            Ok(())
        })
    }

    fn load(&mut self, projection: &str) -> Result<StoredProjection, TargetError> {
        let fence = self.fence.clone();
        self.in_transaction(|tx, cache| {
            // Claimed before the checkpoints are read: from here on an older holder commits
            // nothing, so this node resumes after everything it committed.
            if let Some(fence) = &fence {
                fence::claim(tx, cache, fence)?;
            }
            let generations = query(
                tx,
                cache,
                "SELECT generation, state FROM annals_projections WHERE projection = $1 \
                 ORDER BY generation",
                &[&projection],
            )?;
            let checkpoints = query(
                tx,
                cache,
                "SELECT generation, partition, position FROM annals_checkpoints \
                 WHERE projection = $1 ORDER BY generation, partition",
                &[&projection],
            )?;
            let mut out = StoredProjection::default();
            for row in generations {
                let generation: i64 = row.try_get(0).map_err(other)?;
                let state: String = row.try_get(1).map_err(other)?;
                let mut partitions = Vec::new();
                for c in &checkpoints {
                    let g: i64 = c.try_get(0).map_err(other)?;
                    if g == generation {
                        let partition: i64 = c.try_get(1).map_err(other)?;
                        let position: i64 = c.try_get(2).map_err(other)?;
                        partitions.push((
                            u32_from_sql(partition, "partition")?,
                            position_from_sql(position)?,
                        ));
                    }
                }
                out.generations.push(StoredGeneration {
                    generation: u32_from_sql(generation, "generation")?,
                    serving: state == STATE_SERVING,
                    checkpoints: partitions,
                });
            }
            Ok(out)
        })
    }

    fn commit(&mut self, c: &PartitionCommit<'_>) -> Result<(), TargetError> {
        if self.resolve_in_doubt(c)? {
            return Ok(());
        }
        let token = next_commit_token();
        let mut committing = false;
        let fence = self.fence.clone();
        let result = (|| {
            let (client, statements) = self.connection()?;
            let mut tx = client.transaction().map_err(other)?;
            if let Some(fence) = &fence {
                fence::check(&mut tx, statements, fence)?;
            }
            write_commit(&mut tx, statements, c, token)?;
            committing = true;
            tx.commit().map_err(other)
        })();
        if committing && matches!(result, Err(TargetError::Unavailable(_))) {
            // COMMIT was sent and its answer lost: the server may have committed.
            self.in_doubt = Some(InDoubt::of(c, token));
        }
        self.settle(result)
    }

    fn swap(
        &mut self,
        projection: &str,
        from: Option<u32>,
        to: u32,
        views: &[String],
    ) -> Result<(), TargetError> {
        self.changing_objects(projection, views, |tx, cache| {
            let updated = exec(
                tx,
                cache,
                "UPDATE annals_projections SET state = 'serving' \
                 WHERE projection = $1 AND generation = $2",
                &[&projection, &i64::from(to)],
            )?;
            if updated == 0 {
                return Err(TargetError::Other(format!(
                    "projection `{projection}` has no generation {to} to swap to"
                )));
            }
            point_views(tx, views, to)?;
            if let Some(from) = from.filter(|f| *f != to) {
                for view in views {
                    drop_table(tx, &generation_object(view, from))?;
                }
                delete_generation_rows(tx, cache, projection, from)?;
            }
            Ok(())
        })
    }

    fn drop_generation(
        &mut self,
        projection: &str,
        generation: u32,
        tables: &[String],
        drop_views: bool,
    ) -> Result<(), TargetError> {
        self.changing_objects(projection, tables, |tx, cache| {
            if !drop_views {
                let serving = query(
                    tx,
                    cache,
                    "SELECT 1 FROM annals_projections WHERE projection = $1 AND generation = $2 \
                     AND state = 'serving'",
                    &[&projection, &i64::from(generation)],
                )?;
                if !serving.is_empty() {
                    return Err(TargetError::Other(format!(
                        "generation {generation} of `{projection}` is serving; drop it with its \
                         views"
                    )));
                }
            }
            for table in tables {
                if drop_views {
                    drop_view(tx, table)?;
                }
                drop_table(tx, &generation_object(table, generation))?;
            }
            delete_generation_rows(tx, cache, projection, generation)
        })
    }

    fn parked(&mut self, projection: &str, generation: u32) -> Result<Vec<Parked>, TargetError> {
        self.in_transaction(|tx, cache| {
            let rows = query(
                tx,
                cache,
                "SELECT position, stream, revision, reason FROM annals_parked \
                 WHERE projection = $1 AND generation = $2 ORDER BY position",
                &[&projection, &i64::from(generation)],
            )?;
            rows.iter()
                .map(|row| {
                    Ok(Parked {
                        position: position_from_sql(row.try_get(0).map_err(other)?)?,
                        stream: row.try_get(1).map_err(other)?,
                        revision: u64_from_sql(row.try_get(2).map_err(other)?, "revision")?,
                        reason: row.try_get(3).map_err(other)?,
                    })
                })
                .collect()
        })
    }

    fn failures(
        &mut self,
        projection: &str,
        generation: u32,
        limit: usize,
    ) -> Result<Vec<Failure>, TargetError> {
        let limit = saturating_i64(limit);
        self.in_transaction(|tx, cache| {
            let rows = query(
                tx,
                cache,
                "SELECT position, stream, revision, event_type, message, action, recorded_at \
                 FROM annals_failures WHERE projection = $1 AND generation = $2 \
                 ORDER BY id DESC LIMIT $3",
                &[&projection, &i64::from(generation), &limit],
            )?;
            rows.iter()
                .map(|row| {
                    let action: String = row.try_get(5).map_err(other)?;
                    Ok(Failure {
                        position: position_from_sql(row.try_get(0).map_err(other)?)?,
                        stream: row.try_get(1).map_err(other)?,
                        revision: u64_from_sql(row.try_get(2).map_err(other)?, "revision")?,
                        event_type: row.try_get(3).map_err(other)?,
                        message: row.try_get(4).map_err(other)?,
                        action: FailureAction::parse(&action)?,
                        recorded_at_ms: row.try_get(6).map_err(other)?,
                    })
                })
                .collect()
        })
    }

    fn save_snapshot(&mut self, snapshot: &SnapshotRecord) -> Result<(), TargetError> {
        self.in_write_transaction(|tx, cache| save_snapshot_in(tx, cache, snapshot))
    }

    fn read_table(
        &mut self,
        view: &str,
        limit: usize,
        offset: usize,
    ) -> Result<TableRows, TargetError> {
        check_identifier(view)?;
        let limit = saturating_i64(limit);
        let offset = saturating_i64(offset);
        let inner = format!("SELECT * FROM {view} ORDER BY 1 LIMIT $1 OFFSET $2");
        self.in_transaction(|tx, _| {
            let reading = || format!("reading {view}");
            let columns: Vec<String> = tx
                .prepare(&inner)
                .map_err(|e| definition(&e, reading))?
                .columns()
                .iter()
                .map(|c| c.name().to_owned())
                .collect();
            // Every column type comes back as JSON, converted by the server.
            let rows = tx
                .query(
                    &format!("SELECT row_to_json(r)::text FROM ({inner}) r"),
                    &[&limit, &offset],
                )
                .map_err(|e| definition(&e, reading))?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let text: String = row.try_get(0).map_err(other)?;
                let object: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(&text)
                        .map_err(|e| TargetError::Other(format!("row of {view}: {e}")))?;
                out.push(
                    columns
                        .iter()
                        .map(|c| object.get(c).map_or(Value::Null, json_value))
                        .collect(),
                );
            }
            Ok(TableRows { columns, rows: out })
        })
    }

    fn load_snapshot(&mut self, key: &str) -> Result<Option<SnapshotRecord>, TargetError> {
        self.in_transaction(|tx, cache| {
            let rows = query(
                tx,
                cache,
                "SELECT position, state FROM annals_snapshots WHERE key = $1",
                &[&key],
            )?;
            rows.first()
                .map(|row| {
                    Ok(SnapshotRecord {
                        key: key.to_owned(),
                        position: position_from_sql(row.try_get(0).map_err(other)?)?,
                        state: row.try_get(1).map_err(other)?,
                    })
                })
                .transpose()
        })
    }
}

impl PostgresTarget {
    /// Runs `work` in one write transaction (fenced, when the target has a fence) under
    /// `projection`'s advisory lock, once `projection` and `names` are known to be valid object
    /// names. The statement cache is emptied first: a statement prepared against an object this
    /// replaces must be prepared anew.
    fn changing_objects<T>(
        &mut self,
        projection: &str,
        names: &[String],
        work: impl FnOnce(&mut Transaction<'_>, &mut StatementCache) -> Result<T, TargetError>,
    ) -> Result<T, TargetError> {
        check_name(projection)?;
        for name in names {
            check_name(name)?;
        }
        self.statements.clear();
        self.in_write_transaction(|tx, cache| {
            lock_projection(tx, cache, projection)?;
            work(tx, cache)
        })
    }
}

/// Writes one partition commit into `tx` (not yet committed); `token` marks the checkpoint row
/// so a commit whose answer was lost can be recognised.
fn write_commit(
    tx: &mut Transaction<'_>,
    cache: &mut StatementCache,
    c: &PartitionCommit<'_>,
    token: i64,
) -> Result<(), TargetError> {
    let generation = i64::from(c.generation);
    let partition = i64::from(c.partition);
    let checkpoint = to_i64(c.checkpoint.0, "checkpoint")?;
    for (i, statement) in c.statements.iter().enumerate() {
        run_statement(tx, cache, statement, i)?;
    }
    exec(
        tx,
        cache,
        "INSERT INTO annals_checkpoints (projection, generation, partition, position, \
         commit_token) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (projection, generation, partition) \
         DO UPDATE SET position = EXCLUDED.position, commit_token = EXCLUDED.commit_token",
        &[&c.projection, &generation, &partition, &checkpoint, &token],
    )?;
    for f in c.failures {
        let position = to_i64(f.position.0, "position")?;
        let revision = saturating_i64(f.revision);
        exec(
            tx,
            cache,
            "INSERT INTO annals_failures (projection, generation, position, stream, \
             revision, event_type, message, action, recorded_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &c.projection,
                &generation,
                &position,
                &f.stream,
                &revision,
                &f.event_type,
                &f.message,
                &f.action.as_str(),
                &f.recorded_at_ms,
            ],
        )?;
    }
    for p in c.parked {
        let position = to_i64(p.position.0, "position")?;
        let revision = saturating_i64(p.revision);
        exec(
            tx,
            cache,
            "INSERT INTO annals_parked (projection, generation, position, stream, \
             revision, reason) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (projection, generation, position) \
             DO UPDATE SET stream = EXCLUDED.stream, revision = EXCLUDED.revision, \
             reason = EXCLUDED.reason",
            &[
                &c.projection,
                &generation,
                &position,
                &p.stream,
                &revision,
                &p.reason,
            ],
        )?;
    }
    if !c.released.is_empty() {
        let released = c
            .released
            .iter()
            .map(|p| to_i64(p.0, "position"))
            .collect::<Result<Vec<i64>, _>>()?;
        exec(
            tx,
            cache,
            "DELETE FROM annals_parked WHERE projection = $1 AND generation = $2 \
             AND position = ANY($3)",
            &[&c.projection, &generation, &released],
        )?;
    }
    if let Some(snapshot) = c.snapshot {
        save_snapshot_in(tx, cache, snapshot)?;
    }
    Ok(())
}

/// Saves `snapshot` in `tx`, replacing the key's previous one.
fn save_snapshot_in(
    tx: &mut Transaction<'_>,
    cache: &mut StatementCache,
    snapshot: &SnapshotRecord,
) -> Result<(), TargetError> {
    let position = to_i64(snapshot.position.0, "position")?;
    exec(
        tx,
        cache,
        "INSERT INTO annals_snapshots (key, position, state) VALUES ($1, $2, $3) \
         ON CONFLICT (key) DO UPDATE SET position = EXCLUDED.position, state = EXCLUDED.state",
        &[&snapshot.key, &position, &snapshot.state],
    )?;
    Ok(())
}

/// Runs one of the batch's statements (number `index`) with its values bound for the types the
/// server inferred.
fn run_statement(
    tx: &mut Transaction<'_>,
    cache: &mut StatementCache,
    statement: &Statement,
    index: usize,
) -> Result<(), TargetError> {
    let prepared = prepare_cached(tx, cache, &statement.sql)
        .map_err(|e| statement_error(&e, index, &statement.sql))?;
    let bound = bind_all(statement, prepared.params(), index)?;
    let params: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|b| b as &(dyn ToSql + Sync)).collect();
    tx.execute(&prepared, &params)
        .map_err(|e| statement_error(&e, index, &statement.sql))?;
    Ok(())
}

/// A bookkeeping number as `BIGINT`; one past `i64::MAX` cannot be stored faithfully.
fn to_i64(n: u64, what: &str) -> Result<i64, TargetError> {
    i64::try_from(n).map_err(|_| TargetError::Other(format!("{what} {n} is out of range")))
}

/// A stored revision; a negative one is a damaged bookkeeping row.
fn u64_from_sql(n: i64, what: &str) -> Result<u64, TargetError> {
    u64::try_from(n).map_err(|_| TargetError::Other(format!("negative {what} {n} in bookkeeping")))
}

/// A stored partition or generation number.
fn u32_from_sql(n: i64, what: &str) -> Result<u32, TargetError> {
    u32::try_from(n)
        .map_err(|_| TargetError::Other(format!("{what} {n} out of range in bookkeeping")))
}
