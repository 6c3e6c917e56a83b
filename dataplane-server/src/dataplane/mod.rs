//! The kernel side as the domain sees it: the [`Dataplane`] trait, implemented for real by
//! [`loader::KernelDataplane`] and by an in-memory fake in the domain's unit tests.
//!
//! This module is the only code that touches `aya::maps` and `aya::programs`.

pub mod error;
pub mod fib4;
pub mod flow_misses;
pub mod loader;
pub mod maps;
pub mod netdev;
pub mod testrun;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dataplane_common::{InterfaceStats, NextHopStats};

use crate::net::{Mac, Prefix};

pub use error::DataplaneError;
pub use flow_misses::{FlowMiss, FlowMissReader};
pub use loader::{AdoptedLinks, KernelDataplane, LoadReport, LoaderConfig};
pub use testrun::{PinnedIngress, TestProgram, TestRunOutcome};

/// How to attach the XDP program. In the state file as `"auto"`, `"native"`, `"generic"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native where the driver supports it, generic otherwise.
    Auto,
    /// Driver (native) XDP only.
    Native,
    /// Generic (skb) XDP.
    Generic,
}

/// Where a program is hooked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    XdpIngress,
    TcEgress,
}

/// What attaching the programs to one interface produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// The mode the XDP program actually runs in: `Native` or `Generic`, never `Auto`.
    pub xdp_mode: XdpMode,
    /// Kernel bpf link ids.
    pub xdp_link_id: u32,
    pub tc_link_id: u32,
}

/// A loaded program as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramStatus {
    pub name: String,
    pub kind: &'static str,
    pub kernel_id: u32,
    pub tag: u64,
}

/// A map as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapStatus {
    pub name: &'static str,
    pub kind: String,
    pub kernel_id: u32,
    pub max_entries: u32,
    pub key_size: u32,
    pub value_size: u32,
    /// Keys present, for maps where the kernel can enumerate them (hashes); `None` for arrays,
    /// whose occupancy only the domain knows (slots allocated).
    pub keys: Option<u64>,
    pub pin_path: String,
}

/// A kernel network device, as found in the server's network namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    pub ifindex: u32,
    pub mtu: u32,
    pub mac: Mac,
    /// An address of the device (the first IPv4, the first non-link-local IPv6): the source of
    /// the ICMP errors the dataplane sends from it.
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

/// What the programs need to know about an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceParams {
    pub slot: u32,
    pub vrf: u32,
    pub link: LinkInfo,
    /// The VRF forwards by the kernel's FIB; `fib_table` is its kernel table (0: the kernel's
    /// own choice for this interface).
    pub kernel_fib: Option<u32>,
}

/// A next hop as the kernel stores it (slots, not the API's ids).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NextHopParams {
    Encap {
        tx_slot: u32,
        ifindex: u32,
        mtu: u32,
        dst_mac: Mac,
        src_mac: Mac,
    },
    /// A gateway whose MAC the kernel has not resolved yet: packets go to the kernel stack.
    Unresolved {
        tx_slot: u32,
        ifindex: u32,
        mtu: u32,
        src_mac: Mac,
    },
    Ecmp {
        members: Vec<u32>,
    },
    Discard,
    Receive,
}

/// A route the kernel found: the matched prefix length and the next-hop slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteMatch {
    pub prefix_len: u8,
    pub nexthop_slot: u32,
}

/// A compiled policy table (see `domain::classifier`), with absolute pool offsets and rule slots,
/// ready to be written into the policy maps.
#[derive(Clone, Debug)]
pub struct PolicyImage {
    pub table: u32,
    pub header: dataplane_common::policy::PolicyTable,
    /// `POLICY_WORDS` index of `pool[0]`.
    pub pool_base: u32,
    pub pool: Vec<u64>,
    /// (prefix, class record offset), both families.
    pub src: Vec<(Prefix, u32)>,
    pub dst: Vec<(Prefix, u32)>,
    /// (field, value, prefix length over 16 bits, class record offset).
    pub l4: Vec<(u8, u16, u8, u32)>,
    /// Rule `i`'s action, stored at rule slot `header.rule_base + i`.
    pub actions: Vec<u32>,
}

/// A flow's key, either family (ports 0 where the protocol has none).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub vrf: u32,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
}

