//! `annals serve` holds the store while serving, and on SIGTERM stops, closes the store and
//! exits 0.

use annals_engine::{Engine, EngineConfig};

use crate::support::Server;

#[test]
fn serve_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    // While serve holds it, nobody else may open the store.
    assert!(Engine::open_dir(dir.path(), EngineConfig::default()).is_err());
    let status = server.terminate();
    assert!(status.success(), "serve exited with {status}");
    let log: Vec<String> = server.log.iter().collect();
    assert!(
        log.iter().any(|l| l.contains("store closed")),
        "{}",
        log.join("\n")
    );
    Engine::open_dir(dir.path(), EngineConfig::default()).expect("the lock is released");
}
