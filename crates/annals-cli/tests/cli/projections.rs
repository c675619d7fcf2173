//! Projections through the real server: `annals serve --projections FILE` runs a declarative
//! projection into the default SQLite target; the HTTP routes and `annals projections …` show and
//! control it (`--server` as `http://HOST:PORT` or `HOST:PORT`; a bad one is refused); a
//! read-your-writes wait answers once the row is committed, or `stale`; a bad definition is
//! refused and changes nothing; the catalog survives a restart; and a server killed with SIGKILL
//! in the middle of a load resumes to a view equal, row for row, to one computed from the log.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::{Server, annals, path_str};

pub(crate) const DEFINITION: &str = r#"
[[projection]]
name = "orders"
source = { category = "order" }
tables = ["orders"]
setup = ["CREATE TABLE {orders} (id TEXT PRIMARY KEY, stream TEXT NOT NULL, customer TEXT NOT NULL, total INTEGER NOT NULL)"]
partitions = 2

[[projection.handler]]
event_type = "OrderPlaced"
sql = "INSERT INTO {orders} (id, stream, customer, total) VALUES ($1, $2, $3, $4)"
params = ["data.id", "stream", "data.customer", "data.total"]
"#;

type Rows = BTreeMap<String, (String, String, i64)>;

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn base(server: &Server) -> String {
    format!("http://{}", server.addr)
}

/// Appends `count` orders over HTTP; returns the last position.
fn append_orders(server: &Server, from: u64, count: u64) -> u64 {
    let client = http();
    let mut last = 0;
    for i in from..from + count {
        let body = serde_json::json!({ "events": [{
            "id": uuid::Uuid::new_v4(),
            "type": "OrderPlaced",
            "data": { "id": format!("o{i}"), "customer": format!("c{}", i % 7), "total": i * 3 },
        }]});
        let answer = client
            .post(format!("{}/streams/order-{}", base(server), i % 5))
            .json(&body)
            .send()
            .unwrap();
        assert!(answer.status().is_success(), "{}", answer.text().unwrap());
        let v: serde_json::Value = answer.json().unwrap();
        last = v["position"].as_u64().unwrap();
    }
    last
}

/// The rows a from-scratch computation of the log's `OrderPlaced` events gives.
fn expected_rows(server: &Server) -> Rows {
    let client = http();
    let mut rows = Rows::new();
    let mut from = 1;
    loop {
        let page: serde_json::Value = client
            .get(format!("{}/all?from={from}&count=1000", base(server)))
            .send()
            .unwrap()
            .json()
            .unwrap();
        for e in page["events"].as_array().unwrap() {
            if e["type"] == "OrderPlaced" && e["stream"].as_str().unwrap().starts_with("order-") {
                let d = &e["data"];
                rows.insert(
                    d["id"].as_str().unwrap().to_owned(),
                    (
                        e["stream"].as_str().unwrap().to_owned(),
                        d["customer"].as_str().unwrap().to_owned(),
                        d["total"].as_i64().unwrap(),
                    ),
                );
            }
        }
        if page["endReached"].as_bool().unwrap() {
            return rows;
        }
        from = page["next"].as_u64().unwrap();
    }
}

