//! Rewrite stage: MAC addresses, and TTL / hop limit with an incremental IPv4 header checksum
//! update (RFC 1624), in place.

use dataplane_common::NextHop;

use crate::parse::{load32, ptr_at, store32, Frame, Packet, ETH_ALEN, L3};

/// The 12 bytes of an Ethernet header's destination + source MAC, as three words in memory
/// order: copied with three loads and three stores instead of twelve byte moves.
pub type MacWords = [u32; 3];

/// Destination + source MAC of a next hop, read straight from its map value.
#[inline(always)]
pub fn nexthop_macs(nh: &NextHop) -> MacWords {
    // SAFETY: `dst_mac` and `src_mac` are adjacent at a 4-byte aligned offset of the repr(C)
    // `NextHop` (asserted in dataplane-common), so 12 bytes from `dst_mac` are three aligned words.
    unsafe { core::ptr::read(nh.dst_mac.as_ptr() as *const MacWords) }
}

/// [`MacWords`] from two addresses.
#[inline(always)]
pub fn mac_words(dst: &[u8; ETH_ALEN], src: &[u8; ETH_ALEN]) -> MacWords {
    [
        u32::from_ne_bytes([dst[0], dst[1], dst[2], dst[3]]),
        u32::from_ne_bytes([dst[4], dst[5], src[0], src[1]]),
        u32::from_ne_bytes([src[2], src[3], src[4], src[5]]),
    ]
}

/// Sets destination and source MAC from the next hop. `false` if the frame is too short (never
/// for a parsed frame; the check is the one the verifier needs before the stores).
#[inline(always)]
pub fn set_nexthop_macs<F: Frame>(ctx: &F, nh: &NextHop) -> bool {
    set_macs(ctx, &nexthop_macs(nh))
}

/// Sets destination and source MAC: three word stores (packet data may be unaligned for them;
/// the verifier allows it where the CPU does, and the JIT emits plain moves).
#[inline(always)]
pub fn set_macs<F: Frame>(ctx: &F, m: &MacWords) -> bool {
    // Bounds check for the verifier: both MACs lie in the first 12 bytes.
    let Some(p) = ptr_at::<[u8; 2 * ETH_ALEN], F>(ctx, 0) else { return false };
    // SAFETY: `p` was bounds-checked above for all 12 bytes of the writable packet.
    unsafe {
        store32::<0>(p as *mut u8, m[0]);
        store32::<4>(p as *mut u8, m[1]);
        store32::<8>(p as *mut u8, m[2]);
    }
    true
}

/// Whether the frame's destination MAC is `mac`.
#[inline(always)]
pub fn dst_mac_is<F: Frame>(ctx: &F, mac: &[u8; ETH_ALEN]) -> bool {
    // Bounds check for the verifier: the destination MAC is the first 6 bytes.
    match ptr_at::<[u8; ETH_ALEN], F>(ctx, 0) {
        // SAFETY: bounds-checked above.
        Some(p) => {
            let dst: [u8; ETH_ALEN] = unsafe { *p };
            dst == *mac
        }
        None => false,
    }
}

/// Decrements the TTL (IPv4, fixing the header checksum) or hop limit (IPv6). The caller has
/// checked it is above 1.
#[inline(always)]
pub fn decrement_ttl<F: Frame>(ctx: &F, pkt: &Packet) -> bool {
    match pkt.l3 {
        L3::Ipv4 => {
            // TTL, protocol, checksum: bytes 8..12 of the IPv4 header. Bounds check for the
            // verifier at the parser's l3_off (a constant per VLAN depth).
            let Some(p) = ptr_at::<[u8; 4], F>(ctx, pkt.l3_off + 8) else { return false };
            let p = p as *mut u8;
            // SAFETY: bounds-checked above: one word load and one word store, not four each.
            let h = unsafe { load32::<0>(p) }.to_ne_bytes();
            let old = u16::from_be_bytes([h[0], h[1]]);
            let new = u16::from_be_bytes([h[0] - 1, h[1]]);
            let csum = u16::from_be_bytes([h[2], h[3]]);
            let c = csum_replace(csum, old, new).to_be_bytes();
            // SAFETY: as above.
            unsafe { store32::<0>(p, u32::from_ne_bytes([h[0] - 1, h[1], c[0], c[1]])) };
            true
        }
        L3::Ipv6 => {
            // Hop limit: byte 7 of the IPv6 header; IPv6 has no header checksum.
            let Some(p) = ptr_at::<u8, F>(ctx, pkt.l3_off + 7) else { return false };
            let p = p as *mut u8;
            // SAFETY: bounds-checked above.
            unsafe { *p -= 1 };
            true
        }
        L3::Other(_) => false,
    }
}

/// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), for one 16-bit word changing from `old` to `new`.
#[inline(always)]
pub fn csum_replace(csum: u16, old: u16, new: u16) -> u16 {
    let mut sum = (!csum as u32) + (!old as u32) + (new as u32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}
