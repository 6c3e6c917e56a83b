//! The state file: what a restarted server cannot read back from the kernel's maps (names, ids,
//! specs, policy rules, allocations, the generation), written atomically (write + rename) after
//! every change, and the restore that rebuilds the domain from it plus the maps and the links
//! the dataplane adopted. Routes and flows are not in it: they are read from their maps.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{
    interfaces::InterfaceEntry,
    nexthops::NextHopEntry,
    policies::{Attached, Installed, InstalledRecord, PolicyEntry},
    Direction, Domain, DomainError, FlowMode, InterfaceName, NextHopSpec, PolicyName, RuleAction, RuleSpec, State,
    VrfMode,
};
use crate::{
    dataplane::{Attachment, Dataplane, InterfaceParams, XdpMode},
    net::{Mac, Prefix},
};

/// Bumped when the file's meaning changes; a file of another format is refused.
const FORMAT: u32 = 1;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Persisted {
    pub format: u32,
    pub generation: u64,
    pub vrfs: Vec<PVrf>,
    pub interfaces: Vec<PInterface>,
    pub nexthops: Vec<PNextHop>,
    pub policies: Vec<PPolicy>,
    /// Tables replaced or deleted but not yet reclaimed (they wait for a grace period).
    pub retired: Vec<PInstalled>,
    pub attachments: Vec<PAttachment>,
    pub flow_modes: Vec<PFlowMode>,
    /// Event sequence numbers already handed out stay below these (see `Domain::reserve_seq`).
    pub seq_floors: BTreeMap<String, u64>,
    /// Fingerprint of the eBPF object the pinned programs came from (`loader::object_fingerprint`).
    #[serde(default)]
    pub programs_object: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PVrf {
    pub id: u32,
    /// `Some(table)`: a kernel-FIB VRF.
    pub kernel_table: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PInterface {
    pub name: String,
    pub ifindex: u32,
    pub slot: u32,
    pub vrf: u32,
    pub requested: String,
    pub xdp_mode: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PSpec {
    Encap { interface: String, dst_mac: String, src_mac: Option<String> },
    Gateway { interface: String, gateway: String, src_mac: Option<String> },
    Ecmp { members: Vec<u32> },
    Discard,
    Receive,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PNextHop {
    pub id: u32,
    pub slot: u32,
    pub spec: PSpec,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PRule {
    pub priority: u32,
    pub src: Option<String>,
    pub dst: Option<String>,
    pub protocol: Option<u8>,
    pub src_ports: Option<(u16, u16)>,
    pub dst_ports: Option<(u16, u16)>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    pub tcp_flags: Option<(u8, u8)>,
    pub action: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PInstalled {
    pub table: u32,
    pub pool: (u32, u32),
    pub rule_slots: (u32, u32),
    pub rules: Vec<PRule>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PPolicy {
    pub name: String,
    pub rules: Vec<PRule>,
    pub installed: PInstalled,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PAttachment {
    pub interface: String,
    pub direction: String,
    pub policy: String,
    pub default_deny: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PFlowMode {
    pub slot: u32,
    pub enabled: bool,
    pub miss_forward: bool,
    pub hold_cap: u32,
    pub punt_rate: u32,
    pub punt_burst: u32,
}

/// Errors reading or writing the state file.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("state file {path}: {op}: {source}")]
    Io { path: PathBuf, op: &'static str, source: std::io::Error },
    #[error("state file {path}: not a state file of this server: {detail}")]
    Corrupt { path: PathBuf, detail: String },
}

/// Reads the state file; `None` if there is none (a first start).
pub fn read(path: &Path) -> Result<Option<Persisted>, PersistError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(PersistError::Io { path: path.to_owned(), op: "read", source }),
    };
    let p: Persisted = serde_json::from_str(&text)
        .map_err(|e| PersistError::Corrupt { path: path.to_owned(), detail: e.to_string() })?;
    if p.format != FORMAT {
        return Err(PersistError::Corrupt {
            path: path.to_owned(),
            detail: format!("format {} (this server writes {FORMAT})", p.format),
        });
    }
    Ok(Some(p))
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

fn mode_name(m: XdpMode) -> &'static str {
    match m {
        XdpMode::Auto => "auto",
        XdpMode::Native => "native",
        XdpMode::Generic => "generic",
    }
}

fn mode_from(s: &str) -> XdpMode {
    match s {
        "native" => XdpMode::Native,
        "generic" => XdpMode::Generic,
        _ => XdpMode::Auto,
    }
}

fn rule_out(r: &RuleSpec) -> PRule {
    PRule {
        priority: r.priority,
        src: r.src.map(|p| p.to_string()),
        dst: r.dst.map(|p| p.to_string()),
        protocol: r.protocol,
        src_ports: r.src_ports,
        dst_ports: r.dst_ports,
        icmp_type: r.icmp_type,
        icmp_code: r.icmp_code,
        tcp_flags: r.tcp_flags,
        action: match r.action {
            RuleAction::Allow => "allow",
            RuleAction::Deny => "deny",
            RuleAction::Punt => "punt",
        }
        .into(),
    }
}

fn rule_in(r: &PRule) -> Option<RuleSpec> {
    let prefix = |s: &Option<String>| -> Option<Option<Prefix>> {
        match s {
            None => Some(None),
            Some(s) => s.parse().ok().map(Some),
        }
    };
    Some(RuleSpec {
        priority: r.priority,
        src: prefix(&r.src)?,
        dst: prefix(&r.dst)?,
        protocol: r.protocol,
        src_ports: r.src_ports,
        dst_ports: r.dst_ports,
        icmp_type: r.icmp_type,
        icmp_code: r.icmp_code,
        tcp_flags: r.tcp_flags,
        action: match r.action.as_str() {
            "allow" => RuleAction::Allow,
            "deny" => RuleAction::Deny,
            "punt" => RuleAction::Punt,
            _ => return None,
        },
    })
}

fn installed_out(r: &InstalledRecord) -> PInstalled {
    PInstalled { table: r.table, pool: r.pool, rule_slots: r.rules, rules: r.specs.iter().map(rule_out).collect() }
}

fn installed_in(p: &PInstalled) -> Option<InstalledRecord> {
    Some(InstalledRecord {
        table: p.table,
        pool: p.pool,
        rules: p.rule_slots,
        specs: p.rules.iter().map(rule_in).collect::<Option<Vec<_>>>()?,
    })
}

fn spec_out(s: &NextHopSpec) -> PSpec {
    let mac = |m: &Option<Mac>| m.map(|m| m.to_string());
    match s {
        NextHopSpec::Encap { interface, dst_mac, src_mac } => {
            PSpec::Encap { interface: interface.to_string(), dst_mac: dst_mac.to_string(), src_mac: mac(src_mac) }
        }
        NextHopSpec::Gateway { interface, gateway, src_mac } => {
            PSpec::Gateway { interface: interface.to_string(), gateway: gateway.to_string(), src_mac: mac(src_mac) }
        }
        NextHopSpec::Ecmp { members } => PSpec::Ecmp { members: members.clone() },
        NextHopSpec::Discard => PSpec::Discard,
        NextHopSpec::Receive => PSpec::Receive,
    }
}

fn spec_in(s: &PSpec) -> Option<NextHopSpec> {
    let name = |n: &str| InterfaceName::parse("interface", n).ok();
    let mac = |m: &Option<String>| -> Option<Option<Mac>> {
        match m {
            None => Some(None),
            Some(m) => m.parse().ok().map(Some),
        }
    };
    Some(match s {
        PSpec::Encap { interface, dst_mac, src_mac } => {
            NextHopSpec::Encap { interface: name(interface)?, dst_mac: dst_mac.parse().ok()?, src_mac: mac(src_mac)? }
        }
        PSpec::Gateway { interface, gateway, src_mac } => NextHopSpec::Gateway {
            interface: name(interface)?,
            gateway: gateway.parse::<IpAddr>().ok()?,
            src_mac: mac(src_mac)?,
        },
        PSpec::Ecmp { members } => NextHopSpec::Ecmp { members: members.clone() },
        PSpec::Discard => NextHopSpec::Discard,
        PSpec::Receive => NextHopSpec::Receive,
    })
}

fn direction_name(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    }
}

/// What a restore found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreReport {
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
}

impl State {
    /// The part of the state the file keeps.
    pub(super) fn persisted(&self, seq_floors: BTreeMap<String, u64>, programs_object: Option<u64>) -> Persisted {
        Persisted {
            programs_object,
            format: FORMAT,
            generation: self.generation,
            vrfs: self
                .vrfs
                .iter()
                .map(|(id, m)| PVrf {
                    id: *id,
                    kernel_table: match m {
                        VrfMode::Routes => None,
                        VrfMode::KernelFib { table } => Some(*table),
                    },
                })
                .collect(),
            interfaces: self
                .interfaces
                .iter()
                .map(|(n, e)| PInterface {
                    name: n.to_string(),
                    ifindex: e.link.ifindex,
                    slot: e.slot,
                    vrf: e.vrf,
                    requested: mode_name(e.requested).into(),
                    xdp_mode: mode_name(e.attachment.xdp_mode).into(),
                })
                .collect(),
            nexthops: self
                .nexthops
                .iter()
                .map(|(id, e)| PNextHop { id: *id, slot: e.slot, spec: spec_out(&e.spec) })
                .collect(),
            policies: self
                .policies
                .iter()
                .map(|(n, e)| PPolicy {
                    name: n.to_string(),
                    rules: e.rules().iter().map(rule_out).collect(),
                    installed: installed_out(&e.installed().record()),
                })
                .collect(),
            retired: self.retired_policies.iter().map(|i| installed_out(&i.record())).collect(),
            attachments: self
                .policy_attachments
                .iter()
                .map(|((i, d), a)| PAttachment {
                    interface: i.to_string(),
                    direction: direction_name(*d).into(),
                    policy: a.policy().to_string(),
                    default_deny: a.default_deny(),
                })
                .collect(),
            flow_modes: self
                .flows
                .modes()
                .iter()
                .map(|(slot, m)| PFlowMode {
                    slot: *slot,
                    enabled: m.enabled,
                    miss_forward: m.miss_forward,
                    hold_cap: m.hold_cap,
                    punt_rate: m.punt_rate,
                    punt_burst: m.punt_burst,
                })
                .collect(),
            seq_floors,
        }
    }
}

impl<D: Dataplane> Domain<D> {
    /// Rebuilds the domain from the state file `p` (`None`: a first start), the links the
    /// dataplane adopted and the routes in its maps, without writing anything that forwards:
    /// what was forwarding keeps forwarding. Interfaces whose link is gone, and what a crash left
    /// half done, are dropped (and cleaned out of the kernel). Writes the state file back.
    pub fn restore(&self, p: Option<Persisted>) -> Result<RestoreReport, DomainError> {
        let p = p.unwrap_or_default();
        let mut report = RestoreReport::default();
        let mut state = self.lock();
        // The kernel's copy is exact; the file's may lag by the last flow installs.
        state.generation = p.generation.max(self.dataplane.generation()?);
        for v in &p.vrfs {
            state.vrfs.insert(v.id, v.kernel_table.map_or(VrfMode::Routes, |table| VrfMode::KernelFib { table }));
        }
        *self.seq_floors.lock().unwrap_or_else(|e| e.into_inner()) = p.seq_floors.clone();

        // Interfaces: only those whose links the dataplane still has, on the same ifindex.
        let adopted: BTreeMap<u32, (u32, u32)> =
            self.dataplane.adopted().into_iter().map(|a| (a.ifindex, (a.xdp_link_id, a.tc_link_id))).collect();
        let mut kept_ifindexes = Vec::new();
        for i in &p.interfaces {
            let Ok(name) = InterfaceName::parse("name", &i.name) else { continue };
            let link = self.dataplane.link(&i.name)?;
            let (Some(link), Some(&(xdp_link_id, tc_link_id))) = (link, adopted.get(&i.ifindex)) else {
                report.dropped.push(format!("interface {} (ifindex {}): gone", i.name, i.ifindex));
                continue;
            };
            if link.ifindex != i.ifindex || !state.slots.reserve(i.slot) {
                report.dropped.push(format!("interface {}: now ifindex {}", i.name, link.ifindex));
                continue;
            }
            let kernel_fib = match state.vrfs.get(&i.vrf) {
                Some(VrfMode::KernelFib { table }) => Some(*table),
                _ => None,
            };
            // The link may have changed while no server ran (MTU, MAC, addresses).
            self.dataplane.update_interface(&InterfaceParams {
                slot: i.slot,
                vrf: i.vrf,
                link: link.clone(),
                kernel_fib,
            })?;
            let attachment = Attachment { xdp_mode: mode_from(&i.xdp_mode), xdp_link_id, tc_link_id };
            state.interfaces.insert(
                name,
                InterfaceEntry { link, vrf: i.vrf, slot: i.slot, requested: mode_from(&i.requested), attachment },
            );
            kept_ifindexes.push(i.ifindex);
        }
        for (ifindex, _) in adopted.iter().filter(|(i, _)| !kept_ifindexes.contains(i)) {
            // Attached by a run that crashed before it recorded the interface, or whose link
            // changed: not ours to keep.
            self.dataplane.forget_links(*ifindex)?;
            report.dropped.push(format!("links of ifindex {ifindex}: not in the state file"));
        }
        report.interfaces = state.interfaces.len();

        for n in &p.nexthops {
            let Some(spec) = spec_in(&n.spec) else {
                report.dropped.push(format!("next hop {}: unreadable", n.id));
                continue;
            };
            if !state.nh_slots.reserve(n.slot) {
                report.dropped.push(format!("next hop {}: slot {} taken twice", n.id, n.slot));
                continue;
            }
            state.nh_ids.insert(n.slot, n.id);
            state.nexthops.insert(n.id, NextHopEntry { slot: n.slot, spec, routes: 0 });
        }
        report.nexthops = state.nexthops.len();
        // Next hops through interfaces that went: emptied, as when a link goes while we run.
        let missing: Vec<InterfaceName> = state
            .nexthops
            .values()
            .filter_map(|e| e.spec.interface().cloned())
            .filter(|i| !state.interfaces.contains_key(i))
            .collect();
        for name in missing {
            self.rewrite_nexthops_via(&state, &name);
        }

        for pol in &p.policies {
            let (Ok(name), Some(rules), Some(rec)) = (
                PolicyName::parse("name", &pol.name),
                pol.rules.iter().map(rule_in).collect::<Option<Vec<_>>>(),
                installed_in(&pol.installed),
            ) else {
                report.dropped.push(format!("policy {}: unreadable", pol.name));
                continue;
            };
            match Installed::restore(&mut state, &rec) {
                Some(installed) => {
                    state.policies.insert(name, PolicyEntry::new(rules, installed));
                }
                None => report.dropped.push(format!("policy {}: its tables do not fit", pol.name)),
            }
        }
        for r in &p.retired {
            if let Some(installed) = installed_in(r).and_then(|rec| Installed::restore(&mut state, &rec)) {
                state.retired_policies.push(installed);
            }
        }
        for a in &p.attachments {
            let (Ok(i), Ok(pol)) =
                (InterfaceName::parse("interface", &a.interface), PolicyName::parse("policy", &a.policy))
            else {
                continue;
            };
            let dir = if a.direction == "egress" { Direction::Egress } else { Direction::Ingress };
            if state.interfaces.contains_key(&i) && state.policies.contains_key(&pol) {
                state.policy_attachments.insert((i, dir), Attached::new(pol, a.default_deny));
            }
        }
        report.policies = state.policies.len();

        let slots_in_use: Vec<u32> = state.interfaces.values().map(|e| e.slot).collect();
        for m in &p.flow_modes {
            if slots_in_use.contains(&m.slot) {
                let mode = FlowMode {
                    enabled: m.enabled,
                    miss_forward: m.miss_forward,
                    hold_cap: m.hold_cap,
                    punt_rate: m.punt_rate,
                    punt_burst: m.punt_burst,
                };
                state.flows.set_mode(m.slot, mode);
            }
        }
        // HOLDs of the previous run: their captured packets died with it. Dropped, so the next
        // packet of such a flow is a fresh miss, and the HOLD count starts even.
        self.restore_holds(&mut state)?;

        self.restore_routes(&mut state, &mut report)?;
        report.routes = state.routes.len();
        self.restore_fib4(&mut state, &mut report)?;
        self.restore_trie_v4(&mut state)?;
        for d in &report.dropped {
            warn!(what = %d, "dropped on restore");
        }
        self.save(&state);
        info!(
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

    /// Routes: IPv4 from their records, and from the trie where a record is missing (what an
    /// earlier build, or a crash between a trie write and its record, left); IPv6 from the
    /// trie. Those pointing at a next hop or VRF the file does not know were written by a batch
    /// that never completed, and go.
    fn restore_routes(&self, state: &mut State, report: &mut RestoreReport) -> Result<(), DomainError> {
        use super::routes::{RouteEntry, NO_RECORD};
        let known = |state: &State, vrf: u32, slot: u32| {
            state.nh_ids.get(&slot).copied().filter(|_| matches!(state.vrfs.get(&vrf), Some(VrfMode::Routes)))
        };
        let mut stale = Vec::new();
        let mut used = Vec::new();
        for (slot, r) in self.dataplane.route4_records()? {
            let addr = std::net::Ipv4Addr::from(r.addr);
            let prefix = Prefix::containing(IpAddr::V4(addr), r.prefix_len.min(32));
            let fresh =
                prefix.addr() == IpAddr::V4(addr) && r.prefix_len <= 32 && !state.routes.contains_key(&(r.vrf, prefix));
            match known(state, r.vrf, r.nexthop).filter(|_| fresh) {
                Some(id) => {
                    state.routes.insert((r.vrf, prefix), RouteEntry { nexthop: id, record: slot });
                    used.push(slot);
                }
                None => {
                    stale.push(slot);
                    report.dropped.push(format!(
                        "route {prefix} in vrf {} (record {slot}): next-hop slot {} unknown",
                        r.vrf, r.nexthop
                    ));
                }
            }
        }
        let mark = used.iter().max().map_or(0, |m| m + 1);
        state.route4_slots =
            super::slots::MarkAllocator::restore(self.dataplane.route4_capacity(), mark, used.iter().copied());
        state.route4_mark = 0;
        for (vrf, prefix, slot) in self.dataplane.dump_routes()? {
            match known(state, vrf, slot) {
                Some(id) => {
                    // The trie's is the later write where both have the route.
                    let record = state.routes.get(&(vrf, prefix)).map_or(NO_RECORD, |e| e.record);
                    state.routes.insert((vrf, prefix), RouteEntry { nexthop: id, record });
                }
                None => {
                    self.dataplane.remove_route(vrf, &prefix)?;
                    report.dropped.push(format!("route {prefix} in vrf {vrf}: next-hop slot {slot} unknown"));
                }
            }
        }
        // Records for the IPv4 routes that had none, and the records' next hops where the trie
        // said otherwise.
        let mut records = Vec::new();
        let keys: Vec<(u32, Prefix)> = state.routes.keys().copied().collect();
        for key in keys {
            let (vrf, prefix) = key;
            let IpAddr::V4(a) = prefix.addr() else { continue };
            let e = state.routes[&key];
            let slot = match e.record {
                NO_RECORD => match state.route4_slots.alloc() {
                    Some(s) => s,
                    None => continue,
                },
                s => s,
            };
            state.routes.insert(key, RouteEntry { nexthop: e.nexthop, record: slot });
            let nh = state.nexthops[&e.nexthop].slot;
            records.push((
                slot,
                dataplane_common::RouteRecord4 {
                    vrf,
                    addr: a.octets(),
                    prefix_len: prefix.len(),
                    _pad: [0; 2],
                    flags: dataplane_common::route::RECORD_VALID,
                    nexthop: nh,
                },
            ));
        }
        self.dataplane.route4_clear(&stale)?;
        let mark = state.route4_slots.mark();
        self.dataplane.route4_reserve(mark)?;
        state.route4_mark = mark;
        self.dataplane.route4_store(&records)?;
        for (&(_, prefix), e) in &state.routes {
            state.route_counts[usize::from(!prefix.is_ipv4())] += 1;
            if let Some(nh) = state.nexthops.get_mut(&e.nexthop) {
                nh.routes += 1;
            }
        }
        Ok(())
    }

    /// The trie's IPv4 routes after the flat tables are settled: none for a VRF with a flat
    /// table, every one for a VRF without.
    fn restore_trie_v4(&self, state: &mut State) -> Result<(), DomainError> {
        let mut have: std::collections::HashMap<(u32, Prefix), u32> = self
            .dataplane
            .dump_routes()?
            .into_iter()
            .filter(|(_, p, _)| p.is_ipv4())
            .map(|(v, p, s)| ((v, p), s))
            .collect();
        let mut missing = Vec::new();
        for (&(vrf, prefix), e) in &state.routes {
            if !prefix.is_ipv4() || state.fib4.is_flat(vrf) {
                continue;
            }
            let slot = state.nexthops[&e.nexthop].slot;
            if have.remove(&(vrf, prefix)) != Some(slot) {
                missing.push((vrf, prefix, slot));
            }
        }
        self.dataplane.insert_routes(&missing).map_err(|(_, e)| DomainError::from(e))?;
        for ((vrf, prefix), _) in have {
            if state.fib4.is_flat(vrf) || !state.routes.contains_key(&(vrf, prefix)) {
                self.dataplane.remove_route(vrf, &prefix)?;
            }
        }
        Ok(())
    }

    /// Takes over the IPv4 flat tables the kernel has, where they give exactly what the routes
    /// just restored give; builds the others. Until a table is switched, its VRF's lookups go
    /// on as they were (a mismatched table is rebuilt beside it and switched to in one write).
    fn restore_fib4(&self, state: &mut State, report: &mut RestoreReport) -> Result<(), DomainError> {
        let dp = &self.dataplane;
        // The roots of the VRFs the file knows, not all 65,536 ids (a syscall each): a root left
        // for a VRF no longer known is unreachable (no interface is in it, and recreating the VRF
        // writes a new root before anything can join it), so its chunks may count as free.
        let known: Vec<u32> = state.vrfs.keys().copied().collect();
        let roots = dp.fib4_roots(&known)?;
        let (fib, dropped) = super::fib4::Fib4::adopt(
            dp.fib4_capacity(),
            &roots,
            |c| dp.fib4_load(c),
            |vrf| matches!(state.vrfs.get(&vrf), Some(VrfMode::Routes)),
        )?;
        for &vrf in &dropped {
            dp.fib4_set_root(vrf, 0)?;
            report.dropped.push(format!("IPv4 flat table of vrf {vrf}: malformed, or the VRF is gone"));
        }
        if !dropped.is_empty() {
            // Their chunks are free from here on: no program may still be reading them.
            dp.wait_for_readers()?;
        }
        state.fib4 = fib;
        let vrfs: Vec<u32> = state.vrfs.iter().filter(|(_, m)| **m == VrfMode::Routes).map(|(v, _)| *v).collect();
        for vrf in vrfs {
            if state.fib4.is_flat(vrf) {
                let routes = super::routes::v4_routes(&state.routes, &state.nexthops, vrf);
                if state.fib4.matches(vrf, &routes) {
                    report.fib4_adopted.push(vrf);
                    continue;
                }
                report.fib4_built.push(vrf);
                // The old table forwards until the new one replaces it in one write.
                if state.fib4.rebuild(dp, |root| dp.fib4_set_root(vrf, root), vrf, &routes)? {
                    continue;
                }
                // No room for both: the trie takes over meanwhile (given the routes first).
                let entries: Vec<(u32, Prefix, u32)> = routes
                    .iter()
                    .map(|&((a, len), slot)| {
                        (vrf, Prefix::containing(IpAddr::V4(std::net::Ipv4Addr::from(a)), len), slot)
                    })
                    .collect();
                dp.insert_routes(&entries).map_err(|(_, e)| DomainError::from(e))?;
                state.fib4.demote(dp, |root| dp.fib4_set_root(vrf, root), vrf)?;
                self.fib4_promote(state, vrf);
                continue;
            }
            self.fib4_promote(state, vrf);
            report.fib4_built.push(vrf);
        }
        state.fib4.flush(dp)?;
        Ok(())
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
        if let Err(e) = write(path, &state.persisted(floors, self.dataplane.programs_object())) {
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
        dataplane::AdoptedLinks,
        domain::{fake::FakeDataplane, AddInterface, NewNextHop, RouteSpec},
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
        a.put_policy(pol.clone(), vec![rule.clone()]).unwrap();
        a.put_policy(pol.clone(), vec![rule]).unwrap(); // the first table is retired
        a.attach_policy(&pol, &name("eth0"), Direction::Egress, true).unwrap();
        let file = a.lock().persisted(BTreeMap::new(), None);
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
        let file = a.lock().persisted(BTreeMap::new(), None);

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
        let file = a.lock().persisted(BTreeMap::new(), None);
        let b = Domain::new(FakeDataplane::with_links(&[]));
        b.dataplane().set_nexthop(0, &crate::dataplane::NextHopParams::Discard, true).unwrap();
        let report = b.restore(Some(file)).unwrap();
        assert_eq!(report.interfaces, 0);
        assert!(b.list_interfaces(None).unwrap().is_empty());
        assert_eq!(b.list_nexthops().unwrap()[0].state, super::super::NextHopState::InterfaceMissing);
        assert_eq!(b.dataplane().nexthop(0), None, "its slot was emptied");
    }
}
