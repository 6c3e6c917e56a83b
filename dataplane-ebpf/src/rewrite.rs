//! Rewrite stage: MAC addresses, and TTL / hop limit with an incremental IPv4 header checksum
//! update (RFC 1624), in place.

use dataplane_common::NextHop;

use crate::parse::{ptr_at, Frame, Packet, ETH_ALEN, L3};

/// Sets destination and source MAC from the next hop. `false` if the frame is too short (never
/// for a parsed frame; the check is the one the verifier needs before the stores).
#[inline(always)]
pub fn macs<F: Frame>(ctx: &F, nh: &NextHop) -> bool {
    set_macs(ctx, &nh.dst_mac, &nh.src_mac)
}

/// Sets destination and source MAC.
#[inline(always)]
pub fn set_macs<F: Frame>(ctx: &F, dst: &[u8; ETH_ALEN], src: &[u8; ETH_ALEN]) -> bool {
    // Bounds check for the verifier: both MACs lie in the first 12 bytes.
    let Some(p) = ptr_at::<[u8; 2 * ETH_ALEN], F>(ctx, 0) else { return false };
    let p = p as *mut [u8; 2 * ETH_ALEN];
    let mut m = [0u8; 2 * ETH_ALEN];
    m[..ETH_ALEN].copy_from_slice(dst);
    m[ETH_ALEN..].copy_from_slice(src);
    // SAFETY: `p` was bounds-checked above and points into the writable packet.
    unsafe { *p = m };
    true
}

/// Whether the frame's destination MAC is `mac`.
#[inline(always)]
pub fn to_mac<F: Frame>(ctx: &F, mac: &[u8; ETH_ALEN]) -> bool {
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
            let p = p as *mut [u8; 4];
            // SAFETY: bounds-checked above.
            let h = unsafe { *p };
            let old = u16::from_be_bytes([h[0], h[1]]);
            let new = u16::from_be_bytes([h[0] - 1, h[1]]);
            let csum = u16::from_be_bytes([h[2], h[3]]);
            let c = csum_replace(csum, old, new).to_be_bytes();
            // SAFETY: as above.
            unsafe { *p = [h[0] - 1, h[1], c[0], c[1]] };
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
