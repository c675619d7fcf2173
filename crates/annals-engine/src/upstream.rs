//! A store as the replica of another (a store in PostgreSQL): its appends go to the upstream,
//! which alone assigns positions, and come back through [`Engine::import`] (a follower the binary
//! runs pages the upstream into this store). An append is answered once this store has
//! published its position, so the node that took it reads its own write. Soft deletes and
//! tombstones go the same way.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals_core::{AppendResult, ExpectedRevision, NewEvent, Position, StreamName};

use crate::engine::Engine;
use crate::error::EngineError;

/// Longest an append waits for this store to import what the upstream committed.
pub const UPSTREAM_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// What an upstream's append returns.
pub type UpstreamAppend =
    Pin<Box<dyn Future<Output = Result<AppendResult, EngineError>> + Send + 'static>>;

/// The lease a write is fenced by ([`Engine::fenced`]): the upstream commits it only while this
/// node holds that lease, checked in the commit itself.
pub type WriteFence = Option<Arc<str>>;

/// Where a replica's appends go. The future must not need the caller's runtime to make
/// progress (it is also awaited from blocking callers): hand the work to a task of its own.
pub trait Upstream: Send + Sync + Debug {
    fn append(
        &self,
        stream: StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
        fence: WriteFence,
    ) -> UpstreamAppend;

    /// Deletes `stream` for good (its tombstone record).
    fn tombstone(
        &self,
        stream: StreamName,
        expected: ExpectedRevision,
        fence: WriteFence,
    ) -> UpstreamAppend;

    /// Why the upstream cannot take writes now (it cannot be reached), or `None`. Reported as
    /// the store's [`Engine::write_failure`].
    fn unavailable(&self) -> Option<String> {
        None
    }

    /// Soft-deletes `stream` (`$tb` in its metadata; a later append restores it).
    fn soft_delete(
        &self,
        stream: StreamName,
        expected: ExpectedRevision,
        fence: WriteFence,
    ) -> UpstreamAppend;
}

impl Engine {
    /// A handle to the same store whose writes are a job's, fenced by the lease `lease`: on a
    /// replica the upstream commits them only while this node holds that lease (a node that
    /// lost it, in a partition or a long pause, can no longer write for the job). On a store of
    /// its own, where no other node can run the job, the fence changes nothing.
    pub fn fenced(&self, lease: &str) -> Engine {
        Engine {
            inner: Arc::clone(&self.inner),
            fence: Some(Arc::from(lease)),
        }
    }

    /// The lease this handle's writes are fenced by, if any.
    pub fn fence(&self) -> Option<&str> {
        self.fence.as_deref()
    }

    /// Makes this store a replica of `upstream`: from now on appends go there. The caller keeps
    /// this store fed through [`Engine::import`].
    pub fn replicate_from(&self, upstream: Arc<dyn Upstream>) {
        *self.inner.upstream.write() = Some(upstream);
    }

    pub(crate) fn upstream(&self) -> Option<Arc<dyn Upstream>> {
        self.inner.upstream.read().clone()
    }

    /// A write through the upstream, answered once imported here.
    pub(crate) async fn write_upstream(
        &self,
        write: UpstreamAppend,
    ) -> Result<AppendResult, EngineError> {
        let done = write.await?;
        let mut head = self.head_watch();
        let wait = async {
            while *head.borrow_and_update() < done.position {
                if head.changed().await.is_err() {
                    return Err(self.inner.shared.stopped_error());
                }
            }
            Ok(done)
        };
        tokio::time::timeout(UPSTREAM_CATCH_UP_TIMEOUT, wait)
            .await
            .unwrap_or_else(|_| Err(behind(done.position)))
    }

    /// Blocking form of [`Engine::write_upstream`].
    pub(crate) fn write_upstream_blocking(
        &self,
        write: UpstreamAppend,
    ) -> Result<AppendResult, EngineError> {
        let done = futures::executor::block_on(write)?;
        let deadline = Instant::now() + UPSTREAM_CATCH_UP_TIMEOUT;
        let target = Position(done.position.0.saturating_sub(1));
        while self.head() < done.position {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(behind(done.position));
            }
            self.inner.shared.head.wait_past(target, left);
        }
        Ok(done)
    }
}

fn behind(position: Position) -> EngineError {
    EngineError::Stopped(format!(
        "position {} was committed upstream but not copied here within {UPSTREAM_CATCH_UP_TIMEOUT:?}",
        position.0
    ))
}

/// The error of a delete or tombstone on a replica.
pub(crate) fn not_on_a_replica(what: &str) -> EngineError {
    EngineError::Unsupported(format!(
        "{what} is not available yet on a store kept in PostgreSQL"
    ))
}
