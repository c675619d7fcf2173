//! Real browsers for the admin UI tests, through WebDriver: Chromium (Debian's `chromium`, driven
//! by `chromedriver`) and Firefox ESR (driven by `geckodriver`), headless, each with a fresh
//! profile. A [`Browser`] owns its driver process (in a process group of its own, so the browser
//! dies with it when the `Browser` is dropped), one WebDriver session and a small runtime, and
//! offers blocking helpers: every driver call is bounded by [`COMMAND_TIMEOUT`], every wait polls
//! every [`POLL_INTERVAL`] until a deadline ([`WAIT_DEFAULT`] unless said). A missing browser or
//! driver fails the test and says what to install: these tests never skip, and nothing here
//! downloads a browser (`scripts/test.sh` installs them from the distribution and crates.io).
//!
//! Text and attributes are read with one script call each rather than through element handles,
//! because the pages replace elements as live values arrive and a handle would go stale between
//! finding and reading it.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::error::CmdError;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// How long a wait lasts unless the test says otherwise.
pub(crate) const WAIT_DEFAULT: Duration = Duration::from_secs(10);

/// How often a wait looks again.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The longest one WebDriver command may take before the test fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a driver may take to listen on its port.
const DRIVER_START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long starting the browser (the new session) may take.
const SESSION_START_TIMEOUT: Duration = Duration::from_secs(60);

/// How much of a driver's output is kept for failure messages.
const DRIVER_LOG_BYTES_MAX: usize = 64 * 1024;

/// A desktop window.
pub(crate) const DESKTOP: (u32, u32) = (1280, 800);

/// A phone's window (an iPhone 14's CSS pixels).
pub(crate) const PHONE: (u32, u32) = (390, 844);

/// Which browser.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Chromium,
    Firefox,
}

/// The flags Chromium needs to run headless as root in a container, with nothing of its own
/// reaching the network.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
];

/// A running browser with one WebDriver session.
pub(crate) struct Browser {
    client: Client,
    kind: Kind,
    /// The test's name: screenshots are `<name>.png`.
    name: String,
    driver: Driver,
    /// Chromium's user data directory (geckodriver makes Firefox's profile itself).
    _profile: Option<tempfile::TempDir>,
    rt: tokio::runtime::Runtime,
}

