//! Map names. The eBPF crate declares each map under exactly this name and the server opens it by
//! the same constant, so a rename cannot silently split the two sides.

/// Array: ifindex -> [`crate::InterfaceConfig`] for ifindexes below
/// [`crate::MAX_DIRECT_IFINDEX`] (entries without `IFACE_PRESENT` are absent). An array lookup
/// is inlined by the verifier; a hash lookup was measured at ~40 ns/packet on the test VM.
pub const INTERFACES: &str = "INTERFACES";
/// Hash: ifindex (u32) -> [`crate::InterfaceConfig`] for the rare ifindexes at or above
/// [`crate::MAX_DIRECT_IFINDEX`] (a namespace's ifindex counter only grows, so a node with heavy
/// interface churn reaches them).
pub const INTERFACES_HIGH: &str = "INTERFACES_HIGH";
/// Per-CPU array: interface slot -> [`crate::InterfaceStats`].
pub const IFACE_STATS: &str = "IFACE_STATS";
/// Per-CPU array with one entry: [`crate::InterfaceStats`] for packets seen on an ifindex that has
/// no slot (a program still attached to an interface being removed, or test runs).
pub const UNKNOWN_IFACE_STATS: &str = "UNKNOWN_IFACE_STATS";
/// LPM trie: (VRF, prefix) as [`crate::RouteAddrV4`] -> [`crate::RouteValue`], every VRF without
/// an IPv4 flat table in one trie.
pub const ROUTES_V4: &str = "ROUTES_V4";
/// LPM trie: (VRF, prefix) as [`crate::RouteAddrV6`] -> [`crate::RouteValue`], every VRF in one
/// trie.
pub const ROUTES_V6: &str = "ROUTES_V6";
/// Array: VRF -> its IPv4 flat table's root block + 1 in [`FIB4_CHUNKS`] (0: the VRF's IPv4
/// lookups go to `ROUTES_V4`). See [`crate::route::fib4`].
pub const FIB4_VRFS: &str = "FIB4_VRFS";
/// Mmapable array: record slot -> [`crate::route::RouteRecord4`], one per IPv4 route (the
/// record a restart reads; the trie holds IPv4 routes only for VRFs without a flat table).
pub const ROUTE4_RECORDS: &str = "ROUTE4_RECORDS";
/// Mmapable array: chunk -> [`crate::route::fib4::Chunk`], the pool every VRF's IPv4 flat table
/// is built from. Sized when first created (`dataplane-server --fib4-chunks`).
pub const FIB4_CHUNKS: &str = "FIB4_CHUNKS";
/// Array: next-hop slot -> [`crate::NextHop`].
pub const NEXTHOPS: &str = "NEXTHOPS";
/// Per-CPU array: next-hop slot -> [`crate::NextHopStats`].
pub const NEXTHOP_STATS: &str = "NEXTHOP_STATS";
/// Devmap: interface slot -> ifindex, the redirect targets (forwarded frames and ICMP errors).
pub const TX_PORTS: &str = "TX_PORTS";

/// Array: `interface slot * 2 + direction` -> attachment word ([`crate::policy::attach_word`]).
pub const POLICY_ATTACH: &str = "POLICY_ATTACH";
/// Array: policy table -> [`crate::policy::PolicyTable`].
pub const POLICY_TABLE_HDRS: &str = "POLICY_TABLE_HDRS";
/// Array of u64: class records (summary words, then bitmap words) of every table.
pub const POLICY_WORDS: &str = "POLICY_WORDS";
/// LPM trie: (table, IPv4 source prefix) as [`crate::policy::PolicyAddrV4`] -> class record
/// offset.
pub const POLICY_V4_SRC: &str = "POLICY_V4_SRC";
/// LPM trie: (table, IPv4 destination prefix) -> class record offset.
pub const POLICY_V4_DST: &str = "POLICY_V4_DST";
/// LPM trie: (table, IPv6 source prefix) as [`crate::policy::PolicyAddrV6`] -> class record
/// offset.
pub const POLICY_V6_SRC: &str = "POLICY_V6_SRC";
/// LPM trie: (table, IPv6 destination prefix) -> class record offset.
pub const POLICY_V6_DST: &str = "POLICY_V6_DST";
/// LPM trie: (table, L4 field, value prefix) as [`crate::policy::PolicyL4`] -> class record offset.
pub const POLICY_L4: &str = "POLICY_L4";
/// Array: rule slot -> action (u32).
pub const POLICY_ACTIONS: &str = "POLICY_ACTIONS";
/// Per-CPU array: rule slot -> [`crate::policy::RuleStats`].
pub const POLICY_RULE_STATS: &str = "POLICY_RULE_STATS";

