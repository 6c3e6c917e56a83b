//! Loads the embedded eBPF object, pins its maps under the bpffs root, and attaches/detaches the
//! programs to interfaces as bpf links (XDP link, TCX link).

use std::{
    collections::HashMap as StdHashMap,
    ffi::CString,
    fs,
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard},
};

use aya::{
    maps::{Array, DevMap, HashMap, LpmTrie, Map, MapInfo, PerCpuArray},
    programs::{links::FdLink, SchedClassifier, TcAttachType, Xdp, XdpMode as AyaXdpMode},
    Ebpf, EbpfLoader,
};
use dataplane_common::{
    maps as names, programs,
    route::{nexthop_kind, IFACE_HAS_IPV4, IFACE_HAS_IPV6, IFACE_KERNEL_FIB, IFACE_PRESENT, ECMP_MAX},
    InterfaceConfig, InterfaceStats, NextHop, NextHopStats,
};
use tracing::{info, warn};

use super::{
    maps::{CounterArray, FlowMaps, Interfaces, NextHops, PolicyMaps, Routes, TxPorts},
    netdev, Attachment, Dataplane, DataplaneError, InterfaceParams, LinkInfo, MapStatus, NextHopParams,
    ProgramStatus, RouteMatch, XdpMode,
};
use crate::net::Prefix;

/// The eBPF object built by build.rs from `dataplane-ebpf`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dataplane"));

/// Version segment of the pin layout: changes only when a map's layout does.
pub const PIN_VERSION: &str = "v1";

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// Where to pin.
#[derive(Clone, Debug)]
pub struct LoaderConfig {
    /// bpffs directory owned by this server, e.g. `/sys/fs/bpf/dataplane`.
    pub bpffs_root: PathBuf,
}

/// The links of one interface; dropping them detaches the programs (they are not pinned yet).
#[expect(dead_code, reason = "held only for their Drop, which closes the link fds and detaches")]
struct InterfaceLinks {
    xdp: FdLink,
    tc: FdLink,
}

pub(super) struct Inner {
    pub(super) ebpf: Ebpf,
    interfaces: Interfaces,
    iface_stats: CounterArray<InterfaceStats>,
    nexthops: NextHops,
    nexthop_stats: CounterArray<NextHopStats>,
    tx_ports: TxPorts,
    routes: Routes,
    policies: PolicyMaps,
    flows: FlowMaps,
    links: StdHashMap<u32, InterfaceLinks>,
}

/// The real dataplane: the programs loaded into the kernel, maps pinned under
/// `<bpffs_root>/v1/maps/<MAP>`.
pub struct KernelDataplane {
    inner: Mutex<Inner>,
    map_pin_dir: PathBuf,
}