impl Browser {
    /// Starts headless Chromium for the test `name`, at the desktop size.
    pub(crate) fn chromium(name: &str) -> Browser {
        let browser = program("chromium", "install the Debian package chromium");
        let driver = program("chromedriver", "install the Debian package chromium-driver");
        let profile = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| (*a).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.push(format!("--window-size={},{}", DESKTOP.0, DESKTOP.1));
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": browser, "args": args },
            // Console messages, read back by `console_errors`.
            "goog:loggingPrefs": { "browser": "ALL" },
            "unhandledPromptBehavior": "ignore",
        });
        let driver = Driver::start(&driver, |port| {
            vec![format!("--port={port}"), "--allowed-ips=127.0.0.1".into()]
        });
        Browser::open(Kind::Chromium, name, driver, capabilities, Some(profile))
    }

    /// Starts headless Firefox ESR for the test `name`, at the desktop size.
    pub(crate) fn firefox(name: &str) -> Browser {
        let browser = program("firefox-esr", "install the Debian package firefox-esr");
        let driver = program(
            "geckodriver",
            "run `cargo install --locked geckodriver` (it is not packaged by Debian)",
        );
        let capabilities = json!({
            "browserName": "firefox",
            "moz:firefoxOptions": {
                "binary": browser,
                "args": ["-headless"],
                "prefs": {
                    "app.update.enabled": false,
                    "browser.shell.checkDefaultBrowser": false,
                    "datareporting.policy.dataSubmissionEnabled": false,
                    "network.captive-portal-service.enabled": false,
                    "network.connectivity-service.enabled": false,
                    "toolkit.telemetry.enabled": false,
                },
            },
            "unhandledPromptBehavior": "ignore",
        });
        let driver = Driver::start(&driver, |port| {
            // The WebDriver BiDi port defaults to a fixed one, which two Firefoxes would share.
            let bidi = free_port();
            vec![
                "--host=127.0.0.1".into(),
                format!("--port={port}"),
                format!("--websocket-port={bidi}"),
            ]
        });
        let browser = Browser::open(Kind::Firefox, name, driver, capabilities, None);
        browser.set_window_size(DESKTOP);
        browser
    }

    fn open(
        kind: Kind,
        name: &str,
        driver: Driver,
        capabilities: Value,
        profile: Option<tempfile::TempDir>,
    ) -> Browser {
        install_crypto_provider();
        // A failure screenshot of an earlier run would mislead.
        let _ = std::fs::remove_file(screenshot_dir().join(format!("{name}-failed.png")));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let Value::Object(capabilities) = capabilities else {
            unreachable!("capabilities are an object")
        };
        let url = format!("http://127.0.0.1:{}", driver.port);
        let connect = async {
            ClientBuilder::rustls()
                .expect("TLS roots for the WebDriver client")
                .capabilities(capabilities)
                .connect(&url)
                .await
        };
        let connected =
            rt.block_on(async { tokio::time::timeout(SESSION_START_TIMEOUT, connect).await });
        let client = match connected {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => panic!(
                "{kind:?} did not start a session: {e}\ndriver output:\n{}",
                driver.output()
            ),
            Err(_) => panic!(
                "{kind:?} did not start within {SESSION_START_TIMEOUT:?}\ndriver output:\n{}",
                driver.output()
            ),
        };
        Browser {
            client,
            kind,
            name: name.to_owned(),
            driver,
            _profile: profile,
            rt,
        }
    }

    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }

    /// Runs one driver command, bounded by [`COMMAND_TIMEOUT`]; a timeout fails the test.
    fn try_run<T>(
        &self,
        what: &str,
        command: impl Future<Output = Result<T, CmdError>>,
    ) -> Result<T, CmdError> {
        match self
            .rt
            .block_on(async { tokio::time::timeout(COMMAND_TIMEOUT, command).await })
        {
            Ok(answer) => answer,
            Err(_) => panic!(
                "{:?}: {what}: no answer from the driver within {COMMAND_TIMEOUT:?}",
                self.kind
            ),
        }
    }

    /// Runs one driver command that must succeed.
    fn run<T>(&self, what: &str, command: impl Future<Output = Result<T, CmdError>>) -> T {
        self.try_run(what, command)
            .unwrap_or_else(|e| panic!("{:?}: {what}: {e}", self.kind))
    }

    /// Loads `url` and waits for the page's load event.
    pub(crate) fn goto(&self, url: &str) {
        self.run(&format!("go to {url}"), self.client.goto(url));
    }

    /// The current page's URL.
    pub(crate) fn current_url(&self) -> String {
        self.run("current URL", self.client.current_url())
            .to_string()
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) in the page; returns its value.
    pub(crate) fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.run(
            &format!("run script {script:?}"),
            self.client.execute(script, args),
        )
    }

    /// The rendered text of the first element matching `css`, if there is one.
    pub(crate) fn text(&self, css: &str) -> Option<String> {
        match self.execute(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;",
            vec![json!(css)],
        ) {
            Value::String(text) => Some(text),
            _ => None,
        }
    }

    /// The rendered texts of every element matching `css`, in document order.
    pub(crate) fn texts(&self, css: &str) -> Vec<String> {
        let texts = self.execute(
            "return Array.from(document.querySelectorAll(arguments[0]), e => e.innerText);",
            vec![json!(css)],
        );
        serde_json::from_value(texts).unwrap()
    }

    /// The attribute `name` of the first element matching `css` (`None` when either is missing).
    pub(crate) fn attr(&self, css: &str, name: &str) -> Option<String> {
        match self.execute(
            "const e = document.querySelector(arguments[0]); \
             return e ? e.getAttribute(arguments[1]) : null;",
            vec![json!(css), json!(name)],
        ) {
            Value::String(value) => Some(value),
            _ => None,
        }
    }

    /// How many elements match `css`.
    pub(crate) fn count(&self, css: &str) -> usize {
        let n = self.execute(
            "return document.querySelectorAll(arguments[0]).length;",
            vec![json!(css)],
        );
        usize::try_from(n.as_u64().unwrap()).unwrap()
    }

    /// Whether the first element matching `css` exists and is displayed (not hidden, has a box).
    pub(crate) fn is_visible(&self, css: &str) -> bool {
        self.execute(
            "const e = document.querySelector(arguments[0]); \
             return !!e && !e.closest('[hidden]') && e.getClientRects().length > 0 \
                 && getComputedStyle(e).visibility !== 'hidden';",
            vec![json!(css)],
        ) == json!(true)
    }

    /// Waits for an element matching `css` to be on the page.
    pub(crate) fn wait_for(&self, css: &str) {
        self.wait_until(&format!("an element matching {css}"), WAIT_DEFAULT, |b| {
            (b.count(css) > 0).then_some(())
        });
    }

    /// Waits until the text of `css` satisfies `test`; returns that text.
    pub(crate) fn wait_for_text(
        &self,
        css: &str,
        what: &str,
        test: impl Fn(&str) -> bool,
    ) -> String {
        self.wait_until(&format!("{css} to show {what}"), WAIT_DEFAULT, |b| {
            b.text(css).filter(|t| test(t))
        })
    }

    /// Calls `ready` every [`POLL_INTERVAL`] until it gives a value or `deadline` has passed;
    /// then fails the test, saying what it waited for and what the page's console said.
    pub(crate) fn wait_until<T>(
        &self,
        what: &str,
        deadline: Duration,
        mut ready: impl FnMut(&Browser) -> Option<T>,
    ) -> T {
        let started = Instant::now();
        loop {
            if let Some(value) = ready(self) {
                return value;
            }
            if started.elapsed() > deadline {
                let console = self.console_errors().unwrap_or_default();
                panic!(
                    "{:?}: waited {deadline:?} for {what} on {}; console errors: {console:?}",
                    self.kind,
                    self.current_url()
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Clicks the first element matching `css` (waiting for it to exist), as a user would: the
    /// driver scrolls it into view and fails if something covers it.
    pub(crate) fn click(&self, css: &str) {
        self.wait_for(css);
        let element = self.run(&format!("find {css}"), self.client.find(Locator::Css(css)));
        self.run(&format!("click {css}"), element.click());
    }

    /// Replaces the value of the input matching `css` with `text`, typed key by key.
    pub(crate) fn type_into(&self, css: &str, text: &str) {
        self.wait_for(css);
        let element = self.run(&format!("find {css}"), self.client.find(Locator::Css(css)));
        self.run(&format!("clear {css}"), element.clear());
        self.run(&format!("type into {css}"), element.send_keys(text));
    }

    /// Presses and releases `key` where the focus is, as a keyboard user does.
    pub(crate) fn press(&self, key: Key) {
        let value: char = key.into();
        let keys = KeyActions::new("keyboard".to_owned())
            .then(KeyAction::Down { value })
            .then(KeyAction::Up { value });
        self.run(&format!("press {key:?}"), self.client.perform_actions(keys));
    }

    /// The text of the open `alert`/`confirm`/`prompt` dialog, or `None` when there is none.
    pub(crate) fn dialog_text(&self) -> Option<String> {
        match self.try_run("read the dialog", self.client.get_alert_text()) {
            Ok(text) => Some(text),
            Err(e) if e.is_no_such_alert() => None,
            Err(e) => panic!("{:?}: read the dialog: {e}", self.kind),
        }
    }

    /// Waits for a dialog to open; returns its text.
    pub(crate) fn wait_for_dialog(&self) -> String {
        self.wait_until("a dialog", WAIT_DEFAULT, Browser::dialog_text)
    }

    /// Accepts the open dialog (OK).
    pub(crate) fn accept_dialog(&self) {
        self.run("accept the dialog", self.client.accept_alert());
    }

    /// Dismisses the open dialog (Cancel).
    pub(crate) fn dismiss_dialog(&self) {
        self.run("dismiss the dialog", self.client.dismiss_alert());
    }

    /// Sets the window's outer size in CSS pixels.
    pub(crate) fn set_window_size(&self, (width, height): (u32, u32)) {
        self.run(
            &format!("set the window to {width}x{height}"),
            self.client.set_window_size(width, height),
        );
    }

    /// Saves a screenshot of the window as `target/ui-screenshots/<test name>.png`.
    pub(crate) fn screenshot(&self) -> PathBuf {
        self.screenshot_as(&self.name)
    }

    /// Saves a screenshot of the window as `target/ui-screenshots/<file>.png`.
    pub(crate) fn screenshot_as(&self, file: &str) -> PathBuf {
        let png = self.run("take a screenshot", self.client.screenshot());
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{file}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// The page's console errors (and uncaught exceptions) so far, each read once: Chromium
    /// keeps them for chromedriver's log endpoint. `None` for Firefox, whose driver has none.
    pub(crate) fn console_errors(&self) -> Option<Vec<String>> {
        if self.kind != Kind::Chromium {
            return None;
        }
        let session = self.run("session id", self.client.session_id())?;
        let url = format!(
            "http://127.0.0.1:{}/session/{session}/se/log",
            self.driver.port
        );
        let answer: Value = reqwest::blocking::Client::builder()
            .timeout(COMMAND_TIMEOUT)
            .build()
            .unwrap()
            .post(url)
            .json(&json!({ "type": "browser" }))
            .send()
            .and_then(reqwest::blocking::Response::json)
            .unwrap_or_else(|e| panic!("Chromium's console log: {e}"));
        let entries = answer["value"]
            .as_array()
            .unwrap_or_else(|| panic!("Chromium's console log is not a list: {answer}"));
        Some(
            entries
                .iter()
                .filter(|e| e["level"] == "SEVERE")
                .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
                .collect(),
        )
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What the page looked like when the test failed; best effort, as the session may
            // be what failed.
            let shot = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), self.client.screenshot()).await
            });
            if let Ok(Ok(png)) = shot {
                let dir = screenshot_dir();
                if std::fs::create_dir_all(&dir).is_ok() {
                    let path = dir.join(format!("{}-failed.png", self.name));
                    if std::fs::write(&path, png).is_ok() {
                        eprintln!("screenshot of the failure: {}", path.display());
                    }
                }
            }
        }
        // Ends the session, which quits the browser; the driver's process group goes next.
        let close = self.client.clone().close();
        let _ = self
            .rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), close).await });
    }
}

