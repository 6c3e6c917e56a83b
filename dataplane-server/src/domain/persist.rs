//! The state file: what a restarted server cannot read back from the kernel's maps (names, ids,
//! specs, policy rules, allocations, the generation), written atomically (write + rename) after
//! every change, and the order in which a restart takes it back. Routes and flows are not in it:
//! they are read from their maps.
//!
//! Each concern writes and reads its own part with serde on its own types, beside it
//! (`vrfs/restore.rs`, `interfaces/restore.rs`, `nexthops/restore.rs`, `policies/restore.rs`,
//! `flows/restore.rs`; routes and flat tables, read from the kernel, in `routes/restore.rs` and
//! `fib4/restore.rs`). This file holds the file's shape, its format number, reading and writing
//! it, and the restore's order.
//!
//! Reading is strict: a value this build does not know (an XDP mode, a direction, a prefix with
//! host bits, a name the API would refuse) is an error naming where it is
//! (`interfaces[2].xdp_mode: unknown variant ...`) and the server does not start; nothing is read
//! as a default. So is an unknown field inside an entry: it would qualify that entry (a rule's
//! new match, a next hop's new option), and dropping it would change what the entry does (a rule
//! matching more than was written). An unknown field at the top level is ignored: it is a concern
//! a newer build added, which this build has no part of to serve, and refusing it would only
//! stop a rollback. A change to what this build reads bumps [`FORMAT`].

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{
    flows::{self, restore::SavedFlowMode},
    interfaces::{self, restore::SavedInterface},
    nexthops::{self, restore::SavedNextHop},
    policies::{
        self,
        restore::{SavedAttachment, SavedPolicy},
        InstalledRecord,
    },
    vrfs::{self, restore::SavedVrf},
    Domain, DomainError, State,
};
use crate::dataplane::Dataplane;

/// Bumped when the file's meaning changes; a file of another format is refused.
const FORMAT: u32 = 1;

/// The state file, as the concerns' parts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Persisted {
    pub format: u32,
    pub generation: u64,
    vrfs: Vec<SavedVrf>,
    interfaces: Vec<SavedInterface>,
    nexthops: Vec<SavedNextHop>,
    policies: Vec<SavedPolicy>,
    /// Tables replaced or deleted but not yet reclaimed (they wait for a grace period).
    retired: Vec<InstalledRecord>,
    attachments: Vec<SavedAttachment>,
    flow_modes: Vec<SavedFlowMode>,
    /// Event sequence numbers already handed out stay below these (see `Domain::reserve_seq`).
    pub seq_floors: BTreeMap<String, u64>,
    /// Fingerprint of the eBPF object the pinned programs came from (`loader::object_fingerprint`).
    /// Absent in files of builds before it was recorded.
    #[serde(default)]
    pub programs_object: Option<u64>,
    /// The pins this file describes (`Lifecycle::pins_id`): a file naming other pins (another
    /// dataplane's, or pins since reset) is not read. Absent in files of builds before it was
    /// recorded, which are taken as this dataplane's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pins: Option<u64>,
}

/// The format number alone, read first: a file of another format is refused as such, not for
/// the first field this build would not understand.
#[derive(Deserialize)]
struct Header {
    format: u32,
}

/// Errors reading or writing the state file.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// The file could not be read, written or renamed.
    #[error("state file {path}: {op}: {source}")]
    Io { path: PathBuf, op: &'static str, source: std::io::Error },
    /// Not JSON, or of another format.
    #[error("state file {path}: not a state file of this server: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    /// A state file of this format with a value this build does not accept at `field` (its path
    /// in the file, `interfaces[2].xdp_mode`).
    #[error("state file {path}: {field}: {detail}")]
    Invalid { path: PathBuf, field: String, detail: String },
}

/// The state file as a start found it.
#[derive(Debug)]
pub enum Loaded {
    Read(Persisted),
    /// None there (a first start, or removed).
    Missing,
    /// Not a whole JSON document (truncated, overwritten): kept at `kept_as` for a look, and
    /// the start goes on from the kernel alone.
    Damaged {
        kept_as: PathBuf,
        detail: String,
    },
}

/// Reads the state file for a start: a file that is not JSON at all (cut short by a full disk,
/// overwritten by hand) is moved aside and reported as damaged, since the pinned maps still hold
/// what forwards; a file of another format, or with a value this build does not know, stops the
/// start (it may be a newer build's, and guessing would lose what it says).
pub fn load(path: &Path) -> Result<Loaded, PersistError> {
    match read(path) {
        Ok(Some(p)) => Ok(Loaded::Read(p)),
        Ok(None) => Ok(Loaded::Missing),
        Err(PersistError::Corrupt { detail, .. }) if !detail.starts_with(FORMAT_MISMATCH) => {
            let kept_as = set_aside(path, "damaged")?;
            Ok(Loaded::Damaged { kept_as, detail })
        }
        Err(e) => Err(e),
    }
}

