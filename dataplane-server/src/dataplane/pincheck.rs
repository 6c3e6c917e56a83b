//! Damaged pins: a map pin under `<bpffs>/v1/maps/` removed or replaced by hand.
//!
//! Loading the object over the pins would create a fresh, empty map for a missing pin (and
//! adopt whatever map a replaced pin names), while the attached programs go on with the map they
//! were loaded with: the server would list routes XDP no longer has and write where XDP never
//! reads. So, at start, before the object is loaded over the pins ([`repair_at_start`]):
//!
//! - every map the pinned programs, and the programs the pinned links run, use (the kernel's
//!   program info: map ids, then each map's name, truncated to 15 bytes, type and key and value
//!   sizes) is compared with its pin. A missing pin
//!   is pinned again from the program's map (nothing lost); a pin naming another map (replaced
//!   by hand) is moved aside to `<bpffs>/v1/displaced/<MAP>-<id>` and the program's map pinned:
//!   the program's map is what forwards, and the foreign map is kept for whoever put it there to
//!   inspect (`--reset` removes it);
//! - a map no program uses whose pin is missing while other pins exist (a damaged directory, not
//!   a first start) is created empty and reported if the restore rebuilds its content from the
//!   other maps (counters, soft state, the IPv4 flat tables and trie), and refused otherwise,
//!   naming it: it was the only copy of forwarding state ([`content`]).
//!
//! While the server runs, [`PinWatch::check`] (every few seconds, from `main.rs`) compares each
//! pin with the map the server has open and pins the server's map again where the pin is
//! missing or names another map. Every repair is logged and kept for the status
//! ([`PinHealth`]).

use std::{
    collections::{BTreeMap, VecDeque},
    fmt, fs,
    path::{Path, PathBuf},
    time::SystemTime,
};

use aya::{
    maps::{MapData, MapInfo},
    programs::ProgramInfo,
};
use dataplane_common::{maps as names, programs};
use tracing::{info, warn};

use super::{loader::PinDirs, DataplaneError};

/// The longest map name the kernel keeps (`BPF_OBJ_NAME_LEN` less the NUL).
const KERNEL_NAME_LEN: usize = 15;
/// Repairs kept for the status; the counter counts them all.
const KEPT_REPAIRS: usize = 64;

/// What a missing map held, for deciding whether it may be created empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Content {
    /// Nothing that cannot be had again: the restore rebuilds it (from what), or it is counters
    /// or soft state.
    Rebuilt(&'static str),
    /// The only copy of forwarding state (what).
    OnlyCopy(&'static str),
}

/// What map `name` holds, as the restore (`domain/persist.rs` and each concern's `restore.rs`)
/// treats it. A map added by a later build must be `Rebuilt` here (it starts empty the first time
/// that build runs over an earlier one's pins), or that start would be refused.
pub fn content(name: &str) -> Content {
    use Content::{OnlyCopy, Rebuilt};
    match name {
        names::IFACE_STATS | names::UNKNOWN_IFACE_STATS | names::NEXTHOP_STATS | names::POLICY_RULE_STATS => {
            Rebuilt("counters, which start again at zero")
        }
        names::ROUTES_V4 => {
            Rebuilt("ROUTE4_RECORDS: the restore writes every IPv4 route of a VRF without a flat table")
        }
        names::FIB4_CHUNKS => Rebuilt("the IPv4 routes: the restore builds each VRF's flat table again"),
        names::FIB4_VRFS => Rebuilt("the flat-table roots in the interface entries, then the restore"),
        names::FLOWS_V4 | names::FLOWS_V6 => Rebuilt("nothing: flows are soft state, missed and installed again"),
        names::PUNT_BUCKETS | names::FLOW_SEQ | names::FLOW_MISSES => {
            Rebuilt("nothing: punt rate limits, request ids and queued misses of the previous run")
        }
        names::INTERFACES | names::INTERFACES_HIGH => OnlyCopy("the interfaces' entries (VRF, flags, roots)"),
        names::TX_PORTS => OnlyCopy("the redirect targets of the interfaces"),
        names::ROUTES_V6 => OnlyCopy("every IPv6 route"),
        names::ROUTE4_RECORDS => OnlyCopy("the IPv4 routes of every VRF with a flat table"),
        names::NEXTHOPS => OnlyCopy("the next hops"),
        names::FLOW_CONFIG => OnlyCopy("the interfaces' flow modes"),
        names::GLOBALS => OnlyCopy("the generation and the IPv4 route records' mark"),
        _ => OnlyCopy("the compiled policies and their attachments"),
    }
}

/// The name map `name` has in the kernel (truncated to [`KERNEL_NAME_LEN`] bytes).
pub fn kernel_name(name: &str) -> &str {
    // Map names are ASCII (the kernel refuses anything else), so any byte is a boundary.
    &name[..name.len().min(KERNEL_NAME_LEN)]
}

/// How a pin was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinFound {
    /// No pin at the path.
    Missing,
    /// The pin names map `foreign_id`, not the one the programs (or the server) use.
    Replaced { foreign_id: u32 },
}

