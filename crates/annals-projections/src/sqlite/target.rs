//! [`Target`] for [`SqliteTarget`]: each call that changes something as one `BEGIN IMMEDIATE`
//! transaction, and reads straight off the connection.
//!
//! Opening the file and binding parameters are the parent module's and `bind`'s; this file is
//! what each call of the contract does in SQL.

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::SqliteTarget;
use super::bind::run_statement;
use super::classify::{classify_other, definition};
use super::objects::{INSTALL, delete_generation_rows, drop_table, drop_view, point_views};
use crate::bookkeeping::{STATE_SERVING, position_from_sql, saturating_i64, state_name};
use crate::sql_text::{does_not_prepare, setup_failed};
use crate::target::{
    Failure, FailureAction, Parked, PartitionCommit, SnapshotRecord, StoredGeneration,
    StoredProjection, TableRows, Target, TargetError, TargetKind, Value, check_identifier,
    generation_object,
};

impl Target for SqliteTarget {
    fn kind(&self) -> TargetKind {
        TargetKind::Sqlite
    }

    fn connect_another(&self) -> Result<Box<dyn Target>, TargetError> {
        Ok(Box::new(SqliteTarget::open(&self.path)?))
    }

    fn install(&mut self) -> Result<(), TargetError> {
        self.conn.execute_batch(INSTALL).map_err(classify_other)
    }

    fn check(&mut self, setup: &[String], statements: &[String]) -> Result<(), TargetError> {
        let tx = self.begin()?;
        for (i, sql) in setup.iter().enumerate() {
            tx.execute_batch(sql).map_err(|e| match definition(e) {
                TargetError::Definition(m) => {
                    TargetError::Definition(format!("{}: {m}", setup_failed(i, sql)))
                }
                other => other,
            })?;
        }
        for (i, sql) in statements.iter().enumerate() {
            tx.prepare(sql).map_err(|e| match definition(e) {
                TargetError::Definition(m) => {
                    TargetError::Definition(format!("{}: {m}", does_not_prepare(i, sql)))
                }
                other => other,
            })?;
        }
        tx.rollback().map_err(classify_other)
    }

    fn create_generation(
        &mut self,
        projection: &str,
        generation: u32,
        setup: &[String],
        serving: bool,
        views: &[String],
    ) -> Result<(), TargetError> {
        let tx = self.begin()?;
        let exists: Option<i64> = tx
            .query_row(
                "SELECT 1 FROM annals_projections WHERE projection = ?1 AND generation = ?2",
                params![projection, generation],
                |r| r.get(0),
            )
            .optional()
            .map_err(classify_other)?;
        if exists.is_some() {
            return tx.commit().map_err(classify_other);
        }
        for (i, sql) in setup.iter().enumerate() {
            tx.execute_batch(sql).map_err(|e| match definition(e) {
                TargetError::Definition(m) => {
                    TargetError::Definition(format!("setup statement {} failed: {m}", i + 1))
                }
                other => other,
            })?;
        }
        tx.execute(
            "INSERT INTO annals_projections (projection, generation, state) VALUES (?1, ?2, ?3)",
            params![projection, generation, state_name(serving)],
        )
        .map_err(classify_other)?;
        if serving {
            point_views(&tx, views, generation)?;
        }
        tx.commit().map_err(classify_other)
    }

