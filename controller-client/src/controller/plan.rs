//! From desired state to RPCs: the full replay a resync sends, and the diff that takes a node
//! from one version of the file to the next writing only what changed.
//!
//! A diff runs in three phases. First, what the server cannot change in place (an interface's
//! VRF or XDP mode, a VRF's mode) is taken down together with everything resting on it. Then
//! additions and in-place changes, users after what they use (next hops and routes with
//! `replace`, policies put, attachments replaced: each an atomic switch in the kernel). Last,
//! removals, users before what they use, so nothing still in use is ever deleted.

use std::collections::{BTreeMap, BTreeSet};

use super::desired::NodeDesired;
use crate::pb;

/// Routes per AddRoutes / DeleteRoutes call.
pub const ROUTE_CHUNK: usize = 10_000;

/// One RPC.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    AddVrf(pb::AddVrfRequest),
    DeleteVrf(u32),
    AddInterface(pb::AddInterfaceRequest),
    DeleteInterface(String),
    AddNextHops(pb::AddNextHopsRequest),
    DeleteNextHops(Vec<u32>),
    AddRoutes(pb::AddRoutesRequest),
    DeleteRoutes(Vec<pb::Route>),
    PutPolicy(pb::PutPolicyRequest),
    DeletePolicy(String),
    AttachPolicy(pb::AttachPolicyRequest),
    DetachPolicy(String, i32),
    SetFlowMode(pb::SetFlowModeRequest),
}

impl Step {
    /// Objects this step writes (for logs and status).
    pub fn objects(&self) -> usize {
        match self {
            Step::AddNextHops(r) => r.next_hops.len(),
            Step::DeleteNextHops(ids) => ids.len(),
            Step::AddRoutes(r) => r.routes.len(),
            Step::DeleteRoutes(r) => r.len(),
            _ => 1,
        }
    }

    /// The RPC's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Step::AddVrf(_) => "AddVrf",
            Step::DeleteVrf(_) => "DeleteVrf",
            Step::AddInterface(_) => "AddInterface",
            Step::DeleteInterface(_) => "DeleteInterface",
            Step::AddNextHops(_) => "AddNextHops",
            Step::DeleteNextHops(_) => "DeleteNextHops",
            Step::AddRoutes(_) => "AddRoutes",
            Step::DeleteRoutes(_) => "DeleteRoutes",
            Step::PutPolicy(_) => "PutPolicy",
            Step::DeletePolicy(_) => "DeletePolicy",
            Step::AttachPolicy(_) => "AttachPolicy",
            Step::DetachPolicy(..) => "DetachPolicy",
            Step::SetFlowMode(_) => "SetFlowMode",
        }
    }
}

fn add_vrf(id: u32, (mode, table): (pb::VrfMode, u32)) -> Step {
    Step::AddVrf(pb::AddVrfRequest { id, mode: mode as i32, kernel_table: table })
}

fn add_interface(name: &str, d: &NodeDesired) -> Step {
    let i = d.interfaces[name];
    Step::AddInterface(pb::AddInterfaceRequest { name: name.to_owned(), xdp_mode: i.xdp_mode as i32, vrf: i.vrf })
}

fn is_group(kind: &pb::next_hop::Kind) -> bool {
    matches!(kind, pb::next_hop::Kind::Ecmp(_))
}

/// Next hops in two batches, members before groups (a group may only name existing members).
fn add_next_hops<'a>(items: impl Iterator<Item = (u32, &'a pb::next_hop::Kind)>, replace: bool, out: &mut Vec<Step>) {
    let (groups, plain): (Vec<_>, Vec<_>) = items.partition(|(_, k)| is_group(k));
    for batch in [plain, groups] {
        if !batch.is_empty() {
            let next_hops = batch
                .into_iter()
                .map(|(id, k)| pb::NextHop { id, kind: Some(k.clone()), ..Default::default() })
                .collect();
            out.push(Step::AddNextHops(pb::AddNextHopsRequest { next_hops, replace, ..Default::default() }));
        }
    }
}

fn route(vrf: u32, prefix: &crate::yaml_fields::Cidr, next_hop: u32) -> pb::Route {
    pb::Route { vrf, prefix: prefix.to_string(), next_hop }
}

