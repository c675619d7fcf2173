//! Annals's load generator: measurements of the engine, its gRPC protocol and its projections,
//! each beside a baseline of the same machine taken in the same run (the disk's fsync speed drifts
//! by 10x within minutes, so a figure without its own baseline says little).
//!
//! [`run`] runs one [`Bench`], described by a plain config struct; the `annals bench` command
//! parses its options into one. Latencies go into HDR histograms; progress is logged through
//! `tracing` (target `annals_bench`); the figures go to stdout, as pretty JSON or, with `json`
//! set, as exactly one JSON line at the end.
//!
//! [`client`] is the lean gRPC client the gRPC benches load a server with. The official Rust
//! `kurrentdb` client (`GrpcClient::Kurrentdb`) is compiled in only with the `kurrentdb-client`
//! feature; without it, asking for it is [`BenchError::OfficialClientNotBuilt`].

mod append;
pub mod client;
mod connections;
mod error;
mod fanout;
mod grpc;
mod grpc_append;
mod grpc_auth;
mod grpc_replay;
mod measure;
#[cfg_attr(feature = "kurrentdb-client", path = "official.rs")]
#[cfg_attr(not(feature = "kurrentdb-client"), path = "official_absent.rs")]
mod official;
/// The stand-in for the official client, compiled and tested in builds that have the real one
/// too (the gate's), so the default build's code cannot rot unseen.
#[cfg(all(test, feature = "kurrentdb-client"))]
#[expect(
    dead_code,
    reason = "only `Client::new` is called: the rest exists to match the real client's names"
)]
#[path = "official_absent.rs"]
mod official_absent;
mod persistent;
mod pg_append;
mod pg_replay;
mod probe;
mod project;
mod read_stream;
mod relay;
mod replay;
mod report;
mod server_cpu;
mod status_feed;
mod store;
mod ui;
mod workload;

pub use append::AppendConfig;
pub use connections::ConnectionsConfig;
pub use error::BenchError;
pub use fanout::{FanoutConfig, FanoutVia};
pub use grpc::{GrpcClient, GrpcServer};
pub use grpc_append::{GrpcAppendConfig, GrpcAppendRpc};
pub use grpc_auth::{GrpcAuthConfig, process_cpu_ns, thread_cpu_ns};
pub use grpc_replay::GrpcReplayConfig;
pub use persistent::PersistentConfig;
pub use pg_append::PgAppendConfig;
pub use pg_replay::PgReplayConfig;
pub use project::{ProjectConfig, ProjectTarget};
pub use read_stream::ReadStreamConfig;
pub use relay::RelayConfig;
pub use replay::{FillConfig, ReplayConfig};
pub use ui::UiConfig;

/// One benchmark and its settings.
#[derive(Clone, Debug)]
pub enum Bench {
    /// Concurrent durable appends against a plain write+fdatasync loop of the same batches.
    Append(AppendConfig),
    /// Reading all of `$all` against a plain sequential read of the segment files.
    Replay(ReplayConfig),
    /// Random whole 100-event stream reads.
    ReadStream(ReadStreamConfig),
    /// Filling a store with events quickly (no fsync), up to a total; what `Replay` runs first.
    Fill(FillConfig),
    /// Concurrent single-event appends over gRPC to a running server, against the same workload
    /// in-process on a temporary store.
    GrpcAppend(GrpcAppendConfig),
    /// The server CPU per gRPC append with `--auth` over TLS against without, two running
    /// servers in the same run.
    GrpcAuth(Box<GrpcAuthConfig>),
    /// Reading `$all` over gRPC from a running server, against an in-process read of as many
    /// events from a temporary store.
    GrpcReplay(GrpcReplayConfig),
    /// Rebuilding a declarative projection into SQLite or Postgres view rows, against the same
    /// database's bulk insert of the same rows; then live append-to-row latency.
    Project(ProjectConfig),
    /// Several consumers of one persistent-subscription group taking and acking a stream over
    /// gRPC, against a catch-up subscription reading it; then live append-to-delivery latency.
    Persistent(PersistentConfig),
    /// A relay forwarding a store to NATS JetStream, against a plain publishing loop of the
    /// same messages; then live append-to-broker latency.
    Relay(RelayConfig),
    /// The server CPU the admin UI's live overview costs: a running server under gRPC appends
    /// at a fixed rate, without and with open overview pages, in the same run.
    Ui(Box<UiConfig>),
    /// Live subscribers on `$all` (over server-sent events or gRPC) against the same writers
    /// without them: appends a second in both, and the server's CPU per event delivered.
    Fanout(FanoutConfig),
    /// Idle established connections against a running server: what they cost it.
    Connections(ConnectionsConfig),
    /// Annals on PostgreSQL against a one-transaction-per-append `bigserial` store on the same
    /// server: appends a second, and the positions a reader following each found late.
    PgAppend(PgAppendConfig),
    /// A node catching up with a store in PostgreSQL, against reading it only.
    PgReplay(PgReplayConfig),
}

/// Runs `bench` and prints its figures on stdout.
pub fn run(bench: &Bench) -> Result<(), BenchError> {
    match bench {
        Bench::Append(c) => append::run(c),
        Bench::Replay(c) => replay::run(c),
        Bench::ReadStream(c) => read_stream::run(c),
        Bench::Fill(c) => replay::fill(c),
        Bench::GrpcAppend(c) => grpc_append::run(c),
        Bench::GrpcAuth(c) => grpc_auth::run(c),
        Bench::GrpcReplay(c) => grpc_replay::run(c),
        Bench::Project(c) => project::run(c),
        Bench::Persistent(c) => persistent::run(c),
        Bench::Relay(c) => relay::run(c),
        Bench::Ui(c) => ui::run(c),
        Bench::Fanout(c) => fanout::run(c),
        Bench::Connections(c) => connections::run(c),
        Bench::PgAppend(c) => pg_append::run(c),
        Bench::PgReplay(c) => pg_replay::run(c),
    }
}

#[cfg(test)]
mod tests {
    /// Without the official client, asking for it is a clear error, not a missing symbol.
    #[cfg(feature = "kurrentdb-client")]
    #[test]
    fn the_stand_in_refuses_to_make_a_client() {
        use crate::official_absent::Client;
        let server = crate::GrpcServer {
            authority: "127.0.0.1:2113".to_owned(),
            ..crate::GrpcServer::default()
        };
        let e = Client::new(&server).unwrap_err();
        assert!(
            matches!(e, crate::BenchError::OfficialClientNotBuilt),
            "{e}"
        );
        assert!(e.to_string().contains("kurrentdb-client"), "{e}");
    }
}
