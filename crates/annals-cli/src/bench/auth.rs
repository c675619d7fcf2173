//! `annals bench grpc-append --auth`: starts the three servers the bench compares, as child
//! processes of this binary (`annals serve` on temporary stores and free ports of 127.0.0.1):
//! cleartext, TLS, and `--auth` over TLS, with a CA and a certificate made for the run. Their
//! process ids let the bench read each server's CPU time.

use std::path::Path;

use annals_bench::{Bench, GrpcAuthConfig, GrpcServer};
use anyhow::Context;

use super::child::{ChildServer, start};
use crate::args::BenchGrpcAppendArgs;

/// The admin password of the bench's secure server (a throwaway store).
const BENCH_ADMIN_PASSWORD: &str = "bench-admin";

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

/// Requests the in-process measure of the authentication layer makes.
const AUTH_CHECKS: u32 = 200_000;

/// CPU per request of the authentication layer alone, in µs: a cached credential checked and
/// a stream's write right decided, as every authenticated append does, in this process.
fn auth_check_cpu_us(dir: &Path) -> anyhow::Result<f64> {
    use base64::Engine as _;
    let (engine, _) = crate::store::open(dir, annals_engine::Durability::Fsync)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("runtime")?;
    let measured = runtime.block_on(async {
        let auth = annals_server::Auth::open(engine.clone(), Some(BENCH_ADMIN_PASSWORD.to_owned()))
            .await?;
        let admin = auth
            .authenticate(
                Some(
                    format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD
                            .encode(format!("admin:{BENCH_ADMIN_PASSWORD}"))
                    )
                    .as_bytes(),
                ),
                None,
            )
            .await?;
        auth.create_user(&admin, "writer", "", vec![], "pw".to_owned())
            .await?;
        let header = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("writer:pw")
        );
        // The first check hashes; the rest are answered from the cache, as on a connection.
        auth.authenticate(Some(header.as_bytes()), None).await?;
        let cpu = annals_bench::thread_cpu_ns()?;
        for i in 0..AUTH_CHECKS {
            let who = auth.authenticate(Some(header.as_bytes()), None).await?;
            auth.check_stream(
                &who,
                if i % 2 == 0 { "orders-1" } else { "orders-2" },
                annals_core::StreamRight::Write,
            )?;
        }
        let spent = annals_bench::thread_cpu_ns()?.saturating_sub(cpu);
        anyhow::Ok(spent as f64 / 1000.0 / f64::from(AUTH_CHECKS))
    });
    engine.close();
    measured
}

pub(crate) fn run(a: &BenchGrpcAppendArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("cannot make a temporary directory")?;
    let auth_check_cpu_us = auth_check_cpu_us(&dir.path().join("auth-check"))?;
    let (ca, cert, key) = certificates(dir.path())?;
    let plain = start::<&str>(&dir.path().join("plain"), &[])?;
    let tls_only = start(
        &dir.path().join("tls"),
        &[
            "--tls-cert",
            cert.to_str().context("certificate path")?,
            "--tls-key",
            key.to_str().context("key path")?,
        ],
    )?;
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
    // The certificate names localhost.
    let localhost = |server: &ChildServer| -> anyhow::Result<String> {
        let port = server
            .authority
            .rsplit_once(':')
            .map(|(_, p)| p.to_owned())
            .context("bad server address")?;
        Ok(format!("localhost:{port}"))
    };
    let config = GrpcAuthConfig {
        plain: (
            GrpcServer {
                authority: plain.authority.clone(),
                ..GrpcServer::default()
            },
            plain.child.id(),
        ),
        tls: (
            GrpcServer {
                authority: localhost(&tls_only)?,
                tls: true,
                credentials: None,
                ca_file: Some(ca.clone()),
            },
            tls_only.child.id(),
        ),
        secure: (
            GrpcServer {
                authority: localhost(&secure)?,
                tls: true,
                credentials: Some(("admin".to_owned(), BENCH_ADMIN_PASSWORD.to_owned())),
                ca_file: Some(ca),
            },
            secure.child.id(),
        ),
        clients: a.clients,
        events: a.events,
        rounds: a.rounds,
        rate: (a.rate > 0).then_some(a.rate),
        auth_check_cpu_us,
        json: a.json,
    };
    annals_bench::run(&Bench::GrpcAuth(Box::new(config)))?;
    drop((plain, tls_only, secure));
    Ok(())
}
