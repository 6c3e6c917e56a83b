//! VRFs in the state file: `{"id": 5, "kernel_table": 100}`, `null` for a VRF forwarding by the
//! API's routes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::{State, VrfMode};

/// One VRF as the state file keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::domain) struct SavedVrf {
    id: u32,
    #[serde(rename = "kernel_table", with = "kernel_table", default)]
    mode: VrfMode,
}

/// `VrfMode` as the file spells it: the kernel table of a kernel-FIB VRF, or `null`.
mod kernel_table {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::domain::VrfMode;

    pub fn serialize<S: Serializer>(mode: &VrfMode, s: S) -> Result<S::Ok, S::Error> {
        match mode {
            VrfMode::Routes => None::<u32>,
            VrfMode::KernelFib { table } => Some(*table),
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<VrfMode, D::Error> {
        Ok(Option::<u32>::deserialize(d)?.map_or(VrfMode::Routes, |table| VrfMode::KernelFib { table }))
    }
}

/// The VRFs, for the state file.
pub(in crate::domain) fn saved(state: &State) -> Vec<SavedVrf> {
    state.vrfs.iter().map(|(&id, &mode)| SavedVrf { id, mode }).collect()
}

/// Takes the VRFs back: nothing in the kernel to check them against (a VRF is an id the
/// interfaces' and routes' entries carry).
pub(in crate::domain) fn restore(vrfs: &mut BTreeMap<u32, VrfMode>, saved: Vec<SavedVrf>) {
    vrfs.extend(saved.into_iter().map(|v| (v.id, v.mode)));
}
