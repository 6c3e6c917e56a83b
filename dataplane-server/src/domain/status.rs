//! The node's status: programs, attachments, maps with occupancy, generation, uptime, and the
//! pins found damaged and repaired (with the periodic check that finds them while running).

use std::time::Duration;

use dataplane_common::maps as names;

use super::{Domain, DomainError, InterfaceName};
use crate::dataplane::{Dataplane, Hook, ProgramStatus, XdpMode};
pub use crate::dataplane::{PinFix, PinHealth, PinRepair};

/// One program attached to one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachmentView {
    pub interface: InterfaceName,
    pub ifindex: u32,
    pub hook: Hook,
    pub program: &'static str,
    /// For XDP, the mode it runs in.
    pub xdp_mode: Option<XdpMode>,
    pub link_id: u32,
}

/// A map with how much of it is in use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapView {
    pub name: &'static str,
    pub kind: String,
    pub kernel_id: u32,
    pub max_entries: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub occupancy: u64,
    pub pin_path: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusView {
    pub generation: u64,
    pub uptime: Duration,
    pub bpffs_root: String,
    pub programs: Vec<ProgramStatus>,
    pub attachments: Vec<AttachmentView>,
    pub maps: Vec<MapView>,
    /// What this run's restore found (none before it ran).
    pub restore: Option<super::persist::RestoreReport>,
    /// Map pins found missing or replaced (at start or while running) and what was done.
    pub pin_health: PinHealth,
    /// Held misses: waiting for a decision now, and in all this run those no one answered in
    /// time (their held first packets dropped).
    pub held: u64,
    pub unanswered: u64,
}

impl<D: Dataplane> Domain<D> {
    pub fn status(&self) -> Result<StatusView, DomainError> {
        let state = self.lock();
        let mut attachments = Vec::with_capacity(state.interfaces.len() * 2);
        for (name, e) in &state.interfaces {
            attachments.push(AttachmentView {
                interface: name.clone(),
                ifindex: e.link.ifindex,
                hook: Hook::XdpIngress,
                program: dataplane_common::programs::XDP_INGRESS,
                xdp_mode: Some(e.attachment.xdp_mode),
                link_id: e.attachment.xdp_link_id,
            });
            attachments.push(AttachmentView {
                interface: name.clone(),
                ifindex: e.link.ifindex,
                hook: Hook::TcEgress,
                program: dataplane_common::programs::TC_EGRESS,
                xdp_mode: None,
                link_id: e.attachment.tc_link_id,
            });
        }
        let slots_in_use = u64::from(state.slots.in_use());
        let nh_in_use = u64::from(state.nh_slots.in_use());
        let [routes_v4, routes_v6] = state.route_counts;
        let flat_vrfs = state.vrfs.keys().filter(|v| state.fib4.is_flat(**v)).count() as u64;
        let fib4_chunks = u64::from(state.fib4.chunks_used());
        let maps = self
            .dataplane
            .maps()?
            .into_iter()
            .map(|m| MapView {
                occupancy: match m.keys {
                    Some(k) => k,
                    // Arrays indexed by interface slot: the slots allocated.
                    None if m.name == names::IFACE_STATS || m.name == names::TX_PORTS => slots_in_use,
                    None if m.name == names::NEXTHOPS || m.name == names::NEXTHOP_STATS => nh_in_use,
                    None if m.name == names::ROUTES_V4 => routes_v4,
                    None if m.name == names::ROUTES_V6 => routes_v6,
                    None if m.name == names::FIB4_VRFS => flat_vrfs,
                    None if m.name == names::FIB4_CHUNKS => fib4_chunks,
                    None if m.name == names::ROUTE4_RECORDS => routes_v4,
                    // Fixed-size arrays whose every entry is meaningful.
                    None => u64::from(m.max_entries),
                },
                name: m.name,
                kind: m.kind,
                kernel_id: m.kernel_id,
                max_entries: m.max_entries,
                key_size: m.key_size,
                value_size: m.value_size,
                pin_path: m.pin_path,
            })
            .collect();
        Ok(StatusView {
            generation: state.generation,
            uptime: self.started.elapsed(),
            bpffs_root: self.dataplane.pin_root(),
            programs: self.dataplane.programs()?,
            attachments,
            maps,
            restore: self.restored.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            pin_health: self.dataplane.pin_health(),
            held: self.held_now(),
            unanswered: state.flows.unanswered(),
        })
    }

