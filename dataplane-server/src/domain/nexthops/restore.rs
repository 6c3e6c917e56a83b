//! Next hops in the state file: id, slot and spec; and taking them back.

use serde::{Deserialize, Serialize};

use crate::{
    dataplane::Dataplane,
    domain::{nexthops::NextHopEntry, persist::RestoreReport, Domain, InterfaceName, NextHopSpec, State},
};

/// One next hop as the state file keeps it (its route count is counted from the routes again).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::domain) struct SavedNextHop {
    id: u32,
    slot: u32,
    spec: NextHopSpec,
}

/// The next hops, for the state file.
pub(in crate::domain) fn saved(state: &State) -> Vec<SavedNextHop> {
    state.nexthops.iter().map(|(&id, e)| SavedNextHop { id, slot: e.slot, spec: e.spec.clone() }).collect()
}

impl<D: Dataplane> Domain<D> {
    /// Takes back the next hops at their slots (their maps still hold them); those through an
    /// interface that did not come back are emptied, as when a link goes while the server runs.
    pub(in crate::domain) fn restore_nexthops(
        &self,
        state: &mut State,
        saved: Vec<SavedNextHop>,
        report: &mut RestoreReport,
    ) {
        for n in saved {
            if !state.nh_slots.reserve(n.slot) {
                report.dropped.push(format!("next hop {}: slot {} taken twice", n.id, n.slot));
                continue;
            }
            state.nh_ids.insert(n.slot, n.id);
            state.nexthops.insert(n.id, NextHopEntry { slot: n.slot, spec: n.spec, routes: 0 });
        }
        report.nexthops = state.nexthops.len();
        let missing: Vec<InterfaceName> = state
            .nexthops
            .values()
            .filter_map(|e| e.spec.interface().cloned())
            .filter(|i| !state.interfaces.contains_key(i))
            .collect();
        for name in missing {
            self.rewrite_nexthops_via(state, &name);
        }
    }
}
