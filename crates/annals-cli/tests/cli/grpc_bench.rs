//! `annals bench grpc-append`, `grpc-replay` and `persistent` at tiny sizes against a real
//! `annals serve`: each prints positive figures for both sides, and what it says it wrote is in
//! the server, read back over gRPC by a separate client. No timing is asserted. The runs with the
//! official client (`--client kurrentdb`) need the binary built with the `kurrentdb-client`
//! feature; without it, they check that the option fails saying so.

use kurrentdb::{Client, ReadAllOptions};

use crate::support::{Server, annals, annals_ok, last_json_line, path_str, runtime};

/// Every event in the server's `$all`, as (stream, event type) pairs.
fn read_all_events(server: &Server) -> Vec<(String, String)> {
    runtime().block_on(async {
        let client = Client::new(server.url().parse().unwrap()).unwrap();
        let mut read = client
            .read_all(&ReadAllOptions::default().max_count(100_000))
            .await
            .unwrap();
        let mut out = Vec::new();
        while let Some(e) = read.next().await.unwrap() {
            let e = e.get_original_event();
            out.push((e.stream_id().to_owned(), e.event_type.clone()));
        }
        out
    })
}

fn assert_positive(figures: &serde_json::Value, fields: &[&str]) {
    for f in fields {
        let v = figures[f]
            .as_f64()
            .unwrap_or_else(|| panic!("field {f} missing or not a number in {figures}"));
        assert!(v > 0.0, "field {f} is {v} in {figures}");
    }
}

#[test]
fn grpc_benches_run_against_a_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let baseline = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let addr = server.addr.to_string();

    let out = annals_ok(&[
        "bench",
        "grpc-append",
        "--server",
        &addr,
        "--clients",
        "8",
        "--events",
        "200",
        "--baseline-dir",
        path_str(baseline.path()),
        "--json",
    ]);
    let figures = last_json_line(&out);
    assert_positive(
        &figures,
        &[
            "events_per_s",
            "p50_us",
            "p99_us",
            "baseline_events_per_s",
            "baseline_p50_us",
            "baseline_p99_us",
            "ratio",
        ],
    );
    assert_eq!(figures["events"], 200, "{figures}");
    // The server's CPU from its /metrics (ticks of 10 ms: a short run may read 0).
    assert!(
        figures["server_cpu_us_per_event"]
            .as_f64()
            .is_some_and(|v| v >= 0.0),
        "{figures}"
    );
    assert_eq!(figures["baseline_events"], 200, "{figures}");
    assert_eq!(figures["clients"], 8, "{figures}");
    assert_eq!(figures["client"], "annals", "{figures}");
    let events = read_all_events(&server);
    assert_eq!(
        events.len(),
        200,
        "the server holds other than the 200 appends"
    );
    let streams: std::collections::HashSet<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(streams.len(), 8, "one stream per client: {streams:?}");
    assert!(
        events
            .iter()
            .all(|(s, t)| s.starts_with("grpc-bench-") && t == "BenchEvent"),
        "{events:?}"
    );
    // The baseline's temporary store is gone.
    assert_eq!(std::fs::read_dir(baseline.path()).unwrap().count(), 0);

    // The server holds 200 events: the replay appends 300 more, then reads all 500.
    let replay = |server: &str, events: &str, client: &str| {
        last_json_line(&annals_ok(&[
            "bench",
            "grpc-replay",
            "--server",
            server,
            "--client",
            client,
            "--events",
            events,
            "--baseline-dir",
            path_str(baseline.path()),
            "--json",
        ]))
    };
    let figures = replay(&addr, "500", "annals");
    assert_positive(
        &figures,
        &[
            "events_per_s",
            "baseline_events_per_s",
            "ratio",
            "fill_events_per_s",
        ],
    );
    assert_eq!(figures["events"], 500, "{figures}");
    assert!(
        figures["server_cpu_us_per_event"]
            .as_f64()
            .is_some_and(|v| v >= 0.0),
        "{figures}"
    );
    assert_eq!(figures["filled"], 300, "{figures}");
    let events = read_all_events(&server);
    assert_eq!(events.len(), 500);
    assert_eq!(
        events
            .iter()
            .filter(|(s, _)| s.starts_with("grpc-fill-"))
            .count(),
        300
    );

    // Enough events already: nothing is appended, and a read shorter than $all works. The server
    // may be given as an http:// URL as well.
    let figures = replay(&format!("http://{addr}"), "350", "annals");
    assert_positive(
        &figures,
        &["events_per_s", "baseline_events_per_s", "ratio"],
    );
    assert_eq!(figures["filled"], 0, "{figures}");
    assert_eq!(figures["events"], 350, "{figures}");
    assert_eq!(read_all_events(&server).len(), 500);
    assert_eq!(std::fs::read_dir(baseline.path()).unwrap().count(), 0);

    // Appends on one BatchAppend call per connection: 100 more.
    let batch_append = |client: &str| {
        last_json_line(&annals_ok(&[
            "bench",
            "grpc-append",
            "--server",
            &addr,
            "--client",
            client,
            "--rpc",
            "batch-append",
            "--clients",
            "6",
            "--connections",
            "2",
            "--events",
            "100",
            "--baseline-dir",
            path_str(baseline.path()),
            "--json",
        ]))
    };
    let figures = batch_append("annals");
    assert_positive(
        &figures,
        &["events_per_s", "p50_us", "baseline_events_per_s", "ratio"],
    );
    assert_eq!(
        (&figures["client"], &figures["rpc"], &figures["events"]),
        (&"annals".into(), &"batch-append".into(), &100.into()),
        "{figures}"
    );
    assert_eq!(read_all_events(&server).len(), 600);

    official_client(&server, &baseline, 600);
}

