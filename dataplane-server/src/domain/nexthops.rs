//! Next hops: ids chosen by the controller, each stored at a slot the domain allocates (a dense
//! array index for the XDP program). Referential integrity is kept here: a next hop cannot go
//! while routes or ECMP groups use it, and an ENCAP next hop keeps its interface attached. Within
//! a batch too: an ECMP group fails with its member's failed entry, and a member stays with its
//! group (see `batch`).

pub(super) mod restore;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
};

use dataplane_common::{route::ECMP_MAX, NextHopStats};

use super::{
    batch::{Atomicity, BatchError, Entry, Failures},
    txn::{KernelOp, Write},
    Domain, DomainError, InterfaceName, NeighbourRequest, OnExisting, State,
};
use crate::{
    dataplane::{Dataplane, NextHopParams},
    net::Mac,
};

/// What a next hop does. In the state file tagged by `kind` (`{"kind": "encap", ...}`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum NextHopSpec {
    /// Out of `interface` (attached to the dataplane) to `dst_mac`; source MAC defaults to the
    /// interface's own.
    Encap {
        interface: InterfaceName,
        dst_mac: Mac,
        src_mac: Option<Mac>,
    },
    /// Out of `interface` to the MAC the kernel's neighbour table has for `gateway`, kept
    /// current from netlink; to the kernel stack while it has none.
    Gateway {
        interface: InterfaceName,
        gateway: IpAddr,
        src_mac: Option<Mac>,
    },
    /// One of the member next hops (ids), by flow hash.
    Ecmp {
        members: Vec<u32>,
    },
    Discard,
    Receive,
}

impl NextHopSpec {
    /// The interface it sends through (ENCAP and gateway next hops).
    pub fn interface(&self) -> Option<&InterfaceName> {
        match self {
            Self::Encap { interface, .. } | Self::Gateway { interface, .. } => Some(interface),
            _ => None,
        }
    }
}

/// Whether a next hop forwards in XDP now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextHopState {
    Ready,
    /// A gateway without a resolved MAC: packets go to the kernel stack.
    Unresolved,
    /// Its interface is gone from the kernel: packets go to the kernel stack.
    InterfaceMissing,
}

/// What a next hop is in the kernel right now.
enum Resolution {
    Params(NextHopParams),
    InterfaceMissing(InterfaceName),
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
    pub state: NextHopState,
    /// The destination MAC in use (ENCAP: the one given; gateway: the resolved one).
    pub resolved_mac: Option<Mac>,
}

impl<D: Dataplane> Domain<D> {
    /// Adds a batch of next hops, all or nothing. Returns the new generation.
    pub fn add_nexthops(&self, batch: Vec<NewNextHop>) -> Result<u64, DomainError> {
        self.add_nexthops_with(batch, OnExisting::Refuse)
    }

    /// [`Self::add_nexthops`]; with [`OnExisting::Replace`] (and always during a resync) a next
    /// hop that exists already is kept, or rewritten in place (same slot) if its spec changed.
    /// A batch that writes nothing leaves the generation alone.
    pub fn add_nexthops_with(&self, batch: Vec<NewNextHop>, on_existing: OnExisting) -> Result<u64, DomainError> {
        self.add_nexthops_each(batch.into_iter().map(Ok), on_existing, Atomicity::AllOrNothing)
            .map_err(BatchError::into_first)
    }

    /// [`Self::add_nexthops_with`], each entry checked on its own: every failed entry is
    /// reported, and with [`Atomicity::ContinueOnError`] the valid ones are applied (as one
    /// batch). An ECMP group whose member of the same batch failed fails too.
    pub fn add_nexthops_each(
        &self,
        batch: impl IntoIterator<Item = Entry<NewNextHop>>,
        on_existing: OnExisting,
        atomicity: Atomicity,
    ) -> Result<u64, BatchError> {
        let mut state = self.lock();
        // A resync replays what the controller had: every batch replaces then.
        let on_existing = if state.resync.is_some() { OnExisting::Replace } else { on_existing };
        let mut failures = Failures::new(atomicity);
        let checked = check_add(&state, batch, on_existing, &mut failures);
        let applied = checked.fresh.len() + checked.replays.len();
        failures.stop(applied, state.generation)?;
        let mut plan = plan_add(&mut state, checked)?;
        let changed = !plan.writes.is_empty();
        // Held until the batch committed (past `bump`).
        let _intent = match self.apply_logged(&state, std::mem::take(&mut plan.writes)) {
            Ok(intent) => intent,
            Err(e) => {
                // Freed last first, so the allocator hands them out again as before.
                for (_, slot) in plan.fresh.iter().rev() {
                    state.nh_slots.free(*slot);
                }
                return Err(e.into());
            }
        };
        for (nh, slot) in &plan.fresh {
            state.nh_ids.insert(*slot, nh.id);
            self.request_resolution(&state, &nh.spec);
            state.nexthops.insert(nh.id, NextHopEntry { slot: *slot, spec: nh.spec.clone(), routes: 0 });
        }
        for (nh, rewritten) in plan.replays {
            if rewritten {
                self.request_resolution(&state, &nh.spec);
                if let Some(e) = state.nexthops.get_mut(&nh.id) {
                    e.spec = nh.spec;
                }
            }
            if let Some(rs) = state.resync.as_mut() {
                rs.nexthops.insert(nh.id);
            }
        }
        if let Some(rs) = state.resync.as_mut() {
            rs.nexthops.extend(plan.fresh.iter().map(|(n, _)| n.id));
        }
        if changed {
            self.bump(&mut state);
        }
        failures.finish(applied, state.generation)
    }

