//! Types and names shared by the kernel programs (`dataplane-ebpf`) and the server.
//!
//! Everything here is `#[repr(C)]` plain data with explicit padding so that the byte layout seen
//! by the BPF programs and by userspace is identical; the `user` feature adds `aya::Pod`.
#![no_std]

pub mod maps;
pub mod reason;
pub mod stats;

pub use reason::Reason;
pub use stats::InterfaceStats;

/// Number of interface slots; slots are ids the server assigns (free list), indexing array maps.
pub const MAX_INTERFACES: u32 = 1024;

/// Program names as they appear in the object file (the `#[xdp]`/`#[classifier]` function names).
pub mod programs {
    /// XDP ingress program attached to every interface the dataplane owns.
    pub const XDP_INGRESS: &str = "dp_xdp_ingress";
    /// TC (TCX) egress program attached to every interface the dataplane owns.
    pub const TC_EGRESS: &str = "dp_tc_egress";
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: both types are repr(C), contain only integers and have no implicit padding.
    unsafe impl aya::Pod for super::InterfaceStats {}
}
