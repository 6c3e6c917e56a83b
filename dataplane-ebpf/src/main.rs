//! The dataplane's kernel programs: an XDP ingress program and a TC egress program.
//!
//! `main` only chains the stages; each stage lives in its own module and every exit of the ingress
//! pipeline is a [`Reason`] that is counted per interface before the verdict is returned.
#![no_std]
#![no_main]
// Atomic adds on shared map values (see `atomic.rs`).
#![feature(core_intrinsics)]
#![allow(internal_features)]
// Word stores at packet offsets of unknown alignment (`rewrite.rs`).
#![feature(asm_experimental_arch)]

mod atomic;
mod bench;
mod fib;
mod flow;
mod icmp;
mod interface;
mod maps;
mod nexthop;
mod parse;
mod policy;
mod rewrite;
mod route;
mod stats;
mod sweep;

use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_OK, TC_ACT_SHOT},
    helpers::bpf_redirect,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use dataplane_common::{
    policy::{DIR_EGRESS, DIR_INGRESS},
    route::{IFACE_EGRESS_POLICIES, IFACE_FLOWS, IFACE_KERNEL_FIB, IFACE_POLICY_IN},
    InterfaceConfig, Reason,
};
use nexthop::Resolved;
use parse::{Packet, L3};

use crate::maps::TX_PORTS;

/// XDP entry point attached to every interface the dataplane owns.
#[xdp]
pub fn dp_xdp_ingress(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let Some(cfg) = interface::config(ctx.ingress_ifindex() as u32) else {
        stats::count_rx(None, len, Reason::UnknownInterface);
        return xdp_action::XDP_PASS;
    };
    let (verdict, reason) = ingress(&ctx, cfg);
    stats::count_rx(Some(cfg.slot), len, reason);
    verdict
}

/// The ingress pipeline: parse -> ingress policy -> routable? -> flow (flow mode) -> route and
/// next hop, or the kernel's FIB (kernel-FIB VRF) -> TTL (ICMP time exceeded) -> MTU -> egress
/// policy -> rewrite -> redirect. What the dataplane does not forward goes to the kernel stack,
/// except drops and punted flow misses (see [`verdict_for`]).
#[inline(always)]
fn ingress(ctx: &XdpContext, cfg: &InterfaceConfig) -> (u32, Reason) {
    const PASS: u32 = xdp_action::XDP_PASS;
    let mut pkt = Packet::new();
    if let Err(reason) = parse::parse(ctx, &mut pkt) {
        return (PASS, reason);
    }
    let len = (ctx.data_end() - ctx.data()) as u64;
    if matches!(pkt.l3, L3::Ipv4 | L3::Ipv6) && cfg.flags & IFACE_POLICY_IN != 0 {
        if let Err(reason) = policy::check(cfg.slot, DIR_INGRESS, &pkt, len) {
            if reason == Reason::PassPolicyPunt {
                // To the controller too (rate limited), as a flow miss with reason PUNT.
                flow::punt(ctx, &pkt, cfg.slot, cfg.vrf, len as u32);
            }
            return (verdict_for(reason), reason);
        }
    }
    if let Err(reason) = routable(ctx, &pkt, cfg) {
        return (PASS, reason);
    }
    let decision = if cfg.flags & IFACE_FLOWS != 0 {
        flow::stage(ctx, &pkt, cfg.slot, cfg.vrf, len)
    } else {
        flow::Decision::Route
    };
    // Our next hop, or None for the kernel's FIB.
    let nh_slot = match decision {
        flow::Decision::Forward(slot) => Some(slot),
        flow::Decision::Stop(reason) => return (verdict_for(reason), reason),
        flow::Decision::Route if cfg.flags & IFACE_KERNEL_FIB != 0 => None,
        flow::Decision::Route => match route::lookup(cfg, &pkt) {
            Some(slot) => Some(slot),
            None => return (PASS, Reason::NoRoute),
        },
    };
    // Both ways end in one hop and one shared tail below: the verifier walks the tail (egress
    // policy, rewrite, redirect) once, not once per way.
    let hop = match nh_slot {
        Some(nh_slot) => match nexthop::resolve(nh_slot, &pkt) {
            Resolved::Encap(slot, nh) => {
                Hop { tx_slot: nh.tx_slot, mtu: nh.mtu, macs: rewrite::nexthop_macs(nh), nexthop_slot: slot }
            }
            Resolved::Stop(Reason::DropDiscard) => return (xdp_action::XDP_DROP, Reason::DropDiscard),
            Resolved::Stop(reason) => return (PASS, reason),
        },
        None => {
            let mut hop = Hop::NONE;
            let r = fib::lookup(ctx, &pkt, cfg, &mut hop);
            if r != 0 {
                return ((r >> 32) as u32, Reason::from_u32(r as u32).unwrap_or(Reason::PassFibNotForwarded));
            }
            hop
        }
    };
    if pkt.ttl <= 1 {
        if icmp::time_exceeded(ctx, &pkt, cfg) {
            // Back out of the ingress interface through the devmap, as forwarded frames leave:
            // XDP_TX from a veth whose traffic arrived as skbs was seen to vanish.
            return match TX_PORTS.redirect(cfg.slot, 0) {
                Ok(action) => (action, Reason::IcmpTimeExceeded),
                Err(_) => (xdp_action::XDP_DROP, Reason::DropNoTxPort),
            };
        }
        return (PASS, Reason::PassTtlExceeded);
    }
    if (pkt.l3_end - pkt.l3_off) as u32 > hop.mtu {
        return (PASS, Reason::PassMtu);
    }
    if cfg.flags & IFACE_EGRESS_POLICIES != 0 {
        if let Err(reason) = policy::check(hop.tx_slot, DIR_EGRESS, &pkt, len) {
            return (verdict_for(reason), reason);
        }
    }
    if !rewrite::decrement_ttl(ctx, &pkt) || !rewrite::set_macs(ctx, &hop.macs) {
        return (PASS, parse::ip_truncated(pkt.l3));
    }
    match TX_PORTS.redirect(hop.tx_slot, 0) {
        Ok(action) => {
            if hop.nexthop_slot != Hop::NO_NEXTHOP {
                stats::count_nexthop(hop.nexthop_slot, (ctx.data_end() - ctx.data()) as u64);
            }
            (action, Reason::Forwarded)
        }
        Err(_) => (xdp_action::XDP_DROP, Reason::DropNoTxPort),
    }
}