    /// The kernel's neighbour entry for `address` on `ifindex` is now `mac` (`None`: not
    /// resolved, or removed). Gateway next hops through it follow at once.
    pub fn neighbour_changed(&self, ifindex: u32, address: IpAddr, mac: Option<Mac>) {
        let mut state = self.lock();
        let key = (ifindex, address);
        let changed = match mac {
            Some(m) => state.neighbours.insert(key, m) != Some(m),
            None => state.neighbours.remove(&key).is_some(),
        };
        if !changed {
            return;
        }
        let users: Vec<u32> = state
            .nexthops
            .iter()
            .filter(|(_, e)| match &e.spec {
                NextHopSpec::Gateway { interface, gateway, .. } => {
                    *gateway == address && state.interfaces.get(interface).is_some_and(|i| i.link.ifindex == ifindex)
                }
                _ => false,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in users {
            match self.write(&state, id) {
                Ok(()) => {
                    tracing::info!(next_hop = id, %address, ifindex, mac = ?mac.map(|m| m.to_string()), "gateway next hop follows its neighbour")
                }
                Err(e) => tracing::warn!(next_hop = id, %address, error = %e, "updating a gateway next hop failed"),
            }
        }
    }

    /// Writes every next hop through `interface` again from the domain's state (its interface
    /// came, went or changed).
    pub(super) fn rewrite_nexthops_via(&self, state: &State, interface: &InterfaceName) {
        for (id, e) in &state.nexthops {
            if e.spec.interface() == Some(interface) {
                if let Err(err) = self.write(state, *id) {
                    tracing::warn!(next_hop = id, interface = %interface, error = %err, "rewriting a next hop failed");
                }
                self.request_resolution(state, &e.spec);
            }
        }
    }

    /// Asks the kernel to resolve a gateway it has no MAC for (and keep it resolved).
    fn request_resolution(&self, state: &State, spec: &NextHopSpec) {
        let NextHopSpec::Gateway { interface, gateway, .. } = spec else { return };
        let Some(i) = state.interfaces.get(interface) else { return };
        if state.neighbours.contains_key(&(i.link.ifindex, *gateway)) {
            return;
        }
        self.send_neighbour_request(NeighbourRequest { ifindex: i.link.ifindex, address: *gateway, keep: true });
    }

    fn send_neighbour_request(&self, req: NeighbourRequest) {
        let resolver = self.resolver.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = resolver.as_ref() {
            let _ = tx.send(req);
        }
    }

    /// Tells the kernel side that gateways no remaining next hop uses are no longer needed.
    fn release_gateways(&self, state: &State, released: Vec<(u32, IpAddr)>) {
        for (ifindex, address) in released {
            let used = state.nexthops.values().any(|e| match &e.spec {
                NextHopSpec::Gateway { interface, gateway, .. } => {
                    *gateway == address && state.interfaces.get(interface).is_some_and(|i| i.link.ifindex == ifindex)
                }
                _ => false,
            });
            if !used {
                self.send_neighbour_request(NeighbourRequest { ifindex, address, keep: false });
            }
        }
    }

    /// Where gateway resolution requests go from now on.
    pub fn set_neighbour_resolver(&self, tx: tokio::sync::mpsc::UnboundedSender<NeighbourRequest>) {
        *self.resolver.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
    }

    /// Deletes next hops, all or nothing.
    pub fn delete_nexthops(&self, ids: &[u32]) -> Result<u64, DomainError> {
        self.delete_nexthops_each(ids, Atomicity::AllOrNothing).map_err(BatchError::into_first)
    }

    /// [`Self::delete_nexthops`], each entry checked on its own (see [`Self::add_nexthops_each`]).
    /// A member of an ECMP group stays if the group does (its own delete failed).
    pub fn delete_nexthops_each(&self, ids: &[u32], atomicity: Atomicity) -> Result<u64, BatchError> {
        let mut state = self.lock();
        let mut failures = Failures::new(atomicity);
        let (ids, index) = check_deletes(&state, ids, &mut failures);
        failures.stop(ids.len(), state.generation)?;
        let ids = &ids[..];
        // Flows through the cleared slots would forward wherever their next user sends: they go
        // first, with the batch.
        let slots: HashSet<u32> = ids.iter().map(|id| state.nexthops[id].slot).collect();
        let (mut writes, purged) = self.purge_flows_via(&slots)?;
        writes.extend(ids.iter().zip(&index).map(|(id, i)| Write {
            op: KernelOp::ClearNextHop(state.nexthops[id].slot),
            undo: vec![current(&state, *id)],
            at: Some(format!("ids[{i}]")),
        }));
        let intent = self.apply_logged(&state, writes)?;
        let purged = self.removal_notices(&purged, super::FlowRemovedReason::NextHopRemoved);
        let mut released = Vec::new();
        for id in ids {
            if let Some(e) = state.nexthops.remove(id) {
                if let NextHopSpec::Gateway { interface, gateway, .. } = &e.spec {
                    if let Some(i) = state.interfaces.get(interface) {
                        released.push((i.link.ifindex, *gateway));
                    }
                }
                state.nh_ids.remove(&e.slot);
                state.nh_slots.free(e.slot);
            }
        }
        self.release_gateways(&state, released);
        self.bump(&mut state);
        let generation = state.generation;
        drop(intent);
        drop(state);
        self.announce(purged);
        failures.finish(ids.len(), generation)
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
                let (state_now, resolved_mac) = match resolve(&state, &e.spec, Some) {
                    Resolution::InterfaceMissing(_) => (NextHopState::InterfaceMissing, None),
                    Resolution::Params(NextHopParams::Unresolved { .. }) => (NextHopState::Unresolved, None),
                    Resolution::Params(NextHopParams::Encap { dst_mac, .. }) => (NextHopState::Ready, Some(dst_mac)),
                    Resolution::Params(_) => (NextHopState::Ready, None),
                };
                Ok(NextHopView {
                    id: *id,
                    slot: e.slot,
                    spec: e.spec.clone(),
                    routes: e.routes,
                    stats,
                    state: state_now,
                    resolved_mac,
                })
            })
            .collect()
    }

