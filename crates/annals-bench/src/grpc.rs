//! What the two gRPC benches share: the server they load ([`GrpcServer`]), the client library
//! that loads it ([`GrpcClient`]), whether that client can reach that server in this build, and
//! the benchmark event in each library's form.

use bytes::Bytes;

use crate::client::{ProposedEvent, StreamsClient};
use crate::error::{BenchError, Context};
use crate::official;
use crate::workload::{EVENT_TYPE, event_data};

/// The running server a gRPC bench loads.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct GrpcServer {
    /// `HOST:PORT`.
    pub authority: String,
    /// The server speaks TLS; only the official client does.
    pub tls: bool,
    /// Login and password sent with every call (HTTP basic), for a server with `--auth`; only
    /// the official client sends them.
    pub credentials: Option<(String, String)>,
    /// A PEM CA certificate the official client trusts for this server.
    pub ca_file: Option<std::path::PathBuf>,
}

impl std::fmt::Display for GrpcServer {
    /// `HOST:PORT` for cleartext, `https://HOST:PORT` for TLS.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.tls {
            write!(f, "https://{}", self.authority)
        } else {
            f.write_str(&self.authority)
        }
    }
}

impl GrpcServer {
    /// Fails unless `client` is in this build and speaks this server's transport.
    pub(crate) fn check(&self, client: GrpcClient) -> Result<(), BenchError> {
        match client {
            GrpcClient::Annals if self.tls => Err(BenchError::Options(format!(
                "--client annals speaks cleartext HTTP/2 only, not TLS ({self}); \
                 give the server as HOST:PORT or http://HOST:PORT, or use --client kurrentdb"
            ))),
            GrpcClient::Kurrentdb if !cfg!(feature = "kurrentdb-client") => {
                Err(BenchError::OfficialClientNotBuilt)
            }
            _ => Ok(()),
        }
    }
}

/// The client library of the gRPC benches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GrpcClient {
    /// Annals's lean client ([`crate::client`]): the generated tonic client over one hyper HTTP/2
    /// connection, so the bench measures the server rather than the client.
    Annals,
    /// The official Rust `kurrentdb` crate, as applications use it (with the `kurrentdb-client`
    /// feature only).
    Kurrentdb,
}

/// Annals's lean client connected to `server` (cleartext).
pub(crate) async fn lean_client(server: &GrpcServer) -> Result<StreamsClient, BenchError> {
    server.check(GrpcClient::Annals)?;
    StreamsClient::connect(&server.authority)
        .await
        .context(|| format!("cannot reach the server at {server}"))
}

/// The benchmark event in each library's form, built once (`EventData::json` would serialise the
/// data again for every append); each append sets its own id.
#[derive(Clone, Debug)]
pub(crate) struct Template {
    pub(crate) annals: ProposedEvent,
    pub(crate) official: official::Event,
}

impl Template {
    pub(crate) fn new() -> Result<Self, BenchError> {
        let data = event_data();
        Ok(Self {
            official: official::Event::new(&data)?,
            annals: ProposedEvent {
                id: uuid::Uuid::nil(),
                event_type: EVENT_TYPE.to_owned(),
                json: true,
                data,
                metadata: Bytes::new(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(tls: bool) -> GrpcServer {
        GrpcServer {
            authority: "127.0.0.1:2113".to_owned(),
            tls,
            ..GrpcServer::default()
        }
    }

    #[test]
    fn shown_as_given_on_the_command_line() {
        assert_eq!(server(false).to_string(), "127.0.0.1:2113");
        assert_eq!(server(true).to_string(), "https://127.0.0.1:2113");
    }

    #[test]
    fn the_lean_client_refuses_tls() {
        assert!(server(false).check(GrpcClient::Annals).is_ok());
        let err = server(true).check(GrpcClient::Annals).unwrap_err();
        assert!(err.to_string().contains("cleartext"), "{err}");
    }

    #[test]
    fn the_official_client_is_there_only_with_its_feature() {
        let checked = server(true).check(GrpcClient::Kurrentdb);
        if cfg!(feature = "kurrentdb-client") {
            assert!(checked.is_ok());
        } else {
            let err = checked.unwrap_err();
            assert!(matches!(err, BenchError::OfficialClientNotBuilt));
            assert!(
                err.to_string().contains("--features kurrentdb-client"),
                "{err}"
            );
        }
    }
}
