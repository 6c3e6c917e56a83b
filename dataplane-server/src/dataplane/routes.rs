//! Routes in the kernel: the per-family LPM tries (`ROUTES_V4`, `ROUTES_V6`), which hold every
//! IPv6 route and the IPv4 routes of VRFs without a flat table, and the IPv4 route records
//! (`ROUTE4_RECORDS`, mapped), one per IPv4 route, which are what a restart reads back. The IPv4
//! flat tables themselves are `fib4`'s.

use std::{net::IpAddr, sync::atomic::Ordering};

use aya::maps::{lpm_trie::Key, LpmTrie, MapData, MapError};
use dataplane_common::{
    globals::ROUTE4_RECORDS_MARK, maps as names, route::VRF_BITS, RouteAddrV4, RouteAddrV6, RouteRecord4, RouteValue,
};

use super::{
    loader::{open_array_data, open_map},
    mmap::Mapping,
    DataplaneError, KernelDataplane,
};
use crate::net::Prefix;

/// A route the kernel found: the matched prefix length and the next-hop slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteMatch {
    pub prefix_len: u8,
    pub nexthop_slot: u32,
}

/// The kernel side of routes: the tries and the IPv4 records.
pub trait Routes {
    fn insert_route(&self, vrf: u32, prefix: &Prefix, nexthop_slot: u32) -> Result<(), DataplaneError>;

    fn remove_route(&self, vrf: u32, prefix: &Prefix) -> Result<(), DataplaneError>;

    /// Inserts (or replaces) many routes, in as few kernel calls as it can. On a failure: the
    /// positions in `routes` already written (for the caller to undo), and the error.
    fn insert_routes(&self, routes: &[(u32, Prefix, u32)]) -> Result<(), (Vec<usize>, DataplaneError)> {
        for (i, (vrf, prefix, slot)) in routes.iter().enumerate() {
            if let Err(e) = self.insert_route(*vrf, prefix, *slot) {
                return Err(((0..i).collect(), e));
            }
        }
        Ok(())
    }

    /// Longest-prefix match in the kernel's maps, as the XDP program does it (for IPv4, in the
    /// VRF's flat table when it has one).
    fn lookup_route(&self, vrf: u32, addr: IpAddr) -> Result<Option<RouteMatch>, DataplaneError>;

    /// Every route in the kernel's tries: (VRF, prefix, next-hop slot).
    fn dump_routes(&self) -> Result<Vec<(u32, Prefix, u32)>, DataplaneError>;

    /// Slots of `ROUTE4_RECORDS`.
    fn route4_capacity(&self) -> u32;
    /// Raises the records' high-water mark (`globals::ROUTE4_RECORDS_MARK`) to `slots`: a restart
    /// reads that many. Called before a record at or above the old mark is written.
    fn route4_reserve(&self, slots: u32) -> Result<(), DataplaneError>;
    /// Writes IPv4 route records (slot, record), each valid only once whole.
    fn route4_store(&self, records: &[(u32, dataplane_common::RouteRecord4)]) -> Result<(), DataplaneError>;
    /// Frees record slots.
    fn route4_clear(&self, slots: &[u32]) -> Result<(), DataplaneError>;
    /// Every valid record below the high-water mark.
    fn route4_records(&self) -> Result<Vec<(u32, dataplane_common::RouteRecord4)>, DataplaneError>;
}

impl Routes for KernelDataplane {
    fn insert_route(&self, vrf: u32, prefix: &Prefix, nexthop_slot: u32) -> Result<(), DataplaneError> {
        self.lock().routes.insert(vrf, prefix, nexthop_slot)
    }

    fn insert_routes(&self, routes: &[(u32, Prefix, u32)]) -> Result<(), (Vec<usize>, DataplaneError)> {
        self.lock().routes.insert_many(routes)
    }

    fn remove_route(&self, vrf: u32, prefix: &Prefix) -> Result<(), DataplaneError> {
        self.lock().routes.remove(vrf, prefix)
    }

    fn lookup_route(&self, vrf: u32, addr: std::net::IpAddr) -> Result<Option<RouteMatch>, DataplaneError> {
        let inner = self.lock();
        if let std::net::IpAddr::V4(a) = addr {
            // What the route stage sees: the VRF's flat table when it has one.
            if let Some(found) = inner.fib4.lookup(vrf, a)? {
                return Ok(found.map(|(prefix_len, nexthop_slot)| RouteMatch { prefix_len, nexthop_slot }));
            }
        }
        Ok(inner
            .routes
            .lookup(vrf, addr)?
            .map(|v| RouteMatch { prefix_len: v.prefix_len as u8, nexthop_slot: v.nexthop }))
    }

    fn dump_routes(&self) -> Result<Vec<(u32, Prefix, u32)>, DataplaneError> {
        self.lock().routes.dump()
    }

    fn route4_capacity(&self) -> u32 {
        self.lock().records.capacity()
    }

    fn route4_reserve(&self, slots: u32) -> Result<(), DataplaneError> {
        self.lock().globals.set(ROUTE4_RECORDS_MARK, u64::from(slots))
    }

    fn route4_store(&self, records: &[(u32, dataplane_common::RouteRecord4)]) -> Result<(), DataplaneError> {
        self.lock().records.store(records)
    }

