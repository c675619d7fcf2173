//! [`PgStore`]: one node's handle on the store in Postgres. It creates or checks the schema,
//! starts the node's writer, and keeps the head signal: a connection `LISTEN`s on `annals_head`
//! (each commit notifies its new head, in commit order) and the head row is also read every
//! [`PG_HEAD_POLL_INTERVAL`], so a lost notification (a reconnect) delays but never loses an event.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use annals_core::{
    AppendResult, EventRecord, ExpectedRevision, NewEvent, Position, Revision, StreamName,
};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::{AsyncMessage, Client, Config, NoTls};

use crate::error::PgStoreError;
use crate::lease::Lease;
use crate::writer::{AppendRequest, Kind, PG_GROUP_COMMIT_APPENDS_MAX};

/// How often a node reads the head row besides following the notifications.
pub const PG_HEAD_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How long a connection attempt may take.
const PG_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the listener waits before connecting again after losing its connection.
const PG_LISTEN_RETRY: Duration = Duration::from_millis(500);

/// One node's handle on the store; clones share it. Closing is dropping every clone.
#[derive(Clone, Debug)]
pub struct PgStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    requests: mpsc::Sender<AppendRequest>,
    reader: Reader,
    /// The connection fenced job writes use (checkpoints), made on first use.
    jobs: tokio::sync::Mutex<Option<(Client, crate::writer::Statements)>>,
    head: watch::Receiver<Position>,
    head_tx: Arc<watch::Sender<Position>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A connection to the database `config` names, its driver spawned; fails within
/// [`PG_CONNECT_TIMEOUT`].
pub(crate) async fn connect(config: &Config) -> Result<Client, PgStoreError> {
    let (client, connection) = tokio::time::timeout(PG_CONNECT_TIMEOUT, config.connect(NoTls))
        .await
        .map_err(|_| {
            PgStoreError::Unavailable(format!("no connection within {PG_CONNECT_TIMEOUT:?}"))
        })?
        .map_err(|e| PgStoreError::Unavailable(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "a Postgres connection ended");
        }
    });
    Ok(client)
}

impl PgStore {
    /// Connects to the database at `url` (a `postgres://` URL or a key-value connection string,
    /// several hosts allowed), creates or checks the schema, and starts this node's writer and
    /// head signal.
    pub async fn open(url: &str) -> Result<PgStore, PgStoreError> {
        let config = Config::from_str(url)
            .map_err(|e| PgStoreError::Input(format!("bad Postgres connection string: {e}")))?;
        Self::open_config(config).await
    }

    /// [`PgStore::open`] with a parsed connection configuration.
    pub async fn open_config(config: Config) -> Result<PgStore, PgStoreError> {
        let mut admin = connect(&config).await?;
        crate::schema::migrate(&mut admin).await?;
        drop(admin);
        let reader = connect(&config).await?;
        let head = read_head(&reader).await?;
        let (head_tx, head_rx) = watch::channel(head);
        let writer_client = crate::writer::connect_prepared(&config).await?;
        let (requests, rx) = mpsc::channel(PG_GROUP_COMMIT_APPENDS_MAX);
        let head_tx = Arc::new(head_tx);
        let tasks = vec![
            tokio::spawn(crate::writer::run(
                config.clone(),
                Some(writer_client),
                rx,
                Arc::clone(&head_tx),
            )),
            tokio::spawn(follow_head(config.clone(), Arc::clone(&head_tx))),
        ];
        Ok(PgStore {
            inner: Arc::new(Inner {
                requests,
                jobs: tokio::sync::Mutex::new(None),
                reader: Reader {
                    config: config.clone(),
                    client: parking_lot::Mutex::new(Arc::new(reader)),
                },
                head: head_rx,
                head_tx,
                tasks,
            }),
        })
    }

    /// Appends `events` to `stream` if its last revision satisfies `expected`; answered once the
    /// transaction holding it has committed. A retry with the same event ids answers with the
    /// original positions and writes nothing.
    pub async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, PgStoreError> {
        self.append_fenced(stream, expected, events, None).await
    }

