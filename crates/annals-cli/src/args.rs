//! The command line: every subcommand and its options, as clap derives them. Parsing only; the
//! commands themselves live in their own modules.

use std::path::PathBuf;

use annals_core::ExpectedRevision;
use annals_engine::Durability;
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

pub use crate::bench_args::*;

/// Annals, an event store.
#[derive(Debug, Parser)]
#[command(name = "annals", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Open a store and hold it until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Append one event to a stream; prints its revision and position.
    Append(AppendArgs),
    /// Append a file of JSON lines (`{"stream","type","data","id"?,"metadata"?}`) in batches;
    /// idempotent and resumable. Prints a summary line.
    Import(ImportArgs),
    /// Read a stream, one JSON line per event.
    Read(ReadArgs),
    /// Read `$all`, one JSON line per event, optionally filtered.
    ReadAll(ReadAllArgs),
    /// Verify every record and the index; exits non-zero if anything is wrong.
    Check(CheckArgs),
    /// Copy an embedded store into PostgreSQL, or back, with positions and revisions
    /// unchanged; resumable (run it again to go on, or to copy what was appended since).
    Migrate(MigrateArgs),
    /// Test load generator: concurrent single-event appends, one `ack` line per durable append.
    #[command(hide = true)]
    Load(LoadArgs),
    /// Measure the store against the same disk's own limits, in the same run.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Inspect and control a running server's projections.
    Projections(ProjectionsArgs),
    /// Inspect and control a running server's relays (events forwarded to brokers).
    Relays(RelaysArgs),
    /// Manage the users of a running server started with --auth.
    Users(UsersArgs),
}

/// How a command that talks to a running server proves who it is, and whom it trusts.
#[derive(Debug, Clone, Default, Args)]
pub struct ClientAuth {
    /// Login, for a server running with --auth.
    #[arg(long, global = true, env = "ANNALS_USER")]
    pub user: Option<String>,
    /// Password of --user.
    #[arg(long, global = true, env = "ANNALS_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// A PEM CA certificate to trust for https:// servers, besides the system's roots.
    #[arg(long, global = true)]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UsersArgs {
    /// The running server: HOST:PORT or http://HOST:PORT (cleartext), or https://HOST:PORT.
    #[arg(long, global = true, default_value = "127.0.0.1:2113")]
    pub server: ServerAddr,
    #[command(flatten)]
    pub auth: ClientAuth,
    #[command(subcommand)]
    pub command: UsersCommand,
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Every user's details.
    List,
    /// One user's details.
    Show { login: String },
    /// Create a user.
    Create {
        login: String,
        #[arg(long, default_value = "")]
        full_name: String,
        /// A group to put the user in (repeat for several): `$admins`, `$ops`, or any other.
        #[arg(long = "group")]
        groups: Vec<String>,
        #[arg(long, env = "ANNALS_NEW_PASSWORD", hide_env_values = true)]
        new_password: String,
    },
    /// Replace a user's full name and groups (and password, if given).
    Update {
        login: String,
        #[arg(long, default_value = "")]
        full_name: String,
        #[arg(long = "group")]
        groups: Vec<String>,
        #[arg(long, env = "ANNALS_NEW_PASSWORD", hide_env_values = true)]
        new_password: Option<String>,
    },
    /// Delete a user.
    Delete { login: String },
    /// Let a disabled user in again.
    Enable { login: String },
    /// Refuse a user's requests from the next one on.
    Disable { login: String },
    /// Change a password, given the current one (a user's own; --password is the caller's).
    ChangePassword {
        login: String,
        #[arg(long)]
        current_password: String,
        #[arg(long, env = "ANNALS_NEW_PASSWORD", hide_env_values = true)]
        new_password: String,
    },
    /// Set a password without the current one (admins).
    ResetPassword {
        login: String,
        #[arg(long, env = "ANNALS_NEW_PASSWORD", hide_env_values = true)]
        new_password: String,
    },
}

