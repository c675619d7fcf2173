//! The command line: every subcommand and its options, as clap derives them. Parsing only; the
//! commands themselves live in their own modules.

use std::path::PathBuf;

use annals_core::ExpectedRevision;
use annals_engine::Durability;
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

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
    /// Read a stream, one JSON line per event.
    Read(ReadArgs),
    /// Read `$all`, one JSON line per event, optionally filtered.
    ReadAll(ReadAllArgs),
    /// Verify every record and the index; exits non-zero if anything is wrong.
    Check(CheckArgs),
    /// Test load generator: concurrent single-event appends, one `ack` line per durable append.
    #[command(hide = true)]
    Load(LoadArgs),
    /// Measure the store against the same disk's own limits, in the same run.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Inspect and control a running server's projections.
    Projections(ProjectionsArgs),
}

#[derive(Debug, Args)]
pub struct ProjectionsArgs {
    /// The server's HTTP address.
    #[arg(long, global = true, default_value = "http://127.0.0.1:2113")]
    pub server: String,
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
    /// Store directory (created if missing).
    #[arg(long)]
    pub data: PathBuf,
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
    /// A TOML file of declarative projections to apply at start (new ones are registered,
    /// changed ones rebuilt beside the serving version). Projections registered earlier, also
    /// over HTTP, are kept in the store directory and run without it.
    #[arg(long)]
    pub projections: Option<PathBuf>,
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
pub struct CheckArgs {
    /// Store directory.
    pub dir: PathBuf,
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

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Concurrent durable appends against a plain write+fdatasync loop of the same batches.
    Append(BenchAppendArgs),
    /// Reading all of `$all` against a plain sequential read of the segment files.
    Replay(BenchReplayArgs),
    /// Random whole 100-event stream reads.
    ReadStream(BenchReadStreamArgs),
    /// Fill a store with events quickly (no fsync), up to a total; used by `bench replay`.
    #[command(hide = true)]
    Fill(BenchFillArgs),
    /// Concurrent single-event appends over gRPC to a running server, against the same workload
    /// in-process on a temporary store.
    GrpcAppend(BenchGrpcAppendArgs),
    /// Reading `$all` over gRPC from a running server, against an in-process read of as many
    /// events from a temporary store.
    GrpcReplay(BenchGrpcReplayArgs),
    /// Rebuilding a declarative projection into SQLite or Postgres view rows, against the same
    /// database's bulk insert of the same rows; then live append-to-row latency.
    Project(BenchProjectArgs),
}

/// The client library of the gRPC benches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GrpcClientArg {
    /// Annals's lean client (`annals_grpc::client`): the generated tonic client over one hyper
    /// HTTP/2 connection, so the bench measures the server rather than the client.
    Annals,
    /// The official Rust `kurrentdb` crate, as applications use it.
    Kurrentdb,
}

/// The RPC `bench grpc-append` appends with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GrpcAppendRpcArg {
    /// `Streams.Append`: one call per append, as the Rust, Go, Java, Node and Python clients do.
    Append,
    /// `Streams.BatchAppend`: one long-lived call per connection carrying every append of the
    /// clients on it, as the .NET client does.
    BatchAppend,
}

/// Which database `bench project` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProjectTargetArg {
    Sqlite,
    Postgres,
}

#[derive(Debug, Args)]
pub struct BenchProjectArgs {
    #[arg(long, value_enum, default_value_t = ProjectTargetArg::Sqlite)]
    pub target: ProjectTargetArg,
    /// Postgres connection (URL or key=value); default: the `test` database on 127.0.0.1:5432.
    #[arg(long)]
    pub target_url: Option<String>,
    /// Store directory; filled with `OrderPlaced` events up to --events first.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Partitions the projection runs in parallel.
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    /// Single appends timed from append to row committed in the view.
    #[arg(long, default_value_t = 500)]
    pub live_appends: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchAppendArgs {
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value_t = 64)]
    pub writers: u32,
    /// Events to append in all.
    #[arg(long, default_value_t = 50_000)]
    pub events: u64,
    /// Events per append (~200 bytes each).
    #[arg(long, default_value_t = 1)]
    pub batch: u32,
    /// Streams to spread the appends over, at random.
    #[arg(long, default_value_t = 10_000)]
    pub streams: u32,
    /// Engine and baseline alternate this many times, since the disk's fsync speed drifts.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// End with one JSON line of the figures.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchReplayArgs {
    #[arg(long)]
    pub data: PathBuf,
    /// Events the store should hold; it is filled up to this first.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Engine and baseline alternate this many times.
    #[arg(long, default_value_t = 2)]
    pub rounds: u32,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchReadStreamArgs {
    #[arg(long)]
    pub data: PathBuf,
    /// Streams of 100 events each to read from.
    #[arg(long, default_value_t = 1_000)]
    pub streams: u32,
    /// Stream reads to time.
    #[arg(long, default_value_t = 20_000)]
    pub reads: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchFillArgs {
    #[arg(long)]
    pub data: PathBuf,
    /// Events the store should hold in all.
    #[arg(long)]
    pub events: u64,
    /// Streams to spread the appends over.
    #[arg(long, default_value_t = 10_000)]
    pub streams: u32,
    /// Events per append.
    #[arg(long, default_value_t = 100)]
    pub batch: u32,
}

#[derive(Debug, Args)]
pub struct BenchGrpcAppendArgs {
    /// The running server: HOST:PORT (cleartext), or a kurrentdb:// connection string.
    #[arg(long)]
    pub server: String,
    /// Concurrent clients, each appending one event at a time to a stream of its own.
    #[arg(long, default_value_t = 64)]
    pub clients: u32,
    /// Client connections the clients share (each one HTTP/2 connection); 0: one per client.
    #[arg(long, default_value_t = 0)]
    pub connections: u32,
    /// The gRPC client library that loads the server.
    #[arg(long, value_enum, default_value_t = GrpcClientArg::Annals)]
    pub client: GrpcClientArg,
    /// The RPC each append is made with.
    #[arg(long, value_enum, default_value_t = GrpcAppendRpcArg::Append)]
    pub rpc: GrpcAppendRpcArg,
    /// Events to append over gRPC in all (and as many in-process).
    #[arg(long, default_value_t = 20_000)]
    pub events: u64,
    /// gRPC and in-process alternate this many times, since the disk's fsync speed drifts.
    #[arg(long, default_value_t = 2)]
    pub rounds: u32,
    /// Where to put the in-process baseline's temporary store; best on the server's disk
    /// (default: the system's temporary directory).
    #[arg(long)]
    pub baseline_dir: Option<PathBuf>,
    /// End with one JSON line of the figures.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchGrpcReplayArgs {
    /// The running server: HOST:PORT (cleartext), or a kurrentdb:// connection string.
    #[arg(long)]
    pub server: String,
    /// The gRPC client library that reads (and fills).
    #[arg(long, value_enum, default_value_t = GrpcClientArg::Annals)]
    pub client: GrpcClientArg,
    /// Events to read from the start of `$all`; the server is filled up to this first.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// gRPC and in-process alternate this many times.
    #[arg(long, default_value_t = 2)]
    pub rounds: u32,
    /// Where to put the in-process baseline's temporary store (default: the system's temporary
    /// directory).
    #[arg(long)]
    pub baseline_dir: Option<PathBuf>,
    /// End with one JSON line of the figures.
    #[arg(long)]
    pub json: bool,
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
