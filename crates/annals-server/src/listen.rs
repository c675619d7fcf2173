//! The listener: one TCP socket, HTTP/1.1 and HTTP/2 on every connection (cleartext h2c by prior
//! knowledge, as gRPC clients with `tls=false` speak it, or TLS with ALPN `h2` / `http/1.1`), at
//! most [`crate::Limits::connections_max`] connections, and a graceful shutdown: stop accepting,
//! tell long-lived responses to end, let requests in flight finish (up to [`SHUTDOWN_GRACE`]).
//!
//! Each connection has a watchdog, so slow or silent clients cannot hold the slots: a connection
//! that has not finished its TLS handshake and sent a request within
//! [`crate::Limits::first_request_timeout`] is closed, and so is one that moves no byte for
//! [`crate::Limits::idle_timeout`]. Quiet HTTP/2 connections are pinged
//! ([`crate::Limits::ping_interval`]): a live client's answers keep it open however long it
//! waits, and one that does not answer is closed.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use crate::state::ServerState;

/// The address of the client a request came from, inserted into every request's extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// Longest a shutdown waits for requests in flight before it drops their connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Certificate chain and private key, both PEM.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot read {what} {path}: {source}")]
    TlsFile {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{0}")]
    Tls(String),
}

/// Serves `router` on `listener` until `shutdown` resolves, then shuts down gracefully.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsFiles>,
    state: ServerState,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let acceptor = tls.as_ref().map(tls_acceptor).transpose()?;
    // With auth, every request learns who it runs as before any handler sees it; without, a
    // request carries no principal and handlers take it as `Principal::Open`, so the open
    // server's hot path pays nothing for the layer.
    let router = match state.auth {
        Some(_) => router.layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::authenticate,
        )),
        None => router,
    };
    // Outermost, with or without auth: a cross-site request is refused before anything looks at
    // it (no password is hashed for it); a GET costs it one comparison, a gRPC call one lookup.
    let router = router.layer(axum::middleware::from_fn(crate::origin::refuse_cross_site));
    let slots = Arc::new(Semaphore::new(state.limits.connections_max));
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    // Quiet HTTP/2 connections are pinged; a peer that does not answer is gone.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(state.limits.ping_interval))
        .keep_alive_timeout(state.limits.ping_interval);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            state.metrics.connection_refused();
            tracing::warn!(
                %peer,
                limit = state.limits.connections_max,
                "connection limit reached; closing the new connection"
            );
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let stream = QuickAck {
            stream,
            activity: Arc::clone(&activity),
        };
        // Handlers that describe their caller (persistent-subscription consumers) find the
        // peer's address among the request's extensions; the watchdog learns a request came.
        let seen = Arc::clone(&activity);
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            router.clone(),
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                seen.request_seen();
                req.extensions_mut().insert(PeerAddr(peer));
                req
            },
        ));
        let active = state.metrics.connection_opened();
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let limits = Arc::clone(&state.limits);
        let metrics = Arc::clone(&state.metrics);
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + limits.first_request_timeout;
            let io: Box<dyn Io> = match &acceptor {
                None => Box::new(stream),
                Some(acceptor) => {
                    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => Box::new(tls),
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake not done in time; closing");
                            metrics.connection_timed_out(false);
                            return;
                        }
                    }
                }
            };
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(io), service)
                .into_owned();
            let conn = watcher.watch(conn);
            tokio::pin!(conn);
            let mut check = deadline;
            loop {
                tokio::select! {
                    ended = &mut conn => {
                        if let Err(e) = ended {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    () = tokio::time::sleep_until(check) => {
                        if !activity.has_request() {
                            tracing::debug!(%peer, "no request within the first-request timeout; closing");
                            metrics.connection_timed_out(false);
                            break;
                        }
                        let quiet = activity.quiet_for();
                        if quiet >= limits.idle_timeout {
                            tracing::debug!(%peer, ?quiet, "connection idle; closing");
                            metrics.connection_timed_out(true);
                            break;
                        }
                        check = tokio::time::Instant::now() + (limits.idle_timeout - quiet);
                    }
                }
            }
            drop((slot, active));
        });
    }
    drop(listener);
    tracing::info!("stopped accepting connections; finishing requests in flight");
    state.begin_shutdown();
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "connections still open after the grace period; dropping them");
        }
    }
    Ok(())
}

fn tls_acceptor(files: &TlsFiles) -> Result<TlsAcceptor, ServeError> {
    let read = |what: &'static str, path: &PathBuf| {
        std::fs::read(path).map_err(|source| ServeError::TlsFile {
            what,
            path: path.clone(),
            source,
        })
    };
    let cert_pem = read("certificate", &files.cert)?;
    let key_pem = read("private key", &files.key)?;
    let certs = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServeError::Tls(format!("bad certificate {}: {e}", files.cert.display())))?;
    if certs.is_empty() {
        return Err(ServeError::Tls(format!(
            "no certificate in {}",
            files.cert.display()
        )));
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| ServeError::Tls(format!("bad private key {}: {e}", files.key.display())))?
        .ok_or_else(|| ServeError::Tls(format!("no private key in {}", files.key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServeError::Tls(format!("certificate and key do not fit: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// What a connection's stream is served over: TCP, or TLS over it.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// When a connection last moved a byte, and whether it has sent a request: what its watchdog
/// looks at to close connections that never send one, or go idle.
#[derive(Debug)]
struct Activity {
    opened: std::time::Instant,
    /// Milliseconds after `opened` of the last byte read or written.
    last_ms: AtomicU64,
    request: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: std::time::Instant::now(),
            last_ms: AtomicU64::new(0),
            request: AtomicBool::new(false),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn request_seen(&self) {
        self.request.store(true, Ordering::Relaxed);
    }

    fn has_request(&self) -> bool {
        self.request.load(Ordering::Relaxed)
    }

    /// How long since the last byte moved.
    fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.opened.elapsed().saturating_sub(last)
    }
}

/// A TCP stream that turns delayed ACKs off again after every read (Linux clears TCP_QUICKACK by
/// itself), and notes its [`Activity`]. Clients that leave Nagle on send a gRPC call's HEADERS
/// and DATA as two writes and hold the second until the first is acknowledged; a delayed ACK
/// makes that 40 ms per call.
#[derive(Debug)]
struct QuickAck {
    stream: tokio::net::TcpStream,
    activity: Arc<Activity>,
}

impl tokio::io::AsyncRead for QuickAck {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, std::task::Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let _ = self.stream.set_quickack(true);
            self.activity.touch();
        }
        polled
    }
}

impl tokio::io::AsyncWrite for QuickAck {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(polled, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