#[derive(Debug, Args)]
pub struct RelaysArgs {
    /// The running server: HOST:PORT or http://HOST:PORT (cleartext), or https://HOST:PORT.
    #[arg(long, global = true, default_value = "127.0.0.1:2113")]
    pub server: ServerAddr,
    #[command(flatten)]
    pub auth: ClientAuth,
    #[command(subcommand)]
    pub command: RelaysCommand,
}

#[derive(Debug, Subcommand)]
pub enum RelaysCommand {
    /// Every relay: state, endpoint, position, lag, rate, parked events, last error.
    List,
    /// One relay's status.
    Status { name: String },
    /// Apply a TOML definition file (start new relays, restart changed ones).
    Apply { file: PathBuf },
    /// Stop and forget a relay, with its checkpoint and parked events.
    Remove { name: String },
    /// Stop sending until resumed.
    Pause { name: String },
    /// Resume a paused relay, or one stopped at a poison event (which is tried again).
    Resume { name: String },
    /// Start over after a position: what was sent since is sent again.
    Reset {
        name: String,
        #[arg(long)]
        position: u64,
    },
    /// The relay's parked events.
    Parked { name: String },
    /// Send the parked events again, oldest first.
    RetryParked { name: String },
}

#[derive(Debug, Args)]
pub struct ProjectionsArgs {
    /// The running server: HOST:PORT or http://HOST:PORT (cleartext), or https://HOST:PORT.
    #[arg(long, global = true, default_value = "127.0.0.1:2113")]
    pub server: ServerAddr,
    #[command(flatten)]
    pub auth: ClientAuth,
    /// Print the server's JSON answer instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: ProjectionsCommand,
}

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Every projection: state, position, lag, rate, parked events, last error.
    List,
    /// One projection's status.
    Status { name: String },
    /// One projection's newest recorded failures.
    Failures { name: String },
    /// Apply a TOML definition file (register new projections, rebuild changed ones).
    Apply { file: PathBuf },
    /// Stop applying events until resumed.
    Pause { name: String },
    /// Resume a paused or faulted projection (a faulted one retries its failed event).
    Resume { name: String },
    /// Drop the projection's tables and build it again from the start.
    Reset { name: String },
    /// Build a new version beside the serving one and swap when it has caught up.
    Rebuild { name: String },
    /// Apply parked events again.
    RetryParked { name: String },
    /// Wait until the projection has applied a position (read-your-writes).
    Wait {
        name: String,
        #[arg(long)]
        position: u64,
        #[arg(long, default_value_t = 5_000)]
        timeout_ms: u64,
    },
}

/// When appends are acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DurabilityArg {
    /// After `fdatasync`.
    Fsync,
    /// After the write reaches the OS (a machine crash can lose acknowledged appends).
    None,
}