impl KernelDataplane {
    /// Loads and verifies both programs and pins every map. Pins left by a previous run of this
    /// server (a crash) are replaced: adopting them is the resilience work's job.
    pub fn load(config: &LoaderConfig) -> Result<Self, DataplaneError> {
        let map_pin_dir = config.bpffs_root.join(PIN_VERSION).join("maps");
        ensure_bpffs(&config.bpffs_root)?;
        fs::create_dir_all(&map_pin_dir).map_err(|source| DataplaneError::Io {
            path: map_pin_dir.clone(),
            op: "create directory",
            source,
        })?;

        let mut ebpf = EbpfLoader::new()
            .load(EBPF_OBJECT)
            .map_err(|e| DataplaneError::Load { source: Box::new(e) })?;

        let xdp: &mut Xdp = program_mut(&mut ebpf, programs::XDP_INGRESS)?;
        xdp.load().map_err(DataplaneError::program(programs::XDP_INGRESS, "load"))?;
        let tc: &mut SchedClassifier = program_mut(&mut ebpf, programs::TC_EGRESS)?;
        tc.load().map_err(DataplaneError::program(programs::TC_EGRESS, "load"))?;

        for name in names::ALL {
            let path = map_pin_dir.join(name);
            if path.exists() {
                warn!(path = %path.display(), "replacing a stale map pin from an earlier run");
                remove_pin(&path)?;
            }
            let map = ebpf.map(name).ok_or(DataplaneError::Missing { what: "map", name })?;
            map.pin(&path).map_err(|e| DataplaneError::Io {
                path: path.clone(),
                op: "pin",
                source: std::io::Error::other(e.to_string()),
            })?;
        }

        fn open<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, DataplaneError>
        where
            T: TryFrom<Map, Error = aya::maps::MapError>,
        {
            T::try_from(take_map(ebpf, name)?).map_err(DataplaneError::map(name, "open"))
        }
        let interfaces: Array<_, InterfaceConfig> = open(&mut ebpf, names::INTERFACES)?;
        let interfaces_high: HashMap<_, u32, InterfaceConfig> = open(&mut ebpf, names::INTERFACES_HIGH)?;
        let iface_stats: PerCpuArray<_, InterfaceStats> = open(&mut ebpf, names::IFACE_STATS)?;
        let nexthops: Array<_, NextHop> = open(&mut ebpf, names::NEXTHOPS)?;
        let nexthop_stats: PerCpuArray<_, NextHopStats> = open(&mut ebpf, names::NEXTHOP_STATS)?;
        let tx_ports: DevMap<_> = open(&mut ebpf, names::TX_PORTS)?;
        let v4: LpmTrie<_, _, _> = open(&mut ebpf, names::ROUTES_V4)?;
        let v6: LpmTrie<_, _, _> = open(&mut ebpf, names::ROUTES_V6)?;
        let policies = PolicyMaps {
            attach: open(&mut ebpf, names::POLICY_ATTACH)?,
            headers: open(&mut ebpf, names::POLICY_TABLE_HDRS)?,
            words: open(&mut ebpf, names::POLICY_WORDS)?,
            v4_src: open(&mut ebpf, names::POLICY_V4_SRC)?,
            v4_dst: open(&mut ebpf, names::POLICY_V4_DST)?,
            v6_src: open(&mut ebpf, names::POLICY_V6_SRC)?,
            v6_dst: open(&mut ebpf, names::POLICY_V6_DST)?,
            l4: open(&mut ebpf, names::POLICY_L4)?,
            actions: open(&mut ebpf, names::POLICY_ACTIONS)?,
            stats: open(&mut ebpf, names::POLICY_RULE_STATS)?,
        };
        let flows = FlowMaps {
            v4: open(&mut ebpf, names::FLOWS_V4)?,
            v6: open(&mut ebpf, names::FLOWS_V6)?,
            config: open(&mut ebpf, names::FLOW_CONFIG)?,
            state: open(&mut ebpf, names::FLOW_STATE)?,
        };

        info!(pins = %map_pin_dir.display(), "eBPF programs loaded, maps pinned");
        Ok(Self {
            inner: Mutex::new(Inner {
                ebpf,
                interfaces: Interfaces::new(interfaces, interfaces_high),
                iface_stats: CounterArray::new(names::IFACE_STATS, iface_stats)?,
                nexthops: NextHops(nexthops),
                nexthop_stats: CounterArray::new(names::NEXTHOP_STATS, nexthop_stats)?,
                tx_ports: TxPorts(tx_ports),
                routes: Routes { v4, v6 },
                policies,
                flows,
                links: StdHashMap::new(),
            }),
            map_pin_dir,
        })
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the kernel half-updated in a way the data
        // here does not reflect (every method rolls back before returning), so keep going.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Detaches every interface and removes the map pins. Called on shutdown: nothing of this
    /// server stays in the kernel until restarts can adopt it.
    pub fn shutdown(&self) {
        let mut inner = self.lock();
        let ifindexes: Vec<u32> = inner.links.keys().copied().collect();
        for ifindex in ifindexes {
            if let Err(e) = detach_locked(&mut inner, ifindex, None) {
                warn!(ifindex, error = %e, "detach on shutdown failed");
            }
        }
        for name in names::ALL {
            let path = self.map_pin_dir.join(name);
            if let Err(e) = remove_pin(&path) {
                warn!(path = %path.display(), error = %e, "removing map pin failed");
            }
        }
        // Remove the directories up to the root if they are now empty; a non-empty one (someone
        // else's pins) stays.
        let mut dir = Some(self.map_pin_dir.as_path());
        for _ in 0..3 {
            match dir {
                Some(d) if fs::remove_dir(d).is_ok() => dir = d.parent(),
                _ => break,
            }
        }
    }
}

pub(super) fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, DataplaneError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf.program_mut(name).ok_or(DataplaneError::Missing { what: "program", name })?;
    prog.try_into().map_err(DataplaneError::program(name, "open"))
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<Map, DataplaneError> {
    ebpf.take_map(name).ok_or(DataplaneError::Missing { what: "map", name })
}

fn remove_pin(path: &Path) -> Result<(), DataplaneError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DataplaneError::Io { path: path.to_owned(), op: "remove pin", source }),
    }
}