impl fmt::Display for PinFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => write!(f, "pin missing"),
            Self::Replaced { foreign_id } => write!(f, "pin replaced: it named map id {foreign_id}"),
        }
    }
}

/// What was done about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinFix {
    /// The map in use (id `map_id`) was pinned again: nothing lost.
    Repinned { map_id: u32 },
    /// The foreign pin was moved to `to`, then the map in use pinned again.
    MovedAsideAndRepinned { map_id: u32, to: PathBuf },
    /// No program used the map: it was created empty; its content comes from `rebuilt_from`.
    Created { rebuilt_from: &'static str },
}

impl fmt::Display for PinFix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Repinned { map_id } => write!(f, "map id {map_id} (the one in use) pinned again"),
            Self::MovedAsideAndRepinned { map_id, to } => {
                write!(f, "foreign pin moved to {}; map id {map_id} (the one in use) pinned again", to.display())
            }
            Self::Created { rebuilt_from } => {
                write!(f, "created empty (no program used it); rebuilt from {rebuilt_from}")
            }
        }
    }
}

/// When the damage was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinPhase {
    /// At start, before the object was loaded over the pins.
    Start,
    /// By the periodic check of a running server.
    Running,
}

impl fmt::Display for PinPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Start => "start",
            Self::Running => "running",
        })
    }
}

/// One repaired pin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinRepair {
    pub map: &'static str,
    pub found: PinFound,
    pub fix: PinFix,
    pub phase: PinPhase,
    pub at: SystemTime,
}

/// The pins' repairs since the server started, for the status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PinHealth {
    /// The latest repairs (at most 64), oldest first.
    pub repairs: Vec<PinRepair>,
    /// Every repair since the start.
    pub total: u64,
}

/// One map name as the kernel shows it before loading: its pin and the maps the pinned
/// programs use under that name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub name: &'static str,
    /// Id of the map the pin names.
    pub pinned: Option<u32>,
    /// (program, map id) for each pinned program using a map of this name and layout.
    pub used: Vec<(&'static str, u32)>,
}

/// One change [`plan`] asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Pin the programs' map `id` at the (missing) pin.
    Repin { map: &'static str, id: u32 },
    /// Move the pin naming `foreign` aside, then pin the programs' map `id`.
    Displace { map: &'static str, id: u32, foreign: u32 },
    /// Let the loader create the map (nothing uses the one that was pinned).
    Create { map: &'static str, rebuilt_from: &'static str },
}

/// What to do about the pins `observed` describes; `programs_pinned` tells a damaged directory
/// from a first start when no map pin is left. Refused (nothing to do, nothing done) if a map
/// holding the only copy of forwarding state is gone, or if two programs use different maps of
/// one name.
pub fn plan(observed: &[Observed], programs_pinned: bool, dir: &Path) -> Result<Vec<Step>, DataplaneError> {
    let damaged_dir = programs_pinned || observed.iter().any(|o| o.pinned.is_some());
    let mut steps = Vec::new();
    let mut lost = Vec::new();
    for o in observed {
        let mut ids: Vec<u32> = o.used.iter().map(|&(_, id)| id).collect();
        ids.sort_unstable();
        ids.dedup();
        match (ids.as_slice(), o.pinned) {
            ([], None) if damaged_dir => match content(o.name) {
                Content::Rebuilt(from) => steps.push(Step::Create { map: o.name, rebuilt_from: from }),
                Content::OnlyCopy(what) => lost.push((o.name, what)),
            },
            ([], _) => {}
            (&[id], None) => steps.push(Step::Repin { map: o.name, id }),
            (&[id], Some(pinned)) if pinned == id => {}
            (&[id], Some(foreign)) => steps.push(Step::Displace { map: o.name, id, foreign }),
            (_, _) => {
                let ids = o.used.iter().map(|(p, id)| format!("{p}: map id {id}")).collect::<Vec<_>>().join(", ");
                return Err(DataplaneError::ProgramsDisagree { map: o.name, ids });
            }
        }
    }
    if !lost.is_empty() {
        return Err(DataplaneError::PinnedMapsLost {
            maps: lost.iter().map(|(m, _)| *m).collect::<Vec<_>>().join(", "),
            dir: dir.to_owned(),
            holds: lost.iter().map(|(m, what)| format!("{m}: {what}")).collect::<Vec<_>>().join("; "),
        });
    }
    Ok(steps)
}

/// Which of `expected`'s names a kernel map is: same (truncated) name and same type, key and
/// value sizes.
pub fn identify(
    kernel: &str,
    layout: (u32, u32, u32),
    expected: &BTreeMap<&'static str, (u32, u32, u32)>,
) -> Option<&'static str> {
    expected.iter().find(|(name, l)| kernel_name(name) == kernel && **l == layout).map(|(name, _)| *name)
}

