//! `annals import` through the binary: offline and against a server, events in file order per
//! stream, a re-run that appends nothing, resuming from the progress file (a file that grew, a
//! progress file that lags the store as after a crash, a SIGKILL mid-import), and malformed lines
//! that stop the import or, with `--skip-bad`, are skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{BIN, Server, annals, annals_ok, json_lines, path_str};

/// Streams the generated files spread their lines over.
const STREAMS: usize = 3;

/// `n` lines in runs of one stream (of 1 to 7 lines, so batches break on the stream and a
/// stream's lines are spread over the file); each line's data says its stream's sequence number
/// and its line number.
fn lines(n: usize) -> Vec<String> {
    let mut seq = [0u64; STREAMS];
    let mut out = Vec::with_capacity(n);
    let mut s = 0;
    while out.len() < n {
        let run = 1 + (out.len() * 7 + s) % 7;
        for _ in 0..run {
            if out.len() == n {
                break;
            }
            let line = out.len() + 1;
            out.push(format!(
                r#"{{"stream":"imp-{s}","type":"Imported","data":{{"seq":{},"line":{line}}}}}"#,
                seq[s]
            ));
            seq[s] += 1;
        }
        s = (s + 1) % STREAMS;
    }
    out
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

/// The summary line of an import's stdout.
fn summary(stdout: &str) -> serde_json::Value {
    let all = json_lines(stdout);
    assert_eq!(all.len(), 1, "one summary line: {stdout}");
    all.into_iter().next().unwrap()
}

fn counts(s: &serde_json::Value) -> (u64, u64, u64, u64) {
    let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("no {k} in {s}"));
    (n("lines"), n("appended"), n("skipped"), n("already"))
}

/// Every event of every stream of the store, read back with `annals read`, by stream.
fn read_streams(data: &Path) -> BTreeMap<String, Vec<serde_json::Value>> {
    let d = path_str(data);
    let mut out = BTreeMap::new();
    for s in 0..STREAMS {
        let stream = format!("imp-{s}");
        let out_ = annals(&["read", "--data", d, &stream]);
        let events = if out_.status.success() {
            json_lines(&String::from_utf8(out_.stdout).unwrap())
        } else {
            Vec::new()
        };
        out.insert(stream, events);
    }
    out
}

/// Checks the store holds exactly the first `n` lines of [`lines`], each once, in order in its
/// stream; returns the head position.
fn assert_store_holds(data: &Path, n: usize) -> u64 {
    let expected = lines(n);
    let mut want: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for l in &expected {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        want.entry(v["stream"].as_str().unwrap().to_owned())
            .or_default()
            .push(v["data"].clone());
    }
    let got = read_streams(data);
    for (stream, events) in &got {
        let data: Vec<_> = events.iter().map(|e| e["data"].clone()).collect();
        let want = want.get(stream).cloned().unwrap_or_default();
        assert_eq!(data.len(), want.len(), "{stream}: events");
        assert_eq!(data, want, "{stream}: in file order, each once");
        for e in events {
            assert_eq!(e["type"], "Imported");
        }
    }
    let all = json_lines(&annals_ok(&["read-all", "--data", path_str(data)]));
    assert_eq!(all.len(), n, "events in $all");
    all.last().map_or(0, |e| e["position"].as_u64().unwrap())
}

fn progress_of(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".annals-import");
    PathBuf::from(name)
}