/// Renames the state file to `<path>.<what>` (replacing an earlier one), for an operator to see.
pub(super) fn set_aside(path: &Path, what: &str) -> Result<PathBuf, PersistError> {
    let mut kept = path.as_os_str().to_owned();
    kept.push(format!(".{what}"));
    let kept = PathBuf::from(kept);
    std::fs::rename(path, &kept).map_err(|source| PersistError::Io { path: path.to_owned(), op: "rename", source })?;
    Ok(kept)
}

/// The start of a `Corrupt` detail that says the file is of another format (not damaged).
const FORMAT_MISMATCH: &str = "format ";

/// Reads the state file; `None` if there is none (a first start).
pub fn read(path: &Path) -> Result<Option<Persisted>, PersistError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(PersistError::Io { path: path.to_owned(), op: "read", source }),
    };
    decode(&text).map(Some).map_err(|e| match e {
        Decode::Corrupt(detail) => PersistError::Corrupt { path: path.to_owned(), detail },
        Decode::Invalid { field, detail } => PersistError::Invalid { path: path.to_owned(), field, detail },
    })
}

/// Why a text is not a state file (the caller adds the path).
enum Decode {
    Corrupt(String),
    Invalid { field: String, detail: String },
}

fn decode(text: &str) -> Result<Persisted, Decode> {
    let header: Header = serde_json::from_str(text).map_err(|e| Decode::Corrupt(e.to_string()))?;
    if header.format != FORMAT {
        return Err(Decode::Corrupt(format!("{FORMAT_MISMATCH}{} (this server writes {FORMAT})", header.format)));
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let p: Persisted = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| Decode::Invalid { field: e.path().to_string(), detail: e.into_inner().to_string() })?;
    de.end().map_err(|e| Decode::Corrupt(e.to_string()))?;
    Ok(p)
}

/// Writes `p` atomically: a reader (or a restart after a crash at any point) sees the old file or
/// the new one, whole.
pub fn write(path: &Path, p: &Persisted) -> Result<(), PersistError> {
    let io = |op: &'static str| move |source| PersistError::Io { path: path.to_owned(), op, source };
    let text =
        serde_json::to_vec(p).map_err(|e| PersistError::Corrupt { path: path.to_owned(), detail: e.to_string() })?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io("create directory"))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(io("write"))?;
    std::fs::rename(&tmp, path).map_err(io("rename"))?;
    Ok(())
}

/// A name (or other domain value) the file holds that the domain's own validation refuses, as a
/// decoding error: the decoder's path names the field, so only the reason is kept.
pub(super) fn invalid_value<E: serde::de::Error>(e: DomainError) -> E {
    match e {
        DomainError::InvalidArgument { reason, .. } => E::custom(reason),
        e => E::custom(e),
    }
}

/// What a restore found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// What the state file was: `read`, `missing`, `damaged (kept as PATH): DETAIL`,
    /// `foreign (...)`.
    pub state_file: String,
    /// What the kernel forwards with that the state file did not describe, taken into the
    /// domain's state (with names and ids made up where the file had them: see `adopt.rs`).
    pub adopted: Vec<String>,
    /// Where the file and the kernel disagreed; the kernel's side was kept.
    pub disagreements: Vec<String>,
    pub interfaces: usize,
    pub nexthops: usize,
    pub routes: usize,
    pub policies: usize,
    /// Entries dropped because the kernel no longer had them (an interface deleted while no
    /// server ran) or never fully had them (a crash in the middle of a change).
    pub dropped: Vec<String>,
    /// VRFs whose IPv4 flat table was adopted as the kernel had it.
    pub fib4_adopted: Vec<u32>,
    /// VRFs whose IPv4 flat table was built anew (none in the kernel, or one that did not
    /// match the routes: a crash in the middle of a batch).
    pub fib4_built: Vec<u32>,
    /// The batch a crash cut short, rolled back (see `intent`).
    pub rolled_back: Option<super::intent::RolledBack>,
}

impl State {
    /// The part of the state the file keeps.
    pub(super) fn persisted(
        &self,
        seq_floors: BTreeMap<String, u64>,
        programs_object: Option<u64>,
        pins: Option<u64>,
    ) -> Persisted {
        Persisted {
            format: FORMAT,
            generation: self.generation,
            vrfs: vrfs::restore::saved(self),
            interfaces: interfaces::restore::saved(self),
            nexthops: nexthops::restore::saved(self),
            policies: policies::restore::saved(self),
            retired: policies::restore::saved_retired(self),
            attachments: policies::restore::saved_attachments(self),
            flow_modes: flows::restore::saved(self),
            seq_floors,
            programs_object,
            pins,
        }
    }
}

impl<D: Dataplane> Domain<D> {
    /// As [`Self::restore_loaded`], from a state file already read (`None`: there is none).
    pub fn restore(&self, p: Option<Persisted>) -> Result<RestoreReport, DomainError> {
        self.restore_loaded(p.map_or(Loaded::Missing, Loaded::Read))
    }

