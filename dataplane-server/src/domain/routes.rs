//! Routes: (VRF, prefix) -> next hop, written into the per-family LPM tries the XDP program reads.
//! Each entry of a batch is checked on its own and the failed ones reported (see `batch`); what
//! is applied (the whole batch, or its valid entries) is all or nothing (see `txn`): planned whole
//! before the first kernel write, and a kernel failure part-way undoes the writes already made. The IPv4 flat
//! tables follow a batch once it is in, best effort: a VRF whose table cannot follow falls back
//! to its trie.

pub(super) mod restore;

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::IpAddr,
};

use super::{
    batch::{Atomicity, BatchError, Entry, Failures},
    fib4::{self, V4Prefix},
    intent::Pending,
    nexthops,
    txn::{Journal, KernelOp},
    vrfs, Domain, DomainError, OnExisting, State,
};
use crate::{dataplane::Dataplane, net::Prefix};
use dataplane_common::{route::RECORD_VALID, RouteRecord4};

/// A validated route of an `AddRoutes` batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    pub vrf: u32,
    pub prefix: Prefix,
    pub nexthop: u32,
}

/// A route as listed or looked up.
pub type RouteView = RouteSpec;

/// What the domain keeps per route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RouteEntry {
    /// Next-hop id.
    pub nexthop: u32,
    /// IPv4: its slot in `ROUTE4_RECORDS`; IPv6: [`NO_RECORD`].
    pub record: u32,
}

pub(super) const NO_RECORD: u32 = u32::MAX;

/// An IPv4 prefix's address bytes (network order); `None` for IPv6.
fn v4_addr(prefix: &Prefix) -> Option<[u8; 4]> {
    match prefix.addr() {
        IpAddr::V4(a) => Some(a.octets()),
        IpAddr::V6(_) => None,
    }
}

impl<D: Dataplane> Domain<D> {
    /// Adds a batch of routes, all or nothing.
    pub fn add_routes(&self, batch: Vec<RouteSpec>) -> Result<u64, DomainError> {
        self.add_routes_with(batch, OnExisting::Refuse)
    }

    /// [`Self::add_routes`]; with [`OnExisting::Replace`] (and always during a resync) a route
    /// that exists already is kept, or pointed at its new next hop in place, instead of refused.
    /// A batch that writes nothing leaves the generation alone.
    pub fn add_routes_with(&self, batch: Vec<RouteSpec>, on_existing: OnExisting) -> Result<u64, DomainError> {
        self.add_routes_each(batch.into_iter().map(Ok), on_existing, Atomicity::AllOrNothing)
            .map_err(BatchError::into_first)
    }

    /// [`Self::add_routes_with`], each entry checked on its own: every failed entry is reported,
    /// and with [`Atomicity::ContinueOnError`] the valid ones are applied (as one batch).
    pub fn add_routes_each(
        &self,
        batch: impl IntoIterator<Item = Entry<RouteSpec>>,
        on_existing: OnExisting,
        atomicity: Atomicity,
    ) -> Result<u64, BatchError> {
        let mut state = self.lock();
        // A resync replays what the controller had: every batch replaces then.
        let on_existing = if state.resync.is_some() { OnExisting::Replace } else { on_existing };
        let mut failures = Failures::new(atomicity);
        let checked = check_routes(&state, batch, on_existing, &mut failures);
        failures.stop(checked.batch.len(), state.generation)?;
        check_route_capacity(&state, &checked)?;
        // A VRF never tried yet (the default VRF of a fresh dataplane) gets its flat table
        // before its first routes, which then go straight into it. That table is not part of
        // the batch: it stays (empty) if the batch fails.
        for &vrf in &checked.vrfs {
            if state.fib4.lookup_mode(vrf).is_none() {
                self.fib4_promote(&mut state, vrf);
            }
        }
        let applied = checked.batch.len();
        let mut plan = plan_add_routes(&mut state, checked, || self.dataplane.route4_capacity())?;
        // Held until the batch committed (past `bump`).
        let _intent = match self.apply_add_routes(&mut plan, state.route4_mark, state.generation + 1) {
            Ok(intent) => intent,
            Err(e) => {
                for &slot in plan.fresh_records.iter().rev() {
                    state.route4_slots.unalloc(slot);
                }
                return Err(e.into());
            }
        };
        self.commit_add_routes(&mut state, plan);
        failures.finish(applied, state.generation)
    }

