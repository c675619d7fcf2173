//! `annals serve --tls-cert --tls-key` with a self-signed certificate made at test time: HTTPS
//! (HTTP/2 by ALPN, and HTTP/1.1) and gRPC with the Rust `kurrentdb` client over TLS, each
//! verifying the certificate, each reading what the other wrote; and cleartext is refused.

use kurrentdb::{AppendToStreamOptions, Client, EventData, ReadStreamOptions};

use crate::support::{Server, path_str, runtime};

/// A self-signed certificate for `localhost`, written as PEM files into `dir`; returns the
/// certificate's PEM and the two paths.
fn self_signed(dir: &std::path::Path) -> (String, std::path::PathBuf, std::path::PathBuf) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_pem = made.cert.pem();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    (cert_pem, cert, key)
}

/// An HTTPS client that trusts only `cert_pem` and finds `localhost` at the server's address.
fn https_client(cert_pem: &str, server: &Server, http1_only: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .resolve("localhost", server.addr)
        .https_only(true);
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().unwrap()
}

async fn grpc_read(client: &Client, stream: &str) -> Vec<serde_json::Value> {
    let mut read = client
        .read_stream(stream, &ReadStreamOptions::default())
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(e) = read.next().await.unwrap() {
        out.push(e.get_original_event().as_json().unwrap());
    }
    out
}

#[test]
fn tls_serves_https_and_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let (cert_pem, cert, key) = self_signed(certs.path());
    let server = Server::start(
        dir.path(),
        &["--tls-cert", path_str(&cert), "--tls-key", path_str(&key)],
    );
    let base = format!("https://localhost:{}", server.addr.port());
    runtime().block_on(async {
        // HTTPS, over HTTP/2 (chosen by ALPN) and over HTTP/1.1.
        for (http1_only, stream, version) in [
            (false, "tls-h2", reqwest::Version::HTTP_2),
            (true, "tls-h1", reqwest::Version::HTTP_11),
        ] {
            let http = https_client(&cert_pem, &server, http1_only);
            let r = http
                .post(format!("{base}/streams/{stream}"))
                .json(&serde_json::json!({ "events": [{ "type": "Via", "data": { "via": "https" } }] }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.version(), version);
            assert!(r.status().is_success(), "{}", r.status());
            let page: serde_json::Value = http
                .get(format!("{base}/streams/{stream}"))
                .send()
                .await
                .unwrap()
                .error_for_status()
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(page["events"][0]["data"]["via"], "https", "{page}");
        }

        // gRPC, verifying the certificate against it as the only root.
        let url = format!(
            "kurrentdb://localhost:{}?tls=true&tlsCaFile={}",
            server.addr.port(),
            path_str(&cert)
        );
        let grpc = Client::new(url.parse().unwrap()).unwrap();
        let event = EventData::json("Via", &serde_json::json!({ "via": "grpc" })).unwrap();
        grpc.append_to_stream("tls-grpc", &AppendToStreamOptions::default(), event)
            .await
            .unwrap();
        assert_eq!(
            grpc_read(&grpc, "tls-grpc").await,
            vec![serde_json::json!({ "via": "grpc" })]
        );
        // What HTTPS wrote, read over gRPC, and the other way round.
        assert_eq!(
            grpc_read(&grpc, "tls-h2").await,
            vec![serde_json::json!({ "via": "https" })]
        );
        let page: serde_json::Value = https_client(&cert_pem, &server, false)
            .get(format!("{base}/streams/tls-grpc"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(page["events"][0]["data"]["via"], "grpc", "{page}");

        // A client that does not trust the certificate is refused by its own TLS check.
        let untrusting = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .resolve("localhost", server.addr)
            .build()
            .unwrap();
        assert!(untrusting.get(format!("{base}/health")).send().await.is_err());

        // Cleartext HTTP to the TLS port gets no HTTP answer.
        let cleartext = reqwest::Client::new()
            .get(format!("http://{}/health", server.addr))
            .send()
            .await;
        assert!(cleartext.is_err(), "cleartext answered: {cleartext:?}");
    });
}
