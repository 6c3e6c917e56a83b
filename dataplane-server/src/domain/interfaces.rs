//! Interfaces the dataplane owns: validation, slot allocation, attach/detach, counters.

pub(super) mod restore;

use std::fmt;

use dataplane_common::InterfaceStats;
use tracing::info;

use super::{vrfs, Domain, DomainError, State};
use crate::dataplane::{Attachment, Dataplane, InterfaceParams, LinkInfo, XdpMode};

/// A kernel interface name: 1 to 15 bytes (IFNAMSIZ - 1), no '/', no whitespace, no NUL,
/// not "." or "..", as the kernel's `dev_valid_name` demands.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InterfaceName(String);

impl InterfaceName {
    pub const MAX_LEN: usize = 15;

    /// Validates `name`; `field` names the request field in the error.
    pub fn parse(field: &str, name: &str) -> Result<Self, DomainError> {
        let reason = if name.is_empty() {
            Some("must not be empty".to_owned())
        } else if name.len() > Self::MAX_LEN {
            Some(format!("{} bytes long, at most {} allowed", name.len(), Self::MAX_LEN))
        } else if name == "." || name == ".." {
            Some(format!("{name:?} is not a valid interface name"))
        } else if name.chars().any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace()) {
            Some(format!("{name:?} contains '/', ':', NUL or whitespace"))
        } else {
            None
        };
        match reason {
            Some(r) => Err(DomainError::invalid(field, r)),
            None => Ok(Self(name.to_owned())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InterfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated `AddInterface` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddInterface {
    pub name: InterfaceName,
    pub mode: XdpMode,
    pub vrf: u32,
}

/// What the domain keeps per attached interface.
#[derive(Clone, Debug)]
pub(super) struct InterfaceEntry {
    pub link: LinkInfo,
    pub vrf: u32,
    pub slot: u32,
    pub requested: XdpMode,
    pub attachment: Attachment,
}

/// An interface with its counters, as reported to callers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceView {
    pub name: InterfaceName,
    pub link: LinkInfo,
    pub vrf: u32,
    pub slot: u32,
    pub requested: XdpMode,
    pub attachment: Attachment,
    pub stats: InterfaceStats,
}

impl<D: Dataplane> Domain<D> {
    /// Attaches the dataplane to an interface. Returns it and the new generation.
    pub fn add_interface(&self, req: AddInterface) -> Result<(InterfaceView, u64), DomainError> {
        let mut state = self.lock();
        if let Some(e) = state.interfaces.get(&req.name) {
            if state.resync.is_some() && e.vrf == req.vrf {
                // Replayed: kept as it is.
                let view = self.view(&req.name, e)?;
                if let Some(rs) = state.resync.as_mut() {
                    rs.interfaces.insert(req.name.clone());
                }
                return Ok((view, state.generation));
            }
            return Err(DomainError::AlreadyExists { kind: "interface", name: req.name.0 });
        }
        let Some(&vrf_mode) = state.vrfs.get(&req.vrf) else {
            return Err(vrfs::not_found(req.vrf).at("vrf"));
        };
        let link = self.dataplane.link(req.name.as_str())?.ok_or_else(|| DomainError::NotFound {
            kind: "interface",
            name: req.name.0.clone(),
            detail: " in the server's network namespace",
        })?;
        let capacity = state.slots.capacity();
        let slot = state.slots.alloc().ok_or(DomainError::Exhausted { what: "interface slots", capacity })?;
        let params = InterfaceParams { slot, vrf: req.vrf, link: link.clone(), kernel_fib: kernel_fib(vrf_mode) };
        let attachment = match self.dataplane.attach(req.name.as_str(), &params, req.mode) {
            Ok(a) => a,
            Err(e) => {
                state.slots.free(slot);
                return Err(e.into());
            }
        };
        let entry = InterfaceEntry { link, vrf: req.vrf, slot, requested: req.mode, attachment };
        state.interfaces.insert(req.name.clone(), entry.clone());
        if let Some(rs) = state.resync.as_mut() {
            rs.interfaces.insert(req.name.clone());
        }
        // After the insert: the state file this writes must hold the interface, or a restart
        // after a crash right now would find links it has no record of.
        self.bump(&mut state);
        let generation = state.generation;
        info!(interface = %req.name, ifindex = entry.link.ifindex, slot, vrf = req.vrf, generation, "interface added");
        // Next hops through an interface of this name that had disappeared work again.
        self.rewrite_nexthops_via(&state, &req.name);
        let view = self.view(&req.name, &entry)?;
        Ok((view, generation))
    }

    /// Detaches the dataplane from an interface and frees its slot. Returns the new generation.
    pub fn delete_interface(&self, name: &InterfaceName) -> Result<u64, DomainError> {
        let mut state = self.lock();
        let entry = state.interfaces.get(name).ok_or_else(|| not_attached(name))?;
        let users: Vec<u32> =
            state.nexthops.iter().filter(|(_, n)| n.spec.interface() == Some(name)).map(|(id, _)| *id).collect();
        if !users.is_empty() {
            return Err(DomainError::FailedPrecondition(format!("interface {name} is used by next hop(s) {users:?}")));
        }
        let slot = entry.slot;
        self.forget_interface(&mut state, name)?;
        self.bump(&mut state);
        info!(interface = %name, slot, generation = state.generation, "interface deleted");
        Ok(state.generation)
    }

    /// Detaches and unregisters an attached interface and frees its slot, leaving no per-slot
    /// state (policy attachments, flow mode) for the slot's next user.
    fn forget_interface(&self, state: &mut State, name: &InterfaceName) -> Result<(), DomainError> {
        let Some(entry) = state.interfaces.get(name) else { return Ok(()) };
        let (ifindex, slot) = (entry.link.ifindex, entry.slot);
        self.detach_all_policies(state, name, slot)?;
        self.reset_flow_mode(state, slot)?;
        self.dataplane.detach(ifindex, slot)?;
        state.interfaces.remove(name);
        state.slots.free(slot);
        Ok(())
    }

    /// The kernel removed link `ifindex`. If the dataplane owned it, it is removed from the
    /// dataplane (maps, slot, attachments), and next hops through it stop forwarding in XDP
    /// until an interface of that name is added again. Returns the interface's name if it was
    /// owned.
    pub fn link_removed(&self, ifindex: u32) -> Result<Option<InterfaceName>, DomainError> {
        let mut state = self.lock();
        let Some(name) = state.interfaces.iter().find(|(_, e)| e.link.ifindex == ifindex).map(|(n, _)| n.clone())
        else {
            return Ok(None);
        };
        self.forget_interface(&mut state, &name)?;
        self.rewrite_nexthops_via(&state, &name);
        self.bump(&mut state);
        info!(interface = %name, ifindex, generation = state.generation, "owned link removed from the kernel; interface removed");
        Ok(Some(name))
    }

    /// Link `ifindex` (or its addresses) may have changed: if the dataplane owns it, its MTU,
    /// MAC and addresses are read again, and the maps (its own entry, next hops through it)
    /// follow. Returns whether anything changed.
    pub fn link_changed(&self, ifindex: u32) -> Result<bool, DomainError> {
        let mut state = self.lock();
        let Some((name, entry)) =
            state.interfaces.iter().find(|(_, e)| e.link.ifindex == ifindex).map(|(n, e)| (n.clone(), e.clone()))
        else {
            return Ok(false);
        };
        // Gone under this name (renamed or being removed): the removal event handles the latter.
        let Some(link) = self.dataplane.link(name.as_str())? else { return Ok(false) };
        if link == entry.link || link.ifindex != ifindex {
            return Ok(false);
        }
        let kernel_fib = state.vrfs.get(&entry.vrf).copied().and_then(kernel_fib);
        self.dataplane.update_interface(&InterfaceParams {
            slot: entry.slot,
            vrf: entry.vrf,
            link: link.clone(),
            kernel_fib,
        })?;
        info!(interface = %name, ifindex, mtu = link.mtu, mac = %link.mac, "owned link changed; maps updated");
        if let Some(e) = state.interfaces.get_mut(&name) {
            e.link = link;
        }
        self.rewrite_nexthops_via(&state, &name);
        Ok(true)
    }

    /// The name of the owned interface with kernel index `ifindex`.
    pub fn interface_by_ifindex(&self, ifindex: u32) -> Option<InterfaceName> {
        let state = self.lock();
        state.interfaces.iter().find(|(_, e)| e.link.ifindex == ifindex).map(|(n, _)| n.clone())
    }

    /// The slot of an attached interface.
    pub fn interface_slot(&self, name: &InterfaceName) -> Result<u32, DomainError> {
        let state = self.lock();
        state.interfaces.get(name).map(|e| e.slot).ok_or_else(|| not_attached(name).at("interface"))
    }

    /// The name of the interface holding `slot`, if any.
    pub fn interface_name_by_slot(&self, slot: u32) -> Option<String> {
        let state = self.lock();
        state.interfaces.iter().find(|(_, e)| e.slot == slot).map(|(n, _)| n.to_string())
    }

    /// Every attached interface, or only `name`, with counters read now.
    pub fn list_interfaces(&self, name: Option<&InterfaceName>) -> Result<Vec<InterfaceView>, DomainError> {
        let state = self.lock();
        match name {
            Some(n) => {
                let e = state.interfaces.get(n).ok_or_else(|| not_attached(n))?;
                Ok(vec![self.view(n, e)?])
            }
            None => state.interfaces.iter().map(|(n, e)| self.view(n, e)).collect(),
        }
    }

    fn view(&self, name: &InterfaceName, e: &InterfaceEntry) -> Result<InterfaceView, DomainError> {
        Ok(InterfaceView {
            name: name.clone(),
            link: e.link.clone(),
            vrf: e.vrf,
            slot: e.slot,
            requested: e.requested,
            attachment: e.attachment,
            stats: self.dataplane.interface_stats(e.slot)?,
        })
    }
}

/// The kernel-FIB table of a VRF mode, `None` for a routes VRF.
fn kernel_fib(mode: super::VrfMode) -> Option<u32> {
    match mode {
        super::VrfMode::Routes => None,
        super::VrfMode::KernelFib { table } => Some(table),
    }
}

pub(super) fn not_attached(name: &InterfaceName) -> DomainError {
    DomainError::NotFound { kind: "interface", name: name.0.clone(), detail: " among the dataplane's interfaces" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fake::FakeDataplane;

    fn name(s: &str) -> InterfaceName {
        InterfaceName::parse("name", s).unwrap()
    }

    fn add(d: &Domain<FakeDataplane>, n: &str) -> Result<(InterfaceView, u64), DomainError> {
        d.add_interface(AddInterface { name: name(n), mode: XdpMode::Auto, vrf: 0 })
    }

    #[test]
    fn add_interface_state_file_it_writes_holds_it() {
        let file = std::env::temp_dir().join(format!("dp-add-interface-{}.json", std::process::id()));
        let d = Domain::with_state_file(FakeDataplane::with_links(&[("eth0", 7)]), file.clone());
        add(&d, "eth0").unwrap();
        // What a restart right now (a SIGKILL after the reply) would read.
        let text = std::fs::read_to_string(&file).unwrap();
        let _ = std::fs::remove_file(&file);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!((v["generation"].as_u64(), v["interfaces"][0]["name"].as_str()), (Some(1), Some("eth0")), "{v}");
    }

    #[test]
    fn interface_name_invalid_inputs_rejected_naming_field() {
        for bad in ["", "a-name-that-is-too-long", "a/b", "a b", ".", "..", "x:y"] {
            let e = InterfaceName::parse("interfaces[2].name", bad).unwrap_err();
            assert!(
                matches!(&e, DomainError::InvalidArgument { field, .. } if field == "interfaces[2].name"),
                "{bad:?}: {e}"
            );
        }
        assert!(InterfaceName::parse("name", "veth-rtr0.100").is_ok());
    }

    #[test]
    fn add_interface_known_link_attaches_and_bumps_generation() {
        let d = Domain::new(FakeDataplane::with_links(&[("eth0", 7)]));
        let (v, generation) = add(&d, "eth0").unwrap();
        assert_eq!((v.link.ifindex, v.slot, generation), (7, 0, 1));
        assert_eq!(v.attachment.xdp_mode, XdpMode::Native);
        assert_eq!(d.dataplane().attached(), vec![(7, 0)]);
    }

    #[test]
    fn add_interface_twice_already_exists_and_changes_nothing() {
        let d = Domain::new(FakeDataplane::with_links(&[("eth0", 7)]));
        add(&d, "eth0").unwrap();
        let e = add(&d, "eth0").unwrap_err();
        assert!(matches!(e, DomainError::AlreadyExists { .. }), "{e}");
        assert_eq!(d.status().unwrap().generation, 1);
        assert_eq!(d.dataplane().attached(), vec![(7, 0)]);
    }

    #[test]
    fn add_interface_unknown_link_not_found_and_no_slot_used() {
        let d = Domain::new(FakeDataplane::with_links(&[("eth0", 7)]));
        let e = add(&d, "nope0").unwrap_err();
        assert!(matches!(e, DomainError::NotFound { .. }), "{e}");
        assert_eq!(add(&d, "eth0").unwrap().0.slot, 0);
    }

    #[test]
    fn add_interface_attach_fails_slot_returned_and_nothing_recorded() {
        let d = Domain::new(FakeDataplane::with_links(&[("eth0", 7), ("eth1", 8)]));
        d.dataplane().fail_next_attach_with_unsupported_mode();
        let e = add(&d, "eth0").unwrap_err();
        assert!(matches!(e, DomainError::FailedPrecondition(_)), "{e}");
        assert!(d.list_interfaces(None).unwrap().is_empty());
        assert_eq!(d.status().unwrap().generation, 0);
        assert_eq!(add(&d, "eth1").unwrap().0.slot, 0);
    }

    #[test]
    fn delete_interface_frees_slot_for_reuse() {
        let d = Domain::new(FakeDataplane::with_links(&[("a", 1), ("b", 2), ("c", 3)]));
        add(&d, "a").unwrap();
        add(&d, "b").unwrap();
        assert_eq!(d.delete_interface(&name("a")).unwrap(), 3);
        assert_eq!(d.dataplane().attached(), vec![(2, 1)]);
        assert_eq!(add(&d, "c").unwrap().0.slot, 0);
    }

    #[test]
    fn add_interface_unknown_vrf_not_found() {
        let d = Domain::new(FakeDataplane::with_links(&[("eth0", 7)]));
        let e = d.add_interface(AddInterface { name: name("eth0"), mode: XdpMode::Auto, vrf: 4 }).unwrap_err();
        assert_eq!(e.to_string(), "vrf: vrf 4 not found");
        d.add_vrf(4, crate::domain::VrfMode::Routes).unwrap();
        assert_eq!(d.add_interface(AddInterface { name: name("eth0"), mode: XdpMode::Auto, vrf: 4 }).unwrap().0.vrf, 4);
    }

    #[test]
    fn delete_interface_not_attached_not_found() {
        let d = Domain::new(FakeDataplane::with_links(&[("a", 1)]));
        let e = d.delete_interface(&name("a")).unwrap_err();
        assert!(matches!(e, DomainError::NotFound { .. }), "{e}");
        assert_eq!(d.status().unwrap().generation, 0);
    }

    #[test]
    fn list_interfaces_reports_counters_per_slot() {
        let d = Domain::new(FakeDataplane::with_links(&[("a", 1), ("b", 2)]));
        add(&d, "a").unwrap();
        add(&d, "b").unwrap();
        d.dataplane().set_rx_packets(1, 42);
        let all = d.list_interfaces(None).unwrap();
        assert_eq!(
            all.iter().map(|v| (v.name.as_str(), v.stats.rx_packets)).collect::<Vec<_>>(),
            vec![("a", 0), ("b", 42)]
        );
        let one = d.list_interfaces(Some(&name("b"))).unwrap();
        assert_eq!(one.len(), 1);
        assert!(matches!(d.list_interfaces(Some(&name("zz"))), Err(DomainError::NotFound { .. })));
    }

    #[test]
    fn add_interface_all_slots_used_exhausted() {
        let links: Vec<(String, u32)> =
            (0..=dataplane_common::MAX_INTERFACES).map(|i| (format!("l{i}"), i + 1)).collect();
        let refs: Vec<(&str, u32)> = links.iter().map(|(n, i)| (n.as_str(), *i)).collect();
        let d = Domain::new(FakeDataplane::with_links(&refs));
        for (n, _) in &refs[..refs.len() - 1] {
            add(&d, n).unwrap();
        }
        let e = add(&d, refs.last().unwrap().0).unwrap_err();
        assert!(matches!(e, DomainError::Exhausted { .. }), "{e}");
    }

    #[test]
    fn add_interface_kernel_failure_at_every_write_changes_nothing() {
        let setup = || {
            let d = Domain::new(FakeDataplane::with_links(&[("eth0", 7), ("eth1", 8)]));
            add(&d, "eth0").unwrap();
            d
        };
        let errors = crate::domain::txn::testing::fail_at_every_write(setup, |d| add(d, "eth1").map(|(_, g)| g));
        assert_eq!(errors.len(), 1, "{errors:?}");
    }
}
