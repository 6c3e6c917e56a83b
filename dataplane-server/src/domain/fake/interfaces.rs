//! The fake's Interfaces: Links and interface entries: attach/detach recorded per ifindex, counters settable by tests.

use super::*;

impl Interfaces for FakeDataplane {
    fn link(&self, name: &str) -> Result<Option<LinkInfo>, DataplaneError> {
        Ok(self.links.lock().unwrap().get(name).cloned())
    }

    fn attach(&self, name: &str, p: &InterfaceParams, mode: XdpMode) -> Result<Attachment, DataplaneError> {
        self.write("attach")?;
        if self.fail_attach.swap(false, Ordering::SeqCst) {
            return Err(DataplaneError::XdpModeUnsupported { interface: name.to_owned(), mode: "native" });
        }
        self.attached.lock().unwrap().insert(p.link.ifindex, p.slot);
        self.configs.lock().unwrap().insert(p.link.ifindex, p.clone());
        self.stats.lock().unwrap().insert(p.slot, InterfaceStats::ZERO);
        let xdp_mode = if mode == XdpMode::Generic { XdpMode::Generic } else { XdpMode::Native };
        Ok(Attachment { xdp_mode, xdp_link_id: 100 + p.slot, tc_link_id: 200 + p.slot })
    }

    fn update_interface(&self, p: &InterfaceParams) -> Result<(), DataplaneError> {
        self.write("update_interface")?;
        self.configs.lock().unwrap().insert(p.link.ifindex, p.clone());
        Ok(())
    }

    fn detach(&self, ifindex: u32, _slot: u32) -> Result<(), DataplaneError> {
        self.write("detach")?;
        self.attached.lock().unwrap().remove(&ifindex);
        self.configs.lock().unwrap().remove(&ifindex);
        Ok(())
    }

    fn interface_stats(&self, slot: u32) -> Result<InterfaceStats, DataplaneError> {
        Ok(self.stats.lock().unwrap().get(&slot).copied().unwrap_or_default())
    }

    fn adopted(&self) -> Vec<crate::dataplane::AdoptedLinks> {
        self.adopted.lock().unwrap().clone()
    }

    fn forget_links(&self, ifindex: u32) -> Result<(), DataplaneError> {
        self.write("forget_links")?;
        self.adopted.lock().unwrap().retain(|a| a.ifindex != ifindex);
        self.attached.lock().unwrap().remove(&ifindex);
        Ok(())
    }

    fn kernel_interface(&self, ifindex: u32) -> Result<Option<crate::dataplane::KernelInterface>, DataplaneError> {
        let Some(p) = self.configs.lock().unwrap().get(&ifindex).cloned() else { return Ok(None) };
        let Some(name) = self.links.lock().unwrap().iter().find(|(_, l)| l.ifindex == ifindex).map(|(n, _)| n.clone())
        else {
            return Ok(None);
        };
        Ok(Some(crate::dataplane::KernelInterface {
            name,
            slot: p.slot,
            vrf: p.vrf,
            kernel_fib: p.kernel_fib,
            xdp_mode: XdpMode::Native,
        }))
    }
}