impl From<DurabilityArg> for Durability {
    fn from(d: DurabilityArg) -> Self {
        match d {
            DurabilityArg::Fsync => Durability::Fsync,
            DurabilityArg::None => Durability::None,
        }
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Store directory (created if missing). With --store, a copy of the store in PostgreSQL
    /// kept by this node (rebuilt from it if wiped).
    #[arg(long)]
    pub data: PathBuf,
    /// Keep the store in PostgreSQL (`postgres://USER@HOST:PORT/DB`, or a key-value string with
    /// several hosts) instead of only in --data: appends go there, so any number of nodes can
    /// serve one store.
    #[arg(long)]
    pub store: Option<String>,
    /// With --store: the address (HOST:PORT) other nodes send clients to while this node runs
    /// the projections, relays and persistent subscriptions (default: the address listened on).
    #[arg(long, requires = "store")]
    pub advertise: Option<String>,
    #[arg(long, value_enum, default_value_t = DurabilityArg::Fsync)]
    pub durability: DurabilityArg,
    /// Address to serve the gRPC (KurrentDB protocol) and HTTP/JSON APIs on, together.
    #[arg(long, default_value = "127.0.0.1:2113")]
    pub listen: std::net::SocketAddr,
    /// PEM certificate chain; with --tls-key, serve TLS instead of cleartext.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Most open client connections.
    #[arg(long, default_value_t = annals_core::limits::NETWORK_CONNECTIONS_MAX)]
    pub connections_max: usize,
    /// Shortest time between two pages sent to one live subscriber at the head, in
    /// microseconds: what is published meanwhile goes out together. 0 sends each group commit at
    /// once (lowest latency, most server CPU per subscriber).
    #[arg(long, default_value_t = annals_core::limits::NETWORK_LIVE_PAGE_INTERVAL_MICROS)]
    pub live_page_interval_us: u64,
    /// A TOML file of declarative projections to apply at start (new ones are registered,
    /// changed ones rebuilt beside the serving version). Projections registered earlier, also
    /// over HTTP, are kept in the store directory and run without it.
    #[arg(long)]
    pub projections: Option<PathBuf>,
    /// A TOML file of relays to apply at start (new ones start, changed ones restart from their
    /// checkpoints). Relays applied earlier, also over HTTP, are kept in the store and run
    /// without it.
    #[arg(long)]
    pub relays: Option<PathBuf>,
    /// Require users: every request but /health carries HTTP basic credentials, checked
    /// against the users kept in the store, and stream access lists ($acl) apply. Needs TLS
    /// (--tls-cert/--tls-key) unless --insecure-allow-plaintext-auth.
    #[arg(long)]
    pub auth: bool,
    /// The password of the `admin` user the first start with --auth creates.
    #[arg(long, env = "ANNALS_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// Allow --auth without TLS (passwords then cross the network in clear): for loopback tests.
    #[arg(long, requires = "auth")]
    pub insecure_allow_plaintext_auth: bool,
    /// Serve /metrics without credentials even with --auth.
    #[arg(long)]
    pub metrics_open: bool,
    /// Do not serve the admin web UI (`/` and `/ui/…`); the APIs stay.
    #[arg(long)]
    pub no_ui: bool,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("source").args(["json", "file"])))]
pub struct AppendArgs {
    #[arg(long)]
    pub data: PathBuf,
    pub stream: String,
    /// any, no_stream, stream_exists, or the stream's current revision.
    #[arg(long, default_value = "any", value_parser = parse_expected)]
    pub expected: ExpectedRevision,
    /// Event type.
    #[arg(long = "type", default_value = "Event")]
    pub event_type: String,
    /// Event data, which must be JSON.
    #[arg(long)]
    pub json: Option<String>,
    /// Read the event data from this file (stored as JSON if it parses, else as binary).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Event id (a UUID); a retry with the same id is idempotent. Random by default.
    #[arg(long)]
    pub id: Option<uuid::Uuid>,
    #[arg(long, value_enum, default_value_t = DurabilityArg::Fsync)]
    pub durability: DurabilityArg,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("where").required(true).args(["data", "server"])))]
pub struct ImportArgs {
    /// The JSON lines to import, or `-` for standard input.
    pub file: PathBuf,
    /// Store directory to append to directly (created if missing).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// A running server instead: HOST:PORT or http://HOST:PORT (cleartext), or https://HOST:PORT.
    #[arg(long)]
    pub server: Option<ServerAddr>,
    #[command(flatten)]
    pub auth: ClientAuth,
    /// Where the import keeps its progress (default: FILE.annals-import). Standard input is
    /// resumable only with this.
    #[arg(long)]
    pub progress: Option<PathBuf>,
    /// Report a malformed line on stderr and go on, instead of stopping at it.
    #[arg(long)]
    pub skip_bad: bool,
    /// With --data: when appends are acknowledged.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Fsync)]
    pub durability: DurabilityArg,
}

#[derive(Debug, Args)]
pub struct ReadArgs {
    #[arg(long)]
    pub data: PathBuf,
    pub stream: String,
    /// First revision to read (default: the first, or the last when reading backwards).
    #[arg(long)]
    pub from: Option<u64>,
    #[arg(long)]
    pub backwards: bool,
    /// Most events to print (default: all).
    #[arg(long)]
    pub limit: Option<u64>,
}

