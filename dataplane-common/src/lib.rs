//! Types and names shared by the kernel programs (`dataplane-ebpf`) and the server.
//!
//! Everything here is `#[repr(C)]` plain data with explicit padding so that the byte layout seen
//! by the BPF programs and by userspace is identical; the `user` feature adds `aya::Pod`.
#![no_std]

pub mod maps;
pub mod reason;
pub mod route;
pub mod stats;

pub use reason::Reason;
pub use route::{InterfaceConfig, NextHop, NextHopStats, RouteAddrV4, RouteAddrV6, RouteValue};
pub use stats::InterfaceStats;

/// Number of interface slots; slots are ids the server assigns (free list), indexing array maps.
pub const MAX_INTERFACES: u32 = 1024;
/// Number of next-hop slots.
pub const MAX_NEXTHOPS: u32 = 65536;
/// Capacity of each LPM trie (all VRFs together).
pub const MAX_ROUTES: u32 = 2_000_000;
/// VRF ids are below this.
pub const MAX_VRFS: u32 = 65536;

/// Program names as they appear in the object file (the `#[xdp]`/`#[classifier]` function names).
pub mod programs {
    /// XDP ingress program attached to every interface the dataplane owns.
    pub const XDP_INGRESS: &str = "dp_xdp_ingress";
    /// TC (TCX) egress program attached to every interface the dataplane owns.
    pub const TC_EGRESS: &str = "dp_tc_egress";
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type is repr(C), contains only integers and byte arrays, and has no implicit
    // padding (explicit `_pad`/`_reserved` fields where alignment would add some).
    unsafe impl aya::Pod for super::InterfaceStats {}
    unsafe impl aya::Pod for super::InterfaceConfig {}
    unsafe impl aya::Pod for super::RouteAddrV4 {}
    unsafe impl aya::Pod for super::RouteAddrV6 {}
    unsafe impl aya::Pod for super::RouteValue {}
    unsafe impl aya::Pod for super::NextHop {}
    unsafe impl aya::Pod for super::NextHopStats {}
}

// The layouts above have no implicit padding; these sizes are what both sides agree on.
const _: () = {
    assert!(core::mem::size_of::<InterfaceConfig>() == 44);
    assert!(core::mem::size_of::<NextHop>() == 96);
    assert!(core::mem::size_of::<RouteAddrV4>() == 8);
    assert!(core::mem::size_of::<RouteAddrV6>() == 20);
    assert!(core::mem::size_of::<RouteValue>() == 8);
    assert!(core::mem::size_of::<InterfaceStats>() == 32 + 8 * reason::REASON_SLOTS);
};
