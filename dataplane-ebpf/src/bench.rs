//! Benchmark programs, never attached by the server: the baselines the forwarding path is
//! measured against, and the harness that makes a repeated BPF_PROG_TEST_RUN measure it.
//!
//! A repeated test run hands the program the same buffer every time, as the previous repetition
//! left it: the forwarding path would see its own rewrite (TTL one lower each time, then the
//! time-exceeded path). The harness restores the frame head first and tail-calls the program
//! under test; `dp_bench_harness` -> `dp_bench_pass` measures what the harness adds.

use aya_ebpf::{bindings::xdp_action, macros::xdp, maps::lpm_trie::Key, programs::XdpContext};
use dataplane_common::{route::VRF_BITS, RouteAddrV4, BENCH_FRAME_LEN};

use crate::maps::{BENCH_FRAME, BENCH_LPM_V4, BENCH_TARGETS, ROUTES_V4, TX_PORTS};

/// The IPv4 destination of an untagged Ethernet + IPv4 frame (bytes 30..34).
#[inline(always)]
fn dst_v4(ctx: &XdpContext) -> Option<[u8; 4]> {
    let (data, end) = (ctx.data(), ctx.data_end());
    // Bounds check for the verifier: the destination address lies inside the frame.
    if data + 34 > end {
        return None;
    }
    // SAFETY: bytes 30..34 were checked to be inside the frame.
    Some(unsafe { *((data + 30) as *const [u8; 4]) })
}

/// The route stage's IPv4 lookup, alone: the frame's destination in VRF 0, as `route::lookup`
/// does it (the VRF's flat table when it has one).
#[xdp]
pub fn dp_bench_route_v4(ctx: XdpContext) -> u32 {
    let Some(addr) = dst_v4(&ctx) else { return xdp_action::XDP_ABORTED };
    match crate::route::lookup_v4(0, addr) {
        Some(_) => xdp_action::XDP_PASS,
        None => xdp_action::XDP_DROP,
    }
}

/// The same destination in `ROUTES_V4` (the bench's own VRF key, `BENCH_TRIE_VRF`): the trie a
/// VRF without a flat table uses.
#[xdp]
pub fn dp_bench_trie_v4(ctx: XdpContext) -> u32 {
    let Some(addr) = dst_v4(&ctx) else { return xdp_action::XDP_ABORTED };
    let vrf = dataplane_common::programs::BENCH_TRIE_VRF.to_be_bytes();
    match ROUTES_V4.get(Key::new(VRF_BITS + 32, RouteAddrV4 { vrf, addr })) {
        Some(_) => xdp_action::XDP_PASS,
        None => xdp_action::XDP_DROP,
    }
}

/// Baseline: the same destination in a plain kernel LPM trie of 32-bit keys.
#[xdp]
pub fn dp_bench_lpm_v4(ctx: XdpContext) -> u32 {
    let Some(addr) = dst_v4(&ctx) else { return xdp_action::XDP_ABORTED };
    match BENCH_LPM_V4.get(Key::new(32, addr)) {
        Some(_) => xdp_action::XDP_PASS,
        None => xdp_action::XDP_DROP,
    }
}

/// Does nothing: the floor of any XDP program.
#[xdp]
pub fn dp_bench_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Swaps the Ethernet addresses and redirects through `TX_PORTS[0]`: the least work a forwarding
/// XDP program does (one devmap lookup, a 12-byte rewrite). Swapping twice is the identity, so a
/// repeated test run measures the same work every repetition without the harness.
#[xdp]
pub fn dp_bench_redirect(ctx: XdpContext) -> u32 {
    let (data, end) = (ctx.data(), ctx.data_end());
    // Bounds check for the verifier: both MAC addresses must lie inside the frame.
    if data + 12 > end {
        return xdp_action::XDP_DROP;
    }
    let p = data as *mut [u8; 6];
    // SAFETY: 12 bytes from `data` were checked to be inside the frame.
    unsafe { core::ptr::swap(p, p.add(1)) };
    TX_PORTS.redirect(0, 0).unwrap_or(xdp_action::XDP_DROP)
}

/// Restores the first [`BENCH_FRAME_LEN`] bytes of the frame from `BENCH_FRAME[0]`, then
/// tail-calls `BENCH_TARGETS[0]`. XDP_ABORTED when the frame is shorter or the slot is empty,
/// so a misconfigured benchmark is seen, never measured.
#[xdp]
pub fn dp_bench_harness(ctx: XdpContext) -> u32 {
    let Some(template) = BENCH_FRAME.get(0) else { return xdp_action::XDP_ABORTED };
    let (data, end) = (ctx.data(), ctx.data_end());
    // Bounds check for the verifier: the whole restored head must lie inside the frame.
    if data + BENCH_FRAME_LEN > end {
        return xdp_action::XDP_ABORTED;
    }
    let dst = data as *mut u64;
    let src = template.bytes.as_ptr() as *const u64;
    for i in 0..BENCH_FRAME_LEN / 8 {
        // SAFETY: `i * 8 + 8 <= BENCH_FRAME_LEN` bytes: inside the frame (checked above) and
        // inside the map value; unaligned accesses because neither is 8-byte aligned for sure.
        unsafe { dst.add(i).write_unaligned(src.add(i).read_unaligned()) };
    }
    // SAFETY: a tail call either does not return or returns with nothing changed.
    unsafe { BENCH_TARGETS.tail_call(&ctx, 0) };
    xdp_action::XDP_ABORTED
}
