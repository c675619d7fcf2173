//! SQL text that the SQLite and PostgreSQL targets both write: quoted identifiers, the DDL that
//! points a reader view at a generation's table, and statements shortened for error messages.
//!
//! The two dialects agree on all of this, so each piece is written once; what differs between
//! them (parameter syntax, `CASCADE`, column types) stays with each target.

use crate::target::generation_object;

/// Most characters of a statement an error message shows.
const SHOWN_CHARS_MAX: usize = 200;

/// `name` as a double-quoted SQL identifier.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `sql` on one line and cut to [`SHOWN_CHARS_MAX`] characters, for error messages that name
/// the statement without repeating a whole script.
pub(crate) fn abbreviate(sql: &str) -> String {
    let one_line = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= SHOWN_CHARS_MAX {
        return one_line;
    }
    let mut s: String = one_line.chars().take(SHOWN_CHARS_MAX).collect();
    s.push('…');
    s
}

/// The table that reader view `view` shows in `generation`, and the script that (re)creates the
/// view over it. The view is dropped first because neither dialect lets `CREATE OR REPLACE
/// VIEW` change a view's columns.
pub(crate) fn point_view_sql(view: &str, generation: u32) -> (String, String) {
    let real = generation_object(view, generation);
    let sql = format!(
        "DROP VIEW IF EXISTS {v}; CREATE VIEW {v} AS SELECT * FROM {t};",
        v = quote_ident(view),
        t = quote_ident(&real)
    );
    (real, sql)
}

/// What failed, for a setup statement (`index` counts from 0) that did not run.
pub(crate) fn setup_failed(index: usize, sql: &str) -> String {
    format!(
        "setup statement {} (`{}`) failed",
        index + 1,
        abbreviate(sql)
    )
}

/// What failed, for a handler statement (`index` counts from 0) that did not prepare.
pub(crate) fn does_not_prepare(index: usize, sql: &str) -> String {
    format!(
        "statement {} (`{}`) does not prepare",
        index + 1,
        abbreviate(sql)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_abbreviates_and_points_views() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(abbreviate("SELECT\n  1,\t2"), "SELECT 1, 2");
        let long = "x ".repeat(300);
        let short = abbreviate(&long);
        assert_eq!(short.chars().count(), SHOWN_CHARS_MAX + 1);
        assert!(short.ends_with('…'));
        let (real, sql) = point_view_sql("totals", 2);
        assert_eq!(real, "totals__g2");
        assert_eq!(
            sql,
            "DROP VIEW IF EXISTS \"totals\"; CREATE VIEW \"totals\" AS SELECT * FROM \"totals__g2\";"
        );
        assert_eq!(
            setup_failed(0, "CREATE  TABLE t"),
            "setup statement 1 (`CREATE TABLE t`) failed"
        );
    }
}
