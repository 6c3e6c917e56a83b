//! Flow stage: with flow mode on for the ingress interface, the flow (VRF + 5-tuple) decides;
//! a miss holds the flow and punts its first packet to the server through a ring buffer, within
//! the interface's punt rate and the global HOLD cap.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
    programs::XdpContext,
    EbpfContext,
};
use dataplane_common::{
    flow::{
        FlowKeyV4, FlowKeyV6, FlowMissEvent, FlowValue, DEFAULT_PUNT_BURST, DEFAULT_PUNT_RATE, FLOW_CAPTURE, FLOW_DROP,
        FLOW_FORWARD, FLOW_HOLD, MAX_PUNT_RATE, MISS_NO_FLOW, MISS_PUNT_RULE, REQUEST_CPU_SHIFT,
    },
    globals::{HOLDS_CREATED, HOLDS_RESOLVED},
    Reason,
};

use crate::{
    atomic,
    maps::{FLOWS_V4, FLOWS_V6, FLOW_CONFIG, FLOW_MISSES, FLOW_SEQ, GLOBALS, PUNT_BUCKETS},
    parse::{Packet, L3},
};

/// What the flow stage decided.
pub enum Decision {
    /// No flow decision (flow mode off, or miss action "forward by route"): route as usual.
    Route,
    /// Forward through this next-hop slot.
    Forward(u32),
    /// Stop here for this reason.
    Stop(Reason),
}

// `flow_step`'s result kinds (its high 32 bits): route as usual; forward through the next-hop
// slot in the low 32 bits; stop for the reason in the low 32 bits.
const ROUTE: u64 = 0;
const FORWARD: u64 = 1;
const STOP: u64 = 2;

/// The flow decision for an IP packet received on interface `slot` (VRF `vrf`) of `len` bytes.
#[inline(always)]
pub fn stage(ctx: &XdpContext, pkt: &Packet, slot: u32, vrf: u32, len: u64) -> Decision {
    match FLOW_CONFIG.get(slot) {
        Some(fc) if fc.enabled != 0 => {}
        _ => return Decision::Route,
    }
    let r = flow_step(ctx, pkt, slot, vrf, len as u32);
    let value = r as u32;
    match r >> 32 {
        FORWARD => Decision::Forward(value),
        STOP => match Reason::from_u32(value) {
            Some(reason) => Decision::Stop(reason),
            None => Decision::Route,
        },
        _ => Decision::Route,
    }
}

