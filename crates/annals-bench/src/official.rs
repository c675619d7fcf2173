//! The official Rust `kurrentdb` client as the gRPC benches drive it (`--client kurrentdb`):
//! connecting, warming a connection up, appending (one call per append or on a BatchAppend
//! call), and reading `$all`. Compiled with the `kurrentdb-client` feature only;
//! `official_absent.rs` stands in for it without, with the same names.

use std::sync::Arc;

use bytes::Bytes;
use kurrentdb::{
    AppendToStreamOptions, BatchAppendClient, BatchAppendOptions, EventData, ReadAllOptions,
    ReadStreamOptions, StreamPosition, StreamState,
};

use crate::error::{BenchError, Context};
use crate::grpc::GrpcServer;
use crate::workload::{EVENT_TYPE, random_id};

/// A `kurrentdb` client: one HTTP/2 connection, opened on first use; clones share it. Behind an
/// `Arc`, as the lean client is behind a `Box`, so the benches' enums of clients stay small.
#[derive(Clone)]
pub(crate) struct Client(Arc<kurrentdb::Client>);

/// A `Streams.BatchAppend` call opened by a [`Client`]; clones share it.
#[derive(Clone)]
pub(crate) struct BatchClient(Arc<BatchAppendClient>);

/// The bench's event in the client's form, built once: `EventData::json` would serialise the data
/// again for every append.
#[derive(Clone)]
pub(crate) struct Event(EventData);

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("official::Client").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for BatchClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("official::BatchClient")
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("official::Event").finish_non_exhaustive()
    }
}

impl Event {
    /// The benchmark event with the JSON `data`.
    pub(crate) fn new(data: &Bytes) -> Result<Self, BenchError> {
        let json: serde_json::Value = serde_json::from_slice(data)?;
        Ok(Self(EventData::json(EVENT_TYPE, &json)?))
    }
}

impl Client {
    /// A client of `server`; connects on first use. Must be called within a tokio runtime, whose
    /// tasks carry the client's connection.
    pub(crate) fn new(server: &GrpcServer) -> Result<Self, BenchError> {
        let url = connection_string(server);
        let settings: kurrentdb::ClientSettings = url
            .parse()
            .map_err(|e| BenchError::Options(format!("bad server address {url:?}: {e}")))?;
        kurrentdb::Client::new(settings)
            .map(|c| Self(Arc::new(c)))
            .map_err(|e| BenchError::Options(format!("cannot create a client for {server}: {e:#}")))
    }

    /// Reads `stream`, which does not exist yet: opens the connection (and fetches the server's
    /// features) without writing anything.
    pub(crate) async fn warm_up(&self, stream: &str) -> Result<(), BenchError> {
        let options = ReadStreamOptions::default().max_count(1);
        let read = match self.0.read_stream(stream, &options).await {
            Ok(mut read) => read.next().await.map(|_| ()),
            Err(e) => Err(e),
        };
        match read {
            Ok(()) | Err(kurrentdb::Error::ResourceNotFound) => Ok(()),
            Err(e) => Err(e).context(|| format!("cannot reach the server (reading {stream})")),
        }
    }

    /// Opens a BatchAppend call on this client's connection.
    pub(crate) async fn batch_appender(&self) -> Result<BatchClient, BenchError> {
        self.0
            .batch_append(&BatchAppendOptions::default())
            .await
            .map(|c| BatchClient(Arc::new(c)))
            .context(|| "opening a BatchAppend call".to_owned())
    }

    /// Appends `count` copies of `event`, each with an id of its own, to `stream` in one append
    /// (expected revision any).
    pub(crate) async fn append(
        &self,
        stream: &str,
        event: &Event,
        count: u64,
    ) -> Result<(), BenchError> {
        let events: Vec<EventData> = (0..count)
            .map(|_| event.0.clone().id(random_id()))
            .collect();
        self.0
            .append_to_stream(stream, &AppendToStreamOptions::default(), events)
            .await
            .map(|_| ())
            .context(|| format!("append to {stream} failed"))
    }

