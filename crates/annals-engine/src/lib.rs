//! Annals's engine: the single writer with group commit, optimistic concurrency and idempotent
//! appends; reads of streams, `$all`, and of categories and event types as the streams `$ce-…`
//! and `$et-…` (served from the index), with stream-metadata rules; the
//! committed-head signal; catch-up/live subscriptions; and the store check.
//!
//! Data paths (see ARCHITECTURE.md): an append goes caller → bounded queue → writer thread (check,
//! assign, encode, write) → sync thread (`fdatasync`, index, publish head) → caller. A read goes
//! index → log → metadata rules. A subscription pages the log and waits on the head.

mod check;
mod config;
mod engine;
mod error;
mod head;
mod import;
mod index_store;
mod links;
mod listing;
mod live_tail;
mod read;
mod replay;
mod rules;
mod subscription;
mod threads;
mod upstream;
mod writer;

pub use check::CheckReport;
pub use config::{
    Durability, EngineConfig, GROUP_COMMIT_APPENDS_MAX, IDEMPOTENCY_WINDOW_EVENTS,
    INDEX_FLUSH_INTERVAL, STREAM_CACHE_ENTRIES_MAX, WRITER_QUEUE_APPENDS_MAX,
};
pub use engine::{Engine, OpenReport};
pub use error::EngineError;
pub use import::{IMPORT_REQUEST_BYTES_MAX, IMPORT_RUNS_PER_REQUEST_MAX};
pub use listing::{LIST_STREAMS_MAX, StreamSummary};
pub use live_tail::{LIVE_TAIL_EVENTS_MAX, LIVE_TAIL_PAGES_MAX, PageEvents, SharedPage};
pub use read::{AllPage, READ_SCAN_EVENTS_MAX};
pub use subscription::{
    SUBSCRIPTION_PAGE_EVENTS_MAX, StreamSubscription, StreamSubscriptionPage, Subscription,
    SubscriptionPage,
};
pub use upstream::{UPSTREAM_CATCH_UP_TIMEOUT, Upstream, UpstreamAppend, WriteFence};