    /// Writes a planned `AddRoutes` batch into the tries and the IPv4 records, all or nothing,
    /// its intent recorded first (committing as `generation`): the returned intent is to be
    /// held until the batch committed.
    fn apply_add_routes(
        &self,
        plan: &mut AddRoutesPlan,
        mark_before: u32,
        generation: u64,
    ) -> Result<Pending, DomainError> {
        let raise = !plan.records.is_empty() && plan.mark > mark_before;
        let intent = {
            // The undo of every planned write, last write first (as the journal below would
            // run them): the records, the mark, the trie's routes. Then the removal of the
            // IPv4 routes kept out of the trie: a VRF whose flat table cannot follow the batch
            // gets them in its trie before the commit (`fib4_give_up`).
            let reserve = [KernelOp::Route4Reserve(mark_before)];
            let flat: Vec<KernelOp> = plan
                .flat
                .iter()
                .map(|&(vrf, (addr, len), _)| KernelOp::RemoveRoute {
                    vrf,
                    prefix: Prefix::containing(IpAddr::V4(std::net::Ipv4Addr::from(addr)), len),
                })
                .collect();
            let undo = plan
                .records_undo
                .iter()
                .chain(reserve.iter().filter(|_| raise))
                .chain(plan.trie.iter().rev().map(|w| &w.undo))
                .chain(&flat);
            let writes = plan.trie.len() + usize::from(raise) + usize::from(!plan.records.is_empty());
            self.intend(generation, writes, undo)?
        };
        let mut journal = Journal::new(&self.dataplane);
        let entries: Vec<(u32, Prefix, u32)> = plan.trie.iter().map(|w| (w.vrf, w.prefix, w.nexthop_slot)).collect();
        // One call, so the dataplane can write in as few kernel calls as it can.
        let written = self.dataplane.insert_routes(&entries);
        let done = match &written {
            Ok(()) => (0..plan.trie.len()).collect(),
            Err((done, _)) => done.clone(),
        };
        for w in done {
            journal.wrote([plan.trie[w].undo.clone()]);
        }
        if let Err((done, e)) = written {
            // The first route not written is the one the kernel refused.
            let failed = plan.trie.iter().enumerate().find(|(w, _)| !done.contains(w)).map_or(0, |(_, t)| t.index);
            return Err(DomainError::from(e).at(format!("routes[{failed}]")));
        }
        if !plan.records.is_empty() {
            let at = |e| DomainError::from(e).at("routes");
            if raise {
                // A restart reads records up to the mark: raised before any record above it.
                journal
                    .write(KernelOp::Route4Reserve(plan.mark), [KernelOp::Route4Reserve(mark_before)])
                    .map_err(at)?;
            }
            let (records, undo) = (std::mem::take(&mut plan.records), std::mem::take(&mut plan.records_undo));
            journal.write(KernelOp::Route4Store(records), undo).map_err(at)?;
        }
        journal.commit();
        Ok(intent)
    }

    /// The domain's side of an `AddRoutes` batch the kernel has: routes, counts, the records'
    /// mark, then the flat tables and the generation.
    fn commit_add_routes(&self, state: &mut State, plan: AddRoutesPlan) {
        let AddRoutesPlan { routes, record_of, mark, flat, touched, .. } = plan;
        if record_of.iter().any(|&slot| slot != NO_RECORD) {
            state.route4_mark = state.route4_mark.max(mark);
        }
        // Next hops' route counts, gathered per next hop and applied once.
        let mut uses: HashMap<u32, i64> = HashMap::new();
        for (i, (r, before)) in routes.batch.into_iter().zip(routes.existing).enumerate() {
            let record = match before {
                Some(old) => {
                    *uses.entry(old.nexthop).or_default() -= 1;
                    old.record
                }
                None => {
                    state.route_counts[family(&r.prefix)] += 1;
                    record_of[i]
                }
            };
            state.routes.insert((r.vrf, r.prefix), RouteEntry { nexthop: r.nexthop, record });
            *uses.entry(r.nexthop).or_default() += 1;
            if let Some(rs) = state.resync.as_mut() {
                rs.routes.insert((r.vrf, r.prefix));
            }
        }
        for (id, delta) in uses {
            if let Some(nh) = state.nexthops.get_mut(&id) {
                nh.routes = nh.routes.saturating_add_signed(delta);
            }
        }
        // The batch's atomicity ends here: the flat tables follow the routes best effort (a VRF
        // whose table cannot follow falls back to its trie, see `fib4_apply`).
        self.fib4_apply(state, &flat, &[], &touched, false);
        if routes.changed {
            self.bump(state);
        }
    }

    /// Deletes a batch of routes, all or nothing.
    pub fn delete_routes(&self, batch: &[(u32, Prefix)]) -> Result<u64, DomainError> {
        self.delete_routes_each(batch.iter().copied().map(Ok), Atomicity::AllOrNothing).map_err(BatchError::into_first)
    }

    /// [`Self::delete_routes`], each entry checked on its own (see [`Self::add_routes_each`]).
    pub fn delete_routes_each(
        &self,
        batch: impl IntoIterator<Item = Entry<(u32, Prefix)>>,
        atomicity: Atomicity,
    ) -> Result<u64, BatchError> {
        let mut state = self.lock();
        let mut failures = Failures::new(atomicity);
        let (batch, index) = check_deletes(&state, batch, &mut failures);
        failures.stop(batch.len(), state.generation)?;
        let batch = &batch[..];
        // Held until the batch committed (past `bump`).
        let _intent = self.intend_delete_routes(&state, batch)?;
        // From the tries what is there (IPv6, IPv4 of VRFs without a flat table); then the
        // flat tables; the records last, so that a crash in between leaves the route recorded
        // (and a restart rebuilding what its flat table lacks).
        self.remove_from_tries(&state, batch, &index)?;
        let mut records = Vec::new();
        for key in batch {
            if let Some(e) = state.routes.remove(key) {
                state.route_counts[family(&key.1)] -= 1;
                if let Some(nh) = state.nexthops.get_mut(&e.nexthop) {
                    nh.routes -= 1;
                }
                if e.record != NO_RECORD {
                    records.push(e.record);
                }
            }
        }
        // The batch's atomicity ends with the tries: the flat tables and the records follow
        // best effort.
        let flat: Vec<(u32, V4Prefix)> = batch
            .iter()
            .filter(|(vrf, _)| state.fib4.is_flat(*vrf))
            .filter_map(|(vrf, p)| v4_prefix(p).map(|p| (*vrf, p)))
            .collect();
        let touched: BTreeSet<u32> = batch.iter().filter(|(_, p)| p.is_ipv4()).map(|(vrf, _)| *vrf).collect();
        self.fib4_apply(&mut state, &[], &flat, &touched, !touched.is_empty());
        if let Err(e) = self.dataplane.route4_clear(&records) {
            tracing::error!(error = %e, "clearing IPv4 route records failed: a restart would bring the routes back");
        }
        for slot in records {
            state.route4_slots.free(slot);
        }
        self.bump(&mut state);
        failures.finish(batch.len(), state.generation)
    }