fn ensure_bpffs(root: &Path) -> Result<(), DataplaneError> {
    // The root itself may not exist yet: check the closest existing ancestor.
    let mut probe = root;
    while !probe.exists() {
        probe = probe.parent().unwrap_or(Path::new("/"));
    }
    let c = CString::new(probe.as_os_str().as_encoded_bytes()).map_err(|_| DataplaneError::NotBpffs {
        path: root.to_owned(),
    })?;
    // SAFETY: statfs writes into the zeroed struct we pass; `c` is a valid NUL-terminated path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(DataplaneError::Io {
            path: probe.to_owned(),
            op: "statfs",
            source: std::io::Error::last_os_error(),
        });
    }
    if st.f_type as i64 != BPF_FS_MAGIC {
        return Err(DataplaneError::NotBpffs { path: root.to_owned() });
    }
    Ok(())
}

fn link_id(link: &FdLink, program: &'static str) -> Result<u32, DataplaneError> {
    link.info().map(|i| i.id()).map_err(|e| DataplaneError::Link { program, op: "info", source: Box::new(e) })
}

fn attach_xdp(
    ebpf: &mut Ebpf,
    name: &str,
    ifindex: u32,
    mode: XdpMode,
) -> Result<(FdLink, XdpMode), DataplaneError> {
    let xdp: &mut Xdp = program_mut(ebpf, programs::XDP_INGRESS)?;
    let attempt = |xdp: &mut Xdp, m: AyaXdpMode| xdp.attach_to_if_index(ifindex, m);
    let (id, got) = match mode {
        XdpMode::Native => (attempt(xdp, AyaXdpMode::Driver), XdpMode::Native),
        XdpMode::Generic => (attempt(xdp, AyaXdpMode::Skb), XdpMode::Generic),
        // Ask for native explicitly so we know which mode we got; fall back only when the driver
        // says it has no native XDP.
        XdpMode::Auto => match attempt(xdp, AyaXdpMode::Driver) {
            Err(e) if errno(&e) == Some(libc::EOPNOTSUPP) => {
                (attempt(xdp, AyaXdpMode::Skb), XdpMode::Generic)
            }
            other => (other, XdpMode::Native),
        },
    };
    let id = id.map_err(|e| match errno(&e) {
        Some(libc::EOPNOTSUPP) => DataplaneError::XdpModeUnsupported {
            interface: name.to_owned(),
            mode: if got == XdpMode::Native { "native" } else { "generic" },
        },
        Some(libc::EBUSY) | Some(libc::EEXIST) => DataplaneError::XdpBusy { interface: name.to_owned() },
        Some(libc::ENODEV) => DataplaneError::InterfaceGone { interface: name.to_owned() },
        _ => DataplaneError::program(programs::XDP_INGRESS, "attach")(e),
    })?;
    let link = xdp.take_link(id).map_err(DataplaneError::program(programs::XDP_INGRESS, "take link"))?;
    let link = FdLink::try_from(link).map_err(|e| DataplaneError::Link {
        program: programs::XDP_INGRESS,
        op: "convert to fd link",
        source: Box::new(e),
    })?;
    Ok((link, got))
}

