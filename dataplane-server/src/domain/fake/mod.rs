//! In-memory fake of the kernel seam for the domain's unit tests, split as `dataplane/` is: the
//! state (links, slots, next hops, routes, counters in plain collections) and the switches that
//! make calls fail are here, each trait's impl in the file of its concern. Every write that
//! would change kernel state counts toward `fail_write`, so a test can fail any one of them.

mod fib4;
mod flows;
mod interfaces;
mod lifecycle;
mod nexthops;
mod policies;
mod routes;

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
        NextHopParams, NextHops, PinHealth, PinRepair, Policies, ProgramStatus, RouteMatch, Routes, XdpMode,
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
    /// What `pins_id` answers (a test sets another to play a foreign state file).
    pub pins_id: AtomicI64,
    /// (ifindex, frame) of every re-injection.
    pub reinjected: Mutex<Vec<(u32, Vec<u8>)>>,
    /// Frames sent out of interfaces (packet-out): ifindex, frame.
    pub transmitted: Mutex<Vec<(u32, Vec<u8>)>>,
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
    /// What `pin_health` reports (the fake has no pins to damage).
    pub pin_health: Mutex<PinHealth>,
    /// Calls of `check_pins`.
    pub pin_checks: AtomicI64,
    /// Set by `crash_at`: the write it chose fails and so does every one after it.
    crashed: AtomicBool,
    /// Run at the crash, before the failing write (see `crash_at`).
    on_crash: Mutex<Option<CrashHook>>,
}

/// What a test records at the instant of a simulated crash (the files beside the maps).
pub type CrashHook = Box<dyn FnOnce() + Send>;

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
            pins_id: AtomicI64::new(1),
            reinjected: Mutex::default(),
            transmitted: Mutex::default(),
            fib4_pool: Mutex::new(vec![[0; 256]; Self::FIB4_CHUNKS]),
            fib4_roots: Mutex::default(),
            records: Mutex::default(),
            records_mark: AtomicI64::new(0),
            writes_left: AtomicI64::new(-1),
            write_log: Mutex::default(),
            pin_health: Mutex::default(),
            pin_checks: AtomicI64::new(0),
            crashed: AtomicBool::new(false),
            on_crash: Mutex::default(),
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

    /// A crash before the `n`th kernel write from now (1: the next one): `hook` runs (to take
    /// what the files hold at that instant), then that write and every later one fail and
    /// change nothing, so not even the in-process undo reaches the maps, as when the process
    /// dies. The maps then stay as the crash left them, for `restarted`.
    pub fn crash_at(&self, n: i64, hook: CrashHook) {
        *self.on_crash.lock().unwrap() = Some(hook);
        self.writes_left.store(n, Ordering::SeqCst);
    }

    /// Whether `crash_at`'s write came.
    pub fn has_crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }

    /// The kernel writes made so far (method names), the failed one included.
    pub fn write_log(&self) -> Vec<&'static str> {
        self.write_log.lock().unwrap().clone()
    }

    /// Counts a kernel write named `what`; the error if it is the one `fail_write` chose.
    fn write(&self, what: &'static str) -> Result<(), DataplaneError> {
        self.write_log.lock().unwrap().push(what);
        let fail = Err(DataplaneError::SlotOutOfRange { map: what, slot: 0, max: 0 });
        if self.crashed.load(Ordering::SeqCst) {
            return fail;
        }
        if self.writes_left.fetch_sub(1, Ordering::SeqCst) == 1 {
            if let Some(hook) = self.on_crash.lock().unwrap().take() {
                self.crashed.store(true, Ordering::SeqCst);
                hook();
            }
            return fail;
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

    /// What forwards, as the maps hold it (not where: slots of tables and chunks may differ
    /// between runs): every route, next hop, attachment word, attached policy table and flow
    /// (key and action).
    pub fn forwarding(&self) -> String {
        let flows: Vec<_> = self.flows.lock().unwrap().iter().map(|(k, v)| (*k, v.action, v.nexthop)).collect();
        // The tables attachments point at (a retired one forwards nothing, and a restart
        // reclaims it).
        let attached: std::collections::BTreeSet<u32> =
            self.policy_attach.lock().unwrap().values().filter(|w| **w != 0).map(|w| (w & 0xffff) - 1).collect();
        let tables: Vec<u32> =
            self.policy_tables.lock().unwrap().keys().copied().filter(|t| attached.contains(t)).collect();
        format!(
            "{:?}",
            (
                self.kernel_routes(),
                &*self.nexthops.lock().unwrap(),
                &*self.policy_attach.lock().unwrap(),
                tables,
                flows,
                &*self.flow_config.lock().unwrap(),
            )
        )
    }

    /// The kernel a server restarted after this one died finds: the same links (those attached
    /// adopted), and every map as it is.
    pub fn restarted(&self) -> FakeDataplane {
        let adopted = self
            .attached
            .lock()
            .unwrap()
            .iter()
            .map(|(&ifindex, &slot)| crate::dataplane::AdoptedLinks {
                ifindex,
                xdp_link_id: 100 + slot,
                tc_link_id: 200 + slot,
            })
            .collect();
        let b = FakeDataplane {
            links: Mutex::new(self.links.lock().unwrap().clone()),
            adopted: Mutex::new(adopted),
            configs: Mutex::new(self.configs.lock().unwrap().clone()),
            attached: Mutex::new(self.attached.lock().unwrap().clone()),
            stats: Mutex::new(self.stats.lock().unwrap().clone()),
            nexthops: Mutex::new(self.nexthops.lock().unwrap().clone()),
            policy_tables: Mutex::new(self.policy_tables.lock().unwrap().clone()),
            policy_attach: Mutex::new(self.policy_attach.lock().unwrap().clone()),
            flow_config: Mutex::new(self.flow_config.lock().unwrap().clone()),
            flows: Mutex::new(self.flows.lock().unwrap().clone()),
            holds_resolved: AtomicI64::new(self.holds_resolved.load(Ordering::SeqCst)),
            generation: AtomicI64::new(self.generation.load(Ordering::SeqCst)),
            ..Default::default()
        };
        b.copy_maps_from(self);
        b
    }

    /// The maps `other` holds, as a restarted server finds them (every one; not its links).
    pub fn copy_maps_from(&self, other: &FakeDataplane) {
        *self.routes.lock().unwrap() = other.routes.lock().unwrap().clone();
        *self.records.lock().unwrap() = other.records.lock().unwrap().clone();
        self.records_mark.store(other.records_mark.load(Ordering::SeqCst), Ordering::SeqCst);
        *self.fib4_pool.lock().unwrap() = other.fib4_pool.lock().unwrap().clone();
        *self.fib4_roots.lock().unwrap() = other.fib4_roots.lock().unwrap().clone();
        *self.nexthops.lock().unwrap() = other.nexthops.lock().unwrap().clone();
        *self.configs.lock().unwrap() = other.configs.lock().unwrap().clone();
        *self.attached.lock().unwrap() = other.attached.lock().unwrap().clone();
        *self.policy_tables.lock().unwrap() = other.policy_tables.lock().unwrap().clone();
        *self.policy_attach.lock().unwrap() = other.policy_attach.lock().unwrap().clone();
        *self.flow_config.lock().unwrap() = other.flow_config.lock().unwrap().clone();
        *self.flows.lock().unwrap() = other.flows.lock().unwrap().clone();
        self.generation.store(other.generation.load(Ordering::SeqCst), Ordering::SeqCst);
        self.pins_id.store(other.pins_id.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}