    /// Rewrites next hop `id` into the kernel from the domain's state; one whose interface is
    /// gone is emptied (XDP hands its packets to the kernel stack).
    fn write(&self, state: &State, id: u32) -> Result<(), DomainError> {
        let e = &state.nexthops[&id];
        match resolve(state, &e.spec, |m| state.nexthops.get(&m).map(|x| x.slot)) {
            Resolution::Params(p) => self.dataplane.set_nexthop(e.slot, &p, false)?,
            Resolution::InterfaceMissing(_) => self.dataplane.clear_nexthop(e.slot)?,
        }
        Ok(())
    }
}

/// An `AddNextHops` batch, planned: its new next hops with the slots allocated for them, its
/// replays (rewritten or not), and the kernel writes, new ones first.
struct AddPlan {
    fresh: Vec<(NewNextHop, u32)>,
    replays: Vec<(NewNextHop, bool)>,
    writes: Vec<Write>,
}

/// The valid entries of an `AddNextHops` batch: new next hops (index in the request, the next
/// hop, its kernel parameters with ECMP members still as ids), replays and their rewrites.
struct CheckedAdd {
    fresh: Vec<(usize, NewNextHop, NextHopParams)>,
    replays: Vec<(NewNextHop, bool)>,
    rewrites: Vec<Write>,
}