    /// Rebuilds the domain from the pinned kernel state, with the state file `file` adding what
    /// the maps cannot hold (names, controller ids, specs, policy rules), without removing
    /// anything that forwards: the kernel is the truth. What the file does not describe is
    /// adopted from the kernel; where the two disagree the kernel wins; both are reported (log,
    /// the returned report, `GetStatus`) and move the generation, so a controller knows to
    /// resync. Only what cannot forward any more is dropped (an interface whose link is gone, a
    /// route to an empty next hop). Writes the state file back.
    pub fn restore_loaded(&self, file: Loaded) -> Result<RestoreReport, DomainError> {
        let mut report = RestoreReport::default();
        let p = match file {
            Loaded::Read(p) if p.pins.is_some_and(|id| Some(id) != self.pins_id) => {
                let theirs = p.pins.unwrap_or_default();
                let kept = self.state_file.as_deref().map(|f| set_aside(f, "foreign"));
                report.state_file = match kept {
                    Some(Ok(kept)) => format!(
                        "foreign: it describes pins {theirs}, these are {} (kept as {})",
                        self.pins_id.unwrap_or_default(),
                        kept.display()
                    ),
                    Some(Err(e)) => format!("foreign: it describes pins {theirs} ({e})"),
                    None => format!("foreign: it describes pins {theirs}"),
                };
                Persisted::default()
            }
            Loaded::Read(p) => {
                report.state_file = "read".to_owned();
                p
            }
            Loaded::Missing => {
                report.state_file = "missing".to_owned();
                Persisted::default()
            }
            Loaded::Damaged { kept_as, detail } => {
                report.state_file = format!("damaged (kept as {}): {detail}", kept_as.display());
                Persisted::default()
            }
        };
        let mut state = self.lock();
        // A batch a crash cut short: rolled back before anything reads the maps.
        report.rolled_back = self.recover_intent(p.generation)?;
        // The kernel's copy is exact; the file's may lag by the last flow installs.
        state.generation = p.generation.max(self.dataplane.generation()?);
        vrfs::restore::restore(&mut state.vrfs, p.vrfs);
        *self.seq_floors.lock().unwrap_or_else(|e| e.into_inner()) = p.seq_floors;

        // Each step reads what the ones before it restored: interfaces need the VRFs; next hops
        // the interfaces; attachments and flow modes the interfaces and policies.
        self.restore_interfaces(&mut state, p.interfaces, &mut report)?;
        self.restore_nexthops(&mut state, p.nexthops, &mut report)?;
        self.restore_policies(&mut state, p.policies, p.retired, p.attachments, &mut report)?;
        self.restore_flow_modes(&mut state, p.flow_modes, &mut report)?;
        // HOLDs of the previous run: their captured packets died with it. Dropped, so the next
        // packet of such a flow is a fresh miss, and the HOLD count starts even.
        self.restore_holds(&mut state)?;

        // Routes from the kernel's maps, against the next hops and VRFs; then the flat tables
        // from the routes; last the trie's IPv4 routes, removed only where a flat table now
        // forwards in their place.
        self.restore_routes(&mut state, &mut report)?;
        report.routes = state.routes.len();
        self.restore_fib4(&mut state, &mut report)?;
        self.restore_trie_v4(&mut state)?;
        for d in &report.dropped {
            warn!(what = %d, "dropped on restore");
        }
        for a in &report.adopted {
            warn!(what = %a, state_file = %report.state_file, "adopted from the kernel on restore: the state file did not describe it");
        }
        for d in &report.disagreements {
            warn!(what = %d, "the state file and the kernel disagreed on restore: the kernel's side kept");
        }
        if !report.adopted.is_empty() || !report.disagreements.is_empty() {
            // What the domain holds is not what the last writer recorded: a new generation, so a
            // controller comparing generations resyncs.
            state.generation += 1;
            self.dataplane.set_generation(state.generation)?;
        }
        *self.restored.lock().unwrap_or_else(|e| e.into_inner()) = Some(report.clone());
        self.save(&state);
        info!(
            state_file = %report.state_file,
            adopted = report.adopted.len(),
            disagreements = report.disagreements.len(),
            interfaces = report.interfaces,
            nexthops = report.nexthops,
            routes = report.routes,
            policies = report.policies,
            ipv4_flat_adopted = report.fib4_adopted.len(),
            ipv4_flat_built = report.fib4_built.len(),
            generation = state.generation,
            "state restored"
        );
        Ok(report)
    }

    /// Writes the state file, if this domain has one. A failure is logged: the change it
    /// records is already in the kernel, and the next successful write carries it.
    pub(super) fn save(&self, state: &State) {
        let Some(path) = &self.state_file else { return };
        if self.reset_done.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        self.dirty.store(false, std::sync::atomic::Ordering::Relaxed);
        let floors = self.seq_floors.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Err(e) = write(path, &state.persisted(floors, self.dataplane.programs_object(), self.pins_id)) {
            warn!(error = %e, "writing the state file failed");
        }
    }

    /// Promises that sequence numbers of event stream `stream` stay below `floor` in this run:
    /// recorded before any number at or above the previous floor is handed out, so a restarted
    /// server starts above every number a subscriber has seen.
    pub fn reserve_seq(&self, stream: &str, floor: u64) {
        self.seq_floors.lock().unwrap_or_else(|e| e.into_inner()).insert(stream.to_owned(), floor);
        let state = self.lock();
        self.save(&state);
    }

