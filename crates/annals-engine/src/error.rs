//! Errors of the engine: the domain and input errors of `annals-core`, and the storage errors of
//! the layers below, which stay distinct so callers can tell "you asked wrongly" from "the disk
//! failed".

use annals_core::{DomainError, FilterError, InputError};
use annals_index::IndexError;
use annals_log::LogError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error("log: {0}")]
    Log(#[from] LogError),
    #[error("index: {0}")]
    Index(#[from] IndexError),
    /// The writer stopped: the engine was closed, or a write or sync failed and the store must be
    /// reopened before it takes more appends.
    #[error("the store is not accepting writes: {0}")]
    Stopped(String),
    /// An import (`Engine::import`) does not go on where this store is; nothing of it was
    /// written.
    #[error("import refused: {0}")]
    ImportRefused(String),
    /// A job's write (through an [`Engine::fenced`](crate::Engine::fenced) handle) was refused:
    /// this node does not hold the job's lease in the term it wrote for; another node runs the
    /// job now. Nothing was written.
    #[error("fenced: {0}")]
    Fenced(String),
    /// The store cannot do this (yet) in the way it is run.
    #[error("{0}")]
    Unsupported(String),
    /// A pipeline thread (writer, sync or index store) panicked, which is a bug. Writes stopped
    /// when it happened; what was acknowledged before is durable, and reopening recovers.
    #[error("the {thread} thread panicked: {message}")]
    ThreadPanicked { thread: String, message: String },
}

impl EngineError {
    /// The domain error inside, if this is one.
    pub fn domain(&self) -> Option<&DomainError> {
        match self {
            EngineError::Domain(d) => Some(d),
            _ => None,
        }
    }
}
