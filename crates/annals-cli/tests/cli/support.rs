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

/// A running `annals serve` on a free port of 127.0.0.1, killed when dropped.
pub(crate) struct Server {
    pub(crate) child: std::process::Child,
    pub(crate) addr: std::net::SocketAddr,
    /// The rest of the server's stderr, read on a thread so the pipe never fills.
    pub(crate) log: std::sync::mpsc::Receiver<String>,
}

impl Server {
    /// Starts `annals serve --data DIR --listen 127.0.0.1:0` and waits until it logs its address.
    pub(crate) fn start(data: &Path, extra: &[&str]) -> Server {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(BIN)
            .args(["serve", "--data", path_str(data), "--listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"));
        let mut stderr = BufReader::new(child.stderr.take().expect("piped"));
        let mut line = String::new();
        let addr = loop {
            line.clear();
            let n = stderr.read_line(&mut line).expect("server stderr");
            assert!(n > 0, "annals serve exited before serving");
            if let Some(rest) = line.split("address=").nth(1) {
                let text = rest.split_whitespace().next().unwrap_or_default();
                break text
                    .parse()
                    .unwrap_or_else(|e| panic!("bad address {text:?}: {e}"));
            }
        };
        let (tx, log) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Server { child, addr, log }
    }

    pub(crate) fn url(&self) -> String {
        format!("kurrentdb://{}?tls=false", self.addr)
    }

    /// Sends SIGTERM and waits (up to 30 s) for the exit status.
    pub(crate) fn terminate(&mut self) -> std::process::ExitStatus {
        self.send_sigterm();
        self.wait_exit()
    }

    /// Sends SIGTERM without waiting.
    pub(crate) fn send_sigterm(&self) {
        let kill = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(kill.success());
    }

    /// Waits (up to 30 s) for the process to exit; returns its status.
    pub(crate) fn wait_exit(&mut self) -> std::process::ExitStatus {
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "serve did not stop within 30 s of SIGTERM"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The workspace root (two levels above this crate).
pub(crate) fn workspace_root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// The last line of a bench's stdout, parsed as JSON.
pub(crate) fn last_json_line(stdout: &str) -> serde_json::Value {
    let last = stdout.lines().last().expect("the bench printed nothing");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON: {last:?}: {e}"))
}

/// A multi-threaded async runtime for a test's clients.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}
