//! Routes on restart: the state file does not hold them; they are read back from the kernel's
//! route records and LPM tries, against the next hops and VRFs the file restored.

use std::net::IpAddr;

use crate::{
    dataplane::Dataplane,
    domain::{persist::RestoreReport, Domain, DomainError, State, VrfMode},
    net::Prefix,
};

impl<D: Dataplane> Domain<D> {
    /// Routes: IPv4 from their records, and from the trie where a record is missing (what an
    /// earlier build, or a crash between a trie write and its record, left); IPv6 from the
    /// trie. Those pointing at a next hop or VRF the file does not know were written by a batch
    /// that never completed, and go.
    pub(in crate::domain) fn restore_routes(
        &self,
        state: &mut State,
        report: &mut RestoreReport,
    ) -> Result<(), DomainError> {
        use crate::domain::routes::{RouteEntry, NO_RECORD};
        // A route's VRF the file did not know is adopted (the route forwards in it); one whose
        // next-hop slot no next hop holds forwards nothing (the slot is empty) and goes.
        let known = |state: &mut State, report: &mut RestoreReport, vrf: u32, slot: u32| {
            let id = state.nh_ids.get(&slot).copied()?;
            if !state.vrfs.contains_key(&vrf) {
                crate::domain::interfaces::restore::adopt_vrf(state, report, vrf, None);
            }
            matches!(state.vrfs.get(&vrf), Some(VrfMode::Routes)).then_some(id)
        };
        let mut stale = Vec::new();
        let mut used = Vec::new();
        for (slot, r) in self.dataplane.route4_records()? {
            let addr = std::net::Ipv4Addr::from(r.addr);
            let prefix = Prefix::containing(IpAddr::V4(addr), r.prefix_len.min(32));
            let fresh =
                prefix.addr() == IpAddr::V4(addr) && r.prefix_len <= 32 && !state.routes.contains_key(&(r.vrf, prefix));
            match known(state, report, r.vrf, r.nexthop).filter(|_| fresh) {
                Some(id) => {
                    state.routes.insert((r.vrf, prefix), RouteEntry { nexthop: id, record: slot });
                    used.push(slot);
                }
                None => {
                    stale.push(slot);
                    report.dropped.push(format!(
                        "route {prefix} in vrf {} (record {slot}): next-hop slot {} unknown",
                        r.vrf, r.nexthop
                    ));
                }
            }
        }
        let mark = used.iter().max().map_or(0, |m| m + 1);
        state.route4_slots =
            crate::domain::slots::MarkAllocator::restore(self.dataplane.route4_capacity(), mark, used.iter().copied());
        state.route4_mark = 0;
        for (vrf, prefix, slot) in self.dataplane.dump_routes()? {
            match known(state, report, vrf, slot) {
                Some(id) => {
                    // The trie's is the later write where both have the route.
                    let record = state.routes.get(&(vrf, prefix)).map_or(NO_RECORD, |e| e.record);
                    state.routes.insert((vrf, prefix), RouteEntry { nexthop: id, record });
                }
                None => {
                    self.dataplane.remove_route(vrf, &prefix)?;
                    report.dropped.push(format!("route {prefix} in vrf {vrf}: next-hop slot {slot} unknown"));
                }
            }
        }
        // Records for the IPv4 routes that had none, and the records' next hops where the trie
        // said otherwise.
        let mut records = Vec::new();
        let keys: Vec<(u32, Prefix)> = state.routes.keys().copied().collect();
        for key in keys {
            let (vrf, prefix) = key;
            let IpAddr::V4(a) = prefix.addr() else { continue };
            let e = state.routes[&key];
            let slot = match e.record {
                NO_RECORD => match state.route4_slots.alloc() {
                    Some(s) => s,
                    None => continue,
                },
                s => s,
            };
            state.routes.insert(key, RouteEntry { nexthop: e.nexthop, record: slot });
            let nh = state.nexthops[&e.nexthop].slot;
            records.push((
                slot,
                dataplane_common::RouteRecord4 {
                    vrf,
                    addr: a.octets(),
                    prefix_len: prefix.len(),
                    _pad: [0; 2],
                    flags: dataplane_common::route::RECORD_VALID,
                    nexthop: nh,
                },
            ));
        }
        self.dataplane.route4_clear(&stale)?;
        let mark = state.route4_slots.mark();
        self.dataplane.route4_reserve(mark)?;
        state.route4_mark = mark;
        self.dataplane.route4_store(&records)?;
        for (&(_, prefix), e) in &state.routes {
            state.route_counts[usize::from(!prefix.is_ipv4())] += 1;
            if let Some(nh) = state.nexthops.get_mut(&e.nexthop) {
                nh.routes += 1;
            }
        }
        Ok(())
    }

    /// The trie's IPv4 routes after the flat tables are settled: none for a VRF with a flat
    /// table, every one for a VRF without.
    pub(in crate::domain) fn restore_trie_v4(&self, state: &mut State) -> Result<(), DomainError> {
        let mut have: std::collections::HashMap<(u32, Prefix), u32> = self
            .dataplane
            .dump_routes()?
            .into_iter()
            .filter(|(_, p, _)| p.is_ipv4())
            .map(|(v, p, s)| ((v, p), s))
            .collect();
        let mut missing = Vec::new();
        for (&(vrf, prefix), e) in &state.routes {
            if !prefix.is_ipv4() || state.fib4.is_flat(vrf) {
                continue;
            }
            let slot = state.nexthops[&e.nexthop].slot;
            if have.remove(&(vrf, prefix)) != Some(slot) {
                missing.push((vrf, prefix, slot));
            }
        }
        self.dataplane.insert_routes(&missing).map_err(|(_, e)| DomainError::from(e))?;
        for ((vrf, prefix), _) in have {
            if state.fib4.is_flat(vrf) || !state.routes.contains_key(&(vrf, prefix)) {
                self.dataplane.remove_route(vrf, &prefix)?;
            }
        }
        Ok(())
    }
}
