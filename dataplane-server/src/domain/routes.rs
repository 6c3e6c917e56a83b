//! Routes: (VRF, prefix) -> next hop, written into the per-family LPM tries the XDP program reads.
//! Batches are all or nothing: everything is validated before the first kernel write, and a
//! kernel failure part-way undoes the writes already made.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::IpAddr,
};

use super::{
    fib4::{self, V4Prefix},
    nexthops, vrfs, Domain, DomainError, State,
};
use crate::{dataplane::Dataplane, net::Prefix};

/// A validated route of an `AddRoutes` batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    pub vrf: u32,
    pub prefix: Prefix,
    pub nexthop: u32,
}

/// A route as listed or looked up.
pub type RouteView = RouteSpec;

impl<D: Dataplane> Domain<D> {
    /// Adds a batch of routes, all or nothing.
    pub fn add_routes(&self, batch: Vec<RouteSpec>) -> Result<u64, DomainError> {
        self.add_routes_with(batch, false)
    }

    /// [`Self::add_routes`]; with `replace` (and always during a resync) a route that exists
    /// already is kept, or pointed at its new next hop in place, instead of refused. A batch
    /// that writes nothing leaves the generation alone.
    pub fn add_routes_with(&self, batch: Vec<RouteSpec>, replace: bool) -> Result<u64, DomainError> {
        let mut state = self.lock();
        let resync = state.resync.is_some() || replace;
        let mut in_batch = HashSet::with_capacity(batch.len());
        let mut slots = Vec::with_capacity(batch.len());
        let mut existing = Vec::with_capacity(batch.len());
        let (mut v4, mut v6) = (0u64, 0u64);
        // Batches name a handful of VRFs and next hops: the last one checked is kept.
        let mut vrf_ok = None;
        let mut last_nh: Option<(u32, u32)> = None;
        for (i, r) in batch.iter().enumerate() {
            if vrf_ok != Some(r.vrf) {
                match state.vrfs.get(&r.vrf) {
                    None => return Err(vrfs::not_found(r.vrf).at(format!("routes[{i}].vrf"))),
                    Some(vrfs::VrfMode::KernelFib { .. }) => {
                        return Err(DomainError::FailedPrecondition(format!(
                            "vrf {} forwards by the kernel's FIB: add its routes with `ip route`",
                            r.vrf
                        ))
                        .at(format!("routes[{i}].vrf")))
                    }
                    Some(vrfs::VrfMode::Routes) => vrf_ok = Some(r.vrf),
                }
            }
            let slot = match last_nh {
                Some((id, slot)) if id == r.nexthop => slot,
                _ => {
                    let nh = state.nexthops.get(&r.nexthop).ok_or_else(|| nexthops::not_found(r.nexthop).at(format!("routes[{i}].next_hop")))?;
                    last_nh = Some((r.nexthop, nh.slot));
                    nh.slot
                }
            };
            let before = state.routes.get(&(r.vrf, r.prefix)).copied();
            if (before.is_some() && !resync) || !in_batch.insert((r.vrf, r.prefix)) {
                return Err(DomainError::AlreadyExists { kind: "route", name: format!("{} in vrf {}", r.prefix, r.vrf) }
                    .at(format!("routes[{i}]")));
            }
            if before.is_none() {
                if r.prefix.is_ipv4() { v4 += 1 } else { v6 += 1 }
            }
            slots.push(slot);
            existing.push(before);
        }
        drop(in_batch);
        let [have4, have6] = state.route_counts;
        let cap = u64::from(dataplane_common::MAX_ROUTES);
        if have4 + v4 > cap || have6 + v6 > cap {
            return Err(DomainError::Exhausted { what: "routes per address family", capacity: dataplane_common::MAX_ROUTES });
        }
        // Everything but unchanged replays, in as few kernel calls as the dataplane can.
        let writes: Vec<usize> = (0..batch.len()).filter(|&i| existing[i] != Some(batch[i].nexthop)).collect();
        let entries: Vec<(u32, Prefix, u32)> = writes.iter().map(|&i| (batch[i].vrf, batch[i].prefix, slots[i])).collect();
        if let Err((done, e)) = self.dataplane.insert_routes(&entries) {
            for &w in &done {
                let (i, r) = (writes[w], &batch[writes[w]]);
                match existing[i] {
                    Some(old) => {
                        let _ = self.dataplane.insert_route(r.vrf, &r.prefix, state.nexthops[&old].slot);
                    }
                    None => {
                        let _ = self.dataplane.remove_route(r.vrf, &r.prefix);
                    }
                }
            }
            // The first route not written is the one the kernel refused.
            let failed = writes.iter().enumerate().find(|(w, _)| !done.contains(w)).map(|(_, i)| *i).unwrap_or(0);
            return Err(DomainError::from(e).at(format!("routes[{failed}]")));
        }
        let flat: Vec<(u32, V4Prefix, u32)> =
            writes.iter().filter_map(|&i| v4_prefix(&batch[i].prefix).map(|p| (batch[i].vrf, p, slots[i]))).collect();
        // Next hops' route counts, gathered per next hop and applied once.
        let mut uses: HashMap<u32, i64> = HashMap::new();
        for (r, before) in batch.into_iter().zip(existing) {
            match before {
                Some(old) => *uses.entry(old).or_default() -= 1,
                None => state.route_counts[family(&r.prefix)] += 1,
            }
            state.routes.insert((r.vrf, r.prefix), r.nexthop);
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
        self.fib4_apply(&mut state, &flat, &[]);
        if !writes.is_empty() {
            self.bump(&mut state);
        }
        Ok(state.generation)
    }

    pub fn delete_routes(&self, batch: &[(u32, Prefix)]) -> Result<u64, DomainError> {
        let mut state = self.lock();
        let mut seen = BTreeSet::new();
        for (i, key) in batch.iter().enumerate() {
            if !state.routes.contains_key(key) {
                return Err(DomainError::NotFound { kind: "route", name: format!("{} in vrf {}", key.1, key.0), detail: "" }
                    .at(format!("routes[{i}]")));
            }
            if !seen.insert(*key) {
                return Err(DomainError::invalid(format!("routes[{i}]"), "route listed twice"));
            }
        }
        for (i, (vrf, prefix)) in batch.iter().enumerate() {
            if let Err(e) = self.dataplane.remove_route(*vrf, prefix) {
                for (v, p) in &batch[..i] {
                    let slot = state.nexthops[&state.routes[&(*v, *p)]].slot;
                    let _ = self.dataplane.insert_route(*v, p, slot);
                }
                return Err(DomainError::from(e).at(format!("routes[{i}]")));
            }
        }
        for key in batch {
            if let Some(nh) = state.routes.remove(key) {
                state.route_counts[family(&key.1)] -= 1;
                if let Some(e) = state.nexthops.get_mut(&nh) {
                    e.routes -= 1;
                }
            }
        }
        let flat: Vec<(u32, V4Prefix)> = batch.iter().filter_map(|(vrf, p)| v4_prefix(p).map(|p| (*vrf, p))).collect();
        self.fib4_apply(&mut state, &[], &flat);
        self.bump(&mut state);
        Ok(state.generation)
    }

    /// Routes, optionally of one VRF and inside one prefix, in (VRF, prefix) order.
    pub fn list_routes(&self, vrf: Option<u32>, within: Option<Prefix>) -> Vec<RouteView> {
        let state = self.lock();
        let iter: Box<dyn Iterator<Item = (&(u32, Prefix), &u32)>> = match vrf {
            Some(v) => Box::new(state.routes.range((v, vrfs::min_prefix())..).take_while(move |((rv, _), _)| *rv == v)),
            None => Box::new(state.routes.iter()),
        };
        iter.filter(|((_, p), _)| within.is_none_or(|w| w.covers(p)))
            .map(|(&(vrf, prefix), &nexthop)| RouteSpec { vrf, prefix, nexthop })
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
    /// Brings the IPv4 flat tables in line with routes just written to the tries and to
    /// `state.routes`: `puts` (VRF, prefix, next-hop slot) added or re-pointed, `removes` gone.
    /// The tries already hold the batch, so whatever happens here the routes are right: a VRF
    /// whose table cannot follow (pool full, or a kernel error) is pointed back at its trie.
    pub(super) fn fib4_apply(&self, state: &mut State, puts: &[(u32, V4Prefix, u32)], removes: &[(u32, V4Prefix)]) {
        let dp = &self.dataplane;
        let mut touched = BTreeSet::new();
        for &(vrf, prefix, slot) in puts {
            touched.insert(vrf);
            if !state.fib4.is_flat(vrf) {
                continue;
            }
            if let Err(e) = state.fib4.insert(dp, vrf, prefix, slot) {
                self.fib4_give_up(state, vrf, &e);
            }
        }
        for &(vrf, prefix) in removes {
            touched.insert(vrf);
            if state.fib4.is_flat(vrf) {
                let cover = cover(state, vrf, prefix);
                state.fib4.remove(vrf, prefix, cover);
            }
        }
        // A VRF never tried yet (the default VRF of a fresh dataplane): build its table now.
        for vrf in touched {
            if state.fib4.lookup_mode(vrf).is_none() {
                self.fib4_promote(state, vrf);
            }
        }
        // Removals free chunks: a VRF the pool could not hold may fit now.
        if (!removes.is_empty() || puts.is_empty()) && state.fib4.overflowed().next().is_some() {
            let (fib, routes, nexthops) = (&mut state.fib4, &state.routes, &state.nexthops);
            match fib.retry_overflowed(dp, |vrf, root| dp.fib4_set_root(vrf, root), |vrf| v4_routes(routes, nexthops, vrf)) {
                Ok(promoted) => {
                    for vrf in promoted {
                        tracing::info!(vrf, "IPv4 flat table built: the pool has room again");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "rebuilding IPv4 flat tables failed"),
            }
        }
        if let Err(e) = state.fib4.flush(dp) {
            tracing::error!(error = %e, "writing the IPv4 flat tables failed");
        }
    }

    /// Gives `vrf` a flat table of its IPv4 routes, or leaves it to the trie if the pool cannot
    /// hold it.
    pub(super) fn fib4_promote(&self, state: &mut State, vrf: u32) {
        if !matches!(state.vrfs.get(&vrf), Some(vrfs::VrfMode::Routes)) {
            return;
        }
        let routes = v4_routes(&state.routes, &state.nexthops, vrf);
        let dp = &self.dataplane;
        match state.fib4.promote(dp, |root| dp.fib4_set_root(vrf, root), vrf, &routes) {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                vrf,
                routes = routes.len(),
                capacity = state.fib4.capacity(),
                used = state.fib4.chunks_used(),
                "the IPv4 flat tables' pool cannot hold this VRF: its IPv4 lookups use the trie (see --fib4-chunks)"
            ),
            Err(e) => tracing::error!(vrf, error = %e, "building the IPv4 flat table failed: its IPv4 lookups use the trie"),
        }
    }

    fn fib4_give_up(&self, state: &mut State, vrf: u32, why: &fib4::Fib4Error) {
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
    routes: &std::collections::BTreeMap<(u32, Prefix), u32>,
    nexthops: &std::collections::BTreeMap<u32, nexthops::NextHopEntry>,
    vrf: u32,
) -> Vec<(V4Prefix, u32)> {
    routes
        .range((vrf, vrfs::min_prefix())..)
        .take_while(|((v, _), _)| *v == vrf)
        .filter_map(|((_, p), id)| Some((v4_prefix(p)?, nexthops.get(id)?.slot)))
        .collect()
}

/// The longest route of `vrf` shorter than `prefix` that covers it: (length, next-hop slot).
fn cover(state: &State, vrf: u32, (addr, len): V4Prefix) -> Option<(u8, u32)> {
    (0..len).rev().find_map(|l| {
        let p = Prefix::containing(IpAddr::V4(std::net::Ipv4Addr::from(addr)), l);
        let id = state.routes.get(&(vrf, p))?;
        Some((l, state.nexthops.get(id)?.slot))
    })
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
        let e = d.add_routes(vec![r(0, "192.0.2.0/24", 1), r(0, "192.0.2.0/25", 1), r(0, "2001:db8::/32", 2)]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Internal);
        assert!(d.dataplane().routes().is_empty(), "the two inserted routes were removed again");
        assert!(d.list_routes(None, None).is_empty());
    }

    #[test]
    fn delete_routes_unknown_not_found_and_refcounts_follow() {
        let d = domain();
        d.add_routes(vec![r(0, "192.0.2.0/24", 1)]).unwrap();
        assert!(matches!(d.delete_nexthops(&[1]).unwrap_err().kind(), ErrorKind::FailedPrecondition));
        let e = d.delete_routes(&[(0, "192.0.2.0/24".parse().unwrap()), (0, "192.0.2.0/25".parse().unwrap())]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(d.list_routes(None, None).len(), 1, "unchanged");
        d.delete_routes(&[(0, "192.0.2.0/24".parse().unwrap())]).unwrap();
        d.delete_nexthops(&[1]).unwrap();
    }

    #[test]
    fn list_routes_filters_by_vrf_and_prefix() {
        let d = domain();
        d.add_vrf(2, crate::domain::VrfMode::Routes).unwrap();
        d.add_routes(vec![r(0, "192.0.2.0/24", 1), r(0, "192.0.2.128/25", 1), r(2, "192.0.2.0/24", 2), r(0, "2001:db8::/48", 2)]).unwrap();
        assert_eq!(d.list_routes(Some(2), None), vec![r(2, "192.0.2.0/24", 2)]);
        let within: Prefix = "192.0.2.128/25".parse().unwrap();
        assert_eq!(d.list_routes(Some(0), Some(within)), vec![r(0, "192.0.2.128/25", 1)]);
        assert_eq!(d.list_routes(None, Some("2001:db8::/32".parse().unwrap())).len(), 1);
    }

    #[test]
    fn add_routes_beyond_flat_pool_falls_back_to_trie_then_flat_again_after_delete() {
        use crate::domain::Ipv4Lookup;
        let d = Domain::new(FakeDataplane::with_fib4_chunks(256 + 4));
        d.add_nexthops(vec![NewNextHop { id: 1, spec: NextHopSpec::Discard }, NewNextHop { id: 2, spec: NextHopSpec::Receive }]).unwrap();
        let mode = |d: &Domain<FakeDataplane>| d.list_vrfs()[0].ipv4_lookup;
        let at = |d: &Domain<FakeDataplane>, a: &str| d.lookup_route(0, a.parse().unwrap()).unwrap().map(|r| (r.prefix.to_string(), r.nexthop));
        // Three /16s with longer prefixes and one /24 with a longer one: the pool exactly.
        d.add_routes(vec![r(0, "192.0.2.0/24", 1), r(0, "198.51.100.0/24", 1), r(0, "203.0.113.0/24", 1), r(0, "203.0.113.128/25", 2)]).unwrap();
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
}
