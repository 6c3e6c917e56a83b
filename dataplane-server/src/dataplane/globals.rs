//! `GLOBALS`: the dataplane's global words, one u64 each with one kind of writer (see
//! `dataplane_common::globals`): HOLDs the programs created, HOLDs the server resolved, the
//! configuration generation, the IPv4 route records' high-water mark.

use aya::maps::{Array, MapData};
use dataplane_common::maps as names;

use super::DataplaneError;

/// The global words array.
pub struct Globals(Array<MapData, u64>);

impl Globals {
    pub(super) fn open(ebpf: &mut aya::Ebpf) -> Result<Self, DataplaneError> {
        Ok(Self(super::loader::open_map(ebpf, names::GLOBALS)?))
    }

    /// Word `slot`.
    pub fn get(&self, slot: u32) -> Result<u64, DataplaneError> {
        self.0.get(&slot, 0).map_err(DataplaneError::map(names::GLOBALS, "lookup"))
    }

    /// Sets word `slot`.
    pub fn set(&mut self, slot: u32, value: u64) -> Result<(), DataplaneError> {
        self.0.set(slot, value, 0).map_err(DataplaneError::map(names::GLOBALS, "update"))
    }
}
