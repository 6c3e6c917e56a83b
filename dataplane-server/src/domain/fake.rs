//! In-memory fake of the [`Dataplane`] trait for the domain's unit tests: links, slots, next
//! hops, routes and counters in plain collections, with switches to make calls fail.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, AtomicI64, Ordering},
        Mutex,
    },
};

use dataplane_common::{maps as names, InterfaceStats, NextHopStats};

use crate::{
    dataplane::{
        Attachment, DataplaneError, Fib4, Flows, InterfaceParams, Interfaces, Lifecycle, LinkInfo, MapStatus,
        NextHopParams, NextHops, Policies, ProgramStatus, RouteMatch, Routes, XdpMode,
    },
    net::{Mac, Prefix},
};

pub struct FakeDataplane {
    links: Mutex<BTreeMap<String, LinkInfo>>,
    /// Links "left pinned by an earlier run".
    pub adopted: Mutex<Vec<crate::dataplane::AdoptedLinks>>,
    /// ifindex -> what attach/update_interface last wrote.
    configs: Mutex<BTreeMap<u32, InterfaceParams>>,
    /// ifindex -> slot, as INTERFACES would hold it.
    attached: Mutex<BTreeMap<u32, u32>>,
    stats: Mutex<BTreeMap<u32, InterfaceStats>>,
    nexthops: Mutex<BTreeMap<u32, NextHopParams>>,
    routes: Mutex<BTreeMap<(u32, Prefix), u32>>,
    fail_attach: AtomicBool,
    /// Route inserts left before one fails; negative: never.
    route_inserts_left: AtomicI64,
    /// Policy tables written and not cleared.
    pub policy_tables: Mutex<BTreeMap<u32, crate::dataplane::PolicyImage>>,
    /// (slot, direction) -> attachment word.
    pub policy_attach: Mutex<BTreeMap<(u32, u32), u32>>,
    pub readers_waited: AtomicI64,
    pub flow_config: Mutex<BTreeMap<u32, dataplane_common::flow::FlowConfig>>,
    pub flows: Mutex<BTreeMap<crate::dataplane::FlowKey, dataplane_common::flow::FlowValue>>,
    pub holds_resolved: AtomicI64,
    pub generation: AtomicI64,
    /// (ifindex, frame) of every re-injection.
    pub reinjected: Mutex<Vec<(u32, Vec<u8>)>>,
    /// `FIB4_CHUNKS` and `FIB4_VRFS` (non-zero roots only).
    pub fib4_pool: Mutex<Vec<dataplane_common::route::fib4::Chunk>>,
    pub fib4_roots: Mutex<BTreeMap<u32, u32>>,
    /// `ROUTE4_RECORDS` (valid ones) and its high-water mark.
    pub records: Mutex<BTreeMap<u32, dataplane_common::RouteRecord4>>,
    pub records_mark: AtomicI64,
    /// Kernel writes left before one fails (see `fail_write`); negative: never.
    writes_left: AtomicI64,
    /// Every kernel write made (method names), failed ones included.
    write_log: Mutex<Vec<&'static str>>,
}

impl Default for FakeDataplane {
    fn default() -> Self {
        Self {
            links: Mutex::default(),
            configs: Mutex::default(),
            adopted: Mutex::default(),
            attached: Mutex::default(),
            stats: Mutex::default(),
            nexthops: Mutex::default(),
            routes: Mutex::default(),
            fail_attach: AtomicBool::new(false),
            route_inserts_left: AtomicI64::new(-1),
            policy_tables: Mutex::default(),
            policy_attach: Mutex::default(),
            readers_waited: AtomicI64::new(0),
            flow_config: Mutex::default(),
            flows: Mutex::default(),
            holds_resolved: AtomicI64::new(0),
            generation: AtomicI64::new(0),
            reinjected: Mutex::default(),
            fib4_pool: Mutex::new(vec![[0; 256]; Self::FIB4_CHUNKS]),
            fib4_roots: Mutex::default(),
            records: Mutex::default(),
            records_mark: AtomicI64::new(0),
            writes_left: AtomicI64::new(-1),
            write_log: Mutex::default(),
        }
    }
}

impl FakeDataplane {
    /// Every fake link has this MAC.
    pub const MAC: Mac = Mac([2, 0, 0, 0, 0, 0xaa]);
    /// The fake's flat-table pool: room for a few roots and their chunks.
    pub const FIB4_CHUNKS: usize = 1024;

    /// A fake whose flat-table pool has `chunks` chunks.
    pub fn with_fib4_chunks(chunks: usize) -> Self {
        Self { fib4_pool: Mutex::new(vec![[0; 256]; chunks]), ..Default::default() }
    }

