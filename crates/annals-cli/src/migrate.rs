//! `annals migrate --from DIR --to postgres://…`: copies an embedded store into PostgreSQL with
//! positions, streams, revisions and ids unchanged, a page of `$all` per transaction. It resumes
//! where the target's head is, after checking that the target's last event is the source's
//! event at that position (so it never continues a different store). The source must not take
//! writes meanwhile (stop its server); events appended to it later are copied by running the
//! command again.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Instant;

use annals_core::{Direction, Position};
use annals_engine::Durability;
use anyhow::Context as _;

use crate::args::MigrateArgs;
use crate::store;

/// Events copied per transaction.
const MIGRATE_BATCH_EVENTS: usize = 4_096;

pub(crate) fn run(args: &MigrateArgs) -> anyhow::Result<ExitCode> {
    let (engine, _) = store::open_existing(&args.from, Durability::Fsync)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let copied = runtime.block_on(async {
        let target = annals_pgstore::PgStore::open(&args.to)
            .await
            .context("cannot open the store in Postgres")?;
        let start = target.head();
        if start.0 > 0 {
            let theirs = target.read_all(start, 1).await?;
            let ours = engine.read_all(start, Direction::Forwards, 1, None)?;
            let same = matches!((theirs.first(), ours.events.first()),
                (Some(t), Some(o)) if t.id == o.id && t.position == o.position);
            anyhow::ensure!(
                same,
                "the target's event at position {} is not this store's: it holds another store",
                start.0
            );
        }
        let source_head = engine.head();
        let started = Instant::now();
        let mut next = start.next();
        while next <= source_head {
            let page = engine.read_all(next, Direction::Forwards, MIGRATE_BATCH_EVENTS, None)?;
            let events: Vec<_> = page
                .events
                .into_iter()
                .filter(|e| e.position <= source_head)
                .collect();
            let Some(last) = events.last().map(|e| e.position) else {
                break;
            };
            target.import(&events).await?;
            next = Position(last.0 + 1);
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
        Ok::<_, anyhow::Error>((start, done, started.elapsed()))
    });
    engine.close();
    let (start, done, elapsed) = copied?;
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
