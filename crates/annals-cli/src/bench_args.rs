//! The command line of `annals bench …`: each bench's arguments, and the server address the
//! network benches take.

use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, Subcommand, ValueEnum};

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
    /// What the admin UI's live overview costs the server: starts `annals serve` with many
    /// projections, loads it with gRPC appends at a fixed rate, and compares its CPU without and
    /// with open overview pages; and times one status snapshot in this process.
    Ui(BenchUiArgs),
    /// Live subscribers on `$all` (server-sent events) against the same gRPC writers without
    /// them: appends a second in both, and the server's CPU per event delivered.
    Fanout(BenchFanoutArgs),
    /// Idle established HTTP/2 connections against a running server: its resident memory,
    /// threads and open files before and with them.
    Connections(BenchConnectionsArgs),
}

#[derive(Debug, Args)]
pub struct BenchUiArgs {
    /// Concurrent writers, each appending one event at a time over gRPC to a stream of its own.
    #[arg(long, default_value_t = 64)]
    pub clients: u32,
    /// Appends per second of all writers together, the same in both phases.
    #[arg(long, default_value_t = 1_000)]
    pub rate: u64,
    /// Seconds of load in each phase of a round.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Projections the server runs: declarative SQLite ones on categories c0, c1, ...
    #[arg(long, default_value_t = 100)]
    pub projections: u32,
    /// Open overview pages (each `GET /` once, then `GET /status/live` held) in the phase with
    /// the UI.
    #[arg(long, default_value_t = 1)]
    pub feeds: u32,
    /// Rounds of the two phases, their order alternating.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// End with one JSON line of the figures.
    #[arg(long)]
    pub json: bool,
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

/// How the subscribers of `bench fanout` follow `$all`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FanoutViaArg {
    /// Server-sent events (`GET /all/live`), one HTTP/1.1 connection each.
    Sse,
    /// A gRPC subscription (`Streams.Read`), one HTTP/2 connection each.
    Grpc,
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
    /// The store directory of the embedded store (created if missing).
    #[arg(long, required_unless_present = "store")]
    pub data: Option<PathBuf>,
    /// Instead of the embedded store: a Postgres server (`postgres://USER@HOST:PORT/DB`) on
    /// which Annals on Postgres runs against the usual one-transaction-per-append design, each
    /// in a database the bench creates and drops.
    #[arg(long, conflicts_with = "data")]
    pub store: Option<String>,
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
    /// Engine and baseline alternate this many times, since the disk's fsync speed drifts (with
    /// `--store`, each round in fresh databases).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// End with one JSON line of the figures.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchReplayArgs {
    #[arg(long, required_unless_present = "store")]
    pub data: Option<PathBuf>,
    /// Instead of the embedded store: a Postgres server (`postgres://USER@HOST:PORT/DB`); a
    /// node catching up with a store there (filled first, in a database the bench creates and
    /// drops) against reading the same pages only.
    #[arg(long, conflicts_with = "data")]
    pub store: Option<String>,
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
    #[arg(long, required_unless_present = "auth", conflicts_with = "auth")]
    pub server: Option<ServerAddr>,
    /// Instead of loading a running server: start two (`annals serve` without auth, and with
    /// --auth over TLS with a certificate made for the run) and report the server CPU per
    /// append on each, with the official client (needs the kurrentdb-client feature).
    #[arg(long)]
    pub auth: bool,
    /// With --auth: appends per second of all clients together on each side (both at the same
    /// rate, so their group commits are alike); 0: as fast as each goes.
    #[arg(long, default_value_t = 0, requires = "auth")]
    pub rate: u64,
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

#[derive(Debug, Args)]
pub struct BenchFanoutArgs {
    /// The running server (cleartext): HOST:PORT or http://HOST:PORT.
    #[arg(long)]
    pub server: ServerAddr,
    /// Live subscribers on `$all` in the second phase.
    #[arg(long, default_value_t = 100)]
    pub subscribers: u32,
    /// How the subscribers follow `$all`.
    #[arg(long, value_enum, default_value_t = FanoutViaArg::Sse)]
    pub via: FanoutViaArg,
    /// Concurrent writers, each appending one event at a time over gRPC.
    #[arg(long, default_value_t = 16)]
    pub writers: u32,
    /// Events appended in each phase.
    #[arg(long, default_value_t = 20_000)]
    pub events: u64,
    /// End with one JSON line of the figures.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct BenchConnectionsArgs {
    /// The running server (cleartext): HOST:PORT or http://HOST:PORT.
    #[arg(long)]
    pub server: ServerAddr,
    /// Idle connections to open and hold (the server's --connections-max must allow them, and
    /// the bench's own metric reads).
    #[arg(long, default_value_t = 10_000)]
    pub connections: u32,
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
