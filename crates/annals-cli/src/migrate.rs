//! `annals migrate`: copies a store between the embedded format and PostgreSQL, either way, with
//! positions, streams, revisions, ids, types, times and bytes unchanged, a page of `$all` per
//! transaction (per group commit on the embedded side). It resumes where the target's head is,
//! after checking that the target's last event is the source's event at that position (so it
//! never continues a different store). The source must not take writes meanwhile (stop its
//! server); what is appended to it later is copied by running the command again. A node of
//! `annals serve --store` catches up with Postgres through the same [`copy`].

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use annals_core::{Direction, EventRecord, Position};
use annals_engine::{Durability, Engine};
use annals_pgstore::PgStore;
use anyhow::Context as _;

use crate::args::MigrateArgs;
use crate::store;

/// Events copied per transaction.
const MIGRATE_BATCH_EVENTS: usize = 4_096;

/// Whether `s` names a store in PostgreSQL rather than a directory.
fn is_postgres(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://") || s.contains("host=")
}

pub(crate) fn run(args: &MigrateArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (start, done, elapsed) = match (is_postgres(&args.from), is_postgres(&args.to)) {
        (false, true) => {
            let (engine, _) = store::open_existing(Path::new(&args.from), Durability::Fsync)?;
            let copied = runtime.block_on(to_postgres(&engine, &args.to));
            engine.close();
            copied?
        }
        (true, false) => {
            let (engine, _) = store::open(Path::new(&args.to), Durability::Fsync)?;
            let copied = runtime.block_on(from_postgres(&args.from, &engine));
            engine.close();
            copied?
        }
        _ => anyhow::bail!(
            "migrate copies between a store directory and a postgres:// store: give one of each"
        ),
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "migrated positions {}..{} ({} events) in {:.1} s; the target's head is {}",
        start.0 + 1,
        done.0,
        done.0 - start.0,
        elapsed.as_secs_f64(),
        done.0
    )?;
    Ok(ExitCode::SUCCESS)
}

/// One side of a copy: where it is, what it holds, and taking events in unchanged.
pub(crate) trait Side {
    fn head(&self) -> Position;
    async fn read(&self, from: Position, limit: usize) -> anyhow::Result<Vec<EventRecord>>;
    async fn import(&self, events: &[EventRecord]) -> anyhow::Result<()>;
}

impl Side for Engine {
    fn head(&self) -> Position {
        Engine::head(self)
    }
    async fn read(&self, from: Position, limit: usize) -> anyhow::Result<Vec<EventRecord>> {
        Ok(self
            .read_all(from, Direction::Forwards, limit, None)?
            .events)
    }
    async fn import(&self, events: &[EventRecord]) -> anyhow::Result<()> {
        self.import_async(events).await?;
        Ok(())
    }
}

impl Side for PgStore {
    fn head(&self) -> Position {
        PgStore::head(self)
    }
    async fn read(&self, from: Position, limit: usize) -> anyhow::Result<Vec<EventRecord>> {
        Ok(self.read_all(from, limit).await?)
    }
    async fn import(&self, events: &[EventRecord]) -> anyhow::Result<()> {
        PgStore::import(self, events).await?;
        Ok(())
    }
}

async fn to_postgres(engine: &Engine, url: &str) -> anyhow::Result<(Position, Position, Duration)> {
    let target = PgStore::open(url)
        .await
        .context("cannot open the store in Postgres")?;
    copy(engine, &target).await
}

async fn from_postgres(
    url: &str,
    engine: &Engine,
) -> anyhow::Result<(Position, Position, Duration)> {
    let source = PgStore::open(url)
        .await
        .context("cannot open the store in Postgres")?;
    copy(&source, engine).await
}

/// Copies what `source` holds past `target`'s head, page by page, after checking that the
/// target's last event is the source's (it never continues another store).
pub(crate) async fn copy(
    source: &impl Side,
    target: &impl Side,
) -> anyhow::Result<(Position, Position, Duration)> {
    let start = target.head();
    if start.0 > 0 {
        let theirs = target.read(start, 1).await?;
        let ours = source.read(start, 1).await?;
        let same = matches!((theirs.first(), ours.first()),
            (Some(t), Some(s)) if t.id == s.id && t.position == s.position);
        anyhow::ensure!(
            same,
            "the target's event at position {} is not this store's: it holds another store",
            start.0
        );
    }
    let source_head = source.head();
    let started = Instant::now();
    let read = |from: Position| async move {
        if from > source_head {
            return Ok(Vec::new());
        }
        let mut events = source.read(from, MIGRATE_BATCH_EVENTS).await?;
        events.retain(|e| e.position <= source_head);
        anyhow::Ok(events)
    };
    // The next page is read while the last one is imported.
    let mut page = read(start.next()).await?;
    while let Some(last) = page.last().map(|e| e.position) {
        let (imported, next) = tokio::join!(target.import(&page), read(last.next()));
        imported?;
        page = next?;
        tracing::info!(
            copied = last.0 - start.0,
            of = source_head.0 - start.0,
            "migrating"
        );
    }
    let done = target.head();
    anyhow::ensure!(
        done == source_head,
        "the copy ended at position {}, the source's head is {}",
        done.0,
        source_head.0
    );
    Ok((start, done, started.elapsed()))
}
