//! Compiles a policy's ordered rules into the bit-vector classifier the XDP program reads
//! (layout: `dataplane_common::policy`). Pure computation: no kernel access.
//!
//! Rule `i` is bit `i`. Each field maps packet values to classes, a class being the bitmap of rules
//! the value admits; identical bitmaps share one record. Address classes come from the rule
//! prefixes of one family plus /0, each prefix's bitmap being every rule whose prefix covers it
//! (walked as a tree: a prefix inherits its nearest enclosing prefix's bitmap); L4 classes from
//! the elementary intervals between every rule range boundary, each interval expanded into aligned
//! prefixes of the 16-bit value.

use std::collections::HashMap;

use dataplane_common::policy::{
    PolicyTable, FIXED_L4_DST, FIXED_L4_SRC, FIXED_V4_DST, FIXED_V4_SRC, FIXED_V6_DST, FIXED_V6_SRC, L4_DST, L4_SRC,
    LOOKUP,
};

use crate::{dataplane::PolicyImage, net::Prefix};

/// Which address family a rule can match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Any,
    V4,
    V6,
}

/// One rule as the classifier sees it (validated by the domain).
#[derive(Clone, Debug)]
pub struct MatchSpec {
    pub family: Family,
    pub src: Option<Prefix>,
    pub dst: Option<Prefix>,
    pub proto: Option<u8>,
    /// Source port range, or ICMP type as a one-value range.
    pub l4_src: Option<(u16, u16)>,
    /// Destination port range, or ICMP code.
    pub l4_dst: Option<(u16, u16)>,
    /// (mask, value): matches when `flags & mask == value`.
    pub tcp_flags: Option<(u8, u8)>,
    pub action: u32,
}

/// Bitmap words and summary words of a table of `rules` rules.
pub fn record_words(rules: usize) -> (u32, u32) {
    let words = rules.div_ceil(64) as u32;
    (words, words.div_ceil(64))
}

