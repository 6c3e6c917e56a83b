//! Policies in the state file: each policy's rules and installed table (to compile again to the
//! same places), the retired tables still waiting for a grace period, and the attachments.

use std::collections::{BTreeMap, BTreeSet};

use dataplane_common::policy::{attach_word, ATTACH_DEFAULT_DENY, DIR_EGRESS};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{
    dataplane::Dataplane,
    domain::{
        persist::{self, RestoreReport},
        policies::{Attached, Installed, InstalledRecord, PolicyEntry},
        Direction, Domain, DomainError, InterfaceName, PolicyName, RuleSpec, State,
    },
};

/// One policy as the state file keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::domain) struct SavedPolicy {
    name: PolicyName,
    rules: Vec<RuleSpec>,
    installed: InstalledRecord,
}

/// One attachment as the state file keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::domain) struct SavedAttachment {
    interface: InterfaceName,
    direction: Direction,
    policy: PolicyName,
    default_deny: bool,
}

/// As its text.
impl Serialize for PolicyName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Validated as a request's name is.
impl<'de> Deserialize<'de> for PolicyName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        // The caller's path names the field; the reason is what is left to say.
        Self::parse("", &name).map_err(persist::invalid_value)
    }
}

/// The policies, for the state file.
pub(in crate::domain) fn saved(state: &State) -> Vec<SavedPolicy> {
    state
        .policies
        .iter()
        .map(|(name, e)| SavedPolicy {
            name: name.clone(),
            rules: e.rules().to_vec(),
            installed: e.installed().record(),
        })
        .collect()
}

/// The retired tables, for the state file.
pub(in crate::domain) fn saved_retired(state: &State) -> Vec<InstalledRecord> {
    state.retired_policies.iter().map(Installed::record).collect()
}

/// The attachments, for the state file.
pub(in crate::domain) fn saved_attachments(state: &State) -> Vec<SavedAttachment> {
    state
        .policy_attachments
        .iter()
        .map(|((interface, direction), a)| SavedAttachment {
            interface: interface.clone(),
            direction: *direction,
            policy: a.policy().clone(),
            default_deny: a.default_deny(),
        })
        .collect()
}

impl<D: Dataplane> Domain<D> {
    /// Takes back the policies and retired tables where they still fit (compiled again to the
    /// places the kernel has them), then the attachments as the kernel's words have them: a word
    /// the file describes is kept; one it describes otherwise, or not at all, is taken as the
    /// kernel has it (a retired table still attached becomes a policy again, named
    /// `adopted-table-N`); an attachment the kernel does not have is dropped. Last, the retired
    /// tables nothing points at are reclaimed (a crash may have left them waiting).
    pub(in crate::domain) fn restore_policies(
        &self,
        state: &mut State,
        policies: Vec<SavedPolicy>,
        retired: Vec<InstalledRecord>,
        attachments: Vec<SavedAttachment>,
        report: &mut RestoreReport,
    ) -> Result<(), DomainError> {
        for pol in policies {
            match self.restore_installed(state, &pol.installed)? {
                Some(installed) => {
                    state.policies.insert(pol.name, PolicyEntry::new(pol.rules, installed));
                }
                None => report.dropped.push(format!("policy {}: its tables do not fit", pol.name)),
            }
        }
        for r in &retired {
            if let Some(installed) = self.restore_installed(state, r)? {
                state.retired_policies.push(installed);
            }
        }
        let mut words: BTreeMap<(u32, u32), u32> =
            self.dataplane.policy_attachments()?.into_iter().map(|(slot, dir, word)| ((slot, dir), word)).collect();
        for a in attachments {
            let (Some(i), Some(p)) = (state.interfaces.get(&a.interface), state.policies.get(&a.policy)) else {
                continue;
            };
            let want = attach_word(p.installed().image.table, a.default_deny);
            match words.get(&(i.slot, a.direction.index())) {
                Some(&word) if word == want => {
                    words.remove(&(i.slot, a.direction.index()));
                    state
                        .policy_attachments
                        .insert((a.interface, a.direction), Attached::new(a.policy, a.default_deny));
                }
                // Taken as the kernel has it, below.
                Some(_) => {}
                None => report.disagreements.push(format!(
                    "policy {} on {} {:?}: not attached in the kernel: dropped",
                    a.policy, a.interface, a.direction
                )),
            }
        }
        let mut attached_tables: std::collections::BTreeSet<u32> = BTreeSet::new();
        for ((slot, dir), word) in words {
            attached_tables.insert(word_table(word).0);
            self.adopt_attachment(state, report, slot, dir, word)?;
        }
        self.reclaim_retired(state)?;
        // Trie entries of tables nothing holds: a compile cut short by a crash.
        let keep: BTreeSet<u32> =
            state.policies.values().map(|e| e.installed().image.table).chain(attached_tables).collect();
        let purged = self.dataplane.purge_policy_tables(&keep)?;
        if !purged.is_empty() {
            report.dropped.push(format!("classifier entries of unused policy tables {purged:?} (a write cut short)"));
        }
        report.policies = state.policies.len();
        Ok(())
    }

