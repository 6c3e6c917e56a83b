//! The policy classifier's maps (layout: `dataplane_common::policy`): tables written whole before
//! an attachment points at them, attachments per interface and direction, rule counters.

use std::net::IpAddr;

use aya::maps::{lpm_trie::Key, Array, LpmTrie, MapData, MapError, PerCpuArray, PerCpuValues};
use dataplane_common::{
    maps as names,
    policy::{PolicyAddrV4, PolicyAddrV6, PolicyL4, PolicyTable, RuleStats},
};

use super::{counters::cpus, loader::open_map, DataplaneError, KernelDataplane};
use crate::net::Prefix;

/// A compiled policy table (see `domain::classifier`), with absolute pool offsets and rule slots,
/// ready to be written into the policy maps.
#[derive(Clone, Debug)]
pub struct PolicyImage {
    pub table: u32,
    pub header: dataplane_common::policy::PolicyTable,
    /// `POLICY_WORDS` index of `pool[0]`.
    pub pool_base: u32,
    pub pool: Vec<u64>,
    /// (prefix, class record offset), both families.
    pub src: Vec<(Prefix, u32)>,
    pub dst: Vec<(Prefix, u32)>,
    /// (field, value, prefix length over 16 bits, class record offset).
    pub l4: Vec<(u8, u16, u8, u32)>,
    /// Rule `i`'s action, stored at rule slot `header.rule_base + i`.
    pub actions: Vec<u32>,
}

/// The kernel side of policies.
pub trait Policies {
    /// Writes a policy table (records, tries, actions, zeroed rule counters, header last). The
    /// table must not be reachable from any attachment yet.
    fn write_policy(&self, image: &PolicyImage) -> Result<(), DataplaneError>;
    /// Removes a table's trie entries. Only after an RCU grace period since it became unreachable.
    fn clear_policy(&self, image: &PolicyImage) -> Result<(), DataplaneError>;
    /// Sets the attachment word of interface `slot`, `direction` (0 detaches).
    fn set_policy_attachment(&self, slot: u32, direction: u32, word: u32) -> Result<(), DataplaneError>;
    /// Hit counters of rule slots `first..first + count`, summed over CPUs.
    fn rule_stats(&self, first: u32, count: u32) -> Result<Vec<dataplane_common::policy::RuleStats>, DataplaneError>;
    /// Every non-zero attachment word: (interface slot, direction, word).
    fn policy_attachments(&self) -> Result<Vec<(u32, u32, u32)>, DataplaneError>;
    /// Table `table` as the kernel has it (header, pool, trie entries, actions), read back for a
    /// restart whose state file does not have its rules; `None` if the kernel has nothing of it.
    /// Its rule count is an upper bound (the leading non-zero actions from its first slot).
    fn read_policy(&self, table: u32) -> Result<Option<PolicyImage>, DataplaneError>;
    /// Removes the trie entries of every table but `keep` (what a compile cut short by a crash
    /// left, which a table given the same number later would otherwise inherit). Returns the
    /// tables it cleared.
    fn purge_policy_tables(&self, keep: &std::collections::BTreeSet<u32>) -> Result<Vec<u32>, DataplaneError>;
}

impl Policies for KernelDataplane {
    fn write_policy(&self, image: &super::PolicyImage) -> Result<(), DataplaneError> {
        self.lock().policies.write(image)
    }

    fn read_policy(&self, table: u32) -> Result<Option<PolicyImage>, DataplaneError> {
        self.lock().policies.read(table)
    }

    fn purge_policy_tables(&self, keep: &std::collections::BTreeSet<u32>) -> Result<Vec<u32>, DataplaneError> {
        let mut inner = self.lock();
        let entries = inner.policies.entries()?;
        let mut cleared = std::collections::BTreeSet::new();
        for table in entries.keys().filter(|t| !keep.contains(t)) {
            if let Some(image) = inner.policies.read(*table)? {
                inner.policies.clear(&image)?;
                cleared.insert(*table);
            }
        }
        Ok(cleared.into_iter().collect())
    }

    fn policy_attachments(&self) -> Result<Vec<(u32, u32, u32)>, DataplaneError> {
        let inner = self.lock();
        let mut out = Vec::new();
        for slot in 0..dataplane_common::MAX_INTERFACES {
            for direction in [dataplane_common::policy::DIR_INGRESS, dataplane_common::policy::DIR_EGRESS] {
                match inner.policies.attachment(slot, direction)? {
                    0 => {}
                    word => out.push((slot, direction, word)),
                }
            }
        }
        Ok(out)
    }

    fn clear_policy(&self, image: &super::PolicyImage) -> Result<(), DataplaneError> {
        self.lock().policies.clear(image)
    }

