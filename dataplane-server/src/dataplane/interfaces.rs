//! Interfaces: the ifindex -> entry maps the programs start from (`INTERFACES`,
//! `INTERFACES_HIGH`), their counters (`IFACE_STATS`), TX ports (`TX_PORTS`), and the pinned XDP
//! and TCX links that attach the programs.
//!
//! An interface's entry also carries what the packet path would otherwise look up per packet in
//! other maps (flow mode, policy attachment flags, the VRF's IPv4 flat-table root): the concerns
//! that own those maps patch the entries through [`InterfaceMap`].

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, Ipv6Addr},
};

use aya::{
    maps::{Array, DevMap, HashMap, MapData, MapError},
    programs::{links::FdLink, SchedClassifier, TcAttachType, Xdp, XdpMode as AyaXdpMode},
};
use dataplane_common::{
    maps as names, programs,
    route::{IFACE_HAS_IPV4, IFACE_HAS_IPV6, IFACE_KERNEL_FIB, IFACE_PRESENT},
    InterfaceConfig, InterfaceStats, MAX_DIRECT_IFINDEX,
};
use tracing::info;

use super::{
    loader::{link_id, open_map, remove_pin, AdoptedLinks, Inner, InterfaceLinks, PinDirs},
    netdev, DataplaneError, KernelDataplane,
};
use crate::net::Mac;

/// How to attach the XDP program. In the state file as `"auto"`, `"native"`, `"generic"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native where the driver supports it, generic otherwise.
    Auto,
    /// Driver (native) XDP only.
    Native,
    /// Generic (skb) XDP.
    Generic,
}

/// Where a program is hooked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    XdpIngress,
    TcEgress,
}

/// What attaching the programs to one interface produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// The mode the XDP program actually runs in: `Native` or `Generic`, never `Auto`.
    pub xdp_mode: XdpMode,
    /// Kernel bpf link ids.
    pub xdp_link_id: u32,
    pub tc_link_id: u32,
}

/// A kernel network device, as found in the server's network namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    pub ifindex: u32,
    pub mtu: u32,
    pub mac: Mac,
    /// An address of the device (the first IPv4, the first non-link-local IPv6): the source of
    /// the ICMP errors the dataplane sends from it.
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

/// What the programs need to know about an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceParams {
    pub slot: u32,
    pub vrf: u32,
    pub link: LinkInfo,
    /// The VRF forwards by the kernel's FIB, in this kernel table (0: the kernel's own choice
    /// for this interface).
    pub kernel_fib: Option<u32>,
}

/// The kernel side of interfaces.
pub trait Interfaces {
    /// The link called `name` in the server's network namespace, `None` if there is none.
    fn link(&self, name: &str) -> Result<Option<LinkInfo>, DataplaneError>;

    /// Registers the interface (config, counters zeroed, devmap entry) and attaches the XDP
    /// ingress and TC egress programs to it.
    fn attach(&self, name: &str, params: &InterfaceParams, mode: XdpMode) -> Result<Attachment, DataplaneError>;

    /// Rewrites the configuration of an attached interface (its MTU, MAC, addresses or VRF
    /// changed) without touching its attachment or counters.
    fn update_interface(&self, params: &InterfaceParams) -> Result<(), DataplaneError>;

    /// Unregisters the interface and detaches both programs from it.
    fn detach(&self, ifindex: u32, slot: u32) -> Result<(), DataplaneError>;

    /// Counters of interface `slot`, summed over CPUs.
    fn interface_stats(&self, slot: u32) -> Result<InterfaceStats, DataplaneError>;

    /// Interfaces whose pinned links an earlier run left and this one adopted.
    fn adopted(&self) -> Vec<AdoptedLinks>;
    /// Unpins and drops the adopted links of `ifindex` (detaching), clearing its entry.
    fn forget_links(&self, ifindex: u32) -> Result<(), DataplaneError>;
    /// What the kernel holds for an interface with links on `ifindex`: its entry, its link's
    /// name and XDP mode; `None` without an entry or a link. What a restart adopts when its state
    /// file does not describe the interface.
    fn kernel_interface(&self, ifindex: u32) -> Result<Option<KernelInterface>, DataplaneError>;
}