/// The flow stage proper, as `(kind << 32) | value`: a BPF-to-BPF call with its own stack frame
/// (the entry point's is nearly full), and plain integers across it (no `Result` in BTF).
#[inline(never)]
fn flow_step(ctx: &XdpContext, pkt: &Packet, slot: u32, vrf: u32, len: u32) -> u64 {
    let Some(fc) = FLOW_CONFIG.get(slot) else { return ROUTE };
    let (k4, k6) = keys(pkt, vrf);
    let found = match pkt.l3 {
        L3::Ipv4 => FLOWS_V4.get_ptr_mut(k4),
        L3::Ipv6 => FLOWS_V6.get_ptr_mut(k6),
        L3::Other(_) => return ROUTE,
    };
    let miss_forward = fc.miss_forward != 0;
    let fallback = |reason: Reason| if miss_forward { ROUTE } else { (STOP << 32) | reason as u64 };
    if let Some(v) = found {
        // SAFETY: LRU hash values stay valid for the program run; counters are shared with
        // other CPUs, hence the atomics; `last_seen_ns` is a plain racy store by design.
        let v = unsafe { &mut *v };
        // The coarse clock (the last tick, a few ms behind): idle timeouts need no finer, and
        // reading the fine one (rdtsc) was ~20% of an established packet's cost. Stored only
        // when it moved, so most packets leave that word alone.
        // SAFETY: plain helper call.
        let seen = unsafe { bpf_ktime_get_coarse_ns() };
        if v.last_seen_ns < seen {
            v.last_seen_ns = seen;
        }
        unsafe {
            atomic::add(&mut v.packets, 1);
            atomic::add(&mut v.bytes, u64::from(len));
        }
        return match v.action {
            FLOW_FORWARD => (FORWARD << 32) | u64::from(v.nexthop),
            FLOW_DROP => (STOP << 32) | Reason::DropFlow as u64,
            _ => fallback(Reason::DropFlowHeld),
        };
    }

    // A miss: the fine clock, for the punt rate's tokens and the HOLD's age.
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    // HOLD cap first (global), then this interface's punt rate.
    let (Some(created), Some(resolved)) = (GLOBALS.get_ptr_mut(HOLDS_CREATED), GLOBALS.get_ptr(HOLDS_RESOLVED)) else {
        return ROUTE;
    };
    // SAFETY: GLOBALS entries live as long as the map. Racy reads only let the cap be
    // overshot by a few concurrent misses.
    let outstanding = unsafe { core::ptr::read_volatile(created).wrapping_sub(core::ptr::read_volatile(resolved)) };
    if outstanding >= u64::from(fc.hold_cap) {
        return fallback(Reason::DropFlowHoldCap);
    }
    if !take_token(slot, fc.punt_rate, fc.punt_burst, now) {
        return fallback(Reason::DropPuntRate);
    }
    let Some(seq) = FLOW_SEQ.get_ptr_mut(0) else { return ROUTE };
    // SAFETY: per-CPU value, owned by this CPU for the program run; plain helper call.
    let request_id = unsafe {
        *seq += 1;
        (u64::from(bpf_get_smp_processor_id()) << REQUEST_CPU_SHIFT) | *seq
    };
    let hold = FlowValue {
        action: FLOW_HOLD,
        nexthop: 0,
        request_id,
        created_ns: now,
        last_seen_ns: now,
        packets: 1,
        bytes: u64::from(len),
        nat_reserved: [0; 24],
    };
    let inserted = match pkt.l3 {
        L3::Ipv4 => FLOWS_V4.insert(k4, hold, u64::from(BPF_NOEXIST)),
        _ => FLOWS_V6.insert(k6, hold, u64::from(BPF_NOEXIST)),
    };
    if inserted.is_err() {
        // Another CPU created it first: this packet belongs to a held flow.
        return fallback(Reason::DropFlowHeld);
    }
    if !emit(ctx, pkt, slot, vrf, len, request_id, MISS_NO_FLOW) {
        // No event, so no HOLD: the next packet of the flow tries again.
        let _ = match pkt.l3 {
            L3::Ipv4 => FLOWS_V4.remove(k4),
            _ => FLOWS_V6.remove(k6),
        };
        return fallback(Reason::DropFlowRingFull);
    }
    // SAFETY: as above; an atomic add, since every CPU creates HOLDs.
    unsafe { atomic::add(created, 1) };
    fallback(Reason::FlowMissPunted)
}

/// Reports a packet a PUNT policy rule matched to the server (within the interface's punt rate;
/// no HOLD: the packet itself goes on to the kernel stack). Returns whether it was reported.
#[inline(never)]
pub fn punt(ctx: &XdpContext, pkt: &Packet, slot: u32, vrf: u32, len: u32) -> u32 {
    // SAFETY: plain helper calls.
    let now = unsafe { bpf_ktime_get_ns() };
    let (rate, burst) = match FLOW_CONFIG.get(slot) {
        Some(fc) if fc.punt_rate != 0 => (fc.punt_rate, fc.punt_burst),
        _ => (DEFAULT_PUNT_RATE, DEFAULT_PUNT_BURST),
    };
    if !take_token(slot, rate, burst, now) {
        return 0;
    }
    let Some(seq) = FLOW_SEQ.get_ptr_mut(0) else { return 0 };
    // SAFETY: per-CPU value, owned by this CPU for the program run.
    let request_id = unsafe {
        *seq += 1;
        (u64::from(bpf_get_smp_processor_id()) << REQUEST_CPU_SHIFT) | *seq
    };
    u32::from(emit(ctx, pkt, slot, vrf, len, request_id, MISS_PUNT_RULE))
}