/// Checks each entry of an `AddNextHops` batch against the state and the entries before it;
/// with [`OnExisting::Replace`] a next hop that exists already is a replay. The failed ones go to
/// `failures`. Nothing is changed.
fn check_add(
    state: &State,
    batch: impl IntoIterator<Item = Entry<NewNextHop>>,
    on_existing: OnExisting,
    failures: &mut Failures,
) -> CheckedAdd {
    let mut out = CheckedAdd { fresh: Vec::new(), replays: Vec::new(), rewrites: Vec::new() };
    let mut batch_ids = BatchIds::default();
    for (i, nh) in batch.into_iter().enumerate() {
        failures.entries += 1;
        let nh = match nh {
            Ok(nh) => nh,
            Err(e) => {
                failures.push(i, e);
                continue;
            }
        };
        match state.nexthops.get(&nh.id) {
            Some(e) if on_existing == OnExisting::Replace => {
                let rewritten = e.spec != nh.spec;
                if rewritten {
                    let at = format!("next_hops[{i}]");
                    match replacement(state, &nh) {
                        Ok(params) => {
                            let op = KernelOp::SetNextHop { slot: e.slot, params, fresh: false };
                            out.rewrites.push(Write { op, undo: vec![current(state, nh.id)], at: Some(at) });
                        }
                        Err(e) => {
                            failures.push(i, e.at(at));
                            continue;
                        }
                    }
                }
                out.replays.push((nh, rewritten));
            }
            _ => match check_fresh(state, i, &nh, &batch_ids) {
                Ok(p) => {
                    batch_ids.added.insert(nh.id, matches!(nh.spec, NextHopSpec::Ecmp { .. }));
                    out.fresh.push((i, nh, p));
                }
                Err(e) => {
                    batch_ids.failed.entry(nh.id).or_insert(i);
                    failures.push(i, e);
                }
            },
        }
    }
    out
}

/// The new next hops of a batch so far: those that are valid (id -> is ECMP) and the ids of
/// those that failed (id -> the entry's index).
#[derive(Default)]
struct BatchIds {
    added: BTreeMap<u32, bool>,
    failed: HashMap<u32, usize>,
}

/// Allocates the slots of a checked batch's new next hops and plans every write (new ones first,
/// then the rewrites). The slots are taken from the state (given back by the caller if the
/// batch fails).
fn plan_add(state: &mut State, checked: CheckedAdd) -> Result<AddPlan, DomainError> {
    let CheckedAdd { fresh, replays, rewrites } = checked;
    let mut writes = Vec::with_capacity(fresh.len() + rewrites.len());
    let slots = if fresh.is_empty() { Vec::new() } else { plan_fresh(state, &fresh, &mut writes)? };
    writes.extend(rewrites);
    Ok(AddPlan { fresh: fresh.into_iter().map(|(_, nh, _)| nh).zip(slots).collect(), replays, writes })
}

/// Allocates the slots of checked new next hops and plans their writes.
fn plan_fresh(
    state: &mut State,
    batch: &[(usize, NewNextHop, NextHopParams)],
    writes: &mut Vec<Write>,
) -> Result<Vec<u32>, DomainError> {
    let free = state.nh_slots.capacity() - state.nh_slots.in_use();
    if batch.len() as u64 > u64::from(free) {
        return Err(DomainError::Exhausted { what: "next-hop slots", capacity: state.nh_slots.capacity() });
    }
    // Slots first, so ECMP groups can name members of the same batch by slot.
    let slots: Vec<u32> = batch.iter().map(|_| state.nh_slots.alloc().expect("checked free slots")).collect();
    let mut slot_of: BTreeMap<u32, u32> = batch.iter().map(|(_, n, _)| n.id).zip(slots.iter().copied()).collect();
    for (id, e) in &state.nexthops {
        slot_of.insert(*id, e.slot);
    }
    for ((i, _, p), &slot) in batch.iter().zip(&slots) {
        let params = match p {
            NextHopParams::Ecmp { members } => {
                NextHopParams::Ecmp { members: members.iter().map(|id| slot_of[id]).collect() }
            }
            other => other.clone(),
        };
        let op = KernelOp::SetNextHop { slot, params, fresh: true };
        writes.push(Write { op, undo: vec![KernelOp::ClearNextHop(slot)], at: Some(format!("next_hops[{i}]")) });
    }
    Ok(slots)
}

/// The write that puts next hop `id` in the kernel as the state has it: what undoes a change.
fn current(state: &State, id: u32) -> KernelOp {
    let e = &state.nexthops[&id];
    match resolve(state, &e.spec, |m| state.nexthops.get(&m).map(|x| x.slot)) {
        Resolution::Params(params) => KernelOp::SetNextHop { slot: e.slot, params, fresh: false },
        Resolution::InterfaceMissing(_) => KernelOp::ClearNextHop(e.slot),
    }
}

pub(super) fn not_found(id: u32) -> DomainError {
    DomainError::NotFound { kind: "next hop", name: id.to_string(), detail: "" }
}