fn add_routes(routes: Vec<pb::Route>, replace: bool, out: &mut Vec<Step>) {
    for chunk in routes.chunks(ROUTE_CHUNK) {
        out.push(Step::AddRoutes(pb::AddRoutesRequest { routes: chunk.to_vec(), replace, ..Default::default() }));
    }
}

fn delete_routes(routes: Vec<pb::Route>, out: &mut Vec<Step>) {
    for chunk in routes.chunks(ROUTE_CHUNK) {
        out.push(Step::DeleteRoutes(chunk.to_vec()));
    }
}

fn attach(key: &(String, i32), (policy, deny): &(String, bool)) -> Step {
    Step::AttachPolicy(pb::AttachPolicyRequest {
        policy: policy.clone(),
        interface: key.0.clone(),
        direction: key.1,
        default_action: if *deny { pb::Action::Deny } else { pb::Action::Allow } as i32,
    })
}

/// Everything, in dependency order: what a resync replays between BeginResync and EndResync.
pub fn replay(d: &NodeDesired) -> Vec<Step> {
    let mut out: Vec<Step> = d.vrfs.iter().map(|(&id, &m)| add_vrf(id, m)).collect();
    out.extend(d.interfaces.keys().map(|name| add_interface(name, d)));
    add_next_hops(d.next_hops.iter().map(|(&id, k)| (id, k)), false, &mut out);
    add_routes(d.routes.iter().map(|(&(vrf, p), &nh)| route(vrf, &p, nh)).collect(), false, &mut out);
    out.extend(
        d.policies
            .iter()
            .map(|(name, rules)| Step::PutPolicy(pb::PutPolicyRequest { name: name.clone(), rules: rules.clone() })),
    );
    out.extend(d.attachments.iter().map(|(k, v)| attach(k, v)));
    out
}

/// Flow modes (not part of a resync): every declared interface's, disabled ones too.
pub fn flow_modes(d: &NodeDesired) -> Vec<Step> {
    d.flow_modes.iter().map(|(name, m)| Step::SetFlowMode(m.request(name))).collect()
}

