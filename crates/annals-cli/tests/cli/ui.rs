//! The admin UI in real browsers (headless Chromium; Firefox ESR for a smoke test) against a real
//! `annals serve`, driven as a user would: live values arrive over server-sent events without a
//! reload, commands change the projection they name, reset asks first, the streams browser finds
//! and shows events, `$all` follows appends, data from clients shows as text, every control has
//! an accessible name and is reached with Tab, a phone-sized window needs no horizontal scroll,
//! and the overview stays small and quick with many streams and projections. The harness is in
//! `browser.rs`; each test saves a screenshot in `target/ui-screenshots/`.
//!
//! "Without a reload" is checked by a marker a test sets on the page's `window`: a reload or a
//! navigation would drop it.

use std::time::{Duration, Instant};

use fantoccini::key::Key;
use serde_json::{Value, json};

use crate::browser::{Browser, Kind, PHONE, WAIT_DEFAULT, program};
use crate::projections::DEFINITION as ORDERS;
use crate::support::{Server, annals_ok, path_str};

/// A server for one test, with an HTTP client for the API.
struct Ui {
    server: Server,
    http: reqwest::blocking::Client,
    _dir: tempfile::TempDir,
}

impl Ui {
    fn start() -> Ui {
        let dir = tempfile::tempdir().unwrap();
        Ui::start_in(dir)
    }

    fn start_in(dir: tempfile::TempDir) -> Ui {
        let server = Server::start(&dir.path().join("data"), &[]);
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        Ui {
            server,
            http,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.addr)
    }

    fn get(&self, path: &str) -> Value {
        let answer = self.http.get(self.url(path)).send().unwrap();
        assert!(
            answer.status().is_success(),
            "GET {path}: {}",
            answer.status()
        );
        answer.json().unwrap()
    }