/// An interface as the kernel has it (see [`Interfaces::kernel_interface`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelInterface {
    pub name: String,
    pub slot: u32,
    pub vrf: u32,
    /// The kernel table of a kernel-FIB interface (`IFACE_KERNEL_FIB`).
    pub kernel_fib: Option<u32>,
    pub xdp_mode: XdpMode,
}

impl Interfaces for KernelDataplane {
    fn link(&self, name: &str) -> Result<Option<LinkInfo>, DataplaneError> {
        netdev::link(name)
    }

    fn attach(&self, name: &str, p: &InterfaceParams, mode: XdpMode) -> Result<Attachment, DataplaneError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner.iface_stats.reset(p.slot)?;
        inner.tx_ports.set(p.slot, p.link.ifindex)?;
        match try_attach(inner, &self.dirs, name, p, mode) {
            Ok(attachment) => {
                info!(interface = name, ifindex = p.link.ifindex, slot = p.slot, vrf = p.vrf, mode = ?attachment.xdp_mode, "attached");
                Ok(attachment)
            }
            Err(e) => {
                // Nothing of the interface stays: its entry and TX port go; its links, if any
                // were made, were dropped unpinned, which detached them.
                let _ = inner.interfaces.remove(p.link.ifindex);
                let _ = inner.tx_ports.clear(p.slot);
                Err(e)
            }
        }
    }

    fn update_interface(&self, p: &InterfaceParams) -> Result<(), DataplaneError> {
        let mut inner = self.lock();
        let extra = inner.entry_extras(p)?;
        inner.interfaces.insert(p.link.ifindex, &interface_config(p, extra))
    }

    fn detach(&self, ifindex: u32, slot: u32) -> Result<(), DataplaneError> {
        let mut inner = self.lock();
        detach_locked(&mut inner, &self.dirs, ifindex, Some(slot))?;
        info!(ifindex, slot, "detached");
        Ok(())
    }

    fn interface_stats(&self, slot: u32) -> Result<InterfaceStats, DataplaneError> {
        self.lock().iface_stats.sum(slot)
    }

    fn adopted(&self) -> Vec<AdoptedLinks> {
        self.report.adopted.clone()
    }

    fn forget_links(&self, ifindex: u32) -> Result<(), DataplaneError> {
        let mut inner = self.lock();
        detach_locked(&mut inner, &self.dirs, ifindex, None)
    }

    fn kernel_interface(&self, ifindex: u32) -> Result<Option<KernelInterface>, DataplaneError> {
        let Some(cfg) = self.lock().interfaces.lookup(ifindex)? else { return Ok(None) };
        let (Some(name), Some(xdp_mode)) = (netdev::name(ifindex), netdev::xdp_mode(ifindex)?) else {
            return Ok(None);
        };
        Ok(Some(KernelInterface { name, slot: cfg.slot, vrf: cfg.vrf, kernel_fib: cfg.kernel_table(), xdp_mode }))
    }
}

/// The steps of [`Interfaces::attach`] after the counters and TX port: the entry, both links,
/// their pins. On an error the caller removes the entry and TX port; links made here are
/// dropped unpinned on the way out, which detaches them.
fn try_attach(
    inner: &mut Inner,
    dirs: &PinDirs,
    name: &str,
    p: &InterfaceParams,
    mode: XdpMode,
) -> Result<Attachment, DataplaneError> {
    let ifindex = p.link.ifindex;
    let extra = inner.entry_extras(p)?;
    inner.interfaces.insert(ifindex, &interface_config(p, extra))?;
    let (xdp, xdp_mode) = attach_xdp(&mut inner.xdp, name, ifindex, mode)?;
    let tc = attach_tc(&mut inner.tc, name)?;
    let attachment = Attachment {
        xdp_mode,
        xdp_link_id: link_id(&xdp, programs::XDP_INGRESS)?,
        tc_link_id: link_id(&tc, programs::TC_EGRESS)?,
    };
    // Pinned: they outlive this process (forwarding survives a server crash or restart).
    let (xdp, tc) = pin_links(dirs, ifindex, xdp, tc)?;
    inner.links.insert(ifindex, InterfaceLinks { xdp, tc });
    Ok(attachment)
}

/// `INTERFACES` (array by ifindex) and `INTERFACES_HIGH` (hash, ifindexes past the array):
/// ifindex -> interface config, each ifindex in exactly one of them.
pub struct InterfaceMap {
    direct: Array<MapData, InterfaceConfig>,
    high: HashMap<MapData, u32, InterfaceConfig>,
    /// Ifindexes with an entry, for counting without walking 64k array entries.
    present: BTreeSet<u32>,
}

