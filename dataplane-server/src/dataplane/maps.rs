//! Typed wrappers over the programs' maps: the rest of the server never sees key/value bytes.

use std::{collections::BTreeSet, net::IpAddr};

use aya::maps::{lpm_trie::Key, Array, DevMap, HashMap, LpmTrie, MapData, MapError, PerCpuArray, PerCpuValues};
use dataplane_common::{
    flow::{FlowConfig, FlowKeyV4, FlowKeyV6, FlowValue},
    maps as names,
    policy::{PolicyAddrV4, PolicyAddrV6, PolicyL4, PolicyTable, RuleStats},
    route::IFACE_KERNEL_FIB,
    route::VRF_BITS,
    InterfaceConfig, NextHop, NextHopStats, RouteAddrV4, RouteAddrV6, RouteValue, MAX_DIRECT_IFINDEX,
};

use super::{DataplaneError, FlowKey, PolicyImage};
use crate::net::Prefix;

fn cpus() -> Result<usize, DataplaneError> {
    aya::util::nr_cpus().map_err(|(path, source)| DataplaneError::Io {
        path: path.into(),
        op: "read possible CPUs",
        source,
    })
}

/// `INTERFACES` (array by ifindex) and `INTERFACES_HIGH` (hash, ifindexes past the array):
/// ifindex -> interface config, each ifindex in exactly one of them.
pub struct Interfaces {
    direct: Array<MapData, InterfaceConfig>,
    high: HashMap<MapData, u32, InterfaceConfig>,
    /// Ifindexes with an entry, for counting without walking 64k array entries.
    present: BTreeSet<u32>,
}

impl Interfaces {
    pub fn new(direct: Array<MapData, InterfaceConfig>, high: HashMap<MapData, u32, InterfaceConfig>) -> Self {
        Self { direct, high, present: BTreeSet::new() }
    }

    /// Writes `cfg` (which must carry `IFACE_PRESENT`) for `ifindex`.
    pub fn insert(&mut self, ifindex: u32, cfg: &InterfaceConfig) -> Result<(), DataplaneError> {
        if ifindex < MAX_DIRECT_IFINDEX {
            self.direct.set(ifindex, cfg, 0).map_err(DataplaneError::map(names::INTERFACES, "update"))?;
        } else {
            self.high.insert(ifindex, cfg, 0).map_err(DataplaneError::map(names::INTERFACES_HIGH, "insert"))?;
        }
        self.present.insert(ifindex);
        Ok(())
    }

    /// Records an entry written by an earlier run (adopted).
    pub fn mark_present(&mut self, ifindex: u32) {
        self.present.insert(ifindex);
    }

    pub fn remove(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
        if ifindex < MAX_DIRECT_IFINDEX {
            // An all-zero entry lacks IFACE_PRESENT: absent to the programs.
            let empty = InterfaceConfig {
                slot: 0,
                vrf: 0,
                mtu: 0,
                flags: 0,
                mac: [0; 6],
                _pad: [0; 2],
                ipv4: [0; 4],
                ipv6: [0; 16],
                fib_table: 0,
            };
            self.direct.set(ifindex, empty, 0).map_err(DataplaneError::map(names::INTERFACES, "clear"))?;
        } else {
            match self.high.remove(&ifindex) {
                // Already gone is what we wanted.
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(DataplaneError::map(names::INTERFACES_HIGH, "remove")(e)),
            }
        }
        self.present.remove(&ifindex);
        Ok(())
    }

    fn get(&self, ifindex: u32) -> Result<InterfaceConfig, DataplaneError> {
        if ifindex < MAX_DIRECT_IFINDEX {
            self.direct.get(&ifindex, 0).map_err(DataplaneError::map(names::INTERFACES, "lookup"))
        } else {
            self.high.get(&ifindex, 0).map_err(DataplaneError::map(names::INTERFACES_HIGH, "lookup"))
        }
    }

    /// Rewrites, as `f` makes them, the entries `which` selects (only those `f` changes).
    fn patch(
        &mut self,
        which: impl Fn(&InterfaceConfig) -> bool,
        f: impl Fn(InterfaceConfig) -> InterfaceConfig,
    ) -> Result<(), DataplaneError> {
        let present: Vec<u32> = self.present.iter().copied().collect();
        for ifindex in present {
            let cfg = self.get(ifindex)?;
            if which(&cfg) && f(cfg) != cfg {
                self.insert(ifindex, &f(cfg))?;
            }
        }
        Ok(())
    }

