//! Typed wrappers over the programs' maps: the rest of the server never sees key/value bytes.

use aya::maps::{HashMap, MapData, PerCpuArray, PerCpuValues};
use dataplane_common::{maps as names, InterfaceStats, MAX_INTERFACES};

use super::DataplaneError;

/// `IFINDEX_SLOTS`: ifindex -> interface slot.
pub struct IfindexSlots(HashMap<MapData, u32, u32>);

impl IfindexSlots {
    pub fn new(map: HashMap<MapData, u32, u32>) -> Self {
        Self(map)
    }

    pub fn insert(&mut self, ifindex: u32, slot: u32) -> Result<(), DataplaneError> {
        self.0.insert(ifindex, slot, 0).map_err(DataplaneError::map(names::IFINDEX_SLOTS, "insert"))
    }

    pub fn remove(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
        match self.0.remove(&ifindex) {
            Ok(()) => Ok(()),
            // Already gone is what we wanted.
            Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(DataplaneError::map(names::IFINDEX_SLOTS, "remove")(e)),
        }
    }

    /// Keys present (the kernel offers no count; this walks the keys).
    pub fn count(&self) -> u64 {
        self.0.keys().filter(|k| k.is_ok()).count() as u64
    }
}

/// A per-CPU array of [`InterfaceStats`] (`IFACE_STATS` by slot, `UNKNOWN_IFACE_STATS`).
pub struct StatsArray {
    name: &'static str,
    map: PerCpuArray<MapData, InterfaceStats>,
    cpus: usize,
}

impl StatsArray {
    pub fn new(name: &'static str, map: PerCpuArray<MapData, InterfaceStats>) -> Result<Self, DataplaneError> {
        let cpus = aya::util::nr_cpus().map_err(|(path, source)| DataplaneError::Io {
            path: path.into(),
            op: "read possible CPUs",
            source,
        })?;
        Ok(Self { name, map, cpus })
    }

    fn check(&self, slot: u32) -> Result<(), DataplaneError> {
        if slot >= self.map.len() {
            return Err(DataplaneError::SlotOutOfRange { slot, max: MAX_INTERFACES });
        }
        Ok(())
    }

    /// The counters of `slot` summed over every CPU.
    pub fn sum(&self, slot: u32) -> Result<InterfaceStats, DataplaneError> {
        self.check(slot)?;
        let per_cpu = self.map.get(&slot, 0).map_err(DataplaneError::map(self.name, "lookup"))?;
        let mut total = InterfaceStats::ZERO;
        for s in per_cpu.iter() {
            total.accumulate(s);
        }
        Ok(total)
    }

    /// Zeroes `slot` on every CPU, so a reused slot starts from nothing.
    pub fn reset(&mut self, slot: u32) -> Result<(), DataplaneError> {
        self.check(slot)?;
        let zeros = PerCpuValues::try_from(vec![InterfaceStats::ZERO; self.cpus])
            .map_err(|source| DataplaneError::Io {
                path: self.name.into(),
                op: "build per-CPU value",
                source,
            })?;
        self.map.set(slot, zeros, 0).map_err(DataplaneError::map(self.name, "update"))
    }
}
