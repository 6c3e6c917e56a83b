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
    programs::{
        links::{FdLink, PinnedLink},
        tc::SchedClassifierLink,
        xdp::XdpLink,
        SchedClassifier, TcAttachType, Xdp, XdpMode as AyaXdpMode,
    },
    Ebpf, EbpfLoader, VerifierLogLevel,
};
use dataplane_common::{
    maps as names, programs,
    route::{nexthop_kind, ECMP_MAX, IFACE_HAS_IPV4, IFACE_HAS_IPV6, IFACE_KERNEL_FIB, IFACE_PRESENT},
    InterfaceConfig, InterfaceStats, NextHop, NextHopStats,
};
use tracing::{info, warn};

use super::{
    fib4::{Fib4Maps, Route4Records},
    maps::{CounterArray, FlowMaps, Interfaces, NextHops, PolicyMaps, Routes, TxPorts},
    netdev, Attachment, Dataplane, DataplaneError, InterfaceParams, LinkInfo, MapStatus, NextHopParams, ProgramStatus,
    RouteMatch, XdpMode,
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
    /// The fingerprint (`object_fingerprint`) of the object the pinned programs came from, as
    /// the previous run recorded it: when it is this build's, the pinned programs are adopted
    /// without verifying a fresh copy first (a restart then costs no verifier time).
    pub pinned_object: Option<u64>,
    /// Chunks (1 KiB each) of the IPv4 flat tables' pool, when it is created; a pool an earlier
    /// run pinned keeps its size (see `fib4::DEFAULT_CHUNKS`).
    pub fib4_chunks: u32,
}

/// A fingerprint of an eBPF object's bytes (FNV-1a, 64 bits): same bytes, same programs.
pub fn object_fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// The links of one interface. They are pinned (`<root>/v1/links/<ifindex>-{xdp,tc}`), so
/// closing these fds detaches nothing; removing the pins and closing them does.
struct InterfaceLinks {
    xdp: FdLink,
    tc: FdLink,
}

/// Pin directories under `<bpffs_root>/v1`.
#[derive(Clone, Debug)]
struct PinDirs {
    root: PathBuf,
    maps: PathBuf,
    programs: PathBuf,
    links: PathBuf,
}

impl PinDirs {
    fn new(bpffs_root: &Path) -> Self {
        let v = bpffs_root.join(PIN_VERSION);
        Self { root: bpffs_root.to_owned(), maps: v.join("maps"), programs: v.join("programs"), links: v.join("links") }
    }

    fn link(&self, ifindex: u32, hook: &str) -> PathBuf {
        self.links.join(format!("{ifindex}-{hook}"))
    }
}

pub(super) struct Inner {
    pub(super) ebpf: Ebpf,
    /// The programs attached to every interface (pinned under `<root>/v1/programs`).
    pub(super) xdp: Xdp,
    tc: SchedClassifier,
    interfaces: Interfaces,
    iface_stats: CounterArray<InterfaceStats>,
    nexthops: NextHops,
    nexthop_stats: CounterArray<NextHopStats>,
    tx_ports: TxPorts,
    pub(super) routes: Routes,
    fib4: Fib4Maps,
    records: Route4Records,
    policies: PolicyMaps,
    /// Interface slots with an egress policy attached (`IFACE_EGRESS_POLICIES` is set in every
    /// entry while there is one).
    egress_policies: std::collections::BTreeSet<u32>,
    flows: FlowMaps,
    links: StdHashMap<u32, InterfaceLinks>,
}

/// An interface whose links a previous run of the server pinned and this one adopted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdoptedLinks {
    pub ifindex: u32,
    pub xdp_link_id: u32,
    pub tc_link_id: u32,
}

/// What loading found and did.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    /// Interfaces still attached from an earlier run (their links were never touched).
    pub adopted: Vec<AdoptedLinks>,
    /// The attached programs were replaced by this binary's (a different build).
    pub upgraded: bool,
    /// Link pins dropped because their interface no longer exists.
    pub stale_links: Vec<u32>,
}

/// The real dataplane: the programs loaded into the kernel, maps pinned under
/// `<bpffs_root>/v1/maps/<MAP>`, programs under `.../programs`, links under `.../links`.
pub struct KernelDataplane {
    inner: Mutex<Inner>,
    dirs: PinDirs,
    report: LoadReport,
    /// `object_fingerprint` of the object the attached programs came from.
    object: Mutex<u64>,
    /// `LoaderConfig::fib4_chunks`, for upgrades.
    fib4_chunks: u32,
}

