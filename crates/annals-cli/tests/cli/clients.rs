//! The real KurrentDB client libraries for Python (`kurrentdbclient`) and Node
//! (`@kurrent/kurrentdb-client`) against `annals serve`: each runs a script of appends (every
//! expected-revision kind), wrong-version errors, reads both ways, a missing stream, a filtered
//! `$all` read, a catch-up subscription that goes live, stream metadata, soft delete and tombstone,
//! through the client's public API; and a second script per client of persistent subscriptions
//! (competing consumers, nacks, parking, replay, management). `scripts/install-clients.sh` (run by the test command)
//! installs the pinned clients into `target/clients`; without them these tests fail, never skip.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{Server, workspace_root};

/// Longest a client script may run; a script stuck waiting for an event fails the test instead
/// of hanging it.
const CLIENT_RUN_MAX: Duration = Duration::from_secs(180);

/// Runs `program args…` and insists it exits 0 within [`CLIENT_RUN_MAX`], showing its output
/// and the server's log if not.
pub(crate) fn run_client(server: &Server, program: &Path, args: &[&str]) {
    assert!(
        program.exists(),
        "{} is missing: run ./scripts/install-clients.sh (the test command does)",
        program.display()
    );
    let out_dir = tempfile::tempdir().unwrap();
    let stdout_path = out_dir.path().join("stdout");
    let stderr_path = out_dir.path().join("stderr");
    let mut child = Command::new(program)
        .args(args)
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > CLIENT_RUN_MAX {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let log: Vec<String> = server.log.try_iter().collect();
    assert!(
        status.is_some_and(|s| s.success()),
        "{} {args:?} failed ({}) \nstdout:\n{stdout}\nstderr:\n{stderr}\nserver log:\n{}",
        program.display(),
        status.map_or_else(
            || format!("still running after {CLIENT_RUN_MAX:?}"),
            |s| s.to_string()
        ),
        log.join("\n")
    );
    assert!(stdout.contains("checks passed"), "{stdout}");
}

/// Runs one Python client script against a fresh server.
fn run_python(script: &str) {
    let root = workspace_root();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let script = root.join("tests/clients/python").join(script);
    run_client(
        &server,
        &root.join("target/clients/py/bin/python"),
        &[script.to_str().unwrap(), &server.url()],
    );
}

/// Runs one Node client script against a fresh server.
fn run_node(script: &str) {
    let root = workspace_root();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    // ES modules resolve packages next to the script: run a fresh copy beside the installed ones.
    let installed = root.join("target/clients/node");
    assert!(
        installed
            .join("node_modules/@kurrent/kurrentdb-client")
            .exists(),
        "the Node client is missing: run ./scripts/install-clients.sh (the test command does)"
    );
    let copy = installed.join(script);
    std::fs::copy(root.join("tests/clients/node").join(script), &copy).unwrap();
    let node = which("node");
    run_client(&server, &node, &[copy.to_str().unwrap(), &server.url()]);
}

#[test]
fn python_kurrentdbclient_works_against_annals() {
    run_python("client_test.py");
}

#[test]
fn python_kurrentdbclient_persistent_subscriptions() {
    run_python("persistent_test.py");
}

#[test]
fn node_kurrentdb_client_works_against_annals() {
    run_node("client_test.mjs");
}

#[test]
fn node_kurrentdb_client_persistent_subscriptions() {
    run_node("persistent_test.mjs");
}

/// The full path of `program` on PATH.
fn which(program: &str) -> std::path::PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(program))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("{program} not found on PATH"))
}
