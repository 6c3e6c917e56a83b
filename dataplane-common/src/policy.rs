//! Policy classifier layout shared by the XDP/TC programs and the server.
//!
//! A policy is compiled by the server into a *table* (one of [`POLICY_TABLES`] slots) for a
//! bit-vector classifier: rule `i` (in priority order) is bit `i`. For each match field the
//! packet's value selects a *class*, whose record in `POLICY_WORDS` is the bitmap of rules that
//! field allows. The first rule allowed by every field is the lowest set bit of the AND of the
//! classes' bitmaps. Each record starts with summary words (bit `j` set when bitmap word `j` is
//! non-zero) so that only the words where every field has a candidate are read: the per-packet
//! cost is a few lookups plus `words / 64` summary words, not one step per rule.
//!
//! Class lookups: source and destination address by LPM trie per family (key: table, address;
//! the longest rule prefix containing the address names the class of every rule prefix containing
//! it), L4 fields by LPM trie over the 16-bit value (port ranges split into elementary intervals,
//! each expanded into prefixes), protocol and TCP flags by 256-entry arrays in the table header.
//!
//! A table is never edited while packets can reach it: a replacement is built in a free table and
//! published by rewriting the 32-bit attachment word (see [`attach_word`]); the old table is freed
//! only after an RCU grace period.

/// Table slots: live policies plus replacements waiting for their grace period.
pub const POLICY_TABLES: u32 = 256;
/// Rules per policy (the documented limit).
pub const MAX_POLICY_RULES: u32 = 16384;
/// Bitmap words of the largest policy.
pub const MAX_POLICY_WORDS: u32 = MAX_POLICY_RULES / 64;
/// Summary words of the largest policy.
pub const MAX_POLICY_SUMMARY: u32 = MAX_POLICY_WORDS / 64;
/// Capacity of `POLICY_WORDS` (u64 words shared by every table's class records).
pub const POLICY_POOL_WORDS: u32 = 1 << 20;
/// Rule slots (actions and counters) shared by every table.
pub const POLICY_RULE_SLOTS: u32 = 65536;
/// Capacity of each policy LPM trie (all tables together).
pub const POLICY_LPM_ENTRIES: u32 = 262144;

/// L4 field selector in a `POLICY_L4` key.
pub const L4_SRC: u8 = 0;
pub const L4_DST: u8 = 1;

/// Rule action (`POLICY_ACTIONS` value): let the packet go on.
pub const ACTION_ALLOW: u32 = 1;
/// Rule action: drop the packet.
pub const ACTION_DENY: u32 = 2;
/// Rule action: pass the packet to the kernel stack and, at ingress, report it to the server.
pub const ACTION_PUNT: u32 = 3;

/// Directions: the attachment index of interface slot `s` is `s * 2 + direction`.
pub const DIR_INGRESS: u32 = 0;
pub const DIR_EGRESS: u32 = 1;

/// Bit of an attachment word: no rule matched means DENY (otherwise ALLOW).
pub const ATTACH_DEFAULT_DENY: u32 = 1 << 16;

/// The 32-bit `POLICY_ATTACH` value: 0 for none, else `table + 1` in the low 16 bits and the
/// default action bit. One aligned word, so a packet reads the whole of an old or a new one.
pub const fn attach_word(table: u32, default_deny: bool) -> u32 {
    (table + 1) | if default_deny { ATTACH_DEFAULT_DENY } else { 0 }
}

/// `POLICY_TABLE_HDRS` value: what a packet needs to classify against one table.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PolicyTable {
    /// Bitmap words (`ceil(rules / 64)`); 0 for an empty policy.
    pub words: u32,
    /// Summary words (`ceil(words / 64)`).
    pub summary: u32,
    /// First rule slot: rule `i` has its action and counters at `rule_base + i`.
    pub rule_base: u32,
    pub _pad: u32,
    /// Per trie-looked-up field ([`FIXED_V4_SRC`] ...): the class every value has when no rule
    /// constrains the field (the trie would only hold /0), so the lookup is skipped; or
    /// [`LOOKUP`].
    pub fixed: [u32; 6],
    pub _pad2: [u32; 2],
    /// Protocol number -> class record offset in `POLICY_WORDS`.
    pub proto_class: [u32; 256],
    /// TCP flags byte -> class record offset (non-TCP packets use flags 0).
    pub flags_class: [u32; 256],
}

/// `PolicyTable::fixed` entry: the field needs its trie lookup.
pub const LOOKUP: u32 = u32::MAX;
/// Indexes of `PolicyTable::fixed`.
pub const FIXED_V4_SRC: usize = 0;
pub const FIXED_V4_DST: usize = 1;
pub const FIXED_V6_SRC: usize = 2;
pub const FIXED_V6_DST: usize = 3;
pub const FIXED_L4_SRC: usize = 4;
pub const FIXED_L4_DST: usize = 5;

/// Key data of `POLICY_V4_SRC`/`POLICY_V4_DST` (after aya's prefix length): table (big endian)
/// then the address; `prefix_len = 32 + length`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyAddrV4 {
    pub table: [u8; 4],
    pub addr: [u8; 4],
}

/// Key data of `POLICY_V6_SRC`/`POLICY_V6_DST`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyAddrV6 {
    pub table: [u8; 4],
    pub addr: [u8; 16],
}

/// Key data of `POLICY_L4`: table, field ([`L4_SRC`]/[`L4_DST`]), value (big endian);
/// `prefix_len = 40 + length`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyL4 {
    pub table: [u8; 4],
    pub field: u8,
    pub value: [u8; 2],
    pub _pad: u8,
}

/// Per-CPU counters of one rule slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RuleStats {
    pub packets: u64,
    pub bytes: u64,
}

const _: () = assert!(core::mem::size_of::<PolicyTable>() == 16 + 32 + 2048);
const _: () = assert!(core::mem::size_of::<PolicyL4>() == 8);