/// The flow keys of `pkt` (only the one of its family is meaningful).
#[inline(always)]
fn keys(pkt: &Packet, vrf: u32) -> (FlowKeyV4, FlowKeyV6) {
    let (sport, dport) = if pkt.is_fragment { (0, 0) } else { (pkt.src_port, pkt.dst_port) };
    let k4 = FlowKeyV4 {
        vrf,
        src: [pkt.src[0], pkt.src[1], pkt.src[2], pkt.src[3]],
        dst: [pkt.dst[0], pkt.dst[1], pkt.dst[2], pkt.dst[3]],
        sport,
        dport,
        proto: pkt.ip_proto,
        _pad: [0; 3],
    };
    let k6 = FlowKeyV6 { vrf, src: pkt.src, dst: pkt.dst, sport, dport, proto: pkt.ip_proto, _pad: [0; 3] };
    (k4, k6)
}

/// Takes one punt token from this CPU's bucket for interface `slot`.
#[inline(always)]
fn take_token(slot: u32, rate: u32, burst: u32, now: u64) -> bool {
    const ONE: u64 = 1_000_000_000;
    let Some(b) = PUNT_BUCKETS.get_ptr_mut(slot) else { return false };
    // SAFETY: per-CPU value, owned by this CPU for the program run.
    let b = unsafe { &mut *b };
    let cap = u64::from(burst) * ONE;
    if b.last_ns == 0 {
        // First use: a full bucket.
        b.tokens = cap;
        b.last_ns = now;
    }
    // At most 10 s of refill (the server caps rate at MAX_PUNT_RATE): no 128-bit multiply.
    let elapsed = now.saturating_sub(b.last_ns).min(10_000_000_000);
    b.last_ns = now;
    let refill = elapsed * u64::from(rate.min(MAX_PUNT_RATE));
    b.tokens = b.tokens.saturating_add(refill).min(cap);
    if b.tokens < ONE {
        return false;
    }
    b.tokens -= ONE;
    true
}

/// Sends the miss event (`miss_reason`: `MISS_NO_FLOW` or `MISS_PUNT_RULE`) with the packet
/// captured; false when the ring buffer is full.
#[inline(always)]
fn emit(ctx: &XdpContext, pkt: &Packet, slot: u32, vrf: u32, len: u32, request_id: u64, miss_reason: u32) -> bool {
    let Some(mut e) = FLOW_MISSES.reserve::<FlowMissEvent>(0) else { return false };
    let ev = e.as_mut_ptr();
    // SAFETY: the reserved record is ours until submitted; fields are written one by one (no
    // large copy through the stack).
    unsafe {
        (*ev).request_id = request_id;
        (*ev).ifindex = (*(ctx.as_ptr() as *const aya_ebpf::bindings::xdp_md)).ingress_ifindex;
        (*ev).slot = slot;
        (*ev).vrf = vrf;
        (*ev).reason = miss_reason;
        (*ev).family = if matches!(pkt.l3, L3::Ipv4) { 4 } else { 6 };
        (*ev).proto = u32::from(pkt.ip_proto);
        (*ev).src = pkt.src;
        (*ev).dst = pkt.dst;
        (*ev).sport = pkt.src_port;
        (*ev).dport = pkt.dst_port;
        (*ev).pkt_len = len;
        (*ev)._pad = 0;
    }
    // Bounds for the verifier: 1 <= captured <= FLOW_CAPTURE.
    let mut captured = core::hint::black_box(len as usize);
    if captured > FLOW_CAPTURE {
        captured = FLOW_CAPTURE;
    }
    let ok = captured > 0
        // SAFETY: `data` has room for FLOW_CAPTURE bytes; the helper checks the packet side.
        && unsafe {
            aya_ebpf::helpers::bpf_xdp_load_bytes(ctx.as_ptr() as *mut _, 0, (*ev).data.as_mut_ptr() as *mut _, captured as u32)
        } == 0;
    // SAFETY: as above.
    unsafe { (*ev).captured = if ok { captured as u32 } else { 0 } };
    e.submit(0);
    true
}
