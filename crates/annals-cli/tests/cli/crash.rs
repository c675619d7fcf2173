//! The real-process crash test: `annals load` appends from 8 threads with fsync durability and
//! prints an `ack` line after each acknowledged append; the test SIGKILLs it at a random moment,
//! then opens the store in-process and insists that every acknowledged event is there at exactly
//! its stream, revision, position and id, that positions are dense, that every stream's revisions
//! run from 0 without a gap, and that `check` finds nothing wrong. The next cycle goes on in the
//! same directory, so recovery runs over the result of earlier recoveries.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use annals_core::{Direction, Position, Revision, StreamName};
use annals_engine::{Engine, EngineConfig};
use rand::Rng;
use uuid::Uuid;

use crate::support::{BIN, path_str};

/// Kill cycles in one run.
const CYCLES: usize = 20;
/// Every this many cycles the kill comes a few milliseconds after start, often during open and
/// recovery, without waiting for an ack.
const EARLY_KILL_EVERY: usize = 5;
/// Longest wait for the first ack of a cycle.
const FIRST_ACK_WAIT: Duration = Duration::from_secs(30);
/// Acknowledged appends whose place is also checked through `read_stream`, per cycle.
const STREAM_READ_CHECKS_MAX: usize = 500;

/// One `ack <stream> <revision> <position> <id>` line.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Ack {
    stream: String,
    revision: u64,
    position: u64,
    id: Uuid,
}

fn parse_ack(line: &str) -> Ack {
    let parts: Vec<&str> = line.split(' ').collect();
    assert_eq!(parts.len(), 5, "malformed ack line {line:?}");
    assert_eq!(parts[0], "ack", "malformed ack line {line:?}");
    Ack {
        stream: parts[1].to_owned(),
        revision: parts[2].parse().unwrap(),
        position: parts[3].parse().unwrap(),
        id: parts[4].parse().unwrap(),
    }
}