/// A map as the eBPF object declares it, to compare with a pinned one.
/// A map's declared layout: type, key size, value size, capacity, flags.
type MapLayout = (u32, u32, u32, u32, u32);

fn expected_maps(object: &[u8]) -> Result<StdHashMap<String, MapLayout>, DataplaneError> {
    let obj = aya_obj::Object::parse(object).map_err(|e| DataplaneError::ObjectParse { detail: e.to_string() })?;
    Ok(obj
        .maps
        .iter()
        .map(|(name, m)| (name.clone(), (m.map_type(), m.key_size(), m.value_size(), m.max_entries(), m.map_flags())))
        .collect())
}

/// Refuses to run over a pinned map whose layout differs from what the programs expect (aya
/// would silently reuse it): type, key size, value size, capacity and flags must all match.
fn check_pinned_maps(dirs: &PinDirs, object: &[u8]) -> Result<usize, DataplaneError> {
    let expected = expected_maps(object)?;
    let mut found = 0;
    for name in names::ALL {
        let path = dirs.maps.join(name);
        if !path.exists() {
            continue;
        }
        found += 1;
        let info = MapInfo::from_pin(&path).map_err(DataplaneError::map(name, "read pinned map info"))?;
        let Some(&(t, k, v, n, f)) = expected.get(*name) else { continue };
        // The kernel adds BPF_F_RDONLY_PROG / BPF_F_WRONLY_PROG to some maps itself (a devmap's
        // values are read-only to programs): not part of what the object asks for.
        const KERNEL_ADDED: u32 = 0x80 | 0x100;
        let have = (
            info.map_type().map(|t| t as u32).unwrap_or(u32::MAX),
            info.key_size(),
            info.value_size(),
            info.max_entries(),
            info.map_flags() & !KERNEL_ADDED,
        );
        let f = f & !KERNEL_ADDED;
        // The flat tables' pool is sized at creation (`--fib4-chunks`); any size is adopted.
        let n = if *name == names::FIB4_CHUNKS { have.3 } else { n };
        if have != (t, k, v, n, f) {
            return Err(DataplaneError::PinnedMapMismatch {
                map: name,
                path,
                expected: format!("type {t}, key {k} B, value {v} B, {n} entries, flags {f:#x}"),
                found: format!(
                    "type {}, key {} B, value {} B, {} entries, flags {:#x}",
                    have.0, have.1, have.2, have.3, have.4
                ),
            });
        }
    }
    Ok(found)
}

/// Loads the object over the pinned maps (creating and pinning the missing ones). The
/// verifier keeps statistics only: its full log (aya's default) makes every load ~10x slower,
/// and is asked for again only when a load fails (`load_programs`).
fn load_object(dirs: &PinDirs, bytes: &[u8], fib4_chunks: u32) -> Result<Ebpf, DataplaneError> {
    load_object_logging(dirs, bytes, VerifierLogLevel::STATS, fib4_chunks)
}

fn load_object_logging(
    dirs: &PinDirs,
    bytes: &[u8],
    log: VerifierLogLevel,
    fib4_chunks: u32,
) -> Result<Ebpf, DataplaneError> {
    let mut loader = EbpfLoader::new();
    loader.verifier_log_level(log);
    loader.map_max_entries(names::FIB4_CHUNKS, fib4_chunks);
    for name in names::ALL {
        loader.map_pin_path(name, dirs.maps.join(name));
    }
    loader.load(bytes).map_err(|e| DataplaneError::Load { source: Box::new(e) })
}

/// Loads (verifies) the two attached programs of `ebpf`. On a failure the object is loaded
/// once more with the verifier's full log, so the error carries what the verifier said.
fn load_programs(ebpf: &mut Ebpf, dirs: &PinDirs, bytes: &[u8], fib4_chunks: u32) -> Result<(), DataplaneError> {
    fn both(ebpf: &mut Ebpf) -> Result<(), DataplaneError> {
        let xdp: &mut Xdp = program_mut(ebpf, programs::XDP_INGRESS)?;
        xdp.load().map_err(DataplaneError::program(programs::XDP_INGRESS, "load"))?;
        let tc: &mut SchedClassifier = program_mut(ebpf, programs::TC_EGRESS)?;
        tc.load().map_err(DataplaneError::program(programs::TC_EGRESS, "load"))?;
        Ok(())
    }
    match both(ebpf) {
        Ok(()) => Ok(()),
        Err(first) => {
            match load_object_logging(dirs, bytes, VerifierLogLevel::DEBUG | VerifierLogLevel::STATS, fib4_chunks) {
                Ok(mut verbose) => both(&mut verbose).and(Err(first)),
                Err(_) => Err(first),
            }
        }
    }
}

