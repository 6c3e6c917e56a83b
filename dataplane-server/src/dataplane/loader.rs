//! The programs' lifecycle: loads the embedded eBPF object over the maps pinned under the bpffs
//! root (checking their layouts, creating and pinning the missing ones), pins the attached
//! programs, adopts the links an earlier run pinned, upgrades programs in place (atomic link
//! updates), and removes everything on reset. The maps it opens are handed to each concern's
//! wrapper in [`Inner`]; attaching and detaching interfaces is `interfaces`'.

use std::{
    collections::{BTreeMap, HashMap as StdHashMap},
    ffi::CString,
    fs,
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard},
};

use aya::{
    maps::{Map, MapData, MapInfo},
    programs::{
        links::{FdLink, PinnedLink},
        tc::SchedClassifierLink,
        xdp::XdpLink,
        SchedClassifier, Xdp,
    },
    Ebpf, EbpfLoader, VerifierLogLevel,
};
use dataplane_common::{maps as names, programs, InterfaceStats, NextHopStats};
use tracing::{info, warn};

use super::{
    counters::CounterArray,
    fib4::Fib4Maps,
    flows::FlowMaps,
    globals::Globals,
    interfaces::{detach_locked, InterfaceMap, TxPorts},
    lifecycle::Lifecycle,
    netdev,
    nexthops::NextHopMap,
    pincheck::{self, PinFix, PinRepair, PinWatch},
    pinlock::{PinLock, HOLDER_EXIT_WAIT},
    policies::PolicyMaps,
    routes::{Route4Records, RouteTries},
    DataplaneError, ProgramStatus,
};

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
pub(super) struct InterfaceLinks {
    pub(super) xdp: FdLink,
    pub(super) tc: FdLink,
}

/// Pin directories under `<bpffs_root>/v1`.
#[derive(Clone, Debug)]
pub(super) struct PinDirs {
    pub(super) root: PathBuf,
    pub(super) maps: PathBuf,
    pub(super) programs: PathBuf,
    pub(super) links: PathBuf,
    /// Foreign map pins found in `maps/` and moved out of the way (`pincheck`).
    pub(super) displaced: PathBuf,
}

/// The pins' identity ([`super::Lifecycle::pins_id`]) of the dataplane pinned under
/// `bpffs_root`, read before loading (`None`: nothing pinned there yet), so that a start can tell
/// whether its state file describes these pins before trusting anything in it.
pub fn pinned_pins_id(bpffs_root: &Path) -> Option<u64> {
    let path = PinDirs::new(bpffs_root).maps.join(dataplane_common::maps::GLOBALS);
    aya::maps::MapInfo::from_pin(&path).ok().map(|i| u64::from(i.id()))
}

impl PinDirs {
    pub(super) fn new(bpffs_root: &Path) -> Self {
        let v = bpffs_root.join(PIN_VERSION);
        Self {
            root: bpffs_root.to_owned(),
            maps: v.join("maps"),
            programs: v.join("programs"),
            links: v.join("links"),
            displaced: v.join("displaced"),
        }
    }

    pub(super) fn link(&self, ifindex: u32, hook: &str) -> PathBuf {
        self.links.join(format!("{ifindex}-{hook}"))
    }
}

/// The loaded object and every map, each behind its concern's wrapper; one lock, so a
/// multi-map update (an entry and the map it mirrors) is never interleaved with another.
pub(super) struct Inner {
    pub(super) ebpf: Ebpf,
    /// The programs attached to every interface (pinned under `<root>/v1/programs`).
    pub(super) xdp: Xdp,
    pub(super) tc: SchedClassifier,
    pub(super) interfaces: InterfaceMap,
    pub(super) iface_stats: CounterArray<InterfaceStats>,
    pub(super) nexthops: NextHopMap,
    pub(super) nexthop_stats: CounterArray<NextHopStats>,
    pub(super) tx_ports: TxPorts,
    pub(super) routes: RouteTries,
    pub(super) fib4: Fib4Maps,
    pub(super) records: Route4Records,
    pub(super) policies: PolicyMaps,
    /// Interface slots with an egress policy attached (`IFACE_EGRESS_POLICIES` is set in every
    /// entry while there is one).
    pub(super) egress_policies: std::collections::BTreeSet<u32>,
    pub(super) flows: FlowMaps,
    pub(super) globals: Globals,
    pub(super) links: StdHashMap<u32, InterfaceLinks>,
}

/// An interface whose links a previous run of the server pinned and this one adopted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdoptedLinks {
    pub ifindex: u32,
    pub xdp_link_id: u32,
    pub tc_link_id: u32,
}

