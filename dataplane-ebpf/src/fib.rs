//! Kernel-FIB stage: for interfaces whose VRF forwards by the kernel's own routing and neighbour
//! tables, `bpf_fib_lookup` replaces the route and next-hop stages. Whatever the kernel would not
//! forward as a plain L3 hop (no neighbour yet, local, unreachable, MTU, tunnel routes) goes to
//! the kernel stack, which then does what it always does.

use aya_ebpf::{
    bindings::{bpf_fib_lookup as FibParams, xdp_action, BPF_FIB_LOOKUP_DIRECT, BPF_FIB_LOOKUP_TBID},
    helpers::bpf_fib_lookup,
    programs::XdpContext,
};
use dataplane_common::{InterfaceConfig, Reason};

use crate::{
    interface,
    parse::{ip_truncated, ptr_at, Packet, L3},
    Hop,
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

// bpf_fib_lookup return codes (uapi `BPF_FIB_LKUP_RET_*`).
const RET_SUCCESS: i64 = 0;
const RET_BLACKHOLE: i64 = 1;
const RET_NO_NEIGH: i64 = 7;
const RET_FRAG_NEEDED: i64 = 8;

/// Looks `pkt` up in the kernel's FIB and fills `hop` (egress slot, MTU, MACs). Returns 0 when
/// the packet is to be forwarded, otherwise the verdict in the high 32 bits and the reason in the
/// low 32: a plain integer, because this is a BPF-to-BPF call (`inline(never)`: the 64-byte
/// lookup parameters get their own stack frame instead of growing the ingress frame past 512
/// bytes).
#[inline(never)]
pub fn lookup(ctx: &XdpContext, pkt: &Packet, cfg: &InterfaceConfig, hop: &mut Hop) -> u64 {
    match try_lookup(ctx, pkt, cfg, hop) {
        Ok(()) => 0,
        Err((verdict, reason)) => ((verdict as u64) << 32) | reason as u32 as u64,
    }
}

#[inline(always)]
fn try_lookup(ctx: &XdpContext, pkt: &Packet, cfg: &InterfaceConfig, hop: &mut Hop) -> Result<(), (u32, Reason)> {
    const PASS: u32 = xdp_action::XDP_PASS;
    // SAFETY: all-zero is a valid value of this plain C struct.
    let mut p: FibParams = unsafe { core::mem::zeroed() };
    // First 4 bytes of the IP header: IPv4 version/IHL + TOS, IPv6 version/class/flow label.
    // Bounds check for the verifier (the parser already read further than this).
    let Some(hdr) = ptr_at::<[u8; 4], XdpContext>(ctx, pkt.l3_off) else { return Err((PASS, ip_truncated(pkt.l3))) };
    // SAFETY: bounds-checked above.
    let hdr = unsafe { *hdr };
    match pkt.l3 {
        L3::Ipv4 => {
            p.family = AF_INET;
            p.__bindgen_anon_2.tos = hdr[1];
            p.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes([pkt.src[0], pkt.src[1], pkt.src[2], pkt.src[3]]);
            p.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes([pkt.dst[0], pkt.dst[1], pkt.dst[2], pkt.dst[3]]);
        }
        L3::Ipv6 => {
            p.family = AF_INET6;
            // Traffic class and flow label, without the version nibble.
            p.__bindgen_anon_2.flowinfo = u32::from_ne_bytes([hdr[0] & 0x0f, hdr[1], hdr[2], hdr[3]]);
            p.__bindgen_anon_3.ipv6_src = words(&pkt.src);
            p.__bindgen_anon_4.ipv6_dst = words(&pkt.dst);
        }
        L3::Other(_) => return Err((PASS, Reason::PassNonIp)),
    }
    p.l4_protocol = pkt.ip_proto;
    if !pkt.non_first_fragment {
        p.sport = pkt.src_port.to_be();
        p.dport = pkt.dst_port.to_be();
    }
    // The datagram's length, so the kernel checks it against the egress MTU.
    p.__bindgen_anon_1.tot_len = (pkt.l3_end - pkt.l3_off) as u16;
    p.ifindex = ctx.ingress_ifindex() as u32;
    let mut flags = 0;
    // Only kernel-FIB interfaces come here: `table` is their kernel table.
    if cfg.table != 0 {
        // One table, no policy rules: the VRF names its kernel table.
        p.__bindgen_anon_5.tbid = cfg.table;
        flags = BPF_FIB_LOOKUP_DIRECT | BPF_FIB_LOOKUP_TBID;
    }
    // SAFETY: `p` is a valid, fully initialised parameter block of the size passed.
    let rc = unsafe { bpf_fib_lookup(ctx.ctx as *mut _, &mut p, core::mem::size_of::<FibParams>() as i32, flags) };
    match rc {
        RET_SUCCESS => {}
        RET_NO_NEIGH => return Err((PASS, Reason::PassFibNoNeigh)),
        RET_FRAG_NEEDED => return Err((PASS, Reason::PassFibMtu)),
        RET_BLACKHOLE => return Err((xdp_action::XDP_DROP, Reason::DropFibBlackhole)),
        _ => return Err((PASS, Reason::PassFibNotForwarded)),
    }
    let Some(out) = interface::config(p.ifindex) else { return Err((PASS, Reason::PassFibForeignEgress)) };
    hop.tx_slot = out.slot;
    hop.mtu = out.mtu;
    hop.macs = crate::rewrite::mac_words(&p.dmac, &p.smac);
    Ok(())
}

#[inline(always)]
fn words(a: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
        u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
        u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
        u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
    ]
}