/// LRU hash: [`crate::flow::FlowKeyV4`] -> [`crate::flow::FlowValue`].
pub const FLOWS_V4: &str = "FLOWS_V4";
/// LRU hash: [`crate::flow::FlowKeyV6`] -> [`crate::flow::FlowValue`].
pub const FLOWS_V6: &str = "FLOWS_V6";
/// Array: interface slot -> [`crate::flow::FlowConfig`].
pub const FLOW_CONFIG: &str = "FLOW_CONFIG";
/// Per-CPU array: interface slot -> [`crate::flow::PuntBucket`].
pub const PUNT_BUCKETS: &str = "PUNT_BUCKETS";
/// Array of u64: the global words of [`crate::globals`] (HOLD accounting, the configuration
/// generation, the IPv4 route records' high-water mark). Its pinned name is still `FLOW_STATE`,
/// from when it held HOLD accounting only: renaming the pin would make a server restarting over
/// an earlier build's pins (or an earlier build started over these) lose the generation and the
/// records' mark, and with it every IPv4 route.
pub const GLOBALS: &str = "FLOW_STATE";
/// Per-CPU array with one u64: the CPU's request id counter.
pub const FLOW_SEQ: &str = "FLOW_SEQ";
/// Ring buffer of [`crate::flow::FlowMissEvent`]s: flow misses and PUNT rule matches.
pub const FLOW_MISSES: &str = "FLOW_MISSES";

/// Array with one [`crate::flow::HoldSweep`]: the server's list for `dp_sweep_holds`. Its
/// own per process: never pinned (not in [`ALL`]).
pub const HOLD_SWEEP: &str = "HOLD_SWEEP";

/// Program array with [`BENCH_TARGET_SLOTS`] entries: what the benchmark harness program tail-calls.
/// Benchmark-only: never written, pinned or read by the server.
pub const BENCH_TARGETS: &str = "BENCH_TARGETS";
/// Array with one [`crate::BenchFrame`]: the header bytes the benchmark harness restores before
/// every repetition. Benchmark-only.
pub const BENCH_FRAME: &str = "BENCH_FRAME";
/// Benchmark only: a plain IPv4 LPM trie, never pinned.
pub const BENCH_LPM_V4: &str = "BENCH_LPM_V4";
/// Entries of [`BENCH_TARGETS`].
pub const BENCH_TARGET_SLOTS: u32 = 4;

/// Every map of the forwarding programs, for status reporting and pin management (the benchmark
/// maps are not among them).
pub const ALL: &[&str] = &[
    INTERFACES,
    INTERFACES_HIGH,
    IFACE_STATS,
    UNKNOWN_IFACE_STATS,
    ROUTES_V4,
    ROUTES_V6,
    FIB4_VRFS,
    FIB4_CHUNKS,
    ROUTE4_RECORDS,
    NEXTHOPS,
    NEXTHOP_STATS,
    TX_PORTS,
    POLICY_ATTACH,
    POLICY_TABLE_HDRS,
    POLICY_WORDS,
    POLICY_V4_SRC,
    POLICY_V4_DST,
    POLICY_V6_SRC,
    POLICY_V6_DST,
    POLICY_L4,
    POLICY_ACTIONS,
    POLICY_RULE_STATS,
    FLOWS_V4,
    FLOWS_V6,
    FLOW_CONFIG,
    PUNT_BUCKETS,
    GLOBALS,
    FLOW_SEQ,
    FLOW_MISSES,
];
