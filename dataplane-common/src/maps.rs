//! Map names. The eBPF crate declares each map under exactly this name and the server opens it by
//! the same constant, so a rename cannot silently split the two sides.

/// Hash: interface ifindex (u32) -> interface slot (u32). The only hash on the ingress path;
/// everything per interface after it is an array indexed by the slot.
pub const IFINDEX_SLOTS: &str = "IFINDEX_SLOTS";
/// Per-CPU array: interface slot -> [`crate::InterfaceStats`].
pub const IFACE_STATS: &str = "IFACE_STATS";
/// Per-CPU array with one entry: [`crate::InterfaceStats`] for packets seen on an ifindex that has
/// no slot (a program still attached to an interface being removed, or test runs).
pub const UNKNOWN_IFACE_STATS: &str = "UNKNOWN_IFACE_STATS";

/// Every map the programs declare, for status reporting and pin management.
pub const ALL: &[&str] = &[IFINDEX_SLOTS, IFACE_STATS, UNKNOWN_IFACE_STATS];
