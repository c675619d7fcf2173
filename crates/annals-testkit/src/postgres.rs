//! A throwaway PostgreSQL server for tests: its own data directory in a temporary directory, its
//! own port on 127.0.0.1, stopped and deleted when dropped.
//!
//! The binaries are searched for, never assumed: `pg_config --bindir`, else the newest
//! `/usr/lib/postgresql/<version>/bin`, else `initdb` on `PATH`. If none is found,
//! [`TempPostgres::start`] panics naming what it looked for: a test that needs PostgreSQL must
//! fail where PostgreSQL is missing, not pass by skipping.
//!
//! `initdb` and `postgres` refuse to run as root. When the tests run as root, the server runs as
//! the `postgres` system user (else `nobody`): the temporary directory is handed to that user and
//! the processes are started with its uid and gid.
//!
//! [`TempPostgres::stop_immediate`] is PostgreSQL's immediate shutdown (`SIGQUIT` to the
//! postmaster, what `pg_ctl stop -m immediate` sends): no checkpoint, every connection cut, and
//! crash recovery from the WAL on [`TempPostgres::start_again`], which reuses the data directory
//! and the port.

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a start may take before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopping server may take before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts at finding a free port that the server then really binds.
const PORT_ATTEMPTS_MAX: u32 = 5;

/// A running throwaway PostgreSQL server.
#[derive(Debug)]
pub struct TempPostgres {
    dir: tempfile::TempDir,
    bindir: PathBuf,
    port: u16,
    run_as: Option<(u32, u32)>,
    child: Option<Child>,
}

impl TempPostgres {
    /// Creates a cluster and starts it; panics with the reason if it cannot.
    pub fn start() -> TempPostgres {
        let bindir = find_bindir();
        let dir = tempfile::Builder::new()
            .prefix("annals-pg-")
            .tempdir()
            .unwrap_or_else(|e| panic!("TempPostgres: cannot create a temporary directory: {e}"));
        let run_as = if running_as_root() {
            let ids = unprivileged_user();
            std::os::unix::fs::chown(dir.path(), Some(ids.0), Some(ids.1)).unwrap_or_else(|e| {
                panic!(
                    "TempPostgres: cannot hand {} to uid {}: {e}",
                    dir.path().display(),
                    ids.0
                )
            });
            Some(ids)
        } else {
            None
        };
        let mut pg = TempPostgres {
            dir,
            bindir,
            port: 0,
            run_as,
            child: None,
        };
        pg.initdb();
        let mut last_error = String::new();
        for _ in 0..PORT_ATTEMPTS_MAX {
            pg.port = free_port();
            match pg.spawn_and_wait() {
                Ok(()) => return pg,
                Err(e) => last_error = e,
            }
        }
        panic!("TempPostgres: the server did not start: {last_error}");
    }

