//! `annals bench`: the parsed options of each bench turned into its `annals_bench` settings, and
//! run. The benches themselves live in `annals-bench`; `in_process` is the server
//! `bench persistent --data` runs beside its clients, `auth` the two servers
//! `bench grpc-append --auth` compares, `ui` the server `bench ui` loads and its in-process
//! measure of a status snapshot.

mod auth;
mod child;
mod in_process;
mod ui;

use std::process::ExitCode;

use annals_bench::{
    AppendConfig, Bench, ConnectionsConfig, FanoutConfig, FanoutVia, FillConfig, GrpcAppendConfig,
    GrpcAppendRpc, GrpcClient, GrpcReplayConfig, GrpcServer, PersistentConfig, PgAppendConfig,
    PgReplayConfig, ProjectConfig, ProjectTarget, ReadStreamConfig, RelayConfig, ReplayConfig,
};

use crate::args::{
    BenchCommand, FanoutViaArg, GrpcAppendRpcArg, GrpcClientArg, ProjectTargetArg, ServerAddr,
};

pub(crate) fn run(command: BenchCommand) -> anyhow::Result<ExitCode> {
    // `bench persistent --data DIR` loads a server of its own, run in this process.
    if let BenchCommand::Persistent(a) = &command
        && let Some(data) = &a.data
    {
        let server = in_process::Server::start(data)?;
        let mut config = persistent_config(a);
        config.server = GrpcServer {
            authority: server.addr.to_string(),
            ..GrpcServer::default()
        };
        let ran = annals_bench::run(&Bench::Persistent(config));
        server.stop()?;
        ran?;
        return Ok(ExitCode::SUCCESS);
    }
    // `bench grpc-append --auth` starts the two servers it compares.
    if let BenchCommand::GrpcAppend(a) = &command
        && a.auth
    {
        auth::run(a)?;
        return Ok(ExitCode::SUCCESS);
    }
    // `bench ui` starts the server it loads.
    if let BenchCommand::Ui(a) = &command {
        ui::run(a)?;
        return Ok(ExitCode::SUCCESS);
    }
    // The benches that hold many connections raise their own open-file limit.
    match &command {
        BenchCommand::Connections(a) => crate::serve::raise_fd_limit(a.connections as usize),
        BenchCommand::GrpcAppend(a) => crate::serve::raise_fd_limit(a.clients as usize),
        _ => {}
    }
    annals_bench::run(&bench(command)?)?;
    Ok(ExitCode::SUCCESS)
}

fn persistent_config(a: &crate::args::BenchPersistentArgs) -> PersistentConfig {
    PersistentConfig {
        server: a
            .server
            .as_ref()
            .map_or_else(GrpcServer::default, grpc_server),
        consumers: a.consumers,
        events: a.events,
        rounds: a.rounds,
        buffer: a.buffer,
        rate: a.rate,
        live_events: a.live_events,
        json: a.json,
    }
}

/// The bench `command` asks for, with its settings (`bench ui` aside: `run` starts its server).
fn bench(command: BenchCommand) -> anyhow::Result<Bench> {
    Ok(match command {
        BenchCommand::Append(a) => match (a.store, a.data) {
            (Some(url), _) => Bench::PgAppend(PgAppendConfig {
                url,
                writers: a.writers,
                events: a.events,
                rounds: a.rounds,
                json: a.json,
            }),
            (None, Some(data)) => Bench::Append(AppendConfig {
                data,
                writers: a.writers,
                events: a.events,
                batch: a.batch,
                streams: a.streams,
                rounds: a.rounds,
                json: a.json,
            }),
            (None, None) => anyhow::bail!("bench append needs --data DIR or --store URL"),
        },
        BenchCommand::Replay(a) => match (a.store, a.data) {
            (Some(url), _) => Bench::PgReplay(PgReplayConfig {
                url,
                events: a.events,
                rounds: a.rounds,
                json: a.json,
            }),
            (None, Some(data)) => Bench::Replay(ReplayConfig {
                data,
                events: a.events,
                rounds: a.rounds,
                json: a.json,
            }),
            (None, None) => anyhow::bail!("bench replay needs --data DIR or --store URL"),
        },
        BenchCommand::ReadStream(a) => Bench::ReadStream(ReadStreamConfig {
            data: a.data,
            streams: a.streams,
            reads: a.reads,
            json: a.json,
        }),
        BenchCommand::Fill(a) => Bench::Fill(FillConfig {
            data: a.data,
            events: a.events,
            streams: a.streams,
            batch: a.batch,
        }),
        BenchCommand::GrpcAppend(a) => Bench::GrpcAppend(GrpcAppendConfig {
            server: a.server.as_ref().map(grpc_server).unwrap_or_default(),
            clients: a.clients,
            connections: a.connections,
            client: grpc_client(a.client),
            rpc: match a.rpc {
                GrpcAppendRpcArg::Append => GrpcAppendRpc::Append,
                GrpcAppendRpcArg::BatchAppend => GrpcAppendRpc::BatchAppend,
            },
            events: a.events,
            rounds: a.rounds,
            baseline_dir: a.baseline_dir,
            json: a.json,
        }),
        BenchCommand::GrpcReplay(a) => Bench::GrpcReplay(GrpcReplayConfig {
            server: grpc_server(&a.server),
            client: grpc_client(a.client),
            events: a.events,
            rounds: a.rounds,
            baseline_dir: a.baseline_dir,
            json: a.json,
        }),
        BenchCommand::Persistent(a) => Bench::Persistent(persistent_config(&a)),
        BenchCommand::Relay(a) => Bench::Relay(RelayConfig {
            nats: a.nats,
            data: a.data,
            events: a.events,
            streams: a.streams,
            concurrency: a.concurrency,
            order: a.order,
            rate: a.rate,
            live_events: a.live_events,
            json: a.json,
        }),
        BenchCommand::Project(a) => Bench::Project(ProjectConfig {
            target: match a.target {
                ProjectTargetArg::Sqlite => ProjectTarget::Sqlite,
                ProjectTargetArg::Postgres => ProjectTarget::Postgres,
            },
            target_url: a.target_url,
            data: a.data,
            events: a.events,
            partitions: a.partitions,
            live_appends: a.live_appends,
            json: a.json,
        }),
        BenchCommand::Ui(_) => anyhow::bail!("bench ui starts a server of its own"),
        BenchCommand::Connections(a) => Bench::Connections(ConnectionsConfig {
            server: grpc_server(&a.server),
            connections: a.connections,
            json: a.json,
        }),
        BenchCommand::Fanout(a) => Bench::Fanout(FanoutConfig {
            server: grpc_server(&a.server),
            subscribers: a.subscribers,
            via: match a.via {
                FanoutViaArg::Sse => FanoutVia::Sse,
                FanoutViaArg::Grpc => FanoutVia::Grpc,
            },
            writers: a.writers,
            events: a.events,
            json: a.json,
        }),
    })
}

fn grpc_server(addr: &ServerAddr) -> GrpcServer {
    GrpcServer {
        authority: addr.authority(),
        tls: addr.tls(),
        ..GrpcServer::default()
    }
}

fn grpc_client(client: GrpcClientArg) -> GrpcClient {
    match client {
        GrpcClientArg::Annals => GrpcClient::Annals,
        GrpcClientArg::Kurrentdb => GrpcClient::Kurrentdb,
    }
}
