//! Each bench runs at a tiny size and ends with one JSON line holding its figures. No timing is
//! asserted: these only show the benches work.

use crate::support::{annals_ok, path_str};

fn last_json_line(stdout: &str) -> serde_json::Value {
    let last = stdout.lines().last().expect("the bench printed nothing");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON: {last:?}: {e}"))
}

fn assert_numbers(figures: &serde_json::Value, fields: &[&str]) {
    for f in fields {
        assert!(
            figures[f].is_number(),
            "field {f} missing or not a number in {figures}"
        );
    }
}

#[test]
fn bench_append_prints_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = annals_ok(&[
        "bench",
        "append",
        "--data",
        path_str(dir.path()),
        "--writers",
        "4",
        "--events",
        "200",
        "--batch",
        "2",
        "--rounds",
        "2",
        "--json",
    ]);
    let figures = last_json_line(&out);
    assert_numbers(
        &figures,
        &[
            "events_per_s",
            "p50_us",
            "p99_us",
            "baseline_events_per_s",
            "ratio",
            "batch_events_avg",
            "fsync_p50_us",
        ],
    );
    assert_eq!(figures["events"], 200);
    assert!(!dir.path().join("bench-baseline.tmp").exists());
}

#[test]
fn bench_replay_prints_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = annals_ok(&[
        "bench",
        "replay",
        "--data",
        path_str(dir.path()),
        "--events",
        "3000",
        "--json",
    ]);
    let figures = last_json_line(&out);
    assert_numbers(
        &figures,
        &[
            "events_per_s",
            "baseline_events_per_s",
            "ratio",
            "open_ms",
            "rss_mb",
            "rss_mb_after_open",
        ],
    );
    assert_eq!(figures["events"], 3000);
}

#[test]
fn bench_read_stream_prints_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = annals_ok(&[
        "bench",
        "read-stream",
        "--data",
        path_str(dir.path()),
        "--streams",
        "10",
        "--reads",
        "100",
        "--json",
    ]);
    let figures = last_json_line(&out);
    assert_numbers(&figures, &["p50_us", "p99_us", "reads_per_s"]);
}

/// `bench ui` starts a server with projections, loads it with and without an open overview
/// page, and its feed delivers status events holding a row per projection.
#[test]
fn bench_ui_prints_json() {
    let out = annals_ok(&[
        "bench",
        "ui",
        "--seconds",
        "1",
        "--projections",
        "2",
        "--clients",
        "4",
        "--rate",
        "200",
        "--rounds",
        "1",
        "--json",
    ]);
    let figures = last_json_line(&out);
    assert_numbers(
        &figures,
        &[
            "no_ui_cpu_pct",
            "ui_cpu_pct",
            "ui_added_cpu_pct",
            "snapshot_cpu_us",
            "snapshot_behind_cpu_us",
            "feeds_cpu_pct_in_process",
        ],
    );
    assert!(figures["status_events"].as_u64().unwrap() >= 1, "{figures}");
    assert_eq!(figures["consumers_in_feed"], 2, "{figures}");
    assert!(figures["page_bytes"].as_u64().unwrap() > 0, "{figures}");
    assert!(
        figures["snapshot_cpu_us"].as_f64().unwrap() > 0.0,
        "{figures}"
    );
    let rounds = figures["per_round"].as_array().unwrap();
    assert_eq!(rounds.len(), 1, "{figures}");
    assert!(
        rounds[0]["status_events"].as_u64().unwrap() >= 1,
        "{figures}"
    );
}