impl FlowKey {
    /// The key of the reply direction.
    pub fn reversed(&self) -> Self {
        Self { src: self.dst, dst: self.src, sport: self.dport, dport: self.sport, ..*self }
    }
}

/// The operations the domain needs from the kernel. Every method either fully succeeds or leaves
/// the kernel as it was.
pub trait Dataplane: Send + Sync + 'static {
    /// The link called `name` in the server's network namespace, `None` if there is none.
    fn link(&self, name: &str) -> Result<Option<LinkInfo>, DataplaneError>;

    /// Registers the interface (config, counters zeroed, devmap entry) and attaches the XDP
    /// ingress and TC egress programs to it.
    fn attach(&self, name: &str, params: &InterfaceParams, mode: XdpMode) -> Result<Attachment, DataplaneError>;

    /// Rewrites the configuration of an attached interface (its MTU, MAC, addresses or VRF
    /// changed) without touching its attachment or counters.
    fn update_interface(&self, params: &InterfaceParams) -> Result<(), DataplaneError>;

    /// Unregisters the interface and detaches both programs from it.
    fn detach(&self, ifindex: u32, slot: u32) -> Result<(), DataplaneError>;

    /// Counters of interface `slot`, summed over CPUs.
    fn interface_stats(&self, slot: u32) -> Result<InterfaceStats, DataplaneError>;

    /// Writes next hop `slot`; `fresh` zeroes its counters (a newly allocated slot).
    fn set_nexthop(&self, slot: u32, nh: &NextHopParams, fresh: bool) -> Result<(), DataplaneError>;

    /// Empties next hop `slot`.
    fn clear_nexthop(&self, slot: u32) -> Result<(), DataplaneError>;

    fn nexthop_stats(&self, slot: u32) -> Result<NextHopStats, DataplaneError>;

    fn insert_route(&self, vrf: u32, prefix: &Prefix, nexthop_slot: u32) -> Result<(), DataplaneError>;

    fn remove_route(&self, vrf: u32, prefix: &Prefix) -> Result<(), DataplaneError>;

    /// Inserts (or replaces) many routes, in as few kernel calls as it can. On a failure: the
    /// positions in `routes` already written (for the caller to undo), and the error.
    fn insert_routes(&self, routes: &[(u32, Prefix, u32)]) -> Result<(), (Vec<usize>, DataplaneError)> {
        for (i, (vrf, prefix, slot)) in routes.iter().enumerate() {
            if let Err(e) = self.insert_route(*vrf, prefix, *slot) {
                return Err(((0..i).collect(), e));
            }
        }
        Ok(())
    }

    /// Longest-prefix match in the kernel's maps, as the XDP program does it (for IPv4, in the
    /// VRF's flat table when it has one).
    fn lookup_route(&self, vrf: u32, addr: IpAddr) -> Result<Option<RouteMatch>, DataplaneError>;

    /// Chunks in the IPv4 flat tables' pool (`FIB4_CHUNKS`), as it was created.
    fn fib4_capacity(&self) -> u32;
    /// Writes `values` into pool chunk `chunk` from entry `first` on, in order: a program that
    /// sees one of them also sees those before it.
    fn fib4_store(&self, chunk: u32, first: usize, values: &[u32]) -> Result<(), DataplaneError>;
    /// Points VRF `vrf`'s IPv4 lookups at root block `root - 1` (0: at the trie).
    fn fib4_set_root(&self, vrf: u32, root: u32) -> Result<(), DataplaneError>;
    /// Slots of `ROUTE4_RECORDS`.
    fn route4_capacity(&self) -> u32;
    /// Raises the records' high-water mark (`flow::STATE_ROUTE4_RECORDS`) to `slots`: a restart
    /// reads that many. Called before a record at or above the old mark is written.
    fn route4_reserve(&self, slots: u32) -> Result<(), DataplaneError>;
    /// Writes IPv4 route records (slot, record), each valid only once whole.
    fn route4_store(&self, records: &[(u32, dataplane_common::RouteRecord4)]) -> Result<(), DataplaneError>;
    /// Frees record slots.
    fn route4_clear(&self, slots: &[u32]) -> Result<(), DataplaneError>;
    /// Every valid record below the high-water mark.
    fn route4_records(&self) -> Result<Vec<(u32, dataplane_common::RouteRecord4)>, DataplaneError>;

    /// (VRF, root) of those of `vrfs` that have a flat table.
    fn fib4_roots(&self, vrfs: &[u32]) -> Result<Vec<(u32, u32)>, DataplaneError>;
    /// Pool chunk `chunk` as the kernel holds it.
    fn fib4_load(&self, chunk: u32) -> Result<dataplane_common::route::fib4::Chunk, DataplaneError>;

    /// Writes a policy table (records, tries, actions, zeroed rule counters, header last). The
    /// table must not be reachable from any attachment yet.
    fn write_policy(&self, image: &PolicyImage) -> Result<(), DataplaneError>;
    /// Removes a table's trie entries. Only after an RCU grace period since it became unreachable.
    fn clear_policy(&self, image: &PolicyImage) -> Result<(), DataplaneError>;
    /// Sets the attachment word of interface `slot`, `direction` (0 detaches).
    fn set_policy_attachment(&self, slot: u32, direction: u32, word: u32) -> Result<(), DataplaneError>;
    /// Hit counters of rule slots `first..first + count`, summed over CPUs.
    fn rule_stats(&self, first: u32, count: u32) -> Result<Vec<dataplane_common::policy::RuleStats>, DataplaneError>;
    /// Waits until every program run that started before the call has finished (an RCU grace
    /// period), so that what they could see may be reused.
    fn wait_for_readers(&self) -> Result<(), DataplaneError>;

    /// Flow mode settings of interface `slot`.
    fn set_flow_config(&self, slot: u32, cfg: &dataplane_common::flow::FlowConfig) -> Result<(), DataplaneError>;
    /// Creates or replaces a flow.
    fn put_flow(&self, key: &FlowKey, value: &dataplane_common::flow::FlowValue) -> Result<(), DataplaneError>;
    fn get_flow(&self, key: &FlowKey) -> Result<Option<dataplane_common::flow::FlowValue>, DataplaneError>;
    /// Removes a flow (absent is fine).
    fn remove_flow(&self, key: &FlowKey) -> Result<(), DataplaneError>;
    /// Every flow in both tables.
    fn flows(&self) -> Result<Vec<(FlowKey, dataplane_common::flow::FlowValue)>, DataplaneError>;
    /// Publishes how many HOLDs the server has resolved in total (`flow::STATE_RESOLVED`).
    fn set_holds_resolved(&self, resolved: u64) -> Result<(), DataplaneError>;
    /// Runs `frame` through the attached XDP program as if received on `ifindex`, for real
    /// (BPF_PROG_TEST_RUN with live frames: its redirect or XDP_PASS happens). Returns the verdict.
    fn reinject(&self, ifindex: u32, frame: &[u8]) -> Result<u32, DataplaneError>;

    /// Loads `object` (the running build's when `None`) over the same maps, verifies it, and
    /// switches every interface to its programs with atomic link updates. A failure changes
    /// nothing. Returns the programs now attached.
    fn upgrade(&self, object: Option<&[u8]>) -> Result<Vec<ProgramStatus>, DataplaneError>;
    /// Detaches everything and removes every pin.
    fn reset(&self);

    /// Fingerprint of the object the attached programs came from (`None` where there is none).
    fn programs_object(&self) -> Option<u64>;

    /// Interfaces whose pinned links an earlier run left and this one adopted.
    fn adopted(&self) -> Vec<AdoptedLinks>;
    /// Unpins and drops the adopted links of `ifindex` (detaching), clearing its entry.
    fn forget_links(&self, ifindex: u32) -> Result<(), DataplaneError>;
    /// Every route in the kernel's tries: (VRF, prefix, next-hop slot).
    fn dump_routes(&self) -> Result<Vec<(u32, Prefix, u32)>, DataplaneError>;
    /// Records the configuration generation in the kernel (`flow::STATE_GENERATION`).
    fn set_generation(&self, generation: u64) -> Result<(), DataplaneError>;
    /// The generation last recorded there (0 on a fresh dataplane).
    fn generation(&self) -> Result<u64, DataplaneError>;
    /// HOLDs the XDP program created in total (`flow::STATE_CREATED`).
    fn holds_created(&self) -> Result<u64, DataplaneError>;

    fn programs(&self) -> Result<Vec<ProgramStatus>, DataplaneError>;

    fn maps(&self) -> Result<Vec<MapStatus>, DataplaneError>;

    /// The bpffs directory the maps are pinned under.
    fn pin_root(&self) -> String;
}