    fn set_policy_attachment(&self, slot: u32, direction: u32, word: u32) -> Result<(), DataplaneError> {
        use dataplane_common::route::{IFACE_EGRESS_POLICIES, IFACE_POLICY_IN};
        let mut inner = self.lock();
        // The word first: a packet that sees a flag finds what it announces.
        inner.policies.set_attachment(slot, direction, word)?;
        if direction == dataplane_common::policy::DIR_INGRESS {
            return inner.interfaces.set_flag(Some(slot), IFACE_POLICY_IN, word != 0);
        }
        if word != 0 {
            inner.egress_policies.insert(slot);
        } else {
            inner.egress_policies.remove(&slot);
        }
        let any = !inner.egress_policies.is_empty();
        inner.interfaces.set_flag(None, IFACE_EGRESS_POLICIES, any)
    }

    fn rule_stats(&self, first: u32, count: u32) -> Result<Vec<dataplane_common::policy::RuleStats>, DataplaneError> {
        self.lock().policies.rule_stats(first, count)
    }
}

/// The policy classifier's maps (layout: `dataplane_common::policy`).
pub struct PolicyMaps {
    pub attach: Array<MapData, u32>,
    pub headers: Array<MapData, PolicyTable>,
    pub words: Array<MapData, u64>,
    pub v4_src: LpmTrie<MapData, PolicyAddrV4, u32>,
    pub v4_dst: LpmTrie<MapData, PolicyAddrV4, u32>,
    pub v6_src: LpmTrie<MapData, PolicyAddrV6, u32>,
    pub v6_dst: LpmTrie<MapData, PolicyAddrV6, u32>,
    pub l4: LpmTrie<MapData, PolicyL4, u32>,
    pub actions: Array<MapData, u32>,
    pub stats: PerCpuArray<MapData, RuleStats>,
}

/// One table's trie entries, as a [`PolicyImage`] holds them.
#[derive(Debug, Default)]
struct TrieEntries {
    src: Vec<(Prefix, u32)>,
    dst: Vec<(Prefix, u32)>,
    l4: Vec<(u8, u16, u8, u32)>,
}

/// Which address trie an entry goes to.
#[derive(Clone, Copy)]
enum AddrField {
    Src,
    Dst,
}

impl PolicyMaps {
    pub(super) fn open(ebpf: &mut aya::Ebpf) -> Result<Self, DataplaneError> {
        Ok(Self {
            attach: open_map(ebpf, names::POLICY_ATTACH)?,
            headers: open_map(ebpf, names::POLICY_TABLE_HDRS)?,
            words: open_map(ebpf, names::POLICY_WORDS)?,
            v4_src: open_map(ebpf, names::POLICY_V4_SRC)?,
            v4_dst: open_map(ebpf, names::POLICY_V4_DST)?,
            v6_src: open_map(ebpf, names::POLICY_V6_SRC)?,
            v6_dst: open_map(ebpf, names::POLICY_V6_DST)?,
            l4: open_map(ebpf, names::POLICY_L4)?,
            actions: open_map(ebpf, names::POLICY_ACTIONS)?,
            stats: open_map(ebpf, names::POLICY_RULE_STATS)?,
        })
    }

    /// Interface slots with a policy attached in `direction`.
    pub(super) fn attached_slots(&self, direction: u32) -> Result<std::collections::BTreeSet<u32>, DataplaneError> {
        let mut slots = std::collections::BTreeSet::new();
        for slot in 0..dataplane_common::MAX_INTERFACES {
            if self.attachment(slot, direction)? != 0 {
                slots.insert(slot);
            }
        }
        Ok(slots)
    }

    /// Writes everything of `image`, the header last; on failure removes what it inserted.
    pub fn write(&mut self, image: &PolicyImage) -> Result<(), DataplaneError> {
        let r = self.write_inner(image);
        if r.is_err() {
            let _ = self.clear(image);
        }
        r
    }

