//! ICMP errors built in XDP: time exceeded (IPv4 type 11, ICMPv6 type 3), which the ingress
//! program sends back out of the ingress interface through `TX_PORTS`. The dataplane forwards
//! with the kernel's forwarding off, so the kernel would never send these itself.
//!
//! Sizes are constants (the quote is the offending IP header plus 8 bytes, IPv4 without options),
//! which keeps every checksum loop and bounds check fixed for the verifier. Frames that do not
//! fit (VLAN tags, IPv4 options, short datagrams, no interface address, an ICMP error or a
//! non-echo ICMP message, which must never trigger another error) are left to the kernel.

use aya_ebpf::{
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use dataplane_common::{
    route::{IFACE_HAS_IPV4, IFACE_HAS_IPV6},
    InterfaceConfig,
};

use crate::parse::{ptr_at, Packet, ETH_P_IPV4, ETH_P_IPV6, IPPROTO_ICMP, IPPROTO_ICMPV6, L3};

const ETH: usize = 14;
/// IPv4: new IP header + ICMP header in front of the quote (original header + 8 bytes).
const V4_QUOTE: usize = 28;
const V4_NEW: usize = 28;
/// IPv6: new IPv6 header + ICMPv6 header in front of the quote (original header + 8 bytes).
const V6_QUOTE: usize = 48;
const V6_NEW: usize = 48;
const TTL: u8 = 64;

/// Turns the frame into an ICMP time exceeded for its sender. `true` when the frame now holds
/// the error, to be sent back out of the ingress interface; `false` leaves the frame untouched.
///
/// Not inlined: a BPF-to-BPF call keeps this rare path's temporaries out of the entry point's
/// stack frame (the verifier limits the combined frames of a call chain to 512 bytes).
#[inline(never)]
pub fn time_exceeded(ctx: &XdpContext, pkt: &Packet, cfg: &InterfaceConfig) -> bool {
    if pkt.vlan_tags != 0 || !may_answer(pkt) {
        return false;
    }
    match pkt.l3 {
        L3::Ipv4 if cfg.flags & IFACE_HAS_IPV4 != 0 => v4(ctx, pkt, cfg),
        L3::Ipv6 if cfg.flags & IFACE_HAS_IPV6 != 0 => v6(ctx, pkt, cfg),
        _ => false,
    }
}

/// RFC 1812 4.3.2.7 / RFC 4443 2.4(e): no error about an error (only echo requests and
/// non-ICMP traffic qualify among ICMP messages here), nor about a non-first fragment.
#[inline(always)]
fn may_answer(pkt: &Packet) -> bool {
    if pkt.non_first_fragment || !unicast_source(pkt) {
        return false;
    }
    match (pkt.l3, pkt.ip_proto) {
        // src_port holds the ICMP type: echo request.
        (L3::Ipv4, IPPROTO_ICMP) => pkt.src_port == 8,
        (L3::Ipv6, IPPROTO_ICMPV6) => pkt.src_port == 128,
        _ => true,
    }
}

/// RFC 1812 4.3.2.7 / RFC 4443 2.4(e): errors go only to a single host: not to an unspecified,
/// loopback, multicast, broadcast or reserved source.
#[inline(always)]
fn unicast_source(pkt: &Packet) -> bool {
    let s = pkt.src;
    match pkt.l3 {
        L3::Ipv4 => s[0] != 0 && s[0] != 127 && s[0] < 224,
        L3::Ipv6 => {
            let unspecified_or_loopback = s[..15].iter().all(|b| *b == 0) && s[15] <= 1;
            s[0] != 0xff && !unspecified_or_loopback
        }
        L3::Other(_) => false,
    }
}

/// Shrinks the frame to `keep` bytes, then grows its head by `grow` bytes.
#[inline(always)]
fn reshape(ctx: &XdpContext, keep: usize, grow: usize) -> bool {
    let len = ctx.data_end() - ctx.data();
    if len < keep {
        return false;
    }
    // SAFETY: helpers on the program's own context.
    unsafe {
        if len > keep && bpf_xdp_adjust_tail(ctx.ctx, -((len - keep) as i32)) != 0 {
            return false;
        }
        bpf_xdp_adjust_head(ctx.ctx, -(grow as i32)) == 0
    }
}

#[inline(always)]
fn v4(ctx: &XdpContext, pkt: &Packet, cfg: &InterfaceConfig) -> bool {
    // IPv4 without options, and the 8 bytes after the header present in the datagram.
    if pkt.l3_off != ETH || pkt.l4_off != ETH + 20 || pkt.l3_end < ETH + V4_QUOTE {
        return false;
    }
    let Some(eth) = ptr_at::<[u8; 12], _>(ctx, 0) else { return false };
    // SAFETY: bounds-checked above.
    let eth = unsafe { *eth };
    if !reshape(ctx, ETH + V4_QUOTE, V4_NEW) {
        return false;
    }
    const TOTAL: usize = ETH + V4_NEW + V4_QUOTE;
    // Bounds check for the verifier: the whole new frame, after both adjustments.
    let Some(p) = ptr_at::<[u8; TOTAL], _>(ctx, 0) else { return false };
    let p = p as *mut [u8; TOTAL];
    // SAFETY: bounds-checked above; XDP frames are writable.
    let f = unsafe { &mut *p };
    f[0..6].copy_from_slice(&eth[6..12]);
    f[6..12].copy_from_slice(&cfg.mac);
    f[12..14].copy_from_slice(&ETH_P_IPV4.to_be_bytes());
    let ip = ETH;
    let total = (V4_NEW + V4_QUOTE) as u16;
    // Byte stores, not a copied array literal: a literal would be built on the BPF stack.
    f[ip] = 0x45;
    f[ip + 1] = 0xc0;
    f[ip + 2] = (total >> 8) as u8;
    f[ip + 3] = total as u8;
    zero(&mut f[ip + 4..ip + 8]);
    f[ip + 8] = TTL;
    f[ip + 9] = IPPROTO_ICMP;
    zero(&mut f[ip + 10..ip + 12]);
    f[ip + 12..ip + 16].copy_from_slice(&cfg.ipv4);
    f[ip + 16..ip + 20].copy_from_slice(&pkt.src[..4]);
    let c = fold(sum16(&f[ip..ip + 20], 0)).to_be_bytes();
    f[ip + 10] = c[0];
    f[ip + 11] = c[1];
    let icmp = ip + 20;
    f[icmp] = 11;
    zero(&mut f[icmp + 1..icmp + 8]);
    let c = fold(sum16(&f[icmp..TOTAL], 0)).to_be_bytes();
    f[icmp + 2] = c[0];
    f[icmp + 3] = c[1];
    true
}

#[inline(always)]
fn v6(ctx: &XdpContext, pkt: &Packet, cfg: &InterfaceConfig) -> bool {
    if pkt.l3_off != ETH || pkt.l3_end < ETH + V6_QUOTE {
        return false;
    }
    let Some(eth) = ptr_at::<[u8; 12], _>(ctx, 0) else { return false };
    // SAFETY: bounds-checked above.
    let eth = unsafe { *eth };
    if !reshape(ctx, ETH + V6_QUOTE, V6_NEW) {
        return false;
    }
    const TOTAL: usize = ETH + V6_NEW + V6_QUOTE;
    // Bounds check for the verifier: the whole new frame, after both adjustments.
    let Some(p) = ptr_at::<[u8; TOTAL], _>(ctx, 0) else { return false };
    let p = p as *mut [u8; TOTAL];
    // SAFETY: bounds-checked above; XDP frames are writable.
    let f = unsafe { &mut *p };
    f[0..6].copy_from_slice(&eth[6..12]);
    f[6..12].copy_from_slice(&cfg.mac);
    f[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
    let ip = ETH;
    let plen = (8 + V6_QUOTE) as u16;
    f[ip] = 0x60;
    zero(&mut f[ip + 1..ip + 4]);
    f[ip + 4] = (plen >> 8) as u8;
    f[ip + 5] = plen as u8;
    f[ip + 6] = IPPROTO_ICMPV6;
    f[ip + 7] = TTL;
    f[ip + 8..ip + 24].copy_from_slice(&cfg.ipv6);
    f[ip + 24..ip + 40].copy_from_slice(&pkt.src);
    let icmp = ip + 40;
    f[icmp] = 3;
    zero(&mut f[icmp + 1..icmp + 8]);
    // Pseudo-header: source, destination, upper-layer length, next header.
    let mut sum = sum16(&f[ip + 8..ip + 40], 0);
    sum += plen as u32 + IPPROTO_ICMPV6 as u32;
    let c = fold(sum16(&f[icmp..TOTAL], sum)).to_be_bytes();
    f[icmp + 2] = c[0];
    f[icmp + 3] = c[1];
    true
}

#[inline(always)]
fn zero(b: &mut [u8]) {
    for x in b {
        *x = 0;
    }
}

/// One's-complement sum of big-endian 16-bit words (even length), added to `sum`.
#[inline(always)]
fn sum16(b: &[u8], mut sum: u32) -> u32 {
    let mut i = 0;
    while i + 1 < b.len() {
        sum += u16::from_be_bytes([b[i], b[i + 1]]) as u32;
        i += 2;
    }
    sum
}

/// Folds the carries and complements: the checksum field value.
#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}
