//! Hygiene checks over the workspace's own sources, run as ordinary tests so the gate catches
//! them: every Rust file opens with a `//!` comment saying what it owns, no source file grows
//! past [`SOURCE_LINES_MAX`], and no constant name is defined in two crates (one concept, one
//! home: two crates each defining `EVENT_BYTES_MAX` once meant two different limits).
//!
//! A failure lists every offending file at once, so one run shows all there is to fix.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Most lines of a file under a crate's `src/`, not counting a trailing `#[cfg(test)]` module.
/// Past it a file holds several jobs; split it along its seams.
const SOURCE_LINES_MAX: usize = 800;

/// The workspace's root: this crate lives in `crates/annals-testkit`.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| panic!("{} has no grandparent", env!("CARGO_MANIFEST_DIR")))
}

/// Every `.rs` file under `crates/`, as (path relative to the root, text).
fn rust_files() -> Vec<(String, String)> {
    let root = workspace_root();
    let mut out = Vec::new();
    let mut dirs = vec![root.join("crates")];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let path = entry
                .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
                .path();
            if path.is_dir() {
                // Build output and installed client libraries are not ours.
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if name != "target" && name != "node_modules" {
                    dirs.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
                let rel = path
                    .strip_prefix(&root)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .into_owned();
                out.push((rel, text));
            }
        }
    }
    out.sort();
    assert!(
        out.len() > 50,
        "found only {} Rust files under {}: is this the workspace?",
        out.len(),
        root.display()
    );
    out
}

/// The part of a source file before its trailing test module (`#[cfg(test)]` followed by
/// `mod tests`), which the size limit and the constant check leave out.
fn without_tests(text: &str) -> &str {
    let mut offset = 0;
    let mut lines = text.split_inclusive('\n').peekable();
    while let Some(line) = lines.next() {
        if line.trim_end() == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod tests"))
        {
            return &text[..offset];
        }
        offset += line.len();
    }
    text
}

/// Whether a path is test code: an integration test, or a module file of tests.
fn is_test_file(rel: &str) -> bool {
    rel.contains("/tests/") || rel.ends_with("/tests.rs")
}

/// The crate a path belongs to (`crates/<name>/...`).
fn crate_of(rel: &str) -> &str {
    rel.split('/').nth(1).unwrap_or(rel)
}

/// Names of the `const` and `static` items a text defines, at any nesting.
fn constant_names(text: &str) -> Vec<&str> {
    let mut names = Vec::new();
    for line in text.lines() {
        let mut rest = line.trim_start();
        if let Some(after) = rest.strip_prefix("pub") {
            rest = after.trim_start();
            if rest.starts_with('(') {
                match rest.find(')') {
                    Some(close) => rest = rest[close + 1..].trim_start(),
                    None => continue,
                }
            }
        }
        let Some(after) = rest
            .strip_prefix("const ")
            .or_else(|| rest.strip_prefix("static "))
        else {
            continue;
        };
        let name: &str = after
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .next()
            .unwrap_or("");
        // `const fn`, `const _: () = assert!(..)` and lower-case names are not named constants.
        let upper = name.chars().any(|c| c.is_ascii_uppercase())
            && !name.chars().any(|c| c.is_ascii_lowercase());
        if upper {
            names.push(name);
        }
    }
    names
}

#[test]
fn every_rust_file_opens_with_a_module_comment() {
    let missing: Vec<String> = rust_files()
        .into_iter()
        .filter(|(_, text)| {
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            !first.starts_with("//!")
        })
        .map(|(rel, _)| rel)
        .collect();
    assert!(
        missing.is_empty(),
        "these files do not open with a `//!` comment saying what they own:\n{}",
        missing.join("\n")
    );
}

#[test]
fn no_source_file_is_over_the_size_limit() {
    let over: Vec<String> = rust_files()
        .into_iter()
        .filter(|(rel, _)| rel.contains("/src/") && !is_test_file(rel))
        .filter_map(|(rel, text)| {
            let lines = without_tests(&text).lines().count();
            (lines > SOURCE_LINES_MAX).then(|| format!("{rel}: {lines} lines"))
        })
        .collect();
    assert!(
        over.is_empty(),
        "over {SOURCE_LINES_MAX} lines (not counting a trailing test module); split them along \
         their seams:\n{}",
        over.join("\n")
    );
}

#[test]
fn no_constant_name_is_defined_in_two_crates() {
    let mut homes: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (rel, text) in rust_files() {
        if is_test_file(&rel) {
            continue;
        }
        for name in constant_names(without_tests(&text)) {
            homes
                .entry(name.to_owned())
                .or_default()
                .entry(crate_of(&rel).to_owned())
                .or_insert_with(|| rel.clone());
        }
    }
    let twice: Vec<String> = homes
        .iter()
        .filter(|(_, crates)| crates.len() > 1)
        .map(|(name, crates)| {
            let places: Vec<&str> = crates.values().map(String::as_str).collect();
            format!("{name}: {}", places.join(", "))
        })
        .collect();
    assert!(
        twice.is_empty(),
        "constants defined in more than one crate (give the concept one home, or each its own \
         name):\n{}",
        twice.join("\n")
    );
}

#[test]
fn the_checks_see_what_they_check() {
    let text =
        "//! x\nconst A_MAX: usize = 1;\n#[cfg(test)]\nmod tests {\n    const B: u8 = 0;\n}\n";
    assert_eq!(without_tests(text), "//! x\nconst A_MAX: usize = 1;\n");
    assert_eq!(
        constant_names(
            "pub const A: u8 = 1;\npub(crate) static B_C: u8 = 2;\nconst fn f() {}\n\
             const _: () = ();\n    const D2: u8 = 3;\nlet x = 1;"
        ),
        ["A", "B_C", "D2"]
    );
    assert_eq!(crate_of("crates/annals-log/src/log.rs"), "annals-log");
    assert!(is_test_file("crates/annals-log/tests/recovery.rs"));
    assert!(is_test_file(
        "crates/annals-projections/src/sqlite/tests.rs"
    ));
    assert!(!is_test_file("crates/annals-log/src/log.rs"));
}
