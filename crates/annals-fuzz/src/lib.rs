//! The bodies of Annals's fuzz targets, as plain functions of arbitrary bytes.
//!
//! Each target feeds bytes from outside (a disk or a client) to one input path and checks the
//! property every such path must keep: **no panic, a clear error, nothing stored**. A target
//! returns `Err(Violation)` when the property fails in a way a panic would not show (an error
//! answered after a write, a store that does not open from a valid log, a hung call); a panic is
//! itself the failure. The same functions run under `cargo fuzz` (the `fuzz/` crate at the
//! repository root, one binary per target, with coverage feedback) and in this crate's ordinary
//! tests, which replay every committed file of `fuzz/corpus/<target>/` on the stable toolchain.
//!
//! | target | input | property |
//! |---|---|---|
//! | `segment_recovery` | bytes as a log segment | the engine opens or refuses; opened, every read and `check` answer |
//! | `record_decode` | bytes as one commit record | the decoder accepts or refuses; accepted, every event decodes |
//! | `index_open` | bytes as `index.redb` next to a valid log | the engine opens, rebuilding the index, and reads the log's events |
//! | `grpc_request` | a method and protobuf bodies | the gRPC router answers; an error stored nothing |
//! | `http_body` | a route, path, query and body | the HTTP router answers; an error is JSON and stored nothing |
//! | `projection_toml` | a definition file | parsed or refused; parsed, its handlers run on an event |
//! | `stream_name` | a name or a source declaration | validated or refused, consistently |
//! | `filter_regex` | a filter and a name | compiled or refused; a match ends within its bounds |
//!
//! Stores live in memory (`annals_log::FaultStorage`), so a run is fast and touches no disk.

mod disk;
mod net;
mod runtime;
pub mod seeds;
mod store;
mod text;

pub use disk::{index_open, record_decode, segment_recovery};
pub use net::{grpc_request, http_body};
pub use runtime::panic_is_tolerated;
pub use text::{filter_regex, projection_toml, stream_name};

/// A target's body.
pub type Target = fn(&[u8]) -> Result<(), Violation>;

/// Every target, by the name of its binary and corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("segment_recovery", segment_recovery),
    ("record_decode", record_decode),
    ("index_open", index_open),
    ("grpc_request", grpc_request),
    ("http_body", http_body),
    ("projection_toml", projection_toml),
    ("stream_name", stream_name),
    ("filter_regex", filter_regex),
];

/// A broken property: which target, and what happened.
#[derive(Debug, thiserror::Error)]
#[error("{target}: {what}")]
pub struct Violation {
    pub target: &'static str,
    pub what: String,
}

impl Violation {
    pub(crate) fn new(target: &'static str, what: impl Into<String>) -> Self {
        Self {
            target,
            what: what.into(),
        }
    }
}
