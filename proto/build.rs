//! Compiles proto/dataplane/v1/*.proto with protox (pure Rust: no protoc needed at build time)
//! and writes the descriptor set that the server's reflection service serves.

use std::{env, fs, path::PathBuf};

use prost::Message as _;

fn main() -> anyhow::Result<()> {
    let protos = [
        "proto/dataplane/v1/common.proto",
        "proto/dataplane/v1/events.proto",
        "proto/dataplane/v1/flows.proto",
        "proto/dataplane/v1/interfaces.proto",
        "proto/dataplane/v1/policy.proto",
        "proto/dataplane/v1/routing.proto",
        "proto/dataplane/v1/system.proto",
        "proto/google/rpc/status.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("dataplane_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().build_server(true).build_client(true).compile_fds(fds)?;
    Ok(())
}
