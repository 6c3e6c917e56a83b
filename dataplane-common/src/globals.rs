//! The dataplane's global words (`maps::GLOBALS`, an array of [`SLOTS`] u64): one value each,
//! with one kind of writer each, because a userspace update rewrites a whole value and would lose
//! concurrent kernel increments. HOLD entries outstanding = `HOLDS_CREATED - HOLDS_RESOLVED`.

/// HOLDs whose miss event was sent (XDP, atomic adds).
pub const HOLDS_CREATED: u32 = 0;
/// HOLDs the server has since resolved, deleted, expired or seen evicted (server only).
pub const HOLDS_RESOLVED: u32 = 1;
/// The server's configuration generation, kept in the kernel beside what it counts: a crash
/// of the server cannot lose it, and it costs one map write per change (not a file write).
pub const GENERATION: u32 = 2;
/// Record slots of `ROUTE4_RECORDS` ever used (its high-water mark): a restart reads that many.
pub const ROUTE4_RECORDS_MARK: u32 = 3;
/// Entries of `GLOBALS`.
pub const SLOTS: u32 = 4;
