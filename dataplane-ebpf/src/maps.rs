//! Every map the programs use, declared once, under the names in `dataplane_common::maps`.
//! The server opens them by the same names; it writes configuration, the programs write counters.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray},
};
use dataplane_common::{InterfaceStats, MAX_INTERFACES};

/// ifindex -> interface slot (see `dataplane_common::maps::IFINDEX_SLOTS`).
#[map(name = "IFINDEX_SLOTS")]
pub static IFINDEX_SLOTS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_INTERFACES, 0);

/// Interface slot -> per-CPU counters.
#[map(name = "IFACE_STATS")]
pub static IFACE_STATS: PerCpuArray<InterfaceStats> =
    PerCpuArray::with_max_entries(MAX_INTERFACES, 0);

/// Counters for packets whose ifindex has no slot.
#[map(name = "UNKNOWN_IFACE_STATS")]
pub static UNKNOWN_IFACE_STATS: PerCpuArray<InterfaceStats> = PerCpuArray::with_max_entries(1, 0);
