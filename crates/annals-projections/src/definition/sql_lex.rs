//! Just enough lexing of SQL text to check a definition: the spans outside string literals,
//! quoted identifiers and comments, the `$n` placeholders, and the `{name}` object references.
//!
//! A `$2` inside a literal or a comment is not a parameter, and a `{x}` there is not an object,
//! so both checks look only at the code between them.

use std::collections::BTreeSet;

/// The byte ranges of `sql` outside string literals ('…'), quoted identifiers ("…") and
/// comments (-- … and /* … */).
fn code_spans(sql: &str) -> Vec<(usize, usize)> {
    let bytes = sql.as_bytes();
    let mut spans = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let rest = bytes.get(i..).unwrap_or(&[]);
        let skip_to = if rest.starts_with(b"'") || rest.starts_with(b"\"") {
            let quote = rest.first().copied().unwrap_or(b'\'');
            let mut j = i + 1;
            loop {
                match bytes.get(j) {
                    None => break j,
                    Some(b) if *b == quote => {
                        if bytes.get(j + 1) == Some(&quote) {
                            j += 2;
                        } else {
                            break j + 1;
                        }
                    }
                    Some(_) => j += 1,
                }
            }
        } else if rest.starts_with(b"--") {
            sql.get(i..)
                .and_then(|r| r.find('\n'))
                .map_or(bytes.len(), |n| i + n)
        } else if rest.starts_with(b"/*") {
            sql.get(i + 2..)
                .and_then(|r| r.find("*/"))
                .map_or(bytes.len(), |n| i + 2 + n + 2)
        } else {
            i += 1;
            continue;
        };
        spans.push((start, i));
        i = skip_to;
        start = skip_to;
    }
    spans.push((start, bytes.len()));
    spans
}

/// The `$n` placeholders used in `sql` (outside literals and comments).
pub(super) fn placeholders(sql: &str) -> BTreeSet<usize> {
    let mut used = BTreeSet::new();
    for (from, to) in code_spans(sql) {
        let code = sql.get(from..to).unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find('$') {
            let after = rest.get(at + 1..).unwrap_or("");
            let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
            if let Ok(n) = digits.parse::<usize>() {
                used.insert(n);
            }
            rest = after;
        }
    }
    used
}

/// Every `{identifier}` outside literals and comments must be a declared object.
pub(super) fn check_braces(sql: &str, objects: &[String]) -> Result<(), String> {
    for (from, to) in code_spans(sql) {
        let code = sql.get(from..to).unwrap_or("");
        let mut rest = code;
        while let Some(open) = rest.find('{') {
            let after = rest.get(open + 1..).unwrap_or("");
            if let Some(close) = after.find('}') {
                let name = after.get(..close).unwrap_or("");
                let identifier = name
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if identifier && !objects.iter().any(|o| o == name) {
                    return Err(format!(
                        "`{{{name}}}` is not declared in tables or indexes (declared: {})",
                        if objects.is_empty() {
                            "none".to_owned()
                        } else {
                            objects.join(", ")
                        }
                    ));
                }
            }
            rest = after;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_skip_literals_and_comments() {
        let sql = "SELECT $1, '$2', \"$3\" -- $4\n, $10 /* $5 */ , $$";
        assert_eq!(placeholders(sql), BTreeSet::from([1, 10]));
    }
}