    /// `postgres://postgres@127.0.0.1:{port}/postgres` (trust authentication).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates the database `name` (with the cluster's own `createdb`) and returns its URL: a
    /// test that needs many empty stores makes one database each instead of one server each.
    pub fn create_database(&self, name: &str) -> String {
        let out = Command::new(self.bindir.join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                name,
            ])
            .output()
            .unwrap_or_else(|e| panic!("TempPostgres: cannot run createdb: {e}"));
        assert!(
            out.status.success(),
            "TempPostgres: createdb {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Immediate shutdown: every connection is cut, nothing is checkpointed; the next start runs
    /// crash recovery. Returns when the postmaster has exited.
    pub fn stop_immediate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let signalled = Command::new("kill")
            .args(["-QUIT", &child.id().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !signalled || !wait_exit(&mut child, STOP_TIMEOUT) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same data directory and port; panics if it cannot.
    pub fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "TempPostgres::start_again: the server is running"
        );
        // Backends of a killed server may take a moment to exit and release the shared memory.
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => {
                    panic!("TempPostgres: the server did not start again: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// A standby of `primary` on a port of its own, streaming its WAL (a base backup with
    /// `standby.signal` and `primary_conninfo` written by `pg_basebackup -R`). With
    /// `synchronous`, the primary then waits for this standby on every commit
    /// (`synchronous_standby_names = '*'`). Panics with the reason if it cannot.
    pub fn start_standby(primary: &TempPostgres, synchronous: bool) -> TempPostgres {
        let dir = tempfile::Builder::new()
            .prefix("annals-pg-standby-")
            .tempdir()
            .unwrap_or_else(|e| panic!("TempPostgres: cannot create a temporary directory: {e}"));
        if let Some((uid, gid)) = primary.run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap_or_else(|e| {
                panic!("TempPostgres: cannot hand over the standby's directory: {e}")
            });
        }
        let mut standby = TempPostgres {
            dir,
            bindir: primary.bindir.clone(),
            port: 0,
            run_as: primary.run_as,
            child: None,
        };
        let output = standby
            .command("pg_basebackup")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &primary.port.to_string(),
                "-U",
                "postgres",
            ])
            .arg("-D")
            .arg(standby.data_dir())
            .args(["-R", "-X", "stream", "--checkpoint=fast"])
            .output()
            .unwrap_or_else(|e| panic!("TempPostgres: cannot run pg_basebackup: {e}"));
        assert!(
            output.status.success(),
            "TempPostgres: pg_basebackup failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let mut last_error = String::new();
        let mut started = false;
        for _ in 0..PORT_ATTEMPTS_MAX {
            standby.port = free_port();
            match standby.spawn_and_wait() {
                Ok(()) => {
                    started = true;
                    break;
                }
                Err(e) => last_error = e,
            }
        }
        assert!(
            started,
            "TempPostgres: the standby did not start: {last_error}"
        );
        if synchronous {
            primary.psql("ALTER SYSTEM SET synchronous_standby_names = '*'");
            primary.psql("SELECT pg_reload_conf()");
        }
        standby
    }

    /// Promotes a standby to a primary and waits until it takes writes.
    pub fn promote(&self) {
        let output = self
            .command("pg_ctl")
            .args(["promote", "-w", "-t", "60", "-D"])
            .arg(self.data_dir())
            .output()
            .unwrap_or_else(|e| panic!("TempPostgres: cannot run pg_ctl promote: {e}"));
        assert!(
            output.status.success(),
            "TempPostgres: promote failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            tail(&self.log(), 40)
        );
    }

    /// Runs one SQL statement with `psql`; panics if it fails.
    fn psql(&self, sql: &str) {
        let output = self
            .command("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .unwrap_or_else(|e| panic!("TempPostgres: cannot run psql: {e}"));
        assert!(
            output.status.success(),
            "TempPostgres: {sql} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// True while the postmaster started last is running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bindir.join(program));
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        command.current_dir(self.dir.path()).stdin(Stdio::null());
        command
    }

    fn initdb(&self) {
        let output = self
            .command("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .args([
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "TempPostgres: cannot run {}: {e}",
                    self.bindir.join("initdb").display()
                )
            });
        assert!(
            output.status.success(),
            "TempPostgres: initdb failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Starts the postmaster and waits until it accepts connections.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("cannot open the server log: {e}"))?;
        if let Some((uid, gid)) = self.run_as {
            let _ = std::os::unix::fs::chown(self.log_path(), Some(uid), Some(gid));
        }
        let log_err = log
            .try_clone()
            .map_err(|e| format!("cannot open the server log: {e}"))?;
        let mut child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.socket_dir())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=on",
                "-c",
                "max_connections=100",
                "-c",
                "shared_buffers=16MB",
            ])
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.bindir.join("postgres").display()))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "postgres exited ({status}); log:\n{}",
                    tail(&self.log(), 40)
                ));
            }
            if self.accepts_connections() {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "postgres did not accept connections within {START_TIMEOUT:?}; log:\n{}",
                    tail(&self.log(), 40)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn accepts_connections(&self) -> bool {
        self.command("pg_isready")
            .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-t", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        self.stop_immediate();
    }
}

/// Where the PostgreSQL server binaries are; panics naming what was searched.
fn find_bindir() -> PathBuf {
    let has_binaries = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output()
        && output.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if has_binaries(&dir) {
            return dir;
        }
    }
    if let Some(dir) = newest_versioned_bindir(Path::new("/usr/lib/postgresql"))
        && has_binaries(&dir)
    {
        return dir;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() {
                // `initdb` on PATH is often a link into the real bindir, next to `postgres`.
                let real = fs::canonicalize(dir.join("initdb"))
                    .ok()
                    .and_then(|p| p.parent().map(Path::to_path_buf));
                for candidate in real.into_iter().chain([dir.clone()]) {
                    if has_binaries(&candidate) {
                        return candidate;
                    }
                }
            }
        }
    }
    panic!(
        "TempPostgres: PostgreSQL server binaries (initdb, postgres, pg_isready) not found: \
         `pg_config --bindir` gave none, there is no /usr/lib/postgresql/<version>/bin, and \
         `initdb` is not on PATH. Install PostgreSQL (e.g. the Debian package `postgresql`)."
    )
}

/// `<root>/<version>/bin` with the highest numeric version.
fn newest_versioned_bindir(root: &Path) -> Option<PathBuf> {
    let entries = fs::read_dir(root).ok()?;
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let version: Vec<u32> = name
                .split('.')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            Some((version, entry.path().join("bin")))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, dir)| dir)
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The uid and gid of `postgres`, else `nobody`, from `/etc/passwd`.
fn unprivileged_user() -> (u32, u32) {
    let mut passwd = String::new();
    if let Ok(mut file) = fs::File::open("/etc/passwd") {
        let _ = file.read_to_string(&mut passwd);
    }
    for wanted in ["postgres", "nobody"] {
        for line in passwd.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            if let [name, _, uid, gid, ..] = fields.as_slice()
                && *name == wanted
                && let (Ok(uid), Ok(gid)) = (uid.parse(), gid.parse())
            {
                return (uid, gid);
            }
        }
    }
    panic!(
        "TempPostgres: running as root, and neither a `postgres` nor a `nobody` user exists to \
         run initdb and postgres as (they refuse to run as root)"
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("TempPostgres: cannot find a free port: {e}"))
}

fn wait_exit(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return true,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => return false,
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_newest_version_directory() {
        let root = tempfile::tempdir().unwrap();
        for v in ["9.6", "13", "15", "notaversion"] {
            fs::create_dir_all(root.path().join(v).join("bin")).unwrap();
        }
        assert_eq!(
            newest_versioned_bindir(root.path()),
            Some(root.path().join("15").join("bin"))
        );
    }
}
