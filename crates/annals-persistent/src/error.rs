//! Why a persistent-subscription request failed. The texts of the group errors are KurrentDB's,
//! which clients show and some match on.

use annals_engine::EngineError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PersistentError {
    #[error("Subscription group {group} on stream {stream} exists.")]
    AlreadyExists { stream: String, group: String },
    #[error("Subscription group {group} on stream {stream} does not exist.")]
    NotFound { stream: String, group: String },
    #[error("Maximum subscriptions reached for subscription group {group} on stream {stream}.")]
    MaxSubscribersReached { stream: String, group: String },
    #[error("Subscription group {group} on stream {stream} failed: '{reason}'")]
    InvalidSettings {
        stream: String,
        group: String,
        reason: String,
    },
    /// A malformed request (a bad name, a filter that does not compile, a filter on a stream
    /// group).
    #[error("{0}")]
    Invalid(String),
    /// The group's stored state cannot be read back.
    #[error("{0}")]
    Corrupt(String),
    /// The group stopped (deleted, updated or restarted) or the server is shutting down.
    #[error("Subscription group {group} on stream {stream} was dropped.")]
    Dropped { stream: String, group: String },
    #[error(transparent)]
    Engine(#[from] EngineError),
}
