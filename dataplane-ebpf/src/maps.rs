//! Every map the programs use, declared once, under the names in `dataplane_common::maps`.
//! The server opens them by the same names; it writes configuration, the programs write counters.

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{Array, DevMap, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use dataplane_common::{
    flow::{FlowConfig, FlowKeyV4, FlowKeyV6, FlowValue, HoldSweep, PuntBucket, FLOW_RING_BYTES, MAX_FLOWS},
    maps::BENCH_TARGET_SLOTS,
    policy::{
        PolicyAddrV4, PolicyAddrV6, PolicyL4, PolicyTable, RuleStats, POLICY_LPM_ENTRIES, POLICY_POOL_WORDS,
        POLICY_RULE_SLOTS, POLICY_TABLES,
    },
    route::fib4,
    BenchFrame, InterfaceConfig, InterfaceStats, NextHop, NextHopStats, RouteAddrV4, RouteAddrV6, RouteRecord4,
    RouteValue, MAX_DIRECT_IFINDEX, MAX_HIGH_IFINDEXES, MAX_INTERFACES, MAX_NEXTHOPS, MAX_ROUTES, MAX_VRFS,
};

/// ifindex -> interface config (slot, VRF, MTU, MAC, addresses), ifindexes below
/// `MAX_DIRECT_IFINDEX`.
#[map(name = "INTERFACES")]
pub static INTERFACES: Array<InterfaceConfig> = Array::with_max_entries(MAX_DIRECT_IFINDEX, 0);

/// ifindex -> interface config for ifindexes at or above `MAX_DIRECT_IFINDEX`.
#[map(name = "INTERFACES_HIGH")]
pub static INTERFACES_HIGH: HashMap<u32, InterfaceConfig> = HashMap::with_max_entries(MAX_HIGH_IFINDEXES, 0);

/// Interface slot -> per-CPU counters (packets and bytes each way, and one per [`Reason`]).
///
/// [`Reason`]: dataplane_common::Reason
#[map(name = "IFACE_STATS")]
pub static IFACE_STATS: PerCpuArray<InterfaceStats> = PerCpuArray::with_max_entries(MAX_INTERFACES, 0);

/// Counters for packets whose ifindex has no slot.
#[map(name = "UNKNOWN_IFACE_STATS")]
pub static UNKNOWN_IFACE_STATS: PerCpuArray<InterfaceStats> = PerCpuArray::with_max_entries(1, 0);

/// (VRF, IPv4 prefix) -> route, for the VRFs without an IPv4 flat table.
#[map(name = "ROUTES_V4")]
pub static ROUTES_V4: LpmTrie<RouteAddrV4, RouteValue> = LpmTrie::with_max_entries(MAX_ROUTES, 0);

/// (VRF, IPv6 prefix) -> route.
#[map(name = "ROUTES_V6")]
pub static ROUTES_V6: LpmTrie<RouteAddrV6, RouteValue> = LpmTrie::with_max_entries(MAX_ROUTES, 0);

/// VRF -> root block + 1 of its IPv4 flat table in `FIB4_CHUNKS` (0: none, use `ROUTES_V4`).
#[map(name = "FIB4_VRFS")]
pub static FIB4_VRFS: Array<u32> = Array::with_max_entries(MAX_VRFS, 0);

/// The chunk pool of every VRF's IPv4 flat table (`route::fib4`). Mmapable: the server writes
/// entries with plain stores, not one syscall each. The server sizes it at creation.
#[map(name = "FIB4_CHUNKS")]
pub static FIB4_CHUNKS: Array<fib4::Chunk> = Array::with_max_entries(fib4::DEFAULT_CHUNKS, BPF_F_MMAPABLE);

/// Record slot -> IPv4 route, for the server alone (never read here): what a restart reads.
#[map(name = "ROUTE4_RECORDS")]
pub static ROUTE4_RECORDS: Array<RouteRecord4> = Array::with_max_entries(MAX_ROUTES, BPF_F_MMAPABLE);

/// Next-hop slot -> next hop.
#[map(name = "NEXTHOPS")]
pub static NEXTHOPS: Array<NextHop> = Array::with_max_entries(MAX_NEXTHOPS, 0);

/// Next-hop slot -> per-CPU counters of what left through it.
#[map(name = "NEXTHOP_STATS")]
pub static NEXTHOP_STATS: PerCpuArray<NextHopStats> = PerCpuArray::with_max_entries(MAX_NEXTHOPS, 0);

/// Interface slot -> ifindex, the redirect targets (forwarded frames and ICMP errors).
#[map(name = "TX_PORTS")]
pub static TX_PORTS: DevMap = DevMap::with_max_entries(MAX_INTERFACES, 0);

/// Benchmark only: what `dp_bench_harness` tail-calls (slot 0).
#[map(name = "BENCH_TARGETS")]
pub static BENCH_TARGETS: ProgramArray = ProgramArray::with_max_entries(BENCH_TARGET_SLOTS, 0);

/// Benchmark only: a plain IPv4 LPM trie (32-bit keys, no VRF), the baseline the route lookup
/// is measured against.
#[map(name = "BENCH_LPM_V4")]
pub static BENCH_LPM_V4: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(MAX_ROUTES, 0);

/// Benchmark only: the frame head `dp_bench_harness` restores before every repetition.
#[map(name = "BENCH_FRAME")]
pub static BENCH_FRAME: Array<BenchFrame> = Array::with_max_entries(1, 0);

/// `interface slot * 2 + direction` -> policy attachment word (0: none).
#[map(name = "POLICY_ATTACH")]
pub static POLICY_ATTACH: Array<u32> = Array::with_max_entries(MAX_INTERFACES * 2, 0);

/// Policy table -> header (sizes, rule base, protocol and TCP-flags classes).
#[map(name = "POLICY_TABLE_HDRS")]
pub static POLICY_TABLE_HDRS: Array<PolicyTable> = Array::with_max_entries(POLICY_TABLES, 0);

/// Class records of every policy table: summary words then bitmap words.
#[map(name = "POLICY_WORDS")]
pub static POLICY_WORDS: Array<u64> = Array::with_max_entries(POLICY_POOL_WORDS, 0);

/// (table, IPv4 source prefix) -> class record offset.
#[map(name = "POLICY_V4_SRC")]
pub static POLICY_V4_SRC: LpmTrie<PolicyAddrV4, u32> = LpmTrie::with_max_entries(POLICY_LPM_ENTRIES, 0);

/// (table, IPv4 destination prefix) -> class record offset.
#[map(name = "POLICY_V4_DST")]
pub static POLICY_V4_DST: LpmTrie<PolicyAddrV4, u32> = LpmTrie::with_max_entries(POLICY_LPM_ENTRIES, 0);

/// (table, IPv6 source prefix) -> class record offset.
#[map(name = "POLICY_V6_SRC")]
pub static POLICY_V6_SRC: LpmTrie<PolicyAddrV6, u32> = LpmTrie::with_max_entries(POLICY_LPM_ENTRIES, 0);

/// (table, IPv6 destination prefix) -> class record offset.
#[map(name = "POLICY_V6_DST")]
pub static POLICY_V6_DST: LpmTrie<PolicyAddrV6, u32> = LpmTrie::with_max_entries(POLICY_LPM_ENTRIES, 0);

/// (table, L4 field, value prefix) -> class record offset.
#[map(name = "POLICY_L4")]
pub static POLICY_L4: LpmTrie<PolicyL4, u32> = LpmTrie::with_max_entries(POLICY_LPM_ENTRIES, 0);

/// Rule slot -> action.
#[map(name = "POLICY_ACTIONS")]
pub static POLICY_ACTIONS: Array<u32> = Array::with_max_entries(POLICY_RULE_SLOTS, 0);

/// Rule slot -> per-CPU hit counters.
#[map(name = "POLICY_RULE_STATS")]
pub static POLICY_RULE_STATS: PerCpuArray<RuleStats> = PerCpuArray::with_max_entries(POLICY_RULE_SLOTS, 0);

/// (VRF, IPv4 5-tuple) -> flow.
#[map(name = "FLOWS_V4")]
pub static FLOWS_V4: LruHashMap<FlowKeyV4, FlowValue> = LruHashMap::with_max_entries(MAX_FLOWS, 0);

/// (VRF, IPv6 5-tuple) -> flow.
#[map(name = "FLOWS_V6")]
pub static FLOWS_V6: LruHashMap<FlowKeyV6, FlowValue> = LruHashMap::with_max_entries(MAX_FLOWS, 0);

/// Interface slot -> flow mode settings.
#[map(name = "FLOW_CONFIG")]
pub static FLOW_CONFIG: Array<FlowConfig> = Array::with_max_entries(MAX_INTERFACES, 0);

/// Interface slot -> per-CPU punt token bucket (flow misses and PUNT policy rules).
#[map(name = "PUNT_BUCKETS")]
pub static PUNT_BUCKETS: PerCpuArray<PuntBucket> = PerCpuArray::with_max_entries(MAX_INTERFACES, 0);

/// The server's list of HOLDs for `dp_sweep_holds` (one value; never pinned: each server
/// process has its own).
#[map(name = "HOLD_SWEEP")]
pub static HOLD_SWEEP: Array<HoldSweep> = Array::with_max_entries(1, 0);

/// The global words (`dataplane_common::globals`); pinned as `FLOW_STATE` (see `maps::GLOBALS`).
#[map(name = "FLOW_STATE")]
pub static GLOBALS: Array<u64> = Array::with_max_entries(dataplane_common::globals::SLOTS, 0);

/// Per-CPU counter that numbers the CPU's flow-miss request ids.
#[map(name = "FLOW_SEQ")]
pub static FLOW_SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Flow misses and PUNT rule matches, with the packet, for the server.
#[map(name = "FLOW_MISSES")]
pub static FLOW_MISSES: RingBuf = RingBuf::with_byte_size(FLOW_RING_BYTES, 0);