    /// Rewrites every entry as `f` makes it (only those it changes).
    pub fn patch_all(&mut self, f: impl Fn(InterfaceConfig) -> InterfaceConfig) -> Result<(), DataplaneError> {
        self.patch(|_| true, f)
    }

    /// (slot, VRF) of every entry.
    pub fn slots_and_vrfs(&self) -> Result<Vec<(u32, u32)>, DataplaneError> {
        self.present.iter().map(|&ifindex| self.get(ifindex).map(|c| (c.slot, c.vrf))).collect()
    }

    /// Points the entries of VRF `vrf`'s routes-mode interfaces at flat-table root `root`.
    pub fn set_fib4_root(&mut self, vrf: u32, root: u32) -> Result<(), DataplaneError> {
        self.patch(|c| c.vrf == vrf && c.flags & IFACE_KERNEL_FIB == 0, |c| InterfaceConfig { fib_table: root, ..c })
    }

    /// Sets or clears `flag` in the entry of interface slot `slot` (`None`: in every entry).
    pub fn set_flag(&mut self, slot: Option<u32>, flag: u32, on: bool) -> Result<(), DataplaneError> {
        self.patch(
            |c| slot.is_none_or(|s| c.slot == s),
            |c| InterfaceConfig { flags: if on { c.flags | flag } else { c.flags & !flag }, ..c },
        )
    }

    /// Entries in `INTERFACES`.
    pub fn count_direct(&self) -> u64 {
        self.present.range(..MAX_DIRECT_IFINDEX).count() as u64
    }

    /// Entries in `INTERFACES_HIGH`.
    pub fn count_high(&self) -> u64 {
        self.present.range(MAX_DIRECT_IFINDEX..).count() as u64
    }
}

/// A per-CPU array of plain counters, summed on read and zeroed when an id is (re)used.
pub struct CounterArray<T: aya::Pod> {
    name: &'static str,
    map: PerCpuArray<MapData, T>,
    cpus: usize,
}

/// Counters that can be added up across CPUs.
pub trait Counters: aya::Pod + Copy {
    fn zero() -> Self;
    fn add(&mut self, other: &Self);
}

impl Counters for dataplane_common::InterfaceStats {
    fn zero() -> Self {
        Self::ZERO
    }
    fn add(&mut self, other: &Self) {
        self.accumulate(other)
    }
}

impl Counters for NextHopStats {
    fn zero() -> Self {
        Self::default()
    }
    fn add(&mut self, o: &Self) {
        self.packets = self.packets.wrapping_add(o.packets);
        self.bytes = self.bytes.wrapping_add(o.bytes);
    }
}

impl<T: Counters> CounterArray<T> {
    pub fn new(name: &'static str, map: PerCpuArray<MapData, T>) -> Result<Self, DataplaneError> {
        Ok(Self { name, map, cpus: cpus()? })
    }

    fn check(&self, id: u32) -> Result<(), DataplaneError> {
        if id >= self.map.len() {
            return Err(DataplaneError::SlotOutOfRange { map: self.name, slot: id, max: self.map.len() });
        }
        Ok(())
    }

    /// The counters of `id` summed over every CPU.
    pub fn sum(&self, id: u32) -> Result<T, DataplaneError> {
        self.check(id)?;
        let per_cpu = self.map.get(&id, 0).map_err(DataplaneError::map(self.name, "lookup"))?;
        let mut total = T::zero();
        for s in per_cpu.iter() {
            total.add(s);
        }
        Ok(total)
    }

    /// Zeroes `id` on every CPU, so a reused id starts from nothing.
    pub fn reset(&mut self, id: u32) -> Result<(), DataplaneError> {
        self.check(id)?;
        let zeros = PerCpuValues::try_from(vec![T::zero(); self.cpus]).map_err(|source| DataplaneError::Io {
            path: self.name.into(),
            op: "build per-CPU value",
            source,
        })?;
        self.map.set(id, zeros, 0).map_err(DataplaneError::map(self.name, "update"))
    }
}

/// `NEXTHOPS`: next-hop slot -> next hop.
pub struct NextHops(pub Array<MapData, NextHop>);

