//! `annals serve` holds the store while serving, and on SIGTERM stops, closes the store and
//! exits 0; it serves the admin UI unless `--no-ui`.

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

#[test]
fn the_admin_ui_is_served_unless_no_ui() {
    let get = |server: &Server, path: &str| {
        let r = reqwest::blocking::get(format!("http://{}{path}", server.addr)).unwrap();
        let status = r.status().as_u16();
        let csp = r.headers().contains_key("content-security-policy");
        (status, csp, r.text().unwrap())
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let (status, csp, page) = get(&server, "/");
    assert_eq!((status, csp), (200, true));
    assert!(page.contains("id=\"head\""), "{page}");
    assert_eq!(get(&server, "/ui/assets/app.js").0, 200);
    drop(server);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--no-ui"]);
    for path in ["/", "/ui/streams", "/ui/assets/app.js"] {
        let (status, _, body) = get(&server, path);
        assert_eq!(status, 404, "{path}: {body}");
    }
    // The API stays.
    assert_eq!(get(&server, "/health").0, 200);
    assert_eq!(get(&server, "/status").0, 200);
}
