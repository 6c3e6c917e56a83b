//! Policies: named, ordered rule lists compiled into classifier tables (`classifier.rs`) and
//! attached to interfaces per direction.
//!
//! A replacement never edits a table packets can reach: it is compiled into a free table, written
//! whole, then published by rewriting each attachment's one 32-bit word. The old table is retired
//! and reclaimed at the next policy change after an RCU grace period
//! ([`Dataplane::wait_for_readers`]), when no packet can still be classifying against it.

pub(super) mod restore;

use std::collections::BTreeMap;

use dataplane_common::policy::{
    attach_word, RuleStats, ACTION_ALLOW, ACTION_DENY, ACTION_PUNT, DIR_EGRESS, DIR_INGRESS, MAX_POLICY_RULES,
};
use tracing::{info, warn};

use super::{
    classifier::{self, Family, MatchSpec},
    txn::{KernelOp, Write},
    Domain, DomainError, InterfaceName, State,
};
use crate::{
    dataplane::{Dataplane, PolicyImage},
    net::Prefix,
};

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;

/// A policy's name: 1 to 64 characters of `[A-Za-z0-9._-]`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyName(String);

impl PolicyName {
    pub fn parse(field: &str, name: &str) -> Result<Self, DomainError> {
        if name.is_empty() || name.len() > 64 {
            return Err(DomainError::invalid(field, "must be 1 to 64 characters"));
        }
        if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
            return Err(DomainError::invalid(field, format!("{c:?} is not allowed (letters, digits, '.', '_', '-')")));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PolicyName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    Allow,
    Deny,
    /// To the controller (until flow misses exist: counted and passed to the kernel stack).
    Punt,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    fn index(self) -> u32 {
        match self {
            Direction::Ingress => DIR_INGRESS,
            Direction::Egress => DIR_EGRESS,
        }
    }
}

/// One rule, syntactically valid (the API checked value ranges); the domain checks the rest.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Lower first; unique within a policy.
    pub priority: u32,
    pub src: Option<Prefix>,
    pub dst: Option<Prefix>,
    pub protocol: Option<u8>,
    pub src_ports: Option<(u16, u16)>,
    pub dst_ports: Option<(u16, u16)>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    /// (mask, value): the rule matches TCP segments whose `flags & mask == value`.
    pub tcp_flags: Option<(u8, u8)>,
    pub action: RuleAction,
}

impl RuleSpec {
    /// A rule at `priority` that matches every packet; narrow it with struct update syntax
    /// (`RuleSpec { protocol: Some(6), ..RuleSpec::any(10, RuleAction::Deny) }`).
    pub fn any(priority: u32, action: RuleAction) -> Self {
        Self {
            priority,
            src: None,
            dst: None,
            protocol: None,
            src_ports: None,
            dst_ports: None,
            icmp_type: None,
            icmp_code: None,
            tcp_flags: None,
            action,
        }
    }
}

/// A rule with its hit counters.
#[derive(Clone, Debug)]
pub struct RuleView {
    pub rule: RuleSpec,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug)]
pub struct AttachmentView {
    pub interface: InterfaceName,
    pub direction: Direction,
    pub default_deny: bool,
}

#[derive(Clone, Debug)]
pub struct PolicyView {
    pub name: PolicyName,
    pub rules: Vec<RuleView>,
    pub attachments: Vec<AttachmentView>,
}

/// A table in the kernel, with what it holds of the shared pools and the rules it was compiled
/// from (so a restarted server can compile it again, to the same places).
#[derive(Debug)]
pub(super) struct Installed {
    image: PolicyImage,
    pool: (u32, u32),
    rules: (u32, u32),
    specs: Vec<RuleSpec>,
    /// Read back from the kernel, not compiled: a table whose rules no state file had (see
    /// `restore.rs`). Its image comes from the kernel again at every restart.
    from_kernel: bool,
}

#[derive(Debug)]
pub(super) struct PolicyEntry {
    rules: Vec<RuleSpec>,
    installed: Installed,
}

#[derive(Clone, Debug)]
pub(super) struct Attached {
    policy: PolicyName,
    default_deny: bool,
}