fn start_load(dir: &Path, writers: u32) -> Child {
    Command::new(BIN)
        .args([
            "load",
            "--data",
            path_str(dir),
            "--writers",
            &writers.to_string(),
            "--events",
            "1000000",
            "--streams",
            "40",
            "--durability",
            "fsync",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start annals load")
}

/// Runs one load process, kills it, and returns every whole ack line it printed.
fn run_and_kill(dir: &Path, writers: u32, early: bool, rng: &mut impl Rng) -> Vec<Ack> {
    let mut child = start_load(dir, writers);
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        loop {
            let mut line = String::new();
            match stdout.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                // A line cut short by the kill was never a whole acknowledgement.
                Ok(_) if !line.ends_with('\n') => break,
                Ok(_) => {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut lines = Vec::new();
    if early {
        std::thread::sleep(Duration::from_millis(rng.random_range(0..30)));
    } else {
        match rx.recv_timeout(FIRST_ACK_WAIT) {
            Ok(line) => lines.push(line),
            Err(_) => panic!("annals load printed no ack within {FIRST_ACK_WAIT:?}"),
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(50..300)));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap the killed process");
    reader.join().unwrap();
    lines.extend(rx.try_iter());
    lines.iter().map(|l| parse_ack(l.trim_end())).collect()
}

/// Opens the store and checks it against every ack so far; returns the head.
fn verify(dir: &Path, all_acks: &[Ack], new_acks: &[Ack]) -> u64 {
    let (engine, report) =
        Engine::open_dir(dir, EngineConfig::default()).expect("the store opens after SIGKILL");
    let head = engine.head();
    assert_eq!(report.head, head);

    // Walk `$all`: positions dense from 1 to the head, revisions contiguous per stream.
    let mut by_position: HashMap<u64, (String, u64, Uuid)> = HashMap::new();
    let mut next_revision: HashMap<String, u64> = HashMap::new();
    let mut expected_position = 1u64;
    let mut from = Position(1);
    loop {
        let page = engine
            .read_all(from, Direction::Forwards, 4_096, None)
            .unwrap();
        for e in &page.events {
            assert_eq!(e.position.0, expected_position, "positions must be dense");
            expected_position += 1;
            let next = next_revision.entry(e.stream.to_string()).or_insert(0);
            assert_eq!(
                e.revision.0, *next,
                "{}: revisions must run from 0 without a gap",
                e.stream
            );
            *next += 1;
            by_position.insert(e.position.0, (e.stream.to_string(), e.revision.0, e.id));
        }
        if page.end_reached || page.events.is_empty() {
            break;
        }
        from = page.next;
    }
    assert_eq!(expected_position - 1, head.0, "$all must end at the head");

    for ack in all_acks {
        let found = by_position
            .get(&ack.position)
            .unwrap_or_else(|| panic!("acknowledged {ack:?} is lost: head is {head:?}"));
        assert_eq!(
            found,
            &(ack.stream.clone(), ack.revision, ack.id),
            "position {} holds something else than was acknowledged",
            ack.position
        );
    }
    for ack in new_acks.iter().take(STREAM_READ_CHECKS_MAX) {
        let stream = StreamName::new(&ack.stream).unwrap();
        let got = engine
            .read_stream(&stream, Revision(ack.revision), Direction::Forwards, 1)
            .unwrap();
        assert_eq!(got.len(), 1, "{ack:?} not readable from its stream");
        assert_eq!((got[0].id, got[0].position.0), (ack.id, ack.position));
    }
    for (stream, next) in &next_revision {
        let stream = StreamName::new(stream).unwrap();
        let last = engine
            .read_stream(&stream, Revision::END, Direction::Backwards, 1)
            .unwrap();
        assert_eq!(
            last[0].revision.0 + 1,
            *next,
            "{stream}: index head disagrees"
        );
    }

    let check = engine.check(|_| {}).unwrap();
    assert!(check.problems.is_empty(), "check: {:?}", check.problems);
    assert_eq!(check.events, head.0);
    engine.close();
    head.0
}

/// What a run of kill cycles saw.
struct Summary {
    acked: usize,
    longest_verify: Duration,
}

/// Runs `cycles` load-and-SIGKILL cycles of `writers` writers, verifying every acknowledged
/// event after each; starts a fresh store every `store_cycles` cycles (so a long soak's checks
/// stay bounded), else recovery runs over the earlier recoveries.
fn kill_cycles(cycles: usize, writers: u32, store_cycles: usize) -> Summary {
    let seed: u64 = rand::rng().random();
    eprintln!("crash test seed {seed}");
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let started = Instant::now();
    let mut dir = tempfile::tempdir().unwrap();
    let mut all_acks: Vec<Ack> = Vec::new();
    let mut acked = 0;
    let mut longest_verify = Duration::ZERO;
    let mut last_head = 0;
    for cycle in 0..cycles {
        if cycle > 0 && cycle % store_cycles == 0 {
            dir = tempfile::tempdir().unwrap();
            all_acks.clear();
            last_head = 0;
        }
        let early = cycle % EARLY_KILL_EVERY == EARLY_KILL_EVERY - 1;
        let acks = run_and_kill(dir.path(), writers, early, &mut rng);
        acked += acks.len();
        all_acks.extend(acks.iter().cloned());
        let verify_started = Instant::now();
        let head = verify(dir.path(), &all_acks, &acks);
        longest_verify = longest_verify.max(verify_started.elapsed());
        assert!(
            head >= last_head,
            "the head went back from {last_head} to {head}"
        );
        eprintln!(
            "cycle {cycle}: {} acks, head {head}, {:.1} s",
            acks.len(),
            started.elapsed().as_secs_f64()
        );
        last_head = head;
    }
    Summary {
        acked,
        longest_verify,
    }
}

#[test]
fn sigkill_during_durable_appends_loses_no_acknowledged_event() {
    let summary = kill_cycles(CYCLES, 8, CYCLES);
    assert!(
        summary.acked > CYCLES,
        "too few acks ({}) for the test to mean much",
        summary.acked
    );
}

/// The long soak `scripts/soak.sh` runs (not CI): `ANNALS_SOAK_CYCLES` cycles (1,000) of
/// `ANNALS_SOAK_WRITERS` writers (64), a fresh store every `ANNALS_SOAK_STORE_CYCLES` (100).
#[test]
#[ignore = "a long soak: scripts/soak.sh runs it"]
fn soak_sigkill_cycles() {
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let cycles = env("ANNALS_SOAK_CYCLES", 1_000);
    let writers = env("ANNALS_SOAK_WRITERS", 64);
    let store_cycles = env("ANNALS_SOAK_STORE_CYCLES", 100);
    let started = Instant::now();
    let summary = kill_cycles(cycles, u32::try_from(writers).unwrap(), store_cycles);
    eprintln!(
        "soak: {cycles} SIGKILL cycles, {writers} writers, {} acknowledged appends all found once with contiguous revisions and dense positions, longest verify {:.2} s, {:.0} s in all",
        summary.acked,
        summary.longest_verify.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert!(summary.acked > cycles);
}