impl Inner {
    /// Every map of `ebpf` behind its concern's wrapper, with the programs and adopted links.
    fn open(
        mut ebpf: Ebpf,
        xdp: Xdp,
        tc: SchedClassifier,
        links: StdHashMap<u32, InterfaceLinks>,
    ) -> Result<Self, DataplaneError> {
        let e = &mut ebpf;
        super::flows::load_sweeper(e)?;
        let policies = PolicyMaps::open(e)?;
        let egress_policies = policies.attached_slots(dataplane_common::policy::DIR_EGRESS)?;
        let mut interfaces = InterfaceMap::open(e)?;
        for ifindex in links.keys() {
            interfaces.mark_present(*ifindex);
        }
        Ok(Self {
            interfaces,
            iface_stats: CounterArray::open(e, names::IFACE_STATS)?,
            tx_ports: TxPorts::open(e)?,
            nexthops: NextHopMap::open(e)?,
            nexthop_stats: CounterArray::open(e, names::NEXTHOP_STATS)?,
            routes: RouteTries::open(e)?,
            records: Route4Records::open(e)?,
            fib4: Fib4Maps::open(e)?,
            policies,
            egress_policies,
            flows: FlowMaps::open(e)?,
            globals: Globals::open(e)?,
            ebpf,
            xdp,
            tc,
            links,
        })
    }
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
    /// Map pins found missing or replaced, and what was done (`pincheck`).
    pub pin_repairs: Vec<PinRepair>,
}

/// The real dataplane: the programs loaded into the kernel, maps pinned under
/// `<bpffs_root>/v1/maps/<MAP>`, programs under `.../programs`, links under `.../links`.
pub struct KernelDataplane {
    inner: Mutex<Inner>,
    pub(super) dirs: PinDirs,
    pub(super) report: LoadReport,
    /// `object_fingerprint` of the object the attached programs came from.
    object: Mutex<u64>,
    /// `LoaderConfig::fib4_chunks`, for upgrades.
    fib4_chunks: u32,
    /// The maps the server has open, to compare their pins with; the repairs made.
    pins: Mutex<PinWatch>,
    /// This dataplane owns its pin directory for as long as it lives.
    _lock: PinLock,
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

/// (type, key size, value size) of every pinned map the object declares: how a map a pinned
/// program uses is recognised (`pincheck`).
fn pinned_layouts(object: &[u8]) -> Result<BTreeMap<&'static str, (u32, u32, u32)>, DataplaneError> {
    let expected = expected_maps(object)?;
    Ok(names::ALL.iter().filter_map(|name| expected.get(*name).map(|&(t, k, v, _, _)| (*name, (t, k, v)))).collect())
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
        fs::create_dir_all(&config.bpffs_root).map_err(|source| DataplaneError::Io {
            path: config.bpffs_root.clone(),
            op: "create directory",
            source,
        })?;
        // Before anything pinned is read or written: another live server's pins are not ours.
        let lock = PinLock::acquire(&config.bpffs_root, HOLDER_EXIT_WAIT)?;
        // Before anything is created or changed: a refusal leaves every pin as it was. A pin of
        // another layout is refused here even if a hand put it there: what it is cannot be told
        // from an earlier build's map, and refusing changes nothing.
        let mut pinned_maps = check_pinned_maps(&dirs, EBPF_OBJECT)?;
        // Before the object is loaded over the pins: a pin removed or replaced by hand must name
        // the map the attached programs use again, or the server would write maps XDP never
        // reads. A refusal (a lost map that was the only copy of its state) changes nothing;
        // the repairs only pin the programs' own maps.
        let pin_repairs = pincheck::repair_at_start(&dirs, &pinned_layouts(EBPF_OBJECT)?)?;
        if !pin_repairs.is_empty() {
            // The maps pinned again: capacity and flags too must be what this build expects.
            pinned_maps = check_pinned_maps(&dirs, EBPF_OBJECT)?;
        }
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

