//! The `annals` binary: parses the command line, sets up logging to stderr and hands over to
//! the library, which owns every command.

use std::io::IsTerminal;
use std::process::ExitCode;

use annals_cli::{Cli, Command};
use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The server logs what it does by default; one-shot commands only warnings, so their output
    // stays readable, and benches their progress too. RUST_LOG overrides any of these.
    let default_level = match cli.command {
        Command::Serve(_) => "info",
        Command::Bench(_) => "warn,annals_bench=info",
        _ => "warn",
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match annals_cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
