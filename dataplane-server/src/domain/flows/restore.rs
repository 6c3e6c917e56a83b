//! Flow modes in the state file: `{"slot": 1, "enabled": true, ...}`, one per interface slot
//! that has one. Flows themselves are read from their map.

use std::collections::BTreeMap;

use serde::{de, Deserialize, Deserializer, Serialize};

use crate::{
    dataplane::Dataplane,
    domain::{persist::RestoreReport, Domain, DomainError, FlowMode, State},
};

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

impl<D: Dataplane> Domain<D> {
    /// Takes the flow modes of the interfaces that came back as the kernel's configuration of
    /// their slots has them (the file's where the two agree; the kernel's where they do not, or
    /// where the file has none).
    pub(in crate::domain) fn restore_flow_modes(
        &self,
        state: &mut State,
        saved: Vec<SavedFlowMode>,
        report: &mut RestoreReport,
    ) -> Result<(), DomainError> {
        let saved: BTreeMap<u32, FlowMode> = saved.into_iter().map(|m| (m.slot, m.mode)).collect();
        let interfaces: Vec<(String, u32)> = state.interfaces.iter().map(|(n, e)| (n.to_string(), e.slot)).collect();
        for (name, slot) in interfaces {
            let cfg = self.dataplane.flow_config(slot)?;
            let kernel = (cfg.enabled != 0).then_some(FlowMode {
                enabled: true,
                miss_forward: cfg.miss_forward != 0,
                hold_cap: cfg.hold_cap,
                punt_rate: cfg.punt_rate,
                punt_burst: cfg.punt_burst,
            });
            let file = saved.get(&slot).copied().filter(|m| m.enabled);
            match (file, kernel) {
                (None, None) => {}
                (Some(f), Some(k)) if f == k => {}
                (None, Some(k)) => report.adopted.push(format!("flow mode of {name}: {k:?}")),
                (f, k) => report
                    .disagreements
                    .push(format!("flow mode of {name}: the state file has {f:?}; the kernel {k:?}")),
            }
            if let Some(k) = kernel {
                state.flows.set_mode(slot, k);
                self.held().set_mode(slot, Some(&k));
            }
        }
        Ok(())
    }
}