impl InterfaceMap {
    /// `INTERFACES` and `INTERFACES_HIGH` of `ebpf`.
    pub(super) fn open(ebpf: &mut aya::Ebpf) -> Result<Self, DataplaneError> {
        Ok(Self::new(open_map(ebpf, names::INTERFACES)?, open_map(ebpf, names::INTERFACES_HIGH)?))
    }

    pub fn new(direct: Array<MapData, InterfaceConfig>, high: HashMap<MapData, u32, InterfaceConfig>) -> Self {
        Self { direct, high, present: BTreeSet::new() }
    }

    /// Writes `cfg` (which must carry `IFACE_PRESENT`) for `ifindex`.
    pub fn insert(&mut self, ifindex: u32, cfg: &InterfaceConfig) -> Result<(), DataplaneError> {
        if ifindex < MAX_DIRECT_IFINDEX {
            self.direct.set(ifindex, cfg, 0).map_err(DataplaneError::map(names::INTERFACES, "update"))?;
        } else {
            self.high.insert(ifindex, cfg, 0).map_err(DataplaneError::map(names::INTERFACES_HIGH, "insert"))?;
        }
        self.present.insert(ifindex);
        Ok(())
    }

    /// Records an entry written by an earlier run (adopted).
    pub fn mark_present(&mut self, ifindex: u32) {
        self.present.insert(ifindex);
    }

    pub fn remove(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
        if ifindex < MAX_DIRECT_IFINDEX {
            // An all-zero entry lacks IFACE_PRESENT: absent to the programs.
            let empty = InterfaceConfig {
                slot: 0,
                vrf: 0,
                mtu: 0,
                flags: 0,
                mac: [0; 6],
                _pad: [0; 2],
                ipv4: [0; 4],
                ipv6: [0; 16],
                table: 0,
            };
            self.direct.set(ifindex, empty, 0).map_err(DataplaneError::map(names::INTERFACES, "clear"))?;
        } else {
            match self.high.remove(&ifindex) {
                // Already gone is what we wanted.
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(DataplaneError::map(names::INTERFACES_HIGH, "remove")(e)),
            }
        }
        self.present.remove(&ifindex);
        Ok(())
    }

    /// The entry of `ifindex`, `None` if it has none.
    pub fn lookup(&self, ifindex: u32) -> Result<Option<InterfaceConfig>, DataplaneError> {
        let cfg = if ifindex < MAX_DIRECT_IFINDEX {
            self.direct.get(&ifindex, 0).map_err(DataplaneError::map(names::INTERFACES, "lookup"))?
        } else {
            match self.high.get(&ifindex, 0) {
                Ok(c) => c,
                Err(MapError::KeyNotFound) => return Ok(None),
                Err(e) => return Err(DataplaneError::map(names::INTERFACES_HIGH, "lookup")(e)),
            }
        };
        Ok((cfg.flags & IFACE_PRESENT != 0).then_some(cfg))
    }

    fn get(&self, ifindex: u32) -> Result<InterfaceConfig, DataplaneError> {
        if ifindex < MAX_DIRECT_IFINDEX {
            self.direct.get(&ifindex, 0).map_err(DataplaneError::map(names::INTERFACES, "lookup"))
        } else {
            self.high.get(&ifindex, 0).map_err(DataplaneError::map(names::INTERFACES_HIGH, "lookup"))
        }
    }

    /// Rewrites, as `f` makes them, the entries `which` selects (only those `f` changes).
    fn patch(
        &mut self,
        which: impl Fn(&InterfaceConfig) -> bool,
        f: impl Fn(InterfaceConfig) -> InterfaceConfig,
    ) -> Result<(), DataplaneError> {
        let present: Vec<u32> = self.present.iter().copied().collect();
        for ifindex in present {
            let cfg = self.get(ifindex)?;
            if which(&cfg) && f(cfg) != cfg {
                self.insert(ifindex, &f(cfg))?;
            }
        }
        Ok(())
    }

    /// Rewrites every entry as `f` makes it (only those it changes).
    pub fn patch_all(&mut self, f: impl Fn(InterfaceConfig) -> InterfaceConfig) -> Result<(), DataplaneError> {
        self.patch(|_| true, f)
    }

