//! Why a packet left the XDP program the way it did. Each reason is a counter per interface
//! (Cilium's drop reasons that double as metrics): every packet bumps exactly one.

/// Size of the per-interface reason counter array; reasons are `< REASON_SLOTS`.
pub const REASON_SLOTS: usize = 48;

/// What a reason says about the packet's fate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReasonKind {
    /// Handed on (to the kernel stack, or forwarded) as the pipeline intended.
    Pass,
    /// Malformed: the parser stopped. Such packets are handed to the kernel, which drops what it
    /// cannot parse itself; they are counted here so they show up per interface.
    ParseError,
    /// Dropped by the dataplane.
    Drop,
}

macro_rules! reasons {
    ($( $(#[$doc:meta])* $variant:ident = $value:literal, $name:literal, $kind:ident; )*) => {
        /// Exit reason of the ingress pipeline, stored as u32 index into
        /// [`crate::InterfaceStats::reasons`].
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Reason {
            $( $(#[$doc])* $variant = $value, )*
        }

        impl Reason {
            /// Every reason, in counter order.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant),*];

            /// Stable snake_case name used in the API, dpctl and metrics.
            pub const fn name(self) -> &'static str {
                match self { $(Reason::$variant => $name,)* }
            }

            /// Whether the packet was handed on, malformed or dropped.
            pub const fn kind(self) -> ReasonKind {
                match self { $(Reason::$variant => ReasonKind::$kind,)* }
            }

            /// The reason stored as `v` (a counter index), if any.
            pub const fn from_u32(v: u32) -> Option<Reason> {
                match v { $($value => Some(Reason::$variant),)* _ => None }
            }
        }
    };
}

reasons! {
    /// Routed by the dataplane: rewritten and redirected out of the next hop's interface.
    Forwarded = 0, "forwarded", Pass;
    /// A well-formed non-IP frame (ARP, LLDP, ...) handed to the kernel stack.
    PassNonIp = 1, "pass_non_ip", Pass;
    /// IP, but no route matched in the interface's VRF: handed to the kernel stack.
    NoRoute = 2, "no_route", Pass;
    /// Addressed to the router itself (an address of the ingress interface).
    PassLocal = 3, "pass_local", Pass;
    /// Multicast, broadcast or IPv6 link-local destination: the kernel's business (ND, ARP, ...).
    PassMulticast = 4, "pass_multicast", Pass;
    /// The route's next hop is RECEIVE: handed to the local kernel stack.
    PassReceive = 5, "pass_receive", Pass;
    /// TTL/hop limit would expire and the dataplane sends no ICMP error for it: none may be sent
    /// (an ICMP error or non-echo message, a non-first fragment, a source that is not one host),
    /// or none can be built here (no interface address of the family, VLAN tag, IPv4 options, a
    /// datagram shorter than the quote): handed to the kernel stack.
    PassTtlExceeded = 6, "pass_ttl_exceeded", Pass;
    /// TTL/hop limit would expire: the dataplane answered with ICMP time exceeded itself.
    IcmpTimeExceeded = 7, "icmp_time_exceeded", Pass;
    /// Larger than the egress interface's MTU: handed to the kernel stack.
    PassMtu = 8, "pass_mtu", Pass;
    /// The route points at a next hop slot that is empty, or at an ECMP group that is empty or
    /// whose chosen member is empty or itself a group.
    PassNextHopInvalid = 9, "pass_nexthop_invalid", Pass;
    /// The next hop's interface has no devmap entry (the server never lets this happen: a next
    /// hop keeps its interface attached). The frame was already rewritten, so it is dropped.
    DropNoTxPort = 10, "drop_no_tx_port", Drop;
    /// VLAN-tagged IP: sub-interfaces are not routed yet, handed to the kernel stack.
    PassVlan = 11, "pass_vlan", Pass;
    /// The route's next hop is DISCARD.
    DropDiscard = 12, "drop_discard", Drop;
    /// Frame shorter than an Ethernet header.
    EthTruncated = 13, "eth_truncated", ParseError;
    /// A VLAN tag announced but cut off.
    VlanTruncated = 14, "vlan_truncated", ParseError;
    /// More than two stacked VLAN tags (802.1ad + 802.1Q is the deepest we accept).
    VlanTooDeep = 15, "vlan_too_deep", ParseError;
    /// IPv4 header cut off (including its options); also the (unreachable) exit of a later stage's
    /// bounds check on the IPv4 header.
    Ipv4Truncated = 16, "ipv4_truncated", ParseError;
    /// IPv4 header inconsistent: version not 4, IHL < 5, or total length outside the frame.
    Ipv4Malformed = 17, "ipv4_malformed", ParseError;
    /// IPv6 header cut off, or an extension header cut off within the payload length; also the
    /// (unreachable) exit of a later stage's bounds check on the IPv6 header.
    Ipv6Truncated = 18, "ipv6_truncated", ParseError;
    /// IPv6 header inconsistent: version not 6, payload length beyond the frame, or an extension
    /// header chain longer than we walk.
    Ipv6Malformed = 19, "ipv6_malformed", ParseError;
    /// TCP/UDP/ICMP/ICMPv6 header cut off within the IP datagram.
    L4Truncated = 20, "l4_truncated", ParseError;
    /// Seen on an ifindex that has no interface slot.
    UnknownInterface = 21, "unknown_interface", Pass;
    /// IP in a frame not addressed to the interface's MAC (another host's, or broadcast): the
    /// kernel's to drop or handle, as it would without the dataplane.
    PassOtherHost = 22, "pass_other_host", Pass;
    /// A policy rule with action DENY matched.
    DropPolicy = 23, "drop_policy", Drop;
    /// No policy rule matched and the attachment's default action is DENY.
    DropPolicyDefault = 24, "drop_policy_default", Drop;
    /// A policy rule with action PUNT matched: handed to the kernel stack, and reported to the
    /// server (within the interface's punt rate) as a flow miss with reason PUNT.
    PassPolicyPunt = 25, "pass_policy_punt", Pass;
    /// The flow's action is DROP.
    DropFlow = 26, "drop_flow", Drop;
    /// A flow miss: a HOLD entry and an event were created; the packet is captured in the event
    /// (re-injected when the flow is installed) and dropped here.
    FlowMissPunted = 27, "flow_miss_punted", Pass;
    /// A packet of a held flow (its miss was already punted), miss action drop.
    DropFlowHeld = 28, "drop_flow_held", Drop;
    /// A miss not punted: the HOLD cap was reached.
    DropFlowHoldCap = 29, "drop_flow_hold_cap", Drop;
    /// A miss not punted: over the interface's punt rate.
    DropPuntRate = 30, "drop_punt_rate", Drop;
    /// A miss not punted: the ring buffer to the server was full.
    DropFlowRingFull = 31, "drop_flow_ring_full", Drop;
    /// The route's next hop names a gateway whose MAC the kernel has not resolved yet: handed to
    /// the kernel stack, whose ARP/ND resolves it (XDP takes over once it has).
    PassNeighUnresolved = 32, "pass_neigh_unresolved", Pass;
    /// Kernel-FIB VRF: the kernel has the route but not yet the next hop's MAC (`bpf_fib_lookup`
    /// said NO_NEIGH): handed to the kernel stack, which resolves it.
    PassFibNoNeigh = 33, "pass_fib_no_neigh", Pass;
    /// Kernel-FIB VRF: the kernel would not forward this (no route, unreachable, prohibit, local,
    /// forwarding disabled on the interface, tunnel route): its stack decides (ICMP errors, local
    /// delivery).
    PassFibNotForwarded = 34, "pass_fib_not_forwarded", Pass;
    /// Kernel-FIB VRF: larger than the egress MTU the kernel reports: its stack fragments or
    /// answers with "fragmentation needed" / "packet too big".
    PassFibMtu = 35, "pass_fib_mtu", Pass;
    /// Kernel-FIB VRF: the kernel's route leaves through an interface the dataplane does not own.
    PassFibForeignEgress = 36, "pass_fib_foreign_egress", Pass;
    /// Kernel-FIB VRF: the kernel's route is a blackhole.
    DropFibBlackhole = 37, "drop_fib_blackhole", Drop;
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_values_are_dense_and_fit_the_counter_array() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as u32 as usize, i);
            assert!(i < REASON_SLOTS);
            assert_eq!(Reason::from_u32(i as u32), Some(*r));
        }
        assert_eq!(Reason::from_u32(Reason::ALL.len() as u32), None);
    }
}
