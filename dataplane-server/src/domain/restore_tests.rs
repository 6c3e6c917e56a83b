//! The kernel is the truth at a restart: a state file that is missing, stale or another
//! dataplane's never removes what forwards (issue 18, item 1). Each test builds a domain, takes
//! its fake kernel to a "new process" and restores it with a file that does not match.

use std::collections::BTreeMap;

use super::{
    fake::FakeDataplane,
    nexthops::restore::ADOPTED_IDS,
    persist::{Loaded, Persisted},
    AddInterface, Direction, Domain, InterfaceName, NewNextHop, NextHopSpec, PolicyName, RouteSpec, RuleAction,
    RuleSpec, VrfMode,
};
use crate::{
    dataplane::{AdoptedLinks, XdpMode},
    net::Mac,
};

const LINKS: &[(&str, u32)] = &[("eth0", 7), ("eth1", 8), ("eth2", 9)];

fn name(s: &str) -> InterfaceName {
    InterfaceName::parse("n", s).unwrap()
}

fn encap(id: u32, interface: &str, last: u8) -> NewNextHop {
    NewNextHop {
        id,
        spec: NextHopSpec::Encap { interface: name(interface), dst_mac: Mac([2, 0, 0, 0, 0, last]), src_mac: None },
    }
}

fn route(vrf: u32, prefix: &str, nexthop: u32) -> RouteSpec {
    RouteSpec { vrf, prefix: prefix.parse().unwrap(), nexthop }
}

/// Interfaces in VRFs 0 and 6, next hops, an ECMP group, v4 and v6 routes, an attached policy.
fn configured() -> Domain<FakeDataplane> {
    let d = Domain::new(FakeDataplane::with_links(LINKS));
    d.add_vrf(6, VrfMode::Routes).unwrap();
    d.add_vrf(5, VrfMode::KernelFib { table: 100 }).unwrap();
    for (n, vrf) in [("eth0", 0), ("eth1", 6), ("eth2", 5)] {
        d.add_interface(AddInterface { name: name(n), mode: XdpMode::Auto, vrf }).unwrap();
    }
    d.add_nexthops(vec![
        encap(10, "eth0", 1),
        encap(11, "eth1", 2),
        NewNextHop { id: 12, spec: NextHopSpec::Ecmp { members: vec![10, 11] } },
        NewNextHop { id: 13, spec: NextHopSpec::Discard },
    ])
    .unwrap();
    d.add_routes(vec![
        route(0, "198.51.100.0/24", 12),
        route(0, "2001:db8:1::/48", 10),
        route(6, "203.0.113.0/25", 11),
        route(0, "192.0.2.128/25", 13),
    ])
    .unwrap();
    let pol = PolicyName::parse("p", "edge").unwrap();
    d.put_policy(pol.clone(), vec![RuleSpec::any(1, RuleAction::Deny)]).unwrap();
    d.attach_policy(&pol, &name("eth0"), Direction::Ingress, false).unwrap();
    let mode = super::FlowMode { enabled: true, miss_forward: true, hold_cap: 100, punt_rate: 50, punt_burst: 10 };
    d.set_flow_mode(&name("eth1"), mode).unwrap();
    d
}

/// A new process over `a`'s kernel: its links adopted, its maps as `a` left them.
fn restarted(a: &Domain<FakeDataplane>, state_file: Option<std::path::PathBuf>) -> Domain<FakeDataplane> {
    let dp = FakeDataplane::with_links(LINKS);
    for (i, &(_, ifindex)) in LINKS.iter().enumerate() {
        let i = i as u32;
        dp.adopted.lock().unwrap().push(AdoptedLinks { ifindex, xdp_link_id: 100 + i, tc_link_id: 200 + i });
    }
    dp.copy_maps_from(a.dataplane());
    match state_file {
        Some(f) => Domain::with_state_file(dp, f),
        None => Domain::new(dp),
    }
}

/// What forwards: the fake kernel's maps, without the last words (the records' high-water mark,
/// which a restart compacts, and the generation).
fn forwarding(d: &Domain<FakeDataplane>) -> String {
    let (maps, fib4) = d.dataplane().snapshot(true);
    let cut = maps.rfind("}, ").expect("the flat-table roots");
    format!("{}{:?}", &maps[..cut], fib4)
}

fn file_of(d: &Domain<FakeDataplane>) -> Persisted {
    let p = d.lock().persisted(BTreeMap::new(), None, d.pins_id);
    serde_json::from_slice(&serde_json::to_vec(&p).unwrap()).unwrap()
}

