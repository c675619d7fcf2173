//! A throwaway RabbitMQ broker for tests: its own node name, Erlang distribution port, Mnesia,
//! log and config files in a temporary directory, its own AMQP port on 127.0.0.1 (below the
//! ephemeral range), killed and deleted when dropped. Nothing of the machine's own RabbitMQ
//! (`/etc/rabbitmq`, `/var/lib/rabbitmq`, its cookie) is read or touched.
//!
//! The broker is RabbitMQ's own start script run as the current user (not Debian's wrapper in
//! `/usr/sbin`, which switches to the `rabbitmq` user), in a process group of its own: the script
//! waits on the Erlang VM (`beam.smp`), so [`TempRabbit::kill`] is a `SIGKILL` of the whole group
//! (and of the pid RabbitMQ wrote to its pid file), a crash with no chance to flush anything.
//! The shared `epmd` daemon is left running: it drops a dead node's name by itself, and other
//! Erlang nodes on the machine may use it. [`TempRabbit::start_again`] restarts the node on the
//! same ports and data, so durable exchanges, queues and persistent messages survive, as on a
//! real broker restart.
//!
//! Ready means the AMQP port answers an AMQP 0-9-1 protocol header with `connection.start`:
//! RabbitMQ opens its listeners last, once the node has booted. `rabbitmq-server` must be
//! installed: a test that needs it fails where it is missing, never passes by skipping.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a start may take before the test fails (a loaded two-core machine boots a node in
/// 8-15 s).
const RABBIT_START_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a killed node may take to be gone and release its ports.
const RABBIT_STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Ports tried for a broker: below the ephemeral range.
const RABBIT_PORT_RANGE: std::ops::Range<u16> = 20_000..32_000;
const RABBIT_PORT_ATTEMPTS_MAX: u32 = 20;
/// Starts tried, each on new ports, before giving up.
const RABBIT_START_ATTEMPTS_MAX: u32 = 3;
/// Where RabbitMQ's own start script lives on Debian; else `rabbitmq-server` on `PATH`.
const RABBIT_SERVER_SCRIPT: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
/// AMQP 0-9-1's protocol header; the broker answers it with a method frame.
const AMQP_PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
const AMQP_FRAME_METHOD: u8 = 1;
/// How long one readiness probe waits for the broker's answer.
const RABBIT_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A running throwaway RabbitMQ broker.
#[derive(Debug)]
pub struct TempRabbit {
    dir: tempfile::TempDir,
    script: PathBuf,
    port: u16,
    dist_port: u16,
    child: Option<Child>,
}

impl TempRabbit {
    /// Starts a broker; panics with the reason if it cannot.
    pub fn start() -> TempRabbit {
        let script = find_script();
        let dir = tempfile::Builder::new()
            .prefix("annals-rabbit-")
            .tempdir()
            .unwrap_or_else(|e| panic!("TempRabbit: cannot create a temporary directory: {e}"));
        let mut rabbit = TempRabbit {
            dir,
            script,
            port: 0,
            dist_port: 0,
            child: None,
        };
        let mut last_error = String::new();
        for attempt in 0..RABBIT_START_ATTEMPTS_MAX {
            rabbit.port = free_port(attempt, &[]);
            rabbit.dist_port = free_port(attempt, &[rabbit.port]);
            rabbit.write_config();
            match rabbit.spawn_and_wait() {
                Ok(()) => return rabbit,
                Err(e) => last_error = e,
            }
        }
        panic!("TempRabbit: the broker did not start: {last_error}");
    }

    /// `amqp://guest:guest@127.0.0.1:{port}/%2f` (the default user, allowed from loopback).
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The node's name, for `rabbitmqctl -n`.
    pub fn node(&self) -> String {
        format!("annals{}@localhost", self.port)
    }

    /// What the start script printed, and the node's log (for failure messages).
    pub fn log(&self) -> String {
        let mut out = std::fs::read_to_string(self.dir.path().join("out")).unwrap_or_default();
        let node_log = self
            .dir
            .path()
            .join("log")
            .join(format!("{}.log", self.node()));
        out.push_str(&std::fs::read_to_string(node_log).unwrap_or_default());
        out
    }

