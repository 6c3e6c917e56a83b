//! Next hops: ids chosen by the controller, each stored at a slot the domain allocates (a dense
//! array index for the XDP program). Referential integrity is kept here: a next hop cannot go
//! while routes or ECMP groups use it, and an ENCAP next hop keeps its interface attached.

use std::collections::{BTreeMap, BTreeSet};

use dataplane_common::{route::ECMP_MAX, NextHopStats};

use super::{Domain, DomainError, InterfaceName, State};
use crate::{
    dataplane::{Dataplane, NextHopParams},
    net::Mac,
};

/// What a next hop does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NextHopSpec {
    /// Out of `interface` (attached to the dataplane) to `dst_mac`; source MAC defaults to the
    /// interface's own.
    Encap { interface: InterfaceName, dst_mac: Mac, src_mac: Option<Mac> },
    /// One of the member next hops (ids), by flow hash.
    Ecmp { members: Vec<u32> },
    Discard,
    Receive,
}

/// A validated next hop of an `AddNextHops` batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewNextHop {
    pub id: u32,
    pub spec: NextHopSpec,
}

#[derive(Clone, Debug)]
pub(super) struct NextHopEntry {
    pub slot: u32,
    pub spec: NextHopSpec,
    /// Routes pointing at this next hop.
    pub routes: u64,
}

/// A next hop with its counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextHopView {
    pub id: u32,
    pub slot: u32,
    pub spec: NextHopSpec,
    pub routes: u64,
    pub stats: NextHopStats,
}

impl<D: Dataplane> Domain<D> {
    /// Adds a batch of next hops, all or nothing. Returns the new generation.
    pub fn add_nexthops(&self, batch: Vec<NewNextHop>) -> Result<u64, DomainError> {
        let mut state = self.lock();
        let params = validate_add(&state, &batch)?;
        let free = state.nh_slots.capacity() - state.nh_slots.in_use();
        if batch.len() as u64 > u64::from(free) {
            return Err(DomainError::Exhausted { what: "next-hop slots", capacity: state.nh_slots.capacity() });
        }
        // Slots first, so ECMP groups can name members of the same batch by slot.
        let slots: Vec<u32> = batch.iter().map(|_| state.nh_slots.alloc().expect("checked free slots")).collect();
        let mut slot_of: BTreeMap<u32, u32> = batch.iter().map(|n| n.id).zip(slots.iter().copied()).collect();
        for (id, e) in &state.nexthops {
            slot_of.insert(*id, e.slot);
        }
        let mut written = 0;
        let mut failure = None;
        for (i, (nh, slot)) in params.iter().zip(&slots).enumerate() {
            let resolved = match nh {
                NextHopParams::Ecmp { members } => NextHopParams::Ecmp { members: members.iter().map(|id| slot_of[id]).collect() },
                other => other.clone(),
            };
            if let Err(e) = self.dataplane.set_nexthop(*slot, &resolved, true) {
                failure = Some(DomainError::from(e).at(format!("next_hops[{i}]")));
                break;
            }
            written += 1;
        }
        if let Some(e) = failure {
            for slot in &slots[..written] {
                let _ = self.dataplane.clear_nexthop(*slot);
            }
            for slot in slots {
                state.nh_slots.free(slot);
            }
            return Err(e);
        }
        for (nh, slot) in batch.into_iter().zip(slots) {
            state.nh_ids.insert(slot, nh.id);
            state.nexthops.insert(nh.id, NextHopEntry { slot, spec: nh.spec, routes: 0 });
        }
        state.generation += 1;
        Ok(state.generation)
    }

    /// Deletes next hops, all or nothing.
    pub fn delete_nexthops(&self, ids: &[u32]) -> Result<u64, DomainError> {
        let mut state = self.lock();
        let doomed: BTreeSet<u32> = ids.iter().copied().collect();
        for (i, id) in ids.iter().enumerate() {
            let field = format!("ids[{i}]");
            let e = state.nexthops.get(id).ok_or_else(|| not_found(*id).at(&field))?;
            if ids[..i].contains(id) {
                return Err(DomainError::invalid(field, format!("next hop {id} listed twice")));
            }
            if e.routes > 0 {
                return Err(DomainError::FailedPrecondition(format!("next hop {id} is used by {} route(s)", e.routes)).at(field));
            }
            let user = state.nexthops.iter().find(|(gid, g)| {
                !doomed.contains(gid) && matches!(&g.spec, NextHopSpec::Ecmp { members } if members.contains(id))
            });
            if let Some((gid, _)) = user {
                return Err(DomainError::FailedPrecondition(format!("next hop {id} is a member of ECMP group {gid}")).at(field));
            }
        }
        for (i, id) in ids.iter().enumerate() {
            let slot = state.nexthops[id].slot;
            if let Err(e) = self.dataplane.clear_nexthop(slot) {
                // Put back what was already cleared.
                for done in &ids[..i] {
                    let _ = self.write(&state, *done);
                }
                return Err(DomainError::from(e).at(format!("ids[{i}]")));
            }
        }
        for id in ids {
            if let Some(e) = state.nexthops.remove(id) {
                // Flows through the cleared slot would forward wherever its next user sends.
                if let Err(err) = self.purge_flows_via(e.slot) {
                    tracing::warn!(error = %err, slot = e.slot, "purging flows of a deleted next hop failed");
                }
                state.nh_ids.remove(&e.slot);
                state.nh_slots.free(e.slot);
            }
        }
        state.generation += 1;
        Ok(state.generation)
    }