impl<D: Dataplane> Domain<D> {
    /// Creates or atomically replaces policy `name`. Returns the new generation.
    pub fn put_policy(&self, name: PolicyName, rules: Vec<RuleSpec>) -> Result<u64, DomainError> {
        let mut state = self.lock();
        let rules = validate(rules)?;
        if let Some(rs) = state.resync.as_mut() {
            rs.policies.insert(name.clone());
        }
        // Put again unchanged (a resync's replay, a client's retry after UNAVAILABLE): nothing
        // to recompile or flip, the same generation.
        if state.policies.get(&name).is_some_and(|e| e.rules == rules) {
            return Ok(state.generation);
        }
        self.reclaim_retired(&mut state)?;
        let installed = self.compile(&mut state, &rules)?;
        let new_table = installed.image.table;
        let (writes, users) = publish(&state, &name, &installed);
        // Held until the batch committed (past `bump`).
        let _intent = match self.apply_logged(&state, writes) {
            Ok(intent) => intent,
            Err(e) => {
                self.free_installed(&mut state, installed);
                return Err(e);
            }
        };
        let entry = PolicyEntry { rules, installed };
        if let Some(prev) = state.policies.insert(name.clone(), entry) {
            state.retired_policies.push(prev.installed);
        }
        self.bump(&mut state);
        info!(policy = %name, table = new_table, attachments = users, generation = state.generation, "policy put");
        Ok(state.generation)
    }

    /// Deletes an unattached policy.
    pub fn delete_policy(&self, name: &PolicyName) -> Result<u64, DomainError> {
        let mut state = self.lock();
        if !state.policies.contains_key(name) {
            return Err(not_found(name).at("name"));
        }
        let users: Vec<String> = state
            .policy_attachments
            .iter()
            .filter(|(_, a)| &a.policy == name)
            .map(|((i, d), _)| format!("{i} {d:?}").to_lowercase())
            .collect();
        if !users.is_empty() {
            return Err(DomainError::FailedPrecondition(format!("policy {name} is attached to {}", users.join(", "))));
        }
        let entry = state.policies.remove(name).expect("checked above");
        state.retired_policies.push(entry.installed);
        self.bump(&mut state);
        Ok(state.generation)
    }

    /// Attaches `policy` to `interface` in `direction`, replacing (atomically) whatever was
    /// attached there.
    pub fn attach_policy(
        &self,
        policy: &PolicyName,
        interface: &InterfaceName,
        direction: Direction,
        default_deny: bool,
    ) -> Result<u64, DomainError> {
        let mut state = self.lock();
        let table = state.policies.get(policy).ok_or_else(|| not_found(policy).at("policy"))?.installed.image.table;
        let slot = state
            .interfaces
            .get(interface)
            .ok_or_else(|| super::interfaces::not_attached(interface).at("interface"))?
            .slot;
        let key = (interface.clone(), direction);
        if state.policy_attachments.get(&key).is_some_and(|a| &a.policy == policy && a.default_deny == default_deny) {
            // Attached again as it is (a controller's replay): nothing to write, same generation.
            if let Some(rs) = state.resync.as_mut() {
                rs.attachments.insert(key);
            }
            return Ok(state.generation);
        }
        self.dataplane.set_policy_attachment(slot, direction.index(), attach_word(table, default_deny))?;
        state
            .policy_attachments
            .insert((interface.clone(), direction), Attached { policy: policy.clone(), default_deny });
        if let Some(rs) = state.resync.as_mut() {
            rs.attachments.insert((interface.clone(), direction));
        }
        self.bump(&mut state);
        Ok(state.generation)
    }

    pub fn detach_policy(&self, interface: &InterfaceName, direction: Direction) -> Result<u64, DomainError> {
        let mut state = self.lock();
        if !state.policy_attachments.contains_key(&(interface.clone(), direction)) {
            return Err(DomainError::NotFound {
                kind: "policy attachment",
                name: format!("{interface} {direction:?}").to_lowercase(),
                detail: "",
            });
        }
        let slot = state.interfaces[interface].slot;
        self.dataplane.set_policy_attachment(slot, direction.index(), 0)?;
        state.policy_attachments.remove(&(interface.clone(), direction));
        self.bump(&mut state);
        Ok(state.generation)
    }

