//! The dataplane server: owns the node's eBPF programs and maps and serves them over gRPC.
//!
//! Layers, each only calling the one below it:
//! - [`api`]: one file per gRPC service; decodes requests into domain types, calls the domain,
//!   encodes the answer. The only place that knows protobuf and gRPC status codes.
//! - [`domain`]: the only owner of state (interfaces, slots, generation); validation and id
//!   allocation; talks to the kernel only through the [`dataplane::Dataplane`] trait.
//! - [`dataplane`]: loads, attaches and pins the programs; typed map wrappers. The only code that
//!   touches `aya`.

pub mod api;
pub mod dataplane;
pub mod domain;
pub mod events;
pub mod metrics;
pub mod net;
