//! In-memory fake of the [`Dataplane`] trait for the domain's unit tests: links, slots and
//! counters in plain collections, with switches to make the next call fail.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
};

use dataplane_common::{maps as names, InterfaceStats};

use crate::dataplane::{Attachment, Dataplane, DataplaneError, MapStatus, ProgramStatus, XdpMode};

#[derive(Default)]
pub struct FakeDataplane {
    links: BTreeMap<String, u32>,
    /// ifindex -> slot, as IFINDEX_SLOTS would hold it.
    attached: Mutex<BTreeMap<u32, u32>>,
    stats: Mutex<BTreeMap<u32, InterfaceStats>>,
    fail_attach: AtomicBool,
}

impl FakeDataplane {
    pub fn with_links(links: &[(&str, u32)]) -> Self {
        Self { links: links.iter().map(|(n, i)| (n.to_string(), *i)).collect(), ..Default::default() }
    }

    /// (ifindex, slot) pairs currently attached.
    pub fn attached(&self) -> Vec<(u32, u32)> {
        self.attached.lock().unwrap().iter().map(|(i, s)| (*i, *s)).collect()
    }

    pub fn fail_next_attach_with_unsupported_mode(&self) {
        self.fail_attach.store(true, Ordering::SeqCst);
    }

    pub fn set_rx_packets(&self, slot: u32, n: u64) {
        self.stats.lock().unwrap().entry(slot).or_default().rx_packets = n;
    }
}

impl Dataplane for FakeDataplane {
    fn ifindex(&self, name: &str) -> Result<Option<u32>, DataplaneError> {
        Ok(self.links.get(name).copied())
    }

    fn attach(&self, slot: u32, name: &str, ifindex: u32, mode: XdpMode) -> Result<Attachment, DataplaneError> {
        if self.fail_attach.swap(false, Ordering::SeqCst) {
            return Err(DataplaneError::XdpModeUnsupported { interface: name.to_owned(), mode: "native" });
        }
        self.attached.lock().unwrap().insert(ifindex, slot);
        self.stats.lock().unwrap().insert(slot, InterfaceStats::ZERO);
        let xdp_mode = if mode == XdpMode::Generic { XdpMode::Generic } else { XdpMode::Native };
        Ok(Attachment { xdp_mode, xdp_link_id: 100 + slot, tc_link_id: 200 + slot })
    }

    fn detach(&self, ifindex: u32) -> Result<(), DataplaneError> {
        self.attached.lock().unwrap().remove(&ifindex);
        Ok(())
    }

    fn interface_stats(&self, slot: u32) -> Result<InterfaceStats, DataplaneError> {
        Ok(self.stats.lock().unwrap().get(&slot).copied().unwrap_or_default())
    }

    fn programs(&self) -> Result<Vec<ProgramStatus>, DataplaneError> {
        Ok(vec![])
    }

    fn maps(&self) -> Result<Vec<MapStatus>, DataplaneError> {
        let keys = self.attached.lock().unwrap().len() as u64;
        Ok(names::ALL
            .iter()
            .map(|name| MapStatus {
                name,
                kind: "fake".into(),
                kernel_id: 0,
                max_entries: dataplane_common::MAX_INTERFACES,
                key_size: 4,
                value_size: 4,
                keys: (*name == names::IFINDEX_SLOTS).then_some(keys),
                pin_path: String::new(),
            })
            .collect())
    }

    fn pin_root(&self) -> String {
        "/fake".into()
    }
}
