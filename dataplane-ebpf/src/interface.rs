//! Interface stage: ingress/egress ifindex -> the configuration the server wrote for it.

use dataplane_common::{route::IFACE_PRESENT, InterfaceConfig, MAX_DIRECT_IFINDEX};

use crate::maps::{INTERFACES, INTERFACES_HIGH};

/// The configuration of `ifindex`, or `None` when the server has not registered it. One inlined
/// array lookup for every ifindex below `MAX_DIRECT_IFINDEX`; a hash lookup above.
#[inline(always)]
pub fn config(ifindex: u32) -> Option<&'static InterfaceConfig> {
    let cfg = if ifindex < MAX_DIRECT_IFINDEX {
        // Array values live as long as the map. The server writes an entry before attaching the
        // programs to the interface and clears it after detaching; a rewrite while attached
        // (a new address) is a plain copy a concurrent packet may see half done, which can only
        // make that one packet's local/forward decision use the old or new address.
        INTERFACES.get(ifindex)?
    } else {
        // SAFETY: hash values stay valid for the whole program run (RCU) and are replaced whole.
        unsafe { INTERFACES_HIGH.get(ifindex) }?
    };
    (cfg.flags & IFACE_PRESENT != 0).then_some(cfg)
}
