//! Running a projection's statement on SQLite with its `$n` parameters bound by name.
//!
//! To SQLite `$1`, `$2`, … are *named* parameters numbered in order of first appearance, so a
//! value is bound by looking up each slot's name, never by position. The slot → value mapping is
//! worked out once per statement text and kept ([`SlotMaps`]): looking names up on every
//! execution cost a few percent of a rebuild.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::types::ToSqlOutput;

use super::classify::classify_statement;
use crate::sql_text::abbreviate;
use crate::target::{TargetError, Value};

/// Statement texts whose parameter slots a connection remembers; past this the memory is cleared
/// (it only saves work).
const SLOT_MAPS_MAX: usize = 1_024;

/// For each statement text seen, the value index bound to each parameter slot (`$3` in slot 1
/// → value 2), or `None` for a name that is not `$n`. Keyed by the text's address: handlers
/// hand out clones of one `Arc<str>` per template, and the kept clone pins the address, so an
/// entry can never be taken for another text.
#[derive(Debug, Default)]
pub(super) struct SlotMaps {
    maps: HashMap<usize, (Arc<str>, Vec<Option<usize>>)>,
}

impl SlotMaps {
    fn get(&self, sql: &Arc<str>) -> Option<&[Option<usize>]> {
        let (kept, slots) = self.maps.get(&slot_key(sql))?;
        Arc::ptr_eq(kept, sql).then_some(slots.as_slice())
    }

    fn insert(&mut self, sql: &Arc<str>, slots: Vec<Option<usize>>) {
        if self.maps.len() >= SLOT_MAPS_MAX {
            self.maps.clear();
        }
        self.maps.insert(slot_key(sql), (Arc::clone(sql), slots));
    }
}

/// The address of the text `sql` points at.
fn slot_key(sql: &Arc<str>) -> usize {
    Arc::as_ptr(sql).cast::<u8>() as usize
}

/// Binds a [`Value`] the way SQLite stores it (`Json` as text, `Bool` as 0/1).
struct Bound<'a>(&'a Value);

impl rusqlite::ToSql for Bound<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        use rusqlite::types::ValueRef;
        Ok(ToSqlOutput::Borrowed(match self.0 {
            Value::Null => ValueRef::Null,
            Value::Bool(b) => ValueRef::Integer(i64::from(*b)),
            Value::Integer(n) => ValueRef::Integer(*n),
            Value::Real(r) => ValueRef::Real(*r),
            Value::Text(s) | Value::Json(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

/// Runs one statement with `$n` parameters bound by name.
pub(super) fn run_statement(
    tx: &rusqlite::Transaction<'_>,
    slots: &mut SlotMaps,
    sql: &Arc<str>,
    values: &[Value],
    index: usize,
) -> Result<(), TargetError> {
    let mut stmt = tx
        .prepare_cached(sql)
        .map_err(|e| classify_statement(e, index, sql))?;
    if slots.get(sql).is_none() {
        let map = (1..=stmt.parameter_count())
            .map(|slot| {
                stmt.parameter_name(slot)
                    .and_then(|name| name.strip_prefix('$'))
                    .and_then(|n| n.parse::<usize>().ok())
                    .and_then(|n| n.checked_sub(1))
            })
            .collect();
        slots.insert(sql, map);
    }
    for (slot, value_index) in slots.get(sql).unwrap_or_default().iter().enumerate() {
        let slot = slot + 1;
        let Some(value) = value_index.and_then(|n| values.get(n)) else {
            return Err(TargetError::Statement {
                index: Some(index),
                message: format!(
                    "parameter {} has no value ({} given) in `{}`",
                    stmt.parameter_name(slot).unwrap_or("?"),
                    values.len(),
                    abbreviate(sql)
                ),
            });
        };
        stmt.raw_bind_parameter(slot, Bound(value))
            .map_err(|e| classify_statement(e, index, sql))?;
    }
    // A statement may return rows (`… RETURNING`); step through them.
    let mut rows = stmt.raw_query();
    while rows
        .next()
        .map_err(|e| classify_statement(e, index, sql))?
        .is_some()
    {}
    Ok(())
}
