//! A child `annals serve` for the benches that measure a server process of their own
//! (`bench grpc-append --auth`, `bench ui`): this binary started on a temporary store and a free
//! port of 127.0.0.1, its address read from its log, its log drained, killed when dropped.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::Context;

/// A child `annals serve`, killed when dropped.
pub(super) struct ChildServer {
    pub(super) child: Child,
    /// `127.0.0.1:PORT`, as the server logged it.
    pub(super) authority: String,
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `annals serve --data DATA --listen 127.0.0.1:0 EXTRA…` and waits until it serves.
pub(super) fn start<S: AsRef<OsStr>>(data: &Path, extra: &[S]) -> anyhow::Result<ChildServer> {
    let exe = std::env::current_exe().context("cannot find this program")?;
    let child = Command::new(exe)
        .args(["serve", "--data"])
        .arg(data)
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", "warn,annals_cli=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start annals serve")?;
    // Owned at once, so the child is killed on any error below.
    let mut server = ChildServer {
        child,
        authority: String::new(),
    };
    let stderr = server.child.stderr.take().context("no stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    server.authority = loop {
        let Some(line) = lines.next() else {
            anyhow::bail!("annals serve exited before serving");
        };
        let line = line.context("reading the server's log")?;
        if let Some(rest) = line.split("address=").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
        }
    };
    // Keep draining the log so the pipe never fills.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    Ok(server)
}