    pub fn list_nexthops(&self) -> Result<Vec<NextHopView>, DomainError> {
        let state = self.lock();
        state
            .nexthops
            .iter()
            .map(|(id, e)| {
                let stats = match &e.spec {
                    // A group sends through its members; its own slot never counts.
                    NextHopSpec::Ecmp { members } => {
                        let mut s = NextHopStats::default();
                        for m in members {
                            if let Some(me) = state.nexthops.get(m) {
                                let ms = self.dataplane.nexthop_stats(me.slot)?;
                                s.packets += ms.packets;
                                s.bytes += ms.bytes;
                            }
                        }
                        s
                    }
                    _ => self.dataplane.nexthop_stats(e.slot)?,
                };
                Ok(NextHopView { id: *id, slot: e.slot, spec: e.spec.clone(), routes: e.routes, stats })
            })
            .collect()
    }

    /// Rewrites next hop `id` into the kernel from the domain's state (rollback helper).
    fn write(&self, state: &State, id: u32) -> Result<(), DomainError> {
        let e = &state.nexthops[&id];
        let p = params(state, &e.spec, |m| state.nexthops.get(&m).map(|x| x.slot))?;
        self.dataplane.set_nexthop(e.slot, &p, false)?;
        Ok(())
    }
}

pub(super) fn not_found(id: u32) -> DomainError {
    DomainError::NotFound { kind: "next hop", name: id.to_string(), detail: "" }
}

/// Checks a batch against the state; returns kernel parameters with ECMP members still as ids.
fn validate_add(state: &State, batch: &[NewNextHop]) -> Result<Vec<NextHopParams>, DomainError> {
    let mut seen: BTreeMap<u32, bool> = BTreeMap::new(); // id -> is ECMP, for earlier batch items
    let mut out = Vec::with_capacity(batch.len());
    for (i, nh) in batch.iter().enumerate() {
        let at = |f: &str| format!("next_hops[{i}]{f}");
        if state.nexthops.contains_key(&nh.id) || seen.contains_key(&nh.id) {
            return Err(DomainError::AlreadyExists { kind: "next hop", name: nh.id.to_string() }.at(at(".id")));
        }
        if let NextHopSpec::Ecmp { members } = &nh.spec {
            if members.is_empty() || members.len() > ECMP_MAX {
                return Err(DomainError::invalid(at(".ecmp.members"), format!("1 to {ECMP_MAX} members, not {}", members.len())));
            }
            for (j, m) in members.iter().enumerate() {
                let is_ecmp = match (state.nexthops.get(m), seen.get(m)) {
                    (Some(e), _) => matches!(e.spec, NextHopSpec::Ecmp { .. }),
                    (None, Some(is_ecmp)) => *is_ecmp,
                    (None, None) => return Err(not_found(*m).at(at(&format!(".ecmp.members[{j}]")))),
                };
                if is_ecmp {
                    return Err(DomainError::invalid(at(&format!(".ecmp.members[{j}]")), format!("next hop {m} is itself an ECMP group")));
                }
            }
        }
        // Slots of ECMP members are filled in once the batch has its slots; ids stand in here.
        let p = params(state, &nh.spec, Some).map_err(|e| e.at(at(".encap.interface")))?;
        seen.insert(nh.id, matches!(nh.spec, NextHopSpec::Ecmp { .. }));
        out.push(p);
    }
    Ok(out)
}

