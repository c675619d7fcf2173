//! Importing another store's events unchanged (`annals migrate`): positions, streams,
//! revisions, ids, types, times and bytes as they were. Each batch is one transaction under the
//! head row lock, like an append, and must start right after the head: an interrupted import
//! resumes from the head, and nothing can land between two of its batches unnoticed.

use annals_core::{EventRecord, NewEvent, Position, Revision};

use crate::error::PgStoreError;
use crate::store::PgStore;
use crate::writer::{Columns, StreamRow, streams_from, write};

impl PgStore {
    /// Imports `events`, which must be at consecutive positions starting right after the head,
    /// each stream's at its next revision (a tombstone, at [`Revision::TOMBSTONE`], marks its
    /// stream deleted). Returns the new head. Nothing of a refused batch is written.
    pub async fn import(&self, events: &[EventRecord]) -> Result<Position, PgStoreError> {
        let mut jobs = self.connect_for_write().await?;
        let (client, st) = &mut *jobs;
        let tx = client.transaction().await.map_err(PgStoreError::from_pg)?;
        let head: i64 = tx.query_one(&st.lock_head, &[]).await?.get(0);
        let Some(first) = events.first() else {
            return Ok(Position(u64::try_from(head).unwrap_or(0)));
        };
        let want = u64::try_from(head).unwrap_or(0) + 1;
        if first.position.0 != want {
            return Err(PgStoreError::Input(format!(
                "an import must go on at position {want}, the batch starts at {}",
                first.position.0
            )));
        }
        let mut names: Vec<String> = events.iter().map(|e| e.stream.to_string()).collect();
        names.sort_unstable();
        names.dedup();
        let mut streams = streams_from(tx.query(&st.streams, &[&names]).await?);
        let mut next_stream_id: i64 = tx.query_one(&st.next_stream_id, &[]).await?.get(0);
        let mut cols = Columns::default();
        let mut position = head;
        for e in events {
            let bad =
                |why: String| PgStoreError::Input(format!("position {}: {why}", e.position.0));
            if e.position.0 != u64::try_from(position).unwrap_or(0) + 1 {
                return Err(bad(format!(
                    "positions must be consecutive, after {position}"
                )));
            }
            position += 1;
            let name = e.stream.as_str();
            let row = streams.entry(name.to_owned()).or_insert_with(|| {
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
                return Err(bad(format!("stream {name} is already deleted")));
            }
            let revision = i64::try_from(e.revision.0)
                .map_err(|_| bad(format!("revision {} is too large", e.revision.0)))?;
            if e.revision == Revision::TOMBSTONE {
                row.tombstoned = true;
            } else if revision != row.next_revision {
                return Err(bad(format!(
                    "stream {name} is at revision {}, the event says {revision}",
                    row.next_revision
                )));
            } else {
                row.next_revision += 1;
            }
            let new = NewEvent {
                id: e.id,
                event_type: e.event_type.clone(),
                content_type: e.content_type,
                data: e.data.clone(),
                metadata: e.metadata.clone(),
            };
            cols.push(position, row.id, revision, name, &new, e.created.0);
        }
        write(&tx, st, &streams, &cols, position).await?;
        tx.commit().await?;
        let new_head = Position(u64::try_from(position).unwrap_or(0));
        self.advance_head(new_head);
        Ok(new_head)
    }
}
