//! Interfaces in the state file: name, ifindex, slot, VRF and XDP modes; and taking them back over
//! the links the dataplane adopted.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{
    dataplane::{Attachment, Dataplane, InterfaceParams, LinkInfo, XdpMode},
    domain::{
        interfaces::InterfaceEntry,
        persist::{self, RestoreReport},
        Domain, DomainError, InterfaceName, State, VrfMode,
    },
};

/// One interface as the state file keeps it (its link is read from the kernel again).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::domain) struct SavedInterface {
    name: InterfaceName,
    ifindex: u32,
    slot: u32,
    vrf: u32,
    /// The mode asked for.
    requested: XdpMode,
    /// The mode the XDP program runs in.
    xdp_mode: XdpMode,
}

/// As its text.
impl Serialize for InterfaceName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Validated as a request's name is: a file is no more trusted than a request.
impl<'de> Deserialize<'de> for InterfaceName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        // The caller's path names the field; the reason is what is left to say.
        Self::parse("", &name).map_err(persist::invalid_value)
    }
}

/// The interfaces, for the state file.
pub(in crate::domain) fn saved(state: &State) -> Vec<SavedInterface> {
    state
        .interfaces
        .iter()
        .map(|(name, e)| SavedInterface {
            name: name.clone(),
            ifindex: e.link.ifindex,
            slot: e.slot,
            vrf: e.vrf,
            requested: e.requested,
            xdp_mode: e.attachment.xdp_mode,
        })
        .collect()
}

impl<D: Dataplane> Domain<D> {
    /// Takes back the interfaces whose links the dataplane still has, on the same ifindex, with
    /// the slot and VRF their kernel entry has (the kernel's side wins over the file's) and the
    /// rest of their configuration refreshed from the link; adopts the interfaces the kernel has
    /// (links and an entry) that the file does not describe. Only links without an entry, which
    /// forward nothing, are let go.
    pub(in crate::domain) fn restore_interfaces(
        &self,
        state: &mut State,
        saved: Vec<SavedInterface>,
        report: &mut RestoreReport,
    ) -> Result<(), DomainError> {
        let adopted: BTreeMap<u32, (u32, u32)> =
            self.dataplane.adopted().into_iter().map(|a| (a.ifindex, (a.xdp_link_id, a.tc_link_id))).collect();
        let mut kept_ifindexes = Vec::new();
        for i in saved {
            let link = self.dataplane.link(i.name.as_str())?;
            let (Some(link), Some(&(xdp_link_id, tc_link_id))) = (link, adopted.get(&i.ifindex)) else {
                report.dropped.push(format!("interface {} (ifindex {}): gone", i.name, i.ifindex));
                continue;
            };
            if link.ifindex != i.ifindex {
                report.dropped.push(format!("interface {}: now ifindex {}", i.name, link.ifindex));
                continue;
            }
            let (mut slot, mut vrf) = (i.slot, i.vrf);
            if let Some(k) = self.dataplane.kernel_interface(i.ifindex)? {
                if (k.slot, k.vrf) != (slot, vrf) {
                    report.disagreements.push(format!(
                        "interface {}: the state file has slot {slot}, vrf {vrf}; the kernel slot {}, vrf {}",
                        i.name, k.slot, k.vrf
                    ));
                    (slot, vrf) = (k.slot, k.vrf);
                }
                adopt_vrf(state, report, vrf, k.kernel_fib);
            }
            if !state.slots.reserve(slot) {
                report.dropped.push(format!("interface {}: slot {slot} taken twice", i.name));
                continue;
            }
            self.refresh_entry(state, slot, vrf, &link)?;
            let attachment = Attachment { xdp_mode: i.xdp_mode, xdp_link_id, tc_link_id };
            state.interfaces.insert(i.name, InterfaceEntry { link, vrf, slot, requested: i.requested, attachment });
            kept_ifindexes.push(i.ifindex);
        }
        for (&ifindex, &(xdp_link_id, tc_link_id)) in adopted.iter().filter(|(i, _)| !kept_ifindexes.contains(i)) {
            if !self.adopt_interface(state, report, ifindex, xdp_link_id, tc_link_id)? {
                // Links with no entry (a run that crashed between attaching and recording the
                // entry, or whose entry is gone): every packet they see passes to the stack as
                // from an unknown interface, so letting them go changes nothing.
                self.dataplane.forget_links(ifindex)?;
                report.dropped.push(format!("links of ifindex {ifindex}: no interface entry in the kernel"));
            }
        }
        report.interfaces = state.interfaces.len();
        Ok(())
    }

    /// Adopts the interface on `ifindex` from its kernel entry and link; `false` if the kernel
    /// has no entry for it (or its name, slot or VRF cannot be taken).
    fn adopt_interface(
        &self,
        state: &mut State,
        report: &mut RestoreReport,
        ifindex: u32,
        xdp_link_id: u32,
        tc_link_id: u32,
    ) -> Result<bool, DomainError> {
        let Some(k) = self.dataplane.kernel_interface(ifindex)? else { return Ok(false) };
        let Ok(name) = InterfaceName::parse("", &k.name) else { return Ok(false) };
        let Some(link) = self.dataplane.link(&k.name)?.filter(|l| l.ifindex == ifindex) else { return Ok(false) };
        if state.interfaces.contains_key(&name) || !state.slots.reserve(k.slot) {
            return Ok(false);
        }
        adopt_vrf(state, report, k.vrf, k.kernel_fib);
        let vrf = k.vrf;
        self.refresh_entry(state, k.slot, vrf, &link)?;
        let attachment = Attachment { xdp_mode: k.xdp_mode, xdp_link_id, tc_link_id };
        report
            .adopted
            .push(format!("interface {name} (ifindex {ifindex}, slot {}, vrf {vrf}, xdp {:?})", k.slot, k.xdp_mode));
        state.interfaces.insert(name, InterfaceEntry { link, vrf, slot: k.slot, requested: k.xdp_mode, attachment });
        Ok(true)
    }

    /// Rewrites an interface's entry from its link as it is now (its MTU, MAC or addresses may
    /// have changed while no server ran), keeping its slot and VRF.
    fn refresh_entry(&self, state: &State, slot: u32, vrf: u32, link: &LinkInfo) -> Result<(), DomainError> {
        let kernel_fib = state.vrfs.get(&vrf).copied().and_then(super::kernel_fib);
        self.dataplane.update_interface(&InterfaceParams { slot, vrf, link: link.clone(), kernel_fib })?;
        Ok(())
    }
}

/// Takes VRF `vrf` into the state as an interface entry shows it (`kernel_fib`: its kernel
/// table) if the state file did not describe it, or described it otherwise (the entry is what
/// the packets see).
pub(in crate::domain) fn adopt_vrf(state: &mut State, report: &mut RestoreReport, vrf: u32, kernel_fib: Option<u32>) {
    let mode = kernel_fib.map_or(VrfMode::Routes, |table| VrfMode::KernelFib { table });
    match state.vrfs.insert(vrf, mode) {
        None => report.adopted.push(format!("vrf {vrf} ({mode:?})")),
        Some(was) if was != mode => {
            report.disagreements.push(format!("vrf {vrf}: the state file has {was:?}; the kernel {mode:?}"))
        }
        Some(_) => {}
    }
}
