//! IPv4 flat tables on restart: adopted from the kernel's chunk pool where they give exactly
//! what the restored routes give, built again where not.

use std::net::IpAddr;

use crate::{
    dataplane::Dataplane,
    domain::{persist::RestoreReport, Domain, DomainError, State, VrfMode},
    net::Prefix,
};

impl<D: Dataplane> Domain<D> {
    /// Takes over the IPv4 flat tables the kernel has, where they give exactly what the routes
    /// just restored give; builds the others. Until a table is switched, its VRF's lookups go
    /// on as they were (a mismatched table is rebuilt beside it and switched to in one write).
    pub(in crate::domain) fn restore_fib4(
        &self,
        state: &mut State,
        report: &mut RestoreReport,
    ) -> Result<(), DomainError> {
        let dp = &self.dataplane;
        // The roots of the VRFs the file knows, not all 65,536 ids (a syscall each): a root left
        // for a VRF no longer known is unreachable (no interface is in it, and recreating the VRF
        // writes a new root before anything can join it), so its chunks may count as free.
        let known: Vec<u32> = state.vrfs.keys().copied().collect();
        let roots = dp.fib4_roots(&known)?;
        let (fib, dropped) = crate::domain::fib4::Fib4::adopt(
            dp.fib4_capacity(),
            &roots,
            |c| dp.fib4_load(c),
            |vrf| matches!(state.vrfs.get(&vrf), Some(VrfMode::Routes)),
        )?;
        for &vrf in &dropped {
            dp.fib4_set_root(vrf, 0)?;
            report.dropped.push(format!("IPv4 flat table of vrf {vrf}: malformed, or the VRF is gone"));
        }
        if !dropped.is_empty() {
            // Their chunks are free from here on: no program may still be reading them.
            dp.wait_for_readers()?;
        }
        state.fib4 = fib;
        let vrfs: Vec<u32> = state.vrfs.iter().filter(|(_, m)| **m == VrfMode::Routes).map(|(v, _)| *v).collect();
        for vrf in vrfs {
            if state.fib4.is_flat(vrf) {
                let routes = crate::domain::routes::v4_routes(&state.routes, &state.nexthops, vrf);
                if state.fib4.matches(vrf, &routes) {
                    report.fib4_adopted.push(vrf);
                    continue;
                }
                report.fib4_built.push(vrf);
                // The old table forwards until the new one replaces it in one write.
                if state.fib4.rebuild(dp, |root| dp.fib4_set_root(vrf, root), vrf, &routes)? {
                    continue;
                }
                // No room for both: the trie takes over meanwhile (given the routes first).
                let entries: Vec<(u32, Prefix, u32)> = routes
                    .iter()
                    .map(|&((a, len), slot)| {
                        (vrf, Prefix::containing(IpAddr::V4(std::net::Ipv4Addr::from(a)), len), slot)
                    })
                    .collect();
                dp.insert_routes(&entries).map_err(|(_, e)| DomainError::from(e))?;
                state.fib4.demote(dp, |root| dp.fib4_set_root(vrf, root), vrf)?;
                self.fib4_promote(state, vrf);
                continue;
            }
            self.fib4_promote(state, vrf);
            report.fib4_built.push(vrf);
        }
        state.fib4.flush(dp)?;
        Ok(())
    }
}