    pub fn with_links(links: &[(&str, u32)]) -> Self {
        let links = links
            .iter()
            .map(|(n, i)| (n.to_string(), LinkInfo { ifindex: *i, mtu: 1500, mac: Self::MAC, ipv4: None, ipv6: None }))
            .collect();
        Self { links: Mutex::new(links), ..Default::default() }
    }

    /// Replaces (or creates) a link, as the kernel would after `ip link set`.
    pub fn set_link(&self, name: &str, info: LinkInfo) {
        self.links.lock().unwrap().insert(name.to_owned(), info);
    }

    /// What the interface entry of `ifindex` holds.
    pub fn config(&self, ifindex: u32) -> Option<InterfaceParams> {
        self.configs.lock().unwrap().get(&ifindex).cloned()
    }

    /// (ifindex, slot) pairs currently attached.
    pub fn attached(&self) -> Vec<(u32, u32)> {
        self.attached.lock().unwrap().iter().map(|(i, s)| (*i, *s)).collect()
    }

    pub fn fail_next_attach_with_unsupported_mode(&self) {
        self.fail_attach.store(true, Ordering::SeqCst);
    }

    /// The next route insert after `n` successful ones fails.
    pub fn fail_route_insert_after(&self, n: i64) {
        self.route_inserts_left.store(n, Ordering::SeqCst);
    }

    /// The `n`th kernel write from now (1: the next one) fails and changes nothing; every
    /// method that changes kernel state counts as one write.
    pub fn fail_write(&self, n: i64) {
        self.writes_left.store(n, Ordering::SeqCst);
    }

    /// The kernel writes made so far (method names), the failed one included.
    pub fn write_log(&self) -> Vec<&'static str> {
        self.write_log.lock().unwrap().clone()
    }

    /// Counts a kernel write named `what`; the error if it is the one `fail_write` chose.
    fn write(&self, what: &'static str) -> Result<(), DataplaneError> {
        self.write_log.lock().unwrap().push(what);
        if self.writes_left.fetch_sub(1, Ordering::SeqCst) == 1 {
            return Err(DataplaneError::SlotOutOfRange { map: what, slot: 0, max: 0 });
        }
        Ok(())
    }

    /// Everything the fake kernel holds, to compare before and after a failed batch; without
    /// `times`, flows' timestamps read 0 (to compare runs made at different times).
    pub fn snapshot(&self, times: bool) -> (String, Vec<dataplane_common::route::fib4::Chunk>) {
        let mut flows = self.flows.lock().unwrap().clone();
        if !times {
            for v in flows.values_mut() {
                (v.created_ns, v.last_seen_ns) = (0, 0);
            }
        }
        let maps = format!(
            "{:?}",
            (
                (&*self.links.lock().unwrap(), &*self.configs.lock().unwrap(), &*self.attached.lock().unwrap()),
                (&*self.nexthops.lock().unwrap(), &*self.routes.lock().unwrap(), &*self.records.lock().unwrap()),
                (&*self.policy_tables.lock().unwrap(), &*self.policy_attach.lock().unwrap()),
                (&*self.flow_config.lock().unwrap(), flows),
                (&*self.fib4_roots.lock().unwrap(), self.records_mark.load(Ordering::SeqCst)),
                (self.generation.load(Ordering::SeqCst), self.holds_resolved.load(Ordering::SeqCst)),
            )
        );
        (maps, self.fib4_pool.lock().unwrap().clone())
    }

    pub fn set_rx_packets(&self, slot: u32, n: u64) {
        self.stats.lock().unwrap().entry(slot).or_default().rx_packets = n;
    }

    pub fn nexthop(&self, slot: u32) -> Option<NextHopParams> {
        self.nexthops.lock().unwrap().get(&slot).cloned()
    }

    /// What the tries hold.
    pub fn routes(&self) -> Vec<(u32, Prefix, u32)> {
        self.routes.lock().unwrap().iter().map(|((v, p), s)| (*v, *p, *s)).collect()
    }

    /// Every route the kernel has a trace of: the tries' and the IPv4 records'.
    pub fn kernel_routes(&self) -> Vec<(u32, Prefix, u32)> {
        let mut all: Vec<(u32, Prefix, u32)> = self.routes();
        for r in self.records.lock().unwrap().values() {
            all.push((
                r.vrf,
                Prefix::containing(IpAddr::V4(std::net::Ipv4Addr::from(r.addr)), r.prefix_len),
                r.nexthop,
            ));
        }
        all.sort();
        all.dedup();
        all
    }

    /// The maps `other` holds, as a restarted server finds them: routes, records, flat tables.
    pub fn copy_maps_from(&self, other: &FakeDataplane) {
        *self.routes.lock().unwrap() = other.routes.lock().unwrap().clone();
        *self.records.lock().unwrap() = other.records.lock().unwrap().clone();
        self.records_mark.store(other.records_mark.load(Ordering::SeqCst), Ordering::SeqCst);
        *self.fib4_pool.lock().unwrap() = other.fib4_pool.lock().unwrap().clone();
        *self.fib4_roots.lock().unwrap() = other.fib4_roots.lock().unwrap().clone();
    }
}

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
}