    /// Records the intent of a checked `DeleteRoutes` batch: what puts back its routes in the
    /// tries and its IPv4 records (cleared after the tries, outside the journal).
    fn intend_delete_routes(&self, state: &State, batch: &[(u32, Prefix)]) -> Result<Pending, DomainError> {
        let mut records = Vec::new();
        let mut trie = Vec::new();
        for &(vrf, prefix) in batch {
            let e = state.routes[&(vrf, prefix)];
            let nexthop_slot = state.nexthops[&e.nexthop].slot;
            if let (Some(addr), true) = (v4_addr(&prefix), e.record != NO_RECORD) {
                let flags = RECORD_VALID;
                let r =
                    RouteRecord4 { vrf, addr, prefix_len: prefix.len(), _pad: [0; 2], flags, nexthop: nexthop_slot };
                records.push((e.record, r));
            }
            if !prefix.is_ipv4() || !state.fib4.is_flat(vrf) {
                trie.push(KernelOp::InsertRoute { vrf, prefix, nexthop_slot });
            }
        }
        let writes = trie.len() + usize::from(!records.is_empty());
        let store = [KernelOp::Route4Store(records)];
        self.intend(state.generation + 1, writes, store.iter().chain(trie.iter().rev()))
    }

    /// Removes the routes of a checked `DeleteRoutes` batch (`index`: each one's in the request)
    /// that are in the tries, all or nothing.
    fn remove_from_tries(&self, state: &State, batch: &[(u32, Prefix)], index: &[usize]) -> Result<(), DomainError> {
        let mut journal = Journal::new(&self.dataplane);
        for (&i, &(vrf, prefix)) in index.iter().zip(batch) {
            if prefix.is_ipv4() && state.fib4.is_flat(vrf) {
                continue;
            }
            let nexthop_slot = state.nexthops[&state.routes[&(vrf, prefix)].nexthop].slot;
            let undo = KernelOp::InsertRoute { vrf, prefix, nexthop_slot };
            journal
                .write(KernelOp::RemoveRoute { vrf, prefix }, [undo])
                .map_err(|e| DomainError::from(e).at(format!("routes[{i}]")))?;
        }
        journal.commit();
        Ok(())
    }

    /// Routes, optionally of one VRF and inside one prefix, in (VRF, prefix) order.
    pub fn list_routes(&self, vrf: Option<u32>, within: Option<Prefix>) -> Vec<RouteView> {
        let state = self.lock();
        let iter: Box<dyn Iterator<Item = (&(u32, Prefix), &RouteEntry)>> = match vrf {
            Some(v) => Box::new(state.routes.range((v, vrfs::min_prefix())..).take_while(move |((rv, _), _)| *rv == v)),
            None => Box::new(state.routes.iter()),
        };
        iter.filter(|((_, p), _)| within.is_none_or(|w| w.covers(p)))
            .map(|(&(vrf, prefix), e)| RouteSpec { vrf, prefix, nexthop: e.nexthop })
            .collect()
    }

    /// Longest-prefix match of `addr` in `vrf`, asked of the kernel's map (what XDP sees).
    pub fn lookup_route(&self, vrf: u32, addr: IpAddr) -> Result<Option<RouteView>, DomainError> {
        let state = self.lock();
        if !state.vrfs.contains_key(&vrf) {
            return Err(vrfs::not_found(vrf).at("vrf"));
        }
        let Some(m) = self.dataplane.lookup_route(vrf, addr)? else { return Ok(None) };
        let nexthop = state.nh_ids.get(&m.nexthop_slot).copied().ok_or_else(|| DomainError::Internal {
            source: crate::dataplane::DataplaneError::SlotOutOfRange { map: "NEXTHOPS", slot: m.nexthop_slot, max: 0 },
        })?;
        Ok(Some(RouteSpec { vrf, prefix: Prefix::containing(addr, m.prefix_len), nexthop }))
    }
}

