//! Shared, writable mappings of `BPF_F_MMAPABLE` arrays (the IPv4 flat tables' pool and the IPv4
//! route records): plain atomic stores instead of a syscall per entry.

use std::{os::fd::AsFd, ptr::NonNull, sync::atomic::AtomicU32};

use aya::maps::MapData;

use super::DataplaneError;

/// A BPF array created with `BPF_F_MMAPABLE`, mapped shared and writable: its values as 32-bit
/// words, `words` per element.
pub(super) struct Mapping {
    base: NonNull<AtomicU32>,
    pub(super) elements: u32,
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
    pub(super) fn new(map: MapData, name: &'static str, value_size: usize) -> Result<Self, DataplaneError> {
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
    pub(super) fn word(&self, e: u32, i: usize) -> Result<&AtomicU32, DataplaneError> {
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