#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("filter").args(["stream_prefix", "type_prefix", "stream_regex", "type_regex"])
))]
pub struct ReadAllArgs {
    #[arg(long)]
    pub data: PathBuf,
    /// First position to read (default: the first, or the last when reading backwards).
    #[arg(long)]
    pub from: Option<u64>,
    #[arg(long)]
    pub backwards: bool,
    /// Most events to print (default: all).
    #[arg(long)]
    pub limit: Option<u64>,
    /// Only streams starting with this prefix (repeat for any of several).
    #[arg(long)]
    pub stream_prefix: Vec<String>,
    /// Only event types starting with this prefix (repeat for any of several).
    #[arg(long)]
    pub type_prefix: Vec<String>,
    /// Only streams matching this regex.
    #[arg(long)]
    pub stream_regex: Option<String>,
    /// Only event types matching this regex.
    #[arg(long)]
    pub type_regex: Option<String>,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Where the events are: an embedded store's directory (not being served meanwhile), or a
    /// store in PostgreSQL (`postgres://USER@HOST:PORT/DB`).
    #[arg(long)]
    pub from: String,
    /// Where they go: a store in PostgreSQL (the schema is created if missing), or, from
    /// PostgreSQL, an embedded store's directory (created if missing).
    #[arg(long)]
    pub to: String,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Store directory.
    #[arg(required_unless_present = "store")]
    pub dir: Option<PathBuf>,
    /// Instead of a directory: a store in PostgreSQL (`postgres://USER@HOST:PORT/DB`).
    #[arg(long, conflicts_with = "dir")]
    pub store: Option<String>,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    #[arg(long)]
    pub data: PathBuf,
    /// Concurrent writer threads.
    #[arg(long, default_value_t = 8)]
    pub writers: u32,
    /// Events to append in all (each append holds one).
    #[arg(long, default_value_t = 1_000)]
    pub events: u64,
    /// Streams to spread the appends over, at random.
    #[arg(long, default_value_t = 100)]
    pub streams: u32,
    #[arg(long, value_enum, default_value_t = DurabilityArg::Fsync)]
    pub durability: DurabilityArg,
}

