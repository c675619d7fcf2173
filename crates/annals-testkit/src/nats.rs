//! A throwaway NATS server with JetStream for tests: its own store directory in a temporary
//! directory, its own port on 127.0.0.1 (below the ephemeral range, so no outgoing connection
//! can take it while the server is down), killed and deleted when dropped.
//!
//! [`TempNats::kill`] is a crash (`SIGKILL`); [`TempNats::start_again`] restarts it on the same
//! port and store, so JetStream streams and their deduplication state survive, as on a real
//! broker restart. `nats-server` must be on `PATH`: a test that needs it fails where it is
//! missing, never passes by skipping.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a start may take before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Ports tried for a server: below the ephemeral range.
const PORT_RANGE: std::ops::Range<u16> = 20_000..32_000;
const PORT_ATTEMPTS_MAX: u32 = 20;

/// A running throwaway NATS server.
#[derive(Debug)]
pub struct TempNats {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    /// A configuration file's text (`max_payload: 4096`, say), when the test gave one.
    config: Option<String>,
}

impl TempNats {
    /// Starts a server with JetStream; panics with the reason if it cannot.
    pub fn start() -> TempNats {
        Self::start_with_config(None)
    }

    /// Starts a server with JetStream and this configuration file's text (the command line
    /// sets the address, port and store).
    pub fn start_with_config(config: Option<&str>) -> TempNats {
        let dir = tempfile::Builder::new()
            .prefix("annals-nats-")
            .tempdir()
            .unwrap_or_else(|e| panic!("TempNats: cannot create a temporary directory: {e}"));
        let mut nats = TempNats {
            dir,
            port: 0,
            child: None,
            config: config.map(str::to_owned),
        };
        let mut last_error = String::new();
        for attempt in 0..PORT_ATTEMPTS_MAX {
            nats.port = free_port(attempt);
            match nats.spawn_and_wait() {
                Ok(()) => return nats,
                Err(e) => last_error = e,
            }
        }
        panic!("TempNats: the server did not start: {last_error}");
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let store = self.dir.path().join("js");
        let log = self.dir.path().join("log");
        let mut command = Command::new("nats-server");
        if let Some(text) = &self.config {
            let file = self.dir.path().join("nats.conf");
            std::fs::write(&file, text)
                .unwrap_or_else(|e| panic!("TempNats: cannot write {}: {e}", file.display()));
            command.arg("-c").arg(file);
        }
        let child = command
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-sd")
            .arg(&store)
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("TempNats: cannot run nats-server (is it installed and on PATH?): {e}")
            });
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("nats-server exited with {status}: {log}"));
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        Err("nats-server did not listen in time".to_owned())
    }

    /// A crash: `SIGKILL`, and the process reaped.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "TempNats: start_again while running");
        self.spawn_and_wait()
            .unwrap_or_else(|e| panic!("TempNats: the server did not start again: {e}"));
    }
}

impl Drop for TempNats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port below the ephemeral range that nothing listens on now.
fn free_port(attempt: u32) -> u16 {
    for _ in 0..PORT_ATTEMPTS_MAX {
        let port = rand::random_range(PORT_RANGE);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("TempNats: no free port found (attempt {attempt})");
}
