//! Whole-program tests of the `annals` binary, in one test binary so it builds once: command
//! round trips, serve's signal handling (SIGTERM during HTTP appends loses no acknowledged one),
//! serving over TLS, a real-process crash test (SIGKILL during concurrent durable appends, then
//! every acknowledged append must be found), and that each bench prints its JSON figures,
//! including the gRPC benches against a real server; a persistent-subscription group across a
//! SIGKILL.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions fail the test by panicking"
)]

mod auth;
mod bench;
mod browser;
mod clients;
mod connections;
mod crash;
mod cross_site;
mod disk_full;
mod grpc_bench;
mod import;
mod persistent;
mod postgres;
mod postgres_nodes;
mod projections;
mod relays;
mod roundtrip;
mod serve;
mod shutdown;
mod support;
mod tls;
mod ui;
