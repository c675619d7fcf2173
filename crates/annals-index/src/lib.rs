//! Annals's indexes, derived from the log and rebuildable from it at any time.
//!
//! They answer: where is revision r of stream s (stream → revision → position and log address),
//! where is revision r of a category or an event type (postings, numbered densely from 0: the
//! revisions of the `$ce-`/`$et-` streams the engine serves from them), where does the record holding
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

pub use error::{IndexError, IntegrityCheck};
pub use redb_index::{INDEX_FILE, INDEX_FORMAT, RedbIndex, RedbIndexConfig};
pub use staged::{LINK_HEADS_CACHED_MAX, UNDURABLE_RECORDS_MAX};
pub use types::{
    Entry, Index, IndexBatch, IndexCheckpoint, IndexRecord, IndexStats, KnownStream,
    POSITION_BUCKET, Posting, PostingKind, RecordStart, StreamHead,
};