impl NextHops {
    pub fn set(&mut self, slot: u32, nh: &NextHop) -> Result<(), DataplaneError> {
        self.0.set(slot, nh, 0).map_err(DataplaneError::map(names::NEXTHOPS, "update"))
    }
}

/// `TX_PORTS`: interface slot -> egress ifindex.
pub struct TxPorts(pub DevMap<MapData>);

impl TxPorts {
    pub fn set(&mut self, slot: u32, ifindex: u32) -> Result<(), DataplaneError> {
        self.0
            .set(slot, ifindex, None, 0)
            .map_err(|source| DataplaneError::DevMap { op: "update", source: Box::new(source) })
    }

    /// Devmaps are arrays: there is no removing, so the entry gets ifindex 0, which the kernel
    /// accepts as "no device" and a redirect to it fails (XDP then drops, counted).
    pub fn clear(&mut self, slot: u32) -> Result<(), DataplaneError> {
        self.set(slot, 0)
    }
}

/// `ROUTES_V4` and `ROUTES_V6`: (VRF, prefix) -> route, longest-prefix match.
/// Routes per `BPF_MAP_UPDATE_BATCH` call.
const BATCH: usize = 65536;

/// One `BPF_MAP_UPDATE_BATCH` of `count` packed keys and values into map `fd`. On an error, how
/// many entries the kernel wrote before it (it reports that in `count`).
pub(super) fn update_batch(fd: i32, keys: &[u8], values: &[u8], count: u32) -> Result<(), (u32, std::io::Error)> {
    // `bpf_attr.batch`: in_batch, out_batch, keys, values (u64 each), count, map_fd (u32 each),
    // elem_flags, flags (u64 each); the rest of the union zero.
    let mut attr = [0u64; 16];
    attr[2] = keys.as_ptr() as u64;
    attr[3] = values.as_ptr() as u64;
    attr[4] = u64::from(count) | (u64::from(fd as u32) << 32);
    // SAFETY: `attr` is a zeroed bpf_attr with the batch fields set; `keys` and `values` hold
    // `count` packed entries each and outlive the call; the kernel writes back only `count`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            26 as libc::c_long,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr) as libc::c_long,
        )
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        return Err(((attr[4] & 0xffff_ffff) as u32, e));
    }
    Ok(())
}

pub struct Routes {
    pub v4: LpmTrie<MapData, RouteAddrV4, RouteValue>,
    pub v6: LpmTrie<MapData, RouteAddrV6, RouteValue>,
}

impl Routes {
    pub fn insert(&mut self, vrf: u32, prefix: &Prefix, nexthop: u32) -> Result<(), DataplaneError> {
        let value = RouteValue { nexthop, prefix_len: prefix.len().into() };
        let plen = VRF_BITS + u32::from(prefix.len());
        match prefix.addr() {
            IpAddr::V4(a) => self
                .v4
                .insert(&Key::new(plen, RouteAddrV4 { vrf: vrf.to_be_bytes(), addr: a.octets() }), value, 0)
                .map_err(DataplaneError::map(names::ROUTES_V4, "insert")),
            IpAddr::V6(a) => self
                .v6
                .insert(&Key::new(plen, RouteAddrV6 { vrf: vrf.to_be_bytes(), addr: a.octets() }), value, 0)
                .map_err(DataplaneError::map(names::ROUTES_V6, "insert")),
        }
    }