    /// (slot, VRF) of every entry.
    pub fn slots_and_vrfs(&self) -> Result<Vec<(u32, u32)>, DataplaneError> {
        self.present.iter().map(|&ifindex| self.get(ifindex).map(|c| (c.slot, c.vrf))).collect()
    }

    /// (VRF, flat-table root) of every routes-mode entry that has a root: what `FIB4_VRFS` held
    /// for those VRFs (a lost `FIB4_VRFS` is filled again from them).
    pub fn fib4_roots(&self) -> Result<Vec<(u32, u32)>, DataplaneError> {
        let mut roots = Vec::new();
        for &ifindex in &self.present {
            let c = self.get(ifindex)?;
            if c.flags & IFACE_PRESENT != 0 && c.fib4_root() != 0 {
                roots.push((c.vrf, c.fib4_root()));
            }
        }
        roots.sort_unstable();
        roots.dedup();
        Ok(roots)
    }

    /// Points the entries of VRF `vrf`'s routes-mode interfaces at flat-table root `root`.
    pub fn set_fib4_root(&mut self, vrf: u32, root: u32) -> Result<(), DataplaneError> {
        self.patch(|c| c.vrf == vrf && c.flags & IFACE_KERNEL_FIB == 0, |c| InterfaceConfig { table: root, ..c })
    }

    /// Sets or clears `flag` in the entry of interface slot `slot` (`None`: in every entry).
    pub fn set_flag(&mut self, slot: Option<u32>, flag: u32, on: bool) -> Result<(), DataplaneError> {
        self.patch(
            |c| slot.is_none_or(|s| c.slot == s),
            |c| InterfaceConfig { flags: if on { c.flags | flag } else { c.flags & !flag }, ..c },
        )
    }

    /// Entries in `INTERFACES`.
    pub fn count_direct(&self) -> u64 {
        self.present.range(..MAX_DIRECT_IFINDEX).count() as u64
    }

    /// Entries in `INTERFACES_HIGH`.
    pub fn count_high(&self) -> u64 {
        self.present.range(MAX_DIRECT_IFINDEX..).count() as u64
    }
}

/// `TX_PORTS`: interface slot -> egress ifindex.
pub struct TxPorts(pub DevMap<MapData>);

impl TxPorts {
    pub(super) fn open(ebpf: &mut aya::Ebpf) -> Result<Self, DataplaneError> {
        Ok(Self(open_map(ebpf, names::TX_PORTS)?))
    }

    pub fn set(&mut self, slot: u32, ifindex: u32) -> Result<(), DataplaneError> {
        self.0
            .set(slot, ifindex, None, 0)
            .map_err(|source| DataplaneError::DevMap { op: "update", source: Box::new(source) })
    }

    /// Devmaps are arrays: there is no removing, so the entry gets ifindex 0, which the kernel
    /// accepts as "no device" and a redirect to it fails (XDP then drops, counted).
    pub fn clear(&mut self, slot: u32) -> Result<(), DataplaneError> {
        self.set(slot, 0)
    }
}