impl NextHops for FakeDataplane {
    fn set_nexthop(&self, slot: u32, nh: &NextHopParams, _fresh: bool) -> Result<(), DataplaneError> {
        self.write("set_nexthop")?;
        self.nexthops.lock().unwrap().insert(slot, nh.clone());
        Ok(())
    }

    fn clear_nexthop(&self, slot: u32) -> Result<(), DataplaneError> {
        self.write("clear_nexthop")?;
        self.nexthops.lock().unwrap().remove(&slot);
        Ok(())
    }

    fn nexthop_stats(&self, _slot: u32) -> Result<NextHopStats, DataplaneError> {
        Ok(NextHopStats::default())
    }
}

impl Routes for FakeDataplane {
    fn insert_route(&self, vrf: u32, prefix: &Prefix, nexthop_slot: u32) -> Result<(), DataplaneError> {
        self.write("insert_route")?;
        if self.route_inserts_left.fetch_sub(1, Ordering::SeqCst) == 0 {
            return Err(DataplaneError::SlotOutOfRange { map: "ROUTES_V4", slot: 0, max: 0 });
        }
        self.routes.lock().unwrap().insert((vrf, *prefix), nexthop_slot);
        Ok(())
    }

    fn remove_route(&self, vrf: u32, prefix: &Prefix) -> Result<(), DataplaneError> {
        self.write("remove_route")?;
        self.routes.lock().unwrap().remove(&(vrf, *prefix));
        Ok(())
    }

    fn lookup_route(&self, vrf: u32, addr: IpAddr) -> Result<Option<RouteMatch>, DataplaneError> {
        if let (IpAddr::V4(a), Some(&root)) = (addr, self.fib4_roots.lock().unwrap().get(&vrf)) {
            let pool = self.fib4_pool.lock().unwrap();
            let found = crate::dataplane::fib4::walk(root, u32::from(a), |c, i| pool[c as usize][i]);
            return Ok(found.map(|(prefix_len, nexthop_slot)| RouteMatch { prefix_len, nexthop_slot }));
        }
        let routes = self.routes.lock().unwrap();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        Ok((0..=max).rev().find_map(|len| {
            routes
                .get(&(vrf, Prefix::containing(addr, len)))
                .map(|&nexthop_slot| RouteMatch { prefix_len: len, nexthop_slot })
        }))
    }

    fn dump_routes(&self) -> Result<Vec<(u32, Prefix, u32)>, DataplaneError> {
        Ok(self.routes())
    }

    fn route4_capacity(&self) -> u32 {
        dataplane_common::MAX_ROUTES
    }

    fn route4_reserve(&self, slots: u32) -> Result<(), DataplaneError> {
        self.write("route4_reserve")?;
        self.records_mark.store(i64::from(slots), Ordering::SeqCst);
        Ok(())
    }

    fn route4_store(&self, records: &[(u32, dataplane_common::RouteRecord4)]) -> Result<(), DataplaneError> {
        self.write("route4_store")?;
        let mark = self.records_mark.load(Ordering::SeqCst);
        let mut map = self.records.lock().unwrap();
        for (slot, r) in records {
            assert!(i64::from(*slot) < mark, "record {slot} written above the high-water mark {mark}");
            map.insert(*slot, *r);
        }
        Ok(())
    }

    fn route4_clear(&self, slots: &[u32]) -> Result<(), DataplaneError> {
        self.write("route4_clear")?;
        let mut map = self.records.lock().unwrap();
        for slot in slots {
            map.remove(slot);
        }
        Ok(())
    }

    fn route4_records(&self) -> Result<Vec<(u32, dataplane_common::RouteRecord4)>, DataplaneError> {
        Ok(self.records.lock().unwrap().iter().map(|(s, r)| (*s, *r)).collect())
    }
}

impl Fib4 for FakeDataplane {
    fn fib4_capacity(&self) -> u32 {
        self.fib4_pool.lock().unwrap().len() as u32
    }

    fn fib4_store(&self, chunk: u32, first: usize, values: &[u32]) -> Result<(), DataplaneError> {
        self.write("fib4_store")?;
        let mut pool = self.fib4_pool.lock().unwrap();
        let c = pool.get_mut(chunk as usize).ok_or(DataplaneError::SlotOutOfRange {
            map: names::FIB4_CHUNKS,
            slot: chunk,
            max: 0,
        })?;
        c[first..first + values.len()].copy_from_slice(values);
        Ok(())
    }

    fn fib4_set_root(&self, vrf: u32, root: u32) -> Result<(), DataplaneError> {
        self.write("fib4_set_root")?;
        let mut roots = self.fib4_roots.lock().unwrap();
        if root == 0 {
            roots.remove(&vrf);
        } else {
            roots.insert(vrf, root);
        }
        Ok(())
    }

