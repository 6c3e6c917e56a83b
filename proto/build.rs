//! Compiles proto/dataplane/v1/*.proto with protox (pure Rust: no protoc needed at build time)
//! and writes the descriptor set that the server's reflection service serves.

use std::{env, fs, path::PathBuf};

use prost::Message as _;

fn main() -> anyhow::Result<()> {
    let protos = [
        "proto/dataplane/v1/common.proto",
        "proto/dataplane/v1/controller.proto",
        "proto/dataplane/v1/events.proto",
        "proto/dataplane/v1/flows.proto",
        "proto/dataplane/v1/interfaces.proto",
        "proto/dataplane/v1/policy.proto",
        "proto/dataplane/v1/routing.proto",
        "proto/dataplane/v1/system.proto",
        "proto/dataplane/v1/telemetry.proto",
        "proto/google/rpc/status.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("dataplane_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Frames as `bytes::Bytes`: one captured frame is shared by every session sending it,
        // and a packet-out's frame is not copied out of the request.
        .bytes(".dataplane.v1.FlowMiss.packet")
        .bytes(".dataplane.v1.PacketIn.frame")
        .bytes(".dataplane.v1.PacketOut.frame")
        .compile_fds(fds)?;
    Ok(())
}