fn unload_programs(ebpf: &mut Ebpf) {
    if let Ok(xdp) = program_mut::<Xdp>(ebpf, programs::XDP_INGRESS) {
        let _ = xdp.unload();
    }
    if let Ok(tc) = program_mut::<SchedClassifier>(ebpf, programs::TC_EGRESS) {
        let _ = tc.unload();
    }
}

fn program_tag(ebpf: &Ebpf, name: &'static str) -> Result<u64, DataplaneError> {
    let p = ebpf.program(name).ok_or(DataplaneError::Missing { what: "program", name })?;
    Ok(p.info().map_err(DataplaneError::program(name, "info"))?.tag())
}

/// Pins `ebpf`'s two programs as the attached ones: pinned beside, then renamed over the old
/// pins, so a crash leaves either the old or the new pin, never none.
fn pin_programs(dirs: &PinDirs, ebpf: &mut Ebpf) -> Result<(), DataplaneError> {
    for name in [programs::XDP_INGRESS, programs::TC_EGRESS] {
        let path = dirs.programs.join(name);
        // bpffs refuses names with a dot.
        let tmp = dirs.programs.join(format!("{name}_new"));
        remove_pin(&tmp)?;
        let prog = ebpf.program_mut(name).ok_or(DataplaneError::Missing { what: "program", name })?;
        prog.pin(&tmp).map_err(|e| DataplaneError::Io {
            path: tmp.clone(),
            op: "pin",
            source: std::io::Error::other(e.to_string()),
        })?;
        fs::rename(&tmp, &path).map_err(|source| DataplaneError::Io {
            path: path.clone(),
            op: "rename pin",
            source,
        })?;
    }
    Ok(())
}

fn open_pinned_programs(dirs: &PinDirs) -> Result<(Xdp, SchedClassifier), DataplaneError> {
    let xdp = Xdp::from_pin(dirs.programs.join(programs::XDP_INGRESS), aya_obj::programs::XdpAttachType::Interface)
        .map_err(DataplaneError::program(programs::XDP_INGRESS, "open pin"))?;
    let tc = SchedClassifier::from_pin(dirs.programs.join(programs::TC_EGRESS))
        .map_err(DataplaneError::program(programs::TC_EGRESS, "open pin"))?;
    Ok((xdp, tc))
}

fn mkdirs(dirs: &PinDirs) -> Result<(), DataplaneError> {
    for d in [&dirs.maps, &dirs.programs, &dirs.links] {
        fs::create_dir_all(d).map_err(|source| DataplaneError::Io {
            path: d.clone(),
            op: "create directory",
            source,
        })?;
    }
    Ok(())
}