fn attach_tc(ebpf: &mut Ebpf, name: &str) -> Result<FdLink, DataplaneError> {
    let tc: &mut SchedClassifier = program_mut(ebpf, programs::TC_EGRESS)?;
    // On kernels >= 6.6 aya attaches through TCX: a bpf link, no clsact qdisc involved.
    let id = tc.attach(name, TcAttachType::Egress).map_err(|e| match errno(&e) {
        Some(libc::ENODEV) => DataplaneError::InterfaceGone { interface: name.to_owned() },
        _ => DataplaneError::program(programs::TC_EGRESS, "attach")(e),
    })?;
    let link = tc.take_link(id).map_err(DataplaneError::program(programs::TC_EGRESS, "take link"))?;
    FdLink::try_from(link).map_err(|e| DataplaneError::Link {
        program: programs::TC_EGRESS,
        op: "convert to fd link",
        source: Box::new(e),
    })
}

/// The errno behind an aya program error, where there is one.
fn errno(e: &aya::programs::ProgramError) -> Option<i32> {
    use aya::programs::ProgramError as P;
    match e {
        P::SyscallError(s) => s.io_error.raw_os_error(),
        P::TcError(aya::programs::tc::TcError::IoError(io)) => io.raw_os_error(),
        P::XdpError(aya::programs::xdp::XdpError::NetlinkError(n)) => {
            std::error::Error::source(n)
                .and_then(|s| s.downcast_ref::<std::io::Error>())
                .and_then(|io| io.raw_os_error())
        }
        _ => None,
    }
}

fn detach_locked(inner: &mut Inner, ifindex: u32, slot: Option<u32>) -> Result<(), DataplaneError> {
    // Stop matching the interface first, then drop the links: closing the last fd of an unpinned
    // link detaches it.
    inner.interfaces.remove(ifindex)?;
    if let Some(slot) = slot {
        inner.tx_ports.clear(slot)?;
    }
    inner.links.remove(&ifindex);
    Ok(())
}

fn interface_config(p: &InterfaceParams) -> InterfaceConfig {
    let mut flags = IFACE_PRESENT;
    if p.link.ipv4.is_some() {
        flags |= IFACE_HAS_IPV4;
    }
    if p.link.ipv6.is_some() {
        flags |= IFACE_HAS_IPV6;
    }
    if p.kernel_fib.is_some() {
        flags |= IFACE_KERNEL_FIB;
    }
    InterfaceConfig {
        slot: p.slot,
        vrf: p.vrf,
        mtu: p.link.mtu,
        flags,
        mac: p.link.mac.0,
        _pad: [0; 2],
        ipv4: p.link.ipv4.map(|a| a.octets()).unwrap_or_default(),
        ipv6: p.link.ipv6.map(|a| a.octets()).unwrap_or_default(),
        fib_table: p.kernel_fib.unwrap_or(0),
    }
}

fn nexthop_value(nh: &NextHopParams) -> NextHop {
    let mut v = NextHop::EMPTY;
    match nh {
        NextHopParams::Encap { tx_slot, ifindex, mtu, dst_mac, src_mac } => {
            v.kind = nexthop_kind::ENCAP;
            v.tx_slot = *tx_slot;
            v.ifindex = *ifindex;
            v.mtu = *mtu;
            v.dst_mac = dst_mac.0;
            v.src_mac = src_mac.0;
        }
        NextHopParams::Unresolved { tx_slot, ifindex, mtu, src_mac } => {
            v.kind = nexthop_kind::UNRESOLVED;
            v.tx_slot = *tx_slot;
            v.ifindex = *ifindex;
            v.mtu = *mtu;
            v.src_mac = src_mac.0;
        }
        NextHopParams::Ecmp { members } => {
            v.kind = nexthop_kind::ECMP;
            v.member_count = members.len().min(ECMP_MAX) as u32;
            for (d, s) in v.members.iter_mut().zip(members) {
                *d = *s;
            }
        }
        NextHopParams::Discard => v.kind = nexthop_kind::DISCARD,
        NextHopParams::Receive => v.kind = nexthop_kind::RECEIVE,
    }
    v
}

impl Dataplane for KernelDataplane {
    fn link(&self, name: &str) -> Result<Option<LinkInfo>, DataplaneError> {
        netdev::link(name)
    }

