//! Policy stage: the ordered rules attached to an interface and direction, classified with the
//! bit-vector scheme described in `dataplane_common::policy` (a few lookups per packet, then
//! words ANDed across fields; no per-rule loop).

use core::ffi::c_void;

use aya_ebpf::{helpers::bpf_loop, maps::lpm_trie::Key};
use dataplane_common::{
    policy::{
        PolicyAddrV4, PolicyAddrV6, PolicyL4, ACTION_DENY, ACTION_PUNT, ATTACH_DEFAULT_DENY, FIXED_L4_DST,
        FIXED_L4_SRC, FIXED_V4_DST, FIXED_V4_SRC, FIXED_V6_DST, FIXED_V6_SRC, L4_DST, L4_SRC, LOOKUP,
        MAX_POLICY_SUMMARY,
    },
    Reason,
};

use crate::{
    maps::{
        POLICY_ACTIONS, POLICY_ATTACH, POLICY_L4, POLICY_RULE_STATS, POLICY_TABLE_HDRS, POLICY_V4_DST, POLICY_V4_SRC,
        POLICY_V6_DST, POLICY_V6_SRC, POLICY_WORDS,
    },
    parse::{Packet, L3},
};

/// No rule matched.
const NO_MATCH: u32 = u32::MAX;
/// Number of match fields, each selecting one class record.
const FIELDS: usize = 6;

/// Applies the policy attached to interface `slot` in `direction` (if any) to an IP packet of
/// `len` bytes: `Ok` to go on, `Err(reason)` when a rule or the default action stops it.
#[inline(always)]
pub fn check(slot: u32, direction: u32, pkt: &Packet, len: u64) -> Result<(), Reason> {
    let Some(&word) = POLICY_ATTACH.get(slot * 2 + direction) else { return Ok(()) };
    let table = word & 0xffff;
    if table == 0 {
        return Ok(());
    }
    let rule = classify(table - 1, pkt);
    if rule == NO_MATCH {
        return if word & ATTACH_DEFAULT_DENY != 0 { Err(Reason::DropPolicyDefault) } else { Ok(()) };
    }
    if let Some(s) = POLICY_RULE_STATS.get_ptr_mut(rule) {
        // SAFETY: per-CPU value owned by this CPU for the duration of the program.
        let s = unsafe { &mut *s };
        s.packets += 1;
        s.bytes += len;
    }
    match POLICY_ACTIONS.get(rule).copied() {
        Some(ACTION_DENY) => Err(Reason::DropPolicy),
        Some(ACTION_PUNT) => Err(Reason::PassPolicyPunt),
        _ => Ok(()),
    }
}

/// The rule slot of the first rule of `table` matching `pkt`, or [`NO_MATCH`].
///
/// Not inlined: its locals live in their own stack frame (the entry point's is nearly full), and
/// the verifier checks its loops once.
#[inline(never)]
fn classify(table: u32, pkt: &Packet) -> u32 {
    let Some(hdr) = POLICY_TABLE_HDRS.get(table) else { return NO_MATCH };
    // A field no rule constrains has one class for every value (`hdr.fixed`): no trie lookup.
    let (src, dst) = match pkt.l3 {
        L3::Ipv4 => (
            addr_class(hdr.fixed[FIXED_V4_SRC], table, &pkt.src, V4_SRC),
            addr_class(hdr.fixed[FIXED_V4_DST], table, &pkt.dst, V4_DST),
        ),
        L3::Ipv6 => (
            addr_class(hdr.fixed[FIXED_V6_SRC], table, &pkt.src, V6_SRC),
            addr_class(hdr.fixed[FIXED_V6_DST], table, &pkt.dst, V6_DST),
        ),
        L3::Other(_) => return NO_MATCH,
    };
    let sp = l4_class(hdr.fixed[FIXED_L4_SRC], table, L4_SRC, pkt.src_port);
    let dp = l4_class(hdr.fixed[FIXED_L4_DST], table, L4_DST, pkt.dst_port);
    // A miss means no rule of the table admits this value (the server enters a /0 for every
    // family and value range a rule can match).
    if src == LOOKUP || dst == LOOKUP || sp == LOOKUP || dp == LOOKUP {
        return NO_MATCH;
    }
    let classes: [u32; FIELDS] =
        [src, dst, hdr.proto_class[pkt.ip_proto as usize], hdr.flags_class[pkt.tcp_flags as usize], sp, dp];

    let mut scan = Scan { classes, summary: hdr.summary, word_base: 0, candidates: 0, found: NO_MATCH };
    let mut s = 0;
    while s < MAX_POLICY_SUMMARY && s < scan.summary {
        let c = and_word(&scan.classes, s);
        scan.word_base = s * 64;
        if c == 0 {
            s += 1;
            continue;
        }
        // The lowest candidate word usually holds the match: try it inline, and pay for the
        // callback loop only for the rest.
        let w = scan.word_base + ctz(c);
        let rules = and_word(&scan.classes, scan.summary + w);
        if rules != 0 {
            return hdr.rule_base + w * 64 + ctz(rules);
        }
        scan.candidates = c & (c - 1);
        if scan.candidates == 0 {
            s += 1;
            continue;
        }
        // Each set bit is a bitmap word where every field admits some rule; the lowest rule
        // admitted by all fields in the lowest such word is the first match. bpf_loop: the
        // verifier checks the callback once instead of unrolling 64 iterations per summary word.
        // SAFETY: `scan_word` has the callback signature bpf_loop expects; `scan` outlives the
        // call.
        unsafe { bpf_loop(64, scan_word as *mut c_void, &mut scan as *mut Scan as *mut c_void, 0) };
        if scan.found != NO_MATCH {
            return hdr.rule_base + scan.found;
        }
        s += 1;
    }
    NO_MATCH
}

