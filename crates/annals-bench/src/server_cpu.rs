//! The server's own CPU time, read from its `/metrics` (`process_cpu_seconds_total`) before and
//! after a measured phase, so the gRPC benches print `server_cpu_us_per_event` for any running
//! Annals server, local or not. Over cleartext HTTP/1.1 only (the gRPC port serves it too); for
//! a TLS server, or one without the metric (not Annals), the figure is left out.

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

use crate::grpc::GrpcServer;

/// The bytes of `/metrics` read at most.
const METRICS_BYTES_MAX: usize = 4 << 20;

/// The server's CPU seconds so far, or `None` when they cannot be read.
pub(crate) async fn server_cpu_seconds(server: &GrpcServer) -> Option<f64> {
    server_metric(server, "process_cpu_seconds_total").await
}

/// One unlabelled sample of the server's `/metrics` (say `process_resident_memory_bytes`), or
/// `None` when it cannot be read.
pub(crate) async fn server_metric(server: &GrpcServer, name: &str) -> Option<f64> {
    if server.tls {
        return None;
    }
    let text = get_metrics(server).await?;
    parse_sample(&text, name)
}

async fn get_metrics(server: &GrpcServer) -> Option<String> {
    let tcp = tokio::net::TcpStream::connect(&server.authority)
        .await
        .ok()?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, String>(TokioIo::new(tcp))
            .await
            .ok()?;
    let driver = tokio::spawn(connection);
    let mut request = hyper::Request::get("/metrics").header("host", &server.authority);
    if let Some((user, password)) = &server.credentials {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        request = request.header("authorization", format!("Basic {token}"));
    }
    let response = sender
        .send_request(request.body(String::new()).ok()?)
        .await
        .ok()?;
    let text = if response.status().is_success() {
        let body = http_body_util::Limited::new(response.into_body(), METRICS_BYTES_MAX)
            .collect()
            .await
            .ok()?
            .to_bytes();
        String::from_utf8(body.to_vec()).ok()
    } else {
        None
    };
    driver.abort();
    text
}

/// The unlabelled sample `name` of a Prometheus exposition.
fn parse_sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_seconds_come_from_the_exposition() {
        let text = "# TYPE process_cpu_seconds counter\nprocess_cpu_seconds_total 12.5\n";
        assert_eq!(parse_sample(text, "process_cpu_seconds_total"), Some(12.5));
        assert_eq!(
            parse_sample("annals_x 1\n", "process_cpu_seconds_total"),
            None
        );
        assert_eq!(
            parse_sample(
                "process_cpu_seconds_totalx 1\n",
                "process_cpu_seconds_total"
            ),
            None
        );
    }
}