    /// Where event stream `stream` starts numbering in this run.
    pub fn seq_floor(&self, stream: &str) -> u64 {
        self.seq_floors.lock().unwrap_or_else(|e| e.into_inner()).get(stream).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::{NextHops, Routes};
    use crate::{
        dataplane::{AdoptedLinks, XdpMode},
        domain::{
            fake::FakeDataplane, AddInterface, Direction, InterfaceName, NewNextHop, NextHopSpec, PolicyName,
            RouteSpec, RuleAction, RuleSpec, VrfMode,
        },
        net::Mac,
    };

    fn name(s: &str) -> InterfaceName {
        InterfaceName::parse("n", s).unwrap()
    }

    #[test]
    fn restore_from_persisted_state_and_kernel_routes_lists_the_same() {
        let a = Domain::new(FakeDataplane::with_links(&[("eth0", 7), ("eth1", 8)]));
        for n in ["eth0", "eth1"] {
            a.add_interface(AddInterface { name: name(n), mode: XdpMode::Auto, vrf: 0 }).unwrap();
        }
        a.add_vrf(5, VrfMode::KernelFib { table: 100 }).unwrap();
        a.add_nexthops(vec![
            NewNextHop {
                id: 10,
                spec: NextHopSpec::Encap { interface: name("eth0"), dst_mac: Mac([2, 0, 0, 0, 0, 1]), src_mac: None },
            },
            NewNextHop {
                id: 11,
                spec: NextHopSpec::Gateway {
                    interface: name("eth1"),
                    gateway: "192.0.2.1".parse().unwrap(),
                    src_mac: None,
                },
            },
            NewNextHop { id: 12, spec: NextHopSpec::Ecmp { members: vec![10, 11] } },
        ])
        .unwrap();
        a.add_routes(vec![RouteSpec { vrf: 0, prefix: "198.51.100.0/24".parse().unwrap(), nexthop: 12 }]).unwrap();
        let rule = RuleSpec {
            priority: 1,
            src: None,
            dst: Some("203.0.113.0/24".parse().unwrap()),
            protocol: Some(6),
            src_ports: None,
            dst_ports: Some((80, 89)),
            icmp_type: None,
            icmp_code: None,
            tcp_flags: Some((0x12, 0x02)),
            action: RuleAction::Deny,
        };
        let pol = PolicyName::parse("p", "edge").unwrap();
        a.put_policy(pol.clone(), vec![RuleSpec { dst_ports: Some((80, 80)), ..rule.clone() }]).unwrap();
        a.put_policy(pol.clone(), vec![rule]).unwrap(); // the first table is retired
        a.attach_policy(&pol, &name("eth0"), Direction::Egress, true).unwrap();
        let file = a.lock().persisted(BTreeMap::new(), None, None);
        // Through JSON, as on disk.
        let file: Persisted = serde_json::from_slice(&serde_json::to_vec(&file).unwrap()).unwrap();

        // A new process: the kernel still has the routes and the links.
        let b = Domain::new(FakeDataplane::with_links(&[("eth0", 7), ("eth1", 8)]));
        for (slot, (ifindex, _)) in [(7u32, ()), (8, ())].iter().enumerate() {
            b.dataplane().adopted.lock().unwrap().push(AdoptedLinks {
                ifindex: *ifindex,
                xdp_link_id: 100 + slot as u32,
                tc_link_id: 200 + slot as u32,
            });
        }
        b.dataplane().copy_maps_from(a.dataplane());
        // And a route a crashed batch left, to a slot no next hop holds.
        b.dataplane().insert_route(0, &"192.0.2.0/24".parse().unwrap(), 999).unwrap();
        let report = b.restore(Some(file)).unwrap();
        assert_eq!((report.interfaces, report.nexthops, report.routes, report.policies), (2, 3, 1, 1), "{report:?}");
        assert_eq!(report.dropped.len(), 1, "{report:?}");
        assert_eq!(
            (report.fib4_adopted.clone(), report.fib4_built.clone()),
            (vec![0], vec![]),
            "VRF 0's flat table adopted as it is"
        );
        assert_eq!(b.dataplane().kernel_routes().len(), 1, "the orphan route is gone from the kernel");
        assert!(
            b.dataplane().routes().is_empty(),
            "VRF 0's IPv4 routes live in its record and flat table, not the trie"
        );
        assert_eq!(b.list_vrfs(), a.list_vrfs());
        assert_eq!(b.list_routes(None, None), a.list_routes(None, None));
        let ids = |d: &Domain<FakeDataplane>| {
            d.list_nexthops().unwrap().into_iter().map(|n| (n.id, n.slot, n.spec, n.routes)).collect::<Vec<_>>()
        };
        assert_eq!(ids(&b), ids(&a));
        let pols = |d: &Domain<FakeDataplane>| {
            format!(
                "{:?}",
                d.list_policies(None)
                    .unwrap()
                    .iter()
                    .map(|p| (&p.name, p.rules.iter().map(|r| &r.rule).collect::<Vec<_>>(), &p.attachments))
                    .collect::<Vec<_>>()
            )
        };
        assert_eq!(pols(&b), pols(&a));
        assert_eq!(b.status().unwrap().generation, a.status().unwrap().generation);
        // Allocations continue where they were: the next next hop takes the next free slot, and
        // the retired table is reclaimed by the next policy change.
        b.add_nexthops(vec![NewNextHop { id: 13, spec: NextHopSpec::Discard }]).unwrap();
        assert_eq!(b.list_nexthops().unwrap().iter().find(|n| n.id == 13).unwrap().slot, 3);
        b.put_policy(PolicyName::parse("p", "other").unwrap(), vec![]).unwrap();
        assert_eq!(b.dataplane().readers_waited.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn restore_vrf_left_to_trie_keeps_every_ipv4_route_in_trie_and_flat_vrf_none() {
        use crate::domain::Ipv4Lookup;
        let r = |vrf: u32, p: &str| RouteSpec { vrf, prefix: p.parse().unwrap(), nexthop: 1 };
        // Room for two roots and two chunks: VRF 0 fits, VRF 5 (three /16s with /24s) does not.
        let a = Domain::new(FakeDataplane::with_fib4_chunks(2 * 256 + 2));
        a.add_nexthops(vec![NewNextHop { id: 1, spec: NextHopSpec::Discard }]).unwrap();
        a.add_vrf(5, VrfMode::Routes).unwrap();
        a.add_routes(vec![r(0, "192.0.2.0/24"), r(0, "10.0.0.0/8")]).unwrap();
        a.add_routes(vec![
            r(5, "198.51.100.0/24"),
            r(5, "198.18.0.0/24"),
            r(5, "203.0.113.0/24"),
            r(5, "2001:db8::/32"),
        ])
        .unwrap();
        let modes =
            |d: &Domain<FakeDataplane>| d.list_vrfs().into_iter().map(|v| (v.id, v.ipv4_lookup)).collect::<Vec<_>>();
        assert_eq!(modes(&a), vec![(0, Some(Ipv4Lookup::Flat { chunks: 257 })), (5, Some(Ipv4Lookup::Trie))]);
        let trie = |d: &Domain<FakeDataplane>| {
            d.dataplane().routes().into_iter().map(|(v, p, _)| format!("{v} {p}")).collect::<Vec<_>>()
        };
        assert_eq!(trie(&a), vec!["5 198.18.0.0/24", "5 198.51.100.0/24", "5 203.0.113.0/24", "5 2001:db8::/32"]);
        let file = a.lock().persisted(BTreeMap::new(), None, None);

        // A new process over the same maps: the same split, nothing lost, nothing in the wrong place.
        let b = Domain::new(FakeDataplane::with_fib4_chunks(2 * 256 + 2));
        b.dataplane().copy_maps_from(a.dataplane());
        let report = b.restore(Some(file)).unwrap();
        assert_eq!((report.fib4_adopted.clone(), report.routes), (vec![0], 6), "{report:?}");
        assert_eq!(modes(&b), modes(&a));
        assert_eq!(trie(&b), trie(&a));
        assert_eq!(b.list_routes(None, None), a.list_routes(None, None));
        for (vrf, addr, want) in [
            (0, "192.0.2.9", Some("192.0.2.0/24")),
            (0, "10.9.9.9", Some("10.0.0.0/8")),
            (5, "198.18.0.1", Some("198.18.0.0/24")),
            (5, "10.9.9.9", None),
        ] {
            let got = b.lookup_route(vrf, addr.parse().unwrap()).unwrap().map(|r| r.prefix.to_string());
            assert_eq!(got.as_deref(), want, "vrf {vrf} {addr}");
        }
        // Room made in the new process: VRF 5 moves to a flat table and leaves the trie.
        b.delete_routes(&[(0, "192.0.2.0/24".parse().unwrap())]).unwrap();
        assert_eq!(modes(&b)[1], (5, Some(Ipv4Lookup::Trie)), "one chunk short of VRF 5's 259");
        b.delete_routes(&[(5, "198.18.0.0/24".parse().unwrap())]).unwrap();
        assert_eq!(modes(&b)[1], (5, Some(Ipv4Lookup::Flat { chunks: 258 })));
        assert_eq!(trie(&b), vec!["5 2001:db8::/32"]);
        assert_eq!(
            b.lookup_route(5, "203.0.113.7".parse().unwrap()).unwrap().map(|r| r.prefix.to_string()).as_deref(),
            Some("203.0.113.0/24")
        );
    }

    #[test]
    fn restore_interface_whose_links_are_gone_dropped_and_its_nexthops_emptied() {
        let a = Domain::new(FakeDataplane::with_links(&[("eth0", 7)]));
        a.add_interface(AddInterface { name: name("eth0"), mode: XdpMode::Auto, vrf: 0 }).unwrap();
        a.add_nexthops(vec![NewNextHop {
            id: 1,
            spec: NextHopSpec::Encap { interface: name("eth0"), dst_mac: Mac([2, 0, 0, 0, 0, 1]), src_mac: None },
        }])
        .unwrap();
        let file = a.lock().persisted(BTreeMap::new(), None, None);
        let b = Domain::new(FakeDataplane::with_links(&[]));
        b.dataplane().set_nexthop(0, &crate::dataplane::NextHopParams::Discard, true).unwrap();
        let report = b.restore(Some(file)).unwrap();
        assert_eq!(report.interfaces, 0);
        assert!(b.list_interfaces(None).unwrap().is_empty());
        assert_eq!(b.list_nexthops().unwrap()[0].state, super::super::NextHopState::InterfaceMissing);
        assert_eq!(b.dataplane().nexthop(0), None, "its slot was emptied");
    }
}

#[cfg(test)]
pub(super) mod sample {
    //! A domain using every part of the state file, built the same way each time.

    use super::*;
    use crate::{
        dataplane::XdpMode,
        domain::{
            fake::FakeDataplane, AddInterface, Direction, FlowMode, InterfaceName, NewNextHop, NextHopSpec, PolicyName,
            RouteSpec, RuleAction, RuleSpec, VrfMode,
        },
        net::Mac,
    };

    fn name(s: &str) -> InterfaceName {
        InterfaceName::parse("n", s).unwrap()
    }

    /// Links the sample's interfaces are on.
    pub const LINKS: &[(&str, u32)] = &[("eth0", 7), ("eth1", 8), ("eth2", 9)];

    pub fn domain() -> Domain<FakeDataplane> {
        let a = Domain::new(FakeDataplane::with_links(LINKS));
        a.add_vrf(5, VrfMode::KernelFib { table: 100 }).unwrap();
        a.add_vrf(6, VrfMode::Routes).unwrap();
        a.add_interface(AddInterface { name: name("eth0"), mode: XdpMode::Auto, vrf: 0 }).unwrap();
        a.add_interface(AddInterface { name: name("eth1"), mode: XdpMode::Generic, vrf: 6 }).unwrap();
        a.add_interface(AddInterface { name: name("eth2"), mode: XdpMode::Native, vrf: 5 }).unwrap();
        a.add_nexthops(vec![
            NewNextHop {
                id: 10,
                spec: NextHopSpec::Encap {
                    interface: name("eth0"),
                    dst_mac: Mac([2, 0, 0x5e, 0, 0x53, 1]),
                    src_mac: Some(Mac([2, 0, 0x5e, 0, 0x53, 0xfe])),
                },
            },
            NewNextHop {
                id: 11,
                spec: NextHopSpec::Gateway {
                    interface: name("eth1"),
                    gateway: "192.0.2.1".parse().unwrap(),
                    src_mac: None,
                },
            },
            NewNextHop {
                id: 14,
                spec: NextHopSpec::Gateway {
                    interface: name("eth1"),
                    gateway: "2001:db8::1".parse().unwrap(),
                    src_mac: Some(Mac([2, 0, 0, 0, 0, 9])),
                },
            },
            NewNextHop { id: 12, spec: NextHopSpec::Ecmp { members: vec![10, 11] } },
            NewNextHop { id: 13, spec: NextHopSpec::Discard },
            NewNextHop { id: 15, spec: NextHopSpec::Receive },
        ])
        .unwrap();
        a.add_routes(vec![
            RouteSpec { vrf: 0, prefix: "198.51.100.0/24".parse().unwrap(), nexthop: 12 },
            RouteSpec { vrf: 0, prefix: "2001:db8:1::/48".parse().unwrap(), nexthop: 14 },
            RouteSpec { vrf: 6, prefix: "203.0.113.0/24".parse().unwrap(), nexthop: 13 },
            RouteSpec { vrf: 6, prefix: "0.0.0.0/0".parse().unwrap(), nexthop: 15 },
        ])
        .unwrap();
        let rules = vec![
            RuleSpec {
                priority: 1,
                src: Some("192.0.2.0/24".parse().unwrap()),
                dst: Some("203.0.113.0/24".parse().unwrap()),
                protocol: Some(6),
                src_ports: Some((1024, 65535)),
                dst_ports: Some((80, 89)),
                icmp_type: None,
                icmp_code: None,
                tcp_flags: Some((0x12, 0x02)),
                action: RuleAction::Deny,
            },
            RuleSpec {
                priority: 2,
                src: None,
                dst: Some("2001:db8::/32".parse().unwrap()),
                protocol: Some(58),
                src_ports: None,
                dst_ports: None,
                icmp_type: Some(128),
                icmp_code: Some(0),
                tcp_flags: None,
                action: RuleAction::Punt,
            },
            RuleSpec::any(3, RuleAction::Allow),
        ];
        let edge = PolicyName::parse("p", "edge").unwrap();
        a.put_policy(edge.clone(), rules[..1].to_vec()).unwrap();
        a.put_policy(PolicyName::parse("p", "core.v2").unwrap(), rules[2..].to_vec()).unwrap();
        a.attach_policy(&edge, &name("eth0"), Direction::Egress, true).unwrap();
        a.attach_policy(&PolicyName::parse("p", "core.v2").unwrap(), &name("eth0"), Direction::Ingress, false).unwrap();
        // Replaced while attached: its first table is retired, waiting for a grace period.
        a.put_policy(edge.clone(), rules.clone()).unwrap();
        a.set_flow_mode(
            &name("eth1"),
            FlowMode { enabled: true, miss_forward: true, hold_cap: 1000, punt_rate: 200, punt_burst: 50 },
        )
        .unwrap();
        a
    }

    /// What `domain()` had when the fixture was written: not in the domain's state proper.
    pub fn seq_floors() -> BTreeMap<String, u64> {
        BTreeMap::from([("flow_misses".to_owned(), 4096u64), ("netlink".to_owned(), 16384)])
    }

    /// The `programs_object` of the fixture.
    pub const PROGRAMS_OBJECT: u64 = 0x1234_5678_9abc_def0;
}

#[cfg(test)]
mod file_tests {
    //! The file as builds have written it, and what a strict reader refuses.

    use super::*;
    use crate::{dataplane::AdoptedLinks, domain::fake::FakeDataplane};

    /// `sample::domain()`'s state file, as the build before persistence moved beside the
    /// concerns (commit f8bc4bc) wrote it.
    const FORMAT1: &str = include_str!("../../tests/fixtures/state-format1.json");

    fn json(p: &Persisted) -> String {
        String::from_utf8(serde_json::to_vec(p).unwrap()).unwrap()
    }

    /// `FORMAT1` with `edit` applied, decoded.
    fn decode_edited(edit: impl FnOnce(&mut serde_json::Value)) -> Result<Persisted, Decode> {
        let mut v: serde_json::Value = serde_json::from_str(FORMAT1).unwrap();
        edit(&mut v);
        decode(&v.to_string())
    }

    /// The field and detail of an `Invalid` decode.
    fn invalid(r: Result<Persisted, Decode>) -> (String, String) {
        match r {
            Err(Decode::Invalid { field, detail }) => (field, detail),
            Err(Decode::Corrupt(d)) => panic!("corrupt, not invalid: {d}"),
            Ok(_) => panic!("decoded"),
        }
    }

    #[test]
    fn write_sample_domain_same_bytes_as_format1_fixture() {
        let a = sample::domain();
        let written = json(&a.lock().persisted(sample::seq_floors(), Some(sample::PROGRAMS_OBJECT), None));
        assert_eq!(written, FORMAT1.trim_end());
    }

    #[test]
    fn read_format1_fixture_restores_the_domain_it_was_written_from() {
        let path = std::env::temp_dir().join(format!("dataplane-persist-{}-format1.json", std::process::id()));
        std::fs::write(&path, FORMAT1).unwrap();
        let file = read(&path).unwrap().expect("a state file");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(file.programs_object, Some(sample::PROGRAMS_OBJECT));

        // A new process over the kernel the sample domain left: its links, maps and routes.
        let a = sample::domain();
        let b = Domain::new(FakeDataplane::with_links(sample::LINKS));
        for (slot, &(_, ifindex)) in sample::LINKS.iter().enumerate() {
            let slot = slot as u32;
            b.dataplane().adopted.lock().unwrap().push(AdoptedLinks {
                ifindex,
                xdp_link_id: 100 + slot,
                tc_link_id: 200 + slot,
            });
        }
        b.dataplane().copy_maps_from(a.dataplane());
        let report = b.restore(Some(file)).unwrap();
        assert_eq!((report.interfaces, report.nexthops, report.routes, report.policies), (3, 6, 4, 2), "{report:?}");
        assert!(report.dropped.is_empty(), "{report:?}");

        assert_eq!(b.list_vrfs(), a.list_vrfs());
        assert_eq!(b.list_interfaces(None).unwrap(), a.list_interfaces(None).unwrap());
        assert_eq!(b.list_nexthops().unwrap(), a.list_nexthops().unwrap());
        assert_eq!(b.list_routes(None, None), a.list_routes(None, None));
        let pols = |d: &Domain<FakeDataplane>| format!("{:?}", d.list_policies(None).unwrap());
        assert_eq!(pols(&b), pols(&a));
        assert_eq!(b.lock().flows.modes(), a.lock().flows.modes());
        assert_eq!(b.seq_floor("netlink"), 16384);
        // Everything the file holds, back as it was: written again, the same bytes, except the
        // retired table, which the start reclaimed (no attachment points at it).
        assert!(!b.dataplane().policy_tables.lock().unwrap().contains_key(&0), "retired table 0 still in the kernel");
        let floors = b.seq_floors.lock().unwrap().clone();
        let fixture = FORMAT1.trim_end();
        let (head, tail) = fixture.split_at(fixture.find("\"retired\":[").expect("a retired table in the fixture"));
        let expected = format!("{head}\"retired\":[],{}", &tail[tail.find("\"attachments\"").unwrap()..]);
        assert_eq!(json(&b.lock().persisted(floors, Some(sample::PROGRAMS_OBJECT), None)), expected);
    }

    #[test]
    fn read_file_without_programs_object_loads_as_none() {
        let p = decode_edited(|v| {
            v.as_object_mut().unwrap().remove("programs_object");
        });
        assert_eq!(p.ok().map(|p| p.programs_object), Some(None));
    }

    #[test]
    fn read_unknown_xdp_mode_invalid_naming_the_field() {
        let (field, detail) = invalid(decode_edited(|v| v["interfaces"][2]["xdp_mode"] = "turbo".into()));
        assert_eq!(field, "interfaces[2].xdp_mode");
        assert!(detail.contains("unknown variant `turbo`, expected one of `auto`, `native`, `generic`"), "{detail}");
    }

    #[test]
    fn read_unknown_direction_invalid_naming_the_field() {
        let (field, detail) = invalid(decode_edited(|v| v["attachments"][1]["direction"] = "sideways".into()));
        assert_eq!(field, "attachments[1].direction");
        assert!(detail.contains("unknown variant `sideways`, expected `ingress` or `egress`"), "{detail}");
    }

    #[test]
    fn read_bad_prefix_in_rule_invalid_naming_the_field() {
        let (field, detail) = invalid(decode_edited(|v| v["policies"][1]["rules"][0]["src"] = "192.0.2.7/24".into()));
        assert_eq!(field, "policies[1].rules[0].src");
        assert!(detail.contains("did you mean 192.0.2.0/24"), "{detail}");
        let (field, _) = invalid(decode_edited(|v| v["retired"][0]["rules"][0]["dst"] = "not a prefix".into()));
        assert_eq!(field, "retired[0].rules[0].dst");
    }

    #[test]
    fn read_unknown_rule_action_or_nexthop_kind_invalid_naming_the_field() {
        let (field, detail) = invalid(decode_edited(|v| v["policies"][0]["rules"][0]["action"] = "drop".into()));
        assert_eq!(field, "policies[0].rules[0].action");
        assert!(detail.contains("unknown variant `drop`"), "{detail}");
        let (field, detail) = invalid(decode_edited(|v| v["nexthops"][3]["spec"]["kind"] = "blackhole".into()));
        assert_eq!(field, "nexthops[3].spec.kind");
        assert!(detail.contains("unknown variant `blackhole`"), "{detail}");
    }

    #[test]
    fn read_bad_mac_or_name_invalid_naming_the_field() {
        let (field, detail) = invalid(decode_edited(|v| v["nexthops"][0]["spec"]["dst_mac"] = "02:00:5e".into()));
        // Inside a `kind`-tagged spec the decoder's path stops at the spec; the value says which.
        assert_eq!(field, "nexthops[0].spec");
        assert!(detail.contains("\"02:00:5e\" is not a MAC address"), "{detail}");
        let (field, detail) = invalid(decode_edited(|v| v["interfaces"][0]["name"] = "eth/0".into()));
        assert_eq!(field, "interfaces[0].name");
        assert!(detail.contains("contains '/'"), "{detail}");
        let (field, _) = invalid(decode_edited(|v| v["attachments"][0]["policy"] = "no spaces".into()));
        assert_eq!(field, "attachments[0].policy");
    }

    #[test]
    fn read_unknown_field_in_entry_invalid_and_at_top_level_ignored() {
        for (entry, unknown, at) in [
            ("/policies/1/rules/0", "dscp", "policies[1].rules[0].dscp"),
            ("/retired/0", "generation", "retired[0].generation"),
            ("/nexthops/0/spec", "weight", "nexthops[0].spec"),
            ("/interfaces/0", "mtu", "interfaces[0].mtu"),
            ("/flow_modes/0", "burst", "flow_modes[0]"),
            ("/vrfs/1", "table", "vrfs[1].table"),
            ("/attachments/0", "priority", "attachments[0].priority"),
        ] {
            let (field, detail) = invalid(decode_edited(|v| {
                v.pointer_mut(entry).unwrap().as_object_mut().unwrap().insert(unknown.into(), 1.into());
            }));
            assert_eq!(field, at, "{detail}");
            assert!(detail.contains(&format!("unknown field `{unknown}`")), "{detail}");
        }
        assert!(decode_edited(|v| v["overlays"] = serde_json::json!([])).is_ok());
    }

    #[test]
    fn read_other_format_corrupt_before_any_field_is_read() {
        let r = decode_edited(|v| {
            v["format"] = 2.into();
            v["interfaces"][0]["xdp_mode"] = "turbo".into();
        });
        assert!(matches!(r, Err(Decode::Corrupt(ref d)) if d.contains("format 2")));
    }

    #[test]
    fn read_file_error_names_path_and_field() {
        let path = std::env::temp_dir().join(format!("dataplane-persist-{}-turbo.json", std::process::id()));
        std::fs::write(
            &path,
            FORMAT1
                .replace(r#""requested":"native","xdp_mode":"native""#, r#""requested":"native","xdp_mode":"turbo""#),
        )
        .unwrap();
        let e = read(&path).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        let want = format!("state file {}: interfaces[2].xdp_mode: unknown variant `turbo`", path.display());
        assert!(e.starts_with(&want), "{e}");
    }
}
