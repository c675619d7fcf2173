//! Commits whose answer was lost: the token each commit writes into its checkpoint row, and how
//! the runtime's retry of such a commit finds out whether it had already committed.
//!
//! A connection lost after `COMMIT` was sent leaves the outcome unknown, and applying the batch
//! again would apply its events twice (killing the server mid-run found one event applied
//! twice). So the target remembers the commit ([`InDoubt`]) and, before running the next commit
//! of the same partition, reads the checkpoint row's token back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use annals_core::Position;

use super::classify::other;
use super::{PostgresTarget, query};
use crate::target::{PartitionCommit, TargetError};

/// What is needed to tell whether a commit with a lost answer took effect.
#[derive(Debug)]
pub(super) struct InDoubt {
    projection: String,
    generation: u32,
    partition: u32,
    checkpoint: Position,
    statements: usize,
    token: i64,
}

impl InDoubt {
    /// The commit `c`, sent with `token`, whose `COMMIT` got no answer.
    pub(super) fn of(c: &PartitionCommit<'_>, token: i64) -> Self {
        Self {
            projection: c.projection.to_owned(),
            generation: c.generation,
            partition: c.partition,
            checkpoint: c.checkpoint,
            statements: c.statements.len(),
            token,
        }
    }
}

/// A token unlikely to equal the one a checkpoint row holds already: the clock, the process
/// and a counter mixed.
pub(super) fn next_commit_token() -> i64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mixed = nanos
        ^ (u64::from(std::process::id()) << 40)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    i64::from_ne_bytes(mixed.to_ne_bytes())
}

impl PostgresTarget {
    /// Settles a commit whose answer was lost, before `c` (the runtime's retry of it) runs: true
    /// if it did commit and `c` is the same batch, so `c` must not be applied again.
    pub(super) fn resolve_in_doubt(
        &mut self,
        c: &PartitionCommit<'_>,
    ) -> Result<bool, TargetError> {
        let Some(doubt) = self.in_doubt.take() else {
            return Ok(false);
        };
        if doubt.projection != c.projection
            || doubt.generation != c.generation
            || doubt.partition != c.partition
        {
            tracing::warn!(projection = %doubt.projection, partition = doubt.partition,
                "a commit whose answer was lost is not retried; its outcome is left to the checkpoint");
            return Ok(false);
        }
        let key = (
            c.projection,
            i64::from(c.generation),
            i64::from(c.partition),
        );
        let stored = self.in_transaction(|tx, cache| {
            let rows = query(
                tx,
                cache,
                "SELECT commit_token FROM annals_checkpoints \
                 WHERE projection = $1 AND generation = $2 AND partition = $3",
                &[&key.0, &key.1, &key.2],
            )?;
            rows.first()
                .map(|row| row.try_get::<_, i64>(0).map_err(other))
                .transpose()
        });
        match stored {
            Err(e) => {
                self.in_doubt = Some(doubt);
                Err(e)
            }
            Ok(Some(token)) if token == doubt.token => {
                let same =
                    doubt.checkpoint == c.checkpoint && doubt.statements == c.statements.len();
                if same {
                    tracing::info!(projection = %doubt.projection, partition = doubt.partition,
                        checkpoint = %doubt.checkpoint,
                        "a commit whose answer was lost had committed; not applying it again");
                } else {
                    tracing::warn!(projection = %doubt.projection, partition = doubt.partition,
                        "a commit whose answer was lost had committed, and a different batch followed");
                }
                Ok(same)
            }
            Ok(_) => Ok(false),
        }
    }
}
