//! Many silent clients against `annals serve`'s defaults: 10,000 connections that send nothing
//! all fit (the server raises its own open-file limit), every other client is still served
//! meanwhile, and the silent ones are closed after the first-request timeout.

use std::time::{Duration, Instant};

use crate::support::Server;

/// Silent connections opened: the default connection limit.
const SILENT: usize = annals_core::limits::NETWORK_CONNECTIONS_MAX;

fn metric(base: &str, name: &str) -> u64 {
    let text = reqwest::blocking::get(format!("{base}/metrics"))
        .unwrap()
        .text()
        .unwrap();
    let prefix = format!("annals_{name}_total ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn ten_thousand_silent_connections_fit_and_are_closed_in_time() {
    // This process holds its side of every connection too.
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let want = (SILENT as u64) + 1_024;
    if limit.current.is_some_and(|c| c < want) {
        rustix::process::setrlimit(
            rustix::process::Resource::Nofile,
            rustix::process::Rlimit {
                current: Some(limit.maximum.map_or(want, |m| m.min(want))),
                maximum: limit.maximum,
            },
        )
        .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let base = format!("http://{}", server.addr);
    let mut silent = Vec::with_capacity(SILENT);
    for _ in 0..SILENT - 10 {
        silent.push(std::net::TcpStream::connect(server.addr).unwrap());
    }
    // With every slot but a few held by silent clients, others are served at once.
    let health = reqwest::blocking::get(format!("{base}/health")).unwrap();
    assert_eq!(health.status(), 200);
    let started = Instant::now();
    while metric(&base, "connections_closed_silent") < (SILENT - 10) as u64 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "silent connections still open after 120 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(metric(&base, "connections_refused"), 0);
    drop(silent);
}
