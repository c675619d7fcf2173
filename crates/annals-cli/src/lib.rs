//! The `annals` command-line tool as a library, so the binary stays a thin parser: serving a
//! store, appending, importing and reading from the shell, checking a store, a load generator for
//! crash tests, and `bench`, which hands the benchmarks' options to `annals-bench`.
//!
//! Output goes to stdout only through [`output`] and the benchmark report; logs go to stderr
//! through `tracing`.

mod args;
mod bench;
mod bench_args;
mod check;
mod effects;
mod http;
mod import;
mod jobs;
mod migrate;
mod output;
mod projections;
mod read;
mod relays;
mod replica;
mod serve;
mod store;
mod users;
mod write;

use std::process::ExitCode;

pub use args::{
    AppendArgs, BenchAppendArgs, BenchCommand, BenchFillArgs, BenchGrpcAppendArgs,
    BenchGrpcReplayArgs, BenchProjectArgs, BenchReadStreamArgs, BenchReplayArgs, CheckArgs, Cli,
    Command, DurabilityArg, ImportArgs, LoadArgs, ProjectTargetArg, ProjectionsArgs,
    ProjectionsCommand, ReadAllArgs, ReadArgs, ServeArgs, ServerAddr,
};

/// Runs one command; the exit code says whether it found a problem (e.g. `check`).
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(a) => serve::run(&a),
        Command::Append(a) => write::append(&a),
        Command::Import(a) => import::run(&a),
        Command::Read(a) => read::stream(&a),
        Command::ReadAll(a) => read::all(&a),
        Command::Check(a) => check::run(&a),
        Command::Migrate(a) => migrate::run(&a),
        Command::Load(a) => write::load(&a),
        Command::Bench(b) => bench::run(b),
        Command::Projections(a) => projections::run(&a).map(|()| ExitCode::SUCCESS),
        Command::Relays(a) => relays::run(&a).map(|()| ExitCode::SUCCESS),
        Command::Users(a) => users::run(&a).map(|()| ExitCode::SUCCESS),
    }
}