/// The RPCs that take a node from `old` (applied) to `new`, writing only what differs.
pub fn diff(old: &NodeDesired, new: &NodeDesired) -> Vec<Step> {
    let mut out = Vec::new();

    // Phase 1: what cannot change in place goes, with everything resting on it.
    let vrfs: BTreeSet<u32> =
        old.vrfs.iter().filter(|(id, m)| new.vrfs.get(id).is_some_and(|n| n != *m)).map(|(id, _)| *id).collect();
    let ifaces: BTreeSet<String> = old
        .interfaces
        .iter()
        .filter(|(name, i)| vrfs.contains(&i.vrf) || new.interfaces.get(*name).is_some_and(|n| n != *i))
        .map(|(name, _)| name.clone())
        .collect();
    let mut nhs: BTreeSet<u32> = old
        .next_hops
        .iter()
        .filter(|(_, k)| matches!(k, pb::next_hop::Kind::Encap(e) if ifaces.contains(&e.interface)))
        .map(|(id, _)| *id)
        .collect();
    let groups: Vec<u32> = old
        .next_hops
        .iter()
        .filter(|(_, k)| matches!(k, pb::next_hop::Kind::Ecmp(g) if g.members.iter().any(|m| nhs.contains(m))))
        .map(|(id, _)| *id)
        .collect();
    nhs.extend(&groups);
    let mut base = old.clone();
    if !vrfs.is_empty() || !ifaces.is_empty() {
        let routes: Vec<pb::Route> = old
            .routes
            .iter()
            .filter(|((vrf, _), nh)| vrfs.contains(vrf) || nhs.contains(nh))
            .map(|(&(vrf, p), &nh)| route(vrf, &p, nh))
            .collect();
        let attachments: Vec<(String, i32)> =
            old.attachments.keys().filter(|(i, _)| ifaces.contains(i)).cloned().collect();
        out.extend(attachments.iter().map(|(i, d)| Step::DetachPolicy(i.clone(), *d)));
        delete_routes(routes, &mut out);
        let (g, p): (Vec<u32>, Vec<u32>) = nhs.iter().partition(|id| is_group(&old.next_hops[id]));
        out.extend([g, p].into_iter().filter(|b| !b.is_empty()).map(Step::DeleteNextHops));
        out.extend(ifaces.iter().map(|i| Step::DeleteInterface(i.clone())));
        out.extend(vrfs.iter().map(|v| Step::DeleteVrf(*v)));
        base.routes.retain(|(vrf, _), nh| !vrfs.contains(vrf) && !nhs.contains(nh));
        base.attachments.retain(|(i, _), _| !ifaces.contains(i));
        base.next_hops.retain(|id, _| !nhs.contains(id));
        base.interfaces.retain(|i, _| !ifaces.contains(i));
        // A re-added interface starts with flow mode off.
        base.flow_modes.retain(|i, _| !ifaces.contains(i));
        base.vrfs.retain(|v, _| !vrfs.contains(v));
    }
    let old = &base;

    // Phase 2: additions and in-place changes, users after what they use.
    out.extend(new.vrfs.iter().filter(|(id, _)| !old.vrfs.contains_key(id)).map(|(&id, &m)| add_vrf(id, m)));
    out.extend(new.interfaces.keys().filter(|n| !old.interfaces.contains_key(*n)).map(|n| add_interface(n, new)));
    let changed_nhs = new.next_hops.iter().filter(|(id, k)| old.next_hops.get(id) != Some(k)).map(|(&id, k)| (id, k));
    add_next_hops(changed_nhs, true, &mut out);
    let changed_routes: Vec<pb::Route> = new
        .routes
        .iter()
        .filter(|(k, nh)| old.routes.get(k) != Some(nh))
        .map(|(&(vrf, p), &nh)| route(vrf, &p, nh))
        .collect();
    add_routes(changed_routes, true, &mut out);
    out.extend(
        new.policies
            .iter()
            .filter(|(n, r)| old.policies.get(*n) != Some(r))
            .map(|(n, r)| Step::PutPolicy(pb::PutPolicyRequest { name: n.clone(), rules: r.clone() })),
    );
    out.extend(new.attachments.iter().filter(|(k, v)| old.attachments.get(*k) != Some(v)).map(|(k, v)| attach(k, v)));
    // Every declared interface has a mode (off included), so one that stays is handled here;
    // a deleted interface's mode goes with it.
    out.extend(
        new.flow_modes
            .iter()
            .filter(|(n, m)| old.flow_modes.get(*n).copied().unwrap_or_default() != **m)
            .map(|(n, m)| Step::SetFlowMode(m.request(n))),
    );

    // Phase 3: removals, users before what they use.
    out.extend(
        old.attachments
            .keys()
            .filter(|k| !new.attachments.contains_key(*k))
            .map(|(i, d)| Step::DetachPolicy(i.clone(), *d)),
    );
    let gone_routes: Vec<pb::Route> = old
        .routes
        .iter()
        .filter(|(k, _)| !new.routes.contains_key(k))
        .map(|(&(vrf, p), &nh)| route(vrf, &p, nh))
        .collect();
    delete_routes(gone_routes, &mut out);
    let gone: BTreeMap<u32, &pb::next_hop::Kind> =
        old.next_hops.iter().filter(|(id, _)| !new.next_hops.contains_key(id)).map(|(&id, k)| (id, k)).collect();
    let (g, p): (Vec<u32>, Vec<u32>) = gone.keys().partition(|id| is_group(gone[id]));
    out.extend([g, p].into_iter().filter(|b| !b.is_empty()).map(Step::DeleteNextHops));
    out.extend(old.policies.keys().filter(|n| !new.policies.contains_key(*n)).map(|n| Step::DeletePolicy(n.clone())));
    out.extend(
        old.interfaces.keys().filter(|n| !new.interfaces.contains_key(*n)).map(|n| Step::DeleteInterface(n.clone())),
    );
    out.extend(old.vrfs.keys().filter(|v| !new.vrfs.contains_key(*v)).map(|v| Step::DeleteVrf(*v)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::config;

    const BASE: &str = r#"
nodes:
  a:
    server: unix:/x
    vrfs: [{id: 1}]
    interfaces:
      - {name: eth0, flows: true, ingress_policy: web}
      - {name: eth1}
    next_hops:
      - {id: 1, interface: eth1, dst_mac: "02:00:00:00:00:01"}
      - {id: 2, interface: eth0, dst_mac: "02:00:00:00:00:02"}
      - {id: 3, ecmp: [1, 2]}
    routes:
      - {prefix: 198.51.100.0/24, next_hop: 1}
      - {prefix: 192.0.2.0/24, next_hop: 2}
      - {prefix: 203.0.113.0/24, next_hop: 3}
    policies:
      web:
        - {priority: 10, protocol: tcp, dst_ports: 22, action: deny}
        - {priority: 20, protocol: tcp, dst_ports: 23, action: deny}
"#;

    fn node(text: &str) -> NodeDesired {
        config::parse("t", text).unwrap().nodes.remove("a").unwrap()
    }

    fn names(steps: &[Step]) -> Vec<&'static str> {
        steps.iter().map(Step::name).collect()
    }

    #[test]
    fn diff_identical_is_empty_and_replay_is_in_dependency_order() {
        let a = node(BASE);
        assert!(diff(&a, &a).is_empty());
        assert_eq!(
            names(&replay(&a)),
            [
                "AddVrf",
                "AddInterface",
                "AddInterface",
                "AddNextHops",
                "AddNextHops",
                "AddRoutes",
                "PutPolicy",
                "AttachPolicy"
            ]
        );
        // Members in the first next-hop batch, the group in the second.
        let Step::AddNextHops(ref groups) = replay(&a)[4] else { panic!() };
        assert_eq!(groups.next_hops.iter().map(|n| n.id).collect::<Vec<_>>(), [3]);
    }

    #[test]
    fn diff_add_route_and_drop_a_rule_is_two_writes() {
        let old = node(BASE);
        let new = node(
            &BASE
                .replace(
                    "      - {prefix: 203.0.113.0/24, next_hop: 3}",
                    "      - {prefix: 203.0.113.0/24, next_hop: 3}\n      - {prefix: 203.0.113.128/25, next_hop: 1}",
                )
                .replace("        - {priority: 20, protocol: tcp, dst_ports: 23, action: deny}\n", ""),
        );
        let steps = diff(&old, &new);
        assert_eq!(names(&steps), ["AddRoutes", "PutPolicy"]);
        let Step::AddRoutes(ref r) = steps[0] else { panic!() };
        assert_eq!((r.routes.len(), r.replace), (1, true));
    }

    #[test]
    fn diff_moves_route_before_removing_its_old_next_hop() {
        let old = node(BASE);
        let new = node(
            &BASE
                .replace("{prefix: 192.0.2.0/24, next_hop: 2}", "{prefix: 192.0.2.0/24, next_hop: 1}")
                .replace("      - {id: 3, ecmp: [1, 2]}\n", "      - {id: 3, ecmp: [1]}\n")
                .replace("      - {id: 2, interface: eth0, dst_mac: \"02:00:00:00:00:02\"}\n", ""),
        );
        assert_eq!(names(&diff(&old, &new)), ["AddNextHops", "AddRoutes", "DeleteNextHops"]);
    }

    #[test]
    fn diff_interface_vrf_change_recreates_what_rests_on_it_first() {
        let old = node(BASE);
        let new = node(&BASE.replace("{name: eth1}", "{name: eth1, vrf: 1}"));
        let steps = diff(&old, &new);
        assert_eq!(
            names(&steps),
            [
                "DeleteRoutes",
                "DeleteNextHops",
                "DeleteNextHops",
                "DeleteInterface", // phase 1
                "AddInterface",
                "AddNextHops",
                "AddNextHops",
                "AddRoutes", // phase 2
            ]
        );
        let Step::DeleteRoutes(ref r) = steps[0] else { panic!() };
        // Routes via next hop 1 (on eth1) and via group 3 (member 1); not the one via 2.
        assert_eq!(r.iter().map(|r| r.prefix.as_str()).collect::<Vec<_>>(), ["198.51.100.0/24", "203.0.113.0/24"]);
    }

    #[test]
    fn diff_removing_everything_goes_users_first() {
        let old = node(BASE);
        let new = node("nodes:\n  a:\n    server: unix:/x\n");
        assert_eq!(
            names(&diff(&old, &new)),
            [
                "DetachPolicy",
                "DeleteRoutes",
                "DeleteNextHops",
                "DeleteNextHops",
                "DeletePolicy",
                "DeleteInterface",
                "DeleteInterface",
                "DeleteVrf"
            ]
        );
    }
}