    /// Every policy (or one), rules with hit counters, and where it is attached.
    pub fn list_policies(&self, name: Option<&PolicyName>) -> Result<Vec<PolicyView>, DomainError> {
        let state = self.lock();
        if let Some(n) = name {
            if !state.policies.contains_key(n) {
                return Err(not_found(n).at("name"));
            }
        }
        let mut out = Vec::new();
        for (pname, e) in state.policies.iter().filter(|(n, _)| name.is_none_or(|x| x == *n)) {
            let (first, count) = e.installed.rules;
            let stats = if count == 0 { Vec::new() } else { self.dataplane.rule_stats(first, count)? };
            let rules = e
                .rules
                .iter()
                .zip(stats.iter().chain(std::iter::repeat(&RuleStats::default())))
                .map(|(r, s)| RuleView { rule: r.clone(), packets: s.packets, bytes: s.bytes })
                .collect();
            let attachments = state
                .policy_attachments
                .iter()
                .filter(|(_, a)| &a.policy == pname)
                .map(|((i, d), a)| AttachmentView { interface: i.clone(), direction: *d, default_deny: a.default_deny })
                .collect();
            out.push(PolicyView { name: pname.clone(), rules, attachments });
        }
        Ok(out)
    }

    /// Drops the attachments of an interface being deleted (its slot will be reused).
    pub(super) fn detach_all_policies(
        &self,
        state: &mut State,
        interface: &InterfaceName,
        slot: u32,
    ) -> Result<(), DomainError> {
        for dir in [Direction::Ingress, Direction::Egress] {
            if state.policy_attachments.contains_key(&(interface.clone(), dir)) {
                self.dataplane.set_policy_attachment(slot, dir.index(), 0)?;
                state.policy_attachments.remove(&(interface.clone(), dir));
            }
        }
        Ok(())
    }

    /// Compiles `rules` into a free table (allocated here, written by the caller).
    fn compile(&self, state: &mut State, rules: &[RuleSpec]) -> Result<Installed, DomainError> {
        let specs: Vec<MatchSpec> = rules.iter().map(match_spec).collect();
        let n = rules.len() as u32;
        let table = state
            .policy_tables
            .alloc()
            .ok_or(DomainError::Exhausted { what: "policy tables", capacity: state.policy_tables.capacity() })?;
        let Some(rule_base) = state.rule_slots.alloc(n) else {
            state.policy_tables.free(table);
            return Err(
                DomainError::Exhausted { what: "policy rule slots", capacity: state.rule_slots.capacity() }.at("rules")
            );
        };
        let mut pool = (0, 0);
        let pool_alloc = &mut state.policy_pool;
        let image = classifier::compile(&specs, table, rule_base, |len| {
            let start = pool_alloc.alloc(len)?;
            pool = (start, len);
            Some(start)
        });
        let Some(image) = image else {
            state.policy_tables.free(table);
            state.rule_slots.free(rule_base, n);
            return Err(DomainError::Exhausted {
                what: "policy classifier words",
                capacity: state.policy_pool.capacity(),
            }
            .at("rules"));
        };
        Ok(Installed { image, pool, rules: (rule_base, n), specs: rules.to_vec(), from_kernel: false })
    }

    /// Frees every retired table after a grace period.
    fn reclaim_retired(&self, state: &mut State) -> Result<(), DomainError> {
        if state.retired_policies.is_empty() {
            return Ok(());
        }
        self.dataplane.wait_for_readers()?;
        for installed in std::mem::take(&mut state.retired_policies) {
            if let Err(e) = self.dataplane.clear_policy(&installed.image) {
                warn!(table = installed.image.table, error = %e, "clearing a retired policy table failed; its slot stays out of use");
                continue;
            }
            self.free_installed(state, installed);
        }
        Ok(())
    }

    fn free_installed(&self, state: &mut State, installed: Installed) {
        state.policy_tables.free(installed.image.table);
        state.policy_pool.free(installed.pool.0, installed.pool.1);
        state.rule_slots.free(installed.rules.0, installed.rules.1);
    }
}

/// A table as the state file keeps it: where it lives, and the rules to compile it from again.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct InstalledRecord {
    pub table: u32,
    pub pool: (u32, u32),
    #[serde(rename = "rule_slots")]
    pub rules: (u32, u32),
    #[serde(rename = "rules")]
    pub specs: Vec<RuleSpec>,
    /// The table's rules are unknown: it was adopted from the kernel, and is read from it again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_kernel: bool,
}

impl Installed {
    pub(super) fn record(&self) -> InstalledRecord {
        InstalledRecord {
            table: self.image.table,
            pool: self.pool,
            rules: self.rules,
            specs: self.specs.clone(),
            from_kernel: self.from_kernel,
        }
    }

