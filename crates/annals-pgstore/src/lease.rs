//! Leases: which node runs a job (a projection, a relay, a persistent-subscription group), in
//! `annals.leases`, with the database's clock the only clock. A holder renews its lease well
//! within the time to live; once it lapses, any node may take it, and the lease's fencing token
//! goes up. Every write a job makes is fenced: it checks, in its own transaction, that the
//! writer still holds the lease with its token, holding the lease row for the transaction
//! (`FOR SHARE`), so a node that lost its lease (a partition, a long pause) can never write for
//! the job again, whatever it believes.

use std::time::Duration;

use crate::error::PgStoreError;
use crate::store::PgStore;

/// A lease held: the job, the holder, and the fencing token of this term.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    /// Goes up each time the lease changes hands (or lapses and is taken again).
    pub token: i64,
}

impl PgStore {
    /// Takes the lease `name` for `holder` for `ttl`, or renews it if `holder` has it: the
    /// lease with its token, or `None` while another holder has it.
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, PgStoreError> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let client = self.read_client().await?;
        let row = client
            .query_opt(
                "INSERT INTO annals.leases AS l (name, holder, token, expires_at) \
                 VALUES ($1, $2, 1, now() + $3::bigint * interval '1 millisecond') \
                 ON CONFLICT (name) DO UPDATE SET \
                   holder = EXCLUDED.holder, \
                   token = CASE WHEN l.holder = EXCLUDED.holder AND l.expires_at > now() \
                           THEN l.token ELSE l.token + 1 END, \
                   expires_at = EXCLUDED.expires_at \
                 WHERE l.holder = EXCLUDED.holder OR l.expires_at IS NULL \
                   OR l.expires_at <= now() \
                 RETURNING token",
                &[&name, &holder, &ttl_ms],
            )
            .await
            .map_err(PgStoreError::from_pg)?;
        Ok(row.map(|r| Lease {
            name: name.to_owned(),
            holder: holder.to_owned(),
            token: r.get(0),
        }))
    }

    /// Gives the lease up at once (a clean shutdown), if it is still this term's.
    pub async fn release_lease(&self, lease: &Lease) -> Result<(), PgStoreError> {
        let client = self.read_client().await?;
        client
            .execute(
                "UPDATE annals.leases SET expires_at = NULL \
                 WHERE name = $1 AND holder = $2 AND token = $3",
                &[&lease.name, &lease.holder, &lease.token],
            )
            .await
            .map_err(PgStoreError::from_pg)?;
        Ok(())
    }

    /// Who holds the lease `name` now, if anyone does (a lapsed lease has no holder).
    pub async fn lease_holder(&self, name: &str) -> Result<Option<String>, PgStoreError> {
        let client = self.read_client().await?;
        let row = client
            .query_opt(
                "SELECT holder FROM annals.leases WHERE name = $1 AND expires_at > now()",
                &[&name],
            )
            .await
            .map_err(PgStoreError::from_pg)?;
        Ok(row.and_then(|r| r.get(0)))
    }

    /// The checkpoint of the job `name`, if one was saved.
    pub async fn checkpoint(&self, name: &str) -> Result<Option<u64>, PgStoreError> {
        let client = self.read_client().await?;
        let row = client
            .query_opt(
                "SELECT position FROM annals.checkpoints WHERE name = $1",
                &[&name],
            )
            .await
            .map_err(PgStoreError::from_pg)?;
        Ok(row.and_then(|r| u64::try_from(r.get::<_, i64>(0)).ok()))
    }

    /// Saves the job's checkpoint, fenced: only while `lease` is held, in this term, and not
    /// over a checkpoint a later term wrote. [`PgStoreError::Fenced`] otherwise, and nothing
    /// is written.
    pub async fn save_checkpoint(&self, lease: &Lease, position: u64) -> Result<(), PgStoreError> {
        let position = i64::try_from(position)
            .map_err(|_| PgStoreError::Input(format!("checkpoint {position} is too large")))?;
        let mut jobs = self.connect_for_write().await?;
        let tx = jobs.0.transaction().await.map_err(PgStoreError::from_pg)?;
        let held = tx
            .query_opt(
                "SELECT 1 FROM annals.leases WHERE name = $1 AND holder = $2 AND token = $3 \
                 AND expires_at > now() FOR SHARE",
                &[&lease.name, &lease.holder, &lease.token],
            )
            .await?;
        if held.is_none() {
            return Err(PgStoreError::Fenced {
                lease: lease.name.clone(),
                token: lease.token,
            });
        }
        let written = tx
            .execute(
                "INSERT INTO annals.checkpoints AS c (name, position, token) \
                 VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, \
                   token = EXCLUDED.token WHERE c.token <= EXCLUDED.token",
                &[&lease.name, &position, &lease.token],
            )
            .await?;
        if written == 0 {
            return Err(PgStoreError::Fenced {
                lease: lease.name.clone(),
                token: lease.token,
            });
        }
        tx.commit().await?;
        Ok(())
    }
}

/// How long a lease a [`LeaseKeeper`] holds lasts without renewal: a dead node's jobs move
/// after at most this plus one [`LEASE_RENEW_INTERVAL`] (7.5 s).
pub const LEASE_TTL: Duration = Duration::from_secs(6);
/// How often a [`LeaseKeeper`] renews its lease, or tries to take it.
pub const LEASE_RENEW_INTERVAL: Duration = Duration::from_millis(1_500);

/// Keeps trying to hold one lease for one holder: renews it while held, takes it when it
/// lapses. [`LeaseKeeper::watch`] says which term is held now (`None`: another node has it, or
/// the database cannot be reached). A term ends at the first failed renewal: the job must stop
/// writing then, and its writes are fenced anyway. Dropping the keeper stops it (the lease then
/// lapses; [`PgStore::release_lease`] hands it over at once).
#[derive(Debug)]
pub struct LeaseKeeper {
    held: tokio::sync::watch::Receiver<Option<Lease>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LeaseKeeper {
    /// The term held now, and its changes.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<Option<Lease>> {
        self.held.clone()
    }
}

impl PgStore {
    /// Starts keeping the lease `name` for `holder`, with `ttl` and renewals every `renew`
    /// (defaults: [`LEASE_TTL`], [`LEASE_RENEW_INTERVAL`]).
    pub fn keep_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        renew: Duration,
    ) -> LeaseKeeper {
        let (tx, held) = tokio::sync::watch::channel(None);
        let store = self.clone();
        let (name, holder) = (name.to_owned(), holder.to_owned());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(renew);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let now = match store.acquire_lease(&name, &holder, ttl).await {
                    Ok(lease) => lease,
                    Err(e) => {
                        tracing::warn!(lease = %name, error = %e, "cannot renew or take a lease");
                        None
                    }
                };
                tx.send_if_modified(|held| {
                    if *held == now {
                        false
                    } else {
                        *held = now;
                        true
                    }
                });
            }
        });
        LeaseKeeper { held, task }
    }
}
