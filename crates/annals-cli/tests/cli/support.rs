//! Running the built binary and reading what it prints.

use std::path::Path;
use std::process::{Command, Output};

/// The `annals` binary cargo built for these tests.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_annals");

/// Runs `annals` with `args` and returns what it did.
pub(crate) fn annals(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"))
}

/// Runs `annals` and insists it succeeds; returns its stdout.
pub(crate) fn annals_ok(args: &[&str]) -> String {
    let out = annals(args);
    assert!(
        out.status.success(),
        "annals {args:?} failed with {}:\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("stdout is UTF-8")
}

pub(crate) fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// Parses each stdout line as JSON.
pub(crate) fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}