    /// Compiles `r` again to exactly the places it occupies in the kernel (the compiler is
    /// deterministic) and takes those places in the allocators. `None` if they are not free or
    /// the compiled size differs.
    pub(super) fn restore(state: &mut State, r: &InstalledRecord) -> Option<Self> {
        let specs: Vec<MatchSpec> = r.specs.iter().map(match_spec).collect();
        let pool = r.pool;
        let image = classifier::compile(&specs, r.table, r.rules.0, |len| (len == pool.1).then_some(pool.0))?;
        if r.rules.1 != r.specs.len() as u32 {
            return None;
        }
        let mut installed = Self::from_kernel(state, image, pool, r.rules)?;
        (installed.specs, installed.from_kernel) = (r.specs.clone(), false);
        Some(installed)
    }

    /// A table read back from the kernel (`image`), taking `pool` and `rules` in the allocators;
    /// `None` if they are not free.
    pub(super) fn from_kernel(
        state: &mut State,
        image: PolicyImage,
        pool: (u32, u32),
        rules: (u32, u32),
    ) -> Option<Self> {
        if !state.policy_tables.reserve(image.table) {
            return None;
        }
        if !state.policy_pool.reserve(pool.0, pool.1) {
            state.policy_tables.free(image.table);
            return None;
        }
        if !state.rule_slots.reserve(rules.0, rules.1) {
            state.policy_tables.free(image.table);
            state.policy_pool.free(pool.0, pool.1);
            return None;
        }
        Some(Installed { image, pool, rules, specs: Vec::new(), from_kernel: true })
    }
}

impl PolicyEntry {
    pub(super) fn new(rules: Vec<RuleSpec>, installed: Installed) -> Self {
        Self { rules, installed }
    }

    pub(super) fn rules(&self) -> &[RuleSpec] {
        &self.rules
    }

    pub(super) fn installed(&self) -> &Installed {
        &self.installed
    }
}

impl Attached {
    pub(super) fn new(policy: PolicyName, default_deny: bool) -> Self {
        Self { policy, default_deny }
    }

    pub(super) fn policy(&self) -> &PolicyName {
        &self.policy
    }

    pub(super) fn default_deny(&self) -> bool {
        self.default_deny
    }
}

/// The writes that put policy `name`'s new table in place: the table, then every attachment
/// of the policy flipped to it in one word write each. Also how many attachments there are.
fn publish(state: &State, name: &PolicyName, installed: &Installed) -> (Vec<Write>, usize) {
    let old = state.policies.get(name).map_or(0, |e| e.installed.image.table);
    let image = installed.image.clone();
    // Undone last: once the attachments point back, a grace period passes before the table is
    // cleared, as a packet may still be reading it.
    let undo = vec![KernelOp::WaitForReaders, KernelOp::ClearPolicy(Box::new(image.clone()))];
    let mut writes = vec![Write { op: KernelOp::WritePolicy(Box::new(image)), undo, at: None }];
    for ((iface, dir), a) in state.policy_attachments.iter().filter(|(_, a)| &a.policy == name) {
        let (slot, direction) = (state.interfaces[iface].slot, dir.index());
        let flip = |table| KernelOp::SetPolicyAttachment { slot, direction, word: attach_word(table, a.default_deny) };
        writes.push(Write { op: flip(installed.image.table), undo: vec![flip(old)], at: None });
    }
    let users = writes.len() - 1;
    (writes, users)
}

fn not_found(name: &PolicyName) -> DomainError {
    DomainError::NotFound { kind: "policy", name: name.to_string(), detail: "" }
}

