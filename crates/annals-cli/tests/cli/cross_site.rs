//! A real `annals serve`, with and without `--auth`, refuses the state-changing requests a
//! browser sends for a page of another origin, whichever route they aim at, and changes nothing
//! for them; same-origin requests and requests without browser headers (curl, the CLI) go
//! through.

use std::time::Duration;

use crate::support::Server;

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn append_body() -> serde_json::Value {
    serde_json::json!({ "events": [{ "type": "Entry", "data": { "n": 1 } }] })
}

/// Asserts the answer is the cross-site refusal.
fn assert_refused(answer: reqwest::blocking::Response, what: &str) {
    assert_eq!(answer.status(), 403, "{what}");
    let body: serde_json::Value = answer.json().unwrap();
    assert_eq!(body["error"], "cross_site_request", "{what}: {body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
}

/// How many events `stream` holds (a stream never written reads as 404).
fn events_in(http: &reqwest::blocking::Client, base: &str, stream: &str) -> usize {
    let answer = http.get(format!("{base}/streams/{stream}")).send().unwrap();
    if answer.status() == 404 {
        return 0;
    }
    assert_eq!(answer.status(), 200);
    let page: serde_json::Value = answer.json().unwrap();
    page["events"].as_array().unwrap().len()
}

#[test]
fn cross_site_requests_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let base = format!("http://{}", server.addr);
    let own_origin = format!("http://127.0.0.1:{}", server.addr.port());
    let other_port = format!("http://127.0.0.1:{}", server.addr.port() ^ 1);
    let http = http();

    // A page of another origin (Origin only, as older browsers send it; or Sec-Fetch-Site, as
    // current ones do) cannot append.
    for (header, value) in [
        ("origin", "http://evil.example"),
        ("origin", other_port.as_str()),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
    ] {
        let answer = http
            .post(format!("{base}/streams/ledger"))
            .header(header, value)
            .json(&append_body())
            .send()
            .unwrap();
        assert_refused(answer, &format!("append with {header}: {value}"));
    }
    assert_eq!(events_in(&http, &base, "ledger"), 0);

    // Nor run commands on any other route: projections, relays, users, subscription groups.
    let evil = ("origin", "http://evil.example");
    let refused = [
        http.post(format!("{base}/projections/x/reset")),
        http.post(format!("{base}/relays/x/pause")),
        http.post(format!("{base}/users")).json(
            &serde_json::json!({"login": "mallory", "password": "pw", "groups": ["$admins"]}),
        ),
        http.delete(format!("{base}/relays/x")),
        http.put(format!("{base}/subscriptions/ledger/group"))
            .json(&serde_json::json!({})),
    ];
    for request in refused {
        let request = request.header(evil.0, evil.1).build().unwrap();
        let what = format!("{} {}", request.method(), request.url().path());
        assert_refused(http.execute(request).unwrap(), &what);
    }
    // Reads are not state-changing: they pass, whatever the Origin.
    let read = http
        .get(format!("{base}/streams/ledger"))
        .header(evil.0, evil.1)
        .send()
        .unwrap();
    assert_eq!(read.status(), 404);

    // The server's own origin, and clients that send no Origin at all, append as before.
    let same_origin = http
        .post(format!("{base}/streams/ledger"))
        .header("origin", &own_origin)
        .header("sec-fetch-site", "same-origin")
        .json(&append_body())
        .send()
        .unwrap();
    assert_eq!(same_origin.status(), 200, "{}", same_origin.text().unwrap());
    let origin_only = http
        .post(format!("{base}/streams/ledger"))
        .header("origin", &own_origin)
        .json(&append_body())
        .send()
        .unwrap();
    assert_eq!(origin_only.status(), 200, "{}", origin_only.text().unwrap());
    let plain = http
        .post(format!("{base}/streams/ledger"))
        .json(&append_body())
        .send()
        .unwrap();
    assert_eq!(plain.status(), 200, "{}", plain.text().unwrap());
    assert_eq!(events_in(&http, &base, "ledger"), 3);

    // The refusals are in the audit log (read from the server's stderr on a thread).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains("annals::audit") && l.contains("cross-site request refused"))
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match server.log.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("no audit line for a refusal in:\n{}", seen.join("\n")),
        }
    }
}

#[test]
fn with_auth_a_cross_site_request_is_refused_before_its_credentials_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "--auth",
            "--insecure-allow-plaintext-auth",
            "--admin-password",
            "changeit",
        ],
    );
    let base = format!("http://{}", server.addr);
    let http = http();
    // Right or wrong credentials: the cross-site check answers first (403, not 401), so a page
    // of another origin can neither use a browser's stored credentials nor make the server hash
    // guessed ones.
    for password in ["changeit", "wrong"] {
        let answer = http
            .post(format!("{base}/streams/ledger"))
            .basic_auth("admin", Some(password))
            .header("sec-fetch-site", "cross-site")
            .json(&append_body())
            .send()
            .unwrap();
        assert_refused(answer, &format!("append with password {password}"));
    }
    // The same request from the server's own origin is the admin's.
    let answer = http
        .post(format!("{base}/streams/ledger"))
        .basic_auth("admin", Some("changeit"))
        .header("origin", format!("http://127.0.0.1:{}", server.addr.port()))
        .json(&append_body())
        .send()
        .unwrap();
    assert_eq!(answer.status(), 200, "{}", answer.text().unwrap());
    let read = http
        .get(format!("{base}/streams/ledger"))
        .basic_auth("admin", Some("changeit"))
        .send()
        .unwrap();
    let page: serde_json::Value = read.json().unwrap();
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
}
