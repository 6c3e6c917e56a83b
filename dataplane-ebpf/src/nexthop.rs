//! Next-hop stage: the route's next hop from an array indexed by the slot the server assigned;
//! ECMP groups pick a member by a hash of the flow, so one flow always takes one member.

use dataplane_common::{
    route::{nexthop_kind, ECMP_MAX},
    NextHop, Reason,
};

use crate::{maps::NEXTHOPS, parse::Packet};

/// What the route resolved to.
pub enum Resolved {
    /// Rewrite and send: the slot (for counters) and the next hop (in the map: no copy).
    Encap(u32, &'static NextHop),
    /// Do not forward; the reason says why.
    Stop(Reason),
}

#[inline(always)]
fn get(slot: u32) -> Option<&'static NextHop> {
    // SAFETY: array map values live as long as the program; the server replaces a next hop with
    // one whole-value update, so a reader sees the old or the new one.
    NEXTHOPS.get(slot).map(|v| unsafe { &*(v as *const NextHop) })
}

/// Resolves next-hop `slot`, following one level of ECMP.
#[inline(always)]
pub fn resolve(slot: u32, pkt: &Packet) -> Resolved {
    let Some(nh) = get(slot) else { return Resolved::Stop(Reason::PassNextHopInvalid) };
    let (slot, nh) = if nh.kind == nexthop_kind::ECMP {
        let n = nh.member_count as usize;
        if n == 0 || n > ECMP_MAX {
            return Resolved::Stop(Reason::PassNextHopInvalid);
        }
        // Bounds check for the verifier: `idx < n <= ECMP_MAX`, which LLVM knows and would drop
        // the check below for, while the verifier cannot bound a modulo: hide `idx` from LLVM.
        let idx = core::hint::black_box((flow_hash(pkt) as usize) % n);
        let Some(&member) = nh.members.get(idx) else { return Resolved::Stop(Reason::PassNextHopInvalid) };
        let Some(m) = get(member) else { return Resolved::Stop(Reason::PassNextHopInvalid) };
        (member, m)
    } else {
        (slot, nh)
    };
    match nh.kind {
        nexthop_kind::ENCAP => Resolved::Encap(slot, nh),
        nexthop_kind::DISCARD => Resolved::Stop(Reason::DropDiscard),
        nexthop_kind::RECEIVE => Resolved::Stop(Reason::PassReceive),
        nexthop_kind::UNRESOLVED => Resolved::Stop(Reason::PassNeighUnresolved),
        // Empty slot, or an ECMP member that is itself a group (the server forbids it).
        _ => Resolved::Stop(Reason::PassNextHopInvalid),
    }
}

/// A hash of the flow: addresses and, unless the packet is a fragment, protocol and ports.
/// Symmetric inputs are not needed (each direction routes on its own), stability is: the same
/// flow always hashes the same, on every CPU and after a restart.
#[inline(always)]
pub fn flow_hash(pkt: &Packet) -> u32 {
    // Fragmented: addresses only. Later IPv6 fragments may not even show the upper-layer
    // protocol (the walk stops at their fragment header), so it stays out of the hash too.
    let proto = if pkt.is_fragment { 0 } else { pkt.ip_proto as u32 };
    let mut h: u32 = 0x9e37_79b9 ^ proto;
    let mut i = 0;
    while i < 16 {
        let s = u32::from_ne_bytes([pkt.src[i], pkt.src[i + 1], pkt.src[i + 2], pkt.src[i + 3]]);
        let d = u32::from_ne_bytes([pkt.dst[i], pkt.dst[i + 1], pkt.dst[i + 2], pkt.dst[i + 3]]);
        h = mix(h, s);
        h = mix(h, d);
        i += 4;
    }
    if !pkt.is_fragment {
        h = mix(h, ((pkt.src_port as u32) << 16) | pkt.dst_port as u32);
    }
    // Final avalanche (murmur3 fmix32) so that `% n` sees well-spread low bits.
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[inline(always)]
fn mix(h: u32, v: u32) -> u32 {
    let k = v.wrapping_mul(0xcc9e_2d51).rotate_left(15).wrapping_mul(0x1b87_3593);
    (h ^ k).rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64)
}
