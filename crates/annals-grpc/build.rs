//! Compiles the KurrentDB client protocol's `.proto` files into server and client Rust code, with the
//! vendored `protoc` so no system install is needed.

use std::path::PathBuf;

const PROTOS: [&str; 6] = [
    "proto/shared.proto",
    "proto/status.proto",
    "proto/streams.proto",
    "proto/serverfeatures.proto",
    "proto/gossip.proto",
    "proto/persistent.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    config.bytes(["."]);
    let includes = [PathBuf::from("proto"), protoc_bin_vendored::include_path()?];
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .compile_with_config(config, &PROTOS.map(PathBuf::from), &includes)?;
    Ok(())
}