/// The view as readers see it (the `orders` view of the default SQLite target).
fn view_rows(data: &Path) -> Rows {
    let db = rusqlite::Connection::open_with_flags(
        data.join("projections.sqlite3"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut q = db
        .prepare("SELECT id, stream, customer, total FROM orders")
        .unwrap();
    q.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, (r.get(1)?, r.get(2)?, r.get(3)?)))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// Waits (read-your-writes) until `orders` has applied `position`.
fn wait_applied(server: &Server, position: u64) {
    let answer = http()
        .get(format!(
            "{}/projections/orders/wait?position={position}&timeoutMs=30000",
            base(server)
        ))
        .send()
        .unwrap();
    assert_eq!(answer.status(), 200, "{}", answer.text().unwrap());
}

fn status(server: &Server) -> serde_json::Value {
    http()
        .get(format!("{}/projections/orders", base(server)))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

fn cli(server: &Server, args: &[&str]) -> String {
    let url = base(server);
    let mut all = vec!["projections", "--server", url.as_str()];
    all.extend_from_slice(args);
    let out = annals(&all);
    assert!(
        out.status.success(),
        "annals {all:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A `--server` that is neither `HOST:PORT` nor an http(s) URL is refused before any request,
/// saying which forms it takes.
#[test]
fn projections_cli_refuses_a_bad_server_address() {
    for bad in [
        "ftp://127.0.0.1:2113",
        "127.0.0.1",
        "http://127.0.0.1:2113/projections",
    ] {
        let out = annals(&["projections", "--server", bad, "list"]);
        assert!(!out.status.success(), "{bad} was taken");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("HOST:PORT, http://HOST:PORT or https://HOST:PORT"),
            "{bad}: {stderr}"
        );
    }
}

#[test]
fn declarative_projection_over_http_and_cli() {
    let dir = tempfile::tempdir().unwrap();
    let defs = dir.path().join("projections.toml");
    std::fs::write(&defs, DEFINITION).unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data, &["--projections", path_str(&defs)]);

    let last = append_orders(&server, 0, 40);
    wait_applied(&server, last);
    assert_eq!(view_rows(&data), expected_rows(&server));
    assert_eq!(view_rows(&data).len(), 40);

    // Stale: a position not yet written cannot be waited for past the timeout.
    let stale = http()
        .get(format!(
            "{}/projections/orders/wait?position={}&timeoutMs=200",
            base(&server),
            last + 1_000
        ))
        .send()
        .unwrap();
    assert_eq!(stale.status(), 409);
    let stale: serde_json::Value = stale.json().unwrap();
    assert_eq!(stale["error"], "stale");
    assert!(stale["applied"].as_u64().unwrap() >= last);

    // Read-your-writes through the table route: an append, then a read that names its
    // position, sees the append's row; the rows equal the view's.
    let appended = append_orders(&server, 1_000, 1);
    let read = http()
        .get(format!(
            "{}/projections/orders/tables/orders?position={appended}&timeoutMs=30000&limit=1000",
            base(&server)
        ))
        .send()
        .unwrap();
    assert_eq!(read.status(), 200);
    let read: serde_json::Value = read.json().unwrap();
    assert!(read["position"].as_u64().unwrap() >= appended);
    assert_eq!(
        read["columns"],
        serde_json::json!(["id", "stream", "customer", "total"])
    );
    let served: Rows = read["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                (
                    r["stream"].as_str().unwrap().to_owned(),
                    r["customer"].as_str().unwrap().to_owned(),
                    r["total"].as_i64().unwrap(),
                ),
            )
        })
        .collect();
    assert!(served.contains_key("o1000"));
    assert_eq!(served, view_rows(&data));
    // Paging: ordered by the first column, `offset` skips.
    let page: serde_json::Value = http()
        .get(format!(
            "{}/projections/orders/tables/orders?limit=2&offset=1",
            base(&server)
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let ids: Vec<&str> = page["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    let all_ids: Vec<&String> = served.keys().collect();
    assert_eq!(ids, vec![all_ids[1].as_str(), all_ids[2].as_str()]);
    // A position not yet applied answers stale; a table the projection does not declare is
    // refused (it never reaches SQL).
    let stale = http()
        .get(format!(
            "{}/projections/orders/tables/orders?position={}&timeoutMs=200",
            base(&server),
            appended + 1_000
        ))
        .send()
        .unwrap();
    assert_eq!(stale.status(), 409);
    for table in ["annals_checkpoints", "orders;DROP%20TABLE%20orders"] {
        let refused = http()
            .get(format!(
                "{}/projections/orders/tables/{table}",
                base(&server)
            ))
            .send()
            .unwrap();
        assert_eq!(refused.status(), 404, "{table}");
        let refused: serde_json::Value = refused.json().unwrap();
        assert_eq!(refused["error"], "no_such_table");
    }
    assert_eq!(view_rows(&data).len(), 41);

    // The CLI lists and shows it.
    let listed: serde_json::Value =
        serde_json::from_str(&cli(&server, &["--json", "list"])).unwrap();
    let listed = listed["projections"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["name"], "orders");
    assert_eq!(listed[0]["state"], "running");
    assert!(listed[0]["position"].as_u64().unwrap() >= last);
    assert!(cli(&server, &["status", "orders"]).contains("orders"));
    // `--server` also takes the address without a scheme, as the gRPC benches' does.
    let addr = server.addr.to_string();
    let out = annals(&["projections", "--server", &addr, "list"]);
    assert!(
        out.status.success(),
        "annals projections --server {addr} list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.lines().any(|l| l.starts_with("orders ")), "{table}");

    // A definition whose SQL does not prepare is refused and registers nothing.
    let bad = DEFINITION
        .replace("name = \"orders\"", "name = \"broken\"")
        .replace("INSERT INTO {orders}", "INSERT INTO {orders} nonsense");
    let refused = http()
        .post(format!("{}/projections", base(&server)))
        .body(bad)
        .send()
        .unwrap();
    assert_eq!(refused.status(), 400);
    let refused: serde_json::Value = refused.json().unwrap();
    assert_eq!(refused["error"], "bad_definition", "{refused}");
    let listed: serde_json::Value =
        serde_json::from_str(&cli(&server, &["--json", "list"])).unwrap();
    assert_eq!(listed["projections"].as_array().unwrap().len(), 1);

    // Pause holds new events back; resume applies them.
    cli(&server, &["pause", "orders"]);
    let paused_last = append_orders(&server, 40, 5);
    assert_eq!(status(&server)["state"], "paused");
    cli(&server, &["resume", "orders"]);
    wait_applied(&server, paused_last);

    // Rebuild builds generation 2 beside 1 and swaps; readers keep a complete view throughout.
    cli(&server, &["rebuild", "orders"]);
    let started = Instant::now();
    loop {
        let rows = view_rows(&data);
        assert!(
            rows.len() >= 45,
            "readers saw an incomplete view: {}",
            rows.len()
        );
        let s = status(&server);
        if s["generation"] == 2 && s["rebuild"].is_null() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "rebuild did not finish: {s}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(view_rows(&data), expected_rows(&server));

    // The catalog outlives the process: no --projections on the second start.
    assert!(server.terminate().success());
    let server = Server::start(&data, &[]);
    let last = append_orders(&server, 45, 5);
    wait_applied(&server, last);
    assert_eq!(status(&server)["generation"], 2);
    assert_eq!(view_rows(&data), expected_rows(&server));
    assert_eq!(view_rows(&data).len(), 51);
    // After the swap the table route reads generation 2 through the same view.
    let read: serde_json::Value = http()
        .get(format!(
            "{}/projections/orders/tables/orders?position={last}&limit=1000",
            base(&server)
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(read["rows"].as_array().unwrap().len(), 51);
}

#[test]
fn projection_resumes_exactly_after_sigkill_mid_load() {
    let dir = tempfile::tempdir().unwrap();
    let defs = dir.path().join("projections.toml");
    std::fs::write(&defs, DEFINITION).unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data, &["--projections", path_str(&defs)]);
    // Batches of 50 events, so the projection commits many-event batches while the kill lands.
    let client = http();
    let url = base(&server);
    let load = std::thread::spawn(move || {
        for b in 0u64.. {
            let events: Vec<_> = (0..50)
                .map(|k| {
                    let i = b * 50 + k;
                    serde_json::json!({
                        "id": uuid::Uuid::new_v4(),
                        "type": "OrderPlaced",
                        "data": { "id": format!("o{i}"), "customer": format!("c{}", i % 7), "total": i },
                    })
                })
                .collect();
            let sent = client
                .post(format!("{url}/streams/order-{}", b % 13))
                .json(&serde_json::json!({ "events": events }))
                .send();
            if !sent.is_ok_and(|r| r.status().is_success()) {
                return b;
            }
        }
        unreachable!()
    });
    // Kill once the projection is mid-way through a good amount of work.
    let started = Instant::now();
    while status(&server)["position"].as_u64().unwrap_or(0) < 2_000 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "projection made no progress"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let batches = load.join().unwrap();
    assert!(batches > 0);

    let server = Server::start(&data, &[]);
    let head: serde_json::Value = http()
        .get(format!("{}/health", base(&server)))
        .send()
        .unwrap()
        .json()
        .unwrap();
    wait_applied(&server, head["head"].as_u64().unwrap());
    let expected = expected_rows(&server);
    assert!(expected.len() >= 2_000);
    assert_eq!(view_rows(&data), expected);
}
