//! Route stage: longest-prefix match of the destination in the interface's VRF. IPv4 looks in
//! the VRF's flat table (`fib4`: at most three array reads) when the server built one, in the
//! `ROUTES_V4` trie otherwise; IPv6 in the `ROUTES_V6` trie.

use aya_ebpf::maps::lpm_trie::Key;
use dataplane_common::{
    route::{fib4, VRF_BITS},
    InterfaceConfig, RouteAddrV4, RouteAddrV6,
};

use crate::{
    maps::{FIB4_CHUNKS, FIB4_VRFS, ROUTES_V4, ROUTES_V6},
    parse::{Packet, L3},
};

/// The next-hop slot of the longest prefix covering the packet's destination in the VRF of
/// interface `cfg` (a routes-mode one). Its entry carries the VRF's flat-table root in `table`
/// (`InterfaceConfig::fib4_root`, read raw: only routes-mode interfaces come here): no
/// `FIB4_VRFS` lookup per packet.
#[inline(always)]
pub fn lookup(cfg: &InterfaceConfig, pkt: &Packet) -> Option<u32> {
    let vrf = cfg.vrf;
    match pkt.l3 {
        L3::Ipv4 => {
            let addr = [pkt.dst[0], pkt.dst[1], pkt.dst[2], pkt.dst[3]];
            match cfg.table {
                0 => trie_v4(vrf, addr),
                root => flat_v4(root, u32::from_be_bytes(addr)),
            }
        }
        L3::Ipv6 => ROUTES_V6
            .get(Key::new(VRF_BITS + 128, RouteAddrV6 { vrf: vrf.to_be_bytes(), addr: pkt.dst }))
            .map(|r| r.nexthop),
        L3::Other(_) => None,
    }
}

#[inline(always)]
fn trie_v4(vrf: u32, addr: [u8; 4]) -> Option<u32> {
    ROUTES_V4.get(Key::new(VRF_BITS + 32, RouteAddrV4 { vrf: vrf.to_be_bytes(), addr })).map(|r| r.nexthop)
}

/// IPv4 lookup of `addr` in `vrf` with the VRF's root read from `FIB4_VRFS`, for the benchmark,
/// which has no interface entry to carry it: the flat table where the VRF has one, the trie
/// otherwise.
#[inline(always)]
pub fn lookup_v4(vrf: u32, addr: [u8; 4]) -> Option<u32> {
    match FIB4_VRFS.get(vrf) {
        Some(&root) if root != 0 => flat_v4(root, u32::from_be_bytes(addr)),
        _ => trie_v4(vrf, addr),
    }
}

#[inline(always)]
fn flat_v4(root: u32, a: u32) -> Option<u32> {
    // Every index below is masked to 0..=255, inside a 256-entry chunk: no bounds check is
    // emitted and the verifier sees a constant-size value read.
    let mut e = FIB4_CHUNKS.get(((root - 1) << 8) | (a >> 24))?[((a >> 16) & 0xff) as usize];
    if e & fib4::CHUNK != 0 {
        e = FIB4_CHUNKS.get(e & fib4::INDEX)?[((a >> 8) & 0xff) as usize];
        if e & fib4::CHUNK != 0 {
            e = FIB4_CHUNKS.get(e & fib4::INDEX)?[(a & 0xff) as usize];
        }
    }
    if e & fib4::LEAF != 0 {
        Some(e & fib4::NEXTHOP)
    } else {
        None
    }
}
