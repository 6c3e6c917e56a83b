//! VRFs: routing table ids. VRF 0 always exists; others are created and deleted explicitly and
//! cannot be deleted while interfaces or routes use them.

pub(super) mod restore;

use super::{Domain, DomainError};
use crate::dataplane::Dataplane;

/// How a VRF forwards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VrfMode {
    /// By the routes of the API, in the dataplane's LPM maps.
    #[default]
    Routes,
    /// By the kernel's FIB (`bpf_fib_lookup`), in kernel table `table` (0: the kernel's choice).
    KernelFib { table: u32 },
}

/// A VRF with what uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VrfView {
    pub id: u32,
    pub mode: VrfMode,
    pub interfaces: u32,
    pub routes: u64,
    /// Where its IPv4 routes are looked up (`None`: kernel-FIB VRFs).
    pub ipv4_lookup: Option<super::Ipv4Lookup>,
}

impl<D: Dataplane> Domain<D> {
    pub fn add_vrf(&self, id: u32, mode: VrfMode) -> Result<u64, DomainError> {
        if id >= dataplane_common::MAX_VRFS {
            return Err(DomainError::invalid("id", format!("VRF ids are below {}", dataplane_common::MAX_VRFS)));
        }
        let mut state = self.lock();
        if state.vrfs.get(&id).is_some_and(|m| *m == mode) && state.resync.is_some() {
            if let Some(rs) = state.resync.as_mut() {
                rs.vrfs.insert(id);
            }
            return Ok(state.generation);
        }
        if state.vrfs.contains_key(&id) {
            return Err(DomainError::AlreadyExists { kind: "vrf", name: id.to_string() });
        }
        state.vrfs.insert(id, mode);
        if let Some(rs) = state.resync.as_mut() {
            rs.vrfs.insert(id);
        }
        self.fib4_promote(&mut state, id);
        self.bump(&mut state);
        Ok(state.generation)
    }

    pub fn delete_vrf(&self, id: u32) -> Result<u64, DomainError> {
        let mut state = self.lock();
        if !state.vrfs.contains_key(&id) {
            return Err(not_found(id));
        }
        if id == 0 {
            return Err(DomainError::FailedPrecondition("vrf 0 is the default VRF and always exists".into()));
        }
        let interfaces = state.interfaces.values().filter(|e| e.vrf == id).count();
        let routes = state.routes.range((id, min_prefix())..).take_while(|((v, _), _)| *v == id).count();
        if interfaces > 0 || routes > 0 {
            return Err(DomainError::FailedPrecondition(format!(
                "vrf {id} is still used by {interfaces} interface(s) and {routes} route(s)"
            )));
        }
        state.vrfs.remove(&id);
        let dp = &self.dataplane;
        if let Err(e) = state.fib4.remove_vrf(dp, |root| dp.fib4_set_root(id, root), id) {
            tracing::error!(vrf = id, error = %e, "removing the VRF's IPv4 flat table failed");
        }
        // Its chunks may be what another VRF was waiting for.
        self.fib4_apply(&mut state, &[], &[], &Default::default(), true);
        self.bump(&mut state);
        Ok(state.generation)
    }

    pub fn list_vrfs(&self) -> Vec<VrfView> {
        let state = self.lock();
        state
            .vrfs
            .iter()
            .map(|(&id, &mode)| VrfView {
                id,
                mode,
                interfaces: state.interfaces.values().filter(|e| e.vrf == id).count() as u32,
                routes: state.routes.range((id, min_prefix())..).take_while(|((v, _), _)| *v == id).count() as u64,
                ipv4_lookup: (mode == VrfMode::Routes)
                    .then(|| state.fib4.lookup_mode(id).unwrap_or(super::Ipv4Lookup::Trie)),
            })
            .collect()
    }
}

pub(super) fn not_found(id: u32) -> DomainError {
    DomainError::NotFound { kind: "vrf", name: id.to_string(), detail: "" }
}

/// The smallest prefix in the routes' ordering, to range over one VRF's routes.
pub(super) fn min_prefix() -> crate::net::Prefix {
    crate::net::Prefix::containing(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{fake::FakeDataplane, RouteSpec};

    #[test]
    fn vrf_add_delete_list_round_trip() {
        let d = Domain::new(FakeDataplane::default());
        assert_eq!(d.add_vrf(7, VrfMode::Routes).unwrap(), 1);
        assert!(matches!(d.add_vrf(7, VrfMode::Routes), Err(DomainError::AlreadyExists { .. })));
        assert_eq!(d.list_vrfs().iter().map(|v| v.id).collect::<Vec<_>>(), vec![0, 7]);
        assert_eq!(d.delete_vrf(7).unwrap(), 2);
        assert!(matches!(d.delete_vrf(7), Err(DomainError::NotFound { .. })));
        assert!(matches!(d.delete_vrf(0), Err(DomainError::FailedPrecondition(_))));
        assert!(matches!(
            d.add_vrf(dataplane_common::MAX_VRFS, VrfMode::Routes),
            Err(DomainError::InvalidArgument { .. })
        ));
    }

    #[test]
    fn vrf_delete_with_routes_failed_precondition() {
        let d = Domain::new(FakeDataplane::default());
        d.add_vrf(3, VrfMode::Routes).unwrap();
        d.add_nexthops(vec![crate::domain::NewNextHop { id: 1, spec: crate::domain::NextHopSpec::Discard }]).unwrap();
        d.add_routes(vec![RouteSpec { vrf: 3, prefix: "192.0.2.0/24".parse().unwrap(), nexthop: 1 }]).unwrap();
        let e = d.delete_vrf(3).unwrap_err();
        assert!(matches!(e, DomainError::FailedPrecondition(_)), "{e}");
        assert_eq!(d.list_vrfs()[1].routes, 1);
    }
}
