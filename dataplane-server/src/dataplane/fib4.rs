//! The IPv4 flat tables' maps (`FIB4_VRFS`, `FIB4_CHUNKS`): the VRF roots by syscall, the chunk
//! pool through a shared mapping of the array, so a route is a few plain stores instead of
//! syscalls (a 100,000-route batch rewrites millions of entries). The tables' shape and the
//! shadow the domain keeps are `domain::fib4`'s.

use std::sync::atomic::{AtomicU32, Ordering};

use aya::maps::{Array, MapData};
use dataplane_common::{
    maps as names,
    route::fib4::{self, Chunk},
};

use super::{
    loader::{open_array_data, open_map},
    mmap::Mapping,
    DataplaneError, KernelDataplane,
};

const ENTRIES: usize = 256;

/// The kernel side of the IPv4 flat tables.
pub trait Fib4 {
    /// Chunks in the IPv4 flat tables' pool (`FIB4_CHUNKS`), as it was created.
    fn fib4_capacity(&self) -> u32;
    /// Writes `values` into pool chunk `chunk` from entry `first` on, in order: a program that
    /// sees one of them also sees those before it.
    fn fib4_store(&self, chunk: u32, first: usize, values: &[u32]) -> Result<(), DataplaneError>;
    /// Points VRF `vrf`'s IPv4 lookups at root block `root - 1` (0: at the trie).
    fn fib4_set_root(&self, vrf: u32, root: u32) -> Result<(), DataplaneError>;

    /// (VRF, root) of those of `vrfs` that have a flat table.
    fn fib4_roots(&self, vrfs: &[u32]) -> Result<Vec<(u32, u32)>, DataplaneError>;
    /// Pool chunk `chunk` as the kernel holds it.
    fn fib4_load(&self, chunk: u32) -> Result<dataplane_common::route::fib4::Chunk, DataplaneError>;
}

impl Fib4 for KernelDataplane {
    fn fib4_capacity(&self) -> u32 {
        self.lock().fib4.capacity()
    }

    fn fib4_store(&self, chunk: u32, first: usize, values: &[u32]) -> Result<(), DataplaneError> {
        self.lock().fib4.store(chunk, first, values)
    }

    fn fib4_set_root(&self, vrf: u32, root: u32) -> Result<(), DataplaneError> {
        let mut inner = self.lock();
        inner.fib4.set_root(vrf, root)?;
        // The packet path reads the root from the interface entries.
        inner.interfaces.set_fib4_root(vrf, root)
    }

    fn fib4_roots(&self, vrfs: &[u32]) -> Result<Vec<(u32, u32)>, DataplaneError> {
        self.lock().fib4.roots(vrfs)
    }

    fn fib4_load(&self, chunk: u32) -> Result<dataplane_common::route::fib4::Chunk, DataplaneError> {
        self.lock().fib4.load(chunk)
    }
}

/// `FIB4_VRFS` and the mapped `FIB4_CHUNKS`.
pub(super) struct Fib4Maps {
    vrfs: Array<MapData, u32>,
    pool: Mapping,
}

impl Fib4Maps {
    pub(super) fn open(ebpf: &mut aya::Ebpf) -> Result<Self, DataplaneError> {
        Self::new(open_map(ebpf, names::FIB4_VRFS)?, open_array_data(ebpf, names::FIB4_CHUNKS)?)
    }

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
