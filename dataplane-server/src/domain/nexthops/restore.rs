//! Next hops in the state file: id, slot and spec; and taking them back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{resolve, Resolution};
use crate::{
    dataplane::{Dataplane, NextHopParams},
    domain::{nexthops::NextHopEntry, persist::RestoreReport, Domain, DomainError, InterfaceName, NextHopSpec, State},
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

/// Next hops the kernel has and the state file does not describe get an id of this range
/// (`ADOPTED_IDS + slot`), recognisable in listings; a controller replays its own ids in a
/// resync and the adopted ones go at `EndResync`.
pub const ADOPTED_IDS: u32 = 0x8000_0000;

impl<D: Dataplane> Domain<D> {
    /// Takes back the next hops at their slots, as the kernel has them: a next hop the file
    /// describes otherwise than the kernel's slot holds takes the kernel's (under its id); one
    /// whose slot is empty while its interface is here is gone from the kernel and dropped; the
    /// kernel's next hops the file does not describe are adopted. Those through an interface that
    /// did not come back are emptied, as when a link goes while the server runs.
    pub(in crate::domain) fn restore_nexthops(
        &self,
        state: &mut State,
        saved: Vec<SavedNextHop>,
        report: &mut RestoreReport,
    ) -> Result<(), DomainError> {
        let mut kernel: BTreeMap<u32, NextHopParams> = self.dataplane.kernel_nexthops()?.into_iter().collect();
        let slot_of: BTreeMap<u32, u32> = saved.iter().map(|n| (n.id, n.slot)).collect();
        let mut rewrite = Vec::new();
        for n in saved {
            let in_kernel = kernel.remove(&n.slot);
            if !state.nh_slots.reserve(n.slot) {
                report.dropped.push(format!("next hop {}: slot {} taken twice", n.id, n.slot));
                continue;
            }
            let spec = match (resolve(state, &n.spec, |m| slot_of.get(&m).copied()), in_kernel) {
                (Resolution::Params(want), Some(have)) if same(&n.spec, &want, &have) => n.spec,
                (Resolution::Params(_), Some(have)) => match spec_of(state, &have, &slot_of) {
                    Some(spec) => {
                        report.disagreements.push(format!(
                            "next hop {}: the state file has {:?}; the kernel {spec:?} (slot {})",
                            n.id, n.spec, n.slot
                        ));
                        spec
                    }
                    None => {
                        // The kernel's sends out of a slot no interface has (it delivers
                        // nothing): the file's is the only one that can forward.
                        report.disagreements.push(format!(
                            "next hop {}: the kernel's {have:?} leaves through no interface: rewritten as the state file has it",
                            n.id
                        ));
                        rewrite.push(n.id);
                        n.spec
                    }
                },
                (Resolution::Params(_), None) => {
                    state.nh_slots.free(n.slot);
                    report
                        .disagreements
                        .push(format!("next hop {}: not in the kernel (slot {} empty): dropped", n.id, n.slot));
                    continue;
                }
                // Its interface did not come back: emptied below.
                (Resolution::InterfaceMissing(_), _) => n.spec,
            };
            state.nh_ids.insert(n.slot, n.id);
            state.nexthops.insert(n.id, NextHopEntry { slot: n.slot, spec, routes: 0 });
        }
        // The kernel's own, members before the groups that name them.
        let (groups, singles): (Vec<_>, Vec<_>) =
            kernel.into_iter().partition(|(_, p)| matches!(p, NextHopParams::Ecmp { .. }));
        for (slot, params) in singles.into_iter().chain(groups) {
            let ids: BTreeMap<u32, u32> = state.nexthops.iter().map(|(&id, e)| (id, e.slot)).collect();
            let spec = spec_of(state, &params, &ids);
            let id = (ADOPTED_IDS + slot..).find(|id| !state.nexthops.contains_key(id));
            match (spec, id) {
                (Some(spec), Some(id)) if state.nh_slots.reserve(slot) => {
                    report.adopted.push(format!("next hop {id} (slot {slot}): {spec:?}"));
                    state.nh_ids.insert(slot, id);
                    state.nexthops.insert(id, NextHopEntry { slot, spec, routes: 0 });
                }
                _ => {
                    // Out of an interface that is not here: nothing it sends arrives anywhere.
                    self.dataplane.clear_nexthop(slot)?;
                    report.dropped.push(format!("next hop in slot {slot} ({params:?}): its interface is gone"));
                }
            }
        }
        for id in rewrite {
            self.write(state, id)?;
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
        Ok(())
    }
}

/// Whether the kernel's `have` is what `spec` (computed as `want` now) put there: a gateway's
/// MAC follows the neighbour table, which a restart has not read yet, so only where it sends
/// from is compared.
fn same(spec: &NextHopSpec, want: &NextHopParams, have: &NextHopParams) -> bool {
    match (spec, want, have) {
        (
            NextHopSpec::Gateway { .. },
            NextHopParams::Encap { tx_slot, src_mac, .. } | NextHopParams::Unresolved { tx_slot, src_mac, .. },
            NextHopParams::Encap { tx_slot: t, src_mac: s, .. }
            | NextHopParams::Unresolved { tx_slot: t, src_mac: s, .. },
        ) => tx_slot == t && src_mac == s,
        _ => want == have,
    }
}

/// The spec that puts `params` in the kernel, in the terms of the interfaces and next-hop ids
/// (`ids`: id -> slot) known: `None` if it sends out of a slot no interface has. A gateway
/// whose MAC is resolved becomes an ENCAP next hop to that MAC (the gateway's address was only
/// in the file); an unresolved one, which passes its packets to the stack, a RECEIVE one.
fn spec_of(state: &State, params: &NextHopParams, ids: &BTreeMap<u32, u32>) -> Option<NextHopSpec> {
    let interface = |slot: u32| state.interfaces.iter().find(|(_, e)| e.slot == slot).map(|(n, e)| (n.clone(), e));
    Some(match params {
        NextHopParams::Encap { tx_slot, dst_mac, src_mac, .. } => {
            let (interface, e) = interface(*tx_slot)?;
            let src_mac = (*src_mac != e.link.mac).then_some(*src_mac);
            NextHopSpec::Encap { interface, dst_mac: *dst_mac, src_mac }
        }
        NextHopParams::Unresolved { tx_slot, .. } => {
            interface(*tx_slot)?;
            NextHopSpec::Receive
        }
        NextHopParams::Ecmp { members } => NextHopSpec::Ecmp {
            members: members
                .iter()
                .filter_map(|s| ids.iter().find(|(_, slot)| *slot == s).map(|(id, _)| *id))
                .collect(),
        },
        NextHopParams::Discard => NextHopSpec::Discard,
        NextHopParams::Receive => NextHopSpec::Receive,
    })
}
