//! What the relay layer refuses or fails with.

use annals_engine::EngineError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// A definition file or command is wrong; nothing of it was applied.
    #[error("{0}")]
    Definition(String),
    #[error("no relay is named {0:?}")]
    NotFound(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Stored relay state that cannot be read.
    #[error("relay state is damaged: {0}")]
    Corrupt(String),
    #[error("the relays are stopping")]
    Stopping,
}
