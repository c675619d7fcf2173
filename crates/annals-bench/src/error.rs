//! What a bench can fail with: [`BenchError`], one variant per kind of cause, and the [`Context`]
//! trait that says what was being done when an I/O or client error struck.

use std::path::PathBuf;

use annals_core::InputError;
use annals_engine::EngineError;
use annals_projections::{DefinitionError, ProjectionError, TargetError, WaitError};

use crate::client::ClientError;

/// Why a bench could not run or finish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// An option is out of range or does not fit the others.
    #[error("{0}")]
    Options(String),
    /// `--client kurrentdb` in a build without the official client.
    #[error(
        "--client kurrentdb needs the official KurrentDB client, which this build of annals \
         leaves out; build it with `--features kurrentdb-client` \
         (e.g. `cargo build --release --features kurrentdb-client`)"
    )]
    OfficialClientNotBuilt,
    #[error("cannot open store {}: {source}", dir.display())]
    OpenStore {
        dir: PathBuf,
        #[source]
        source: EngineError,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A stream name or event type the bench made was refused.
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The lean gRPC client failed.
    #[error("{context}: {source}")]
    Client {
        context: String,
        #[source]
        source: ClientError,
    },
    /// The official `kurrentdb` client failed.
    #[cfg(feature = "kurrentdb-client")]
    #[error("{context}: {source}")]
    Official {
        context: String,
        #[source]
        source: kurrentdb::Error,
    },
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    #[error("{context}: {source}")]
    Wait {
        context: &'static str,
        #[source]
        source: WaitError,
    },
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("SQLite baseline: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("Postgres baseline: {0}")]
    Postgres(#[from] postgres::Error),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A task or thread of the bench panicked or was cancelled.
    #[error("{what} failed: {reason}")]
    Worker { what: &'static str, reason: String },
    /// The run did something other than what it measures should have done (the server held
    /// fewer events than it said, a stream is short, a child process failed, ...).
    #[error("{0}")]
    Check(String),
}

/// Attaches what was being done to an error whose kind carries it.
pub(crate) trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, BenchError>;
}

impl<T> Context<T> for Result<T, std::io::Error> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, BenchError> {
        self.map_err(|source| BenchError::Io {
            context: what(),
            source,
        })
    }
}

impl<T> Context<T> for Result<T, ClientError> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, BenchError> {
        self.map_err(|source| BenchError::Client {
            context: what(),
            source,
        })
    }
}

#[cfg(feature = "kurrentdb-client")]
impl<T> Context<T> for Result<T, kurrentdb::Error> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, BenchError> {
        self.map_err(|source| BenchError::Official {
            context: what(),
            source,
        })
    }
}

/// Fails with [`BenchError::Check`] unless `condition` holds.
pub(crate) fn ensure(condition: bool, message: impl FnOnce() -> String) -> Result<(), BenchError> {
    if condition {
        Ok(())
    } else {
        Err(BenchError::Check(message()))
    }
}