/// Checks what the API's syntax checks cannot and sorts by priority.
fn validate(mut rules: Vec<RuleSpec>) -> Result<Vec<RuleSpec>, DomainError> {
    if rules.len() > MAX_POLICY_RULES as usize {
        return Err(DomainError::Exhausted { what: "rules per policy", capacity: MAX_POLICY_RULES }.at("rules"));
    }
    let mut seen = BTreeMap::new();
    for (i, r) in rules.iter().enumerate() {
        let at = |f: &str| format!("rules[{i}].{f}");
        if let Some(j) = seen.insert(r.priority, i) {
            return Err(DomainError::invalid(at("priority"), format!("priority {} is also rules[{j}]'s", r.priority)));
        }
        for (name, range) in [("src_ports", r.src_ports), ("dst_ports", r.dst_ports)] {
            if let Some((a, b)) = range {
                if a > b {
                    return Err(DomainError::invalid(at(name), format!("first {a} is after last {b}")));
                }
                if !matches!(r.protocol, Some(IPPROTO_TCP | IPPROTO_UDP)) {
                    return Err(DomainError::invalid(at(name), "ports need protocol 6 (TCP) or 17 (UDP)"));
                }
            }
        }
        if (r.icmp_type.is_some() || r.icmp_code.is_some())
            && !matches!(r.protocol, Some(IPPROTO_ICMP | IPPROTO_ICMPV6))
        {
            return Err(DomainError::invalid(at("icmp_type"), "ICMP type/code need protocol 1 (ICMP) or 58 (ICMPv6)"));
        }
        if r.tcp_flags.is_some() && r.protocol != Some(IPPROTO_TCP) {
            return Err(DomainError::invalid(at("tcp_flags"), "TCP flags need protocol 6 (TCP)"));
        }
        if let Some((mask, value)) = r.tcp_flags {
            if value & !mask != 0 {
                return Err(DomainError::invalid(at("tcp_flags"), "value has bits outside mask"));
            }
        }
        family(r).map_err(|reason| DomainError::invalid(at("dst_prefix"), reason))?;
    }
    rules.sort_by_key(|r| r.priority);
    Ok(rules)
}

/// The family a rule applies to, from its prefixes and protocol.
fn family(r: &RuleSpec) -> Result<Family, &'static str> {
    let mut fam = Family::Any;
    let mut require = |f: Family| -> Result<(), &'static str> {
        if fam != Family::Any && fam != f {
            return Err("mixes IPv4 and IPv6 (prefixes, or ICMP vs ICMPv6)");
        }
        fam = f;
        Ok(())
    };
    for p in [r.src, r.dst].into_iter().flatten() {
        require(if p.is_ipv4() { Family::V4 } else { Family::V6 })?;
    }
    match r.protocol {
        Some(IPPROTO_ICMP) => require(Family::V4)?,
        Some(IPPROTO_ICMPV6) => require(Family::V6)?,
        _ => {}
    }
    Ok(fam)
}