    fn write_config(&self) {
        let d = self.dir.path();
        let files = [
            (
                "rabbitmq.conf",
                format!("listeners.tcp.local = 127.0.0.1:{}\n", self.port),
            ),
            ("enabled_plugins", "[].\n".to_owned()),
            // Read instead of /etc/rabbitmq/rabbitmq-env.conf.
            ("rabbitmq-env.conf", String::new()),
        ];
        for (name, text) in files {
            std::fs::write(d.join(name), text).unwrap_or_else(|e| {
                panic!("TempRabbit: cannot write {}: {e}", d.join(name).display())
            });
        }
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let d = self.dir.path();
        let out = std::fs::File::create(d.join("out"))
            .map_err(|e| format!("cannot create {}: {e}", d.join("out").display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("cannot share the output file: {e}"))?;
        let _ = std::fs::remove_file(self.pid_file());
        let child = Command::new(&self.script)
            // The cookie and everything else Erlang keeps in HOME stay in the directory.
            .env("HOME", d)
            .env("RABBITMQ_NODENAME", self.node())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", d.join("advanced.config"))
            .env("RABBITMQ_CONF_ENV_FILE", d.join("rabbitmq-env.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", self.pid_file())
            .current_dir(d)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "TempRabbit: cannot run {} (is Debian's rabbitmq-server installed?): {e}",
                    self.script.display()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + RABBIT_START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!(
                    "rabbitmq-server exited with {status}:\n{}",
                    tail(&self.log())
                ));
            }
            if amqp_answers(self.port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = self.log();
        self.kill();
        Err(format!(
            "the broker did not answer AMQP on port {} within {RABBIT_START_TIMEOUT:?}:\n{}",
            self.port,
            tail(&log)
        ))
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.path().join("pid")
    }

    /// A crash: `SIGKILL` to the start script's process group and to the Erlang VM; returns
    /// once the VM is gone and its AMQP port closed.
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let beam = std::fs::read_to_string(self.pid_file())
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        // The group's id is the script's pid (`process_group(0)`).
        signal_kill(&format!("-{}", child.id()));
        if let Some(pid) = beam
            && is_beam(pid)
        {
            signal_kill(&pid.to_string());
        }
        let _ = child.kill();
        let _ = child.wait();
        let deadline = Instant::now() + RABBIT_STOP_TIMEOUT;
        while Instant::now() < deadline {
            let vm_gone = beam.is_none_or(|pid| !is_beam(pid));
            let port_closed = TcpStream::connect_timeout(
                &SocketAddr::from((Ipv4Addr::LOCALHOST, self.port)),
                Duration::from_millis(200),
            )
            .is_err();
            if vm_gone && port_closed {
                let _ = std::fs::remove_file(self.pid_file());
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "TempRabbit: the broker on port {} is still there {RABBIT_STOP_TIMEOUT:?} after SIGKILL",
            self.port
        );
    }

    /// Starts the broker again on the same ports, node name and data.
    pub fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "TempRabbit: start_again while running"
        );
        self.spawn_and_wait()
            .unwrap_or_else(|e| panic!("TempRabbit: the broker did not start again: {e}"));
    }
}

impl Drop for TempRabbit {
    fn drop(&mut self) {
        // A panic inside a drop during a panic aborts; the kill's own check is not worth that.
        if let Some(mut child) = self.child.take() {
            signal_kill(&format!("-{}", child.id()));
            if let Some(pid) = std::fs::read_to_string(self.pid_file())
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
                && is_beam(pid)
            {
                signal_kill(&pid.to_string());
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// RabbitMQ's start script: Debian's copy that runs as the current user, else the one on `PATH`.
fn find_script() -> PathBuf {
    if Path::new(RABBIT_SERVER_SCRIPT).is_file() {
        return PathBuf::from(RABBIT_SERVER_SCRIPT);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("rabbitmq-server"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "TempRabbit: rabbitmq-server not found ({RABBIT_SERVER_SCRIPT} nor on PATH); \
                 install Debian's rabbitmq-server (scripts/test.sh does)"
            )
        })
}

/// `kill -KILL -- TARGET` (a pid, or `-PGID` for a process group); errors are ignored (the
/// target may be gone).
fn signal_kill(target: &str) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", target])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Whether `pid` is a live (not zombie) Erlang VM.
fn is_beam(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) state ...`: the command is in parentheses, the state right after.
    let Some((head, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    let state = rest.trim_start().chars().next().unwrap_or('X');
    head.contains("beam") && !matches!(state, 'Z' | 'X')
}

/// Whether the broker on `port` answers AMQP's protocol header with a method frame
/// (`connection.start`).
fn amqp_answers(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, RABBIT_PROBE_TIMEOUT) else {
        return false;
    };
    if stream.set_read_timeout(Some(RABBIT_PROBE_TIMEOUT)).is_err()
        || stream.write_all(AMQP_PROTOCOL_HEADER).is_err()
    {
        return false;
    }
    let mut first = [0u8; 1];
    matches!(stream.read(&mut first), Ok(1)) && first[0] == AMQP_FRAME_METHOD
}

/// The last lines of a log, enough to see why a start failed.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A port below the ephemeral range that nothing listens on now, other than `taken`.
fn free_port(attempt: u32, taken: &[u16]) -> u16 {
    for _ in 0..RABBIT_PORT_ATTEMPTS_MAX {
        let port = rand::random_range(RABBIT_PORT_RANGE);
        if !taken.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("TempRabbit: no free port found (attempt {attempt})");
}