    /// A table of the state file: compiled again from its rules, or read from the kernel again
    /// if its rules were never known. `None` if its places are not free.
    fn restore_installed(&self, state: &mut State, r: &InstalledRecord) -> Result<Option<Installed>, DomainError> {
        if !r.from_kernel {
            return Ok(Installed::restore(state, r));
        }
        Ok(match self.dataplane.read_policy(r.table)? {
            Some(image) => Installed::from_kernel(state, image, r.pool, r.rules),
            None => None,
        })
    }

    /// A table an attachment points at that the state file does not have, read back from the
    /// kernel with its places taken in the allocators (its rule slots as many as are free of the
    /// upper bound the kernel gives), so that no later table is written over it.
    fn adopt_table(&self, state: &mut State, table: u32) -> Result<Option<Installed>, DomainError> {
        let Some(image) = self.dataplane.read_policy(table)? else { return Ok(None) };
        let pool = (image.pool_base, image.pool.len() as u32);
        let (base, upper) = (image.header.rule_base, image.actions.len() as u32);
        for n in (0..=upper).rev() {
            if state.rule_slots.reserve(base, n) {
                state.rule_slots.free(base, n);
                let mut image = image;
                image.actions.truncate(n as usize);
                return Ok(Installed::from_kernel(state, image, pool, (base, n)));
            }
        }
        Ok(None)
    }

    /// Takes the kernel's attachment word `word` of interface slot `slot`, direction `dir`, into
    /// the state.
    fn adopt_attachment(
        &self,
        state: &mut State,
        report: &mut RestoreReport,
        slot: u32,
        dir: u32,
        word: u32,
    ) -> Result<(), DomainError> {
        let direction = if dir == DIR_EGRESS { Direction::Egress } else { Direction::Ingress };
        let Some(interface) = state.interfaces.iter().find(|(_, e)| e.slot == slot).map(|(n, _)| n.clone()) else {
            // No interface has the slot: no entry leads a packet to this word. Cleared, so an
            // interface given the slot later does not inherit it.
            self.dataplane.set_policy_attachment(slot, dir, 0)?;
            report.dropped.push(format!("policy attachment of slot {slot} {direction:?}: no interface"));
            return Ok(());
        };
        let (table, default_deny) = word_table(word);
        let owner = state.policies.iter().find(|(_, e)| e.installed().image.table == table).map(|(n, _)| n.clone());
        let policy = match owner {
            Some(name) => name,
            None => match state.retired_policies.iter().position(|r| r.image.table == table) {
                Some(i) => {
                    let installed = state.retired_policies.remove(i);
                    let name = PolicyName::parse("", &format!("adopted-table-{table}"))?;
                    report.adopted.push(format!(
                        "policy {name} (a retired table still attached, {} rules)",
                        installed.specs.len()
                    ));
                    state.policies.insert(name.clone(), PolicyEntry::new(installed.specs.clone(), installed));
                    name
                }
                None => match self.adopt_table(state, table)? {
                    Some(installed) => {
                        let name = PolicyName::parse("", &format!("adopted-table-{table}"))?;
                        report.adopted.push(format!(
                            "policy {name} (table {table}, rules unknown to the state file: read from the kernel)"
                        ));
                        state.policies.insert(name.clone(), PolicyEntry::new(Vec::new(), installed));
                        name
                    }
                    None => {
                        // Nothing to read, or its places overlap the file's tables: left
                        // attached as it is, its slot out of use.
                        state.policy_tables.reserve(table);
                        report.disagreements.push(format!(
                            "policy table {table} attached to {interface} {direction:?} cannot be read back: left attached"
                        ));
                        return Ok(());
                    }
                },
            },
        };
        let what = format!("policy {policy} on {interface} {direction:?} (default deny {default_deny})");
        match state.policy_attachments.insert((interface, direction), Attached::new(policy, default_deny)) {
            None => report.adopted.push(what),
            Some(_) => report.disagreements.push(format!("{what}: the kernel's attachment kept")),
        }
        Ok(())
    }
}

/// The table and default-deny bit of a non-zero attachment word (the inverse of `attach_word`).
fn word_table(word: u32) -> (u32, bool) {
    ((word & 0xffff).wrapping_sub(1), word & ATTACH_DEFAULT_DENY != 0)
}
