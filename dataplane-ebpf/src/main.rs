//! The dataplane's kernel programs: an XDP ingress program and a TC egress program.
//!
//! `main` only chains the stages; each stage lives in its own module and every exit of the ingress
//! pipeline is a [`Reason`] that is counted per interface before the verdict is returned.
#![no_std]
#![no_main]

mod interface;
mod maps;
mod parse;
mod stats;

use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_OK},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use dataplane_common::Reason;

/// XDP entry point attached to every interface the dataplane owns.
#[xdp]
pub fn dp_xdp_ingress(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let slot = interface::slot_of(ctx.ingress_ifindex() as u32);
    let (verdict, reason) = ingress(&ctx);
    stats::count_rx(slot, len, reason);
    verdict
}

/// The ingress pipeline. For now every packet goes to the kernel stack; the reason says what the
/// parser made of it.
#[inline(always)]
fn ingress(ctx: &XdpContext) -> (u32, Reason) {
    match parse::parse(ctx) {
        Ok(pkt) => (xdp_action::XDP_PASS, pkt.pass_reason()),
        Err(reason) => (xdp_action::XDP_PASS, reason),
    }
}

/// TC egress entry point (TCX link) on every interface the dataplane owns: counts what the node
/// transmits, including traffic the kernel itself originates.
#[classifier]
pub fn dp_tc_egress(ctx: TcContext) -> i32 {
    // SAFETY: the kernel hands a valid __sk_buff to a classifier for the whole invocation.
    let (ifindex, len) = unsafe { ((*ctx.skb.skb).ifindex, (*ctx.skb.skb).len) };
    stats::count_tx(interface::slot_of(ifindex), len as u64);
    TC_ACT_OK
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path, so this is never reached at run time.
    loop {}
}