    fn route4_clear(&self, slots: &[u32]) -> Result<(), DataplaneError> {
        self.lock().records.clear(slots)
    }

    fn route4_records(&self) -> Result<Vec<(u32, dataplane_common::RouteRecord4)>, DataplaneError> {
        let inner = self.lock();
        let mark = inner.globals.get(ROUTE4_RECORDS_MARK)?;
        inner.records.read(u32::try_from(mark).unwrap_or(u32::MAX))
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
    // SAFETY: `keys` and `values` hold `count` packed entries each and outlive the call; the
    // kernel only reads them.
    let (written, err) = unsafe { batch_call(BPF_MAP_UPDATE_BATCH, &mut attr, fd, count) };
    match err {
        Some(e) => Err((written, e)),
        None => Ok(()),
    }
}

/// `BPF_MAP_LOOKUP_BATCH` and `BPF_MAP_UPDATE_BATCH`, the bpf(2) commands.
pub(super) const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
pub(super) const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// One bpf(2) batch command on map `fd` for `count` entries, `attr` holding the other fields of
/// `bpf_attr.batch` (in_batch, out_batch, keys, values as its words 0 to 3). Returns the count
/// the kernel wrote back (entries done) and its error, if any.
///
/// # Safety
/// The pointers in `attr` must be valid for what `cmd` reads or writes through them: `count`
/// keys and values, and the cursors.
pub(super) unsafe fn batch_call(
    cmd: libc::c_long,
    attr: &mut [u64; 16],
    fd: i32,
    count: u32,
) -> (u32, Option<std::io::Error>) {
    // Word 4: count, map_fd (u32 each); then elem_flags, flags (zero).
    attr[4] = u64::from(count) | (u64::from(fd as u32) << 32);
    // SAFETY: a 128-byte bpf_attr for the batch commands; the caller vouches for its pointers.
    let r =
        unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), std::mem::size_of_val(attr) as libc::c_long) };
    let err = (r < 0).then(std::io::Error::last_os_error);
    ((attr[4] & 0xffff_ffff) as u32, err)
}

pub struct RouteTries {
    pub v4: LpmTrie<MapData, RouteAddrV4, RouteValue>,
    pub v6: LpmTrie<MapData, RouteAddrV6, RouteValue>,
}

impl RouteTries {
    pub(super) fn open(ebpf: &mut aya::Ebpf) -> Result<Self, DataplaneError> {
        Ok(Self { v4: open_map(ebpf, names::ROUTES_V4)?, v6: open_map(ebpf, names::ROUTES_V6)? })
    }

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

/// The mapped `ROUTE4_RECORDS`.
pub(super) struct Route4Records(Mapping);

impl Route4Records {
    pub(super) fn open(ebpf: &mut aya::Ebpf) -> Result<Self, DataplaneError> {
        Self::new(open_array_data(ebpf, names::ROUTE4_RECORDS)?)
    }

    pub(super) fn new(map: MapData) -> Result<Self, DataplaneError> {
        Ok(Self(Mapping::new(map, names::ROUTE4_RECORDS, std::mem::size_of::<RouteRecord4>())?))
    }

    pub(super) fn capacity(&self) -> u32 {
        self.0.elements
    }

    /// Writes records in order, each with its flags word last: a record is valid only once
    /// whole (a crash in between leaves a free slot).
    pub(super) fn store(&self, records: &[(u32, RouteRecord4)]) -> Result<(), DataplaneError> {
        for (slot, r) in records {
            let w = words(r);
            for i in [0, 1, 3, 2] {
                self.0.word(*slot, i)?.store(w[i], Ordering::Release);
            }
        }
        Ok(())
    }

    /// Frees record slots (their flags word cleared).
    pub(super) fn clear(&self, slots: &[u32]) -> Result<(), DataplaneError> {
        for slot in slots {
            self.0.word(*slot, 2)?.store(0, Ordering::Release);
        }
        Ok(())
    }

    /// The valid records among the first `count` slots.
    pub(super) fn read(&self, count: u32) -> Result<Vec<(u32, RouteRecord4)>, DataplaneError> {
        let mut out = Vec::new();
        for slot in 0..count.min(self.0.elements) {
            let mut w = [0u32; 4];
            for (i, x) in w.iter_mut().enumerate() {
                *x = self.0.word(slot, i)?.load(Ordering::Acquire);
            }
            let r = record(w);
            if r.flags & dataplane_common::route::RECORD_VALID != 0 {
                out.push((slot, r));
            }
        }
        Ok(out)
    }
}

/// A record as its four words in memory order.
fn words(r: &RouteRecord4) -> [u32; 4] {
    [r.vrf, u32::from_ne_bytes(r.addr), u32::from_ne_bytes([r.prefix_len, r._pad[0], r._pad[1], r.flags]), r.nexthop]
}

fn record(w: [u32; 4]) -> RouteRecord4 {
    let b = w[2].to_ne_bytes();
    RouteRecord4 {
        vrf: w[0],
        addr: w[1].to_ne_bytes(),
        prefix_len: b[0],
        _pad: [b[1], b[2]],
        flags: b[3],
        nexthop: w[3],
    }
}
