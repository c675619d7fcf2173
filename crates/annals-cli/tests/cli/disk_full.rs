//! `annals serve` on a small tmpfs that fills up (the test mounts one; tests run as root): appends
//! fail cleanly with 503, `/health` says `read_only` with the reason, reads go on; once space is
//! freed the server takes writes again without a restart, and every acknowledged append is there,
//! once, after a restart and by `annals check`.
//!
//! Which write meets the full disk first is a race between the log and the index store (redb
//! grows its file on its own commits); the server repairs either in place (the index store by
//! reopening it), and the test says which it met. The engine's fault tests cover each
//! deterministically.

use std::process::Command;
use std::time::{Duration, Instant};

use std::collections::HashSet;

use crate::support::{Server, annals_ok, json_lines, path_str};

/// Size of the file system, and how much of it a filler file takes at first.
const TMPFS_MB: u64 = 32;
const FILLER_MB: u64 = 26;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount() -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={TMPFS_MB}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("cannot run mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs failed (this test needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// What the appends that fill the disk look like, which decides what meets the full disk first.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Appends {
    /// 4 KB events to ten streams: the log grows faster than the index.
    LargeEvents,
    /// Small events, each to a stream of its own (in 1,000 categories): the index grows in
    /// larger steps than the log (redb allocates regions).
    ManyStreams,
}

impl Appends {
    fn stream(self, i: u64) -> String {
        match self {
            Appends::LargeEvents => format!("s-{}", i % 10),
            Appends::ManyStreams => format!("s{}-{i}", i % 1_000),
        }
    }
}

fn append(
    client: &reqwest::blocking::Client,
    base: &str,
    appends: Appends,
    i: u64,
) -> reqwest::blocking::Response {
    let pad = match appends {
        Appends::LargeEvents => "x".repeat(4_000),
        Appends::ManyStreams => String::new(),
    };
    client
        .post(format!("{base}/streams/{}", appends.stream(i)))
        .json(&serde_json::json!({"events": [{"type": "E", "data": {"i": i, "pad": pad}}]}))
        .send()
        .unwrap()
}

#[test]
fn a_full_disk_met_by_the_log_makes_the_server_read_only_until_space_is_freed() {
    full_disk(Appends::LargeEvents, "log write failed");
}

#[test]
fn a_full_disk_met_by_the_index_store_makes_the_server_read_only_until_space_is_freed() {
    full_disk(Appends::ManyStreams, "index");
}

/// Fills the disk with `appends` until one is refused (the reason starting with `met_first`),
/// frees space, and checks that writes resume with nothing acknowledged lost.
fn full_disk(appends: Appends, met_first: &str) {
    let fs = Tmpfs::mount();
    let data = fs.dir.path().join("data");
    let filler = fs.dir.path().join("filler");
    let server = Server::start(&data, &[]);
    std::fs::write(&filler, vec![0u8; (FILLER_MB * 1024 * 1024) as usize]).unwrap();
    let base = format!("http://{}", server.addr);
    let client = reqwest::blocking::Client::new();

    // Fill the disk: the first refused append is a clean 503.
    let mut acked: HashSet<u64> = HashSet::new();
    let mut next = 0u64;
    let refused = loop {
        let r = append(&client, &base, appends, next);
        next += 1;
        if r.status() != 200 {
            break r;
        }
        acked.insert(next - 1);
        assert!(next < 100_000, "the disk never filled");
    };
    assert_eq!(refused.status(), 503);
    let body: serde_json::Value = refused.json().unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("No space left"),
        "{body}"
    );
    let health = client.get(format!("{base}/health")).send().unwrap();
    assert_eq!(health.status(), 503);
    let health: serde_json::Value = health.json().unwrap();
    assert_eq!(health["status"], "read_only", "{health}");
    let reason = health["reason"].as_str().unwrap();
    assert!(reason.starts_with(met_first), "{appends:?}: {health}");
    for i in [0, next - 2] {
        let read = client
            .get(format!("{base}/streams/{}", appends.stream(i)))
            .send()
            .unwrap();
        assert_eq!(read.status(), 200, "reads go on");
    }

    // Space is back: writes resume without a restart.
    std::fs::remove_file(&filler).unwrap();
    let started = Instant::now();
    loop {
        let r = append(&client, &base, appends, next);
        next += 1;
        if r.status() == 200 {
            acked.insert(next - 1);
            break;
        }
        assert_eq!(r.status(), 503);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "writes did not resume after space was freed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let health = client.get(format!("{base}/health")).send().unwrap();
    assert_eq!(health.status(), 200, "{}", health.text().unwrap());
    for _ in 0..20 {
        assert_eq!(append(&client, &base, appends, next).status(), 200);
        acked.insert(next);
        next += 1;
    }

    // Every acknowledged append is there once, and the store checks clean. A refused append
    // may be there too (once): one whose indexing met the full disk after it was in the log,
    // which the repair published.
    let mut server = server;
    assert!(server.terminate().success());
    // Exits 0 only when healthy.
    annals_ok(&["check", path_str(&data)]);
    let all = json_lines(&annals_ok(&["read-all", "--data", path_str(&data)]));
    let found: Vec<u64> = all
        .iter()
        .map(|e| e["data"]["i"].as_u64().unwrap())
        .collect();
    let unique: HashSet<u64> = found.iter().copied().collect();
    assert_eq!(unique.len(), found.len(), "no append twice");
    let missing: Vec<&u64> = acked.difference(&unique).collect();
    assert!(missing.is_empty(), "acknowledged appends lost: {missing:?}");
    // One append at a time: only the first refused one can have reached the log.
    let extra = unique.difference(&acked).count();
    assert!(extra <= 1, "{extra} refused appends were written");
}
