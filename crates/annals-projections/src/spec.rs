//! What the runtime needs to run a projection: its source, objects, setup, error policy,
//! parallelism and a handler factory. Declarative definitions and Rust embedders both build a
//! [`ProjectionSpec`].

use std::sync::Arc;
use std::time::Duration;

use crate::handler::Handler;

/// Which events a projection reads (shared with relays).
pub use annals_core::Source;

/// What happens to an event whose handler or statements keep failing.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum OnFailure {
    /// Stop the projection (faulted) at the event; it resumes there when resumed.
    Stop,
    /// Record the failure and go on without the event.
    Skip,
    /// Record it and hold back the event and every later event of its stream, while other
    /// streams go on; parked events can be retried.
    Park,
}

/// Retries with bounded exponential backoff, then [`OnFailure`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ErrorPolicy {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub on_failure: OnFailure,
}

impl Default for ErrorPolicy {
    fn default() -> Self {
        Self {
            attempts: 3,
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            on_failure: OnFailure::Stop,
        }
    }
}

/// Most partitions a projection may run in parallel.
pub const PARTITIONS_MAX: u32 = 64;

/// Makes one handler per partition.
pub type HandlerFactory = Arc<dyn Fn() -> Box<dyn Handler> + Send + Sync>;

/// A projection, ready to register.
#[derive(Clone)]
pub struct ProjectionSpec {
    /// `[a-z][a-z0-9_]*`, at most 48 bytes: it prefixes the generation's object names.
    pub name: String,
    pub source: Source,
    /// Reader-facing table names; each gets a view onto the serving generation's table.
    pub tables: Vec<String>,
    /// Every brace name the SQL may use (the tables and their indexes).
    pub objects: Vec<String>,
    /// Setup SQL templates (`CREATE TABLE {orders} …`), run once per generation.
    pub setup: Vec<String>,
    /// Every statement template the handler can run, checked against the target at
    /// registration (empty for Rust handlers that build SQL at run time).
    pub statements: Vec<String>,
    pub policy: ErrorPolicy,
    /// 1 for sequential; at most [`PARTITIONS_MAX`].
    pub partitions: u32,
    /// Save handler state every this many events (`None`: never).
    pub snapshot_every: Option<u64>,
    pub handler: HandlerFactory,
}

impl std::fmt::Debug for ProjectionSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionSpec")
            .field("name", &self.name)
            .field("source", &self.source)
            .field("tables", &self.tables)
            .field("objects", &self.objects)
            .field("setup", &self.setup)
            .field("statements", &self.statements)
            .field("policy", &self.policy)
            .field("partitions", &self.partitions)
            .field("snapshot_every", &self.snapshot_every)
            .finish_non_exhaustive()
    }
}
