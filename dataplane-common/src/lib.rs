//! Types and names shared by the kernel programs (`dataplane-ebpf`) and the server.
//!
//! Everything here is `#[repr(C)]` plain data with explicit padding so that the byte layout seen
//! by the BPF programs and by userspace is identical; the `user` feature adds `aya::Pod`.
#![no_std]

pub mod flow;
pub mod globals;
pub mod maps;
pub mod policy;
pub mod reason;
pub mod rng;
pub mod route;
pub mod stats;

pub use reason::Reason;
pub use route::{InterfaceConfig, NextHop, NextHopStats, RouteAddrV4, RouteAddrV6, RouteRecord4, RouteValue};
pub use stats::InterfaceStats;

/// Number of interface slots; slots are ids the server assigns (free list), indexing array maps.
pub const MAX_INTERFACES: u32 = 1024;
/// Ifindexes below this are looked up in the `INTERFACES` array, others in `INTERFACES_HIGH`.
pub const MAX_DIRECT_IFINDEX: u32 = 65536;
/// Capacity of `INTERFACES_HIGH`.
pub const MAX_HIGH_IFINDEXES: u32 = MAX_INTERFACES;
/// Number of next-hop slots.
pub const MAX_NEXTHOPS: u32 = 65536;
/// Capacity of each route trie (all VRFs together) and of `ROUTE4_RECORDS`.
pub const MAX_ROUTES: u32 = 2_000_000;
/// Bytes of a frame the benchmark harness restores before each repetition: Ethernet + IPv6 +
/// the first 10 bytes of L4, more than any forwarding rewrite touches.
pub const BENCH_FRAME_LEN: usize = 64;

/// Value of the benchmark-only `BENCH_FRAME` map.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BenchFrame {
    pub bytes: [u8; BENCH_FRAME_LEN],
}

/// VRF ids are below this.
pub const MAX_VRFS: u32 = 65536;

/// Program names as they appear in the object file (the `#[xdp]`/`#[classifier]` function names).
pub mod programs {
    /// XDP ingress program attached to every interface the dataplane owns.
    pub const XDP_INGRESS: &str = "dp_xdp_ingress";
    /// TC (TCX) egress program attached to every interface the dataplane owns.
    pub const TC_EGRESS: &str = "dp_tc_egress";
    /// Removes the HOLDs listed in `HOLD_SWEEP` that are still what the list says (a run of
    /// BPF_PROG_TEST_RUN for up to `flow::SWEEP_MAX` of them, rather than two bpf(2) calls
    /// each); never attached. Writes how many it removed (u32, native order) over the first
    /// bytes of the frame it runs on.
    pub const SWEEP_HOLDS: &str = "dp_sweep_holds";
    /// Benchmark baseline: returns XDP_PASS and nothing else.
    pub const BENCH_PASS: &str = "dp_bench_pass";
    /// Benchmark baseline: swaps the Ethernet addresses and redirects through `TX_PORTS` slot 0,
    /// the least a forwarding XDP program can do (the kernel's `xdp_redirect_map` sample).
    pub const BENCH_REDIRECT: &str = "dp_bench_redirect";
    /// Benchmark harness: restores the frame's first [`crate::BENCH_FRAME_LEN`] bytes from
    /// `BENCH_FRAME`, then tail-calls `BENCH_TARGETS[0]`, so that a repeated BPF_PROG_TEST_RUN
    /// (which hands the program the same, already rewritten, buffer every time) measures the same
    /// path on every repetition.
    pub const BENCH_HARNESS: &str = "dp_bench_harness";
    /// Benchmark: the route stage's IPv4 lookup alone (VRF 0: its flat table, or `ROUTES_V4`
    /// where it has none) of the frame's destination; XDP_PASS on a hit, XDP_DROP on a miss.
    pub const BENCH_ROUTE_V4: &str = "dp_bench_route_v4";
    /// Benchmark: the same destination in `ROUTES_V4` (VRF [`BENCH_TRIE_VRF`] key), the trie a
    /// VRF without a flat table is looked up in.
    pub const BENCH_TRIE_V4: &str = "dp_bench_trie_v4";
    /// The VRF key the benchmark's own `ROUTES_V4` entries use (never a VRF of the domain's).
    pub const BENCH_TRIE_VRF: u32 = crate::MAX_VRFS - 1;
    /// Benchmark baseline: the same destination in a plain kernel LPM trie (`BENCH_LPM_V4`).
    pub const BENCH_LPM_V4: &str = "dp_bench_lpm_v4";
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
    unsafe impl aya::Pod for super::RouteRecord4 {}
    unsafe impl aya::Pod for super::NextHop {}
    unsafe impl aya::Pod for super::NextHopStats {}
    unsafe impl aya::Pod for super::BenchFrame {}
    unsafe impl aya::Pod for super::policy::PolicyTable {}
    unsafe impl aya::Pod for super::policy::PolicyAddrV4 {}
    unsafe impl aya::Pod for super::policy::PolicyAddrV6 {}
    unsafe impl aya::Pod for super::policy::PolicyL4 {}
    unsafe impl aya::Pod for super::policy::RuleStats {}
    unsafe impl aya::Pod for super::flow::FlowKeyV4 {}
    unsafe impl aya::Pod for super::flow::FlowKeyV6 {}
    unsafe impl aya::Pod for super::flow::FlowValue {}
    unsafe impl aya::Pod for super::flow::FlowConfig {}
    unsafe impl aya::Pod for super::flow::PuntBucket {}
    unsafe impl aya::Pod for super::flow::HoldRef {}
    unsafe impl aya::Pod for super::flow::HoldSweep {}
}

// The layouts above have no implicit padding; these sizes are what both sides agree on.
const _: () = {
    assert!(core::mem::size_of::<InterfaceConfig>() == 48);
    assert!(core::mem::size_of::<NextHop>() == 96);
    assert!(core::mem::size_of::<RouteAddrV4>() == 8);
    assert!(core::mem::size_of::<RouteAddrV6>() == 20);
    assert!(core::mem::size_of::<RouteValue>() == 8);
    assert!(core::mem::size_of::<RouteRecord4>() == 16);
    assert!(core::mem::size_of::<InterfaceStats>() == 32 + 8 * reason::REASON_SLOTS);
};
