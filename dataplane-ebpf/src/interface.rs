//! Interface stage: ingress/egress ifindex -> the configuration the server wrote for it.

use dataplane_common::InterfaceConfig;

use crate::maps::INTERFACES;

/// The configuration of `ifindex`, or `None` when the server has not registered it.
#[inline(always)]
pub fn config(ifindex: u32) -> Option<&'static InterfaceConfig> {
    // SAFETY: hash map values stay valid for the whole program run (RCU); the server replaces an
    // entry with one whole-value update, never field by field.
    unsafe { INTERFACES.get(&ifindex) }.map(|v| unsafe { &*(v as *const InterfaceConfig) })
}