#[test]
fn offline_import_keeps_order_and_a_rerun_appends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let file = dir.path().join("in.jsonl");
    let n = 2_500;
    let mut text = lines(n);
    // A given id is kept, metadata too, and a blank line is no event.
    text.push(
        r#"{"stream":"given","type":"G","data":[1],"id":"0d2c9e4a-1b7f-4c55-9a51-6a4d2e9f0c11","metadata":{"src":"x"}}"#
            .to_owned(),
    );
    text.push(String::new());
    write_lines(&file, &text);
    let (d, f) = (path_str(&data), path_str(&file));

    let out = annals_ok(&["import", "--data", d, f]);
    assert!(
        out.starts_with(r#"{"lines":"#),
        "the summary's fields in order: {out}"
    );
    let first = summary(&out);
    assert_eq!(
        counts(&first),
        (n as u64 + 2, n as u64 + 1, 0, 0),
        "{first}"
    );
    assert!(first["seconds"].as_f64().is_some(), "{first}");
    let given = json_lines(&annals_ok(&["read", "--data", d, "given"]));
    assert_eq!(given.len(), 1);
    assert_eq!(given[0]["id"], "0d2c9e4a-1b7f-4c55-9a51-6a4d2e9f0c11");
    assert_eq!(given[0]["metadata"], serde_json::json!({"src": "x"}));
    assert_eq!(given[0]["data"], serde_json::json!([1]));
    let head = {
        let all = json_lines(&annals_ok(&["read-all", "--data", d]));
        assert_eq!(all.len(), n + 1);
        all.last().unwrap()["position"].as_u64().unwrap()
    };
    let all_but_given = read_streams(&data);
    assert_eq!(all_but_given.values().map(Vec::len).sum::<usize>(), n);
    assert!(progress_of(&file).exists(), "the progress file is kept");

    // The progress file says everything is done: nothing is read again, nothing appended.
    let again = summary(&annals_ok(&["import", "--data", d, f]));
    assert_eq!(
        counts(&again),
        (n as u64 + 2, 0, 0, n as u64 + 2),
        "{again}"
    );
    // Without it, the same ids are sent again and the store answers them as appended already.
    std::fs::remove_file(progress_of(&file)).unwrap();
    let blind = summary(&annals_ok(&["import", "--data", d, f]));
    assert_eq!(
        counts(&blind),
        (n as u64 + 2, 0, 0, n as u64 + 1),
        "{blind}"
    );
    let all = json_lines(&annals_ok(&["read-all", "--data", d]));
    assert_eq!(all.len(), n + 1, "no event was appended twice");
    assert_eq!(all.last().unwrap()["position"].as_u64().unwrap(), head);

    // Standard input, without a progress file.
    let piped = dir.path().join("piped");
    let input = std::fs::File::open(&file).unwrap();
    let out = Command::new(BIN)
        .args(["import", "--data", path_str(&piped), "-"])
        .stdin(input)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let s = summary(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(counts(&s), (n as u64 + 2, n as u64 + 1, 0, 0), "{s}");
}

#[test]
fn a_file_that_grew_is_resumed_after_its_imported_lines() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let file = dir.path().join("in.jsonl");
    let (d, f) = (path_str(&data), path_str(&file));
    let all = lines(1_000);
    write_lines(&file, &all[..400]);
    let s = summary(&annals_ok(&["import", "--data", d, f]));
    assert_eq!(counts(&s), (400, 400, 0, 0), "{s}");
    write_lines(&file, &all);
    let s = summary(&annals_ok(&["import", "--data", d, f]));
    assert_eq!(counts(&s), (1_000, 600, 0, 400), "{s}");
    assert_store_holds(&data, 1_000);

    // A file whose imported part changed is refused rather than imported with other ids.
    let mut changed = all.clone();
    changed[10] = changed[10].replace("Imported", "Changed");
    write_lines(&file, &changed);
    let out = annals(&["import", "--data", d, f]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not begin with"), "{err}");
    assert_store_holds(&data, 1_000);
}

#[test]
fn a_progress_file_behind_the_store_sends_batches_again_harmlessly() {
    // As after a crash between an acknowledged append and the progress file's update: the store
    // holds lines the progress file does not claim.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let file = dir.path().join("in.jsonl");
    let progress = dir.path().join("progress.json");
    let (d, f, p) = (path_str(&data), path_str(&file), path_str(&progress));
    let all = lines(3_000);
    write_lines(&file, &all[..1_000]);
    annals_ok(&["import", "--data", d, f, "--progress", p]);
    let behind = std::fs::read(&progress).unwrap();
    write_lines(&file, &all);
    annals_ok(&["import", "--data", d, f, "--progress", p]);
    let head = assert_store_holds(&data, 3_000);

    std::fs::write(&progress, behind).unwrap();
    let s = summary(&annals_ok(&["import", "--data", d, f, "--progress", p]));
    assert_eq!(counts(&s), (3_000, 0, 0, 3_000), "{s}");
    assert_eq!(
        assert_store_holds(&data, 3_000),
        head,
        "the head did not move"
    );
}

#[test]
fn an_import_killed_midway_continues_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let file = dir.path().join("in.jsonl");
    let (d, f) = (path_str(&data), path_str(&file));
    let n = 60_000;
    write_lines(&file, &lines(n));
    let mut child = Command::new(BIN)
        .args(["import", "--data", d, f])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once it has recorded some progress (or when it is done, on a fast machine).
    let started = Instant::now();
    let mut killed = false;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if progress_of(&file).exists() {
            child.kill().unwrap();
            child.wait().unwrap();
            killed = true;
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "import hangs");
        std::thread::sleep(Duration::from_millis(5));
    }
    let s = summary(&annals_ok(&["import", "--data", d, f]));
    let (lines_, appended, skipped, already) = counts(&s);
    assert_eq!((lines_, skipped), (n as u64, 0), "{s}");
    assert_eq!(appended + already, n as u64, "{s}");
    if killed {
        assert!(already > 0 && appended > 0, "killed midway: {s}");
    }
    assert_store_holds(&data, n);
}

