//! The admin UI in real browsers (headless Chromium, and Firefox ESR for a smoke test) against a
//! real `annals serve`: see `browser.rs` for the harness.

use serde_json::json;

use crate::browser::{Browser, Kind, program};
use crate::support::Server;

/// The harness drives both browsers against a page the server serves: navigation, reading text,
/// running a script, the console log (Chromium), the window size and screenshots.
#[test]
fn ui_harness_drives_chromium_and_firefox() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    for browser in [
        Browser::chromium("harness-chromium"),
        Browser::firefox("harness-firefox"),
    ] {
        browser.goto(&format!("http://{}/health", server.addr));
        // Firefox shows JSON in its viewer, so the text is not the body as sent.
        browser.wait_for_text("body", "the health JSON", |t| {
            t.contains("status") && t.contains("ok") && t.contains("head")
        });
        assert_eq!(
            browser.execute("return arguments[0] + 1;", vec![json!(41)]),
            json!(42)
        );
        browser.set_window_size((800, 600));
        let width = browser.execute("return window.innerWidth;", vec![]);
        assert!(
            width.as_u64().is_some_and(|w| (700..=800).contains(&w)),
            "{width}"
        );
        assert!(browser.dialog_text().is_none());
        browser.execute("window.setTimeout(() => alert('hello'), 0);", vec![]);
        assert_eq!(browser.wait_for_dialog(), "hello");
        browser.accept_dialog();
        assert!(browser.dialog_text().is_none());
        if browser.kind() == Kind::Chromium {
            browser.execute("console.error('harness check');", vec![]);
            let errors = browser.console_errors().unwrap();
            assert!(
                errors.iter().any(|e| e.contains("harness check")),
                "{errors:?}"
            );
        }
        let shot = browser.screenshot();
        assert!(std::fs::metadata(&shot).unwrap().len() > 100);
    }
}

/// A browser or driver that is not installed fails the test, saying what to install.
#[test]
#[should_panic(expected = "annals-no-such-driver not found on PATH")]
fn ui_harness_fails_when_a_driver_is_missing() {
    program("annals-no-such-driver", "install it");
}
