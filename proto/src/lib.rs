//! Generated code for the `dataplane.v1` gRPC API, shared by the server and every Rust client.

/// `dataplane.v1`: messages, clients (`*_client`) and servers (`*_server`).
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("dataplane.v1");
}

/// `google.rpc.Status`: the rich error model whose details carry a failed batch's
/// [`v1::BatchStatus`].
pub mod rpc {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("google.rpc");
}

/// Encoded `FileDescriptorSet` of every dataplane proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/dataplane_descriptor.bin"));
