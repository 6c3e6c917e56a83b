//! Controller resync (the OVS flow-restore-wait / round-id idea): after `begin_resync` the
//! controller replays the state it wants (replays of existing objects succeed and mark them,
//! changed ones are rewritten in place), and `end_resync` removes everything the replay did not
//! touch. Entries that stay are never removed or rewritten unchanged, so they keep forwarding.

use std::collections::HashSet;

use tracing::{info, warn};

use super::{Direction, Domain, DomainError, InterfaceName, NextHopSpec, PolicyName};
use crate::{dataplane::Dataplane, net::Prefix};

/// What a resync has replayed so far.
#[derive(Debug, Default)]
pub(super) struct Touched {
    pub vrfs: HashSet<u32>,
    pub interfaces: HashSet<InterfaceName>,
    pub nexthops: HashSet<u32>,
    pub routes: HashSet<(u32, Prefix)>,
    pub policies: HashSet<PolicyName>,
    pub attachments: HashSet<(InterfaceName, Direction)>,
}

/// What `end_resync` removed, and what it had to keep because something replayed still uses it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResyncReport {
    pub routes: u64,
    pub nexthops: u64,
    pub policies: u64,
    pub attachments: u64,
    pub interfaces: u64,
    pub vrfs: u64,
    /// Not replayed but still used by something that was (so kept), as "kind id".
    pub kept: Vec<String>,
    pub generation: u64,
}

impl<D: Dataplane> Domain<D> {
    /// Opens a resync (restarting one already open). Returns the generation.
    pub fn begin_resync(&self) -> u64 {
        let mut state = self.lock();
        if state.resync.is_some() {
            warn!("a resync was already open; starting over");
        }
        state.resync = Some(Touched::default());
        // VRF 0 always exists.
        if let Some(t) = state.resync.as_mut() {
            t.vrfs.insert(0);
        }
        info!(generation = state.generation, "resync begun");
        state.generation
    }

    /// Whether a resync is open.
    pub fn resync_open(&self) -> bool {
        self.lock().resync.is_some()
    }

    /// Closes the resync: removes every route, next hop, policy attachment, policy, interface and
    /// VRF not replayed since `begin_resync`, in that order (users before what they use).
    pub fn end_resync(&self) -> Result<ResyncReport, DomainError> {
        let (touched, routes, attachments) = {
            let mut state = self.lock();
            let Some(t) = state.resync.take() else {
                return Err(DomainError::FailedPrecondition("no resync is open (BeginResync first)".into()));
            };
            let routes: Vec<(u32, Prefix)> = state.routes.keys().filter(|k| !t.routes.contains(k)).copied().collect();
            let attachments: Vec<(InterfaceName, Direction)> =
                state.policy_attachments.keys().filter(|k| !t.attachments.contains(k)).cloned().collect();
            (t, routes, attachments)
        };
        let mut report = ResyncReport::default();
        if !routes.is_empty() {
            self.delete_routes(&routes)?;
            report.routes = routes.len() as u64;
        }
        // Groups before their members, so a member only a stale group used can go too.
        let (groups, plain): (Vec<u32>, Vec<u32>) = {
            let state = self.lock();
            state
                .nexthops
                .iter()
                .filter(|(id, _)| !touched.nexthops.contains(id))
                .map(|(id, e)| (*id, matches!(e.spec, NextHopSpec::Ecmp { .. })))
                .partition(|(_, ecmp)| *ecmp)
        }
        .map_pair();
        for id in groups.into_iter().chain(plain) {
            match self.delete_nexthops(&[id]) {
                Ok(_) => report.nexthops += 1,
                Err(e) => report.kept.push(format!("next hop {id} ({e})")),
            }
        }
        for (iface, dir) in attachments {
            if self.detach_policy(&iface, dir).is_ok() {
                report.attachments += 1;
            }
        }
        let (policies, interfaces, vrfs) = {
            let state = self.lock();
            (
                state.policies.keys().filter(|p| !touched.policies.contains(*p)).cloned().collect::<Vec<_>>(),
                state.interfaces.keys().filter(|i| !touched.interfaces.contains(*i)).cloned().collect::<Vec<_>>(),
                state.vrfs.keys().filter(|v| !touched.vrfs.contains(*v)).copied().collect::<Vec<_>>(),
            )
        };
        for p in policies {
            match self.delete_policy(&p) {
                Ok(_) => report.policies += 1,
                Err(e) => report.kept.push(format!("policy {p} ({e})")),
            }
        }
        for i in interfaces {
            match self.delete_interface(&i) {
                Ok(_) => report.interfaces += 1,
                Err(e) => report.kept.push(format!("interface {i} ({e})")),
            }
        }
        for v in vrfs {
            match self.delete_vrf(v) {
                Ok(_) => report.vrfs += 1,
                Err(e) => report.kept.push(format!("vrf {v} ({e})")),
            }
        }
        let state = self.lock();
        // Each removal above moved the generation already; a resync that removed nothing
        // changed nothing.
        report.generation = state.generation;
        drop(state);
        info!(
            routes = report.routes,
            nexthops = report.nexthops,
            policies = report.policies,
            interfaces = report.interfaces,
            vrfs = report.vrfs,
            kept = report.kept.len(),
            generation = report.generation,
            "resync ended; stale state removed"
        );
        Ok(report)
    }
}