    fn write_inner(&mut self, image: &PolicyImage) -> Result<(), DataplaneError> {
        for (i, w) in image.pool.iter().enumerate() {
            self.words
                .set(image.pool_base + i as u32, w, 0)
                .map_err(DataplaneError::map(names::POLICY_WORDS, "update"))?;
        }
        for (field, entries) in [(AddrField::Src, &image.src), (AddrField::Dst, &image.dst)] {
            for (prefix, class) in entries {
                self.insert_addr(image.table, field, prefix, *class)?;
            }
        }
        for &(field, value, len, class) in &image.l4 {
            self.l4
                .insert(&l4_key(image.table, field, value, len), class, 0)
                .map_err(DataplaneError::map(names::POLICY_L4, "insert"))?;
        }
        let cpus = cpus()?;
        for (i, action) in image.actions.iter().enumerate() {
            let slot = image.header.rule_base + i as u32;
            self.actions.set(slot, action, 0).map_err(DataplaneError::map(names::POLICY_ACTIONS, "update"))?;
            let zero = PerCpuValues::try_from(vec![RuleStats::default(); cpus]).map_err(|source| {
                DataplaneError::Io { path: names::POLICY_RULE_STATS.into(), op: "per-CPU zero value", source }
            })?;
            self.stats.set(slot, zero, 0).map_err(DataplaneError::map(names::POLICY_RULE_STATS, "zero"))?;
        }
        self.headers.set(image.table, image.header, 0).map_err(DataplaneError::map(names::POLICY_TABLE_HDRS, "update"))
    }

    fn insert_addr(&mut self, table: u32, field: AddrField, prefix: &Prefix, class: u32) -> Result<(), DataplaneError> {
        let t = table.to_be_bytes();
        let plen = 32 + u32::from(prefix.len());
        match (prefix.addr(), field) {
            (IpAddr::V4(a), f) => {
                let (map, name) = match f {
                    AddrField::Src => (&mut self.v4_src, names::POLICY_V4_SRC),
                    AddrField::Dst => (&mut self.v4_dst, names::POLICY_V4_DST),
                };
                map.insert(&Key::new(plen, PolicyAddrV4 { table: t, addr: a.octets() }), class, 0)
                    .map_err(DataplaneError::map(name, "insert"))
            }
            (IpAddr::V6(a), f) => {
                let (map, name) = match f {
                    AddrField::Src => (&mut self.v6_src, names::POLICY_V6_SRC),
                    AddrField::Dst => (&mut self.v6_dst, names::POLICY_V6_DST),
                };
                map.insert(&Key::new(plen, PolicyAddrV6 { table: t, addr: a.octets() }), class, 0)
                    .map_err(DataplaneError::map(name, "insert"))
            }
        }
    }

    /// Removes `image`'s trie entries (absent ones are fine).
    pub fn clear(&mut self, image: &PolicyImage) -> Result<(), DataplaneError> {
        let t = image.table.to_be_bytes();
        fn gone(r: Result<(), MapError>, name: &'static str) -> Result<(), DataplaneError> {
            match r {
                Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
                Err(e) => Err(DataplaneError::map(name, "remove")(e)),
            }
        }
        for (field, entries) in [(AddrField::Src, &image.src), (AddrField::Dst, &image.dst)] {
            for (prefix, _) in entries {
                let plen = 32 + u32::from(prefix.len());
                match (prefix.addr(), field) {
                    (IpAddr::V4(a), AddrField::Src) => gone(
                        self.v4_src.remove(&Key::new(plen, PolicyAddrV4 { table: t, addr: a.octets() })),
                        names::POLICY_V4_SRC,
                    )?,
                    (IpAddr::V4(a), AddrField::Dst) => gone(
                        self.v4_dst.remove(&Key::new(plen, PolicyAddrV4 { table: t, addr: a.octets() })),
                        names::POLICY_V4_DST,
                    )?,
                    (IpAddr::V6(a), AddrField::Src) => gone(
                        self.v6_src.remove(&Key::new(plen, PolicyAddrV6 { table: t, addr: a.octets() })),
                        names::POLICY_V6_SRC,
                    )?,
                    (IpAddr::V6(a), AddrField::Dst) => gone(
                        self.v6_dst.remove(&Key::new(plen, PolicyAddrV6 { table: t, addr: a.octets() })),
                        names::POLICY_V6_DST,
                    )?,
                }
            }
        }
        for &(field, value, len, _) in &image.l4 {
            gone(self.l4.remove(&l4_key(image.table, field, value, len)), names::POLICY_L4)?;
        }
        Ok(())
    }

