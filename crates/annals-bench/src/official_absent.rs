//! Stands in for `official.rs` when the `kurrentdb-client` feature is off: the same names, but no
//! client can be made ([`Client::new`] fails with [`BenchError::OfficialClientNotBuilt`]), so the
//! benches hold no code of their own for the missing client.

use bytes::Bytes;

use crate::error::BenchError;
use crate::grpc::GrpcServer;

/// No client: there is none in this build.
#[derive(Clone, Debug)]
pub(crate) enum Client {}

/// No BatchAppend call: there is no client to open one.
#[derive(Clone, Debug)]
pub(crate) enum BatchClient {}

/// The bench's event, for the client that is not there.
#[derive(Clone, Debug)]
pub(crate) struct Event;

impl Event {
    pub(crate) fn new(_data: &Bytes) -> Result<Self, BenchError> {
        Ok(Self)
    }
}

impl Client {
    /// Always [`BenchError::OfficialClientNotBuilt`].
    pub(crate) fn new(_server: &GrpcServer) -> Result<Self, BenchError> {
        Err(BenchError::OfficialClientNotBuilt)
    }

    pub(crate) async fn warm_up(&self, _stream: &str) -> Result<(), BenchError> {
        match *self {}
    }

    pub(crate) async fn batch_appender(&self) -> Result<BatchClient, BenchError> {
        match *self {}
    }

    pub(crate) async fn append(
        &self,
        _stream: &str,
        _event: &Event,
        _count: u64,
    ) -> Result<(), BenchError> {
        match *self {}
    }

    pub(crate) async fn last_position(&self) -> Result<u64, BenchError> {
        match *self {}
    }

    pub(crate) async fn read_all(&self, _events: u64) -> Result<(u64, u64), BenchError> {
        match *self {}
    }
}

impl BatchClient {
    pub(crate) async fn append(
        &self,
        _stream: &str,
        _event: &Event,
        _id: uuid::Uuid,
    ) -> Result<(), BenchError> {
        match *self {}
    }
}
