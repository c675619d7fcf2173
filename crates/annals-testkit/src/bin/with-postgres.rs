//! `with-postgres COMMAND [ARGS…]`: runs the command with a throwaway PostgreSQL server
//! (`annals_testkit::postgres::TempPostgres`) named in `ANNALS_TEST_STORE`, then stops the
//! server and exits with the command's status. `scripts/test.sh` runs the protocol suites a
//! second time this way, on a replica of a store in PostgreSQL.

use std::process::{Command, ExitCode};

use annals_testkit::postgres::TempPostgres;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(program) = args.next() else {
        eprintln!("usage: with-postgres COMMAND [ARGS…]");
        return ExitCode::from(2);
    };
    let server = TempPostgres::start();
    let status = Command::new(&program)
        .args(args)
        .env("ANNALS_TEST_STORE", server.url())
        .status();
    drop(server);
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => ExitCode::from(u8::try_from(s.code().unwrap_or(1)).unwrap_or(1)),
        Err(e) => {
            eprintln!("with-postgres: cannot run {program}: {e}");
            ExitCode::from(2)
        }
    }
}
