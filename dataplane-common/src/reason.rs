//! Why a packet left the XDP program the way it did. Each reason is a counter per interface
//! (Cilium's drop reasons that double as metrics): every packet bumps exactly one.

/// Size of the per-interface reason counter array; reasons are `< REASON_SLOTS`.
pub const REASON_SLOTS: usize = 16;

/// What a reason says about the packet's fate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReasonKind {
    /// Handed on (to the kernel stack, or forwarded) as the pipeline intended.
    Pass,
    /// Malformed: the parser stopped. Such packets are still handed to the kernel for now, which
    /// drops what it cannot parse itself; they are counted here so they show up per interface.
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

            pub const fn kind(self) -> ReasonKind {
                match self { $(Reason::$variant => ReasonKind::$kind,)* }
            }

            pub const fn from_u32(v: u32) -> Option<Reason> {
                match v { $($value => Some(Reason::$variant),)* _ => None }
            }
        }
    };
}

reasons! {
    /// A well-formed IPv4/IPv6 packet handed to the kernel stack (no forwarding stage yet).
    PassIp = 0, "pass_ip", Pass;
    /// A well-formed non-IP frame (ARP, LLDP, ...) handed to the kernel stack.
    PassNonIp = 1, "pass_non_ip", Pass;
    /// An IP fragment other than the first: no L4 header to parse, handed on.
    PassFragment = 2, "pass_fragment", Pass;
    /// Frame shorter than an Ethernet header.
    EthTruncated = 3, "eth_truncated", ParseError;
    /// A VLAN tag announced but cut off.
    VlanTruncated = 4, "vlan_truncated", ParseError;
    /// More than two stacked VLAN tags (802.1ad + 802.1Q is the deepest we accept).
    VlanTooDeep = 5, "vlan_too_deep", ParseError;
    /// IPv4 header cut off (including its options).
    Ipv4Truncated = 6, "ipv4_truncated", ParseError;
    /// IPv4 header inconsistent: version not 4, IHL < 5, or total length outside the frame.
    Ipv4Malformed = 7, "ipv4_malformed", ParseError;
    /// IPv6 header cut off.
    Ipv6Truncated = 8, "ipv6_truncated", ParseError;
    /// IPv6 header inconsistent: version not 6, payload length beyond the frame, or an extension
    /// header chain longer than we walk.
    Ipv6Malformed = 9, "ipv6_malformed", ParseError;
    /// TCP/UDP/ICMP/ICMPv6 header cut off.
    L4Truncated = 10, "l4_truncated", ParseError;
    /// Seen on an ifindex that has no interface slot.
    UnknownInterface = 11, "unknown_interface", Pass;
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
