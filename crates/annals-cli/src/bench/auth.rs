//! `annals bench grpc-append --auth`: starts the two servers the bench compares, as child
//! processes of this binary (`annals serve` on temporary stores and free ports of 127.0.0.1):
//! one without authentication, one with `--auth` over TLS with a CA and a certificate made for
//! the run. Their process ids let the bench read each server's CPU time.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use annals_bench::{Bench, GrpcAuthConfig, GrpcServer};
use anyhow::Context;

use crate::args::BenchGrpcAppendArgs;

/// The admin password of the bench's secure server (a throwaway store).
const BENCH_ADMIN_PASSWORD: &str = "bench-admin";

/// A child `annals serve`, killed when dropped.
struct ChildServer {
    child: Child,
    authority: String,
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data: &Path, extra: &[&str]) -> anyhow::Result<ChildServer> {
    let exe = std::env::current_exe().context("cannot find this program")?;
    let mut child = Command::new(exe)
        .args(["serve", "--data"])
        .arg(data)
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", "warn,annals_cli=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start annals serve")?;
    let stderr = child.stderr.take().context("no stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let authority = loop {
        let Some(line) = lines.next() else {
            anyhow::bail!("annals serve exited before serving");
        };
        let line = line.context("reading the server's log")?;
        if let Some(rest) = line.split("address=").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
        }
    };
    // Keep draining the log so the pipe never fills.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    Ok(ChildServer { child, authority })
}

/// A CA and a server certificate for `localhost` and `127.0.0.1`, as PEM files in `dir`:
/// (CA, certificate, key).
fn certificates(
    dir: &Path,
) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf, std::path::PathBuf)> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?
        .signed_by(&key, &issuer)?;
    let paths = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&paths.0, ca_cert.pem())?;
    std::fs::write(&paths.1, cert.pem())?;
    std::fs::write(&paths.2, key.serialize_pem())?;
    Ok(paths)
}

pub(crate) fn run(a: &BenchGrpcAppendArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("cannot make a temporary directory")?;
    let (ca, cert, key) = certificates(dir.path())?;
    let plain = start(&dir.path().join("plain"), &[])?;
    let secure = start(
        &dir.path().join("secure"),
        &[
            "--auth",
            "--admin-password",
            BENCH_ADMIN_PASSWORD,
            "--tls-cert",
            cert.to_str().context("certificate path")?,
            "--tls-key",
            key.to_str().context("key path")?,
        ],
    )?;
    let port = secure
        .authority
        .rsplit_once(':')
        .map(|(_, p)| p.to_owned())
        .context("bad server address")?;
    let config = GrpcAuthConfig {
        plain: (
            GrpcServer {
                authority: plain.authority.clone(),
                ..GrpcServer::default()
            },
            plain.child.id(),
        ),
        secure: (
            GrpcServer {
                // The certificate names localhost.
                authority: format!("localhost:{port}"),
                tls: true,
                credentials: Some(("admin".to_owned(), BENCH_ADMIN_PASSWORD.to_owned())),
                ca_file: Some(ca),
            },
            secure.child.id(),
        ),
        clients: a.clients,
        events: a.events,
        rounds: a.rounds,
        json: a.json,
    };
    annals_bench::run(&Bench::GrpcAuth(config))?;
    drop((plain, secure));
    Ok(())
}
