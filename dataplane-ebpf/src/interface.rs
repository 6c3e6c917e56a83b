//! Interface stage: ingress/egress ifindex -> the slot the server assigned to that interface.

use crate::maps::IFINDEX_SLOTS;

/// The interface slot for `ifindex`, or `None` when the server has not registered it.
#[inline(always)]
pub fn slot_of(ifindex: u32) -> Option<u32> {
    // SAFETY: the value is a plain u32 copied out immediately; no reference outlives the lookup.
    unsafe { IFINDEX_SLOTS.get(&ifindex) }.copied()
}
