//! `annals serve --auth` over TLS with a certificate from a CA made at test time: users managed
//! over HTTP, stream access lists and the defaults, through the real Rust `kurrentdb` client
//! (which reports both "not authenticated" and "access denied" as `AccessDenied`) and the
//! Python `kurrentdbclient` (which tells them apart), plus what the server refuses to start
//! with.

use kurrentdb::{AppendToStreamOptions, Client, EventData, ReadAllOptions, ReadStreamOptions};

use crate::support::{Server, annals, path_str, runtime, workspace_root};

/// A CA, and a certificate it signed for `localhost` and `127.0.0.1`, as PEM files in `dir`:
/// (CA certificate file, server certificate file, server key file).
pub(crate) fn ca_and_server_cert(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Annals test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let ca_file = dir.join("ca.pem");
    let cert_file = dir.join("server.pem");
    let key_file = dir.join("server.key");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    (ca_file, cert_file, key_file)
}

/// `annals serve --auth --admin-password changeit` over TLS; returns the server and the CA file.
pub(crate) fn start_secure(
    data: &std::path::Path,
    certs: &std::path::Path,
    extra: &[&str],
) -> (Server, std::path::PathBuf) {
    let (ca, cert, key) = ca_and_server_cert(certs);
    let mut args = vec![
        "--auth",
        "--admin-password",
        "changeit",
        "--tls-cert",
        path_str(&cert),
        "--tls-key",
        path_str(&key),
    ];
    args.extend_from_slice(extra);
    (Server::start(data, &args), ca)
}

fn client(server: &Server, ca: &std::path::Path, user: &str, password: &str) -> Client {
    let url = format!(
        "kurrentdb://{user}:{password}@localhost:{}?tls=true&tlsCaFile={}",
        server.addr.port(),
        path_str(ca)
    );
    Client::new(url.parse().unwrap()).unwrap()
}

fn https(server: &Server, ca: &std::path::Path) -> reqwest::Client {
    let pem = std::fs::read(ca).unwrap();
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .resolve("localhost", server.addr)
        .https_only(true)
        .build()
        .unwrap()
}

async fn events_of(client: &Client, stream: &str) -> Result<usize, kurrentdb::Error> {
    let mut read = client
        .read_stream(stream, &ReadStreamOptions::default())
        .await?;
    let mut n = 0;
    while read.next().await?.is_some() {
        n += 1;
    }
    Ok(n)
}

fn event(n: u64) -> EventData {
    EventData::json("Entry", &serde_json::json!({ "n": n })).unwrap()
}