/// The kernel parameters of a replayed next hop whose spec changed (ECMP members as slots).
fn replacement(state: &State, nh: &NewNextHop) -> Result<NextHopParams, DomainError> {
    if let NextHopSpec::Ecmp { members } = &nh.spec {
        if let Some((gid, _)) = state
            .nexthops
            .iter()
            .find(|(_, g)| matches!(&g.spec, NextHopSpec::Ecmp { members } if members.contains(&nh.id)))
        {
            return Err(DomainError::invalid(".ecmp", format!("next hop {} is a member of ECMP group {gid}", nh.id)));
        }
        if members.is_empty() || members.len() > ECMP_MAX {
            return Err(DomainError::invalid(
                ".ecmp.members",
                format!("1 to {ECMP_MAX} members, not {}", members.len()),
            ));
        }
        for (j, m) in members.iter().enumerate() {
            match state.nexthops.get(m) {
                None => return Err(not_found(*m).at(format!(".ecmp.members[{j}]"))),
                Some(e) if matches!(e.spec, NextHopSpec::Ecmp { .. }) => {
                    return Err(DomainError::invalid(
                        format!(".ecmp.members[{j}]"),
                        format!("next hop {m} is itself an ECMP group"),
                    ))
                }
                Some(_) => {}
            }
        }
    }
    params(state, &nh.spec, |m| state.nexthops.get(&m).map(|x| x.slot)).map_err(|e| e.at(".encap.interface"))
}

/// Checks new next hop `i` against the state and the batch's entries before it; returns its
/// kernel parameters with ECMP members still as ids.
fn check_fresh(state: &State, i: usize, nh: &NewNextHop, batch: &BatchIds) -> Result<NextHopParams, DomainError> {
    let at = |f: &str| format!("next_hops[{i}]{f}");
    if state.nexthops.contains_key(&nh.id) || batch.added.contains_key(&nh.id) || batch.failed.contains_key(&nh.id) {
        return Err(DomainError::AlreadyExists { kind: "next hop", name: nh.id.to_string() }.at(at(".id")));
    }
    if let NextHopSpec::Ecmp { members } = &nh.spec {
        if members.is_empty() || members.len() > ECMP_MAX {
            return Err(DomainError::invalid(
                at(".ecmp.members"),
                format!("1 to {ECMP_MAX} members, not {}", members.len()),
            ));
        }
        for (j, m) in members.iter().enumerate() {
            let is_ecmp = match (state.nexthops.get(m), batch.added.get(m)) {
                (Some(e), _) => matches!(e.spec, NextHopSpec::Ecmp { .. }),
                (None, Some(is_ecmp)) => *is_ecmp,
                (None, None) => {
                    let e = match batch.failed.get(m) {
                        Some(&entry) => DomainError::MemberFailed { member: *m, entry: format!("next_hops[{entry}]") },
                        None => not_found(*m),
                    };
                    return Err(e.at(at(&format!(".ecmp.members[{j}]"))));
                }
            };
            if is_ecmp {
                return Err(DomainError::invalid(
                    at(&format!(".ecmp.members[{j}]")),
                    format!("next hop {m} is itself an ECMP group"),
                ));
            }
        }
    }
    if let NextHopSpec::Gateway { gateway, .. } = &nh.spec {
        let bad = gateway.is_unspecified()
            || gateway.is_multicast()
            || gateway.is_loopback()
            || matches!(gateway, IpAddr::V4(a) if a.is_broadcast());
        if bad {
            return Err(DomainError::invalid(at(".encap.gateway"), format!("{gateway} is not a unicast address")));
        }
    }
    // Slots of ECMP members are filled in once the batch has its slots; ids stand in here.
    params(state, &nh.spec, Some).map_err(|e| e.at(at(".encap.interface")))
}

/// Checks each id of a `DeleteNextHops` batch: it exists, no earlier entry names it, no route
/// uses it, and no ECMP group that stays (outside the batch, or whose own delete failed) has it
/// as a member. The failed ones go to `failures`; returns the valid ids and each one's index in
/// the request.
fn check_deletes(state: &State, ids: &[u32], failures: &mut Failures) -> (Vec<u32>, Vec<usize>) {
    failures.entries = ids.len();
    // Id -> its first entry.
    let mut seen: HashMap<u32, usize> = HashMap::with_capacity(ids.len());
    let mut doomed: BTreeMap<u32, usize> = BTreeMap::new();
    for (i, id) in ids.iter().enumerate() {
        let field = || format!("ids[{i}]");
        let Some(e) = state.nexthops.get(id) else {
            failures.push(i, not_found(*id).at(field()));
            continue;
        };
        if *seen.entry(*id).or_insert(i) != i {
            failures.push(i, DomainError::invalid(field(), format!("next hop {id} listed twice")));
        } else if e.routes > 0 {
            let why = format!("next hop {id} is used by {} route(s)", e.routes);
            failures.push(i, DomainError::FailedPrecondition(why).at(field()));
        } else {
            doomed.insert(*id, i);
        }
    }
    // Member -> the first group (by id) that stays and uses it: found once, not per id (a
    // batch of 20,000 took minutes). Groups are never members, so a member that stays keeps
    // nothing else.
    let mut users: HashMap<u32, u32> = HashMap::new();
    for (gid, g) in &state.nexthops {
        if let (NextHopSpec::Ecmp { members }, false) = (&g.spec, doomed.contains_key(gid)) {
            for m in members {
                users.entry(*m).or_insert(*gid);
            }
        }
    }
    let (mut valid, mut index) = (Vec::with_capacity(doomed.len()), Vec::with_capacity(doomed.len()));
    for (i, id) in ids.iter().enumerate() {
        if doomed.get(id) != Some(&i) {
            continue;
        }
        match users.get(id) {
            Some(gid) => {
                let why = match seen.get(gid) {
                    Some(k) => {
                        format!("next hop {id} is a member of ECMP group {gid} (whose delete, ids[{k}], failed)")
                    }
                    None => format!("next hop {id} is a member of ECMP group {gid}"),
                };
                failures.push(i, DomainError::FailedPrecondition(why).at(format!("ids[{i}]")));
            }
            None => {
                valid.push(*id);
                index.push(i);
            }
        }
    }
    (valid, index)
}