/// The pinned links, by ifindex; pins of interfaces that are gone are removed.
fn adopt_links(dirs: &PinDirs) -> Result<(StdHashMap<u32, InterfaceLinks>, Vec<u32>), DataplaneError> {
    let mut found: StdHashMap<u32, (Option<FdLink>, Option<FdLink>)> = StdHashMap::new();
    let entries = fs::read_dir(&dirs.links).map_err(|source| DataplaneError::Io {
        path: dirs.links.clone(),
        op: "read directory",
        source,
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((idx, hook)) = name.split_once('-') else { continue };
        let Ok(ifindex) = idx.parse::<u32>() else { continue };
        let link = PinnedLink::from_pin(entry.path()).map_err(|e| DataplaneError::Link {
            program: "pinned link",
            op: "open",
            source: Box::new(e),
        })?;
        let slot = found.entry(ifindex).or_default();
        match hook {
            "xdp" => slot.0 = Some(link.into()),
            "tc" => slot.1 = Some(link.into()),
            _ => {}
        }
    }
    let mut links = StdHashMap::new();
    let mut stale = Vec::new();
    for (ifindex, pair) in found {
        match pair {
            (Some(xdp), Some(tc)) if netdev::exists(ifindex) => {
                links.insert(ifindex, InterfaceLinks { xdp, tc });
            }
            _ => {
                // The interface went while no server ran (its links are defunct), or a crash
                // came between the two pins: let go of both.
                for hook in ["xdp", "tc"] {
                    remove_pin(&dirs.link(ifindex, hook))?;
                }
                stale.push(ifindex);
            }
        }
    }
    Ok((links, stale))
}

impl KernelDataplane {
    /// Loads the dataplane, adopting whatever an earlier run left pinned: maps (after checking
    /// their layouts), the attached programs and their links, which keep running untouched. If
    /// this binary's programs differ from the attached ones, every link is switched to them
    /// atomically (`bpf_link_update`), one interface at a time.
    pub fn load(config: &LoaderConfig) -> Result<Self, DataplaneError> {
        let dirs = PinDirs::new(&config.bpffs_root);
        ensure_bpffs(&config.bpffs_root)?;
        // Before anything is created or changed: a refusal leaves every pin as it was.
        let pinned_maps = check_pinned_maps(&dirs, EBPF_OBJECT)?;
        mkdirs(&dirs)?;
        let mut ebpf = load_object(&dirs, EBPF_OBJECT, config.fib4_chunks)?;
        let adopting =
            dirs.programs.join(programs::XDP_INGRESS).exists() && dirs.programs.join(programs::TC_EGRESS).exists();
        let mut report = LoadReport::default();
        let (xdp, tc) = if adopting && config.pinned_object == Some(object_fingerprint(EBPF_OBJECT)) {
            // Pinned from this very object: nothing to compare, nothing to verify.
            open_pinned_programs(&dirs)?
        } else if adopting {
            load_programs(&mut ebpf, &dirs, EBPF_OBJECT, config.fib4_chunks)?;
            let (old_xdp, old_tc) = open_pinned_programs(&dirs)?;
            let same = old_xdp.info().map(|i| i.tag()).ok() == Some(program_tag(&ebpf, programs::XDP_INGRESS)?)
                && old_tc.info().map(|i| i.tag()).ok() == Some(program_tag(&ebpf, programs::TC_EGRESS)?);
            if same {
                // Keep what runs: the same ids before and after a restart. The copies just
                // verified go (benchmarks load their own when asked).
                unload_programs(&mut ebpf);
                (old_xdp, old_tc)
            } else {
                report.upgraded = true;
                pin_programs(&dirs, &mut ebpf)?;
                open_pinned_programs(&dirs)?
            }
        } else {
            load_programs(&mut ebpf, &dirs, EBPF_OBJECT, config.fib4_chunks)?;
            pin_programs(&dirs, &mut ebpf)?;
            open_pinned_programs(&dirs)?
        };
        let (links, stale) = adopt_links(&dirs)?;
        report.stale_links = stale;

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
        let fib4 = Fib4Maps::new(
            open(&mut ebpf, names::FIB4_VRFS)?,
            match take_map(&mut ebpf, names::FIB4_CHUNKS)? {
                Map::Array(data) => data,
                _ => return Err(DataplaneError::Missing { what: "array map", name: names::FIB4_CHUNKS }),
            },
        )?;
        let egress_policies = (0..dataplane_common::MAX_INTERFACES)
            .map(|slot| Ok((slot, policies.attachment(slot, dataplane_common::policy::DIR_EGRESS)?)))
            .filter(|r: &Result<(u32, u32), DataplaneError>| r.as_ref().map_or(true, |(_, w)| *w != 0))
            .map(|r| r.map(|(slot, _)| slot))
            .collect::<Result<std::collections::BTreeSet<u32>, DataplaneError>>()?;
        let records = Route4Records::new(match take_map(&mut ebpf, names::ROUTE4_RECORDS)? {
            Map::Array(data) => data,
            _ => return Err(DataplaneError::Missing { what: "array map", name: names::ROUTE4_RECORDS }),
        })?;
        let mut interfaces = Interfaces::new(interfaces, interfaces_high);
        for ifindex in links.keys() {
            interfaces.mark_present(*ifindex);
        }
        let mut inner = Inner {
            ebpf,
            xdp,
            tc,
            interfaces,
            iface_stats: CounterArray::new(names::IFACE_STATS, iface_stats)?,
            nexthops: NextHops(nexthops),
            nexthop_stats: CounterArray::new(names::NEXTHOP_STATS, nexthop_stats)?,
            tx_ports: TxPorts(tx_ports),
            routes: Routes { v4, v6 },
            fib4,
            records,
            egress_policies,
            policies,
            flows,
            links,
        };
        // Also after a crash between pinning new programs and switching the links to them.
        if report.upgraded || !links_run_active(&inner)? {
            report.upgraded = true;
            swap_links(&mut inner)?;
        }
        let mut ifindexes: Vec<u32> = inner.links.keys().copied().collect();
        ifindexes.sort_unstable();
        for ifindex in ifindexes {
            let l = &inner.links[&ifindex];
            report.adopted.push(AdoptedLinks {
                ifindex,
                xdp_link_id: link_id(&l.xdp, programs::XDP_INGRESS)?,
                tc_link_id: link_id(&l.tc, programs::TC_EGRESS)?,
            });
        }
        info!(
            pins = %dirs.root.display(),
            adopted_maps = pinned_maps,
            adopted_interfaces = report.adopted.len(),
            upgraded = report.upgraded,
            "dataplane loaded"
        );
        // Whichever way they got there (adopted by fingerprint, adopted with equal tags, switched
        // to, or freshly loaded), the attached programs are this build's.
        let object = object_fingerprint(EBPF_OBJECT);
        Ok(Self { inner: Mutex::new(inner), dirs, report, object: Mutex::new(object), fib4_chunks: config.fib4_chunks })
    }

    /// The fingerprint of the object the attached programs came from (for the state file).
    pub fn programs_object(&self) -> u64 {
        *self.object.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What loading adopted.
    pub fn load_report(&self) -> &LoadReport {
        &self.report
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the kernel half-updated in a way the data
        // here does not reflect (every method rolls back before returning), so keep going.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads `object` (this binary's own when `None`) over the pinned maps, verifies its
    /// programs, then switches every interface's links to them, one at a time, each an atomic
    /// `bpf_link_update`: no packet meets a detached interface. A failure to parse, load or
    /// verify changes nothing (and carries the verifier's log). Returns the new program ids.
    fn upgrade_programs(&self, object: Option<&[u8]>) -> Result<Vec<ProgramStatus>, DataplaneError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let object = object.unwrap_or(EBPF_OBJECT);
        let t = std::time::Instant::now();
        check_pinned_maps(&self.dirs, object)?;
        let checked = t.elapsed();
        let mut ebpf = load_object(&self.dirs, object, self.fib4_chunks)?;
        let parsed = t.elapsed();
        load_programs(&mut ebpf, &self.dirs, object, self.fib4_chunks)?;
        let verified = t.elapsed();
        pin_programs(&self.dirs, &mut ebpf)?;
        let (xdp, tc) = open_pinned_programs(&self.dirs)?;
        inner.xdp = xdp;
        inner.tc = tc;
        swap_links(inner)?;
        info!(?checked, ?parsed, ?verified, total = ?t.elapsed(), "upgrade timings");
        // The previous object's copies of the programs go with it.
        inner.ebpf = ebpf;
        *self.object.lock().unwrap_or_else(|p| p.into_inner()) = object_fingerprint(object);
        drop(guard);
        self.programs()
    }

    /// Detaches every interface and removes every pin (links, programs, maps) and the pin
    /// directories: nothing of the dataplane stays in the kernel once this process exits.
    fn reset_all(&self) {
        let mut inner = self.lock();
        let ifindexes: Vec<u32> = inner.links.keys().copied().collect();
        for ifindex in ifindexes {
            if let Err(e) = detach_locked(&mut inner, &self.dirs, ifindex, None) {
                warn!(ifindex, error = %e, "detach on reset failed");
            }
        }
        if let Err(e) = remove_all_pins(&self.dirs.root) {
            warn!(error = %e, "removing pins failed");
        }
    }
}

/// Whether the kernel has a BPF program with this id (for tests and diagnostics).
pub fn program_exists(id: u32) -> bool {
    aya::programs::loaded_programs().flatten().any(|p| p.id() == id)
}

/// How many bpf links in the kernel run program `id` (for tests: no duplicate link).
pub fn links_running(id: u32) -> usize {
    aya::programs::loaded_links().flatten().filter(|l| l.program_id() == id).count()
}

/// Removes everything this server pins under `root` (for `--reset` without a loaded dataplane
/// too): link pins first (detaching), then programs, then maps, then the directories.
pub fn remove_all_pins(root: &Path) -> Result<(), DataplaneError> {
    let dirs = PinDirs::new(root);
    for d in [&dirs.links, &dirs.programs, &dirs.maps] {
        if let Ok(entries) = fs::read_dir(d) {
            for e in entries.flatten() {
                remove_pin(&e.path())?;
            }
        }
        let _ = fs::remove_dir(d);
    }
    let _ = fs::remove_dir(root.join(PIN_VERSION));
    let _ = fs::remove_dir(root);
    Ok(())
}

/// Whether every link runs the active programs.
fn links_run_active(inner: &Inner) -> Result<bool, DataplaneError> {
    let xdp = inner.xdp.info().map_err(DataplaneError::program(programs::XDP_INGRESS, "info"))?.id();
    let tc = inner.tc.info().map_err(DataplaneError::program(programs::TC_EGRESS, "info"))?.id();
    for l in inner.links.values() {
        let x = l.xdp.info().map_err(|e| DataplaneError::Link {
            program: programs::XDP_INGRESS,
            op: "info",
            source: Box::new(e),
        })?;
        let t = l.tc.info().map_err(|e| DataplaneError::Link {
            program: programs::TC_EGRESS,
            op: "info",
            source: Box::new(e),
        })?;
        if x.program_id() != xdp || t.program_id() != tc {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Points every interface's links at `inner.xdp` / `inner.tc`. The interface entries are
/// brought up to date first: entries an earlier build wrote lack what this build's programs
/// read from them (flow, policy flags, the flat-table root), and a program that found a flag
/// missing would skip a policy.
fn swap_links(inner: &mut Inner) -> Result<(), DataplaneError> {
    inner.refresh_entries()?;
    let mut ifindexes: Vec<u32> = inner.links.keys().copied().collect();
    ifindexes.sort_unstable();
    for ifindex in ifindexes {
        let links = inner.links.remove(&ifindex).expect("listed above");
        // The pins keep the links attached whatever happens to these fds.
        let xdp_link = XdpLink::try_from(links.xdp).map_err(|e| DataplaneError::Link {
            program: programs::XDP_INGRESS,
            op: "open",
            source: Box::new(e),
        })?;
        let id = inner
            .xdp
            .attach_to_link(xdp_link)
            .map_err(DataplaneError::program(programs::XDP_INGRESS, "link update"))?;
        let xdp = FdLink::try_from(
            inner.xdp.take_link(id).map_err(DataplaneError::program(programs::XDP_INGRESS, "take link"))?,
        )
        .map_err(|e| DataplaneError::Link {
            program: programs::XDP_INGRESS,
            op: "convert to fd link",
            source: Box::new(e),
        })?;
        let tc_link = SchedClassifierLink::try_from(links.tc).map_err(|e| DataplaneError::Link {
            program: programs::TC_EGRESS,
            op: "open",
            source: Box::new(e),
        })?;
        let id =
            inner.tc.attach_to_link(tc_link).map_err(DataplaneError::program(programs::TC_EGRESS, "link update"))?;
        let tc = FdLink::try_from(
            inner.tc.take_link(id).map_err(DataplaneError::program(programs::TC_EGRESS, "take link"))?,
        )
        .map_err(|e| DataplaneError::Link {
            program: programs::TC_EGRESS,
            op: "convert to fd link",
            source: Box::new(e),
        })?;
        inner.links.insert(ifindex, InterfaceLinks { xdp, tc });
        info!(ifindex, "links switched to the new programs");
    }
    Ok(())
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
    let c = CString::new(probe.as_os_str().as_encoded_bytes())
        .map_err(|_| DataplaneError::NotBpffs { path: root.to_owned() })?;
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

fn detach_locked(inner: &mut Inner, dirs: &PinDirs, ifindex: u32, slot: Option<u32>) -> Result<(), DataplaneError> {
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
        fib_table: p.kernel_fib.unwrap_or(extra.fib4_root),
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
    fn refresh_entries(&mut self) -> Result<(), DataplaneError> {
        let mut extras = std::collections::HashMap::new();
        for (slot, vrf) in self.interfaces.slots_and_vrfs()? {
            extras.insert(slot, self.extras(slot, vrf)?);
        }
        self.interfaces.patch_all(|c| match extras.get(&c.slot) {
            Some(e) => InterfaceConfig {
                flags: (c.flags & !EXTRA_FLAGS) | e.flags,
                fib_table: if c.flags & IFACE_KERNEL_FIB != 0 { c.fib_table } else { e.fib4_root },
                ..c
            },
            None => c,
        })
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
        let extra = inner.entry_extras(p)?;
        if let Err(e) = inner.interfaces.insert(ifindex, &interface_config(p, extra)) {
            undo(inner);
            return Err(e);
        }
        let (xdp, xdp_mode) = match attach_xdp(&mut inner.xdp, name, ifindex, mode) {
            Ok(v) => v,
            Err(e) => {
                undo(inner);
                return Err(e);
            }
        };
        let tc = match attach_tc(&mut inner.tc, name) {
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
        // Pinned: they outlive this process (forwarding survives a server crash or restart).
        let (xdp, tc) = match pin_links(&self.dirs, ifindex, xdp, tc) {
            Ok(v) => v,
            Err(e) => {
                undo(inner);
                return Err(e);
            }
        };
        inner.links.insert(ifindex, InterfaceLinks { xdp, tc });
        info!(interface = name, ifindex, slot = p.slot, vrf = p.vrf, mode = ?xdp_mode, "attached");
        Ok(attachment)
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

    fn insert_routes(&self, routes: &[(u32, Prefix, u32)]) -> Result<(), (Vec<usize>, DataplaneError)> {
        self.lock().routes.insert_many(routes)
    }

    fn remove_route(&self, vrf: u32, prefix: &Prefix) -> Result<(), DataplaneError> {
        self.lock().routes.remove(vrf, prefix)
    }

    fn lookup_route(&self, vrf: u32, addr: std::net::IpAddr) -> Result<Option<RouteMatch>, DataplaneError> {
        let inner = self.lock();
        if let std::net::IpAddr::V4(a) = addr {
            // What the route stage sees: the VRF's flat table when it has one.
            if let Some(found) = inner.fib4.lookup(vrf, a)? {
                return Ok(found.map(|(prefix_len, nexthop_slot)| RouteMatch { prefix_len, nexthop_slot }));
            }
        }
        Ok(inner
            .routes
            .lookup(vrf, addr)?
            .map(|v| RouteMatch { prefix_len: v.prefix_len as u8, nexthop_slot: v.nexthop }))
    }

    fn fib4_capacity(&self) -> u32 {
        self.lock().fib4.capacity()
    }

    fn fib4_store(&self, chunk: u32, first: usize, values: &[u32]) -> Result<(), DataplaneError> {
        self.lock().fib4.store(chunk, first, values)
    }

    fn fib4_set_root(&self, vrf: u32, root: u32) -> Result<(), DataplaneError> {
        let mut inner = self.lock();
        inner.fib4.set_root(vrf, root)?;
        // The packet path reads the root from the interface entries.
        inner.interfaces.set_fib4_root(vrf, root)
    }

    fn route4_capacity(&self) -> u32 {
        self.lock().records.capacity()
    }

    fn route4_reserve(&self, slots: u32) -> Result<(), DataplaneError> {
        self.lock()
            .flows
            .state
            .set(dataplane_common::flow::STATE_ROUTE4_RECORDS, u64::from(slots), 0)
            .map_err(DataplaneError::map(names::FLOW_STATE, "update"))
    }

    fn route4_store(&self, records: &[(u32, dataplane_common::RouteRecord4)]) -> Result<(), DataplaneError> {
        self.lock().records.store(records)
    }

    fn route4_clear(&self, slots: &[u32]) -> Result<(), DataplaneError> {
        self.lock().records.clear(slots)
    }

    fn route4_records(&self) -> Result<Vec<(u32, dataplane_common::RouteRecord4)>, DataplaneError> {
        let inner = self.lock();
        let mark = inner
            .flows
            .state
            .get(&dataplane_common::flow::STATE_ROUTE4_RECORDS, 0)
            .map_err(DataplaneError::map(names::FLOW_STATE, "lookup"))?;
        inner.records.read(u32::try_from(mark).unwrap_or(u32::MAX))
    }

    fn fib4_roots(&self, vrfs: &[u32]) -> Result<Vec<(u32, u32)>, DataplaneError> {
        self.lock().fib4.roots(vrfs)
    }

    fn fib4_load(&self, chunk: u32) -> Result<dataplane_common::route::fib4::Chunk, DataplaneError> {
        self.lock().fib4.load(chunk)
    }

    fn write_policy(&self, image: &super::PolicyImage) -> Result<(), DataplaneError> {
        self.lock().policies.write(image)
    }

    fn clear_policy(&self, image: &super::PolicyImage) -> Result<(), DataplaneError> {
        self.lock().policies.clear(image)
    }

    fn set_policy_attachment(&self, slot: u32, direction: u32, word: u32) -> Result<(), DataplaneError> {
        use dataplane_common::route::{IFACE_EGRESS_POLICIES, IFACE_POLICY_IN};
        let mut inner = self.lock();
        // The word first: a packet that sees a flag finds what it announces.
        inner.policies.set_attachment(slot, direction, word)?;
        if direction == dataplane_common::policy::DIR_INGRESS {
            return inner.interfaces.set_flag(Some(slot), IFACE_POLICY_IN, word != 0);
        }
        if word != 0 {
            inner.egress_policies.insert(slot);
        } else {
            inner.egress_policies.remove(&slot);
        }
        let any = !inner.egress_policies.is_empty();
        inner.interfaces.set_flag(None, IFACE_EGRESS_POLICIES, any)
    }

    fn rule_stats(&self, first: u32, count: u32) -> Result<Vec<dataplane_common::policy::RuleStats>, DataplaneError> {
        self.lock().policies.rule_stats(first, count)
    }

    fn set_flow_config(&self, slot: u32, cfg: &dataplane_common::flow::FlowConfig) -> Result<(), DataplaneError> {
        let mut inner = self.lock();
        inner.flows.config.set(slot, cfg, 0).map_err(DataplaneError::map(names::FLOW_CONFIG, "update"))?;
        // After the config: the packet path enters the flow stage on the entry's flag.
        inner.interfaces.set_flag(Some(slot), dataplane_common::route::IFACE_FLOWS, cfg.enabled != 0)
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
        let r =
            unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0 as libc::c_long, 0 as libc::c_long) };
        if r != 0 {
            return Err(DataplaneError::Io {
                path: "membarrier".into(),
                op: "MEMBARRIER_CMD_GLOBAL",
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    fn upgrade(&self, object: Option<&[u8]>) -> Result<Vec<ProgramStatus>, DataplaneError> {
        self.upgrade_programs(object)
    }

    fn reset(&self) {
        self.reset_all()
    }

    fn adopted(&self) -> Vec<AdoptedLinks> {
        self.report.adopted.clone()
    }

    fn programs_object(&self) -> Option<u64> {
        Some(KernelDataplane::programs_object(self))
    }

    fn forget_links(&self, ifindex: u32) -> Result<(), DataplaneError> {
        let mut inner = self.lock();
        detach_locked(&mut inner, &self.dirs, ifindex, None)
    }

    fn dump_routes(&self) -> Result<Vec<(u32, Prefix, u32)>, DataplaneError> {
        self.lock().routes.dump()
    }

    fn set_generation(&self, generation: u64) -> Result<(), DataplaneError> {
        self.lock()
            .flows
            .state
            .set(dataplane_common::flow::STATE_GENERATION, generation, 0)
            .map_err(DataplaneError::map(names::FLOW_STATE, "update"))
    }

    fn generation(&self) -> Result<u64, DataplaneError> {
        self.lock()
            .flows
            .state
            .get(&dataplane_common::flow::STATE_GENERATION, 0)
            .map_err(DataplaneError::map(names::FLOW_STATE, "read"))
    }

    fn holds_created(&self) -> Result<u64, DataplaneError> {
        self.lock()
            .flows
            .state
            .get(&dataplane_common::flow::STATE_CREATED, 0)
            .map_err(DataplaneError::map(names::FLOW_STATE, "read"))
    }

    fn programs(&self) -> Result<Vec<ProgramStatus>, DataplaneError> {
        let inner = self.lock();
        let xdp = inner.xdp.info().map_err(DataplaneError::program(programs::XDP_INGRESS, "info"))?;
        let tc = inner.tc.info().map_err(DataplaneError::program(programs::TC_EGRESS, "info"))?;
        Ok(vec![
            ProgramStatus { name: programs::XDP_INGRESS.to_owned(), kind: "xdp", kernel_id: xdp.id(), tag: xdp.tag() },
            ProgramStatus {
                name: programs::TC_EGRESS.to_owned(),
                kind: "sched_cls",
                kernel_id: tc.id(),
                tag: tc.tag(),
            },
        ])
    }

    fn maps(&self) -> Result<Vec<MapStatus>, DataplaneError> {
        let inner = self.lock();
        let mut out = Vec::new();
        for name in names::ALL {
            let path = self.dirs.maps.join(name);
            let info = MapInfo::from_pin(&path).map_err(DataplaneError::map(name, "info"))?;
            let kind = info.map_type().map(|t| map_type_name(t).to_owned()).unwrap_or_else(|_| "unknown".to_owned());
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
        self.dirs.root.display().to_string()
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
