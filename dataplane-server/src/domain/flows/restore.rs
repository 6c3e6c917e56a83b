//! Flow modes in the state file: `{"slot": 1, "enabled": true, ...}`, one per interface slot
//! that has one. Flows themselves are read from their map.

use serde::{de, Deserialize, Deserializer, Serialize};

use crate::domain::{FlowMode, State};

/// One interface slot's flow mode as the state file keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(in crate::domain) struct SavedFlowMode {
    slot: u32,
    #[serde(flatten)]
    mode: FlowMode,
}

/// By hand (the file is JSON): serde's `flatten` would accept any field; `FlowMode` itself refuses
/// unknown ones.
impl<'de> Deserialize<'de> for SavedFlowMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut row = serde_json::Map::deserialize(d)?;
        let slot = row.remove("slot").ok_or_else(|| de::Error::missing_field("slot"))?;
        let slot = u32::deserialize(slot).map_err(|e| de::Error::custom(format_args!("slot: {e}")))?;
        let mode = FlowMode::deserialize(serde_json::Value::Object(row)).map_err(de::Error::custom)?;
        Ok(Self { slot, mode })
    }
}

/// The flow modes, for the state file.
pub(in crate::domain) fn saved(state: &State) -> Vec<SavedFlowMode> {
    state.flows.modes().iter().map(|(&slot, &mode)| SavedFlowMode { slot, mode }).collect()
}

/// Takes back the flow modes of the slots whose interfaces came back (the kernel's flow
/// configuration of each slot is as it was).
pub(in crate::domain) fn restore(state: &mut State, saved: Vec<SavedFlowMode>) {
    let slots_in_use: Vec<u32> = state.interfaces.values().map(|e| e.slot).collect();
    for m in saved {
        if slots_in_use.contains(&m.slot) {
            state.flows.set_mode(m.slot, m.mode);
        }
    }
}