/// The same with the official `kurrentdb` client, on a server holding `held` events: 100 more
/// appends over 2 shared connections, all read back, then 100 more on BatchAppend calls.
#[cfg(feature = "kurrentdb-client")]
fn official_client(server: &Server, baseline: &tempfile::TempDir, held: usize) {
    let addr = server.addr.to_string();
    let figures = last_json_line(&annals_ok(&[
        "bench",
        "grpc-append",
        "--server",
        &addr,
        "--client",
        "kurrentdb",
        "--clients",
        "4",
        "--connections",
        "2",
        "--events",
        "100",
        "--baseline-dir",
        path_str(baseline.path()),
        "--json",
    ]));
    assert_positive(
        &figures,
        &["events_per_s", "baseline_events_per_s", "ratio"],
    );
    assert_eq!(figures["client"], "kurrentdb", "{figures}");
    assert_eq!(figures["connections"], 2, "{figures}");
    assert_eq!(read_all_events(server).len(), held + 100);
    let total = (held + 100).to_string();
    let figures = last_json_line(&annals_ok(&[
        "bench",
        "grpc-replay",
        "--server",
        &addr,
        "--client",
        "kurrentdb",
        "--events",
        &total,
        "--baseline-dir",
        path_str(baseline.path()),
        "--json",
    ]));
    assert_positive(
        &figures,
        &["events_per_s", "baseline_events_per_s", "ratio"],
    );
    assert_eq!(
        (figures["filled"].as_u64(), figures["events"].as_u64()),
        (Some(0), Some(held as u64 + 100))
    );

    let figures = last_json_line(&annals_ok(&[
        "bench",
        "grpc-append",
        "--server",
        &addr,
        "--client",
        "kurrentdb",
        "--rpc",
        "batch-append",
        "--clients",
        "6",
        "--connections",
        "2",
        "--events",
        "100",
        "--baseline-dir",
        path_str(baseline.path()),
        "--json",
    ]));
    assert_positive(
        &figures,
        &["events_per_s", "p50_us", "baseline_events_per_s", "ratio"],
    );
    assert_eq!(
        (&figures["client"], &figures["rpc"], &figures["events"]),
        (&"kurrentdb".into(), &"batch-append".into(), &100.into()),
        "{figures}"
    );
    assert_eq!(read_all_events(server).len(), held + 200);
}

/// Without the `kurrentdb-client` feature, `--client kurrentdb` fails at once, saying how to
/// build with it, and writes nothing.
#[cfg(not(feature = "kurrentdb-client"))]
fn official_client(server: &Server, baseline: &tempfile::TempDir, held: usize) {
    let addr = server.addr.to_string();
    for bench in ["grpc-append", "grpc-replay"] {
        let out = annals(&[
            "bench",
            bench,
            "--server",
            &addr,
            "--client",
            "kurrentdb",
            "--events",
            "100",
            "--baseline-dir",
            path_str(baseline.path()),
        ]);
        assert!(
            !out.status.success(),
            "{bench} ran without the official client"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("--features kurrentdb-client"),
            "{bench}: {stderr}"
        );
    }
    assert_eq!(read_all_events(server).len(), held);
}

