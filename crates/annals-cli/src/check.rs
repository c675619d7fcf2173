//! `annals check`: opens a store, verifies every record and the index against the log, and prints
//! a summary. Exit status 0 means healthy, 1 that problems were found or the store could not be
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
    let config = EngineConfig {
        durability: Durability::Fsync,
        ..EngineConfig::default()
    };
    store::ensure_exists(&args.dir)?;
    let (engine, open) = match Engine::open_dir(&args.dir, config) {
        Ok(found) => found,
        Err(e) => {
            output::check_failed(&format!("cannot open store {}", args.dir.display()), &e)?;
            return Ok(ExitCode::FAILURE);
        }
    };
    store::log_open_report(&args.dir, &open);
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
