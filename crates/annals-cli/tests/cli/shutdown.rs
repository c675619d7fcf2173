//! SIGTERM while HTTP appends are in flight: `annals serve` answers what it accepted, exits 0,
//! and after a restart on the same directory every append it answered with a 2xx is there.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::support::{Server, runtime};

/// Concurrent HTTP writers, each appending one event at a time to a stream of its own.
const WRITERS: usize = 32;
/// Appends acknowledged before the signal, so the load is steady when it comes.
const ACKED_BEFORE_SIGNAL: u64 = 300;

/// What one writer saw: the ids the server acknowledged with a 2xx, and whether any append it
/// sent before the signal was answered with a 2xx after it.
#[derive(Debug, Default)]
struct Outcome {
    acked: Vec<uuid::Uuid>,
    answered_after_signal: u64,
    failed: u64,
}

#[test]
fn sigterm_during_http_appends_loses_no_acknowledged_append() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let base = format!("http://{}", server.addr);
    let rt = runtime();
    let in_flight = Arc::new(AtomicU64::new(0));
    let acked_total = Arc::new(AtomicU64::new(0));
    let signalled = Arc::new(AtomicBool::new(false));
    let http = reqwest::Client::new();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (http, base) = (http.clone(), base.clone());
            let (in_flight, acked_total, signalled) = (
                Arc::clone(&in_flight),
                Arc::clone(&acked_total),
                Arc::clone(&signalled),
            );
            rt.spawn(async move {
                let mut outcome = Outcome::default();
                for n in 0u64.. {
                    let id = uuid::Uuid::new_v4();
                    let body = serde_json::json!({
                        "events": [{ "id": id, "type": "Appended", "data": { "n": n } }]
                    });
                    let sent_before_signal = !signalled.load(Ordering::SeqCst);
                    in_flight.fetch_add(1, Ordering::SeqCst);
                    let answer = http
                        .post(format!("{base}/streams/shutdown-{w}"))
                        .json(&body)
                        .timeout(Duration::from_secs(30))
                        .send()
                        .await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    match answer {
                        Ok(r) if r.status().is_success() => {
                            // A 2xx is a promise: the event is durable.
                            outcome.acked.push(id);
                            acked_total.fetch_add(1, Ordering::SeqCst);
                            if sent_before_signal && signalled.load(Ordering::SeqCst) {
                                outcome.answered_after_signal += 1;
                            }
                        }
                        Ok(r) => {
                            // Only a refusal while stopping is acceptable, never a bad request.
                            let status = r.status();
                            assert!(
                                signalled.load(Ordering::SeqCst) && status.is_server_error(),
                                "append answered {status} before the signal or as a client error"
                            );
                            outcome.failed += 1;
                            break;
                        }
                        Err(e) => {
                            assert!(
                                signalled.load(Ordering::SeqCst),
                                "append failed before the signal: {e}"
                            );
                            outcome.failed += 1;
                            break;
                        }
                    }
                }
                outcome
            })
        })
        .collect();

    let started = Instant::now();
    while acked_total.load(Ordering::SeqCst) < ACKED_BEFORE_SIGNAL {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "only {} appends acknowledged in 60 s",
            acked_total.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    signalled.store(true, Ordering::SeqCst);
    let in_flight_at_signal = in_flight.load(Ordering::SeqCst);
    server.send_sigterm();
    let status = server.wait_exit();
    let outcomes: Vec<Outcome> = rt.block_on(async {
        let mut out = Vec::new();
        for w in writers {
            out.push(w.await.expect("writer task"));
        }
        out
    });
    let log: Vec<String> = server.log.try_iter().collect();
    assert!(
        status.success(),
        "serve exited with {status}\n{}",
        log.join("\n")
    );
    assert!(
        in_flight_at_signal > 0,
        "no append was in flight at the signal: the test checked nothing"
    );
    let answered_after: u64 = outcomes.iter().map(|o| o.answered_after_signal).sum();
    let failed: u64 = outcomes.iter().map(|o| o.failed).sum();
    let acked: usize = outcomes.iter().map(|o| o.acked.len()).sum();
    eprintln!(
        "shutdown test: {acked} appends acknowledged; {in_flight_at_signal} in flight at SIGTERM, \
         {answered_after} of those answered 2xx after it, {failed} writers ended on a refusal"
    );
    assert_eq!(
        failed, WRITERS as u64,
        "every writer ends on a refused append once the server stops"
    );

    // Restart on the same directory: every acknowledged append is there.
    drop(server);
    let server = Server::start(dir.path(), &[]);
    let base = format!("http://{}", server.addr);
    let stored: HashMap<usize, HashSet<uuid::Uuid>> = rt.block_on(async {
        let mut stored = HashMap::new();
        for w in 0..WRITERS {
            let page: serde_json::Value = http
                .get(format!("{base}/streams/shutdown-{w}?count=100000"))
                .send()
                .await
                .expect("read after restart")
                .error_for_status()
                .expect("stream exists after restart")
                .json()
                .await
                .expect("JSON page");
            assert_eq!(page["endReached"], true, "{page}");
            let ids = page["events"]
                .as_array()
                .expect("events")
                .iter()
                .map(|e| e["id"].as_str().expect("id").parse().expect("uuid"))
                .collect();
            stored.insert(w, ids);
        }
        stored
    });
    for (w, outcome) in outcomes.iter().enumerate() {
        let ids = &stored[&w];
        for id in &outcome.acked {
            assert!(
                ids.contains(id),
                "append {id} to shutdown-{w} was acknowledged but is missing after the restart"
            );
        }
    }
}
