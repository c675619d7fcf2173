//! Annals's indexes, derived from the log and rebuildable from it at any time.
//!
//! They answer: where is revision r of stream s (stream → revision → position and log address),
//! which positions are in a category or of an event type (postings), where does the record holding
//! position p start (a sparse position map), and what is each stream's head. They never hold
//! payloads: those stay in the log.
//!
//! The [`Index`] trait is the boundary; [`RedbIndex`] is the one implementation. The index has its
//! own checkpoint (the log address and position it covers), committed with the entries it covers,
//! so after a crash the engine re-applies the log from there.

mod error;
mod redb_backend;
mod redb_index;
mod staged;
mod types;

pub use error::IndexError;
pub use redb_index::{INDEX_FILE, RedbIndex, RedbIndexConfig};
pub use types::{
    Entry, Index, IndexBatch, IndexCheckpoint, IndexRecord, IndexStats, KnownStream,
    POSITION_BUCKET, Posting, PostingKind, StreamHead,
};
