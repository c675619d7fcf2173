//! The bookkeeping layout that the SQLite and PostgreSQL targets share: which tables hold a
//! generation's rows, how a generation's snapshot keys begin, how a generation's state is
//! spelled, and how bookkeeping integers cross between Rust and SQL.
//!
//! Both targets create the same `annals_*` tables (each in its own SQL dialect, see `target`'s
//! module doc) and must agree on what a row means; keeping these facts once means a rebuild's
//! clean-up or a restart reads the same layout whichever database holds it.

use annals_core::Position;

use crate::target::TargetError;

/// The bookkeeping tables whose rows belong to one generation (keyed by `projection` and
/// `generation`), deleted together when the generation goes. Snapshots are keyed apart; see
/// [`generation_snapshot_prefix`].
pub(crate) const GENERATION_TABLES: [&str; 4] = [
    "annals_projections",
    "annals_checkpoints",
    "annals_failures",
    "annals_parked",
];

/// The start of every snapshot key that belongs to generation `generation` of `projection`
/// (partition snapshots and the replay boundary), so one prefix match deletes them all.
pub(crate) fn generation_snapshot_prefix(projection: &str, generation: u32) -> String {
    format!("projection:{projection}:g{generation}:")
}

/// `annals_projections.state` of the generation readers see.
pub(crate) const STATE_SERVING: &str = "serving";
/// `annals_projections.state` of a generation being built.
pub(crate) const STATE_BUILDING: &str = "building";

/// The stored state of a generation.
pub(crate) fn state_name(serving: bool) -> &'static str {
    if serving {
        STATE_SERVING
    } else {
        STATE_BUILDING
    }
}

/// A count, revision or position as a SQL `BIGINT`, saturating: nothing the log assigns comes
/// near `i64::MAX` (tombstones carry revision `i64::MAX` itself), and a limit past it means "all".
pub(crate) fn saturating_i64<T: TryInto<i64>>(n: T) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// A stored position; a negative one is a damaged bookkeeping row.
pub(crate) fn position_from_sql(n: i64) -> Result<Position, TargetError> {
    u64::try_from(n)
        .map(Position)
        .map_err(|_| TargetError::Other(format!("negative position {n} in bookkeeping")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_saturate_or_refuse() {
        assert_eq!(saturating_i64(7u64), 7);
        assert_eq!(saturating_i64(u64::MAX), i64::MAX);
        assert_eq!(saturating_i64(usize::MAX), i64::MAX);
        assert_eq!(position_from_sql(5).unwrap(), Position(5));
        assert!(matches!(position_from_sql(-1), Err(TargetError::Other(_))));
        assert_eq!(generation_snapshot_prefix("p", 3), "projection:p:g3:");
        assert_eq!(state_name(true), "serving");
        assert_eq!(state_name(false), "building");
    }
}