    fn load(&mut self, projection: &str) -> Result<StoredProjection, TargetError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT generation, state FROM annals_projections WHERE projection = ?1 \
                 ORDER BY generation",
            )
            .map_err(classify_other)?;
        let gens = stmt
            .query_map(params![projection], |r| {
                Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(classify_other)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(classify_other)?;
        drop(stmt);
        let mut out = StoredProjection::default();
        for (generation, state) in gens {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT partition, position FROM annals_checkpoints \
                     WHERE projection = ?1 AND generation = ?2 ORDER BY partition",
                )
                .map_err(classify_other)?;
            let rows = stmt
                .query_map(params![projection, generation], |r| {
                    Ok((r.get::<_, u32>(0)?, r.get::<_, i64>(1)?))
                })
                .map_err(classify_other)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(classify_other)?;
            let checkpoints = rows
                .into_iter()
                .map(|(p, pos)| Ok((p, position_from_sql(pos)?)))
                .collect::<Result<Vec<_>, TargetError>>()?;
            out.generations.push(StoredGeneration {
                generation,
                serving: state == STATE_SERVING,
                checkpoints,
            });
        }
        Ok(out)
    }

    fn commit(&mut self, c: &PartitionCommit<'_>) -> Result<(), TargetError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(classify_other)?;
        for (i, statement) in c.statements.iter().enumerate() {
            run_statement(&tx, &mut self.slots, &statement.sql, &statement.params, i)?;
        }
        tx.prepare_cached(
            "INSERT INTO annals_checkpoints (projection, generation, partition, position) \
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (projection, generation, partition) \
             DO UPDATE SET position = excluded.position",
        )
        .and_then(|mut s| {
            s.execute(params![
                c.projection,
                c.generation,
                c.partition,
                saturating_i64(c.checkpoint.0)
            ])
        })
        .map_err(classify_other)?;
        for f in c.failures {
            tx.prepare_cached(
                "INSERT INTO annals_failures (projection, generation, position, stream, \
                 revision, event_type, message, action, recorded_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    c.projection,
                    c.generation,
                    saturating_i64(f.position.0),
                    f.stream,
                    saturating_i64(f.revision),
                    f.event_type,
                    f.message,
                    f.action.as_str(),
                    f.recorded_at_ms
                ])
            })
            .map_err(classify_other)?;
        }
        for p in c.parked {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO annals_parked (projection, generation, position, stream, \
                 revision, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    c.projection,
                    c.generation,
                    saturating_i64(p.position.0),
                    p.stream,
                    saturating_i64(p.revision),
                    p.reason
                ])
            })
            .map_err(classify_other)?;
        }
        for p in c.released {
            tx.prepare_cached(
                "DELETE FROM annals_parked WHERE projection = ?1 AND generation = ?2 \
                 AND position = ?3",
            )
            .and_then(|mut s| s.execute(params![c.projection, c.generation, saturating_i64(p.0)]))
            .map_err(classify_other)?;
        }
        if let Some(snapshot) = c.snapshot {
            upsert_snapshot(&tx, snapshot)?;
        }
        tx.commit().map_err(classify_other)
    }

    fn swap(
        &mut self,
        projection: &str,
        from: Option<u32>,
        to: u32,
        views: &[String],
    ) -> Result<(), TargetError> {
        let tx = self.begin()?;
        point_views(&tx, views, to)?;
        tx.execute(
            "UPDATE annals_projections SET state = 'serving' WHERE projection = ?1 \
             AND generation = ?2",
            params![projection, to],
        )
        .map_err(classify_other)?;
        if let Some(from) = from.filter(|f| *f != to) {
            for table in views {
                drop_table(&tx, &generation_object(table, from))?;
            }
            delete_generation_rows(&tx, projection, from)?;
        }
        tx.commit().map_err(classify_other)
    }

    fn drop_generation(
        &mut self,
        projection: &str,
        generation: u32,
        tables: &[String],
        drop_views: bool,
    ) -> Result<(), TargetError> {
        let tx = self.begin()?;
        for table in tables {
            if drop_views {
                drop_view(&tx, table)?;
            }
            drop_table(&tx, &generation_object(table, generation))?;
        }
        delete_generation_rows(&tx, projection, generation)?;
        tx.commit().map_err(classify_other)
    }

    fn parked(&mut self, projection: &str, generation: u32) -> Result<Vec<Parked>, TargetError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT position, stream, revision, reason FROM annals_parked \
                 WHERE projection = ?1 AND generation = ?2 ORDER BY position",
            )
            .map_err(classify_other)?;
        let rows = stmt
            .query_map(params![projection, generation], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })
            .map_err(classify_other)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(classify_other)?;
        rows.into_iter()
            .map(|(pos, stream, revision, reason)| {
                Ok(Parked {
                    position: position_from_sql(pos)?,
                    stream,
                    revision: u64::try_from(revision).unwrap_or(0),
                    reason,
                })
            })
            .collect()
    }

    fn failures(
        &mut self,
        projection: &str,
        generation: u32,
        limit: usize,
    ) -> Result<Vec<Failure>, TargetError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT position, stream, revision, event_type, message, action, recorded_at \
                 FROM annals_failures WHERE projection = ?1 AND generation = ?2 \
                 ORDER BY recorded_at DESC, rowid DESC LIMIT ?3",
            )
            .map_err(classify_other)?;
        let limit = saturating_i64(limit);
        let rows = stmt
            .query_map(params![projection, generation, limit], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            })
            .map_err(classify_other)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(classify_other)?;
        rows.into_iter()
            .map(|(pos, stream, revision, event_type, message, action, at)| {
                let action = FailureAction::parse(&action)?;
                Ok(Failure {
                    position: position_from_sql(pos)?,
                    stream,
                    revision: u64::try_from(revision).unwrap_or(0),
                    event_type,
                    message,
                    action,
                    recorded_at_ms: at,
                })
            })
            .collect()
    }

    fn save_snapshot(&mut self, snapshot: &SnapshotRecord) -> Result<(), TargetError> {
        let tx = self.begin()?;
        upsert_snapshot(&tx, snapshot)?;
        tx.commit().map_err(classify_other)
    }

    fn read_table(
        &mut self,
        view: &str,
        limit: usize,
        offset: usize,
    ) -> Result<TableRows, TargetError> {
        check_identifier(view)?;
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT * FROM {view} ORDER BY 1 LIMIT ?1 OFFSET ?2"
            ))
            .map_err(definition)?;
        let columns: Vec<String> = stmt
            .column_names()
            .iter()
            .map(|c| (*c).to_owned())
            .collect();
        let limit = saturating_i64(limit);
        let offset = saturating_i64(offset);
        let mut rows = stmt.query(params![limit, offset]).map_err(classify_other)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(classify_other)? {
            let mut values = Vec::with_capacity(columns.len());
            for i in 0..columns.len() {
                use rusqlite::types::ValueRef;
                values.push(match row.get_ref(i).map_err(classify_other)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(n) => Value::Integer(n),
                    ValueRef::Real(r) => Value::Real(r),
                    ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Value::Blob(b.to_vec()),
                });
            }
            out.push(values);
        }
        Ok(TableRows { columns, rows: out })
    }

    fn load_snapshot(&mut self, key: &str) -> Result<Option<SnapshotRecord>, TargetError> {
        let row = self
            .conn
            .query_row(
                "SELECT position, state FROM annals_snapshots WHERE key = ?1",
                params![key],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
            )
            .optional()
            .map_err(classify_other)?;
        row.map(|(pos, state)| {
            Ok(SnapshotRecord {
                key: key.to_owned(),
                position: position_from_sql(pos)?,
                state,
            })
        })
        .transpose()
    }
}

/// Saves `snapshot` in `tx`, replacing the key's previous one.
fn upsert_snapshot(
    tx: &rusqlite::Transaction<'_>,
    snapshot: &SnapshotRecord,
) -> Result<(), TargetError> {
    tx.prepare_cached(
        "INSERT INTO annals_snapshots (key, position, state) VALUES (?1, ?2, ?3) \
         ON CONFLICT (key) DO UPDATE SET position = excluded.position, state = excluded.state",
    )
    .and_then(|mut s| {
        s.execute(params![
            snapshot.key,
            saturating_i64(snapshot.position.0),
            snapshot.state
        ])
    })
    .map_err(classify_other)?;
    Ok(())
}