/// Where a packet the dataplane forwards goes.
pub(crate) struct Hop {
    /// Egress interface slot (devmap key).
    pub tx_slot: u32,
    /// The egress interface's MTU.
    pub mtu: u32,
    /// Destination + source MAC.
    pub macs: rewrite::MacWords,
    /// The next hop of ours it leaves through (its counters count the packet), or `NO_NEXTHOP`.
    pub nexthop_slot: u32,
}

impl Hop {
    /// A hop the kernel's FIB chose: no next hop of ours.
    pub const NO_NEXTHOP: u32 = u32::MAX;
    pub const NONE: Self = Self { tx_slot: 0, mtu: 0, macs: [0; 3], nexthop_slot: Self::NO_NEXTHOP };
}

/// XDP_DROP for drop reasons and punted flow misses, XDP_PASS for the others.
#[inline(always)]
pub(crate) fn verdict_for(reason: Reason) -> u32 {
    match reason.kind() {
        dataplane_common::reason::ReasonKind::Drop => xdp_action::XDP_DROP,
        // Captured in its miss event; re-injected by the server once the flow is installed.
        _ if reason == Reason::FlowMissPunted => xdp_action::XDP_DROP,
        _ => xdp_action::XDP_PASS,
    }
}

/// `Err(reason)` for packets the dataplane must not route: non-IP, VLAN-tagged, multicast,
/// broadcast, link-local, in a frame for another MAC, or addressed to the interface itself.
#[inline(always)]
fn routable<F: parse::Frame>(ctx: &F, pkt: &Packet, cfg: &InterfaceConfig) -> Result<(), Reason> {
    use dataplane_common::route::{IFACE_HAS_IPV4, IFACE_HAS_IPV6};
    match pkt.l3 {
        L3::Other(_) => Err(Reason::PassNonIp),
        _ if pkt.vlan_tags != 0 => Err(Reason::PassVlan),
        _ if never_routed_dst(pkt) => Err(Reason::PassMulticast),
        // Only frames sent to this interface's MAC: on a promiscuous or bridged port, unicast
        // frames for other hosts are the kernel's to drop, as without the dataplane.
        _ if !rewrite::dst_mac_is(ctx, &cfg.mac) => Err(Reason::PassOtherHost),
        L3::Ipv4 => {
            if cfg.flags & IFACE_HAS_IPV4 != 0 && pkt.dst[..4] == cfg.ipv4 {
                Err(Reason::PassLocal)
            } else {
                Ok(())
            }
        }
        L3::Ipv6 => {
            if cfg.flags & IFACE_HAS_IPV6 != 0 && pkt.dst == cfg.ipv6 {
                Err(Reason::PassLocal)
            } else {
                Ok(())
            }
        }
    }
}