    /// Every trie entry, by table: (source, destination, L4) entries as an image holds them.
    #[allow(clippy::type_complexity)]
    fn entries(&self) -> Result<std::collections::BTreeMap<u32, TrieEntries>, DataplaneError> {
        let mut out: std::collections::BTreeMap<u32, TrieEntries> = std::collections::BTreeMap::new();
        let read = |e: MapError| DataplaneError::map(names::POLICY_V4_SRC, "iterate")(e);
        for (trie, is_src) in [(&self.v4_src, true), (&self.v4_dst, false)] {
            for item in trie.iter() {
                let (k, v) = item.map_err(read)?;
                let d = k.data();
                let p = Prefix::containing(IpAddr::from(d.addr), (k.prefix_len() - 32) as u8);
                let e = out.entry(u32::from_be_bytes(d.table)).or_default();
                if is_src {
                    e.src.push((p, v))
                } else {
                    e.dst.push((p, v))
                }
            }
        }
        for (trie, is_src) in [(&self.v6_src, true), (&self.v6_dst, false)] {
            for item in trie.iter() {
                let (k, v) = item.map_err(read)?;
                let d = k.data();
                let p = Prefix::containing(IpAddr::from(d.addr), (k.prefix_len() - 32) as u8);
                let e = out.entry(u32::from_be_bytes(d.table)).or_default();
                if is_src {
                    e.src.push((p, v))
                } else {
                    e.dst.push((p, v))
                }
            }
        }
        for item in self.l4.iter() {
            let (k, v) = item.map_err(DataplaneError::map(names::POLICY_L4, "iterate"))?;
            let d = k.data();
            let len = (k.prefix_len() - 40) as u8;
            out.entry(u32::from_be_bytes(d.table)).or_default().l4.push((d.field, u16::from_be_bytes(d.value), len, v));
        }
        Ok(out)
    }

    /// Table `table` as the maps hold it (see [`Policies::read_policy`]).
    pub fn read(&self, table: u32) -> Result<Option<PolicyImage>, DataplaneError> {
        use dataplane_common::policy::LOOKUP;
        let header = self.headers.get(&table, 0).map_err(DataplaneError::map(names::POLICY_TABLE_HDRS, "lookup"))?;
        let tries = self.entries()?.remove(&table).unwrap_or_default();
        let offsets: Vec<u32> = header
            .fixed
            .iter()
            .copied()
            .filter(|&f| f != LOOKUP)
            .chain(header.proto_class)
            .chain(header.flags_class)
            .chain(tries.src.iter().chain(&tries.dst).map(|&(_, o)| o))
            .chain(tries.l4.iter().map(|&(_, _, _, o)| o))
            .collect();
        let never_written = header.words == 0 && header.rule_base == 0 && offsets.iter().all(|&o| o == 0);
        if never_written && tries.src.is_empty() && tries.dst.is_empty() && tries.l4.is_empty() {
            return Ok(None);
        }
        // Records are laid out back to back from the pool's base, every one referenced.
        let record = header.words + header.summary;
        let base = offsets.iter().copied().min().unwrap_or(0);
        let end = offsets.iter().copied().max().map_or(base, |m| m + record);
        let mut pool = Vec::with_capacity((end - base) as usize);
        for i in base..end {
            pool.push(self.words.get(&i, 0).map_err(DataplaneError::map(names::POLICY_WORDS, "lookup"))?);
        }
        let mut actions = Vec::new();
        for slot in header.rule_base..header.rule_base.saturating_add(header.words * 64) {
            match self.actions.get(&slot, 0) {
                Ok(0) | Err(MapError::OutOfBounds { .. }) => break,
                Ok(a) => actions.push(a),
                Err(e) => return Err(DataplaneError::map(names::POLICY_ACTIONS, "lookup")(e)),
            }
        }
        Ok(Some(PolicyImage {
            table,
            header,
            pool_base: base,
            pool,
            src: tries.src,
            dst: tries.dst,
            l4: tries.l4,
            actions,
        }))
    }

    pub fn set_attachment(&mut self, slot: u32, direction: u32, word: u32) -> Result<(), DataplaneError> {
        self.attach.set(slot * 2 + direction, word, 0).map_err(DataplaneError::map(names::POLICY_ATTACH, "update"))
    }

    /// The attachment word of interface `slot`, `direction` (0: none).
    pub fn attachment(&self, slot: u32, direction: u32) -> Result<u32, DataplaneError> {
        self.attach.get(&(slot * 2 + direction), 0).map_err(DataplaneError::map(names::POLICY_ATTACH, "lookup"))
    }

    pub fn rule_stats(&self, first: u32, count: u32) -> Result<Vec<RuleStats>, DataplaneError> {
        (first..first + count)
            .map(|slot| {
                let per_cpu =
                    self.stats.get(&slot, 0).map_err(DataplaneError::map(names::POLICY_RULE_STATS, "read"))?;
                Ok(per_cpu.iter().fold(RuleStats::default(), |a, s| RuleStats {
                    packets: a.packets + s.packets,
                    bytes: a.bytes + s.bytes,
                }))
            })
            .collect()
    }
}

fn l4_key(table: u32, field: u8, value: u16, len: u8) -> Key<PolicyL4> {
    Key::new(40 + u32::from(len), PolicyL4 { table: table.to_be_bytes(), field, value: value.to_be_bytes(), _pad: 0 })
}
