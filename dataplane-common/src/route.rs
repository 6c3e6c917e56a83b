//! Routing map types: interface config, LPM keys, route values, next hops.

/// Configuration of one interface the dataplane owns, keyed by ifindex in `INTERFACES` (or
/// `INTERFACES_HIGH`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterfaceConfig {
    /// Index into the per-interface maps (`IFACE_STATS`, `TX_PORTS`, `FLOW_CONFIG`,
    /// `PUNT_BUCKETS`, and `POLICY_ATTACH` at `slot * 2 + direction`).
    pub slot: u32,
    /// VRF whose routes forward this interface's ingress traffic.
    pub vrf: u32,
    pub mtu: u32,
    /// `IFACE_*` bits: present, which addresses are set, kernel FIB, flow mode, policies.
    pub flags: u32,
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
    /// An address of the interface (with `IFACE_HAS_IPV4`): the source of the ICMP errors it
    /// sends, and what the ingress program leaves to the kernel as local.
    pub ipv4: [u8; 4],
    /// As `ipv4`, with `IFACE_HAS_IPV6`.
    pub ipv6: [u8; 16],
    /// The route table this interface's packets are looked up in, whichever kind its VRF has:
    /// with `IFACE_KERNEL_FIB` a kernel routing table, without it the VRF's IPv4 flat-table root.
    /// One word for both because an interface has only one of them (and the entry's layout is
    /// pinned); read it as [`Self::kernel_table`] or [`Self::fib4_root`], which say which it is.
    pub table: u32,
}

impl InterfaceConfig {
    /// A kernel-FIB interface's routing table (0: the kernel's own choice for a packet arriving
    /// on this interface, policy rules and VRF devices included); `None` for a routes-mode one.
    #[inline(always)]
    pub const fn kernel_table(&self) -> Option<u32> {
        if self.flags & IFACE_KERNEL_FIB != 0 {
            Some(self.table)
        } else {
            None
        }
    }

    /// A routes-mode interface's IPv4 flat-table root as `FIB4_VRFS` has it (0: the VRF's IPv4
    /// routes are in the trie); 0 for a kernel-FIB interface.
    #[inline(always)]
    pub const fn fib4_root(&self) -> u32 {
        if self.flags & IFACE_KERNEL_FIB != 0 {
            0
        } else {
            self.table
        }
    }
}

/// `ipv4` holds an address of the interface.
pub const IFACE_HAS_IPV4: u32 = 1;
/// `ipv6` holds an address of the interface.
pub const IFACE_HAS_IPV6: u32 = 2;
/// Set in every configured entry: an `INTERFACES` array entry without it is an ifindex the
/// dataplane does not own.
pub const IFACE_PRESENT: u32 = 4;
/// The interface's VRF forwards by the kernel's FIB (`bpf_fib_lookup`) instead of the
/// dataplane's routes.
pub const IFACE_KERNEL_FIB: u32 = 8;
/// Flow mode is on for the interface (`FLOW_CONFIG` of its slot enabled): without it the
/// ingress program skips the flow stage, and its `FLOW_CONFIG` lookup.
pub const IFACE_FLOWS: u32 = 16;
/// The interface has an ingress policy attached (`POLICY_ATTACH`): without it the ingress
/// program skips that lookup.
pub const IFACE_POLICY_IN: u32 = 32;
/// Some interface has an egress policy attached: without it (in the ingress interface's entry)
/// the ingress program skips the egress attachment lookup of the interface it forwards to.
pub const IFACE_EGRESS_POLICIES: u32 = 64;

/// Bits of the VRF in front of the address in an LPM key: a route of prefix length `n` is stored
/// with `prefix_len = VRF_BITS + n`, so one trie per family serves every VRF.
pub const VRF_BITS: u32 = 32;

/// Data part of an IPv4 LPM key (`aya`'s `Key<RouteAddrV4>` adds the prefix length in front).
/// The kernel compares bytes MSB first: VRF (big-endian) then address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteAddrV4 {
    pub vrf: [u8; 4],
    pub addr: [u8; 4],
}

/// Data part of an IPv6 LPM key, as [`RouteAddrV4`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteAddrV6 {
    pub vrf: [u8; 4],
    pub addr: [u8; 16],
}

/// The record of one IPv4 route in `ROUTE4_RECORDS` (at a slot the server assigns): every IPv4
/// route has one, whether its VRF is looked up in a flat table or in the trie, so a restarted
/// server knows the routes without the trie. Written through a shared mapping, `flags` last.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteRecord4 {
    pub vrf: u32,
    /// Network order.
    pub addr: [u8; 4],
    pub prefix_len: u8,
    pub _pad: [u8; 2],
    /// `RECORD_VALID`, or 0 for a free slot.
    pub flags: u8,
    /// Next-hop slot.
    pub nexthop: u32,
}

