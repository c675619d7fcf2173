//! The command line: every subcommand and its options, as clap derives them. Parsing only; the
//! commands themselves live in their own modules.

use std::path::PathBuf;
use std::str::FromStr;

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
    /// Append a file of JSON lines (`{"stream","type","data","id"?,"metadata"?}`) in batches;
    /// idempotent and resumable. Prints a summary line.
    Import(ImportArgs),
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
    /// Inspect and control a running server's relays (events forwarded to brokers).
    Relays(RelaysArgs),
}

#[derive(Debug, Args)]
pub struct RelaysArgs {
    /// The running server: HOST:PORT or http://HOST:PORT (cleartext), or https://HOST:PORT.
    #[arg(long, global = true, default_value = "127.0.0.1:2113")]
    pub server: ServerAddr,
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
    /// A TOML file of relays to apply at start (new ones start, changed ones restart from their
    /// checkpoints). Relays applied earlier, also over HTTP, are kept in the store and run
    /// without it.
    #[arg(long)]
    pub relays: Option<PathBuf>,
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
    /// Consumers of one persistent-subscription group taking and acking a stream over gRPC,
    /// against a catch-up subscription reading the same events; then live append-to-delivery
    /// latency at a fixed rate.
    Persistent(BenchPersistentArgs),
    /// A relay forwarding a store's events to NATS JetStream, against a plain publishing loop
    /// of the same messages; then live append-to-broker latency at a fixed rate.
    Relay(BenchRelayArgs),
}

/// The broker `bench relay` sends to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RelaySinkArg {
    Nats,
}

#[derive(Debug, Args)]
pub struct BenchRelayArgs {
    #[arg(long, value_enum, default_value_t = RelaySinkArg::Nats)]
    pub sink: RelaySinkArg,
    /// A NATS server with JetStream.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub nats: String,
    /// Store directory for the in-process store (created; give a fresh one).
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Streams the events are spread over.
    #[arg(long, default_value_t = 256)]
    pub streams: u64,
    /// Sends in flight, for the relay and the baseline alike.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// The relay's order: `stream` (per-stream order) or `global` (`$all` order, sent in turn).
    #[arg(long, default_value = "stream", value_parser = ["stream", "global"])]
    pub order: String,
    /// Live phase: single-event appends per second.
    #[arg(long, default_value_t = 1_000)]
    pub rate: u64,
    /// Live phase: appends sent (0: no live phase).
    #[arg(long, default_value_t = 2_000)]
    pub live_events: u64,
    #[arg(long)]
    pub json: bool,
}

/// The client library of the gRPC benches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GrpcClientArg {
    /// Annals's lean client (`annals_bench::client`): the generated tonic client over one hyper
    /// HTTP/2 connection, so the bench measures the server rather than the client. Cleartext only.
    Annals,
    /// The official Rust `kurrentdb` crate, as applications use it; in builds with the
    /// `kurrentdb-client` feature only.
    Kurrentdb,
}