/// Kernel parameters for `spec`; `member_slot` maps an ECMP member id to what to store.
/// NOT_FOUND if its interface is not attached.
fn params(
    state: &State,
    spec: &NextHopSpec,
    member_slot: impl Fn(u32) -> Option<u32>,
) -> Result<NextHopParams, DomainError> {
    match resolve(state, spec, member_slot) {
        Resolution::Params(p) => Ok(p),
        Resolution::InterfaceMissing(name) => Err(DomainError::NotFound {
            kind: "interface",
            name: name.to_string(),
            detail: " among the dataplane's interfaces",
        }),
    }
}

/// What `spec` is in the kernel given the interfaces and neighbours known now.
fn resolve(state: &State, spec: &NextHopSpec, member_slot: impl Fn(u32) -> Option<u32>) -> Resolution {
    Resolution::Params(match spec {
        NextHopSpec::Encap { interface, dst_mac, src_mac } => {
            let Some(e) = state.interfaces.get(interface) else {
                return Resolution::InterfaceMissing(interface.clone());
            };
            NextHopParams::Encap {
                tx_slot: e.slot,
                ifindex: e.link.ifindex,
                mtu: e.link.mtu,
                dst_mac: *dst_mac,
                src_mac: src_mac.unwrap_or(e.link.mac),
            }
        }
        NextHopSpec::Gateway { interface, gateway, src_mac } => {
            let Some(e) = state.interfaces.get(interface) else {
                return Resolution::InterfaceMissing(interface.clone());
            };
            let (tx_slot, ifindex, mtu, src_mac) = (e.slot, e.link.ifindex, e.link.mtu, src_mac.unwrap_or(e.link.mac));
            match state.neighbours.get(&(ifindex, *gateway)) {
                Some(&dst_mac) => NextHopParams::Encap { tx_slot, ifindex, mtu, dst_mac, src_mac },
                None => NextHopParams::Unresolved { tx_slot, ifindex, mtu, src_mac },
            }
        }
        NextHopSpec::Ecmp { members } => {
            NextHopParams::Ecmp { members: members.iter().filter_map(|m| member_slot(*m)).collect() }
        }
        NextHopSpec::Discard => NextHopParams::Discard,
        NextHopSpec::Receive => NextHopParams::Receive,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::{LinkInfo, XdpMode};
    use crate::domain::{fake::FakeDataplane, AddInterface, RouteSpec};

    fn domain() -> Domain<FakeDataplane> {
        let d = Domain::new(FakeDataplane::with_links(&[("eth0", 7)]));
        d.add_interface(AddInterface { name: InterfaceName::parse("n", "eth0").unwrap(), mode: XdpMode::Auto, vrf: 0 })
            .unwrap();
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
        d.add_nexthops(vec![
            encap(10),
            encap(11),
            NewNextHop { id: 12, spec: NextHopSpec::Ecmp { members: vec![10, 11] } },
        ])
        .unwrap();
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
            spec: NextHopSpec::Encap {
                interface: InterfaceName::parse("n", "eth9").unwrap(),
                dst_mac: Mac([2, 0, 0, 0, 0, 1]),
                src_mac: None,
            },
        };
        let e = d.add_nexthops(vec![nh]).unwrap_err();
        assert!(e.to_string().starts_with("next_hops[0].encap.interface: interface eth9 not found"), "{e}");
    }

    #[test]
    fn delete_nexthops_in_use_failed_precondition() {
        let d = domain();
        d.add_nexthops(vec![encap(1), encap(2), NewNextHop { id: 3, spec: NextHopSpec::Ecmp { members: vec![1, 2] } }])
            .unwrap();
        d.add_routes(vec![RouteSpec { vrf: 0, prefix: "192.0.2.0/24".parse().unwrap(), nexthop: 3 }]).unwrap();
        let e = d.delete_nexthops(&[3]).unwrap_err();
        assert!(matches!(e.kind(), crate::domain::ErrorKind::FailedPrecondition), "{e}");
        let e = d.delete_nexthops(&[1]).unwrap_err();
        assert!(e.to_string().contains("member of ECMP group 3"), "{e}");
        d.delete_routes(&[(0, "192.0.2.0/24".parse().unwrap())]).unwrap();
        // A group and its members may go together.
        d.delete_nexthops(&[3, 1, 2]).unwrap();
        assert!(d.list_nexthops().unwrap().is_empty());
    }

    fn gateway(id: u32, gw: &str) -> NewNextHop {
        NewNextHop {
            id,
            spec: NextHopSpec::Gateway {
                interface: InterfaceName::parse("n", "eth0").unwrap(),
                gateway: gw.parse().unwrap(),
                src_mac: None,
            },
        }
    }

    #[test]
    fn gateway_nexthop_unresolved_until_neighbour_then_follows_mac_changes() {
        let d = domain();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        d.set_neighbour_resolver(tx);
        d.add_nexthops(vec![gateway(1, "192.0.2.1")]).unwrap();
        assert!(matches!(d.dataplane().nexthop(0), Some(NextHopParams::Unresolved { ifindex: 7, .. })));
        assert_eq!(
            rx.try_recv().unwrap(),
            NeighbourRequest { ifindex: 7, address: "192.0.2.1".parse().unwrap(), keep: true }
        );
        assert_eq!(d.list_nexthops().unwrap()[0].state, NextHopState::Unresolved);
        // Another interface's neighbour with the same address changes nothing.
        d.neighbour_changed(8, "192.0.2.1".parse().unwrap(), Some(Mac([2, 0, 0, 0, 0, 9])));
        assert!(matches!(d.dataplane().nexthop(0), Some(NextHopParams::Unresolved { .. })));
        for mac in [Mac([2, 0, 0, 0, 0, 1]), Mac([2, 0, 0, 0, 0, 2])] {
            d.neighbour_changed(7, "192.0.2.1".parse().unwrap(), Some(mac));
            assert!(matches!(d.dataplane().nexthop(0), Some(NextHopParams::Encap { dst_mac, .. }) if dst_mac == mac));
            let v = &d.list_nexthops().unwrap()[0];
            assert_eq!((v.state, v.resolved_mac), (NextHopState::Ready, Some(mac)));
        }
        d.neighbour_changed(7, "192.0.2.1".parse().unwrap(), None);
        assert!(matches!(d.dataplane().nexthop(0), Some(NextHopParams::Unresolved { .. })));
        // Known before the next hop exists: resolved at once, nothing asked of the kernel.
        d.neighbour_changed(7, "192.0.2.2".parse().unwrap(), Some(Mac([2, 0, 0, 0, 0, 3])));
        d.add_nexthops(vec![gateway(2, "192.0.2.2")]).unwrap();
        assert!(matches!(d.dataplane().nexthop(1), Some(NextHopParams::Encap { .. })));
        assert!(rx.try_recv().is_err());
        // A gateway is released once the last next hop through it goes.
        d.add_nexthops(vec![gateway(3, "192.0.2.1")]).unwrap();
        let _ = rx.try_recv();
        d.delete_nexthops(&[1]).unwrap();
        assert!(rx.try_recv().is_err(), "next hop 3 still uses 192.0.2.1");
        d.delete_nexthops(&[3]).unwrap();
        assert_eq!(
            rx.try_recv().unwrap(),
            NeighbourRequest { ifindex: 7, address: "192.0.2.1".parse().unwrap(), keep: false }
        );
    }

    #[test]
    fn gateway_nexthop_bad_address_invalid_argument_naming_field() {
        let d = domain();
        for bad in ["0.0.0.0", "224.0.0.1", "255.255.255.255", "127.0.0.1", "::", "ff02::1"] {
            let e = d.add_nexthops(vec![encap(1), gateway(2, bad)]).unwrap_err();
            assert!(e.to_string().starts_with("next_hops[1].encap.gateway:"), "{bad}: {e}");
        }
        assert!(d.list_nexthops().unwrap().is_empty());
    }

    #[test]
    fn link_removed_owned_interface_gone_nexthops_emptied_until_readded() {
        let d = domain();
        d.add_nexthops(vec![encap(1), gateway(2, "192.0.2.1")]).unwrap();
        assert_eq!(d.link_removed(99).unwrap(), None, "not owned: nothing happens");
        let generation = d.status().unwrap().generation;
        assert_eq!(d.link_removed(7).unwrap().map(|n| n.to_string()), Some("eth0".into()));
        assert!(d.list_interfaces(None).unwrap().is_empty());
        assert!(d.dataplane().attached().is_empty());
        assert_eq!(d.status().unwrap().generation, generation + 1);
        assert_eq!(d.dataplane().nexthop(0), None, "emptied: no slot of a vanished interface is used");
        assert!(d.list_nexthops().unwrap().iter().all(|v| v.state == NextHopState::InterfaceMissing));
        // The same name comes back (a new link): the next hops follow it.
        d.add_interface(AddInterface { name: InterfaceName::parse("n", "eth0").unwrap(), mode: XdpMode::Auto, vrf: 0 })
            .unwrap();
        assert!(matches!(d.dataplane().nexthop(0), Some(NextHopParams::Encap { .. })));
        assert_eq!(d.list_nexthops().unwrap()[0].state, NextHopState::Ready);
    }

    #[test]
    fn link_changed_mtu_and_mac_follow_into_interface_and_nexthops() {
        let d = domain();
        d.add_nexthops(vec![encap(1)]).unwrap();
        assert!(!d.link_changed(7).unwrap(), "nothing changed");
        let new_mac = Mac([2, 0, 0, 0, 0, 0xbb]);
        d.dataplane().set_link("eth0", LinkInfo { ifindex: 7, mtu: 9000, mac: new_mac, ipv4: None, ipv6: None });
        assert!(d.link_changed(7).unwrap());
        assert_eq!(d.dataplane().config(7).map(|p| (p.link.mtu, p.link.mac)), Some((9000, new_mac)));
        assert!(
            matches!(d.dataplane().nexthop(0), Some(NextHopParams::Encap { mtu: 9000, src_mac, .. }) if src_mac == new_mac)
        );
        assert_eq!(d.list_interfaces(None).unwrap()[0].link.mtu, 9000);
    }

    #[test]
    fn delete_interface_used_by_nexthop_failed_precondition() {
        let d = domain();
        d.add_nexthops(vec![encap(1)]).unwrap();
        let e = d.delete_interface(&InterfaceName::parse("n", "eth0").unwrap()).unwrap_err();
        assert!(matches!(e.kind(), crate::domain::ErrorKind::FailedPrecondition), "{e}");
    }

    /// Next hops 1 (ENCAP), 2 (discard) and 3 (an ECMP group of 1).
    fn with_nexthops() -> Domain<FakeDataplane> {
        let d = domain();
        d.add_nexthops(vec![
            encap(1),
            NewNextHop { id: 2, spec: NextHopSpec::Discard },
            NewNextHop { id: 3, spec: NextHopSpec::Ecmp { members: vec![1] } },
        ])
        .unwrap();
        d
    }

    #[test]
    fn add_nexthops_kernel_failure_at_every_write_changes_nothing() {
        let errors = crate::domain::txn::testing::fail_at_every_write(with_nexthops, |d| {
            d.add_nexthops(vec![
                encap(10),
                gateway(11, "192.0.2.1"),
                NewNextHop { id: 12, spec: NextHopSpec::Ecmp { members: vec![10, 11, 1] } },
            ])
        });
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[2].starts_with("next_hops[2]: dataplane:"), "{}", errors[2]);
    }

    #[test]
    fn replace_nexthops_kernel_failure_at_every_write_changes_nothing() {
        // A new next hop, one rewritten, one replayed unchanged, and a group given new members.
        let errors = crate::domain::txn::testing::fail_at_every_write(with_nexthops, |d| {
            d.add_nexthops_with(
                vec![
                    encap(4),
                    NewNextHop { id: 1, spec: NextHopSpec::Receive },
                    NewNextHop { id: 2, spec: NextHopSpec::Discard },
                    NewNextHop { id: 3, spec: NextHopSpec::Ecmp { members: vec![2, 1] } },
                ],
                crate::domain::OnExisting::Replace,
            )
        });
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[1].starts_with("next_hops[1]: dataplane:"), "{}", errors[1]);
        assert!(errors[2].starts_with("next_hops[3]: dataplane:"), "{}", errors[2]);
    }

    #[test]
    fn delete_nexthops_kernel_failure_at_every_write_changes_nothing() {
        let errors = crate::domain::txn::testing::fail_at_every_write(with_nexthops, |d| d.delete_nexthops(&[3, 1, 2]));
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[2].starts_with("ids[2]: dataplane:"), "{}", errors[2]);
    }
}