/// Routes as (vrf, prefix, spec of the next hop), so that adopted ids compare.
fn routes_by_spec(d: &Domain<FakeDataplane>) -> Vec<(u32, String, NextHopSpec)> {
    let specs: BTreeMap<u32, NextHopSpec> = d.list_nexthops().unwrap().into_iter().map(|n| (n.id, n.spec)).collect();
    let mut out: Vec<_> = d
        .list_routes(None, None)
        .into_iter()
        .map(|r| (r.vrf, r.prefix.to_string(), specs[&r.nexthop].clone()))
        .collect();
    for (_, _, spec) in &mut out {
        if let NextHopSpec::Ecmp { members } = spec {
            // Member ids differ between the file's and adopted ones: compare the members' specs.
            *members = members.iter().map(|m| if *m >= ADOPTED_IDS { m - ADOPTED_IDS } else { *m }).collect();
        }
    }
    out
}

#[test]
fn restore_without_state_file_adopts_everything_the_kernel_forwards() {
    let a = configured();
    let b = restarted(&a, None);
    let before = forwarding(&b);
    let report = b.restore_loaded(Loaded::Missing).unwrap();

    assert_eq!(report.state_file, "missing");
    assert!(report.dropped.is_empty(), "{report:?}");
    assert_eq!(forwarding(&b), before, "the restore changed what forwards");
    // Interfaces by their kernel names, slots and VRFs (kernel-FIB VRF 5 from its entry).
    let ifaces = |d: &Domain<FakeDataplane>| {
        d.list_interfaces(None).unwrap().into_iter().map(|i| (i.name, i.slot, i.vrf, i.link)).collect::<Vec<_>>()
    };
    assert_eq!(ifaces(&b), ifaces(&a));
    assert_eq!(b.list_vrfs(), a.list_vrfs());
    // Next hops at their slots, with ids of the adopted range; the same routes through them.
    let nhs = b.list_nexthops().unwrap();
    assert_eq!(nhs.len(), 4);
    for n in &nhs {
        assert_eq!(n.id, ADOPTED_IDS + n.slot, "{n:?}");
    }
    assert_eq!(b.list_routes(None, None).len(), 4);
    let a_slots: BTreeMap<u32, u32> = a.list_nexthops().unwrap().into_iter().map(|n| (n.id, n.slot)).collect();
    for (ra, rb) in a.list_routes(None, None).iter().zip(b.list_routes(None, None)) {
        assert_eq!((ra.vrf, ra.prefix), (rb.vrf, rb.prefix));
        assert_eq!(rb.nexthop, ADOPTED_IDS + a_slots[&ra.nexthop]);
    }
    // The flow mode, from the kernel's configuration of the slot.
    assert_eq!(b.lock().flows.modes(), a.lock().flows.modes());
    assert!(report.adopted.iter().any(|a| a.starts_with("flow mode of eth1")), "{report:?}");
    // The attached table, whose rules only the file had: read back from the kernel as a policy
    // of its own, attached as before.
    assert!(report.adopted.iter().any(|d| d.starts_with("policy adopted-table-0 (table 0")), "{report:?}");
    let pols = b.list_policies(None).unwrap();
    assert_eq!(pols.len(), 1, "{pols:?}");
    assert_eq!(pols[0].name.as_str(), "adopted-table-0");
    assert!(report.adopted.iter().any(|d| d.starts_with("policy adopted-table-0 on eth0 Ingress")), "{report:?}");
    // Reported, and a new generation so that controllers resync.
    assert!(report.adopted.iter().any(|a| a.starts_with("interface eth1")), "{report:?}");
    assert!(b.status().unwrap().generation > a.status().unwrap().generation);
    assert_eq!(b.status().unwrap().restore.unwrap().adopted, report.adopted);
}

