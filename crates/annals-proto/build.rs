//! Compiles the KurrentDB client protocol's `.proto` files into Rust, with the vendored `protoc`
//! so no system install is needed. Messages always; server stubs with the `server` feature and
//! client stubs with the `client` feature, so a crate compiles only the side it uses.

use std::path::PathBuf;

const PROTOS: [&str; 7] = [
    "proto/shared.proto",
    "proto/status.proto",
    "proto/streams.proto",
    "proto/serverfeatures.proto",
    "proto/gossip.proto",
    "proto/persistent.proto",
    "proto/users.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    // Cargo tells a build script which features are on through these variables.
    let client = std::env::var_os("CARGO_FEATURE_CLIENT").is_some();
    let server = std::env::var_os("CARGO_FEATURE_SERVER").is_some();
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    config.bytes(["."]);
    let includes = [PathBuf::from("proto"), protoc_bin_vendored::include_path()?];
    tonic_prost_build::configure()
        .build_client(client)
        .build_server(server)
        .build_transport(false)
        .compile_with_config(config, &PROTOS.map(PathBuf::from), &includes)?;
    Ok(())
}
