//! The sending side of a read or subscription ([`Tx`]): a bounded channel of pages towards the
//! response, with a limit on how long it waits for a slow client.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tonic::Status;

use crate::read::Batch;

/// The sending side of a read: a bounded channel of pages towards the response. A client that
/// takes no page for [`annals_server::Limits::subscriber_blocked_max`] (it reads slower than
/// events arrive, or not at all) ends the read: the task stops and frees what it held, and
/// the response, once the client has taken what was queued, ends with ABORTED "Consumer too
/// slow", which clients report as such.
#[derive(Clone, Debug)]
pub(crate) struct Tx {
    pub(crate) inner: mpsc::Sender<Result<Batch, Status>>,
    pub(crate) too_slow: Arc<parking_lot::Mutex<Option<Status>>>,
    pub(crate) blocked_max: Duration,
}

/// The channel closed: the client went away, or was too slow and the read ended.
#[derive(Debug)]
pub(crate) struct Closed;

impl Tx {
    /// Sends `item`, waiting up to the blocked limit for room.
    pub(crate) async fn send(&self, item: Result<Batch, Status>) -> Result<(), Closed> {
        match self.inner.send_timeout(item, self.blocked_max).await {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(Closed),
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                tracing::warn!(blocked = ?self.blocked_max, "a client took no page of its read or subscription in time; ending it");
                *self.too_slow.lock() = Some(Status::aborted(format!(
                    "Consumer too slow: it took nothing for {:?}, so the read was ended",
                    self.blocked_max
                )));
                Err(Closed)
            }
        }
    }

    /// Resolves when the response side is gone.
    pub(crate) async fn closed(&self) {
        self.inner.closed().await;
    }

    /// [`Tx::send`] from a blocking thread of the runtime.
    pub(crate) fn blocking_send(&self, item: Result<Batch, Status>) -> Result<(), Closed> {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle.block_on(self.send(item)),
            Err(_) => self.inner.blocking_send(item).map_err(|_| Closed),
        }
    }
}