fn layout_of(info: &MapInfo) -> (u32, u32, u32) {
    (info.map_type().map(|t| t as u32).unwrap_or(u32::MAX), info.key_size(), info.value_size())
}

/// The pins and the pinned programs' maps of every map of the object, as the kernel has them.
fn observe(
    dirs: &PinDirs,
    expected: &BTreeMap<&'static str, (u32, u32, u32)>,
) -> Result<(Vec<Observed>, bool), DataplaneError> {
    let mut observed: Vec<Observed> = names::ALL.iter().map(|name| Observed { name, ..Default::default() }).collect();
    let mut programs_pinned = false;
    // (who, the program's info): the pinned programs, then those the pinned links run (what
    // forwards, even when the programs' own pins are gone too).
    let mut running: Vec<(&'static str, ProgramInfo)> = Vec::new();
    for program in [programs::XDP_INGRESS, programs::TC_EGRESS] {
        let path = dirs.programs.join(program);
        if fs::symlink_metadata(&path).is_err() {
            continue;
        }
        programs_pinned = true;
        let info =
            ProgramInfo::from_pin(&path).map_err(DataplaneError::program(program, "read pinned program info"))?;
        running.push((program, info));
    }
    let linked = linked_programs(dirs)?;
    programs_pinned |= !linked.is_empty();
    if linked.iter().any(|id| running.iter().all(|(_, p)| p.id() != *id)) {
        // Only then: a walk over every program of the node.
        for info in aya::programs::loaded_programs().flatten() {
            if linked.contains(&info.id()) && running.iter().all(|(_, p)| p.id() != info.id()) {
                running.push(("a pinned link's program", info));
            }
        }
    }
    for (program, info) in running {
        let ids = info.map_ids().map_err(DataplaneError::program(program, "read map ids"))?.unwrap_or_default();
        for id in ids {
            let map = MapInfo::from_id(id).map_err(DataplaneError::map("(used by a pinned program)", "read info"))?;
            let Some(kernel) = map.name_as_str() else { continue };
            // Maps of other names (global data, the benchmark's) are never pinned.
            let Some(name) = identify(kernel, layout_of(&map), expected) else { continue };
            if let Some(o) = observed.iter_mut().find(|o| o.name == name) {
                o.used.push((program, id));
            }
        }
    }
    for o in &mut observed {
        let path = dirs.maps.join(o.name);
        if fs::symlink_metadata(&path).is_ok() {
            o.pinned =
                Some(MapInfo::from_pin(&path).map_err(DataplaneError::map(o.name, "read pinned map info"))?.id());
        }
    }
    Ok((observed, programs_pinned))
}

/// The ids of the programs the pinned links run.
fn linked_programs(dirs: &PinDirs) -> Result<Vec<u32>, DataplaneError> {
    let Ok(entries) = fs::read_dir(&dirs.links) else { return Ok(Vec::new()) };
    let mut ids = Vec::new();
    for entry in entries.flatten() {
        let link = aya::programs::links::PinnedLink::from_pin(entry.path()).map_err(|e| DataplaneError::Link {
            program: "pinned link",
            op: "open",
            source: Box::new(e),
        })?;
        let info = aya::programs::links::FdLink::from(link).info().map_err(|e| DataplaneError::Link {
            program: "pinned link",
            op: "info",
            source: Box::new(e),
        })?;
        ids.push(info.program_id());
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// Checks the pins against the pinned programs' maps and repairs them (see the module's
/// documentation), before the object is loaded over them. A refusal changes nothing. The
/// `Created` repairs are done by the loader that follows (it creates and pins missing maps).
pub(super) fn repair_at_start(
    dirs: &PinDirs,
    expected: &BTreeMap<&'static str, (u32, u32, u32)>,
) -> Result<Vec<PinRepair>, DataplaneError> {
    let (observed, programs_pinned) = observe(dirs, expected)?;
    let steps = plan(&observed, programs_pinned, &dirs.maps)?;
    let mut repairs = Vec::with_capacity(steps.len());
    for step in steps {
        let repair = match step {
            Step::Repin { map, id } => {
                let fix = repin(dirs, map, id, None)?;
                PinRepair { map, found: PinFound::Missing, fix, phase: PinPhase::Start, at: SystemTime::now() }
            }
            Step::Displace { map, id, foreign } => {
                let fix = repin(dirs, map, id, Some(foreign))?;
                PinRepair {
                    map,
                    found: PinFound::Replaced { foreign_id: foreign },
                    fix,
                    phase: PinPhase::Start,
                    at: SystemTime::now(),
                }
            }
            Step::Create { map, rebuilt_from } => PinRepair {
                map,
                found: PinFound::Missing,
                fix: PinFix::Created { rebuilt_from },
                phase: PinPhase::Start,
                at: SystemTime::now(),
            },
        };
        log_repair(&repair);
        repairs.push(repair);
    }
    Ok(repairs)
}

/// Pins map `id` at `map`'s pin, first moving the pin naming `foreign` (if any) aside.
fn repin(dirs: &PinDirs, map: &'static str, id: u32, foreign: Option<u32>) -> Result<PinFix, DataplaneError> {
    let path = dirs.maps.join(map);
    let data = MapData::from_id(id).map_err(DataplaneError::map(map, "open by id"))?;
    let io = |path: &Path, op: &'static str| {
        let path = path.to_owned();
        move |source| DataplaneError::Io { path, op, source }
    };
    fs::create_dir_all(&dirs.maps).map_err(io(&dirs.maps, "create directory"))?;
    let moved = match foreign {
        Some(foreign) => {
            // Kept, not removed: whoever put it there may want it back, and nothing reads it
            // from there. `--reset` removes it with the rest.
            fs::create_dir_all(&dirs.displaced).map_err(io(&dirs.displaced, "create directory"))?;
            // bpffs refuses names with a dot.
            let to = dirs.displaced.join(format!("{map}-{foreign}"));
            fs::rename(&path, &to).map_err(io(&path, "move foreign pin aside"))?;
            Some(to)
        }
        None => None,
    };
    data.pin(&path).map_err(|e| DataplaneError::PinMap { map, path: path.clone(), source: Box::new(e) })?;
    Ok(match moved {
        Some(to) => PinFix::MovedAsideAndRepinned { map_id: id, to },
        None => PinFix::Repinned { map_id: id },
    })
}

/// Map `map`'s pin against the map the server has open (`id`): repaired if missing or replaced.
fn check_one(dirs: &PinDirs, map: &'static str, id: u32) -> Result<Option<PinRepair>, DataplaneError> {
    let path = dirs.maps.join(map);
    let found = if fs::symlink_metadata(&path).is_err() {
        PinFound::Missing
    } else {
        let pinned = MapInfo::from_pin(&path).map_err(DataplaneError::map(map, "read pinned map info"))?.id();
        if pinned == id {
            return Ok(None);
        }
        PinFound::Replaced { foreign_id: pinned }
    };
    let foreign = match found {
        PinFound::Replaced { foreign_id } => Some(foreign_id),
        PinFound::Missing => None,
    };
    let fix = repin(dirs, map, id, foreign)?;
    Ok(Some(PinRepair { map, found, fix, phase: PinPhase::Running, at: SystemTime::now() }))
}

fn log_repair(r: &PinRepair) {
    if matches!(r.fix, PinFix::Created { .. }) {
        warn!(map = r.map, found = %r.found, done = %r.fix, phase = %r.phase, "damaged pin: map created");
    } else {
        warn!(map = r.map, found = %r.found, done = %r.fix, phase = %r.phase, "damaged pin repaired");
    }
}

/// The maps the server has open, by pin, and the repairs made so far.
#[derive(Debug, Default)]
pub(super) struct PinWatch {
    /// (map, id of the map the server writes).
    open: Vec<(&'static str, u32)>,
    repairs: VecDeque<PinRepair>,
    total: u64,
    /// Set by a reset: the pins are gone on purpose, and nothing may pin them again.
    pub(super) retired: bool,
}

impl PinWatch {
    /// Right after loading: every pin names the map the server opened through it.
    pub(super) fn new(dirs: &PinDirs, start: Vec<PinRepair>) -> Result<Self, DataplaneError> {
        let mut open = Vec::with_capacity(names::ALL.len());
        for name in names::ALL {
            let info =
                MapInfo::from_pin(dirs.maps.join(name)).map_err(DataplaneError::map(name, "read pinned map info"))?;
            open.push((*name, info.id()));
        }
        let mut watch = Self { open, ..Default::default() };
        watch.record(start);
        Ok(watch)
    }

    fn record(&mut self, repairs: Vec<PinRepair>) {
        self.total += repairs.len() as u64;
        for r in repairs {
            if self.repairs.len() == KEPT_REPAIRS {
                self.repairs.pop_front();
            }
            self.repairs.push_back(r);
        }
    }

    /// Compares every pin with the map the server has open and pins the server's map again
    /// where the pin is missing or names another map. Returns this call's repairs; the first
    /// error, if any, after every other map was checked (one pin that cannot be read or repaired
    /// must not leave the others unchecked). The caller holds the dataplane's lock (no upgrade
    /// or reset meanwhile).
    pub(super) fn check(&mut self, dirs: &PinDirs) -> Result<Vec<PinRepair>, DataplaneError> {
        if self.retired {
            return Ok(Vec::new());
        }
        let mut repairs = Vec::new();
        let mut first_error = None;
        for &(map, id) in &self.open {
            match check_one(dirs, map, id) {
                Ok(Some(repair)) => {
                    log_repair(&repair);
                    repairs.push(repair);
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(map, error = %e, "pin check: pin not repaired");
                    first_error.get_or_insert(e);
                }
            }
        }
        if !repairs.is_empty() {
            info!(repaired = repairs.len(), total = self.total + repairs.len() as u64, "pin check repaired pins");
        }
        self.record(repairs.clone());
        match first_error {
            Some(e) => Err(e),
            None => Ok(repairs),
        }
    }

    /// (map, id) of every map the server has open, in `names::ALL`'s order.
    pub(super) fn open_ids(&self) -> Vec<(&'static str, u32)> {
        self.open.clone()
    }

    /// The repairs so far.
    pub(super) fn health(&self) -> PinHealth {
        PinHealth { repairs: self.repairs.iter().cloned().collect(), total: self.total }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(name: &'static str, pinned: Option<u32>, used: &[(&'static str, u32)]) -> Observed {
        Observed { name, pinned, used: used.to_vec() }
    }

    const X: &str = programs::XDP_INGRESS;
    const T: &str = programs::TC_EGRESS;

    #[test]
    fn kernel_name_all_maps_distinct_after_truncation() {
        let mut seen: Vec<&str> = names::ALL.iter().map(|n| kernel_name(n)).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), names::ALL.len());
        assert_eq!(kernel_name(names::POLICY_RULE_STATS), "POLICY_RULE_STA");
        assert_eq!(kernel_name(names::ROUTES_V6), "ROUTES_V6");
    }

    #[test]
    fn identify_truncated_name_and_layout_must_both_match() {
        let expected = BTreeMap::from([(names::POLICY_RULE_STATS, (6, 4, 16)), (names::ROUTES_V6, (11, 20, 8))]);
        assert_eq!(identify("POLICY_RULE_STA", (6, 4, 16), &expected), Some(names::POLICY_RULE_STATS));
        assert_eq!(identify("ROUTES_V6", (11, 20, 8), &expected), Some(names::ROUTES_V6));
        assert_eq!(identify("ROUTES_V6", (11, 20, 12), &expected), None, "value size differs");
        assert_eq!(identify(".rodata", (2, 4, 8), &expected), None);
    }

    #[test]
    fn plan_all_pins_match_programs_does_nothing() {
        let o = [obs(names::ROUTES_V6, Some(7), &[(X, 7), (T, 7)]), obs(names::ROUTE4_RECORDS, Some(9), &[])];
        assert_eq!(plan(&o, true, Path::new("/p")).unwrap(), vec![]);
    }

    #[test]
    fn plan_missing_pin_of_used_map_repins_programs_map() {
        let o = [obs(names::ROUTES_V6, None, &[(X, 7), (T, 7)]), obs(names::FIB4_CHUNKS, None, &[(X, 8)])];
        assert_eq!(
            plan(&o, true, Path::new("/p")).unwrap(),
            vec![Step::Repin { map: names::ROUTES_V6, id: 7 }, Step::Repin { map: names::FIB4_CHUNKS, id: 8 }]
        );
    }

    #[test]
    fn plan_replaced_pin_of_used_map_displaces_foreign() {
        let o = [obs(names::NEXTHOPS, Some(99), &[(X, 7)])];
        assert_eq!(
            plan(&o, true, Path::new("/p")).unwrap(),
            vec![Step::Displace { map: names::NEXTHOPS, id: 7, foreign: 99 }]
        );
    }

    #[test]
    fn plan_unused_rebuildable_missing_in_damaged_dir_creates() {
        let o = [obs(names::FIB4_VRFS, None, &[]), obs(names::INTERFACES, Some(1), &[(X, 1)])];
        let steps = plan(&o, true, Path::new("/p")).unwrap();
        assert!(matches!(steps.as_slice(), [Step::Create { map: names::FIB4_VRFS, .. }]), "{steps:?}");
    }

    #[test]
    fn plan_unused_only_copy_missing_refused_naming_map_and_reset() {
        let o = [
            obs(names::ROUTE4_RECORDS, None, &[]),
            obs(names::FLOWS_V4, None, &[]),
            obs(names::INTERFACES, Some(1), &[(X, 1)]),
        ];
        let e = plan(&o, true, Path::new("/sys/fs/bpf/dp/v1/maps")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("ROUTE4_RECORDS") && msg.contains("--reset"), "{msg}");
        assert!(!msg.contains("FLOWS_V4"), "a rebuildable map is not refused: {msg}");
    }

    #[test]
    fn plan_first_start_nothing_pinned_creates_silently() {
        let o = [obs(names::ROUTE4_RECORDS, None, &[]), obs(names::ROUTES_V6, None, &[])];
        assert_eq!(plan(&o, false, Path::new("/p")).unwrap(), vec![]);
    }

    #[test]
    fn plan_no_map_pins_but_programs_pinned_is_damaged_not_first_start() {
        let o = [obs(names::ROUTE4_RECORDS, None, &[]), obs(names::ROUTES_V6, None, &[(X, 3)])];
        assert!(matches!(plan(&o, true, Path::new("/p")), Err(DataplaneError::PinnedMapsLost { .. })));
    }

    #[test]
    fn plan_programs_using_different_maps_of_one_name_refused() {
        let o = [obs(names::ROUTES_V6, Some(7), &[(X, 7), (T, 8)])];
        let e = plan(&o, true, Path::new("/p")).unwrap_err();
        assert!(matches!(e, DataplaneError::ProgramsDisagree { map: names::ROUTES_V6, .. }), "{e}");
    }

    #[test]
    fn content_every_map_classified_and_forwarding_state_is_only_copy() {
        for name in [names::ROUTES_V6, names::NEXTHOPS, names::INTERFACES, names::ROUTE4_RECORDS, names::GLOBALS] {
            assert!(matches!(content(name), Content::OnlyCopy(_)), "{name}");
        }
        for name in [names::FIB4_CHUNKS, names::FIB4_VRFS, names::IFACE_STATS, names::FLOWS_V6, names::ROUTES_V4] {
            assert!(matches!(content(name), Content::Rebuilt(_)), "{name}");
        }
    }

    #[test]
    fn pin_watch_record_keeps_latest_and_counts_all() {
        let mut w = PinWatch::default();
        let r = |i: u32| PinRepair {
            map: names::ROUTES_V6,
            found: PinFound::Missing,
            fix: PinFix::Repinned { map_id: i },
            phase: PinPhase::Running,
            at: SystemTime::UNIX_EPOCH,
        };
        w.record((0..70).map(r).collect());
        let h = w.health();
        assert_eq!(h.total, 70);
        assert_eq!(h.repairs.len(), KEPT_REPAIRS);
        assert_eq!(h.repairs[0].fix, PinFix::Repinned { map_id: 6 });
    }

    #[test]
    fn pin_watch_retired_checks_nothing() {
        let mut w = PinWatch { open: vec![(names::ROUTES_V6, 1)], retired: true, ..Default::default() };
        let dirs = PinDirs::new(Path::new("/nonexistent-pin-root"));
        assert_eq!(w.check(&dirs).unwrap(), vec![]);
    }
}