impl<D: Dataplane> Domain<D> {
    /// Brings the IPv4 flat tables in line with routes just written to `state.routes` (and
    /// the records): `puts` (VRF, prefix, next-hop slot) added or re-pointed and `removes` gone,
    /// in VRFs with a flat table; `touched` every VRF whose IPv4 routes changed. Whatever
    /// happens here the routes are forwarded right: a VRF whose table cannot follow (pool full,
    /// or a kernel error) is given its routes in the trie and pointed back at it.
    /// `retry`: IPv4 routes were removed or a VRF deleted, so a VRF the pool could not hold may
    /// fit now.
    pub(super) fn fib4_apply(
        &self,
        state: &mut State,
        puts: &[(u32, V4Prefix, u32)],
        removes: &[(u32, V4Prefix)],
        touched: &BTreeSet<u32>,
        retry: bool,
    ) {
        let dp = &self.dataplane;
        for &(vrf, prefix, slot) in puts {
            if !state.fib4.is_flat(vrf) {
                continue;
            }
            if let Err(e) = state.fib4.insert(dp, vrf, prefix, slot) {
                self.fib4_give_up(state, vrf, &e);
            }
        }
        for &(vrf, prefix) in removes {
            if state.fib4.is_flat(vrf) {
                let cover = cover(state, vrf, prefix);
                state.fib4.remove(vrf, prefix, cover);
            }
        }
        // A VRF never tried yet (the default VRF of a fresh dataplane): build its table now.
        for &vrf in touched {
            if state.fib4.lookup_mode(vrf).is_none() {
                self.fib4_promote(state, vrf);
            }
        }
        if retry && state.fib4.overflowed().next().is_some() {
            let (fib, routes, nexthops) = (&mut state.fib4, &state.routes, &state.nexthops);
            match fib.retry_overflowed(
                dp,
                |vrf, root| dp.fib4_set_root(vrf, root),
                |vrf| v4_routes(routes, nexthops, vrf),
            ) {
                Ok(promoted) => {
                    for vrf in promoted {
                        tracing::info!(vrf, "IPv4 flat table built: the pool has room again");
                        self.trie_forget_v4(state, vrf);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "rebuilding IPv4 flat tables failed"),
            }
        }
        if let Err(e) = state.fib4.flush(dp) {
            tracing::error!(error = %e, "writing the IPv4 flat tables failed");
        }
    }

    /// Gives `vrf` a flat table of its IPv4 routes (and takes them out of the trie), or leaves
    /// it to the trie if the pool cannot hold it.
    pub(super) fn fib4_promote(&self, state: &mut State, vrf: u32) {
        if !matches!(state.vrfs.get(&vrf), Some(vrfs::VrfMode::Routes)) {
            return;
        }
        let routes = v4_routes(&state.routes, &state.nexthops, vrf);
        let dp = &self.dataplane;
        match state.fib4.promote(dp, |root| dp.fib4_set_root(vrf, root), vrf, &routes) {
            Ok(true) => self.trie_forget_v4(state, vrf),
            Ok(false) => tracing::warn!(
                vrf,
                routes = routes.len(),
                capacity = state.fib4.capacity(),
                used = state.fib4.chunks_used(),
                "the IPv4 flat tables' pool cannot hold this VRF: its IPv4 lookups use the trie (see --fib4-chunks)"
            ),
            Err(e) => {
                tracing::error!(vrf, error = %e, "building the IPv4 flat table failed: its IPv4 lookups use the trie")
            }
        }
    }

    /// Removes `vrf`'s IPv4 routes from the trie (its flat table has them).
    fn trie_forget_v4(&self, state: &State, vrf: u32) {
        for ((_, p), _) in state.routes.range((vrf, vrfs::min_prefix())..).take_while(|((v, _), _)| *v == vrf) {
            if p.is_ipv4() {
                // Absent already where it never went there (a VRF built before its routes).
                if let Err(e) = self.dataplane.remove_route(vrf, p) {
                    tracing::debug!(vrf, prefix = %p, error = %e, "removing a route from the trie failed");
                }
            }
        }
    }

    /// Points `vrf` back at the trie after its flat table could not follow, once the trie has
    /// every IPv4 route of the VRF.
    pub(super) fn fib4_give_up(&self, state: &mut State, vrf: u32, why: &fib4::Fib4Error) {
        let routes: Vec<(u32, Prefix, u32)> = state
            .routes
            .range((vrf, vrfs::min_prefix())..)
            .take_while(|((v, _), _)| *v == vrf)
            .filter(|((_, p), _)| p.is_ipv4())
            .filter_map(|((_, p), e)| Some((vrf, *p, state.nexthops.get(&e.nexthop)?.slot)))
            .collect();
        if let Err((_, e)) = self.dataplane.insert_routes(&routes) {
            tracing::error!(vrf, error = %e, "the VRF's flat table is full and its trie refused the routes: some IPv4 routes of this VRF are not forwarded");
            return;
        }
        tracing::warn!(vrf, reason = %why, "IPv4 flat table left: the VRF's IPv4 lookups use the trie until the pool has room");
        let dp = &self.dataplane;
        if let Err(e) = state.fib4.give_up(dp, |root| dp.fib4_set_root(vrf, root), vrf) {
            tracing::error!(vrf, error = %e, "pointing the VRF back at its trie failed");
        }
    }
}

/// An IPv4 prefix as the flat tables take it.
pub(super) fn v4_prefix(prefix: &Prefix) -> Option<V4Prefix> {
    match prefix.addr() {
        IpAddr::V4(a) => Some((u32::from(a), prefix.len())),
        IpAddr::V6(_) => None,
    }
}

/// `vrf`'s IPv4 routes: (prefix, next-hop slot).
pub(super) fn v4_routes(
    routes: &std::collections::BTreeMap<(u32, Prefix), RouteEntry>,
    nexthops: &std::collections::BTreeMap<u32, nexthops::NextHopEntry>,
    vrf: u32,
) -> Vec<(V4Prefix, u32)> {
    routes
        .range((vrf, vrfs::min_prefix())..)
        .take_while(|((v, _), _)| *v == vrf)
        .filter_map(|((_, p), e)| Some((v4_prefix(p)?, nexthops.get(&e.nexthop)?.slot)))
        .collect()
}

/// The longest route of `vrf` shorter than `prefix` that covers it: (length, next-hop slot).
fn cover(state: &State, vrf: u32, (addr, len): V4Prefix) -> Option<(u8, u32)> {
    (0..len).rev().find_map(|l| {
        let p = Prefix::containing(IpAddr::V4(std::net::Ipv4Addr::from(addr)), l);
        let e = state.routes.get(&(vrf, p))?;
        Some((l, state.nexthops.get(&e.nexthop)?.slot))
    })
}

/// An `AddRoutes` batch checked against the state.
struct CheckedRoutes {
    /// The valid routes, and each one's index in the request (empty: the same as in `batch`,
    /// no entry failed before the last valid one).
    batch: Vec<RouteSpec>,
    index: Vec<usize>,
    /// New routes per address family (as `State::route_counts`).
    new: [u64; 2],
    /// Per route, its next hop's slot and the entry it replaces.
    slots: Vec<u32>,
    existing: Vec<Option<RouteEntry>>,
    /// The VRFs it names.
    vrfs: BTreeSet<u32>,
    /// Some route is new or points at another next hop.
    changed: bool,
}

impl CheckedRoutes {
    /// The index in the request of valid route `k`.
    fn request_index(&self, k: usize) -> usize {
        if self.index.is_empty() {
            k
        } else {
            self.index[k]
        }
    }
}

/// A trie write of an `AddRoutes` batch and what undoes it.
struct TrieWrite {
    /// The route's index in the request.
    index: usize,
    vrf: u32,
    prefix: Prefix,
    nexthop_slot: u32,
    /// The entry it replaces put back, or its removal.
    undo: KernelOp,
}

/// Everything an `AddRoutes` batch writes, computed before the first write.
struct AddRoutesPlan {
    routes: CheckedRoutes,
    /// IPv6 routes, and IPv4 routes of VRFs without a flat table.
    trie: Vec<TrieWrite>,
    /// IPv4 records (every changed IPv4 route has one), and what undoes storing them.
    records: Vec<(u32, RouteRecord4)>,
    records_undo: Vec<KernelOp>,
    /// Per route, its record slot ([`NO_RECORD`]: unchanged or IPv6).
    record_of: Vec<u32>,
    /// Record slots allocated for the batch, given back if it fails.
    fresh_records: Vec<u32>,
    /// The records' high-water mark the kernel needs.
    mark: u32,
    /// What the flat tables get after the batch: (VRF, prefix, next-hop slot), and the VRFs
    /// whose IPv4 routes changed.
    flat: Vec<(u32, V4Prefix, u32)>,
    touched: BTreeSet<u32>,
}

/// Checks each route of an `AddRoutes` batch against the state and the batch before it (a route
/// that exists already is replaced or refused as `on_existing` says); the failed ones go to
/// `failures`, the valid ones are returned. Nothing is changed.
fn check_routes(
    state: &State,
    batch: impl IntoIterator<Item = Entry<RouteSpec>>,
    on_existing: OnExisting,
    failures: &mut Failures,
) -> CheckedRoutes {
    let batch = batch.into_iter();
    let size = batch.size_hint().0;
    let mut in_batch = HashSet::with_capacity(size);
    let mut valid = Vec::with_capacity(size);
    // Filled only once an entry failed: until then a valid route's index is its position.
    let mut index = Vec::new();
    let mut slots = Vec::with_capacity(size);
    let mut existing = Vec::with_capacity(size);
    let mut cache = RouteCheck::default();
    let (mut changed, mut new) = (false, [0u64; 2]);
    let mut entries = 0;
    for (i, r) in batch.enumerate() {
        entries += 1;
        let checked = r.and_then(|r| {
            // The key is the first entry's whatever becomes of it: which of two writes of one
            // route the caller meant is not for the server to guess.
            let repeated = !in_batch.insert((r.vrf, r.prefix));
            check_route(state, i, &r, repeated, on_existing, &mut cache).map(|(slot, before)| (r, slot, before))
        });
        match checked {
            Ok((r, slot, before)) => {
                changed |= before.map(|e| e.nexthop) != Some(r.nexthop);
                if before.is_none() {
                    new[family(&r.prefix)] += 1;
                }
                if !index.is_empty() || !failures.failed.is_empty() {
                    if index.is_empty() {
                        index.extend(0..valid.len());
                    }
                    index.push(i);
                }
                valid.push(r);
                slots.push(slot);
                existing.push(before);
            }
            Err(e) => failures.push(i, e),
        }
    }
    failures.entries += entries;
    CheckedRoutes { batch: valid, index, slots, existing, new, vrfs: cache.vrfs, changed }
}

/// What checking a batch's routes remembers from one to the next: batches name a handful of
/// VRFs and next hops, so the last ones found are kept.
#[derive(Default)]
struct RouteCheck {
    vrf_ok: Option<u32>,
    vrfs: BTreeSet<u32>,
    last_nh: Option<(u32, u32)>,
}

/// Checks route `i` of an `AddRoutes` batch (`repeated`: an earlier entry names the same
/// route): its next hop's slot and the entry it replaces. Allocates nothing when it is valid.
fn check_route(
    state: &State,
    i: usize,
    r: &RouteSpec,
    repeated: bool,
    on_existing: OnExisting,
    cache: &mut RouteCheck,
) -> Result<(u32, Option<RouteEntry>), DomainError> {
    if cache.vrf_ok != Some(r.vrf) {
        match state.vrfs.get(&r.vrf) {
            None => return Err(vrfs::not_found(r.vrf).at(format!("routes[{i}].vrf"))),
            Some(vrfs::VrfMode::KernelFib { .. }) => {
                return Err(DomainError::FailedPrecondition(format!(
                    "vrf {} forwards by the kernel's FIB: add its routes with `ip route`",
                    r.vrf
                ))
                .at(format!("routes[{i}].vrf")))
            }
            Some(vrfs::VrfMode::Routes) => {
                cache.vrf_ok = Some(r.vrf);
                cache.vrfs.insert(r.vrf);
            }
        }
    }
    let slot = match cache.last_nh {
        Some((id, slot)) if id == r.nexthop => slot,
        _ => {
            let nh = state
                .nexthops
                .get(&r.nexthop)
                .ok_or_else(|| nexthops::not_found(r.nexthop).at(format!("routes[{i}].next_hop")))?;
            cache.last_nh = Some((r.nexthop, nh.slot));
            nh.slot
        }
    };
    let before = state.routes.get(&(r.vrf, r.prefix)).copied();
    if (before.is_some() && on_existing == OnExisting::Refuse) || repeated {
        return Err(DomainError::AlreadyExists { kind: "route", name: format!("{} in vrf {}", r.prefix, r.vrf) }
            .at(format!("routes[{i}]")));
    }
    Ok((slot, before))
}

/// RESOURCE_EXHAUSTED if the new routes of a checked batch do not fit: a failure of the batch
/// as a whole, not of the entries past the limit.
fn check_route_capacity(state: &State, checked: &CheckedRoutes) -> Result<(), DomainError> {
    let cap = u64::from(dataplane_common::MAX_ROUTES);
    if state.route_counts.iter().zip(checked.new).any(|(have, new)| have + new > cap) {
        return Err(DomainError::Exhausted {
            what: "routes per address family",
            capacity: dataplane_common::MAX_ROUTES,
        });
    }
    Ok(())
}

/// Plans the writes of a checked `AddRoutes` batch: everything but unchanged replays. IPv6
/// routes, and IPv4 routes of VRFs without a flat table, go to the tries; every IPv4 route gets
/// its record (slots allocated here); the flat tables follow. The kernel is not touched.
fn plan_add_routes(
    state: &mut State,
    routes: CheckedRoutes,
    record_capacity: impl Fn() -> u32,
) -> Result<AddRoutesPlan, DomainError> {
    let (batch, existing) = (&routes.batch, &routes.existing);
    let writes: Vec<usize> =
        (0..batch.len()).filter(|&i| existing[i].map(|e| e.nexthop) != Some(batch[i].nexthop)).collect();
    let old_slot = |old: &RouteEntry| state.nexthops[&old.nexthop].slot;
    let in_trie = |r: &RouteSpec| !r.prefix.is_ipv4() || !state.fib4.is_flat(r.vrf);
    let trie = writes
        .iter()
        .filter(|&&i| in_trie(&batch[i]))
        .map(|&i| {
            let (vrf, prefix) = (batch[i].vrf, batch[i].prefix);
            let undo = match &existing[i] {
                Some(old) => KernelOp::InsertRoute { vrf, prefix, nexthop_slot: old_slot(old) },
                None => KernelOp::RemoveRoute { vrf, prefix },
            };
            TrieWrite { index: routes.request_index(i), vrf, prefix, nexthop_slot: routes.slots[i], undo }
        })
        .collect();
    let flat = writes
        .iter()
        .filter(|&&i| !in_trie(&batch[i]))
        .filter_map(|&i| v4_prefix(&batch[i].prefix).map(|p| (batch[i].vrf, p, routes.slots[i])))
        .collect();
    let touched = writes.iter().filter(|&&i| batch[i].prefix.is_ipv4()).map(|&i| batch[i].vrf).collect();
    let mut records = Vec::new();
    let mut replaced = Vec::new();
    let mut record_of = vec![NO_RECORD; batch.len()];
    let mut fresh_records = Vec::new();
    for &i in &writes {
        let r = &batch[i];
        let Some(addr) = v4_addr(&r.prefix) else { continue };
        let record = |nexthop| RouteRecord4 {
            vrf: r.vrf,
            addr,
            prefix_len: r.prefix.len(),
            _pad: [0; 2],
            flags: RECORD_VALID,
            nexthop,
        };
        let slot = match &existing[i] {
            Some(old) => {
                replaced.push((old.record, record(old_slot(old))));
                old.record
            }
            None => match state.route4_slots.alloc() {
                Some(s) => {
                    fresh_records.push(s);
                    s
                }
                None => {
                    // Cannot happen while the route count is checked; refused cleanly anyway.
                    for s in fresh_records.into_iter().rev() {
                        state.route4_slots.unalloc(s);
                    }
                    return Err(DomainError::Exhausted { what: "IPv4 route records", capacity: record_capacity() });
                }
            },
        };
        record_of[i] = slot;
        records.push((slot, record(routes.slots[i])));
    }
    let mut records_undo = Vec::new();
    if !replaced.is_empty() {
        records_undo.push(KernelOp::Route4Store(replaced));
    }
    if !fresh_records.is_empty() {
        records_undo.push(KernelOp::Route4Clear(fresh_records.clone()));
    }
    let mark = state.route4_slots.mark();
    Ok(AddRoutesPlan { routes, trie, records, records_undo, record_of, fresh_records, mark, flat, touched })
}

/// Checks each route of a `DeleteRoutes` batch: it exists, and no earlier entry names it. The
/// failed ones go to `failures`; returns the valid ones and each one's index in the request.
fn check_deletes(
    state: &State,
    batch: impl IntoIterator<Item = Entry<(u32, Prefix)>>,
    failures: &mut Failures,
) -> (Vec<(u32, Prefix)>, Vec<usize>) {
    let batch = batch.into_iter();
    let size = batch.size_hint().0;
    let mut seen = HashSet::with_capacity(size);
    let (mut valid, mut index) = (Vec::with_capacity(size), Vec::with_capacity(size));
    for (i, key) in batch.enumerate() {
        failures.entries += 1;
        let checked = key.and_then(|key| {
            if !state.routes.contains_key(&key) {
                return Err(DomainError::NotFound {
                    kind: "route",
                    name: format!("{} in vrf {}", key.1, key.0),
                    detail: "",
                }
                .at(format!("routes[{i}]")));
            }
            if !seen.insert(key) {
                return Err(DomainError::invalid(format!("routes[{i}]"), "route listed twice"));
            }
            Ok(key)
        });
        match checked {
            Ok(key) => {
                valid.push(key);
                index.push(i);
            }
            Err(e) => failures.push(i, e),
        }
    }
    (valid, index)
}

/// Index into `State::route_counts`.
fn family(prefix: &Prefix) -> usize {
    usize::from(!prefix.is_ipv4())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{fake::FakeDataplane, ErrorKind, NewNextHop, NextHopSpec};

    fn domain() -> Domain<FakeDataplane> {
        let d = Domain::new(FakeDataplane::default());
        d.add_nexthops(vec![
            NewNextHop { id: 1, spec: NextHopSpec::Discard },
            NewNextHop { id: 2, spec: NextHopSpec::Receive },
        ])
        .unwrap();
        d
    }

    fn r(vrf: u32, p: &str, nh: u32) -> RouteSpec {
        RouteSpec { vrf, prefix: p.parse().unwrap(), nexthop: nh }
    }

    #[test]
    fn add_routes_bad_entry_changes_nothing_and_names_index() {
        let d = domain();
        let e = d.add_routes(vec![r(0, "192.0.2.0/24", 1), r(0, "198.51.100.0/24", 9)]).unwrap_err();
        assert_eq!(e.to_string(), "routes[1].next_hop: next hop 9 not found");
        assert!(d.list_routes(None, None).is_empty());
        assert!(d.dataplane().routes().is_empty(), "no kernel write");
        let e = d.add_routes(vec![r(5, "192.0.2.0/24", 1)]).unwrap_err();
        assert_eq!((e.kind(), e.to_string()), (ErrorKind::NotFound, "routes[0].vrf: vrf 5 not found".into()));
        let e = d.add_routes(vec![r(0, "192.0.2.0/24", 1), r(0, "192.0.2.0/24", 2)]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    }

    #[test]
    fn add_routes_kernel_failure_midway_rolls_back() {
        let d = domain();
        d.dataplane().fail_route_insert_after(2);
        let batch = vec![
            r(0, "192.0.2.0/24", 1),
            r(0, "2001:db8::/32", 1),
            r(0, "2001:db8:1::/48", 1),
            r(0, "2001:db8:2::/48", 2),
        ];
        let e = d.add_routes(batch).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Internal);
        assert!(
            d.dataplane().kernel_routes().is_empty(),
            "the two inserted routes were removed again, no IPv4 record written"
        );
        assert!(d.list_routes(None, None).is_empty());
        assert_eq!(d.lookup_route(0, "192.0.2.1".parse().unwrap()).unwrap(), None, "nor anything in the flat table");
    }

    #[test]
    fn delete_routes_unknown_not_found_and_refcounts_follow() {
        let d = domain();
        d.add_routes(vec![r(0, "192.0.2.0/24", 1)]).unwrap();
        assert!(matches!(d.delete_nexthops(&[1]).unwrap_err().kind(), ErrorKind::FailedPrecondition));
        let e =
            d.delete_routes(&[(0, "192.0.2.0/24".parse().unwrap()), (0, "192.0.2.0/25".parse().unwrap())]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(d.list_routes(None, None).len(), 1, "unchanged");
        d.delete_routes(&[(0, "192.0.2.0/24".parse().unwrap())]).unwrap();
        d.delete_nexthops(&[1]).unwrap();
    }

    #[test]
    fn list_routes_filters_by_vrf_and_prefix() {
        let d = domain();
        d.add_vrf(2, crate::domain::VrfMode::Routes).unwrap();
        d.add_routes(vec![
            r(0, "192.0.2.0/24", 1),
            r(0, "192.0.2.128/25", 1),
            r(2, "192.0.2.0/24", 2),
            r(0, "2001:db8::/48", 2),
        ])
        .unwrap();
        assert_eq!(d.list_routes(Some(2), None), vec![r(2, "192.0.2.0/24", 2)]);
        let within: Prefix = "192.0.2.128/25".parse().unwrap();
        assert_eq!(d.list_routes(Some(0), Some(within)), vec![r(0, "192.0.2.128/25", 1)]);
        assert_eq!(d.list_routes(None, Some("2001:db8::/32".parse().unwrap())).len(), 1);
    }

    #[test]
    fn add_routes_beyond_flat_pool_falls_back_to_trie_then_flat_again_after_delete() {
        use crate::domain::Ipv4Lookup;
        let d = Domain::new(FakeDataplane::with_fib4_chunks(256 + 4));
        d.add_nexthops(vec![
            NewNextHop { id: 1, spec: NextHopSpec::Discard },
            NewNextHop { id: 2, spec: NextHopSpec::Receive },
        ])
        .unwrap();
        let mode = |d: &Domain<FakeDataplane>| d.list_vrfs()[0].ipv4_lookup;
        let at = |d: &Domain<FakeDataplane>, a: &str| {
            d.lookup_route(0, a.parse().unwrap()).unwrap().map(|r| (r.prefix.to_string(), r.nexthop))
        };
        // Three /16s with longer prefixes and one /24 with a longer one: the pool exactly.
        d.add_routes(vec![
            r(0, "192.0.2.0/24", 1),
            r(0, "198.51.100.0/24", 1),
            r(0, "203.0.113.0/24", 1),
            r(0, "203.0.113.128/25", 2),
        ])
        .unwrap();
        assert_eq!(mode(&d), Some(Ipv4Lookup::Flat { chunks: 260 }));
        assert_eq!(d.dataplane().fib4_roots.lock().unwrap().get(&0), Some(&1));
        // One chunk more than there is: VRF 0 is looked up in its trie, and answers the same.
        d.add_routes(vec![r(0, "198.51.100.128/25", 2)]).unwrap();
        assert_eq!(mode(&d), Some(Ipv4Lookup::Trie));
        assert!(d.dataplane().fib4_roots.lock().unwrap().is_empty(), "FIB4_VRFS[0] cleared");
        assert_eq!(at(&d, "198.51.100.200"), Some(("198.51.100.128/25".into(), 2)));
        assert_eq!(at(&d, "203.0.113.1"), Some(("203.0.113.0/24".into(), 1)));
        // A delete makes room: back to a flat table, built from every route.
        d.delete_routes(&[(0, "203.0.113.128/25".parse().unwrap())]).unwrap();
        assert_eq!(mode(&d), Some(Ipv4Lookup::Flat { chunks: 260 }));
        assert_eq!(at(&d, "198.51.100.200"), Some(("198.51.100.128/25".into(), 2)));
        assert_eq!(at(&d, "203.0.113.200"), Some(("203.0.113.0/24".into(), 1)));
        assert_eq!(at(&d, "10.1.1.1"), None);
    }

    #[test]
    fn lookup_route_longest_prefix_from_dataplane() {
        let d = domain();
        d.add_routes(vec![r(0, "192.0.2.0/24", 1), r(0, "192.0.2.128/25", 2)]).unwrap();
        let hit = d.lookup_route(0, "192.0.2.200".parse().unwrap()).unwrap().unwrap();
        assert_eq!(hit, r(0, "192.0.2.128/25", 2));
        assert_eq!(d.lookup_route(0, "198.51.100.1".parse().unwrap()).unwrap(), None);
        assert_eq!(d.lookup_route(3, "192.0.2.1".parse().unwrap()).unwrap_err().kind(), ErrorKind::NotFound);
    }

    /// VRF 0 with its flat table, an IPv4 and an IPv6 route.
    fn with_routes() -> Domain<FakeDataplane> {
        let d = domain();
        d.add_routes(vec![r(0, "192.0.2.0/24", 1), r(0, "2001:db8::/32", 1), r(0, "2001:db8:5::/48", 2)]).unwrap();
        d
    }

    #[test]
    fn add_routes_kernel_failure_at_every_write_changes_nothing() {
        // Trie writes (a replaced and a new IPv6 route), then the records (a replaced one and a
        // new one, which raises the high-water mark).
        let batch = || {
            vec![
                r(0, "2001:db8::/32", 2),
                r(0, "2001:db8:1::/48", 1),
                r(0, "192.0.2.0/24", 2),
                r(0, "198.51.100.0/24", 1),
                r(0, "2001:db8:5::/48", 2),
            ]
        };
        let errors = crate::domain::txn::testing::fail_at_every_write(with_routes, |d| {
            d.add_routes_with(batch(), crate::domain::OnExisting::Replace)
        });
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors[0].starts_with("routes[0]: dataplane:"), "{}", errors[0]);
        assert!(errors[1].starts_with("routes[1]: dataplane:"), "{}", errors[1]);
        assert!(errors[2..].iter().all(|e| e.starts_with("routes: dataplane:")), "{errors:?}");
    }

    #[test]
    fn delete_routes_kernel_failure_at_every_write_changes_nothing() {
        let errors = crate::domain::txn::testing::fail_at_every_write(with_routes, |d| {
            d.delete_routes(&[
                (0, "2001:db8:5::/48".parse().unwrap()),
                (0, "192.0.2.0/24".parse().unwrap()),
                (0, "2001:db8::/32".parse().unwrap()),
            ])
        });
        assert_eq!(errors.len(), 2, "the IPv6 routes are the batch's trie writes: {errors:?}");
        assert!(errors[1].starts_with("routes[2]: dataplane:"), "{}", errors[1]);
    }
}