/// Kernel parameters for `spec`; `member_slot` maps an ECMP member id to what to store.
fn params(state: &State, spec: &NextHopSpec, member_slot: impl Fn(u32) -> Option<u32>) -> Result<NextHopParams, DomainError> {
    Ok(match spec {
        NextHopSpec::Encap { interface, dst_mac, src_mac } => {
            let e = state.interfaces.get(interface).ok_or_else(|| DomainError::NotFound {
                kind: "interface",
                name: interface.to_string(),
                detail: " among the dataplane's interfaces",
            })?;
            NextHopParams::Encap {
                tx_slot: e.slot,
                ifindex: e.link.ifindex,
                mtu: e.link.mtu,
                dst_mac: *dst_mac,
                src_mac: src_mac.unwrap_or(e.link.mac),
            }
        }
        NextHopSpec::Ecmp { members } => NextHopParams::Ecmp { members: members.iter().filter_map(|m| member_slot(*m)).collect() },
        NextHopSpec::Discard => NextHopParams::Discard,
        NextHopSpec::Receive => NextHopParams::Receive,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{fake::FakeDataplane, AddInterface, RouteSpec};
    use crate::dataplane::XdpMode;

    fn domain() -> Domain<FakeDataplane> {
        let d = Domain::new(FakeDataplane::with_links(&[("eth0", 7)]));
        d.add_interface(AddInterface { name: InterfaceName::parse("n", "eth0").unwrap(), mode: XdpMode::Auto, vrf: 0 }).unwrap();
        d
    }

    fn encap(id: u32) -> NewNextHop {
        NewNextHop {
            id,
            spec: NextHopSpec::Encap {
                interface: InterfaceName::parse("n", "eth0").unwrap(),
                dst_mac: "02:00:00:00:00:02".parse().unwrap(),
                src_mac: None,
            },
        }
    }

    #[test]
    fn add_nexthops_ecmp_members_in_same_batch_resolved_to_slots() {
        let d = domain();
        d.add_nexthops(vec![encap(10), encap(11), NewNextHop { id: 12, spec: NextHopSpec::Ecmp { members: vec![10, 11] } }]).unwrap();
        let group = d.dataplane().nexthop(2).unwrap();
        assert_eq!(group, NextHopParams::Ecmp { members: vec![0, 1] });
        match d.dataplane().nexthop(0).unwrap() {
            NextHopParams::Encap { src_mac, ifindex, .. } => assert_eq!((src_mac, ifindex), (FakeDataplane::MAC, 7)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn add_nexthops_bad_item_changes_nothing_and_names_it() {
        let d = domain();
        let e = d
            .add_nexthops(vec![encap(1), NewNextHop { id: 2, spec: NextHopSpec::Ecmp { members: vec![1, 99] } }])
            .unwrap_err();
        assert_eq!(e.to_string(), "next_hops[1].ecmp.members[1]: next hop 99 not found");
        assert!(d.list_nexthops().unwrap().is_empty());
        assert_eq!(d.dataplane().nexthop(0), None, "nothing written to the kernel");
        let e = d.add_nexthops(vec![encap(1), encap(1)]).unwrap_err();
        assert!(matches!(e.kind(), crate::domain::ErrorKind::AlreadyExists), "{e}");
    }

    #[test]
    fn add_nexthops_unknown_interface_not_found() {
        let d = domain();
        let nh = NewNextHop {
            id: 1,
            spec: NextHopSpec::Encap { interface: InterfaceName::parse("n", "eth9").unwrap(), dst_mac: Mac([2, 0, 0, 0, 0, 1]), src_mac: None },
        };
        let e = d.add_nexthops(vec![nh]).unwrap_err();
        assert!(e.to_string().starts_with("next_hops[0].encap.interface: interface eth9 not found"), "{e}");
    }

    #[test]
    fn delete_nexthops_in_use_failed_precondition() {
        let d = domain();
        d.add_nexthops(vec![encap(1), encap(2), NewNextHop { id: 3, spec: NextHopSpec::Ecmp { members: vec![1, 2] } }]).unwrap();
        d.add_routes(vec![RouteSpec { vrf: 0, prefix: "192.0.2.0/24".parse().unwrap(), nexthop: 3 }]).unwrap();
        let e = d.delete_nexthops(&[3]).unwrap_err();
        assert!(matches!(e.kind(), crate::domain::ErrorKind::FailedPrecondition), "{e}");
        let e = d.delete_nexthops(&[1]).unwrap_err();
        assert!(e.to_string().contains("member of ECMP group 3"), "{e}");
        d.delete_routes(&[( 0, "192.0.2.0/24".parse().unwrap())]).unwrap();
        // A group and its members may go together.
        d.delete_nexthops(&[3, 1, 2]).unwrap();
        assert!(d.list_nexthops().unwrap().is_empty());
    }

    #[test]
    fn delete_interface_used_by_nexthop_failed_precondition() {
        let d = domain();
        d.add_nexthops(vec![encap(1)]).unwrap();
        let e = d.delete_interface(&InterfaceName::parse("n", "eth0").unwrap()).unwrap_err();
        assert!(matches!(e.kind(), crate::domain::ErrorKind::FailedPrecondition), "{e}");
    }
}