trait MapPair {
    fn map_pair(self) -> (Vec<u32>, Vec<u32>);
}

impl MapPair for (Vec<(u32, bool)>, Vec<(u32, bool)>) {
    fn map_pair(self) -> (Vec<u32>, Vec<u32>) {
        (self.0.into_iter().map(|(id, _)| id).collect(), self.1.into_iter().map(|(id, _)| id).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        dataplane::XdpMode,
        domain::{fake::FakeDataplane, AddInterface, NewNextHop, OnExisting, RouteSpec},
    };

    fn route(p: &str, nh: u32) -> RouteSpec {
        RouteSpec { vrf: 0, prefix: p.parse().unwrap(), nexthop: nh }
    }

    #[test]
    fn resync_replaying_half_the_routes_leaves_exactly_that_half_untouched_in_kernel() {
        let d = Domain::new(FakeDataplane::with_links(&[("eth0", 7)]));
        d.add_interface(AddInterface { name: InterfaceName::parse("n", "eth0").unwrap(), mode: XdpMode::Auto, vrf: 0 })
            .unwrap();
        d.add_nexthops(vec![
            NewNextHop { id: 1, spec: NextHopSpec::Discard },
            NewNextHop { id: 2, spec: NextHopSpec::Receive },
        ])
        .unwrap();
        let all: Vec<RouteSpec> = (0..10).map(|i| route(&format!("198.51.100.{}/32", i), 1 + i % 2)).collect();
        d.add_routes(all.clone()).unwrap();
        assert!(matches!(d.end_resync(), Err(DomainError::FailedPrecondition(_))), "none open");

        d.begin_resync();
        // Replays of what exists succeed (outside a resync they would be ALREADY_EXISTS).
        d.add_interface(AddInterface { name: InterfaceName::parse("n", "eth0").unwrap(), mode: XdpMode::Auto, vrf: 0 })
            .unwrap();
        d.add_nexthops(vec![
            NewNextHop { id: 1, spec: NextHopSpec::Discard },
            NewNextHop { id: 3, spec: NextHopSpec::Discard },
        ])
        .unwrap();
        // One replayed route moves to another next hop in place.
        let mut half: Vec<RouteSpec> = all.iter().filter(|r| r.nexthop == 1).cloned().collect();
        half[0].nexthop = 3;
        d.add_routes(half.clone()).unwrap();
        let kernel_before: Vec<_> = d.dataplane().routes();
        let report = d.end_resync().unwrap();
        assert_eq!((report.routes, report.nexthops), (5, 1), "{report:?}");
        assert!(report.kept.is_empty(), "{report:?}");
        let left: Vec<RouteSpec> = d.list_routes(None, None);
        assert_eq!(left.len(), 5);
        assert!(left.iter().all(|r| half.contains(r)));
        // The kept routes were never removed from the kernel.
        let kernel_after = d.dataplane().routes();
        assert!(kernel_after.iter().all(|r| kernel_before.contains(r)));
        assert_eq!(
            d.list_nexthops().unwrap().iter().map(|n| (n.id, n.routes)).collect::<Vec<_>>(),
            vec![(1, 4), (3, 1)]
        );
        assert_eq!(d.list_interfaces(None).unwrap().len(), 1);
        // Outside the resync, replays are refused again.
        let e = d.add_routes(vec![half[0]]).unwrap_err();
        assert_eq!(e.kind(), crate::domain::ErrorKind::AlreadyExists, "{e}");
    }

    #[test]
    fn replace_outside_resync_rewrites_changed_in_place_and_unchanged_moves_no_generation() {
        let d = Domain::new(FakeDataplane::with_links(&[("eth0", 7)]));
        d.add_nexthops(vec![
            NewNextHop { id: 1, spec: NextHopSpec::Discard },
            NewNextHop { id: 2, spec: NextHopSpec::Receive },
        ])
        .unwrap();
        d.add_routes(vec![route("198.51.100.0/24", 1), route("203.0.113.0/24", 1)]).unwrap();
        let g = d.status().unwrap().generation;
        // Unchanged replays with replace: no write, no new generation.
        assert_eq!(d.add_routes_with(vec![route("198.51.100.0/24", 1)], OnExisting::Replace).unwrap(), g);
        assert_eq!(
            d.add_nexthops_with(vec![NewNextHop { id: 1, spec: NextHopSpec::Discard }], OnExisting::Replace).unwrap(),
            g
        );
        // A changed route moves in place: one write, one generation.
        let kernel_before = d.dataplane().routes().len();
        assert_eq!(d.add_routes_with(vec![route("198.51.100.0/24", 2)], OnExisting::Replace).unwrap(), g + 1);
        assert_eq!(d.dataplane().routes().len(), kernel_before);
        assert_eq!(d.list_routes(None, None), vec![route("198.51.100.0/24", 2), route("203.0.113.0/24", 1)]);
        // A changed next hop is rewritten in its slot; routes keep pointing at it.
        let slot = d.list_nexthops().unwrap().iter().find(|n| n.id == 1).unwrap().slot;
        assert_eq!(
            d.add_nexthops_with(vec![NewNextHop { id: 1, spec: NextHopSpec::Receive }], OnExisting::Replace).unwrap(),
            g + 2
        );
        let nh = d.list_nexthops().unwrap().into_iter().find(|n| n.id == 1).unwrap();
        assert_eq!((nh.slot, nh.spec, nh.routes), (slot, NextHopSpec::Receive, 1));
        // Without replace, both are refused as before.
        assert_eq!(
            d.add_routes(vec![route("198.51.100.0/24", 1)]).unwrap_err().kind(),
            crate::domain::ErrorKind::AlreadyExists
        );
        assert_eq!(
            d.add_nexthops(vec![NewNextHop { id: 1, spec: NextHopSpec::Discard }]).unwrap_err().kind(),
            crate::domain::ErrorKind::AlreadyExists
        );
    }

    #[test]
    fn resync_replaying_everything_unchanged_moves_no_generation() {
        let d = Domain::new(FakeDataplane::with_links(&[("eth0", 7)]));
        let eth0 = || AddInterface { name: InterfaceName::parse("n", "eth0").unwrap(), mode: XdpMode::Auto, vrf: 0 };
        d.add_interface(eth0()).unwrap();
        d.add_nexthops(vec![NewNextHop { id: 1, spec: NextHopSpec::Discard }]).unwrap();
        d.add_routes(vec![route("198.51.100.0/24", 1)]).unwrap();
        let g = d.status().unwrap().generation;
        d.begin_resync();
        d.add_interface(eth0()).unwrap();
        d.add_nexthops(vec![NewNextHop { id: 1, spec: NextHopSpec::Discard }]).unwrap();
        d.add_routes(vec![route("198.51.100.0/24", 1)]).unwrap();
        let report = d.end_resync().unwrap();
        assert_eq!(report.generation, g, "{report:?}");
        assert_eq!(d.status().unwrap().generation, g);
    }
}