fn attach_xdp(xdp: &mut Xdp, name: &str, ifindex: u32, mode: XdpMode) -> Result<(FdLink, XdpMode), DataplaneError> {
    let attempt = |xdp: &mut Xdp, m: AyaXdpMode| xdp.attach_to_if_index(ifindex, m);
    let (id, got) = match mode {
        XdpMode::Native => (attempt(xdp, AyaXdpMode::Driver), XdpMode::Native),
        XdpMode::Generic => (attempt(xdp, AyaXdpMode::Skb), XdpMode::Generic),
        // Ask for native explicitly so we know which mode we got; fall back only when the driver
        // says it has no native XDP.
        XdpMode::Auto => match attempt(xdp, AyaXdpMode::Driver) {
            Err(e) if errno(&e) == Some(libc::EOPNOTSUPP) => (attempt(xdp, AyaXdpMode::Skb), XdpMode::Generic),
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

fn attach_tc(tc: &mut SchedClassifier, name: &str) -> Result<FdLink, DataplaneError> {
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
        P::XdpError(aya::programs::xdp::XdpError::NetlinkError(n)) => std::error::Error::source(n)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .and_then(|io| io.raw_os_error()),
        _ => None,
    }
}

pub(super) fn detach_locked(
    inner: &mut Inner,
    dirs: &PinDirs,
    ifindex: u32,
    slot: Option<u32>,
) -> Result<(), DataplaneError> {
    // Stop matching the interface first, then unpin and drop the links: the last reference to
    // a link going detaches it.
    inner.interfaces.remove(ifindex)?;
    if let Some(slot) = slot {
        inner.tx_ports.clear(slot)?;
    }
    for hook in ["xdp", "tc"] {
        remove_pin(&dirs.link(ifindex, hook))?;
    }
    inner.links.remove(&ifindex);
    Ok(())
}

/// Pins a fresh interface's two links; on failure neither stays pinned (and dropping them
/// detaches).
fn pin_links(dirs: &PinDirs, ifindex: u32, xdp: FdLink, tc: FdLink) -> Result<(FdLink, FdLink), DataplaneError> {
    let pin = |link: FdLink, hook: &str, program: &'static str| -> Result<FdLink, DataplaneError> {
        let path = dirs.link(ifindex, hook);
        remove_pin(&path)?;
        link.pin(&path).map(FdLink::from).map_err(|e| DataplaneError::Io {
            path,
            op: "pin link",
            source: std::io::Error::other(format!("{program}: {e}")),
        })
    };
    let xdp = pin(xdp, "xdp", programs::XDP_INGRESS)?;
    match pin(tc, "tc", programs::TC_EGRESS) {
        Ok(tc) => Ok((xdp, tc)),
        Err(e) => {
            remove_pin(&dirs.link(ifindex, "xdp"))?;
            Err(e)
        }
    }
}

/// The entry of an interface.
fn interface_config(p: &InterfaceParams, extra: EntryExtras) -> InterfaceConfig {
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
    flags |= extra.flags;
    InterfaceConfig {
        slot: p.slot,
        vrf: p.vrf,
        mtu: p.link.mtu,
        flags,
        mac: p.link.mac.0,
        _pad: [0; 2],
        ipv4: p.link.ipv4.map(|a| a.octets()).unwrap_or_default(),
        ipv6: p.link.ipv6.map(|a| a.octets()).unwrap_or_default(),
        table: p.kernel_fib.unwrap_or(extra.fib4_root),
    }
}

/// What an interface entry carries beside the interface: state the packet path would otherwise
/// look up per packet in other maps.
#[derive(Clone, Copy)]
struct EntryExtras {
    /// `IFACE_FLOWS`, `IFACE_POLICY_IN`, `IFACE_EGRESS_POLICIES` as they stand.
    flags: u32,
    /// Its VRF's flat-table root (routes-mode VRFs).
    fib4_root: u32,
}

/// The entry flags [`EntryExtras`] carries.
const EXTRA_FLAGS: u32 = dataplane_common::route::IFACE_FLOWS
    | dataplane_common::route::IFACE_POLICY_IN
    | dataplane_common::route::IFACE_EGRESS_POLICIES;

impl Inner {
    fn entry_extras(&self, p: &InterfaceParams) -> Result<EntryExtras, DataplaneError> {
        self.extras(p.slot, p.vrf)
    }

    fn extras(&self, slot: u32, vrf: u32) -> Result<EntryExtras, DataplaneError> {
        use dataplane_common::route::{IFACE_EGRESS_POLICIES, IFACE_FLOWS, IFACE_POLICY_IN};
        let mut flags = 0;
        if self.flows.enabled(slot)? {
            flags |= IFACE_FLOWS;
        }
        if self.policies.attachment(slot, dataplane_common::policy::DIR_INGRESS)? != 0 {
            flags |= IFACE_POLICY_IN;
        }
        if !self.egress_policies.is_empty() {
            flags |= IFACE_EGRESS_POLICIES;
        }
        Ok(EntryExtras { flags, fib4_root: self.fib4.root(vrf)? })
    }

    /// Recomputes the extras of every entry from the maps they mirror.
    pub(super) fn refresh_entries(&mut self) -> Result<(), DataplaneError> {
        let mut extras = std::collections::HashMap::new();
        for (slot, vrf) in self.interfaces.slots_and_vrfs()? {
            extras.insert(slot, self.extras(slot, vrf)?);
        }
        self.interfaces.patch_all(|c| match extras.get(&c.slot) {
            Some(e) => InterfaceConfig {
                flags: (c.flags & !EXTRA_FLAGS) | e.flags,
                table: c.kernel_table().unwrap_or(e.fib4_root),
                ..c
            },
            None => c,
        })
    }
}
