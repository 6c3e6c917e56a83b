//! Per-CPU counter arrays (interfaces, next hops): summed over CPUs on read, zeroed when an id is
//! (re)used, so a reused slot never shows its previous owner's counts.

use aya::maps::{MapData, PerCpuArray, PerCpuValues};
use dataplane_common::NextHopStats;

use super::DataplaneError;

pub(super) fn cpus() -> Result<usize, DataplaneError> {
    aya::util::nr_cpus().map_err(|(path, source)| DataplaneError::Io {
        path: path.into(),
        op: "read possible CPUs",
        source,
    })
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
    /// Per-CPU array `name` of `ebpf`.
    pub(super) fn open(ebpf: &mut aya::Ebpf, name: &'static str) -> Result<Self, DataplaneError> {
        Self::new(name, super::loader::open_map(ebpf, name)?)
    }

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