    /// The commit position of the last event in `$all`, 0 if there is none.
    pub(crate) async fn last_position(&self) -> Result<u64, BenchError> {
        let options = ReadAllOptions::default()
            .backwards()
            .position(StreamPosition::End)
            .max_count(1);
        let what = || "cannot read the end of $all".to_owned();
        let mut read = self.0.read_all(&options).await.context(what)?;
        Ok(read
            .next()
            .await
            .context(what)?
            .map_or(0, |e| e.get_original_event().position.commit))
    }

    /// Reads the first `events` events of `$all`, in reads of at most what the server answers
    /// at once, each from the position of the last event received (reads include their start,
    /// so that event is skipped); returns the events read and the sum of their data sizes.
    pub(crate) async fn read_all(&self, events: u64) -> Result<(u64, u64), BenchError> {
        let what = || "reading $all failed".to_owned();
        let (mut read, mut bytes) = (0u64, 0u64);
        let mut last: Option<u64> = None;
        while read < events {
            let position = match last {
                None => StreamPosition::Start,
                Some(p) => StreamPosition::Position(kurrentdb::Position {
                    commit: p,
                    prepare: p,
                }),
            };
            // One more than needed after the first read: it starts with the last event seen.
            let count = events - read + u64::from(last.is_some());
            let options = ReadAllOptions::default()
                .forwards()
                .position(position)
                .max_count(usize::try_from(count).unwrap_or(usize::MAX));
            let mut stream = self.0.read_all(&options).await.context(what)?;
            let mut got = 0u64;
            while let Some(e) = stream.next().await.context(what)? {
                let e = e.get_original_event();
                if last.is_some_and(|l| e.position.commit <= l) {
                    continue;
                }
                last = Some(e.position.commit);
                read += 1;
                got += 1;
                bytes += std::hint::black_box(e.data.len()) as u64;
                if read == events {
                    break;
                }
            }
            if got == 0 {
                break;
            }
        }
        Ok((read, bytes))
    }
}

/// The official client's connection string for `server`.
fn connection_string(server: &GrpcServer) -> String {
    let user = server
        .credentials
        .as_ref()
        .map(|(login, password)| format!("{login}:{password}@"))
        .unwrap_or_default();
    let ca = server
        .ca_file
        .as_ref()
        .map(|f| format!("&tlsCaFile={}", f.display()))
        .unwrap_or_default();
    format!(
        "kurrentdb://{user}{}?tls={}{ca}",
        server.authority, server.tls
    )
}

impl BatchClient {
    /// Appends `event` with the id `id` to `stream` on the call (expected revision any).
    pub(crate) async fn append(
        &self,
        stream: &str,
        event: &Event,
        id: uuid::Uuid,
    ) -> Result<(), BenchError> {
        self.0
            .append_to_stream(stream, StreamState::Any, vec![event.0.clone().id(id)])
            .await
            .map(|_| ())
            .context(|| format!("append to {stream} failed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_string_says_whether_to_use_tls() {
        let server = |tls| GrpcServer {
            authority: "127.0.0.1:2113".to_owned(),
            tls,
            ..GrpcServer::default()
        };
        assert_eq!(
            connection_string(&server(false)),
            "kurrentdb://127.0.0.1:2113?tls=false"
        );
        assert_eq!(
            connection_string(&server(true)),
            "kurrentdb://127.0.0.1:2113?tls=true"
        );
        for tls in [false, true] {
            let settings = connection_string(&server(tls)).parse::<kurrentdb::ClientSettings>();
            assert!(settings.is_ok(), "{settings:?}");
        }
        let secure = GrpcServer {
            credentials: Some(("admin".to_owned(), "pw".to_owned())),
            ca_file: Some("ca.pem".into()),
            ..server(true)
        };
        assert_eq!(
            connection_string(&secure),
            "kurrentdb://admin:pw@127.0.0.1:2113?tls=true&tlsCaFile=ca.pem"
        );
        assert!(
            connection_string(&secure)
                .parse::<kurrentdb::ClientSettings>()
                .is_ok()
        );
    }
}