/// The lean client speaks cleartext only: an https:// server is refused before anything runs.
#[test]
fn grpc_bench_lean_client_refuses_tls() {
    let baseline = tempfile::tempdir().unwrap();
    let out = annals(&[
        "bench",
        "grpc-append",
        "--server",
        "https://127.0.0.1:1",
        "--baseline-dir",
        path_str(baseline.path()),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cleartext"), "{stderr}");
    assert_eq!(std::fs::read_dir(baseline.path()).unwrap().count(), 0);
}

#[test]
fn persistent_bench_runs_in_process_and_against_a_server() {
    // In process, over a store of its own: the figures are there and every event was handed
    // out exactly once across the consumers.
    let dir = tempfile::tempdir().unwrap();
    let out = annals_ok(&[
        "bench",
        "persistent",
        "--data",
        path_str(dir.path()),
        "--consumers",
        "3",
        "--events",
        "300",
        "--live-events",
        "50",
        "--rate",
        "500",
        "--json",
    ]);
    let figures = last_json_line(&out);
    assert_positive(
        &figures,
        &[
            "events_per_s",
            "baseline_events_per_s",
            "ratio",
            "consumer_min",
            "live_p50_ms",
            "live_p99_ms",
        ],
    );
    assert_eq!(figures["consumers"], 3, "{figures}");
    assert_eq!(figures["redelivered"], 0, "{figures}");
    // The store holds the bench's 350 events (and the group's own bookkeeping).
    let (engine, _) =
        annals_engine::Engine::open_dir(dir.path(), annals_engine::EngineConfig::default())
            .unwrap();
    let benched = engine
        .read_all(
            annals_core::Position(0),
            annals_core::Direction::Forwards,
            10_000,
            None,
        )
        .unwrap()
        .events
        .into_iter()
        .filter(|e| e.stream.as_str().starts_with("bench_persistent-"))
        .count();
    assert_eq!(benched, 350);
    engine.close();

    // Against a running server, and a refused pair of options.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let out = annals_ok(&[
        "bench",
        "persistent",
        "--server",
        &server.addr.to_string(),
        "--events",
        "100",
        "--live-events",
        "0",
        "--json",
    ]);
    let figures = last_json_line(&out);
    assert_positive(&figures, &["events_per_s", "baseline_events_per_s"]);
    let refused = annals(&["bench", "persistent", "--events", "10"]);
    assert!(!refused.status.success());
}

/// `grpc-append --auth` starts a cleartext server, a TLS one and one with `--auth` over TLS,
/// loads each at the same rate with the official client and reports each one's CPU per append,
/// and the authentication layer's own CPU per request.
#[test]
fn grpc_append_auth_compares_two_servers_it_starts() {
    let out = annals(&[
        "bench",
        "grpc-append",
        "--auth",
        "--client",
        "kurrentdb",
        "--clients",
        "4",
        "--events",
        "200",
        "--rate",
        "2000",
        "--json",
    ]);
    if cfg!(feature = "kurrentdb-client") {
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let figures = last_json_line(&stdout);
        assert_positive(
            &figures,
            &[
                "plain_events_per_s",
                "plain_server_cpu_us_per_append",
                "tls_events_per_s",
                "tls_server_cpu_us_per_append",
                "auth_events_per_s",
                "auth_server_cpu_us_per_append",
                "auth_check_cpu_us",
            ],
        );
        assert!(
            figures["added_server_cpu_us_per_append"].is_number(),
            "{figures}"
        );
    } else {
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--features kurrentdb-client"), "{stderr}");
    }
}

/// `bench fanout`: every subscriber receives every event appended while it follows, and the
/// figures of both phases are there.
#[test]
fn fanout_bench_delivers_every_event_to_every_subscriber() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let figures = last_json_line(&annals_ok(&[
        "bench",
        "fanout",
        "--server",
        &server.addr.to_string(),
        "--subscribers",
        "3",
        "--writers",
        "4",
        "--events",
        "300",
        "--json",
    ]));
    assert_positive(
        &figures,
        &[
            "appends_per_s_alone",
            "appends_per_s_with_subscribers",
            "ratio",
        ],
    );
    assert_eq!(figures["delivered"], 900, "{figures}");
    assert!(
        figures["server_cpu_us_per_delivered_event"]
            .as_f64()
            .is_some_and(|v| v >= 0.0),
        "{figures}"
    );
    // Both phases' appends are in the store.
    assert_eq!(read_all_events(&server).len(), 600);
}