        let mut inner = Inner::open(ebpf, xdp, tc, links)?;
        if pin_repairs.iter().any(|r| r.map == names::FIB4_VRFS && matches!(r.fix, PinFix::Created { .. })) {
            // A fresh FIB4_VRFS says "no flat table" for every VRF, and the restore would build
            // new tables over chunks the attached interfaces still read: take the roots back
            // from the interface entries first, so the restore adopts the tables as they are.
            for (vrf, root) in inner.interfaces.fib4_roots()? {
                inner.fib4.set_root(vrf, root)?;
                info!(vrf, root, "FIB4_VRFS: root taken back from the interface entries");
            }
        }
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
        let pins = PinWatch::new(&dirs, pin_repairs.clone())?;
        report.pin_repairs = pin_repairs;
        info!(
            pins = %dirs.root.display(),
            adopted_maps = pinned_maps,
            pin_repairs = report.pin_repairs.len(),
            adopted_interfaces = report.adopted.len(),
            upgraded = report.upgraded,
            "dataplane loaded"
        );
        // Whichever way they got there (adopted by fingerprint, adopted with equal tags, switched
        // to, or freshly loaded), the attached programs are this build's.
        let object = object_fingerprint(EBPF_OBJECT);
        Ok(Self {
            inner: Mutex::new(inner),
            dirs,
            report,
            object: Mutex::new(object),
            fib4_chunks: config.fib4_chunks,
            pins: Mutex::new(pins),
            _lock: lock,
        })
    }

    /// The fingerprint of the object the attached programs came from (for the state file).
    pub fn programs_object(&self) -> u64 {
        *self.object.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What loading adopted.
    pub fn load_report(&self) -> &LoadReport {
        &self.report
    }

    pub(super) fn pin_watch(&self) -> MutexGuard<'_, PinWatch> {
        // The watch is a list and a counter: nothing a panic could leave half-written.
        self.pins.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `PinWatch::check`, by a caller holding the dataplane's lock (no upgrade or reset
    /// meanwhile).
    pub(super) fn check_pins_locked(&self) -> Result<Vec<PinRepair>, DataplaneError> {
        self.pin_watch().check(&self.dirs)
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
    pub(super) fn upgrade_programs(&self, object: Option<&[u8]>) -> Result<Vec<ProgramStatus>, DataplaneError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let object = object.unwrap_or(EBPF_OBJECT);
        // The new object is loaded over the pins: each must name the map in use first.
        self.check_pins_locked()?;
        let t = std::time::Instant::now();
        check_pinned_maps(&self.dirs, object)?;
        let checked = t.elapsed();
        let mut ebpf = load_object(&self.dirs, object, self.fib4_chunks)?;
        let parsed = t.elapsed();
        load_programs(&mut ebpf, &self.dirs, object, self.fib4_chunks)?;
        super::flows::load_sweeper(&mut ebpf)?;
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
    pub(super) fn reset_all(&self) {
        let mut inner = self.lock();
        // The pins go on purpose: the periodic check must not pin them again.
        self.pin_watch().retired = true;
        let ifindexes: Vec<u32> = inner.links.keys().copied().collect();
        for ifindex in ifindexes {
            if let Err(e) = detach_locked(&mut inner, &self.dirs, ifindex, None) {
                warn!(ifindex, error = %e, "detach on reset failed");
            }
        }
        if let Err(e) = remove_pins(&self.dirs.root) {
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

/// Removes everything this server pins under `root` (`--reset`, without a loaded dataplane):
/// link pins first (detaching), then programs, then maps, then the directories. Refused while a
/// live server holds the directory.
pub fn remove_all_pins(root: &Path) -> Result<(), DataplaneError> {
    if !root.exists() {
        return Ok(());
    }
    // Not from under a live server: it would go on writing maps nobody pins any more.
    let _lock = PinLock::acquire(root, HOLDER_EXIT_WAIT)?;
    remove_pins(root)
}

/// [`remove_all_pins`] by the dataplane that holds the directory's lock (its reset).
fn remove_pins(root: &Path) -> Result<(), DataplaneError> {
    let dirs = PinDirs::new(root);
    for d in [&dirs.links, &dirs.programs, &dirs.maps, &dirs.displaced] {
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

/// Takes map `name` out of the object as its typed wrapper (each concern's wrapper opens its
/// own maps with this).
pub(super) fn open_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, DataplaneError>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    T::try_from(take_map(ebpf, name)?).map_err(DataplaneError::map(name, "open"))
}

/// Takes array map `name` out of the object untyped, for a shared mapping of its values.
pub(super) fn open_array_data(ebpf: &mut Ebpf, name: &'static str) -> Result<MapData, DataplaneError> {
    match take_map(ebpf, name)? {
        Map::Array(data) => Ok(data),
        _ => Err(DataplaneError::Missing { what: "array map", name }),
    }
}

pub(super) fn remove_pin(path: &Path) -> Result<(), DataplaneError> {
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

pub(super) fn link_id(link: &FdLink, program: &'static str) -> Result<u32, DataplaneError> {
    link.info().map(|i| i.id()).map_err(|e| DataplaneError::Link { program, op: "info", source: Box::new(e) })
}