#[test]
fn users_and_access_lists_through_the_rust_client_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let (server, ca) = start_secure(dir.path(), certs.path(), &[]);
    let base = format!("https://localhost:{}", server.addr.port());
    let http = https(&server, &ca);
    runtime().block_on(async {
        // /health is open; anything else wants credentials, and says so.
        let health = http.get(format!("{base}/health")).send().await.unwrap();
        assert_eq!(health.status(), 200);
        for path in ["/streams/ledger", "/all", "/metrics", "/relays", "/users"] {
            let r = http.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(r.status(), 401, "{path}");
            assert!(r.headers().contains_key("www-authenticate"), "{path}");
        }
        let admin = client(&server, &ca, "admin", "changeit");

        // The admin creates a user in `sales` and one in `$ops`, over HTTP.
        for (login, group) in [("ann", "sales"), ("ops", "$ops")] {
            let r = http
                .post(format!("{base}/users"))
                .basic_auth("admin", Some("changeit"))
                .json(&serde_json::json!({"login": login, "password": "pw", "groups": [group]}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        }
        // `ledger`: written by admins only (the admin passes anyway), read by every user.
        admin
            .append_to_stream("ledger", &AppendToStreamOptions::default(), event(1))
            .await
            .unwrap();
        let meta = http
            .post(format!("{base}/streams/$$ledger"))
            .basic_auth("admin", Some("changeit"))
            .json(&serde_json::json!({"events": [{"type": "$metadata", "data":
                {"$acl": {"$w": ["$admins"], "$r": ["$all"]}}}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(meta.status(), 200, "{}", meta.text().await.unwrap());

        let ann = client(&server, &ca, "ann", "pw");
        // Refused: a write the access list does not give; the stream is unchanged.
        let refused = ann
            .append_to_stream("ledger", &AppendToStreamOptions::default(), event(2))
            .await;
        assert!(
            matches!(refused, Err(kurrentdb::Error::AccessDenied)),
            "{refused:?}"
        );
        assert_eq!(events_of(&admin, "ledger").await.unwrap(), 1);
        // Allowed: reading it, and writing a stream the defaults open to every user.
        assert_eq!(events_of(&ann, "ledger").await.unwrap(), 1);
        ann.append_to_stream("orders-1", &AppendToStreamOptions::default(), event(3))
            .await
            .unwrap();
        // `$all` and system streams: admins only by default.
        let all = ann.read_all(&ReadAllOptions::default().max_count(1)).await;
        let all = match all {
            Ok(mut read) => read.next().await.map(|_| ()),
            Err(e) => Err(e),
        };
        assert!(
            matches!(all, Err(kurrentdb::Error::AccessDenied)),
            "{all:?}"
        );
        assert!(matches!(
            events_of(&ann, "$users").await,
            Err(kurrentdb::Error::AccessDenied)
        ));
        // Over HTTP the same: 403 with a body saying so.
        let r = http
            .post(format!("{base}/streams/ledger"))
            .basic_auth("ann", Some("pw"))
            .json(&serde_json::json!({"events": [{"type": "Entry", "data": {}}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "access_denied");
        // Admin operations: operators only.
        for (user, password, status) in [
            ("ann", "pw", 403),
            ("ops", "pw", 200),
            ("admin", "changeit", 200),
            ("admin", "pw", 401),
        ] {
            let r = http
                .get(format!("{base}/subscriptions"))
                .basic_auth(user, Some(password))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), status, "{user}:{password}");
        }
        let r = http
            .get(format!("{base}/metrics"))
            .basic_auth("ops", Some("pw"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);

        // A wrong password is refused.
        let wrong = client(&server, &ca, "ann", "nope");
        assert!(matches!(
            events_of(&wrong, "orders-1").await,
            Err(kurrentdb::Error::AccessDenied)
        ));
        // A disabled user is refused from its next request on, cached credentials or not.
        let r = http
            .post(format!("{base}/users/ann/disable"))
            .basic_auth("admin", Some("changeit"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(matches!(
            events_of(&ann, "orders-1").await,
            Err(kurrentdb::Error::AccessDenied)
        ));
        assert_eq!(events_of(&admin, "orders-1").await.unwrap(), 1);
    });
    // Denials and admin commands are in the audit log, with the user and the stream.
    let log: Vec<String> = server.log.try_iter().collect();
    let log = log.join("\n");
    assert!(
        log.contains("access denied") && log.contains("user=ann") && log.contains("ledger"),
        "{log}"
    );
    assert!(log.contains("user created"), "{log}");
    assert!(!log.contains("changeit"), "a password reached the log");
}

#[test]
fn auth_needs_tls_or_an_explicit_plaintext_flag_and_a_first_admin_password() {
    let dir = tempfile::tempdir().unwrap();
    let data = path_str(dir.path());
    let out = annals(&["serve", "--data", data, "--listen", "127.0.0.1:0", "--auth"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--auth needs TLS"), "{err}");
    let out = annals(&[
        "serve",
        "--data",
        data,
        "--listen",
        "127.0.0.1:0",
        "--auth",
        "--insecure-allow-plaintext-auth",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--admin-password"), "{err}");
}

#[test]
fn the_python_client_is_told_not_authenticated_apart_from_access_denied() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let (server, ca) = start_secure(dir.path(), certs.path(), &[]);
    let root = workspace_root();
    crate::clients::run_client(
        &server,
        &root.join("target/clients/py/bin/python"),
        &[
            root.join("tests/clients/python/auth_test.py")
                .to_str()
                .unwrap(),
            &server.addr.port().to_string(),
            path_str(&ca),
        ],
    );
}

#[test]
fn projection_tables_need_an_operator_or_the_read_right_of_the_projection() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let defs = dir.path().join("projections.toml");
    std::fs::write(&defs, crate::projections::DEFINITION).unwrap();
    let (server, ca) = start_secure(
        &dir.path().join("data"),
        certs.path(),
        &["--projections", path_str(&defs)],
    );
    let base = format!("https://localhost:{}", server.addr.port());
    let http = https(&server, &ca);
    runtime().block_on(async {
        let get = |user: &'static str, password: &'static str, path: &'static str| {
            let http = http.clone();
            let url = format!("{base}{path}");
            async move {
                http.get(url)
                    .basic_auth(user, Some(password))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        };
        for (login, group) in [("ann", "sales"), ("ops", "$ops")] {
            let r = http
                .post(format!("{base}/users"))
                .basic_auth("admin", Some("changeit"))
                .json(&serde_json::json!({"login": login, "password": "pw", "groups": [group]}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
        let table = "/projections/orders/tables/orders";
        assert_eq!(get("ann", "pw", table).await, 403);
        assert_eq!(get("ann", "pw", "/projections").await, 403);
        assert_eq!(get("ops", "pw", table).await, 200);
        assert_eq!(get("ops", "pw", "/projections").await, 200);
        // The read right of the projection, given in `$projection-orders`'s access list.
        let meta = http
            .post(format!("{base}/streams/$$$projection-orders"))
            .basic_auth("admin", Some("changeit"))
            .json(&serde_json::json!({"events": [{"type": "$metadata", "data":
                {"$acl": {"$r": ["ann"]}}}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(meta.status(), 200, "{}", meta.text().await.unwrap());
        assert_eq!(get("ann", "pw", table).await, 200);
        // Still no other admin operation.
        assert_eq!(get("ann", "pw", "/projections").await, 403);
    });
}

/// With `--auth`, the admin UI asks for a login (401 with `WWW-Authenticate`, on which a browser
/// prompts), and shows each user what it may see: the consumers of the log and the projection
/// pages (with their commands) to operators only, a stream's pages to those who may read it,
/// the `$all` tail to those who may read `$all`. The status feed follows the same rule.
#[test]
fn the_admin_ui_asks_for_a_login_and_shows_each_user_what_it_may_see() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let defs = dir.path().join("projections.toml");
    std::fs::write(&defs, crate::projections::DEFINITION).unwrap();
    let (server, ca) = start_secure(
        &dir.path().join("data"),
        certs.path(),
        &["--projections", path_str(&defs)],
    );
    let base = format!("https://localhost:{}", server.addr.port());
    let http = https(&server, &ca);
    runtime().block_on(async {
        let get = |who: Option<(&'static str, &'static str)>, path: String| {
            let mut req = http.get(format!("{base}{path}"));
            if let Some((user, password)) = who {
                req = req.basic_auth(user, Some(password));
            }
            async move {
                let r = req.send().await.unwrap();
                let status = r.status().as_u16();
                let challenge = r.headers().contains_key("www-authenticate");
                (status, challenge, r.text().await.unwrap())
            }
        };
        let admin = Some(("admin", "changeit"));
        for (login, group) in [("ann", "sales"), ("ops", "$ops")] {
            let r = http
                .post(format!("{base}/users"))
                .basic_auth("admin", Some("changeit"))
                .json(&serde_json::json!({"login": login, "password": "pw", "groups": [group]}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
        for (stream, acl) in [("secret-1", serde_json::json!({"$r": ["ops"]})), ("open-1", serde_json::json!({}))] {
            let r = http
                .post(format!("{base}/streams/{stream}"))
                .basic_auth("admin", Some("changeit"))
                .json(&serde_json::json!({"events": [{"type": "T", "data": {"n": 1}}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            if acl != serde_json::json!({}) {
                let r = http
                    .post(format!("{base}/streams/$${stream}"))
                    .basic_auth("admin", Some("changeit"))
                    .json(&serde_json::json!({"events": [{"type": "$metadata", "data": {"$acl": acl}}]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        }
        // No credentials: every page asks for them.
        for path in ["/", "/ui/streams", "/ui/projections/orders", "/status"] {
            let (status, challenge, _) = get(None, path.to_owned()).await;
            assert_eq!((status, challenge), (401, true), "{path}");
        }
        // The assets are not secret (the login prompt's page may use them).
        assert_eq!(get(None, "/ui/assets/app.js".to_owned()).await.0, 200);
        // An operator sees the consumers and the projection's commands.
        let (status, _, page) = get(Some(("ops", "pw")), "/".to_owned()).await;
        assert_eq!(status, 200);
        assert!(page.contains("id=\"consumers\"") && page.contains("data-name=\"orders\""));
        let (status, _, page) = get(Some(("ops", "pw")), "/ui/projections/orders".to_owned()).await;
        assert_eq!(status, 200);
        assert!(page.contains("id=\"cmd-reset\""));
        // Another user sees the store's figures only, and no projection page.
        let (status, _, page) = get(Some(("ann", "pw")), "/".to_owned()).await;
        assert_eq!(status, 200);
        assert!(page.contains("id=\"head\"") && !page.contains("id=\"consumers\""));
        assert!(!page.contains("/ui/subscriptions"), "no operator links");
        let (status, _, page) = get(Some(("ann", "pw")), "/ui/projections/orders".to_owned()).await;
        assert_eq!(status, 403);
        assert!(!page.contains("cmd-reset"));
        let (_, _, status_json) = get(Some(("ann", "pw")), "/status".to_owned()).await;
        let status_json: serde_json::Value = serde_json::from_str(&status_json).unwrap();
        assert_eq!(status_json["consumers"], serde_json::json!([]));
        let (_, _, status_json) = get(Some(("ops", "pw")), "/status".to_owned()).await;
        let status_json: serde_json::Value = serde_json::from_str(&status_json).unwrap();
        assert_eq!(status_json["consumers"][0]["name"], "orders");
        // Streams: listed and shown only where the user may read them.
        let (_, _, list) = get(Some(("ann", "pw")), "/ui/streams".to_owned()).await;
        assert!(list.contains(">open-1<") && !list.contains(">secret-1<"), "{list}");
        let (_, _, list) = get(Some(("ops", "pw")), "/ui/streams".to_owned()).await;
        assert!(list.contains(">secret-1<"));
        assert_eq!(get(Some(("ann", "pw")), "/ui/streams/secret-1".to_owned()).await.0, 403);
        assert_eq!(
            get(Some(("ann", "pw")), "/ui/streams/secret-1/events/0".to_owned()).await.0,
            403
        );
        assert_eq!(get(Some(("ops", "pw")), "/ui/streams/secret-1/events/0".to_owned()).await.0, 200);
        // `$all` is for admins by default.
        assert_eq!(get(Some(("ann", "pw")), "/ui/all".to_owned()).await.0, 403);
        assert_eq!(get(admin, "/ui/all".to_owned()).await.0, 200);
    });
}