    /// [`PgStore::append`] for a job: with `fence`, the commit transaction also checks that the
    /// lease is still held in that term (holding its row for the transaction), and refuses the
    /// append alone with [`PgStoreError::Fenced`] when it is not.
    pub async fn append_fenced(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
        fence: Option<Lease>,
    ) -> Result<AppendResult, PgStoreError> {
        if events.is_empty() {
            return Err(PgStoreError::Input(
                "an append needs at least one event".to_owned(),
            ));
        }
        self.submit(stream, expected, events, Kind::Events, fence)
            .await
    }

    /// Deletes `stream` for good if its last revision satisfies `expected`: a `$streamDeleted`
    /// event at the tombstone revision, after which reads and appends say the stream is deleted.
    pub async fn tombstone(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
    ) -> Result<AppendResult, PgStoreError> {
        self.tombstone_fenced(stream, expected, None).await
    }

    /// [`PgStore::tombstone`], fenced as [`PgStore::append_fenced`] is.
    pub async fn tombstone_fenced(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        fence: Option<Lease>,
    ) -> Result<AppendResult, PgStoreError> {
        let event = NewEvent {
            id: uuid::Uuid::new_v4(),
            event_type: annals_core::EventType::new(annals_core::TOMBSTONE_EVENT_TYPE)
                .map_err(|e| PgStoreError::Input(e.to_string()))?,
            content_type: annals_core::ContentType::Binary,
            data: bytes::Bytes::new(),
            metadata: bytes::Bytes::new(),
        };
        self.submit(stream, expected, vec![event], Kind::Tombstone, fence)
            .await
    }

    /// Soft-deletes `stream` if its last revision satisfies `expected`: its metadata says so
    /// (`$tb`), reads say not found, and a later append restores it with revisions going on.
    pub async fn soft_delete(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
    ) -> Result<AppendResult, PgStoreError> {
        self.soft_delete_fenced(stream, expected, None).await
    }

    /// [`PgStore::soft_delete`], fenced as [`PgStore::append_fenced`] is.
    pub async fn soft_delete_fenced(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        fence: Option<Lease>,
    ) -> Result<AppendResult, PgStoreError> {
        self.submit(stream, expected, Vec::new(), Kind::SoftDelete, fence)
            .await
    }

    async fn submit(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
        kind: Kind,
        fence: Option<Lease>,
    ) -> Result<AppendResult, PgStoreError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .requests
            .send(AppendRequest {
                stream: stream.clone(),
                expected,
                events,
                kind,
                fence,
                reply,
            })
            .await
            .map_err(|_| PgStoreError::Closed)?;
        answer.await.map_err(|_| PgStoreError::Closed)?
    }

    /// The connection reads use (connected again if it was lost).
    pub(crate) async fn read_client(&self) -> Result<Arc<Client>, PgStoreError> {
        self.inner.reader.client().await
    }

    /// The connection fenced job writes, imports and checks use (with the writer's statements
    /// prepared on it), held for one use.
    pub(crate) async fn connect_for_write(
        &self,
    ) -> Result<tokio::sync::MappedMutexGuard<'_, (Client, crate::writer::Statements)>, PgStoreError>
    {
        let mut guard = self.inner.jobs.lock().await;
        if guard.as_ref().is_none_or(|(c, _)| c.is_closed()) {
            *guard = Some(crate::writer::connect_prepared(&self.inner.reader.config).await?);
        }
        tokio::sync::MutexGuard::try_map(guard, Option::as_mut).map_err(|_| PgStoreError::Closed)
    }

    /// Moves this node's head to `to` if that is further (after a commit of its own).
    pub(crate) fn advance_head(&self, to: Position) {
        self.inner
            .head_tx
            .send_if_modified(|h| crate::writer::advance(h, to));
    }

    /// The last committed position this node knows of.
    pub fn head(&self) -> Position {
        *self.inner.head.borrow()
    }

    /// The head as the database has it now (one query), which this node then knows of too.
    pub async fn committed_head(&self) -> Result<Position, PgStoreError> {
        let client = self.read_client().await?;
        let head = read_head(&client).await?;
        self.advance_head(head);
        Ok(head)
    }

    /// A watch of the head: it changes whenever this node learns of a commit (its own, or
    /// another node's through its notification or the poll).
    pub fn head_watch(&self) -> watch::Receiver<Position> {
        self.inner.head.clone()
    }

    /// Up to `limit` events of `$all` from position `from` on.
    pub async fn read_all(
        &self,
        from: Position,
        limit: usize,
    ) -> Result<Vec<EventRecord>, PgStoreError> {
        let reader = &self.inner.reader;
        let client = reader.client().await?;
        match crate::read::read_all(&client, from, limit).await {
            Err(PgStoreError::Unavailable(_)) => {
                let client = reader.client().await?;
                crate::read::read_all(&client, from, limit).await
            }
            done => done,
        }
    }

    /// Up to `limit` events of `stream` from revision `from` on.
    pub async fn read_stream(
        &self,
        stream: &StreamName,
        from: Revision,
        limit: usize,
    ) -> Result<Vec<EventRecord>, PgStoreError> {
        let reader = &self.inner.reader;
        let client = reader.client().await?;
        match crate::read::read_stream(&client, stream, from, limit).await {
            Err(PgStoreError::Unavailable(_)) => {
                let client = reader.client().await?;
                crate::read::read_stream(&client, stream, from, limit).await
            }
            done => done,
        }
    }
}