    /// Inserts many routes (VRF, prefix, next-hop slot) with `BPF_MAP_UPDATE_BATCH`, one call per
    /// family and chunk, or one update per route where the kernel has no batch updates for LPM
    /// tries. On a failure: the positions (in `routes`) already written, and the error.
    pub fn insert_many(&mut self, routes: &[(u32, Prefix, u32)]) -> Result<(), (Vec<usize>, DataplaneError)> {
        use aya::maps::IterableMap;
        use std::os::fd::{AsFd, AsRawFd};
        let mut done = Vec::with_capacity(routes.len());
        for v6 in [false, true] {
            let (fd, name, key_len) = if v6 {
                (self.v6.map().fd().as_fd().as_raw_fd(), names::ROUTES_V6, 4 + 20)
            } else {
                (self.v4.map().fd().as_fd().as_raw_fd(), names::ROUTES_V4, 4 + 8)
            };
            let mine: Vec<usize> = (0..routes.len()).filter(|i| routes[*i].1.is_ipv4() != v6).collect();
            for chunk in mine.chunks(BATCH) {
                let mut keys = Vec::with_capacity(chunk.len() * key_len);
                let mut values = Vec::with_capacity(chunk.len() * 8);
                for &i in chunk {
                    let (vrf, prefix, slot) = &routes[i];
                    // `bpf_lpm_trie_key`: prefix length (host order), then the data.
                    keys.extend_from_slice(&(VRF_BITS + u32::from(prefix.len())).to_ne_bytes());
                    keys.extend_from_slice(&vrf.to_be_bytes());
                    match prefix.addr() {
                        IpAddr::V4(a) => keys.extend_from_slice(&a.octets()),
                        IpAddr::V6(a) => keys.extend_from_slice(&a.octets()),
                    }
                    values.extend_from_slice(&slot.to_ne_bytes());
                    values.extend_from_slice(&u32::from(prefix.len()).to_ne_bytes());
                }
                match update_batch(fd, &keys, &values, chunk.len() as u32) {
                    Ok(()) => done.extend_from_slice(chunk),
                    Err((written, e))
                        if written == 0
                            && matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOTSUP) | Some(524)) =>
                    {
                        // No batch updates here: one at a time.
                        for &i in chunk {
                            let (vrf, prefix, slot) = &routes[i];
                            if let Err(e) = self.insert(*vrf, prefix, *slot) {
                                return Err((done, e));
                            }
                            done.push(i);
                        }
                    }
                    Err((written, e)) => {
                        done.extend_from_slice(&chunk[..written as usize]);
                        return Err((
                            done,
                            DataplaneError::Io { path: name.into(), op: "BPF_MAP_UPDATE_BATCH", source: e },
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    pub fn remove(&mut self, vrf: u32, prefix: &Prefix) -> Result<(), DataplaneError> {
        let plen = VRF_BITS + u32::from(prefix.len());
        let r = match prefix.addr() {
            IpAddr::V4(a) => self.v4.remove(&Key::new(plen, RouteAddrV4 { vrf: vrf.to_be_bytes(), addr: a.octets() })),
            IpAddr::V6(a) => self.v6.remove(&Key::new(plen, RouteAddrV6 { vrf: vrf.to_be_bytes(), addr: a.octets() })),
        };
        match r {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(DataplaneError::map(
                if prefix.is_ipv4() { names::ROUTES_V4 } else { names::ROUTES_V6 },
                "remove",
            )(e)),
        }
    }

    /// Every route in both tries: (VRF, prefix, next-hop slot).
    pub fn dump(&self) -> Result<Vec<(u32, Prefix, u32)>, DataplaneError> {
        let mut out = Vec::new();
        for e in self.v4.iter() {
            let (k, v) = e.map_err(DataplaneError::map(names::ROUTES_V4, "iterate"))?;
            let len = (k.prefix_len().saturating_sub(VRF_BITS)) as u8;
            let d = k.data();
            out.push((u32::from_be_bytes(d.vrf), Prefix::containing(IpAddr::from(d.addr), len), v.nexthop));
        }
        for e in self.v6.iter() {
            let (k, v) = e.map_err(DataplaneError::map(names::ROUTES_V6, "iterate"))?;
            let len = (k.prefix_len().saturating_sub(VRF_BITS)) as u8;
            let d = k.data();
            out.push((u32::from_be_bytes(d.vrf), Prefix::containing(IpAddr::from(d.addr), len), v.nexthop));
        }
        Ok(out)
    }

    /// Longest-prefix match, exactly as the XDP program looks it up.
    pub fn lookup(&self, vrf: u32, addr: IpAddr) -> Result<Option<RouteValue>, DataplaneError> {
        let r = match addr {
            IpAddr::V4(a) => {
                self.v4.get(&Key::new(VRF_BITS + 32, RouteAddrV4 { vrf: vrf.to_be_bytes(), addr: a.octets() }), 0)
            }
            IpAddr::V6(a) => {
                self.v6.get(&Key::new(VRF_BITS + 128, RouteAddrV6 { vrf: vrf.to_be_bytes(), addr: a.octets() }), 0)
            }
        };
        match r {
            Ok(v) => Ok(Some(v)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => {
                Err(DataplaneError::map(if addr.is_ipv4() { names::ROUTES_V4 } else { names::ROUTES_V6 }, "lookup")(e))
            }
        }
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

/// Which address trie an entry goes to.
#[derive(Clone, Copy)]
enum AddrField {
    Src,
    Dst,
}

impl PolicyMaps {
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

/// The flow tables and flow-mode maps.
pub struct FlowMaps {
    pub v4: HashMap<MapData, FlowKeyV4, FlowValue>,
    pub v6: HashMap<MapData, FlowKeyV6, FlowValue>,
    pub config: Array<MapData, FlowConfig>,
    pub state: Array<MapData, u64>,
}

fn key4(k: &FlowKey, src: std::net::Ipv4Addr, dst: std::net::Ipv4Addr) -> FlowKeyV4 {
    FlowKeyV4 {
        vrf: k.vrf,
        src: src.octets(),
        dst: dst.octets(),
        sport: k.sport,
        dport: k.dport,
        proto: k.proto,
        _pad: [0; 3],
    }
}

fn key6(k: &FlowKey, src: std::net::Ipv6Addr, dst: std::net::Ipv6Addr) -> FlowKeyV6 {
    FlowKeyV6 {
        vrf: k.vrf,
        src: src.octets(),
        dst: dst.octets(),
        sport: k.sport,
        dport: k.dport,
        proto: k.proto,
        _pad: [0; 3],
    }
}

impl FlowMaps {
    /// Whether flow mode is on for interface slot `slot`.
    pub fn enabled(&self, slot: u32) -> Result<bool, DataplaneError> {
        Ok(self.config.get(&slot, 0).map_err(DataplaneError::map(names::FLOW_CONFIG, "lookup"))?.enabled != 0)
    }

    pub fn put(&mut self, k: &FlowKey, v: &FlowValue) -> Result<(), DataplaneError> {
        match (k.src, k.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                self.v4.insert(key4(k, s, d), v, 0).map_err(DataplaneError::map(names::FLOWS_V4, "insert"))
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                self.v6.insert(key6(k, s, d), v, 0).map_err(DataplaneError::map(names::FLOWS_V6, "insert"))
            }
            _ => Err(DataplaneError::Missing { what: "flow family", name: "mixed IPv4/IPv6 flow key" }),
        }
    }

    pub fn get(&self, k: &FlowKey) -> Result<Option<FlowValue>, DataplaneError> {
        let r = match (k.src, k.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => self.v4.get(&key4(k, s, d), 0),
            (IpAddr::V6(s), IpAddr::V6(d)) => self.v6.get(&key6(k, s, d), 0),
            _ => return Ok(None),
        };
        match r {
            Ok(v) => Ok(Some(v)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(DataplaneError::map(names::FLOWS_V4, "lookup")(e)),
        }
    }

    pub fn remove(&mut self, k: &FlowKey) -> Result<(), DataplaneError> {
        let r = match (k.src, k.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => self.v4.remove(&key4(k, s, d)),
            (IpAddr::V6(s), IpAddr::V6(d)) => self.v6.remove(&key6(k, s, d)),
            _ => return Ok(()),
        };
        match r {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(DataplaneError::map(names::FLOWS_V4, "remove")(e)),
        }
    }

    pub fn all(&self) -> Result<Vec<(FlowKey, FlowValue)>, DataplaneError> {
        let mut out = Vec::new();
        for item in self.v4.iter() {
            // An entry evicted or deleted during the walk is simply not listed.
            let Ok((k, v)) = item else { continue };
            out.push((
                FlowKey {
                    vrf: k.vrf,
                    src: IpAddr::from(k.src),
                    dst: IpAddr::from(k.dst),
                    proto: k.proto,
                    sport: k.sport,
                    dport: k.dport,
                },
                v,
            ));
        }
        for item in self.v6.iter() {
            let Ok((k, v)) = item else { continue };
            out.push((
                FlowKey {
                    vrf: k.vrf,
                    src: IpAddr::from(k.src),
                    dst: IpAddr::from(k.dst),
                    proto: k.proto,
                    sport: k.sport,
                    dport: k.dport,
                },
                v,
            ));
        }
        Ok(out)
    }
}
