//! HOLD removal for the server's aging: a program the server runs (BPF_PROG_TEST_RUN, never
//! attached) over a list of expired HOLDs, removing each that is still the HOLD of its request.
//! One run removes up to `SWEEP_MAX` of them; from user space each would take a lookup and a
//! delete, two bpf(2) calls, which in a miss storm was a fifth of the server's CPU.

use aya_ebpf::{bindings::xdp_action, macros::xdp, maps::LruHashMap, programs::XdpContext};
use dataplane_common::flow::{FlowValue, FLOW_HOLD, SWEEP_MAX};

use crate::maps::{FLOWS_V4, FLOWS_V6, HOLD_SWEEP};

/// Removes the HOLDs `HOLD_SWEEP` lists that are still theirs; writes how many (u32) over the
/// frame's first four bytes.
#[xdp]
pub fn dp_sweep_holds(ctx: XdpContext) -> u32 {
    let Some(list) = HOLD_SWEEP.get_ptr(0) else { return xdp_action::XDP_ABORTED };
    // SAFETY: the value lives as long as the map; the server writes it only between runs.
    let list = unsafe { &*list };
    let count = list.count as usize;
    let mut removed = 0u32;
    // The constant bound is the verifier's (it checks every iteration); the list's count ends
    // the loop early.
    for i in 0..SWEEP_MAX {
        if i >= count {
            break;
        }
        let h = &list.holds[i];
        let gone = if h.family == 4 {
            remove_if_held(&FLOWS_V4, &h.k4, h.request_id)
        } else {
            remove_if_held(&FLOWS_V6, &h.k6, h.request_id)
        };
        removed += u32::from(gone);
    }
    let (data, end) = (ctx.data(), ctx.data_end());
    // Bounds check for the verifier: the count's four bytes lie inside the frame.
    if data + 4 > end {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: bytes 0..4 of the frame were checked above; unaligned store.
    unsafe { core::ptr::write_unaligned(data as *mut u32, removed) };
    xdp_action::XDP_DROP
}

/// Removes `k`'s entry if it is the HOLD of `request_id`. Between the lookup and the delete
/// only the kernel can change the entry (the server runs this under its own lock): by evicting
/// it and holding the key again for a new miss, whose HOLD then goes too, and whose next packet
/// misses again.
#[inline(always)]
fn remove_if_held<K>(map: &LruHashMap<K, FlowValue>, k: &K, request_id: u64) -> bool {
    // SAFETY: the value is read at once, within the program run.
    match unsafe { map.get(k) } {
        Some(v) if v.action == FLOW_HOLD && v.request_id == request_id => map.remove(k).is_ok(),
        _ => false,
    }
}