pub const RECORD_VALID: u8 = 1;

/// What a route points at.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteValue {
    /// Next-hop slot (index into `NEXTHOPS`).
    pub nexthop: u32,
    /// The route's own prefix length (without the VRF bits), so a lookup can name the prefix
    /// that matched.
    pub prefix_len: u32,
}

/// Next-hop kinds, as stored in [`NextHop::kind`].
pub mod nexthop_kind {
    /// An empty slot.
    pub const EMPTY: u32 = 0;
    /// Rewrite MACs and send out of `tx_slot`.
    pub const ENCAP: u32 = 1;
    /// Pick one of `members` by a hash of the flow.
    pub const ECMP: u32 = 2;
    /// Drop.
    pub const DISCARD: u32 = 3;
    /// Hand to the local kernel stack.
    pub const RECEIVE: u32 = 4;
    /// A gateway next hop whose MAC is not known yet: hand to the kernel stack, which resolves
    /// it; the server rewrites the slot as `ENCAP` once the kernel's neighbour table has it.
    pub const UNRESOLVED: u32 = 5;
}

/// Most members an ECMP group may have (inline in the next hop: no second map lookup).
pub const ECMP_MAX: usize = 16;

/// A next hop, at the slot the server assigned in `NEXTHOPS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextHop {
    pub kind: u32,
    /// ENCAP: interface slot of the egress interface (devmap key) and its ifindex and MTU.
    pub tx_slot: u32,
    pub ifindex: u32,
    pub mtu: u32,
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    /// ECMP: number of valid entries in `members`.
    pub member_count: u32,
    /// ECMP: next-hop slots of the members (none of them a group).
    pub members: [u32; ECMP_MAX],
}

impl NextHop {
    pub const EMPTY: Self = Self {
        kind: nexthop_kind::EMPTY,
        tx_slot: 0,
        ifindex: 0,
        mtu: 0,
        dst_mac: [0; 6],
        src_mac: [0; 6],
        member_count: 0,
        members: [0; ECMP_MAX],
    };
}

// The programs copy `dst_mac` + `src_mac` as three aligned 32-bit words.
const _: () = assert!(core::mem::offset_of!(NextHop, dst_mac) % 4 == 0);
const _: () = assert!(core::mem::offset_of!(NextHop, src_mac) == core::mem::offset_of!(NextHop, dst_mac) + 6);

/// Packets and bytes that left through a next hop (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHopStats {
    pub packets: u64,
    pub bytes: u64,
}

/// The IPv4 flat table: a 16-8-8 multibit trie per VRF (the layout of VPP's `ip4_mtrie`), built
/// from one pool of 256-entry chunks. A lookup is at most three array reads, each inlined by the
/// verifier, whatever the number of routes, where the LPM trie walks up to 32 nodes.
///
/// A VRF's root is a block of 256 consecutive chunks (65,536 entries, one per /16), found in the
/// pool at `(root - 1) * 256 + (address >> 24)`, entry `(address >> 16) & 0xff`; an entry there
/// either ends the lookup or names the chunk of its /16 (entry `(address >> 8) & 0xff`), whose
/// entries in turn may name the chunk of a /24 (entry `address & 0xff`). A leaf carries the
/// prefix length that put it there, so the server can update the table in place (an insert
/// overwrites shorter leaves only; a delete restores the covering route where its own length
/// is found) and adopt it after a restart from the kernel's copy alone.
pub mod fib4 {
    /// One level of the table below the root: 256 entries.
    pub type Chunk = [u32; 256];
    /// Chunks in a root block (one per value of the address's top byte).
    pub const ROOT_CHUNKS: u32 = 256;
    /// The entry names a chunk (`entry & INDEX`).
    pub const CHUNK: u32 = 1 << 31;
    /// The entry is a route: next-hop slot `entry & NEXTHOP`, prefix length `depth(entry)`.
    pub const LEAF: u32 = 1 << 30;
    pub const INDEX: u32 = 0x00ff_ffff;
    pub const NEXTHOP: u32 = 0x00ff_ffff;
    const DEPTH_SHIFT: u32 = 24;
    /// Chunks a server's pool has unless told otherwise (32 MiB): one VRF of ~500,000
    /// Internet-like routes, or many small VRFs.
    pub const DEFAULT_CHUNKS: u32 = 32768;

    /// A leaf entry: next-hop `slot`, prefix length `depth` (0..=32).
    #[inline(always)]
    pub const fn leaf(slot: u32, depth: u8) -> u32 {
        LEAF | ((depth as u32) << DEPTH_SHIFT) | (slot & NEXTHOP)
    }

    /// The prefix length of a leaf (0 for an empty entry).
    #[inline(always)]
    pub const fn depth(entry: u32) -> u8 {
        ((entry >> DEPTH_SHIFT) & 0x3f) as u8
    }
}