    fn fib4_roots(&self, vrfs: &[u32]) -> Result<Vec<(u32, u32)>, DataplaneError> {
        let roots = self.fib4_roots.lock().unwrap();
        Ok(vrfs.iter().filter_map(|v| roots.get(v).map(|r| (*v, *r))).collect())
    }

    fn fib4_load(&self, chunk: u32) -> Result<dataplane_common::route::fib4::Chunk, DataplaneError> {
        self.fib4_pool.lock().unwrap().get(chunk as usize).copied().ok_or(DataplaneError::SlotOutOfRange {
            map: names::FIB4_CHUNKS,
            slot: chunk,
            max: 0,
        })
    }
}

impl Policies for FakeDataplane {
    fn write_policy(&self, image: &crate::dataplane::PolicyImage) -> Result<(), DataplaneError> {
        self.write("write_policy")?;
        self.policy_tables.lock().unwrap().insert(image.table, image.clone());
        Ok(())
    }

    fn clear_policy(&self, image: &crate::dataplane::PolicyImage) -> Result<(), DataplaneError> {
        self.write("clear_policy")?;
        self.policy_tables.lock().unwrap().remove(&image.table);
        Ok(())
    }

    fn set_policy_attachment(&self, slot: u32, direction: u32, word: u32) -> Result<(), DataplaneError> {
        self.write("set_policy_attachment")?;
        self.policy_attach.lock().unwrap().insert((slot, direction), word);
        Ok(())
    }

    fn rule_stats(&self, _first: u32, count: u32) -> Result<Vec<dataplane_common::policy::RuleStats>, DataplaneError> {
        Ok(vec![Default::default(); count as usize])
    }
}

impl Flows for FakeDataplane {
    fn set_flow_config(&self, slot: u32, cfg: &dataplane_common::flow::FlowConfig) -> Result<(), DataplaneError> {
        self.write("set_flow_config")?;
        self.flow_config.lock().unwrap().insert(slot, *cfg);
        Ok(())
    }

    fn put_flow(
        &self,
        key: &crate::dataplane::FlowKey,
        value: &dataplane_common::flow::FlowValue,
    ) -> Result<(), DataplaneError> {
        self.write("put_flow")?;
        self.flows.lock().unwrap().insert(*key, *value);
        Ok(())
    }

    fn get_flow(
        &self,
        key: &crate::dataplane::FlowKey,
    ) -> Result<Option<dataplane_common::flow::FlowValue>, DataplaneError> {
        Ok(self.flows.lock().unwrap().get(key).copied())
    }

    fn remove_flow(&self, key: &crate::dataplane::FlowKey) -> Result<(), DataplaneError> {
        self.write("remove_flow")?;
        self.flows.lock().unwrap().remove(key);
        Ok(())
    }

    fn flows(&self) -> Result<Vec<(crate::dataplane::FlowKey, dataplane_common::flow::FlowValue)>, DataplaneError> {
        Ok(self.flows.lock().unwrap().iter().map(|(k, v)| (*k, *v)).collect())
    }

    fn set_holds_resolved(&self, resolved: u64) -> Result<(), DataplaneError> {
        self.write("set_holds_resolved")?;
        self.holds_resolved.store(resolved as i64, Ordering::SeqCst);
        Ok(())
    }

    fn holds_created(&self) -> Result<u64, DataplaneError> {
        Ok(0)
    }

    fn reinject(&self, ifindex: u32, frame: &[u8]) -> Result<u32, DataplaneError> {
        self.reinjected.lock().unwrap().push((ifindex, frame.to_vec()));
        Ok(4)
    }
}

impl Lifecycle for FakeDataplane {
    fn upgrade(&self, _object: Option<&[u8]>) -> Result<Vec<ProgramStatus>, DataplaneError> {
        self.programs()
    }

    fn reset(&self) {
        self.attached.lock().unwrap().clear();
        self.routes.lock().unwrap().clear();
        self.nexthops.lock().unwrap().clear();
    }

    fn programs_object(&self) -> Option<u64> {
        None
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
                keys: (*name == names::INTERFACES).then_some(keys),
                pin_path: String::new(),
            })
            .collect())
    }

    fn pin_root(&self) -> String {
        "/fake".into()
    }

    fn set_generation(&self, generation: u64) -> Result<(), DataplaneError> {
        self.write("set_generation")?;
        self.generation.store(generation as i64, Ordering::SeqCst);
        Ok(())
    }

    fn generation(&self) -> Result<u64, DataplaneError> {
        Ok(self.generation.load(Ordering::SeqCst) as u64)
    }

    fn wait_for_readers(&self) -> Result<(), DataplaneError> {
        self.readers_waited.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}