/// State of one summary word's scan, shared with the [`scan_word`] callback.
#[repr(C)]
struct Scan {
    classes: [u32; FIELDS],
    summary: u32,
    /// Index of the first bitmap word this summary word covers.
    word_base: u32,
    /// Candidate bitmap words not yet examined.
    candidates: u64,
    /// Rule index found, or [`NO_MATCH`].
    found: u32,
}

/// bpf_loop callback: examines the lowest candidate word; 1 stops the loop.
extern "C" fn scan_word(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the `Scan` on `classify`'s stack.
    let scan = unsafe { &mut *(ctx as *mut Scan) };
    let c = scan.candidates;
    if c == 0 {
        return 1;
    }
    let w = scan.word_base + ctz(c);
    let rules = and_word(&scan.classes, scan.summary + w);
    if rules != 0 {
        scan.found = w * 64 + ctz(rules);
        return 1;
    }
    scan.candidates = c & (c - 1);
    0
}

const V4_SRC: u32 = 0;
const V4_DST: u32 = 1;
const V6_SRC: u32 = 2;
const V6_DST: u32 = 3;

/// The class of an address in one of the four address tries, or `fixed` when the table gives
/// one (no rule constrains the field); [`LOOKUP`] on a miss.
///
/// Not inlined: inlined, LLVM merges the four lookups into one helper call site fed by phis,
/// which the verifier rejects (a register unset on the `fixed` path).
#[inline(never)]
fn addr_class(fixed: u32, table: u32, addr: &[u8; 16], which: u32) -> u32 {
    if fixed != LOOKUP {
        return fixed;
    }
    let t = table.to_be_bytes();
    let v4 = [addr[0], addr[1], addr[2], addr[3]];
    let found = match which {
        V4_SRC => POLICY_V4_SRC.get(Key::new(32 + 32, PolicyAddrV4 { table: t, addr: v4 })),
        V4_DST => POLICY_V4_DST.get(Key::new(32 + 32, PolicyAddrV4 { table: t, addr: v4 })),
        V6_SRC => POLICY_V6_SRC.get(Key::new(32 + 128, PolicyAddrV6 { table: t, addr: *addr })),
        _ => POLICY_V6_DST.get(Key::new(32 + 128, PolicyAddrV6 { table: t, addr: *addr })),
    };
    found.copied().unwrap_or(LOOKUP)
}

/// The class of an L4 value (port, ICMP type/code), or `fixed`; [`LOOKUP`] on a miss.
#[inline(never)]
fn l4_class(fixed: u32, table: u32, field: u8, value: u16) -> u32 {
    if fixed != LOOKUP {
        return fixed;
    }
    let key = PolicyL4 { table: table.to_be_bytes(), field, value: value.to_be_bytes(), _pad: 0 };
    POLICY_L4.get(Key::new(40 + 16, key)).copied().unwrap_or(LOOKUP)
}

/// The AND over every field of word `offset` of its class record.
#[inline(always)]
fn and_word(classes: &[u32; FIELDS], offset: u32) -> u64 {
    let mut acc = u64::MAX;
    for c in classes {
        acc &= POLICY_WORDS.get(c.wrapping_add(offset)).copied().unwrap_or(0);
        // Most candidate words die after two or three fields: stop reading there.
        if acc == 0 {
            break;
        }
    }
    acc
}

/// Trailing zeros of a non-zero word, branch-free (BPF has no such instruction, and branches
/// would multiply the verifier's paths): popcount of the bits below the lowest set one.
#[inline(always)]
fn ctz(v: u64) -> u32 {
    let mut x = (v & v.wrapping_neg()).wrapping_sub(1);
    x -= (x >> 1) & 0x5555_5555_5555_5555;
    x = (x & 0x3333_3333_3333_3333) + ((x >> 2) & 0x3333_3333_3333_3333);
    x = (x + (x >> 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    (x.wrapping_mul(0x0101_0101_0101_0101) >> 56) as u32
}
