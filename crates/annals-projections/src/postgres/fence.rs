//! Fencing in the target database: a [`Fence`] (a lease's name and the token of the term this
//! node holds it in), its claim, and the check every write transaction of a fenced target runs.
//!
//! In multi-node mode one node at a time runs the projections, chosen by a lease whose token
//! goes up each time it changes hands. A node that lost the lease (a long pause, a partition)
//! may still believe it holds it, so the target database itself decides: `annals_fences` holds
//! the newest token that claimed each lease, a claim never lowers it, and a write transaction
//! first reads the row `FOR SHARE` and goes on only if it still holds this node's token. The
//! share lock makes a claim by the next holder wait until the write has committed or rolled
//! back, and the claim runs before the next holder reads any checkpoint (in `load`), so the
//! next holder resumes from every batch the old holder committed and the old holder commits
//! nothing after that.

use postgres::Transaction;

use super::classify::other;
use super::{StatementCache, exec, query};
use crate::target::TargetError;

/// A lease's fencing token, given to a [`PostgresTarget`](crate::PostgresTarget) with
/// [`PostgresTarget::connect_fenced`](crate::PostgresTarget::connect_fenced): the target claims
/// `token` for `name` in its database and refuses to write ([`TargetError::Fenced`]) once a
/// higher token has claimed it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Fence {
    /// The lease's name.
    pub name: String,
    /// The lease's term as this node holds it; goes up every time the lease changes hands.
    pub token: i64,
}

impl Fence {
    /// The error of a write refused because a later term holds the lease.
    pub(super) fn lost(&self) -> TargetError {
        TargetError::Fenced(format!(
            "this node no longer holds lease {} (token {}); another node runs this projection now",
            self.name, self.token
        ))
    }
}

/// Claims `fence` in `tx`: records its token unless a higher one is there already, in which
/// case a later term holds the lease and this is [`TargetError::Fenced`].
pub(super) fn claim(
    tx: &mut Transaction<'_>,
    cache: &mut StatementCache,
    fence: &Fence,
) -> Result<(), TargetError> {
    let written = exec(
        tx,
        cache,
        "INSERT INTO annals_fences (name, token) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET token = EXCLUDED.token \
         WHERE annals_fences.token <= EXCLUDED.token",
        &[&fence.name, &fence.token],
    )?;
    if written == 0 {
        return Err(fence.lost());
    }
    Ok(())
}

/// Checks in `tx`, before it writes, that the database still holds `fence`'s token, and keeps
/// the row share-locked until `tx` ends so no claim can pass it meanwhile.
pub(super) fn check(
    tx: &mut Transaction<'_>,
    cache: &mut StatementCache,
    fence: &Fence,
) -> Result<(), TargetError> {
    let rows = query(
        tx,
        cache,
        "SELECT token FROM annals_fences WHERE name = $1 FOR SHARE",
        &[&fence.name],
    )?;
    let stored = rows
        .first()
        .map(|row| row.try_get::<_, i64>(0).map_err(other))
        .transpose()?;
    // No row: never claimed here, or removed by hand; either way not this node's to write.
    if stored == Some(fence.token) {
        Ok(())
    } else {
        Err(fence.lost())
    }
}
