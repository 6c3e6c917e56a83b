//! Counter deltas: what one run or one test step changed in the per-CPU counters the programs
//! write (`IFACE_STATS`, `UNKNOWN_IFACE_STATS`, `NEXTHOP_STATS`) or in the counters the API
//! reports, the delta one counted packet must make, and how a failure message shows them.

use controller_client::pb;
use dataplane_common::{InterfaceStats, NextHopStats, Reason};

/// `after - before`, field by field (wrapping, as the kernel's counters do).
pub fn delta(after: &InterfaceStats, before: &InterfaceStats) -> InterfaceStats {
    let mut d = InterfaceStats {
        rx_packets: after.rx_packets.wrapping_sub(before.rx_packets),
        rx_bytes: after.rx_bytes.wrapping_sub(before.rx_bytes),
        tx_packets: after.tx_packets.wrapping_sub(before.tx_packets),
        tx_bytes: after.tx_bytes.wrapping_sub(before.tx_bytes),
        reasons: [0; dataplane_common::reason::REASON_SLOTS],
    };
    for (i, r) in d.reasons.iter_mut().enumerate() {
        *r = after.reasons[i].wrapping_sub(before.reasons[i]);
    }
    d
}

/// `after - before` of a next hop's counters.
pub fn nexthop_delta(after: &NextHopStats, before: &NextHopStats) -> NextHopStats {
    NextHopStats { packets: after.packets.wrapping_sub(before.packets), bytes: after.bytes.wrapping_sub(before.bytes) }
}

/// The delta of one received packet of `len` bytes that left with `reason`.
pub fn counted_once(len: usize, reason: Reason) -> InterfaceStats {
    let mut s = InterfaceStats { rx_packets: 1, rx_bytes: len as u64, ..InterfaceStats::ZERO };
    s.reasons[reason as usize] = 1;
    s
}

/// Interface counters as a test failure message shows them: the non-zero reasons by name.
pub fn describe_stats(d: &InterfaceStats) -> String {
    if *d == InterfaceStats::ZERO {
        return "none".into();
    }
    let reasons: Vec<String> = d
        .reasons
        .iter()
        .enumerate()
        .filter(|(_, n)| **n != 0)
        .map(|(i, n)| {
            let name = Reason::from_u32(i as u32).map_or_else(|| format!("reason#{i}"), |r| r.name().into());
            format!("{name}+{n}")
        })
        .collect();
    format!(
        "rx_packets+{} rx_bytes+{} tx_packets+{} tx_bytes+{} reasons[{}]",
        d.rx_packets,
        d.rx_bytes,
        d.tx_packets,
        d.tx_bytes,
        reasons.join(" ")
    )
}

/// Packets counted under reason `name` (its API name) in counters the API reported; panics when
/// the reason is not listed at all, which would make every comparison with it meaningless.
pub fn reason(c: &pb::InterfaceCounters, name: &str) -> u64 {
    c.reasons.iter().find(|r| r.reason == name).map(|r| r.packets).unwrap_or_else(|| panic!("no reason {name}"))
}
