//! Writing staged batches to redb: one transaction for every batch staged so far, without fsync,
//! then a durable (empty) commit on flush. Committed batches stay in memory until that durable
//! commit ([`crate::staged::Staged::undurable`]); a commit that would keep more than
//! [`UNDURABLE_RECORDS_MAX`] records there is made durable itself. Commits run one at a time (the caller holds
//! `commit_lock`), so committed heads and generations only move forwards.

use std::collections::HashMap;

use redb::Durability;

use super::{
    CATEGORY_LINKS_TABLE, EVENT_TYPE_LINKS_TABLE, META_ADDRESS, META_GENERATION, META_LAST_RECORD,
    META_NEXT_POSITION, META_NEXT_STREAM_ID, META_TABLE, POSITIONS_TABLE, RedbIndex,
    STREAM_EVENTS_TABLE, STREAMS_TABLE,
};
use crate::error::IndexError;
use crate::staged::{HeadTuple, UNDURABLE_RECORDS_MAX};
use crate::types::POSITION_BUCKET;

impl RedbIndex {
    /// Writes every staged batch to redb in one transaction; the caller holds `commit_lock`.
    pub(super) fn commit_staged_locked(&self) -> Result<(), IndexError> {
        let (batches, undurable_records) = {
            let staged = self.staged.read();
            (staged.batches.clone(), staged.undurable_records)
        };
        let Some(newest) = batches.last() else {
            return Ok(());
        };
        let records: usize = batches.iter().map(|b| b.records.len()).sum();
        let durable = undurable_records.saturating_add(records) > UNDURABLE_RECORDS_MAX;
        let mut txn = self.db().begin_write()?;
        match durable {
            true => txn.set_quick_repair(true),
            false => txn.set_durability(Durability::None)?,
        }
        {
            let mut meta = txn.open_table(META_TABLE)?;
            let mut streams = txn.open_table(STREAMS_TABLE)?;
            let mut events = txn.open_table(STREAM_EVENTS_TABLE)?;
            let mut categories = txn.open_table(CATEGORY_LINKS_TABLE)?;
            let mut types = txn.open_table(EVENT_TYPE_LINKS_TABLE)?;
            let mut positions = txn.open_table(POSITIONS_TABLE)?;
            // Entries are inserted in key order: neighbours land in the same B-tree pages, which
            // redb then copies and hashes once per transaction instead of once per entry.
            let mut heads: HashMap<&str, HeadTuple> = HashMap::new();
            let mut stream_entries = Vec::new();
            for batch in &batches {
                for r in &batch.records {
                    let count = r.count;
                    if !r.tombstone {
                        stream_entries.push((
                            (r.id, r.first_revision),
                            (r.first_position, r.address, count),
                        ));
                        categories.insert(
                            (r.category(), r.category_revision),
                            (r.first_position, r.address, count),
                        )?;
                        for run in &r.type_runs {
                            types.insert(
                                (&*run.event_type, run.first_revision),
                                (run.first_position, r.address, run.count),
                            )?;
                        }
                    }
                    let last = r.first_position.saturating_add(count.saturating_sub(1));
                    if needs_position_entry(r.first_position, last) {
                        positions.insert(r.first_position, r.address)?;
                    }
                }
                for (name, head) in &batch.heads {
                    heads.insert(name, *head);
                }
            }
            stream_entries.sort_unstable_by_key(|(k, _)| *k);
            for (k, v) in stream_entries {
                events.insert(k, v)?;
            }
            let mut heads: Vec<(&str, HeadTuple)> = heads.into_iter().collect();
            heads.sort_unstable_by_key(|(name, _)| *name);
            for (name, head) in heads {
                streams.insert(name, head)?;
            }
            meta.insert(META_NEXT_STREAM_ID, newest.next_id)?;
            meta.insert(META_ADDRESS, newest.checkpoint.address)?;
            meta.insert(META_NEXT_POSITION, newest.checkpoint.next_position.0)?;
            meta.insert(META_LAST_RECORD, newest.checkpoint.last_record_address)?;
            meta.insert(META_GENERATION, newest.generation)?;
        }
        txn.commit()?;
        let mut staged = self.staged.write();
        staged.committed(newest.generation);
        if durable {
            staged.made_durable(newest.generation);
        }
        Ok(())
    }

    /// Makes everything committed durable; the caller holds `commit_lock`.
    pub(super) fn commit_durably_locked(&self) -> Result<(), IndexError> {
        let committed = self.staged.read().committed;
        let mut txn = self.db().begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.set_quick_repair(true);
        txn.commit()?;
        self.staged.write().made_durable(committed);
        Ok(())
    }
}

/// Whether a record of positions `first..=last` gets an entry in the sparse position map: the
/// first record, and every record holding a multiple of [`POSITION_BUCKET`].
pub(super) fn needs_position_entry(first: u64, last: u64) -> bool {
    first == 1 || last / POSITION_BUCKET > first.saturating_sub(1) / POSITION_BUCKET
}
