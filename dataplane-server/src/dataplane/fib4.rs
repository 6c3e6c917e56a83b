//! The IPv4 flat tables' maps (`FIB4_VRFS`, `FIB4_CHUNKS`) and the IPv4 route records
//! (`ROUTE4_RECORDS`): the VRF roots by syscall, the chunk pool and the records through shared
//! mappings of the arrays, so a route is a few plain stores instead of syscalls (a
//! 100,000-route batch rewrites millions of entries).

use std::{
    os::fd::AsFd,
    ptr::NonNull,
    sync::atomic::{AtomicU32, Ordering},
};

use aya::maps::{Array, MapData};
use dataplane_common::{
    maps as names,
    route::fib4::{self, Chunk},
    RouteRecord4,
};

use super::DataplaneError;

const ENTRIES: usize = 256;

/// `FIB4_VRFS` and the mapped `FIB4_CHUNKS`.
pub(super) struct Fib4Maps {
    vrfs: Array<MapData, u32>,
    pool: Mapping,
}

/// A BPF array created with `BPF_F_MMAPABLE`, mapped shared and writable: its values as 32-bit
/// words, `words` per element.
struct Mapping {
    base: NonNull<AtomicU32>,
    elements: u32,
    words: usize,
    len: usize,
    name: &'static str,
    /// Keeps the map's fd (the mapping would keep the map alive anyway).
    _map: MapData,
}

// SAFETY: the mapping is only accessed through atomics, and lives as long as `Mapping`.
unsafe impl Send for Mapping {}
// SAFETY: as above; every access is an atomic load or store.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly what mmap returned; nothing borrows the mapping past
        // this point (every access goes through `&self`).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

impl Mapping {
    fn new(map: MapData, name: &'static str, value_size: usize) -> Result<Self, DataplaneError> {
        use std::os::fd::AsRawFd;
        let info = map.info().map_err(DataplaneError::map(name, "info"))?;
        let elements = info.max_entries();
        let len = elements as usize * value_size;
        // SAFETY: a shared mapping of a BPF array created with BPF_F_MMAPABLE: its values,
        // `value_size` (a multiple of 8, so no padding) apart from offset 0, `len` bytes.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(DataplaneError::Io { path: name.into(), op: "mmap", source: std::io::Error::last_os_error() });
        }
        let base = NonNull::new(ptr.cast::<AtomicU32>()).ok_or(DataplaneError::Missing { what: "mapping", name })?;
        Ok(Self { base, elements, words: value_size / 4, len, name, _map: map })
    }

    /// Word `i` of element `e`.
    fn word(&self, e: u32, i: usize) -> Result<&AtomicU32, DataplaneError> {
        if e >= self.elements || i >= self.words {
            return Err(DataplaneError::SlotOutOfRange {
                map: self.name,
                slot: e,
                max: self.elements.saturating_sub(1),
            });
        }
        // SAFETY: in bounds (checked above) of a live mapping; AtomicU32 has u32's layout.
        Ok(unsafe { &*self.base.as_ptr().add(e as usize * self.words + i) })
    }
}

impl Fib4Maps {
    pub(super) fn new(vrfs: Array<MapData, u32>, chunks: MapData) -> Result<Self, DataplaneError> {
        Ok(Self { vrfs, pool: Mapping::new(chunks, names::FIB4_CHUNKS, std::mem::size_of::<Chunk>())? })
    }

    pub(super) fn capacity(&self) -> u32 {
        self.pool.elements
    }

    fn entry(&self, chunk: u32, i: usize) -> Result<&AtomicU32, DataplaneError> {
        self.pool.word(chunk, i)
    }

    /// Stores `values` into `chunk` from entry `first` on, in order, each a release store: a
    /// program that sees a later entry also sees the earlier ones (a chunk is filled before the
    /// entry pointing at it is).
    pub(super) fn store(&self, chunk: u32, first: usize, values: &[u32]) -> Result<(), DataplaneError> {
        if first + values.len() > ENTRIES {
            return Err(DataplaneError::SlotOutOfRange {
                map: names::FIB4_CHUNKS,
                slot: chunk,
                max: self.pool.elements.saturating_sub(1),
            });
        }
        for (i, v) in values.iter().enumerate() {
            self.entry(chunk, first + i)?.store(*v, Ordering::Release);
        }
        Ok(())
    }

    /// `vrf`'s root (0: none).
    pub(super) fn root(&self, vrf: u32) -> Result<u32, DataplaneError> {
        self.vrfs.get(&vrf, 0).map_err(DataplaneError::map(names::FIB4_VRFS, "lookup"))
    }

    pub(super) fn set_root(&mut self, vrf: u32, root: u32) -> Result<(), DataplaneError> {
        self.vrfs.set(vrf, root, 0).map_err(DataplaneError::map(names::FIB4_VRFS, "update"))
    }

    /// Chunk `chunk` as the kernel holds it.
    pub(super) fn load(&self, chunk: u32) -> Result<Chunk, DataplaneError> {
        let mut out = [0u32; ENTRIES];
        for (i, e) in out.iter_mut().enumerate() {
            *e = self.entry(chunk, i)?.load(Ordering::Acquire);
        }
        Ok(out)
    }

    /// The non-zero roots among `vrfs`.
    pub(super) fn roots(&self, vrfs: &[u32]) -> Result<Vec<(u32, u32)>, DataplaneError> {
        let mut roots = Vec::new();
        for &vrf in vrfs {
            let root = self.vrfs.get(&vrf, 0).map_err(DataplaneError::map(names::FIB4_VRFS, "lookup"))?;
            if root != 0 {
                roots.push((vrf, root));
            }
        }
        Ok(roots)
    }

    /// The flat table's answer for `addr` in `vrf`, as the route stage computes it: `None`
    /// when the VRF has no flat table; `Some(None)` when it has one without a route for `addr`.
    pub(super) fn lookup(
        &self,
        vrf: u32,
        addr: std::net::Ipv4Addr,
    ) -> Result<Option<Option<(u8, u32)>>, DataplaneError> {
        let root = self.vrfs.get(&vrf, 0).map_err(DataplaneError::map(names::FIB4_VRFS, "lookup"))?;
        if root == 0 {
            return Ok(None);
        }
        let mut err = None;
        let found = walk(root, u32::from(addr), |chunk, i| match self.entry(chunk, i) {
            Ok(e) => e.load(Ordering::Acquire),
            Err(e) => {
                err = Some(e);
                0
            }
        });
        match err {
            Some(e) => Err(e),
            None => Ok(Some(found)),
        }
    }
}

/// The mapped `ROUTE4_RECORDS`.
pub(super) struct Route4Records(Mapping);

impl Route4Records {
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

/// The lookup of `route::flat_v4` in the eBPF crate over any copy of the pool: the matched
/// prefix length and next-hop slot.
pub fn walk(root: u32, a: u32, mut get: impl FnMut(u32, usize) -> u32) -> Option<(u8, u32)> {
    if root == 0 {
        return None;
    }
    let mut e = get(((root - 1) << 8) | (a >> 24), ((a >> 16) & 0xff) as usize);
    if e & fib4::CHUNK != 0 {
        e = get(e & fib4::INDEX, ((a >> 8) & 0xff) as usize);
        if e & fib4::CHUNK != 0 {
            e = get(e & fib4::INDEX, (a & 0xff) as usize);
        }
    }
    (e & fib4::LEAF != 0).then(|| (fib4::depth(e), e & fib4::NEXTHOP))
}