fn match_spec(r: &RuleSpec) -> MatchSpec {
    let icmp = matches!(r.protocol, Some(IPPROTO_ICMP | IPPROTO_ICMPV6));
    MatchSpec {
        family: family(r).expect("validated"),
        src: r.src,
        dst: r.dst,
        proto: r.protocol,
        // The parser hands ICMP type and code over in the port fields.
        l4_src: if icmp { r.icmp_type.map(|t| (u16::from(t), u16::from(t))) } else { r.src_ports },
        l4_dst: if icmp { r.icmp_code.map(|c| (u16::from(c), u16::from(c))) } else { r.dst_ports },
        tcp_flags: r.tcp_flags,
        action: match r.action {
            RuleAction::Allow => ACTION_ALLOW,
            RuleAction::Deny => ACTION_DENY,
            RuleAction::Punt => ACTION_PUNT,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::{
        dataplane::XdpMode,
        domain::{fake::FakeDataplane, AddInterface},
    };

    fn domain() -> Domain<FakeDataplane> {
        let d = Domain::new(FakeDataplane::with_links(&[("eth0", 7)]));
        d.add_interface(AddInterface { name: iface(), mode: XdpMode::Auto, vrf: 0 }).unwrap();
        d
    }

    fn iface() -> InterfaceName {
        InterfaceName::parse("n", "eth0").unwrap()
    }

    fn name() -> PolicyName {
        PolicyName::parse("name", "p").unwrap()
    }

    fn deny_port(priority: u32, port: u16) -> RuleSpec {
        RuleSpec {
            protocol: Some(IPPROTO_TCP),
            dst_ports: Some((port, port)),
            ..RuleSpec::any(priority, RuleAction::Deny)
        }
    }

    #[test]
    fn put_policy_replacement_flips_attachment_then_reclaims_old_table_after_grace() {
        let d = domain();
        d.put_policy(name(), vec![deny_port(1, 80)]).unwrap();
        d.attach_policy(&name(), &iface(), Direction::Egress, true).unwrap();
        let first = d.dataplane().policy_tables.lock().unwrap().keys().copied().collect::<Vec<_>>();
        assert_eq!(first.len(), 1);
        assert_eq!(d.dataplane().policy_attach.lock().unwrap()[&(0, DIR_EGRESS)], attach_word(first[0], true));

        d.put_policy(name(), vec![deny_port(1, 443)]).unwrap();
        let tables = d.dataplane().policy_tables.lock().unwrap().keys().copied().collect::<Vec<_>>();
        assert_eq!(tables.len(), 2, "old table still in the kernel until a grace period passes");
        let new = *tables.iter().find(|t| **t != first[0]).unwrap();
        assert_eq!(d.dataplane().policy_attach.lock().unwrap()[&(0, DIR_EGRESS)], attach_word(new, true));
        assert_eq!(d.dataplane().readers_waited.load(Ordering::SeqCst), 0);

        // The next change waits for readers, then frees the retired table.
        d.put_policy(PolicyName::parse("name", "q").unwrap(), vec![]).unwrap();
        assert_eq!(d.dataplane().readers_waited.load(Ordering::SeqCst), 1);
        // ... and its slot is free again: the new empty policy took it.
        let tables = d.dataplane().policy_tables.lock().unwrap();
        assert_eq!(tables.len(), 2);
        assert!(tables[&first[0]].actions.is_empty(), "slot {} now holds q", first[0]);
    }

    #[test]
    fn put_policy_unchanged_writes_nothing_and_keeps_generation() {
        let d = domain();
        let g = d.put_policy(name(), vec![deny_port(1, 80)]).unwrap();
        let writes = d.dataplane().write_log().len();
        // A client's retry after UNAVAILABLE, the first call having committed.
        assert_eq!(d.put_policy(name(), vec![deny_port(1, 80)]).unwrap(), g);
        assert_eq!(d.dataplane().write_log().len(), writes);
        assert_eq!(d.put_policy(name(), vec![deny_port(1, 81)]).unwrap(), g + 1);
    }

    #[test]
    fn delete_interface_clears_its_policy_attachments() {
        let d = domain();
        d.put_policy(name(), vec![deny_port(1, 80)]).unwrap();
        d.attach_policy(&name(), &iface(), Direction::Ingress, false).unwrap();
        d.delete_interface(&iface()).unwrap();
        assert_eq!(d.dataplane().policy_attach.lock().unwrap()[&(0, DIR_INGRESS)], 0);
        assert!(d.list_policies(None).unwrap()[0].attachments.is_empty());
        d.delete_policy(&name()).unwrap();
    }

    #[test]
    fn put_policy_invalid_changes_nothing() {
        let d = domain();
        d.put_policy(name(), vec![deny_port(1, 80)]).unwrap();
        let g = d.status().unwrap().generation;
        let mut bad = deny_port(2, 80);
        bad.dst_ports = Some((90, 80));
        let e = d.put_policy(name(), vec![deny_port(1, 80), bad]).unwrap_err();
        assert_eq!(e.to_string(), "rules[1].dst_ports: first 90 is after last 80");
        assert_eq!(d.status().unwrap().generation, g);
        assert_eq!(d.dataplane().policy_tables.lock().unwrap().len(), 1);
    }

    /// Policy `p` attached to eth0 both ways.
    fn with_policy() -> Domain<FakeDataplane> {
        let d = domain();
        d.put_policy(name(), vec![deny_port(1, 80)]).unwrap();
        d.attach_policy(&name(), &iface(), Direction::Ingress, false).unwrap();
        d.attach_policy(&name(), &iface(), Direction::Egress, true).unwrap();
        d
    }

    #[test]
    fn put_policy_kernel_failure_at_every_write_changes_nothing() {
        let errors = crate::domain::txn::testing::fail_at_every_write(with_policy, |d| {
            d.put_policy(name(), vec![deny_port(1, 443), deny_port(2, 22)])
        });
        assert_eq!(errors.len(), 3, "the new table, then both attachments flipped: {errors:?}");
    }

    #[test]
    fn attach_policy_kernel_failure_at_every_write_changes_nothing() {
        let setup = || {
            let d = domain();
            d.put_policy(name(), vec![deny_port(1, 80)]).unwrap();
            d
        };
        let errors = crate::domain::txn::testing::fail_at_every_write(setup, |d| {
            d.attach_policy(&name(), &iface(), Direction::Ingress, true)
        });
        assert_eq!(errors.len(), 1, "{errors:?}");
    }
}