/// `target/ui-screenshots` of the workspace (or of `CARGO_TARGET_DIR`).
pub(crate) fn screenshot_dir() -> PathBuf {
    let root = crate::support::workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), |dir| root.join(dir));
    target.join("ui-screenshots")
}

/// A WebDriver server (chromedriver or geckodriver) listening on a port of 127.0.0.1, killed
/// with its process group (the browser too) when dropped.
struct Driver {
    child: Child,
    port: u16,
    /// The end of what the driver printed, for failure messages.
    output: Arc<Mutex<String>>,
}

impl Driver {
    /// Starts `program` with the arguments `args` gives for a port and waits until it listens.
    fn start(program: &Path, args: impl Fn(u16) -> Vec<String>) -> Driver {
        let port = free_port();
        let mut child = Command::new(program)
            .args(args(port))
            .env("MOZ_HEADLESS", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: dropping the driver kills the browser it started too.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
        let output = Arc::new(Mutex::new(String::new()));
        keep_output(child.stdout.take().unwrap(), Arc::clone(&output));
        keep_output(child.stderr.take().unwrap(), Arc::clone(&output));
        let mut driver = Driver {
            child,
            port,
            output,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let started = Instant::now();
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return driver;
            }
            if let Some(status) = driver.child.try_wait().unwrap() {
                panic!(
                    "{} exited with {status} before listening on port {port}:\n{}",
                    program.display(),
                    driver.output()
                );
            }
            assert!(
                started.elapsed() < DRIVER_START_TIMEOUT,
                "{} did not listen on port {port} within {DRIVER_START_TIMEOUT:?}:\n{}",
                program.display(),
                driver.output()
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id().cast_signed()) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads a pipe of the driver on a thread (so it never fills), keeping the last
/// [`DRIVER_LOG_BYTES_MAX`] of it.
fn keep_output(pipe: impl Read + Send + 'static, output: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let mut kept = output.lock().unwrap();
            kept.push_str(&line);
            kept.push('\n');
            if kept.len() > DRIVER_LOG_BYTES_MAX {
                let mut cut = kept.len() - DRIVER_LOG_BYTES_MAX;
                while !kept.is_char_boundary(cut) {
                    cut += 1;
                }
                kept.drain(..cut);
            }
        }
    });
}

/// A port of 127.0.0.1 that was free a moment ago (the driver binds it next).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

/// The path of the executable `name`: on `PATH`, or in cargo's bin directory (where
/// `cargo install` puts geckodriver). Fails the test, saying how to install it, when missing.
pub(crate) fn program(name: &str, install: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(cargo_home) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(cargo_home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo").join("bin"));
    }
    dirs.iter()
        .map(|dir| dir.join(name))
        .find(|path| {
            std::fs::metadata(path)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| {
            panic!(
                "{name} not found on PATH nor in cargo's bin directory: {install} \
                 (scripts/test.sh does); the UI tests need a real browser and never skip"
            )
        })
}

/// rustls finds two crypto providers compiled into this test binary (ring, and aws-lc-rs for
/// the official KurrentDB client), so the WebDriver client's TLS setup needs a process default;
/// ring, like the rest of Annals. Only loopback HTTP is ever spoken.
fn install_crypto_provider() {
    let _ = async_nats::rustls::crypto::ring::default_provider().install_default();
}