    fn post(&self, path: &str, body: Option<Value>) -> Value {
        let request = self.http.post(self.url(path));
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        let answer = request.send().unwrap();
        let status = answer.status();
        let text = answer.text().unwrap();
        assert!(status.is_success(), "POST {path}: {status}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Registers the projections of a TOML definition file.
    fn register(&self, definition: &str) {
        let answer = self
            .http
            .post(self.url("/projections"))
            .body(definition.to_owned())
            .send()
            .unwrap();
        let status = answer.status();
        assert!(status.is_success(), "{status}: {}", answer.text().unwrap());
    }

    /// Appends `events` (`{"type", "data"}` objects) to `stream`; returns the last position.
    fn append(&self, stream: &str, events: Vec<Value>) -> u64 {
        let answer = self.post(
            &format!("/streams/{stream}"),
            Some(json!({ "events": events })),
        );
        answer["position"].as_u64().unwrap()
    }

    /// Appends `count` orders (the `orders` projection's events) from number `from`, in batches
    /// of 500; returns the last position.
    fn append_orders(&self, from: u64, count: u64) -> u64 {
        let mut last = 0;
        let mut i = from;
        while i < from + count {
            let n = (from + count - i).min(500);
            let events = (i..i + n)
                .map(|k| {
                    json!({
                        "type": "OrderPlaced",
                        "data": { "id": format!("o{k}"), "customer": format!("c{}", k % 7), "total": k },
                    })
                })
                .collect();
            last = self.append(&format!("order-{}", i % 10), events);
            i += n;
        }
        last
    }

    fn projection(&self, name: &str) -> Value {
        self.get(&format!("/projections/{name}"))
    }

    /// Waits (read-your-writes) until projection `name` has applied `position`.
    fn wait_applied(&self, name: &str, position: u64) {
        self.get(&format!(
            "/projections/{name}/wait?position={position}&timeoutMs=30000"
        ));
    }
}

/// Marks the page, so that [`assert_not_reloaded`] can tell it is the same page.
fn mark_page(browser: &Browser) {
    browser.execute("window.annalsTestMark = 'same page';", vec![]);
}

fn assert_not_reloaded(browser: &Browser) {
    assert_eq!(
        browser.execute("return window.annalsTestMark || null;", vec![]),
        json!("same page"),
        "the page was reloaded or left"
    );
}

/// Fails on console errors, but the missing favicon (the UI serves none; browsers ask anyway)
/// and those that contain one of `expected`.
fn assert_clean_console(browser: &Browser, expected: &[&str]) {
    if let Some(errors) = browser.console_errors() {
        let errors: Vec<&String> = errors
            .iter()
            .filter(|e| !e.contains("/favicon.ico") && !expected.iter().any(|x| e.contains(x)))
            .collect();
        assert!(errors.is_empty(), "console errors: {errors:#?}");
    }
}

/// The row of consumer `name` of `kind` on the overview.
fn consumer_row(kind: &str, name: &str) -> String {
    format!("table#consumers tbody tr[data-kind=\"{kind}\"][data-name=\"{name}\"]")
}

/// Waits until the text of `css` parses as a number satisfying `test`; returns it.
fn wait_number(browser: &Browser, css: &str, what: &str, test: impl Fn(u64) -> bool) -> u64 {
    browser.wait_until(&format!("{css} to show {what}"), WAIT_DEFAULT, |b| {
        b.text(css)
            .and_then(|t| t.trim().parse::<u64>().ok())
            .filter(|n| test(*n))
    })
}

/// The harness drives both browsers against a page the server serves: navigation, reading text,
/// running a script, dialogs, the console log (Chromium), the window size and screenshots.
#[test]
fn ui_harness_drives_chromium_and_firefox() {
    let ui = Ui::start();
    for browser in [
        Browser::chromium("harness-chromium"),
        Browser::firefox("harness-firefox"),
    ] {
        browser.goto(&ui.url("/health"));
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

/// (a) The overview lists a projection; its lag grows while it is paused and falls to 0 once it
/// runs again, and the head follows the appends, all without a reload.
#[test]
fn ui_overview_shows_projection_lag_live() {
    let ui = Ui::start();
    ui.register(ORDERS);
    let first = ui.append_orders(0, 10);
    ui.wait_applied("orders", first);
    let b = Browser::chromium("overview-lag");
    b.goto(&ui.url("/"));
    let row = consumer_row("projection", "orders");
    b.wait_for(&row);
    for cell in [
        ".c-name a",
        ".c-state",
        ".c-position",
        ".c-lag-events",
        ".c-lag-seconds",
        ".c-rate",
        ".c-parked",
        ".c-error",
    ] {
        assert_eq!(b.count(&format!("{row} {cell}")), 1, "{cell}");
    }
    assert_eq!(
        b.attr(&format!("{row} .c-name a"), "href").as_deref(),
        Some("/ui/projections/orders")
    );
    for figure in [
        "#head",
        "#append-rate",
        "#read-rate",
        "#store-size",
        "#connections",
        "#uptime",
        "#version",
    ] {
        let text = b.text(figure).unwrap_or_default();
        assert!(!text.trim().is_empty(), "{figure} is empty");
    }
    assert_eq!(
        b.text("#head").unwrap().trim(),
        ui.get("/health")["head"].to_string()
    );
    // uPlot drew the rates chart into its box.
    b.wait_for("#rates-chart canvas");
    mark_page(&b);

    // Paused, the projection falls behind the appends: the lag shows it.
    ui.post("/projections/orders/pause", None);
    b.wait_for_text(&format!("{row} .c-state"), "paused", |t| t == "paused");
    let last = ui.append_orders(10, 40);
    wait_number(&b, &format!("{row} .c-lag-events"), "40", |n| n == 40);
    wait_number(&b, "#head", "the new head", |n| n == last);
    // Running again, it catches up: the lag falls to 0 and the position reaches the head.
    ui.post("/projections/orders/resume", None);
    wait_number(&b, &format!("{row} .c-lag-events"), "0", |n| n == 0);
    wait_number(&b, &format!("{row} .c-position"), "the head", |n| n == last);
    b.wait_for_text(&format!("{row} .c-state"), "running", |t| t == "running");
    assert_not_reloaded(&b);
    assert_clean_console(&b, &[]);
    b.screenshot();
}

/// (b) Pause, then resume, clicked on the projection page, change its state as shown there,
/// without a reload, and the server agrees.
#[test]
fn ui_projection_pause_and_resume() {
    let ui = Ui::start();
    ui.register(ORDERS);
    ui.wait_applied("orders", ui.append_orders(0, 10));
    let b = Browser::chromium("projection-pause-resume");
    b.goto(&ui.url("/ui/projections/orders"));
    for id in [
        "#state",
        "#generation",
        "#position",
        "#lag-events",
        "#rate",
        "#parked",
    ] {
        assert!(b.count(id) == 1, "{id} missing");
    }
    assert_eq!(b.text("#state").as_deref(), Some("running"));
    assert_eq!(b.text("#position").as_deref(), Some("10"));
    mark_page(&b);

    b.click("#cmd-pause");
    b.wait_for_text("#state", "paused", |t| t == "paused");
    b.wait_for_text("#alerts", "the command's outcome", |t| t.contains("done"));
    assert_eq!(ui.projection("orders")["state"], "paused");
    b.screenshot_as("projection-paused");
    b.click("#cmd-resume");
    b.wait_for_text("#state", "running", |t| t == "running");
    assert_eq!(ui.projection("orders")["state"], "running");
    // It runs: a new event is applied and shown.
    let last = ui.append_orders(10, 1);
    wait_number(&b, "#position", "the new position", |n| n == last);
    assert_not_reloaded(&b);
    assert_clean_console(&b, &[]);
    b.screenshot();
}

/// (c) Rebuild shows its progress while it runs (held by a pause, so it is seen for sure), a
/// second rebuild meanwhile is refused with the server's reason in words, and once resumed the
/// rebuild completes over 20,000 events: the generation shown goes up and the progress goes.
#[test]
fn ui_projection_rebuild_shows_progress() {
    let ui = Ui::start();
    ui.register(ORDERS);
    let last = ui.append_orders(0, 20_000);
    ui.wait_applied("orders", last);
    let b = Browser::chromium("projection-rebuild");
    b.goto(&ui.url("/ui/projections/orders"));
    assert_eq!(b.text("#generation").as_deref(), Some("1"));
    assert!(!b.is_visible("#rebuild"), "no rebuild runs yet");
    mark_page(&b);

    b.click("#cmd-pause");
    b.wait_for_text("#state", "paused", |t| t == "paused");
    b.click("#cmd-rebuild");
    b.wait_until("the rebuild's progress", WAIT_DEFAULT, |b| {
        b.is_visible("#rebuild-progress").then_some(())
    });
    let text = b.wait_for_text("#rebuild-text", "the rebuild's generation", |t| {
        t.contains("Generation 2") && t.contains(&last.to_string())
    });
    let max = b.execute(
        "return document.querySelector('#rebuild-progress').max;",
        vec![],
    );
    assert_eq!(max, json!(last), "{text}");
    b.screenshot_as("projection-rebuild-progress");

    // A second rebuild while one runs: the server's refusal, in words.
    b.click("#cmd-rebuild");
    let said = b.wait_for_text("#alerts .alert", "the refusal", |t| !t.is_empty());
    assert!(said.contains("already running"), "{said}");
    assert_eq!(b.attr("#alerts", "role").as_deref(), Some("alert"));

    b.click("#cmd-resume");
    wait_number(&b, "#generation", "generation 2", |g| g == 2);
    b.wait_until("the progress to go", WAIT_DEFAULT, |b| {
        (!b.is_visible("#rebuild")).then_some(())
    });
    assert_eq!(ui.projection("orders")["generation"], 2);
    assert_not_reloaded(&b);
    // The refused rebuild's answer, which the browser logs.
    assert_clean_console(
        &b,
        &[
            "/projections/orders/rebuild - Failed to load resource: the server responded with a status of 409",
        ],
    );
    b.screenshot();
}

/// (d) Reset asks first, naming what it does: dismissed, nothing happens; accepted, the
/// projection starts a new generation.
#[test]
fn ui_projection_reset_asks_first() {
    let ui = Ui::start();
    ui.register(ORDERS);
    ui.wait_applied("orders", ui.append_orders(0, 10));
    let b = Browser::chromium("projection-reset");
    b.goto(&ui.url("/ui/projections/orders"));
    assert_eq!(b.text("#generation").as_deref(), Some("1"));
    mark_page(&b);

    b.click("#cmd-reset");
    let question = b.wait_for_dialog();
    assert!(
        question.contains("Reset projection orders") && question.contains("dropped"),
        "{question}"
    );
    b.dismiss_dialog();
    b.wait_for_text("#alerts", "the cancellation", |t| t.contains("Cancelled"));
    // Nothing happened, on the page or on the server.
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(ui.projection("orders")["generation"], 1);
    assert_eq!(b.text("#generation").as_deref(), Some("1"));

    b.click("#cmd-reset");
    b.wait_for_dialog();
    b.accept_dialog();
    wait_number(&b, "#generation", "generation 2", |g| g == 2);
    assert_eq!(ui.projection("orders")["generation"], 2);
    b.wait_for_text("#alerts", "the command's outcome", |t| t.contains("done"));
    assert_not_reloaded(&b);
    assert_clean_console(&b, &[]);
    b.screenshot();
}

/// (e) The streams browser finds streams by prefix (through its labelled form), lists a
/// stream's events, and shows one event's JSON.
#[test]
fn ui_streams_browser_finds_a_stream_and_shows_an_event() {
    let ui = Ui::start();
    let id = uuid::Uuid::new_v4();
    ui.append(
        "order-17",
        vec![
            json!({ "type": "OrderPlaced", "data": { "total": 5 } }),
            json!({ "id": id, "type": "OrderShipped", "data": { "carrier": "post", "parcels": [1, 2] } }),
        ],
    );
    ui.append(
        "order-18",
        vec![json!({ "type": "OrderPlaced", "data": {} })],
    );
    ui.append(
        "customer-1",
        vec![json!({ "type": "CustomerJoined", "data": {} })],
    );
    let b = Browser::chromium("streams-browser");
    b.goto(&ui.url("/ui/streams"));
    let label = b.text("label[for=\"prefix\"]").unwrap_or_default();
    assert!(!label.trim().is_empty(), "#prefix has no label");
    b.type_into("#stream-search #prefix", "order-");
    b.click("#stream-search button[type=\"submit\"]");
    b.wait_until("the search's results", WAIT_DEFAULT, |b| {
        b.current_url().contains("prefix=order-").then_some(())
    });
    b.wait_for("ul#streams li a");
    assert_eq!(b.texts("ul#streams li a"), vec!["order-17", "order-18"]);
    b.screenshot_as("streams-search");

    b.click("ul#streams li a");
    b.wait_for("table#events tbody tr");
    assert_eq!(b.count("table#events tbody tr"), 2);
    // Newest first.
    let revisions = b.texts("table#events tbody tr td:nth-child(1)");
    assert_eq!(revisions, vec!["1", "0"]);
    let types = b.texts("table#events tbody tr td:nth-child(3)");
    assert_eq!(types, vec!["OrderShipped", "OrderPlaced"]);
    // Revision 1, the shipped order: its row links to its detail.
    b.click("table#events tbody tr:first-child a");
    b.wait_for("pre#event-data");
    assert!(
        b.current_url().ends_with("/ui/streams/order-17/events/1"),
        "{}",
        b.current_url()
    );
    assert_eq!(b.text("#event-type").as_deref(), Some("OrderShipped"));
    assert_eq!(b.text("#event-id").unwrap(), id.to_string());
    let data: Value = serde_json::from_str(&b.text("pre#event-data").unwrap()).unwrap();
    assert_eq!(data, json!({ "carrier": "post", "parcels": [1, 2] }));
    assert_clean_console(&b, &[]);
    b.screenshot();
}

/// (f) The `$all` tail shows an event appended after the page loaded within a second, newest
/// first, without a reload; paused, it holds new events back, and resumed it shows them.
#[test]
fn ui_all_tail_follows_appends() {
    let ui = Ui::start();
    ui.append("ledger-1", vec![json!({ "type": "Opened", "data": {} })]);
    let b = Browser::chromium("all-tail");
    b.goto(&ui.url("/ui/all"));
    b.wait_for("table#tail tbody");
    assert_eq!(b.count("table#tail tbody tr"), 0);
    assert_eq!(
        b.attr("#tail-pause", "aria-pressed").as_deref(),
        Some("false")
    );
    mark_page(&b);
    // The feed is open once the page says it follows (the event would come anyway: the feed
    // starts from the head the page was rendered with).
    std::thread::sleep(Duration::from_millis(300));

    for (n, stream) in ["ledger-2", "ledger-3"].iter().enumerate() {
        let position = ui.append(
            stream,
            vec![json!({ "type": "Posted", "data": { "n": n } })],
        );
        let appended = Instant::now();
        b.wait_until(
            &format!("{stream} in the tail"),
            Duration::from_secs(1),
            |b| {
                b.texts("table#tail tbody tr:first-child td")
                    .first()
                    .is_some_and(|p| *p == position.to_string())
                    .then_some(())
            },
        );
        eprintln!("{stream} shown {:?} after its append", appended.elapsed());
    }
    let rows = b.texts("table#tail tbody tr td:nth-child(2)");
    assert_eq!(rows, vec!["ledger-3", "ledger-2"], "newest first");

    b.click("#tail-pause");
    assert_eq!(
        b.attr("#tail-pause", "aria-pressed").as_deref(),
        Some("true")
    );
    let held = ui.append("ledger-4", vec![json!({ "type": "Posted", "data": {} })]);
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(
        b.count("table#tail tbody tr"),
        2,
        "a paused tail took an event"
    );
    b.click("#tail-pause");
    assert_eq!(
        b.attr("#tail-pause", "aria-pressed").as_deref(),
        Some("false")
    );
    b.wait_until("the held event", WAIT_DEFAULT, |b| {
        b.texts("table#tail tbody tr:first-child td")
            .first()
            .is_some_and(|p| *p == held.to_string())
            .then_some(())
    });
    assert_eq!(b.count("table#tail tbody tr"), 3);
    assert_not_reloaded(&b);
    assert_clean_console(&b, &[]);
    b.screenshot();
}

/// (g) Markup in an event's data shows as text: the detail page's `pre#event-data` holds the
/// `<script>` as characters, no element was made of it, and no dialog opened.
#[test]
fn ui_event_data_with_markup_shows_as_text() {
    let ui = Ui::start();
    let data = json!({
        "note": "<script>alert(1)</script>",
        "img": "<img src=x onerror=alert(2)>",
    });
    ui.append(
        "xss-1",
        vec![json!({ "type": "Noted", "data": data.clone() })],
    );
    let b = Browser::chromium("event-markup-as-text");
    b.goto(&ui.url("/ui/streams/xss-1/events/0"));
    let text = b.wait_for_text("pre#event-data", "the data", |t| !t.is_empty());
    assert!(text.contains("<script>alert(1)</script>"), "{text}");
    assert!(text.contains("<img src=x onerror=alert(2)>"), "{text}");
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), data);
    assert_eq!(b.count("pre#event-data *"), 0, "markup became elements");
    assert_eq!(b.count("main script, main img"), 0);
    // A script that ran would have opened its dialog by now.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(b.dialog_text(), None, "a script from the event ran");
    // The stream's page lists it.
    b.goto(&ui.url("/ui/streams/xss-1"));
    assert_eq!(b.texts("table#events tbody td:nth-child(3)"), vec!["Noted"]);
    assert_eq!(b.dialog_text(), None);
    assert_clean_console(&b, &[]);
    b.screenshot();
}

/// The controls on a page that have no accessible name (aria-label, aria-labelledby, a label,
/// or their text), as short HTML.
fn unnamed_controls(b: &Browser) -> Vec<String> {
    let found = b.execute(
        r"
        const text = (s) => (s || '').replace(/\s+/g, ' ').trim();
        const named = (e) => {
          if (text(e.getAttribute('aria-label'))) return true;
          const by = e.getAttribute('aria-labelledby');
          if (by && by.split(/\s+/).some((id) => {
            const l = document.getElementById(id);
            return l && text(l.textContent);
          })) return true;
          if (e.labels && Array.from(e.labels).some((l) => text(l.textContent))) return true;
          const isInput = e.tagName === 'INPUT' || e.tagName === 'SELECT' || e.tagName === 'TEXTAREA';
          if (!isInput && text(e.textContent)) return true;
          if (e.tagName === 'INPUT' && ['submit', 'button', 'reset'].includes(e.type) && text(e.value)) return true;
          if (Array.from(e.querySelectorAll('img[alt]')).some((i) => text(i.alt))) return true;
          return !!text(e.getAttribute('title'));
        };
        return Array.from(document.querySelectorAll('button, a, input, select, textarea'))
          .filter((e) => e.type !== 'hidden' && !named(e))
          .map((e) => e.outerHTML.slice(0, 200));
        ",
        vec![],
    );
    serde_json::from_value(found).unwrap()
}

/// Presses Tab up to `presses` times from the top of the page; returns what got the focus, in
/// order (an element's id, else its text).
fn tab_through(b: &Browser, presses: usize) -> Vec<String> {
    let mut focused = Vec::new();
    for _ in 0..presses {
        b.press(Key::Tab);
        let which = b.execute(
            "const e = document.activeElement; \
             return e ? (e.id || (e.textContent || '').trim()) : null;",
            vec![],
        );
        focused.push(which.as_str().unwrap_or_default().to_owned());
    }
    focused
}

/// (h) Every button, link, input and select on the overview and a projection's page has an
/// accessible name, and Tab reaches the skip link first, then the consumer's link and the
/// command buttons.
#[test]
fn ui_controls_have_names_and_tab_reaches_commands() {
    let ui = Ui::start();
    ui.register(ORDERS);
    ui.wait_applied("orders", ui.append_orders(0, 5));
    let b = Browser::chromium("keyboard");

    b.goto(&ui.url("/"));
    b.wait_for(&consumer_row("projection", "orders"));
    b.wait_for("#rates-chart canvas");
    let unnamed = unnamed_controls(&b);
    assert!(unnamed.is_empty(), "overview: {unnamed:#?}");
    let focused = tab_through(&b, 12);
    assert_eq!(focused[0], "Skip to content", "{focused:?}");
    assert!(focused.iter().any(|f| f == "orders"), "{focused:?}");
    b.screenshot_as("keyboard-overview");

    b.goto(&ui.url("/ui/projections/orders"));
    b.wait_for("#cmd-reset");
    let unnamed = unnamed_controls(&b);
    assert!(unnamed.is_empty(), "projection page: {unnamed:#?}");
    let focused = tab_through(&b, 20);
    let commands: Vec<&String> = focused.iter().filter(|f| f.starts_with("cmd-")).collect();
    assert_eq!(
        commands,
        [
            "cmd-pause",
            "cmd-resume",
            "cmd-rebuild",
            "cmd-retry-parked",
            "cmd-reset"
        ],
        "{focused:?}"
    );
    // A focused command runs from the keyboard.
    let at_pause = focused.iter().position(|f| f == "cmd-pause").unwrap();
    b.goto(&ui.url("/ui/projections/orders"));
    b.wait_for("#cmd-pause");
    tab_through(&b, at_pause + 1);
    assert_eq!(
        b.execute("return document.activeElement.id;", vec![]),
        json!("cmd-pause")
    );
    b.press(Key::Enter);
    b.wait_for_text("#state", "paused", |t| t == "paused");
    assert_clean_console(&b, &[]);
    b.screenshot();
}

/// (i) On a phone-sized window the overview needs no horizontal scroll.
#[test]
fn ui_overview_fits_a_phone() {
    let ui = Ui::start();
    ui.register(ORDERS);
    ui.wait_applied("orders", ui.append_orders(0, 5));
    let b = Browser::chromium("phone-overview");
    b.set_window_size(PHONE);
    for path in [
        "/",
        "/ui/projections/orders",
        "/ui/all",
        "/ui/streams?prefix=order-",
    ] {
        b.goto(&ui.url(path));
        if path == "/" {
            b.wait_for(&consumer_row("projection", "orders"));
            b.wait_for("#rates-chart canvas");
        }
        let sizes = b.execute(
            "return [document.documentElement.scrollWidth, window.innerWidth];",
            vec![],
        );
        let (scroll, inner) = (sizes[0].as_u64().unwrap(), sizes[1].as_u64().unwrap());
        assert!(
            inner <= u64::from(PHONE.0),
            "{path}: the window is {inner} wide"
        );
        assert!(
            scroll <= inner,
            "{path}: {scroll} px of content in a {inner} px window"
        );
        if path == "/" {
            b.screenshot();
        }
    }
    assert_clean_console(&b, &[]);
}

/// (j) Firefox ESR: the overview renders, shows the head position, and follows an append.
#[test]
fn ui_firefox_overview_smoke() {
    let ui = Ui::start();
    let first = ui.append("ff-1", vec![json!({ "type": "Seen", "data": {} })]);
    let b = Browser::firefox("firefox-overview");
    b.goto(&ui.url("/"));
    assert_eq!(b.text("#head").unwrap().trim(), first.to_string());
    assert!(b.count("#rates-chart") == 1);
    mark_page(&b);
    let last = ui.append(
        "ff-1",
        vec![
            json!({ "type": "Seen", "data": {} }),
            json!({ "type": "Seen", "data": {} }),
        ],
    );
    wait_number(&b, "#head", "the new head", |n| n == last);
    assert_not_reloaded(&b);
    b.screenshot();
}

/// The overview of a server with 10,000 streams and 100 projections answers quickly, lists
/// every projection and no stream; the streams page shows one page of streams with a link to
/// the next.
#[test]
fn ui_overview_scales_to_many_streams_and_projections() {
    const STREAMS: usize = 10_000;
    const PROJECTIONS: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    // The streams are imported straight into the store before it serves: one event each.
    let lines: String = (0..STREAMS)
        .map(|s| format!("{{\"stream\":\"many-{s}\",\"type\":\"Made\",\"data\":{{\"s\":{s}}}}}\n"))
        .collect();
    let file = dir.path().join("streams.jsonl");
    std::fs::write(&file, lines).unwrap();
    let data = dir.path().join("data");
    annals_ok(&[
        "import",
        path_str(&file),
        "--data",
        path_str(&data),
        "--durability",
        "none",
    ]);
    let ui = Ui::start_in(dir);
    let definitions: String = (0..PROJECTIONS)
        .map(|p| {
            format!(
                "[[projection]]\nname = \"p{p}\"\nsource = {{ category = \"cat{p}\" }}\n\
                 tables = [\"t{p}\"]\nsetup = [\"CREATE TABLE {{t{p}}} (id TEXT PRIMARY KEY)\"]\n\
                 [[projection.handler]]\nevent_type = \"E\"\n\
                 sql = \"INSERT INTO {{t{p}}} (id) VALUES ($1)\"\nparams = [\"data.id\"]\n\n"
            )
        })
        .collect();
    let registering = Instant::now();
    ui.register(&definitions);
    eprintln!(
        "{PROJECTIONS} projections registered in {:?}",
        registering.elapsed()
    );
    assert_eq!(ui.get("/health")["head"], STREAMS);

    // The server's answer: quick, and small (no stream in it).
    let asked = Instant::now();
    let html = ui.http.get(ui.url("/")).send().unwrap().text().unwrap();
    let answered = asked.elapsed();
    eprintln!("overview: {} bytes in {answered:?}", html.len());
    assert!(answered < Duration::from_secs(2), "{answered:?}");
    assert!(html.len() < 256 * 1024, "{} bytes", html.len());
    assert!(!html.contains("many-"), "the overview lists streams");

    let b = Browser::chromium("overview-many");
    let loading = Instant::now();
    b.goto(&ui.url("/"));
    b.wait_until("every projection's row", WAIT_DEFAULT, |b| {
        (b.count("table#consumers tbody tr[data-kind=\"projection\"]") == PROJECTIONS).then_some(())
    });
    let loaded = loading.elapsed();
    eprintln!("overview in the browser with every row: {loaded:?}");
    assert!(loaded < Duration::from_secs(5), "{loaded:?}");
    assert_eq!(b.text("#head").unwrap().trim(), STREAMS.to_string());
    b.screenshot();

    b.goto(&ui.url("/ui/streams?prefix=many-"));
    let shown = b.count("ul#streams li");
    assert!(shown > 0 && shown <= 1_000, "{shown} streams on one page");
    assert_eq!(b.count("#next-streams"), 1, "no link to more streams");
    assert_clean_console(&b, &[]);
    b.screenshot_as("streams-many");
}