#[test]
fn a_malformed_line_stops_the_import_and_skip_bad_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let file = dir.path().join("in.jsonl");
    let (d, f) = (path_str(&data), path_str(&file));
    let mut text = lines(10);
    text[5] = r#"{"stream":"imp-0","type":"#.to_owned();
    text[7] = r#"{"stream":"imp-1","type":"T","data":1,"id":"not-a-uuid"}"#.to_owned();
    write_lines(&file, &text);

    let out = annals(&["import", "--data", d, f]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 6 of"), "{err}");
    let s = summary(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(counts(&s), (6, 5, 0, 0), "{s}");
    assert_store_holds(&data, 5);

    // Again: it stops at the same line, having appended nothing more.
    let out = annals(&["import", "--data", d, f]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 6 of"));
    assert_store_holds(&data, 5);

    let out = annals(&["import", "--data", d, f, "--skip-bad"]);
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("skipped line 6 of"), "{err}");
    assert!(err.contains("skipped line 8 of"), "{err}");
    let s = summary(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(counts(&s), (10, 3, 2, 5), "{s}");
    let got = read_streams(&data);
    let lines_in_store: Vec<u64> = {
        let mut v: Vec<u64> = got
            .values()
            .flatten()
            .map(|e| e["data"]["line"].as_u64().unwrap())
            .collect();
        v.sort_unstable();
        v
    };
    assert_eq!(lines_in_store, [1, 2, 3, 4, 5, 7, 9, 10]);
}

#[test]
fn import_through_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let file = dir.path().join("in.jsonl");
    let n = 3_000;
    let mut text = lines(n);
    // A stream name that needs escaping in the URL path.
    text.push(r#"{"stream":"odd/name ?#%","type":"T","data":{"x":1}}"#.to_owned());
    write_lines(&file, &text);
    let mut server = Server::start(&data, &[]);
    let addr = server.addr.to_string();
    let f = path_str(&file);
    assert!(
        !annals(&["import", "--server", &addr, "--data", path_str(&data), f])
            .status
            .success(),
        "--server and --data together"
    );
    let s = summary(&annals_ok(&["import", "--server", &addr, f]));
    assert_eq!(counts(&s), (n as u64 + 1, n as u64 + 1, 0, 0), "{s}");
    std::fs::remove_file(progress_of(&file)).unwrap();
    let s = summary(&annals_ok(&["import", "--server", &addr, f]));
    assert_eq!(counts(&s), (n as u64 + 1, 0, 0, n as u64 + 1), "{s}");
    assert!(server.terminate().success());
    drop(server);
    let odd = json_lines(&annals_ok(&[
        "read",
        "--data",
        path_str(&data),
        "odd/name ?#%",
    ]));
    assert_eq!(odd.len(), 1);
    assert_eq!(odd[0]["data"], serde_json::json!({"x": 1}));
    let all = json_lines(&annals_ok(&["read-all", "--data", path_str(&data)]));
    assert_eq!(all.len(), n + 1);
    let by_stream = read_streams(&data);
    assert_eq!(by_stream.values().map(Vec::len).sum::<usize>(), n);
    for events in by_stream.values() {
        let seqs: Vec<u64> = events
            .iter()
            .map(|e| e["data"]["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    }
}
