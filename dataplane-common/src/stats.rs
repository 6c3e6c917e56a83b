//! Per-interface counters, kept in per-CPU array maps and summed by the server.

use crate::reason::REASON_SLOTS;

/// Counters of one interface on one CPU. Every packet the XDP program sees bumps `rx_*` and
/// exactly one entry of `reasons` (why the program let it go the way it did); the TC egress
/// program bumps `tx_*`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterfaceStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Indexed by [`crate::Reason`] as u32.
    pub reasons: [u64; REASON_SLOTS],
}

impl InterfaceStats {
    pub const ZERO: Self = Self { rx_packets: 0, rx_bytes: 0, tx_packets: 0, tx_bytes: 0, reasons: [0; REASON_SLOTS] };

    /// Adds another CPU's counters into these (userspace sums per-CPU values).
    pub fn accumulate(&mut self, other: &Self) {
        self.rx_packets = self.rx_packets.wrapping_add(other.rx_packets);
        self.rx_bytes = self.rx_bytes.wrapping_add(other.rx_bytes);
        self.tx_packets = self.tx_packets.wrapping_add(other.tx_packets);
        self.tx_bytes = self.tx_bytes.wrapping_add(other.tx_bytes);
        for (a, b) in self.reasons.iter_mut().zip(other.reasons.iter()) {
            *a = a.wrapping_add(*b);
        }
    }
}

impl Default for InterfaceStats {
    fn default() -> Self {
        Self::ZERO
    }
}