/// Builds the records; `place` is called with the pool size needed and returns the pool base to
/// compile against (the caller's allocator), or `None` to give up.
pub fn compile(
    rules: &[MatchSpec],
    table: u32,
    rule_base: u32,
    place: impl FnOnce(u32) -> Option<u32>,
) -> Option<PolicyImage> {
    let (words, summary) = record_words(rules.len());
    let mut records = Records::new(words as usize);

    let mut src = Vec::new();
    let mut dst = Vec::new();
    // Record index of a field whose every value has the same class (no trie entries needed).
    let mut fixed = [None; 6];
    if !rules.is_empty() {
        for v4 in [true, false] {
            let fam = if v4 { Family::V4 } else { Family::V6 };
            let applies: Vec<bool> = rules.iter().map(|r| r.family == Family::Any || r.family == fam).collect();
            let (fs, fd) = if v4 { (FIXED_V4_SRC, FIXED_V4_DST) } else { (FIXED_V6_SRC, FIXED_V6_DST) };
            for (out, slot, field) in [(&mut src, fs, Field::Src), (&mut dst, fd, Field::Dst)] {
                let classes = address_classes(
                    rules,
                    &applies,
                    v4,
                    |r| if field == Field::Src { r.src } else { r.dst },
                    &mut records,
                );
                match classes.as_slice() {
                    [(_, only)] => fixed[slot] = Some(*only),
                    _ => out.extend(classes),
                }
            }
        }
    }
    let mut proto = [0u32; 256];
    let mut flags = [0u32; 256];
    let mut l4 = Vec::new();
    if !rules.is_empty() {
        for (v, class) in proto.iter_mut().enumerate() {
            let mut b = records.empty();
            for (i, r) in rules.iter().enumerate() {
                if r.proto.is_none_or(|p| usize::from(p) == v) {
                    set(&mut b, i);
                }
            }
            *class = records.intern(b);
        }
        for (v, class) in flags.iter_mut().enumerate() {
            let mut b = records.empty();
            for (i, r) in rules.iter().enumerate() {
                if r.tcp_flags.is_none_or(|(mask, value)| v as u8 & mask == value) {
                    set(&mut b, i);
                }
            }
            *class = records.intern(b);
        }
        for (field, slot) in [(L4_SRC, FIXED_L4_SRC), (L4_DST, FIXED_L4_DST)] {
            let entries = l4_classes(rules, field, |r| if field == L4_SRC { r.l4_src } else { r.l4_dst }, &mut records);
            match entries.as_slice() {
                // One block of length 0: every value in one class.
                [(_, _, 0, only)] => fixed[slot] = Some(*only),
                _ => l4.extend(entries),
            }
        }
    }

    let record = (summary + words) as usize;
    let pool_len = (records.list.len() * record) as u32;
    let base = place(pool_len)?;
    let at = |idx: u32| base + idx * record as u32;
    let mut pool = Vec::with_capacity(pool_len as usize);
    for b in &records.list {
        let mut s = vec![0u64; summary as usize];
        for (j, w) in b.iter().enumerate() {
            if *w != 0 {
                s[j / 64] |= 1 << (j % 64);
            }
        }
        pool.extend(s);
        pool.extend(b.iter().copied());
    }
    let header = PolicyTable {
        words,
        summary,
        rule_base,
        _pad: 0,
        fixed: fixed.map(|f| f.map_or(LOOKUP, at)),
        _pad2: [0; 2],
        proto_class: proto.map(at),
        flags_class: flags.map(at),
    };
    Some(PolicyImage {
        table,
        header,
        pool_base: base,
        pool,
        src: src.into_iter().map(|(p, c)| (p, at(c))).collect(),
        dst: dst.into_iter().map(|(p, c)| (p, at(c))).collect(),
        l4: l4.into_iter().map(|(f, v, l, c)| (f, v, l, at(c))).collect(),
        actions: rules.iter().map(|r| r.action).collect(),
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Src,
    Dst,
}

type Bitmap = Vec<u64>;

fn set(b: &mut Bitmap, i: usize) {
    b[i / 64] |= 1 << (i % 64);
}

/// Distinct bitmaps, in first-seen order.
struct Records {
    words: usize,
    list: Vec<Bitmap>,
    index: HashMap<Bitmap, u32>,
}

impl Records {
    fn new(words: usize) -> Self {
        Self { words, list: Vec::new(), index: HashMap::new() }
    }

    fn empty(&self) -> Bitmap {
        vec![0; self.words]
    }

    fn intern(&mut self, b: Bitmap) -> u32 {
        if let Some(&i) = self.index.get(&b) {
            return i;
        }
        let i = self.list.len() as u32;
        self.list.push(b.clone());
        self.index.insert(b, i);
        i
    }
}

/// (prefix, record index) for one family and one address field.
fn address_classes(
    rules: &[MatchSpec],
    applies: &[bool],
    v4: bool,
    field: impl Fn(&MatchSpec) -> Option<Prefix>,
    records: &mut Records,
) -> Vec<(Prefix, u32)> {
    let root = if v4 { "0.0.0.0/0" } else { "::/0" };
    let root: Prefix = root.parse().expect("valid root prefix");
    // Rules whose own prefix is exactly P, per distinct prefix.
    let mut own: HashMap<Prefix, Bitmap> = HashMap::new();
    let mut wildcard = records.empty();
    for (i, r) in rules.iter().enumerate() {
        if !applies[i] {
            continue;
        }
        match field(r) {
            None => set(&mut wildcard, i),
            Some(p) if p.is_ipv4() == v4 => set(own.entry(p).or_insert_with(|| records.empty()), i),
            Some(_) => {}
        }
    }
    let mut prefixes: Vec<Prefix> = own.keys().copied().filter(|p| *p != root).collect();
    // Address order, shorter first at equal addresses: every prefix comes after the prefixes
    // enclosing it, and a stack of enclosing prefixes gives each one its nearest ancestor.
    prefixes.sort_by_key(|p| (p.addr(), p.len()));
    let mut root_bits = wildcard;
    if let Some(b) = own.get(&root) {
        or(&mut root_bits, b);
    }
    let mut out = vec![(root, records.intern(root_bits.clone()))];
    let mut stack: Vec<(Prefix, Bitmap)> = vec![(root, root_bits)];
    for p in prefixes {
        while !stack.last().expect("root never pops").0.covers(&p) {
            stack.pop();
        }
        let mut b = stack.last().expect("root").1.clone();
        or(&mut b, &own[&p]);
        out.push((p, records.intern(b.clone())));
        stack.push((p, b));
    }
    out
}

fn or(a: &mut Bitmap, b: &Bitmap) {
    for (x, y) in a.iter_mut().zip(b) {
        *x |= y;
    }
}

/// (field, value, prefix length over 16 bits, record index) covering all of 0..=65535.
fn l4_classes(
    rules: &[MatchSpec],
    field_id: u8,
    field: impl Fn(&MatchSpec) -> Option<(u16, u16)>,
    records: &mut Records,
) -> Vec<(u8, u16, u8, u32)> {
    // Sweep: at each boundary some rules' ranges start or end.
    let mut events: std::collections::BTreeMap<u32, (Vec<usize>, Vec<usize>)> = Default::default();
    let mut active = records.empty();
    for (i, r) in rules.iter().enumerate() {
        match field(r) {
            None => set(&mut active, i),
            Some((a, b)) => {
                events.entry(u32::from(a)).or_default().0.push(i);
                events.entry(u32::from(b) + 1).or_default().1.push(i);
            }
        }
    }
    let mut bounds: Vec<u32> = events.keys().copied().filter(|&b| b <= 0xffff).collect();
    if bounds.first() != Some(&0) {
        bounds.insert(0, 0);
    }
    // Intervals [bounds[k], bounds[k+1]) with their bitmaps, merging equal neighbours.
    let mut intervals: Vec<(u32, u32, Bitmap)> = Vec::new();
    for (k, &lo) in bounds.iter().enumerate() {
        if let Some((add, remove)) = events.get(&lo) {
            for &i in add {
                set(&mut active, i);
            }
            for &i in remove {
                active[i / 64] &= !(1 << (i % 64));
            }
        }
        let hi = bounds.get(k + 1).copied().unwrap_or(0x1_0000);
        match intervals.last_mut() {
            Some(last) if last.2 == active => last.1 = hi,
            _ => intervals.push((lo, hi, active.clone())),
        }
    }
    let mut out = Vec::new();
    for (lo, hi, b) in intervals {
        let class = records.intern(b);
        let (mut lo, hi) = (lo, hi);
        // Largest aligned blocks from `lo` up to `hi`: at most 30 per interval.
        while lo < hi {
            let mut size = if lo == 0 { 0x1_0000 } else { 1 << lo.trailing_zeros() };
            while lo + size > hi {
                size >>= 1;
            }
            out.push((field_id, lo as u16, 16 - size.trailing_zeros() as u8, class));
            lo += size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(src: Option<&str>, dport: Option<(u16, u16)>, action: u32) -> MatchSpec {
        let src: Option<Prefix> = src.map(|s| s.parse().unwrap());
        MatchSpec {
            family: match src {
                Some(p) if p.is_ipv4() => Family::V4,
                Some(_) => Family::V6,
                None => Family::Any,
            },
            src,
            dst: None,
            proto: dport.map(|_| 6),
            l4_src: None,
            l4_dst: dport,
            tcp_flags: None,
            action,
        }
    }

    /// Reference classifier: first rule matching (src address, protocol, dst port).
    fn reference(rules: &[MatchSpec], src: std::net::IpAddr, proto: u8, dport: u16) -> Option<usize> {
        rules.iter().position(|r| {
            let fam_ok = match r.family {
                Family::Any => true,
                Family::V4 => src.is_ipv4(),
                Family::V6 => src.is_ipv6(),
            };
            fam_ok
                && r.src.is_none_or(|p| p.covers(&Prefix::containing(src, if src.is_ipv4() { 32 } else { 128 })))
                && r.proto.is_none_or(|p| p == proto)
                && r.l4_dst.is_none_or(|(a, b)| (a..=b).contains(&dport))
        })
    }

    /// Evaluates an image in userspace the way the XDP program does.
    fn evaluate(img: &PolicyImage, src: std::net::IpAddr, proto: u8, dport: u16) -> Option<usize> {
        let base = img.pool_base;
        let lpm = |entries: &[(Prefix, u32)]| {
            entries
                .iter()
                .filter(|(p, _)| p.covers(&Prefix::containing(src, if src.is_ipv4() { 32 } else { 128 })))
                .max_by_key(|(p, _)| p.len())
                .map(|e| e.1)
        };
        let fixed = |i: usize| (img.header.fixed[i] != LOOKUP).then_some(img.header.fixed[i]);
        let (fs, fd) = if src.is_ipv4() { (FIXED_V4_SRC, FIXED_V4_DST) } else { (FIXED_V6_SRC, FIXED_V6_DST) };
        let src_c = fixed(fs).or_else(|| lpm(&img.src))?;
        let dst_any: Prefix = if src.is_ipv4() { "0.0.0.0/0".parse().unwrap() } else { "::/0".parse().unwrap() };
        let dst_c = fixed(fd).or_else(|| img.dst.iter().find(|(p, _)| *p == dst_any).map(|e| e.1))?;
        let l4 = |field: u8, v: u16| {
            img.l4
                .iter()
                .filter(|(f, lo, len, _)| {
                    *f == field && {
                        let m = if *len == 0 { 0 } else { u16::MAX << (16 - len) };
                        v & m == *lo
                    }
                })
                .max_by_key(|e| e.2)
                .map(|e| e.3)
        };
        let sp = fixed(FIXED_L4_SRC).or_else(|| l4(L4_SRC, 0))?;
        let dp = fixed(FIXED_L4_DST).or_else(|| l4(L4_DST, dport))?;
        let classes = [src_c, dst_c, img.header.proto_class[proto as usize], img.header.flags_class[0], sp, dp];
        let word = |c: u32, off: u32| img.pool[(c - base + off) as usize];
        let and = |off: u32| classes.iter().fold(u64::MAX, |a, &c| a & word(c, off));
        for s in 0..img.header.summary {
            let mut cand = and(s);
            while cand != 0 {
                let w = s * 64 + cand.trailing_zeros();
                let r = and(img.header.summary + w);
                if r != 0 {
                    return Some((w * 64 + r.trailing_zeros()) as usize);
                }
                cand &= cand - 1;
            }
        }
        None
    }

    #[test]
    fn classifier_random_rules_agree_with_first_match_reference() {
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut rules = Vec::new();
        for i in 0..300 {
            let src = match next() % 4 {
                0 => None,
                1 => Some(format!("198.51.{}.0/24", next() % 4)),
                2 => Some(format!("198.51.0.0/{}", 16 + next() % 8)),
                _ => Some(format!("2001:db8:{:x}::/48", next() % 3)),
            };
            let src = src.map(|s| {
                Prefix::containing(
                    s.split('/').next().unwrap().parse().unwrap(),
                    s.split('/').nth(1).unwrap().parse().unwrap(),
                )
                .to_string()
            });
            let dport = match next() % 3 {
                0 => None,
                _ => {
                    let a = (next() % 2000) as u16;
                    Some((a, a + (next() % 300) as u16))
                }
            };
            rules.push(rule(src.as_deref(), dport, 1 + (i % 3) as u32));
        }
        let img = compile(&rules, 3, 100, |_| Some(5000)).unwrap();
        assert_eq!(img.header.rule_base, 100);
        for _ in 0..3000 {
            let src: std::net::IpAddr = if next() % 2 == 0 {
                std::net::Ipv4Addr::new(198, 51, (next() % 6) as u8, next() as u8).into()
            } else {
                std::net::Ipv6Addr::new(0x2001, 0xdb8, (next() % 4) as u16, 0, 0, 0, 0, 1).into()
            };
            let proto = if next() % 4 == 0 { 17 } else { 6 };
            let dport = (next() % 2500) as u16;
            assert_eq!(
                evaluate(&img, src, proto, dport),
                reference(&rules, src, proto, dport),
                "{src} {proto} {dport}"
            );
        }
    }

    #[test]
    fn classifier_port_ranges_expand_to_aligned_blocks_covering_all_values() {
        let rules = vec![rule(None, Some((1000, 1999)), 1), rule(None, Some((0, 0)), 2)];
        let img = compile(&rules, 0, 0, |_| Some(0)).unwrap();
        let mut covered = vec![0u32; 65536];
        for (f, lo, len, _) in &img.l4 {
            if *f == L4_DST {
                let size = 1u32 << (16 - len);
                for v in u32::from(*lo)..u32::from(*lo) + size {
                    covered[v as usize] += 1;
                }
            }
        }
        assert!(covered.iter().all(|&c| c == 1), "every port in exactly one block");
    }
}
