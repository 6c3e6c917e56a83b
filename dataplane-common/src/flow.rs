//! Flow table layout shared by the XDP program and the server.
//!
//! With flow mode on for an interface, every routed IP packet looks up its flow (VRF + 5-tuple).
//! A hit forwards by the flow's next hop (or drops); a miss creates a HOLD entry (so a flow
//! punts once), and sends a [`FlowMissEvent`] with the packet through the `FLOW_MISSES` ring
//! buffer to the server, which hands it to controllers and, once a controller installs the flow,
//! re-injects the captured packet through the XDP program.

/// Flow action (`FlowValue::action`): a miss was punted and the flow awaits its decision.
pub const FLOW_HOLD: u32 = 0;
/// Flow action: forward through the flow's next hop.
pub const FLOW_FORWARD: u32 = 1;
/// Flow action: drop.
pub const FLOW_DROP: u32 = 2;

/// Capacity of each flow table (LRU: the least recently used flows go first when full).
pub const MAX_FLOWS: u32 = 262144;
/// Bytes of a missed packet captured into its event (whole frames up to this size, so the server
/// can re-inject them).
pub const FLOW_CAPTURE: usize = 1536;
/// Largest punt rate per CPU (keeps the token arithmetic within 64 bits).
pub const MAX_PUNT_RATE: u32 = 1_000_000;
/// Bytes of the ring buffer carrying flow misses.
pub const FLOW_RING_BYTES: u32 = 4 << 20;

/// Miss reason (`FlowMissEvent::reason`): no flow matched (a HOLD was created).
pub const MISS_NO_FLOW: u32 = 1;
/// A policy rule with action PUNT matched (no HOLD; the packet went to the kernel stack).
pub const MISS_PUNT_RULE: u32 = 2;
/// Punt rate and burst of an interface whose flow mode was never set (PUNT rules still punt),
/// and what the server takes for a rate or burst of 0 when flow mode is set.
pub const DEFAULT_PUNT_RATE: u32 = 1000;
/// See [`DEFAULT_PUNT_RATE`].
pub const DEFAULT_PUNT_BURST: u32 = 100;

/// Key of `FLOWS_V4`: VRF and 5-tuple; ports 0 for protocols without them and for fragments.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKeyV4 {
    pub vrf: u32,
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// Key of `FLOWS_V6`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKeyV6 {
    pub vrf: u32,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// Value of both flow tables. Counters are updated with atomic adds (many CPUs hit one flow).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FlowValue {
    /// `FLOW_HOLD`, `FLOW_FORWARD` or `FLOW_DROP`.
    pub action: u32,
    /// FORWARD: next-hop slot.
    pub nexthop: u32,
    /// HOLD: the request id of the miss event.
    pub request_id: u64,
    /// `bpf_ktime_get_ns` at creation and at the last packet.
    pub created_ns: u64,
    pub last_seen_ns: u64,
    pub packets: u64,
    pub bytes: u64,
    /// Room for a NAT action (translated address, port, flags) without a layout change; zero.
    pub nat_reserved: [u8; 24],
}

/// Per-interface flow settings (`FLOW_CONFIG` by interface slot).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FlowConfig {
    /// Non-zero: flow mode on.
    pub enabled: u32,
    /// Non-zero: while a flow is held (and for misses not punted), forward by route; otherwise
    /// drop (the first packet is captured and re-injected when the flow is installed).
    pub miss_forward: u32,
    /// Punts per second per CPU (at most [`MAX_PUNT_RATE`]), and bucket depth.
    pub punt_rate: u32,
    pub punt_burst: u32,
    /// Most HOLD entries at once (all interfaces).
    pub hold_cap: u32,
    pub _pad: u32,
}

/// Per-CPU punt token bucket of an interface.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PuntBucket {
    /// Tokens scaled by 1e9 (one token = 1e9), so refill is `elapsed_ns * rate`.
    pub tokens: u64,
    pub last_ns: u64,
}

/// Request ids are `cpu << REQUEST_CPU_SHIFT | n`, `n` counting per CPU (`FLOW_SEQ`): unique
/// without an atomic fetch (which the BPF CPU version the programs target lacks).
pub const REQUEST_CPU_SHIFT: u32 = 48;

/// A flow miss, as the ring buffer carries it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FlowMissEvent {
    pub request_id: u64,
    pub ifindex: u32,
    pub slot: u32,
    pub vrf: u32,
    /// `MISS_NO_FLOW` or `MISS_PUNT_RULE`.
    pub reason: u32,
    /// 4 or 6.
    pub family: u32,
    pub proto: u32,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    /// Length of the packet on the wire, and bytes of it in `data`.
    pub pkt_len: u32,
    pub captured: u32,
    pub _pad: u32,
    pub data: [u8; FLOW_CAPTURE],
}

/// HOLDs one run of `dp_sweep_holds` removes at most.
pub const SWEEP_MAX: usize = 256;

/// A HOLD to remove if it is still the one of `request_id` (the flow table's entry for the key
/// may since have become a flow the server installed, or another miss's HOLD).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct HoldRef {
    pub request_id: u64,
    /// 4: `k4` is the key; 6: `k6`.
    pub family: u32,
    pub _pad: u32,
    pub k4: FlowKeyV4,
    pub k6: FlowKeyV6,
}

/// The one value of `HOLD_SWEEP`: the HOLDs the next run of `dp_sweep_holds` removes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HoldSweep {
    /// Entries of `holds` in use.
    pub count: u32,
    pub _pad: u32,
    pub holds: [HoldRef; SWEEP_MAX],
}

const _: () = assert!(core::mem::size_of::<FlowKeyV4>() == 20);
const _: () = assert!(core::mem::size_of::<FlowKeyV6>() == 44);
const _: () = assert!(core::mem::size_of::<FlowValue>() == 72);
const _: () = assert!(core::mem::size_of::<HoldRef>() == 80);
const _: () = assert!(core::mem::size_of::<HoldSweep>() == 8 + 80 * SWEEP_MAX);