#[test]
fn restore_with_stale_state_file_keeps_the_kernel_side_and_reports_it() {
    let a = configured();
    let stale = file_of(&a);
    // After the file was copied: a next hop changes MAC, one is added with routes, a route goes.
    a.add_nexthops_with(vec![encap(10, "eth0", 0x42)], super::OnExisting::Replace).unwrap();
    a.add_nexthops(vec![encap(20, "eth1", 7)]).unwrap();
    a.add_routes(vec![route(6, "2001:db8:6::/48", 20)]).unwrap();
    a.delete_routes(&[(0, "192.0.2.128/25".parse().unwrap())]).unwrap();
    let b = restarted(&a, None);
    let before = forwarding(&b);
    let report = b.restore(Some(stale)).unwrap();

    assert_eq!(forwarding(&b), before, "the restore changed what forwards");
    assert_eq!(routes_by_spec(&b), routes_by_spec(&a));
    let nhs: BTreeMap<u32, NextHopSpec> = b.list_nexthops().unwrap().into_iter().map(|n| (n.id, n.spec)).collect();
    // The file's id with the kernel's MAC; the new one adopted at its slot.
    assert_eq!(
        nhs[&10],
        NextHopSpec::Encap { interface: name("eth0"), dst_mac: Mac([2, 0, 0, 0, 0, 0x42]), src_mac: None }
    );
    let slot20 = a.list_nexthops().unwrap().into_iter().find(|n| n.id == 20).unwrap().slot;
    assert_eq!(nhs[&(ADOPTED_IDS + slot20)], encap(20, "eth1", 7).spec);
    assert!(report.disagreements.iter().any(|d| d.starts_with("next hop 10:")), "{report:?}");
    assert!(report.adopted.iter().any(|d| d.starts_with(&format!("next hop {}", ADOPTED_IDS + slot20))), "{report:?}");
    // Where the file and the kernel agree, nothing is made up: the policy and its attachment.
    assert_eq!(format!("{:?}", b.list_policies(None).unwrap()), format!("{:?}", a.list_policies(None).unwrap()));
}