    fn attach(&self, name: &str, p: &InterfaceParams, mode: XdpMode) -> Result<Attachment, DataplaneError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let ifindex = p.link.ifindex;
        inner.iface_stats.reset(p.slot)?;
        inner.tx_ports.set(p.slot, ifindex)?;
        let undo = |inner: &mut Inner| {
            let _ = inner.interfaces.remove(ifindex);
            let _ = inner.tx_ports.clear(p.slot);
        };
        if let Err(e) = inner.interfaces.insert(ifindex, &interface_config(p)) {
            undo(inner);
            return Err(e);
        }
        let (xdp, xdp_mode) = match attach_xdp(&mut inner.ebpf, name, ifindex, mode) {
            Ok(v) => v,
            Err(e) => {
                undo(inner);
                return Err(e);
            }
        };
        let tc = match attach_tc(&mut inner.ebpf, name) {
            Ok(v) => v,
            Err(e) => {
                drop(xdp);
                undo(inner);
                return Err(e);
            }
        };
        let attachment = Attachment {
            xdp_mode,
            xdp_link_id: link_id(&xdp, programs::XDP_INGRESS)?,
            tc_link_id: link_id(&tc, programs::TC_EGRESS)?,
        };
        inner.links.insert(ifindex, InterfaceLinks { xdp, tc });
        info!(interface = name, ifindex, slot = p.slot, vrf = p.vrf, mode = ?xdp_mode, "attached");
        Ok(attachment)
    }

    fn update_interface(&self, p: &InterfaceParams) -> Result<(), DataplaneError> {
        self.lock().interfaces.insert(p.link.ifindex, &interface_config(p))
    }

    fn detach(&self, ifindex: u32, slot: u32) -> Result<(), DataplaneError> {
        let mut inner = self.lock();
        detach_locked(&mut inner, ifindex, Some(slot))?;
        info!(ifindex, slot, "detached");
        Ok(())
    }

    fn interface_stats(&self, slot: u32) -> Result<InterfaceStats, DataplaneError> {
        self.lock().iface_stats.sum(slot)
    }

    fn set_nexthop(&self, slot: u32, nh: &NextHopParams, fresh: bool) -> Result<(), DataplaneError> {
        let mut inner = self.lock();
        if fresh {
            inner.nexthop_stats.reset(slot)?;
        }
        inner.nexthops.set(slot, &nexthop_value(nh))
    }

    fn clear_nexthop(&self, slot: u32) -> Result<(), DataplaneError> {
        self.lock().nexthops.set(slot, &NextHop::EMPTY)
    }

    fn nexthop_stats(&self, slot: u32) -> Result<NextHopStats, DataplaneError> {
        self.lock().nexthop_stats.sum(slot)
    }

    fn insert_route(&self, vrf: u32, prefix: &Prefix, nexthop_slot: u32) -> Result<(), DataplaneError> {
        self.lock().routes.insert(vrf, prefix, nexthop_slot)
    }

    fn remove_route(&self, vrf: u32, prefix: &Prefix) -> Result<(), DataplaneError> {
        self.lock().routes.remove(vrf, prefix)
    }

    fn lookup_route(&self, vrf: u32, addr: std::net::IpAddr) -> Result<Option<RouteMatch>, DataplaneError> {
        Ok(self
            .lock()
            .routes
            .lookup(vrf, addr)?
            .map(|v| RouteMatch { prefix_len: v.prefix_len as u8, nexthop_slot: v.nexthop }))
    }

    fn write_policy(&self, image: &super::PolicyImage) -> Result<(), DataplaneError> {
        self.lock().policies.write(image)
    }

    fn clear_policy(&self, image: &super::PolicyImage) -> Result<(), DataplaneError> {
        self.lock().policies.clear(image)
    }

    fn set_policy_attachment(&self, slot: u32, direction: u32, word: u32) -> Result<(), DataplaneError> {
        self.lock().policies.set_attachment(slot, direction, word)
    }

    fn rule_stats(&self, first: u32, count: u32) -> Result<Vec<dataplane_common::policy::RuleStats>, DataplaneError> {
        self.lock().policies.rule_stats(first, count)
    }

    fn set_flow_config(&self, slot: u32, cfg: &dataplane_common::flow::FlowConfig) -> Result<(), DataplaneError> {
        self.lock().flows.config.set(slot, cfg, 0).map_err(DataplaneError::map(names::FLOW_CONFIG, "update"))
    }

    fn put_flow(&self, key: &super::FlowKey, value: &dataplane_common::flow::FlowValue) -> Result<(), DataplaneError> {
        self.lock().flows.put(key, value)
    }

    fn get_flow(&self, key: &super::FlowKey) -> Result<Option<dataplane_common::flow::FlowValue>, DataplaneError> {
        self.lock().flows.get(key)
    }

    fn remove_flow(&self, key: &super::FlowKey) -> Result<(), DataplaneError> {
        self.lock().flows.remove(key)
    }

    fn flows(&self) -> Result<Vec<(super::FlowKey, dataplane_common::flow::FlowValue)>, DataplaneError> {
        self.lock().flows.all()
    }

    fn set_holds_resolved(&self, resolved: u64) -> Result<(), DataplaneError> {
        self.lock()
            .flows
            .state
            .set(dataplane_common::flow::STATE_RESOLVED, resolved, 0)
            .map_err(DataplaneError::map(names::FLOW_STATE, "update"))
    }

    fn reinject(&self, ifindex: u32, frame: &[u8]) -> Result<u32, DataplaneError> {
        self.test_run_live(ifindex, frame)
    }

    fn wait_for_readers(&self) -> Result<(), DataplaneError> {
        // MEMBARRIER_CMD_GLOBAL is synchronize_rcu(): every XDP/TC run and test run holds the
        // RCU read lock, so when it returns no run that began before it is still going.
        const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
        // SAFETY: plain syscall with integer arguments.
        let r = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0 as libc::c_long, 0 as libc::c_long) };
        if r != 0 {
            return Err(DataplaneError::Io {
                path: "membarrier".into(),
                op: "MEMBARRIER_CMD_GLOBAL",
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    fn programs(&self) -> Result<Vec<ProgramStatus>, DataplaneError> {
        let inner = self.lock();
        let mut out = Vec::new();
        for (name, kind) in [(programs::XDP_INGRESS, "xdp"), (programs::TC_EGRESS, "sched_cls")] {
            let prog = inner
                .ebpf
                .program(name)
                .ok_or(DataplaneError::Missing { what: "program", name })?;
            let info = prog.info().map_err(DataplaneError::program(name, "info"))?;
            out.push(ProgramStatus { name: name.to_owned(), kind, kernel_id: info.id(), tag: info.tag() });
        }
        Ok(out)
    }

    fn maps(&self) -> Result<Vec<MapStatus>, DataplaneError> {
        let inner = self.lock();
        let mut out = Vec::new();
        for name in names::ALL {
            let path = self.map_pin_dir.join(name);
            let info = MapInfo::from_pin(&path).map_err(DataplaneError::map(name, "info"))?;
            let kind = info
                .map_type()
                .map(|t| map_type_name(t).to_owned())
                .unwrap_or_else(|_| "unknown".to_owned());
            let keys = match *name {
                names::INTERFACES => Some(inner.interfaces.count_direct()),
                names::INTERFACES_HIGH => Some(inner.interfaces.count_high()),
                _ => None,
            };
            out.push(MapStatus {
                name,
                kind,
                kernel_id: info.id(),
                max_entries: info.max_entries(),
                key_size: info.key_size(),
                value_size: info.value_size(),
                keys,
                pin_path: path.display().to_string(),
            });
        }
        Ok(out)
    }

    fn pin_root(&self) -> String {
        self.map_pin_dir
            .parent()
            .and_then(Path::parent)
            .unwrap_or(&self.map_pin_dir)
            .display()
            .to_string()
    }
}

fn map_type_name(t: aya::maps::MapType) -> &'static str {
    use aya::maps::MapType as T;
    match t {
        T::Hash => "hash",
        T::Array => "array",
        T::PerCpuArray => "percpu_array",
        T::PerCpuHash => "percpu_hash",
        T::LruHash => "lru_hash",
        T::LpmTrie => "lpm_trie",
        T::DevMap => "devmap",
        T::DevMapHash => "devmap_hash",
        T::RingBuf => "ringbuf",
        _ => "other",
    }
}