/// Parses `any`, `no_stream`, `stream_exists` or a revision number.
fn parse_expected(s: &str) -> Result<ExpectedRevision, String> {
    match s {
        "any" => Ok(ExpectedRevision::Any),
        "no_stream" | "no-stream" => Ok(ExpectedRevision::NoStream),
        "stream_exists" | "stream-exists" => Ok(ExpectedRevision::StreamExists),
        n => n.parse().map(ExpectedRevision::Exact).map_err(|_| {
            format!("expected any, no_stream, stream_exists or a revision number, not {n:?}")
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    fn server(text: &str) -> Result<(bool, String), String> {
        text.parse::<ServerAddr>().map(|a| (a.tls(), a.authority()))
    }

    #[test]
    fn server_takes_host_port_with_or_without_a_scheme() {
        let plain = Ok((false, "127.0.0.1:2113".to_owned()));
        assert_eq!(server("127.0.0.1:2113"), plain);
        assert_eq!(server("http://127.0.0.1:2113"), plain);
        assert_eq!(server("http://127.0.0.1:2113/"), plain);
        assert_eq!(server("HTTP://127.0.0.1:2113"), plain);
        assert_eq!(
            server("https://db.example.com:2113"),
            Ok((true, "db.example.com:2113".to_owned()))
        );
        assert_eq!(server("localhost:1"), Ok((false, "localhost:1".to_owned())));
        assert_eq!(server("[::1]:2113"), Ok((false, "[::1]:2113".to_owned())));
        assert_eq!(
            server("https://[::1]:2113"),
            Ok((true, "[::1]:2113".to_owned()))
        );
    }

    #[test]
    fn a_scheme_without_a_port_means_its_usual_port() {
        assert_eq!(server("http://annals"), Ok((false, "annals:80".to_owned())));
        assert_eq!(
            server("https://annals.example.com"),
            Ok((true, "annals.example.com:443".to_owned()))
        );
    }

    #[test]
    fn server_urls_for_each_kind_of_client() {
        let a: ServerAddr = "127.0.0.1:2113".parse().unwrap();
        assert_eq!(a.base_url(), "http://127.0.0.1:2113");
        assert_eq!(a.to_string(), "http://127.0.0.1:2113");
        let a: ServerAddr = "https://h:1/".parse().unwrap();
        assert_eq!(
            (a.base_url(), a.authority()),
            ("https://h:1".to_owned(), "h:1".to_owned())
        );
    }

    #[test]
    fn server_refuses_other_schemes_and_garbage_with_a_reason() {
        for (text, why) in [
            (
                "kurrentdb://127.0.0.1:2113?tls=false",
                "scheme \"kurrentdb\"",
            ),
            ("ftp://h:21", "scheme \"ftp\""),
            ("127.0.0.1", "port is missing"),
            ("garbage", "port is missing"),
            ("", "not a host name"),
            (":2113", "not a host name"),
            ("http://", "not a host name"),
            ("h:0", "1..=65535"),
            ("h:65536", "1..=65535"),
            ("h:port", "1..=65535"),
            ("h:", "1..=65535"),
            ("http://h:1/projections", "only a host and a port"),
            ("http://user@h:1", "only a host and a port"),
            ("h:1?x=1", "only a host and a port"),
            ("h o:1", "only a host and a port"),
            ("::1", "brackets"),
            ("[::1", "closing bracket"),
            ("[nope]:1", "not an IPv6 address"),
            ("[::1]2113", "after a colon"),
            ("h_1:2", "not a host name"),
        ] {
            let err = server(text).unwrap_err();
            assert!(err.contains(why), "{text:?}: {err}");
            assert!(err.contains("HOST:PORT"), "{text:?}: {err}");
        }
    }

    #[test]
    fn every_server_option_uses_the_one_parser() {
        let cli =
            Cli::try_parse_from(["annals", "projections", "--server", "h:1", "list"]).unwrap();
        let Command::Projections(p) = cli.command else {
            panic!("not projections")
        };
        assert_eq!(p.server.base_url(), "http://h:1");
        let cli = Cli::try_parse_from(["annals", "projections", "list"]).unwrap();
        let Command::Projections(p) = cli.command else {
            panic!("not projections")
        };
        assert_eq!(p.server.base_url(), "http://127.0.0.1:2113");
        for bench in ["grpc-append", "grpc-replay"] {
            let cli =
                Cli::try_parse_from(["annals", "bench", bench, "--server", "http://h:1"]).unwrap();
            let server = match cli.command {
                Command::Bench(BenchCommand::GrpcAppend(a)) => a.server.unwrap(),
                Command::Bench(BenchCommand::GrpcReplay(a)) => a.server,
                _ => panic!("not a gRPC bench"),
            };
            assert_eq!(server.authority(), "h:1");
            let err = Cli::try_parse_from(["annals", "bench", bench, "--server", "esdb://h:1"])
                .unwrap_err()
                .to_string();
            assert!(err.contains("\"esdb\" is not supported"), "{err}");
        }
        // grpc-append needs a server or --auth (which starts its own), not both.
        assert!(Cli::try_parse_from(["annals", "bench", "grpc-append"]).is_err());
        assert!(Cli::try_parse_from(["annals", "bench", "grpc-append", "--auth"]).is_ok());
        assert!(
            Cli::try_parse_from([
                "annals",
                "bench",
                "grpc-append",
                "--auth",
                "--server",
                "h:1"
            ])
            .is_err()
        );
    }

    #[test]
    fn expected_revision_parses() {
        assert_eq!(parse_expected("any"), Ok(ExpectedRevision::Any));
        assert_eq!(parse_expected("no_stream"), Ok(ExpectedRevision::NoStream));
        assert_eq!(
            parse_expected("stream_exists"),
            Ok(ExpectedRevision::StreamExists)
        );
        assert_eq!(parse_expected("7"), Ok(ExpectedRevision::Exact(7)));
        assert!(parse_expected("-1").is_err());
    }
}
