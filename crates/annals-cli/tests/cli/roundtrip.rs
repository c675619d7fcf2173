//! `append`, `read`, `read-all` and `check` through the binary, on one store.

use std::io::Write;
use std::process::{Command, Stdio};

use annals_core::{ExpectedRevision, NewEvent, StreamName};
use annals_engine::{Engine, EngineConfig};
use annals_log::LogConfig;

use crate::support::{BIN, annals, annals_ok, json_lines, path_str};

#[test]
fn append_read_read_all_check() {
    let dir = tempfile::tempdir().unwrap();
    let d = path_str(dir.path());

    let out = annals_ok(&[
        "append",
        "--data",
        d,
        "order-1",
        "--expected",
        "no_stream",
        "--type",
        "Placed",
        "--json",
        r#"{"total":12}"#,
    ]);
    assert_eq!(
        json_lines(&out),
        vec![serde_json::json!({"revision": 0, "position": 1})]
    );

    // Binary data from stdin.
    let mut child = Command::new(BIN)
        .args([
            "append",
            "--data",
            d,
            "order-1",
            "--expected",
            "0",
            "--type",
            "Blob",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&[0xff, 0x00, 0x01])
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        json_lines(&String::from_utf8(out.stdout).unwrap()),
        vec![serde_json::json!({"revision": 1, "position": 2})]
    );

    // JSON data from a file.
    let file = dir.path().join("event.json");
    std::fs::write(&file, br#"{"sku":"x"}"#).unwrap();
    annals_ok(&[
        "append",
        "--data",
        d,
        "cart-1",
        "--type",
        "Added",
        "--file",
        path_str(&file),
    ]);

    // A wrong expected revision fails and says why.
    let out = annals(&[
        "append",
        "--data",
        d,
        "order-1",
        "--expected",
        "no_stream",
        "--json",
        "{}",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong expected revision"));
    // Invalid --json is refused before anything is written.
    assert!(
        !annals(&["append", "--data", d, "x", "--json", "{nope"])
            .status
            .success()
    );

    let events = json_lines(&annals_ok(&["read", "--data", d, "order-1"]));
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["type"], "Placed");
    assert_eq!(events[0]["data"], serde_json::json!({"total": 12}));
    assert_eq!(events[0]["revision"], 0);
    assert_eq!(events[0]["stream"], "order-1");
    assert!(events[0]["created"].as_str().unwrap().ends_with('Z'));
    assert_eq!(events[0]["isJson"], true);
    assert_eq!(events[1]["isJson"], false);
    assert_eq!(events[1]["data"], "/wAB");
    assert_eq!(events[1]["position"], 2);

    let back = json_lines(&annals_ok(&[
        "read",
        "--data",
        d,
        "order-1",
        "--backwards",
        "--limit",
        "1",
    ]));
    assert_eq!(back.len(), 1);
    assert_eq!(back[0]["revision"], 1);
    let from = json_lines(&annals_ok(&["read", "--data", d, "order-1", "--from", "1"]));
    assert_eq!(from.len(), 1);
    let missing = annals(&["read", "--data", d, "nope"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));

    let all = json_lines(&annals_ok(&["read-all", "--data", d]));
    let positions: Vec<_> = all
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, vec![1, 2, 3]);
    assert_eq!(all[2]["data"], serde_json::json!({"sku": "x"}));
    let back = json_lines(&annals_ok(&[
        "read-all",
        "--data",
        d,
        "--backwards",
        "--limit",
        "2",
    ]));
    let positions: Vec<_> = back
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, vec![3, 2]);
    let from = json_lines(&annals_ok(&[
        "read-all", "--data", d, "--from", "2", "--limit", "1",
    ]));
    assert_eq!(from[0]["position"], 2);
    let carts = json_lines(&annals_ok(&[
        "read-all",
        "--data",
        d,
        "--stream-prefix",
        "cart",
    ]));
    assert_eq!(carts.len(), 1);
    let typed = json_lines(&annals_ok(&[
        "read-all",
        "--data",
        d,
        "--type-prefix",
        "Pl",
        "--type-prefix",
        "Bl",
    ]));
    assert_eq!(typed.len(), 2);
    let re = json_lines(&annals_ok(&[
        "read-all",
        "--data",
        d,
        "--stream-regex",
        "^order-",
    ]));
    assert_eq!(re.len(), 2);
    let re = json_lines(&annals_ok(&[
        "read-all",
        "--data",
        d,
        "--type-regex",
        "^Added$",
    ]));
    assert_eq!(re.len(), 1);
    // Only one kind of filter at a time.
    assert!(
        !annals(&[
            "read-all",
            "--data",
            d,
            "--stream-prefix",
            "a",
            "--type-regex",
            "b"
        ])
        .status
        .success()
    );

    // Looking at a directory that is not there does not create a store.
    let nowhere = dir.path().join("nowhere");
    assert!(!annals(&["check", path_str(&nowhere)]).status.success());
    assert!(
        !annals(&["read-all", "--data", path_str(&nowhere)])
            .status
            .success()
    );
    assert!(!nowhere.exists());

    let out = annals_ok(&["check", d]);
    assert!(out.contains("events 3"), "{out}");
    assert!(out.contains("problems 0"), "{out}");
    assert!(out.trim_end().ends_with("OK"), "{out}");
}

#[test]
fn check_names_the_corrupt_record() {
    let dir = tempfile::tempdir().unwrap();
    // Small segments, so the damage is in an old segment, far from the tail that recovery may
    // cut: it is corruption, not a torn write.
    let config = EngineConfig {
        log: LogConfig {
            segment_bytes_max: 4_096,
            ..Default::default()
        },
        ..EngineConfig::default()
    };
    let (engine, _) = Engine::open_dir(dir.path(), config).unwrap();
    let stream = StreamName::new("s-1").unwrap();
    for i in 0..200 {
        let e =
            NewEvent::json("T", format!("{{\"i\":{i},\"pad\":\"{}\"}}", "p".repeat(64))).unwrap();
        engine
            .append(&stream, ExpectedRevision::Any, vec![e])
            .unwrap();
    }
    engine.close();
    drop(engine);
    let out = annals_ok(&["check", path_str(dir.path())]);
    assert!(out.contains("problems 0"), "{out}");

    let mut segments: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segments.sort();
    assert!(
        segments.len() > 3,
        "expected several segments, got {segments:?}"
    );
    let first = &segments[0];
    let mut bytes = std::fs::read(first).unwrap();
    bytes[64 + 40] ^= 0x55;
    std::fs::write(first, &bytes).unwrap();

    let out = annals(&["check", path_str(dir.path())]);
    assert!(!out.status.success(), "a corrupt store must fail the check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("corrupt"), "{stdout}");
    assert!(stdout.contains("offset"), "{stdout}");
    assert!(stdout.trim_end().ends_with("FAILED"), "{stdout}");
}
