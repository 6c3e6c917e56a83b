//! Atomic adds on map values shared between CPUs. BPF has them (`lock xadd`, `BPF_ATOMIC` with
//! fetch), but the bpfel target offers no `AtomicU64::fetch_add` (it has no compare-and-swap in
//! Rust's view), so the intrinsic is called directly.
//!
//! The result is discarded on purpose: the programs are built for the generic BPF CPU, whose
//! atomic add (`lock xadd`) returns nothing.

use core::intrinsics::{atomic_xadd, AtomicOrdering};

/// `*p += v` (wrapping; a subtraction is the add of its two's complement).
///
/// # Safety
/// `p` must point to a live, 8-byte aligned u64 (a map value field).
#[inline(always)]
pub unsafe fn add(p: *mut u64, v: u64) {
    // SAFETY: the caller's contract.
    let _ = unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, v) };
}
