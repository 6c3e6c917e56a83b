//! Interfaces in the state file: name, ifindex, slot, VRF and XDP modes; and taking them back over
//! the links the dataplane adopted.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{
    dataplane::{Attachment, Dataplane, InterfaceParams, XdpMode},
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
    /// their configuration refreshed from the link; the links of the others are let go.
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
            if link.ifindex != i.ifindex || !state.slots.reserve(i.slot) {
                report.dropped.push(format!("interface {}: now ifindex {}", i.name, link.ifindex));
                continue;
            }
            let kernel_fib = match state.vrfs.get(&i.vrf) {
                Some(VrfMode::KernelFib { table }) => Some(*table),
                _ => None,
            };
            // The link may have changed while no server ran (MTU, MAC, addresses).
            self.dataplane.update_interface(&InterfaceParams {
                slot: i.slot,
                vrf: i.vrf,
                link: link.clone(),
                kernel_fib,
            })?;
            let attachment = Attachment { xdp_mode: i.xdp_mode, xdp_link_id, tc_link_id };
            state
                .interfaces
                .insert(i.name, InterfaceEntry { link, vrf: i.vrf, slot: i.slot, requested: i.requested, attachment });
            kept_ifindexes.push(i.ifindex);
        }
        for (ifindex, _) in adopted.iter().filter(|(i, _)| !kept_ifindexes.contains(i)) {
            // Attached by a run that crashed before it recorded the interface, or whose link
            // changed: not ours to keep.
            self.dataplane.forget_links(*ifindex)?;
            report.dropped.push(format!("links of ifindex {ifindex}: not in the state file"));
        }
        report.interfaces = state.interfaces.len();
        Ok(())
    }
}
