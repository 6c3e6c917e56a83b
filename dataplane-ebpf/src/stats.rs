//! Counters per interface and per next hop, per CPU, so no atomics are needed on the packet path.

use dataplane_common::{InterfaceStats, Reason};

use crate::maps::{IFACE_STATS, UNKNOWN_IFACE_STATS};

#[inline(always)]
fn entry(slot: Option<u32>) -> Option<*mut InterfaceStats> {
    match slot {
        Some(slot) => IFACE_STATS.get_ptr_mut(slot),
        None => UNKNOWN_IFACE_STATS.get_ptr_mut(0),
    }
}

/// Counts one received packet of `len` bytes and the reason it left the ingress pipeline.
#[inline(always)]
pub fn count_rx(slot: Option<u32>, len: u64, reason: Reason) {
    let reason = if slot.is_some() { reason } else { Reason::UnknownInterface };
    if let Some(s) = entry(slot) {
        // SAFETY: per-CPU value owned by this CPU for the duration of the program.
        let s = unsafe { &mut *s };
        s.rx_packets += 1;
        s.rx_bytes += len;
        // Bounds check for the verifier: `idx` comes from an enum, which LLVM knows is in range
        // and would drop the check for; the verifier does not know it (the reason may come back
        // through memory from the parse subprogram), so hide the value from LLVM first.
        let idx = core::hint::black_box(reason as usize);
        if idx < s.reasons.len() {
            s.reasons[idx] += 1;
        }
    }
}

/// Counts one transmitted packet of `len` bytes.
#[inline(always)]
pub fn count_tx(slot: Option<u32>, len: u64) {
    if let Some(s) = entry(slot) {
        // SAFETY: per-CPU value owned by this CPU for the duration of the program.
        let s = unsafe { &mut *s };
        s.tx_packets += 1;
        s.tx_bytes += len;
    }
}

/// Counts one packet of `len` bytes sent through next-hop `slot`.
#[inline(always)]
pub fn count_nexthop(slot: u32, len: u64) {
    if let Some(s) = crate::maps::NEXTHOP_STATS.get_ptr_mut(slot) {
        // SAFETY: per-CPU value owned by this CPU for the duration of the program.
        let s = unsafe { &mut *s };
        s.packets += 1;
        s.bytes += len;
    }
}