/// The RPC `bench grpc-append` appends with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
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
#[command(group(clap::ArgGroup::new("where").required(true).args(["data", "server"])))]
pub struct BenchPersistentArgs {
    /// Store directory for a server this bench runs in its own process (fsync durability).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// A running server instead: HOST:PORT or http://HOST:PORT (cleartext).
    #[arg(long)]
    pub server: Option<ServerAddr>,
    /// Consumers in the group, each on its own connection.
    #[arg(long, default_value_t = 4)]
    pub consumers: usize,
    /// Events appended to a fresh stream, then read by each side.
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Catch-up subscription and group alternate this many times.
    #[arg(long, default_value_t = 1)]
    pub rounds: u32,
    /// Events in flight to each consumer at most (the client's buffer size).
    #[arg(long, default_value_t = 64)]
    pub buffer: i32,
    /// Live phase: single-event appends per second.
    #[arg(long, default_value_t = 1_000)]
    pub rate: u64,
    /// Live phase: appends sent (0: no live phase).
    #[arg(long, default_value_t = 5_000)]
    pub live_events: u64,
    /// End with one JSON line of the figures.
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
    /// The running server: HOST:PORT or http://HOST:PORT (cleartext), or https://HOST:PORT
    /// (TLS, --client kurrentdb only).
    #[arg(long)]
    pub server: ServerAddr,
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
    /// The running server: HOST:PORT or http://HOST:PORT (cleartext), or https://HOST:PORT
    /// (TLS, --client kurrentdb only).
    #[arg(long)]
    pub server: ServerAddr,
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

/// A running server's address, as every `--server` takes it: `HOST:PORT` or `http://HOST:PORT`
/// (cleartext), or `https://HOST:PORT` (TLS). With a scheme the port may be left out for its
/// usual one (80, 443); an IPv6 host is written in brackets (`[::1]:2113`). Nothing else is
/// taken: no other scheme, user, path (one trailing `/` aside), query or fragment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerAddr {
    tls: bool,
    /// As written, an IPv6 address with its brackets.
    host: String,
    port: u16,
}

impl ServerAddr {
    /// Whether the server is to be spoken to over TLS (`https://`).
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// `HOST:PORT`, for gRPC clients.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// `http://HOST:PORT` or `https://HOST:PORT`, for HTTP clients.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.authority())
    }
}

impl std::fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.base_url())
    }
}

impl FromStr for ServerAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        const FORMS: &str = "give HOST:PORT, http://HOST:PORT or https://HOST:PORT";
        let bad = |why: &str| format!("bad server address {text:?}: {why}; {FORMS}");
        let (tls, rest, usual_port) = match text.split_once("://") {
            None => (false, text, None),
            Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
                "http" => (false, rest, Some(80)),
                "https" => (true, rest, Some(443)),
                other => return Err(bad(&format!("the scheme {other:?} is not supported"))),
            },
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) || rest.contains(char::is_whitespace) {
            return Err(bad("only a host and a port are allowed"));
        }
        let (host, port) = match rest.strip_prefix('[') {
            Some(bracketed) => {
                let (ip, tail) = bracketed
                    .split_once(']')
                    .ok_or_else(|| bad("an IPv6 address lacks its closing bracket"))?;
                ip.parse::<std::net::Ipv6Addr>()
                    .map_err(|_| bad(&format!("{ip:?} is not an IPv6 address")))?;
                let port = match tail {
                    "" => None,
                    tail => Some(
                        tail.strip_prefix(':')
                            .ok_or_else(|| bad("a port follows the host after a colon"))?,
                    ),
                };
                (format!("[{ip}]"), port)
            }
            None => {
                let (host, port) = match rest.rsplit_once(':') {
                    Some((host, port)) => (host, Some(port)),
                    None => (rest, None),
                };
                if host.contains(':') {
                    return Err(bad("an IPv6 address is written in brackets, as [::1]:2113"));
                }
                let name_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
                if host.is_empty() || !host.chars().all(name_char) {
                    return Err(bad(&format!("{host:?} is not a host name or address")));
                }
                (host.to_owned(), port)
            }
        };
        let port = match (port, usual_port) {
            (Some(p), _) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(bad(&format!("the port {p:?} is not a number in 1..=65535"))),
            },
            (None, Some(usual)) => usual,
            (None, None) => return Err(bad("the port is missing")),
        };
        Ok(Self { tls, host, port })
    }
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
                Command::Bench(BenchCommand::GrpcAppend(a)) => a.server,
                Command::Bench(BenchCommand::GrpcReplay(a)) => a.server,
                _ => panic!("not a gRPC bench"),
            };
            assert_eq!(server.authority(), "h:1");
            let err = Cli::try_parse_from(["annals", "bench", bench, "--server", "esdb://h:1"])
                .unwrap_err()
                .to_string();
            assert!(err.contains("\"esdb\" is not supported"), "{err}");
        }
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