#[test]
fn restore_with_another_dataplanes_state_file_sets_it_aside_and_adopts_the_kernel() {
    let dir = std::env::temp_dir().join(format!("dataplane-restore-{}-foreign", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("state.json");
    // Another dataplane's file: other pins, other interfaces and next hops.
    let other = Domain::new(FakeDataplane::with_links(&[("eth9", 99)]));
    other.add_interface(AddInterface { name: name("eth9"), mode: XdpMode::Auto, vrf: 0 }).unwrap();
    other.add_nexthops(vec![encap(10, "eth9", 9)]).unwrap();
    let mut foreign = file_of(&other);
    foreign.pins = Some(77);
    super::persist::write(&path, &foreign).unwrap();

    let a = configured();
    let b = restarted(&a, Some(path.clone()));
    let before = forwarding(&b);
    let report = b.restore_loaded(super::persist::load(&path).unwrap()).unwrap();

    assert!(report.state_file.starts_with("foreign: it describes pins 77, these are 1"), "{report:?}");
    assert!(dir.join("state.json.foreign").exists(), "the foreign file was not kept aside");
    assert_eq!(forwarding(&b), before, "the restore changed what forwards");
    assert_eq!(b.list_interfaces(None).unwrap().len(), 3);
    assert_eq!(routes_by_spec(&b).len(), 4);
    // The file written back is this dataplane's, naming its pins.
    let written = super::persist::read(&path).unwrap().expect("the state file written back");
    assert_eq!(written.pins, Some(1));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn load_damaged_state_file_is_kept_aside_and_reported() {
    let dir = std::env::temp_dir().join(format!("dataplane-restore-{}-damaged", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("state.json");
    let a = configured();
    let text = serde_json::to_string(&file_of(&a)).unwrap();
    std::fs::write(&path, &text[..text.len() / 2]).unwrap();

    let loaded = super::persist::load(&path).unwrap();
    let b = restarted(&a, Some(path.clone()));
    let before = forwarding(&b);
    let report = b.restore_loaded(loaded).unwrap();

    assert!(report.state_file.starts_with("damaged (kept as "), "{report:?}");
    assert_eq!(std::fs::read_to_string(dir.join("state.json.damaged")).unwrap(), text[..text.len() / 2]);
    assert_eq!(forwarding(&b), before);
    assert_eq!(b.list_routes(None, None).len(), 4);
    // A file of another format is still refused: it may be a newer build's.
    std::fs::write(&path, r#"{"format": 99}"#).unwrap();
    assert!(super::persist::load(&path).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn restore_adopted_policy_table_survives_a_restart_and_goes_when_replaced() {
    let a = configured();
    let b = restarted(&a, None);
    b.restore_loaded(Loaded::Missing).unwrap();
    let pool_before = b.lock().policy_pool.clone();
    // Restarted again with the file b wrote: the adopted table is read from the kernel again.
    let c = restarted(&b, None);
    let report = c.restore(Some(file_of(&b))).unwrap();
    assert!(report.adopted.is_empty() && report.disagreements.is_empty() && report.dropped.is_empty(), "{report:?}");
    assert_eq!(format!("{:?}", c.list_policies(None).unwrap()), format!("{:?}", b.list_policies(None).unwrap()));
    assert_eq!(c.lock().policy_pool, pool_before, "the adopted table's words are not held");
    // A controller's resync puts its own policy and attaches it; the adopted one is deleted,
    // and its table leaves the kernel.
    let edge = PolicyName::parse("p", "edge").unwrap();
    c.put_policy(edge.clone(), vec![RuleSpec::any(1, RuleAction::Allow)]).unwrap();
    c.attach_policy(&edge, &name("eth0"), Direction::Ingress, false).unwrap();
    c.delete_policy(&PolicyName::parse("p", "adopted-table-0").unwrap()).unwrap();
    c.put_policy(edge, vec![RuleSpec::any(2, RuleAction::Allow)]).unwrap(); // reclaims what was retired
                                                                            // The adopted table was the only one denying.
    let tables = c.dataplane().policy_tables.lock().unwrap().clone();
    assert!(
        tables.values().all(|t| t.actions == [dataplane_common::policy::ACTION_ALLOW]),
        "the adopted table is still written: {:?}",
        tables.values().map(|t| (t.table, &t.actions)).collect::<Vec<_>>()
    );
}

#[test]
fn restore_removes_classifier_entries_of_a_table_no_one_holds() {
    let a = configured();
    let b = restarted(&a, None);
    // A PutPolicy cut short: its table written, never attached, not in the file.
    let mut stray = b.dataplane().policy_tables.lock().unwrap()[&0].clone();
    stray.table = 9;
    b.dataplane().policy_tables.lock().unwrap().insert(9, stray);
    let report = b.restore(Some(file_of(&a))).unwrap();
    assert!(!b.dataplane().policy_tables.lock().unwrap().contains_key(&9));
    assert!(b.dataplane().policy_tables.lock().unwrap().contains_key(&0), "the attached table went too");
    assert!(report.dropped.iter().any(|d| d.contains("unused policy tables [9]")), "{report:?}");
}

/// Issue 18: after a crash during PutPolicy, the largest policy that fit before still fits. The
/// fake crashes at each write of a PutPolicy that replaces an attached policy of the largest
/// size (the files copied at that instant, as a SIGKILL leaves them); the restarted domain must
/// take two more of the largest size, as the one before the crash could: nothing the cut-short
/// batch or the retired table held stays taken.
#[test]
fn put_policy_crash_at_every_write_largest_policies_that_fit_before_still_fit() {
    use dataplane_common::policy::MAX_POLICY_RULES;
    let rules = |action| (1..=MAX_POLICY_RULES).map(|p| RuleSpec::any(p, action)).collect::<Vec<_>>();
    let big = |i: u32| PolicyName::parse("p", &format!("big{i}")).unwrap();
    let root = std::env::temp_dir().join(format!("dataplane-restore-{}-policy-crash", std::process::id()));
    let mut crashes = 0;
    for n in 1.. {
        let dir = root.join(n.to_string());
        std::fs::create_dir_all(dir.join("crash")).unwrap();
        let (file, crash_file) = (dir.join("state.json"), dir.join("crash").join("state.json"));
        let a = Domain::with_state_file(FakeDataplane::with_links(LINKS), file.clone());
        a.add_interface(AddInterface { name: name("eth0"), mode: XdpMode::Auto, vrf: 0 }).unwrap();
        a.put_policy(big(0), rules(RuleAction::Allow)).unwrap();
        a.attach_policy(&big(0), &name("eth0"), Direction::Ingress, false).unwrap();
        a.put_policy(big(1), rules(RuleAction::Allow)).unwrap();
        let (intent, crash_intent) = (super::intent::path_for(&file), super::intent::path_for(&crash_file));
        let copied = crash_file.clone();
        a.dataplane().crash_at(
            n,
            Box::new(move || {
                for (from, to) in [(&file, &copied), (&intent, &crash_intent)] {
                    if from.exists() {
                        std::fs::copy(from, to).unwrap();
                    }
                }
            }),
        );
        let _ = a.put_policy(big(0), rules(RuleAction::Deny));
        if !a.dataplane().has_crashed() {
            break;
        }
        crashes += 1;
        let b = Domain::with_state_file(a.dataplane().restarted(), crash_file.clone());
        b.restore(super::persist::read(&crash_file).unwrap()).unwrap();
        for i in [2, 3] {
            b.put_policy(big(i), rules(RuleAction::Allow))
                .unwrap_or_else(|e| panic!("crash at write {n}: policy big{i} no longer fits: {e}"));
        }
    }
    assert!(crashes >= 3, "PutPolicy made {crashes} writes");
    std::fs::remove_dir_all(&root).unwrap();
}
