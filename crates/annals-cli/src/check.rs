//! `annals check`: opens a store, verifies every record and the index against the log, and prints
//! a summary (or, with `--store postgres://…`, checks a store in Postgres). Exit status 0 means healthy, 1 that problems were found or the store could not be
//! opened or scanned (the error names the file and offset of the bad record).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use annals_engine::{Durability, Engine, EngineConfig};
use anyhow::Context as _;

use crate::args::CheckArgs;
use crate::{output, store};

/// Least time between two progress lines on stderr.
const CHECK_PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

pub(crate) fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let dir = match (&args.store, &args.dir) {
        (Some(url), _) => return run_postgres(url),
        (None, Some(dir)) => dir,
        (None, None) => anyhow::bail!("check needs a store directory or --store URL"),
    };
    let config = EngineConfig {
        durability: Durability::Fsync,
        ..EngineConfig::default()
    };
    store::ensure_exists(dir)?;
    let (engine, open) = match Engine::open_dir(dir, config) {
        Ok(found) => found,
        Err(e) => {
            output::check_failed(&format!("cannot open store {}", dir.display()), &e)?;
            return Ok(ExitCode::FAILURE);
        }
    };
    store::log_open_report(dir, &open);
    let started = Instant::now();
    let mut last = started;
    let result = engine.check(|events| {
        if last.elapsed() >= CHECK_PROGRESS_INTERVAL {
            last = Instant::now();
            eprintln!(
                "check: {events} events checked ({:.1} s)",
                started.elapsed().as_secs_f64()
            );
        }
    });
    engine
        .close_checked()
        .context("the store's pipeline failed")?;
    match result {
        Ok(report) => {
            let ok = output::check_summary(&open, &report)?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Err(e) => {
            output::check_failed("check stopped at a bad record", &e)?;
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `annals check --store postgres://…`: the checks of `annals_pgstore::PgStore::check`.
fn run_postgres(url: &str) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let checked = runtime.block_on(annals_pgstore::check_url(url));
    let report = match checked {
        Ok(report) => report,
        Err(e) => {
            output::check_failed("cannot check the store in Postgres", &e)?;
            return Ok(ExitCode::FAILURE);
        }
    };
    let ok = output::pg_check_summary(&report)?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