/// The connection reads use, connected again when it was lost (a read that failed because of
/// that is tried once more on the new one).
#[derive(Debug)]
struct Reader {
    config: Config,
    client: parking_lot::Mutex<Arc<Client>>,
}

impl Reader {
    async fn client(&self) -> Result<Arc<Client>, PgStoreError> {
        let current = Arc::clone(&self.client.lock());
        if !current.is_closed() {
            return Ok(current);
        }
        let fresh = Arc::new(connect(&self.config).await?);
        *self.client.lock() = Arc::clone(&fresh);
        Ok(fresh)
    }
}

async fn read_head(client: &Client) -> Result<Position, PgStoreError> {
    let p: i64 = client
        .query_one("SELECT position FROM annals.head", &[])
        .await
        .map_err(PgStoreError::from_pg)?
        .get(0);
    Ok(Position(u64::try_from(p).unwrap_or(0)))
}

/// Follows the head: `LISTEN annals_head` on a connection of its own, and the head row every
/// [`PG_HEAD_POLL_INTERVAL`]; reconnects whenever the connection is lost.
async fn follow_head(config: Config, head: Arc<watch::Sender<Position>>) {
    let advance = |p: Position| {
        head.send_if_modified(|h| crate::writer::advance(h, p));
    };
    loop {
        let connected = tokio::time::timeout(PG_CONNECT_TIMEOUT, config.connect(NoTls)).await;
        let Ok(Ok((client, mut connection))) = connected else {
            tracing::debug!("the head listener cannot connect; retrying");
            tokio::time::sleep(PG_LISTEN_RETRY).await;
            continue;
        };
        let (notes_tx, mut notes) = mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(message)) = messages.next().await {
                if let AsyncMessage::Notification(n) = message
                    && let Ok(p) = n.payload().parse::<u64>()
                    && notes_tx.send(Position(p)).is_err()
                {
                    break;
                }
            }
        });
        if client.batch_execute("LISTEN annals_head").await.is_ok() {
            let mut poll = tokio::time::interval(PG_HEAD_POLL_INTERVAL);
            loop {
                tokio::select! {
                    note = notes.recv() => match note {
                        Some(p) => advance(p),
                        None => break,
                    },
                    _ = poll.tick() => match read_head(&client).await {
                        Ok(p) => advance(p),
                        Err(_) => break,
                    },
                }
            }
        }
        driver.abort();
        tracing::debug!("the head listener lost its connection; reconnecting");
        tokio::time::sleep(PG_LISTEN_RETRY).await;
    }
}
