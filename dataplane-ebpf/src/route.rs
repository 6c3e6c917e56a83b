//! Route stage: longest-prefix match of the destination in the interface's VRF.

use aya_ebpf::maps::lpm_trie::Key;
use dataplane_common::{route::VRF_BITS, RouteAddrV4, RouteAddrV6};

use crate::{
    maps::{ROUTES_V4, ROUTES_V6},
    parse::{Packet, L3},
};

/// The next-hop slot of the longest prefix covering the packet's destination in `vrf`.
#[inline(always)]
pub fn lookup(vrf: u32, pkt: &Packet) -> Option<u32> {
    let vrf = vrf.to_be_bytes();
    let found = match pkt.l3 {
        L3::Ipv4 => {
            let addr = [pkt.dst[0], pkt.dst[1], pkt.dst[2], pkt.dst[3]];
            ROUTES_V4.get(Key::new(VRF_BITS + 32, RouteAddrV4 { vrf, addr }))
        }
        L3::Ipv6 => ROUTES_V6.get(Key::new(VRF_BITS + 128, RouteAddrV6 { vrf, addr: pkt.dst })),
        L3::Other(_) => None,
    };
    found.map(|r| r.nexthop)
}