/// Multicast, broadcast, reserved or link-local destination: never routed.
#[inline(always)]
fn never_routed_dst(pkt: &Packet) -> bool {
    let d = pkt.dst;
    match pkt.l3 {
        // 224/4 multicast, 240/4 reserved and 255.255.255.255, 169.254/16 link-local.
        L3::Ipv4 => d[0] >= 224 || (d[0] == 169 && d[1] == 254),
        // ff00::/8 multicast, fe80::/10 link-local.
        L3::Ipv6 => d[0] == 0xff || (d[0] == 0xfe && d[1] & 0xc0 == 0x80),
        L3::Other(_) => false,
    }
}

/// TC egress entry point (TCX link) on every interface the dataplane owns. Counts what the node
/// transmits, and routes what the node itself originates: the same route and next-hop lookup as
/// ingress, in the egress interface's VRF, with MAC rewrite (no TTL change: the node is the
/// source). Traffic XDP redirected never comes through here (it bypasses the qdisc layer).
#[classifier]
pub fn dp_tc_egress(ctx: TcContext) -> i32 {
    // SAFETY: the kernel hands a valid __sk_buff to a classifier for the whole invocation.
    let (ifindex, len) = unsafe { ((*ctx.skb.skb).ifindex, (*ctx.skb.skb).len) };
    let Some(cfg) = interface::config(ifindex) else {
        stats::count_tx(None, len as u64);
        return TC_ACT_OK;
    };
    stats::count_tx(Some(cfg.slot), len as u64);
    egress(&ctx, cfg, ifindex)
}

#[inline(always)]
fn egress(ctx: &TcContext, cfg: &InterfaceConfig, ifindex: u32) -> i32 {
    // Headers may sit in paged data: make the first bytes direct-access (no-op when linear).
    // SAFETY: reading the skb length from the context.
    let len = unsafe { (*ctx.skb.skb).len };
    let _ = ctx.pull_data(if len < 128 { len } else { 128 });
    let mut pkt = Packet::new();
    if parse::parse(ctx, &mut pkt).is_err() {
        return TC_ACT_OK;
    }
    // Egress frames carry the kernel's choice of MAC, so only the L3 checks apply here.
    if pkt.vlan_tags != 0 || !matches!(pkt.l3, L3::Ipv4 | L3::Ipv6) {
        return TC_ACT_OK;
    }
    if let Err(Reason::DropPolicy | Reason::DropPolicyDefault) = policy::check(cfg.slot, DIR_EGRESS, &pkt, len as u64) {
        return TC_ACT_SHOT;
    }
    // Kernel-FIB VRF: the kernel already routed what the node sends, by the same FIB.
    if never_routed_dst(&pkt) || cfg.flags & IFACE_KERNEL_FIB != 0 {
        return TC_ACT_OK;
    }
    let Some(nh_slot) = route::lookup(cfg, &pkt) else { return TC_ACT_OK };
    match nexthop::resolve(nh_slot, &pkt) {
        Resolved::Encap(slot, nh) => {
            if !rewrite::set_nexthop_macs(ctx, nh) {
                return TC_ACT_OK;
            }
            stats::count_nexthop(slot, len as u64);
            if nh.ifindex == ifindex {
                TC_ACT_OK
            } else {
                // SAFETY: plain helper call; a bad ifindex makes the kernel drop the skb.
                unsafe { bpf_redirect(nh.ifindex, 0) as i32 }
            }
        }
        Resolved::Stop(Reason::DropDiscard) => TC_ACT_SHOT,
        Resolved::Stop(_) => TC_ACT_OK,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path, so this is never reached at run time.
    loop {}
}