    /// Checks that every map pin still names the map the server writes, repairing those that
    /// do not (see `Lifecycle::check_pins`); nothing after a reset. Not under the domain's
    /// lock: the check is the dataplane's own business and must not hold up writes.
    pub fn check_pins(&self) -> Result<Vec<PinRepair>, DomainError> {
        if self.reset_done.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(Vec::new());
        }
        Ok(self.dataplane.check_pins()?)
    }
}

impl<D: Dataplane> Domain<D> {
    /// Switches every interface to the programs of `object` (this build's when `None`), hitless
    /// (see `Dataplane::upgrade`). FAILED_PRECONDITION, with the loader's or verifier's message,
    /// if they do not load: then nothing changed, the state file included.
    pub fn upgrade_programs(
        &self,
        object: Option<&[u8]>,
    ) -> Result<(Vec<crate::dataplane::ProgramStatus>, u64), DomainError> {
        use crate::dataplane::DataplaneError as E;
        // Under the domain's lock: the server is the links' only writer while it swaps them.
        let mut state = self.lock();
        let programs = self.dataplane.upgrade(object).map_err(|e| match e {
            E::Load { .. }
            | E::ObjectParse { .. }
            | E::PinnedMapMismatch { .. }
            | E::Program { op: "load", .. }
            | E::Missing { .. } => DomainError::FailedPrecondition(format!("the new programs were not loaded: {e}")),
            other => DomainError::from(other),
        })?;
        self.bump(&mut state);
        tracing::info!(programs = ?programs.iter().map(|p| p.kernel_id).collect::<Vec<_>>(), generation = state.generation, "programs upgraded");
        Ok((programs, state.generation))
    }

    /// Detaches everything, removes every pin and the state file. The server should exit next:
    /// its maps are no longer pinned.
    pub fn reset(&self) {
        let _state = self.lock();
        self.reset_done.store(true, std::sync::atomic::Ordering::Relaxed);
        self.dataplane.reset();
        if let Some(state_file) = &self.state_file {
            // The intent too: rolled back over a fresh dataplane, it would write stale values.
            for path in [state_file.clone(), super::intent::path_for(state_file)] {
                if let Err(e) = std::fs::remove_file(&path) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(path = %path.display(), error = %e, "removing the state file failed");
                    }
                }
            }
        }
        tracing::info!("reset: every link, program and map pin of the dataplane removed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{fake::FakeDataplane, AddInterface};

    #[test]
    fn status_after_add_lists_both_hooks_and_slot_occupancy() {
        let d = Domain::new(FakeDataplane::with_links(&[("eth0", 7)]));
        d.add_interface(AddInterface {
            name: InterfaceName::parse("n", "eth0").unwrap(),
            mode: XdpMode::Generic,
            vrf: 0,
        })
        .unwrap();
        let s = d.status().unwrap();
        assert_eq!(s.generation, 1);
        let hooks: Vec<_> = s.attachments.iter().map(|a| (a.hook, a.xdp_mode)).collect();
        assert_eq!(hooks, vec![(Hook::XdpIngress, Some(XdpMode::Generic)), (Hook::TcEgress, None)]);
        let stats = s.maps.iter().find(|m| m.name == names::IFACE_STATS).unwrap();
        assert_eq!(stats.occupancy, 1);
        let slots = s.maps.iter().find(|m| m.name == names::INTERFACES).unwrap();
        assert_eq!(slots.occupancy, 1);
        assert_eq!(s.pin_health, PinHealth::default());
    }

    #[test]
    fn check_pins_after_reset_does_not_reach_dataplane() {
        use std::sync::atomic::Ordering;
        let d = Domain::new(FakeDataplane::default());
        d.check_pins().unwrap();
        assert_eq!(d.dataplane().pin_checks.load(Ordering::SeqCst), 1);
        d.reset();
        d.check_pins().unwrap();
        assert_eq!(d.dataplane().pin_checks.load(Ordering::SeqCst), 1, "pins removed on purpose are not pinned again");
    }

    #[test]
    fn status_pin_repairs_reported_as_dataplane_has_them() {
        use crate::dataplane::{PinFix, PinFound, PinPhase};
        let fake = FakeDataplane::default();
        let repair = PinRepair {
            map: names::ROUTES_V6,
            found: PinFound::Missing,
            fix: PinFix::Repinned { map_id: 12 },
            phase: PinPhase::Start,
            at: std::time::SystemTime::UNIX_EPOCH,
        };
        *fake.pin_health.lock().unwrap() = PinHealth { repairs: vec![repair.clone()], total: 3 };
        let d = Domain::new(fake);
        let s = d.status().unwrap();
        assert_eq!(s.pin_health.total, 3);
        assert_eq!(s.pin_health.repairs, vec![repair]);
    }
}
