//! Generates the `flotilla.fleet.v1` messages, servers and clients with tonic-prost-build from
//! descriptors compiled by protox (pure Rust; no `protoc`), and writes the descriptor set that
//! gRPC reflection serves.

use std::path::PathBuf;

use protox::prost::Message as _;

const PROTOS: [&str; 4] = [
    "fleet/v1/inventory.proto",
    "fleet/v1/steps.proto",
    "fleet/v1/agent.proto",
    "fleet/v1/fleet.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("fleet_v1_descriptor.bin");
    // With imports (the well-known types), so reflection clients can resolve every type.
    let fds = protox::compile(PROTOS, ["proto"])?;
    // `compile_fds` skips protoc, so prost-build would not write the set; write it here.
    std::fs::write(&descriptor_path, fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // The `AgentGateway.Connect` rpc would clash with the transport-generated
        // `AgentGatewayClient::connect(dst)`; clients are built with `new(channel)` instead.
        .build_transport(false)
        .file_descriptor_set_path(&descriptor_path)
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
