//! Policies in the state file: each policy's rules and installed table (to compile again to the
//! same places), the retired tables still waiting for a grace period, and the attachments.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{
    dataplane::Dataplane,
    domain::{
        persist::{self, RestoreReport},
        policies::{Attached, Installed, InstalledRecord, PolicyEntry},
        Direction, Domain, InterfaceName, PolicyName, RuleSpec, State,
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
    /// places the kernel has them), and the attachments of interfaces and policies that came back.
    pub(in crate::domain) fn restore_policies(
        &self,
        state: &mut State,
        policies: Vec<SavedPolicy>,
        retired: Vec<InstalledRecord>,
        attachments: Vec<SavedAttachment>,
        report: &mut RestoreReport,
    ) {
        for pol in policies {
            match Installed::restore(state, &pol.installed) {
                Some(installed) => {
                    state.policies.insert(pol.name, PolicyEntry::new(pol.rules, installed));
                }
                None => report.dropped.push(format!("policy {}: its tables do not fit", pol.name)),
            }
        }
        for r in &retired {
            if let Some(installed) = Installed::restore(state, r) {
                state.retired_policies.push(installed);
            }
        }
        for a in attachments {
            if state.interfaces.contains_key(&a.interface) && state.policies.contains_key(&a.policy) {
                state.policy_attachments.insert((a.interface, a.direction), Attached::new(a.policy, a.default_deny));
            }
        }
        report.policies = state.policies.len();
    }
}
