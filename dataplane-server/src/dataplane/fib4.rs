//! The IPv4 flat tables' maps (`FIB4_VRFS`, `FIB4_CHUNKS`): the VRF roots by syscall, the chunk
//! pool through a shared mapping of the array, so an update is a few plain stores instead of a
//! syscall per entry (a 100,000-route batch rewrites millions of entries).

use std::{
    os::fd::AsFd,
    ptr::NonNull,
    sync::atomic::{AtomicU32, Ordering},
};

use aya::maps::{Array, MapData};
use dataplane_common::{
    maps as names,
    route::fib4::{self, Chunk},
};

use super::DataplaneError;

const ENTRIES: usize = 256;

/// `FIB4_VRFS` and the mapped `FIB4_CHUNKS`.
pub(super) struct Fib4Maps {
    vrfs: Array<MapData, u32>,
    pool: Pool,
}

/// `FIB4_CHUNKS` mapped shared and writable: entry `i` of chunk `c` at `base[c * 256 + i]`.
struct Pool {
    base: NonNull<AtomicU32>,
    chunks: u32,
    len: usize,
    /// Keeps the map's fd (the mapping would keep the map alive anyway).
    _map: MapData,
}

// SAFETY: the mapping is only accessed through atomics, and lives as long as `Pool`.
unsafe impl Send for Pool {}
// SAFETY: as above; every access is an atomic load or store.
unsafe impl Sync for Pool {}

impl Drop for Pool {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly what mmap returned; nothing borrows the mapping past
        // this point (every access goes through `&self`).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

impl Fib4Maps {
    pub(super) fn new(vrfs: Array<MapData, u32>, chunks: MapData) -> Result<Self, DataplaneError> {
        use std::os::fd::AsRawFd;
        let info = chunks.info().map_err(DataplaneError::map(names::FIB4_CHUNKS, "info"))?;
        let count = info.max_entries();
        let len = count as usize * std::mem::size_of::<Chunk>();
        // SAFETY: a shared mapping of a BPF array created with BPF_F_MMAPABLE: its values,
        // `value_size` (a multiple of 8, so no padding) apart from offset 0, `len` bytes.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                chunks.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(DataplaneError::Io { path: names::FIB4_CHUNKS.into(), op: "mmap", source: std::io::Error::last_os_error() });
        }
        let base = NonNull::new(ptr.cast::<AtomicU32>()).ok_or(DataplaneError::Missing { what: "mapping", name: names::FIB4_CHUNKS })?;
        Ok(Self { vrfs, pool: Pool { base, chunks: count, len, _map: chunks } })
    }

    pub(super) fn capacity(&self) -> u32 {
        self.pool.chunks
    }

    fn entry(&self, chunk: u32, i: usize) -> Result<&AtomicU32, DataplaneError> {
        if chunk >= self.pool.chunks || i >= ENTRIES {
            return Err(DataplaneError::SlotOutOfRange { map: names::FIB4_CHUNKS, slot: chunk, max: self.pool.chunks.saturating_sub(1) });
        }
        // SAFETY: in bounds (checked above) of a live mapping; AtomicU32 has u32's layout.
        Ok(unsafe { &*self.pool.base.as_ptr().add(chunk as usize * ENTRIES + i) })
    }

    /// Stores `values` into `chunk` from entry `first` on, in order, each a release store: a
    /// program that sees a later entry also sees the earlier ones (a chunk is filled before the
    /// entry pointing at it is).
    pub(super) fn store(&self, chunk: u32, first: usize, values: &[u32]) -> Result<(), DataplaneError> {
        if first + values.len() > ENTRIES {
            return Err(DataplaneError::SlotOutOfRange { map: names::FIB4_CHUNKS, slot: chunk, max: self.pool.chunks.saturating_sub(1) });
        }
        for (i, v) in values.iter().enumerate() {
            self.entry(chunk, first + i)?.store(*v, Ordering::Release);
        }
        Ok(())
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

    /// Every VRF's root (non-zero `FIB4_VRFS` entries).
    pub(super) fn roots(&self) -> Result<Vec<(u32, u32)>, DataplaneError> {
        let mut roots = Vec::new();
        for vrf in 0..dataplane_common::MAX_VRFS {
            let root = self.vrfs.get(&vrf, 0).map_err(DataplaneError::map(names::FIB4_VRFS, "lookup"))?;
            if root != 0 {
                roots.push((vrf, root));
            }
        }
        Ok(roots)
    }

    /// The flat table's answer for `addr` in `vrf`, as the route stage computes it: `None`
    /// when the VRF has no flat table; `Some(None)` when it has one without a route for `addr`.
    pub(super) fn lookup(&self, vrf: u32, addr: std::net::Ipv4Addr) -> Result<Option<Option<(u8, u32)>>, DataplaneError> {
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
