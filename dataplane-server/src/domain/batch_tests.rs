//! Per-entry results of batch writes (issue 20, item 2): each entry of a routes or next-hops
//! batch is checked on its own and every failure reported in request order; all or nothing
//! changes nothing, continue on error applies exactly the valid entries, as one batch that a
//! kernel failure still takes back whole.

use super::{
    fake::FakeDataplane, txn::testing::fail_at_every_write, AddInterface, Atomicity, BatchError, Domain, DomainError,
    Entry, ErrorKind, InterfaceName, NewNextHop, NextHopSpec, OnExisting, RouteSpec, VrfMode,
};
use crate::{dataplane::XdpMode, net::Mac};

use Atomicity::{AllOrNothing, ContinueOnError};

/// eth0 attached, VRF 0 and a kernel-FIB VRF 5, next hops 1 (discard) and 2 (receive), and
/// route 192.0.2.0/24 -> 1.
fn domain() -> Domain<FakeDataplane> {
    let d = Domain::new(FakeDataplane::with_links(&[("eth0", 7)]));
    d.add_interface(AddInterface { name: name("eth0"), mode: XdpMode::Auto, vrf: 0 }).unwrap();
    d.add_vrf(5, VrfMode::KernelFib { table: 100 }).unwrap();
    d.add_nexthops(vec![
        NewNextHop { id: 1, spec: NextHopSpec::Discard },
        NewNextHop { id: 2, spec: NextHopSpec::Receive },
    ])
    .unwrap();
    d.add_routes(vec![route(0, "192.0.2.0/24", 1)]).unwrap();
    d
}

fn name(s: &str) -> InterfaceName {
    InterfaceName::parse("n", s).unwrap()
}

fn route(vrf: u32, prefix: &str, nexthop: u32) -> RouteSpec {
    RouteSpec { vrf, prefix: prefix.parse().unwrap(), nexthop }
}

fn encap(id: u32, interface: &str) -> NewNextHop {
    NewNextHop {
        id,
        spec: NextHopSpec::Encap { interface: name(interface), dst_mac: Mac([2, 0, 0, 0, 0, 2]), src_mac: None },
    }
}

fn ecmp(id: u32, members: &[u32]) -> NewNextHop {
    NewNextHop { id, spec: NextHopSpec::Ecmp { members: members.to_vec() } }
}

/// What a batch may change: listings, the fake kernel's maps and the generation.
fn observe(d: &Domain<FakeDataplane>) -> String {
    let (maps, fib4) = d.dataplane().snapshot(false);
    format!(
        "{} {:?} {:?} {maps} {fib4:?}",
        d.status().unwrap().generation,
        d.list_routes(None, None),
        d.list_nexthops().unwrap()
    )
}

/// The failed entries of a batch error as (index, kind, message), and its applied count and
/// generation.
fn entries(e: BatchError) -> (Vec<(usize, ErrorKind, String)>, usize, u64) {
    match e {
        BatchError::Entries { failed, applied, generation, .. } => {
            (failed.into_iter().map(|f| (f.index, f.error.kind(), f.error.to_string())).collect(), applied, generation)
        }
        BatchError::Batch(e) => panic!("a whole-batch failure where entries were expected: {e}"),
    }
}

/// A route batch with one failure of each kind at scattered indexes, and 4 valid routes.
fn mixed_routes() -> Vec<Entry<RouteSpec>> {
    vec![
        Ok(route(0, "198.51.100.0/24", 1)),
        Err(DomainError::invalid("routes[1].prefix", "host bits set")),
        Ok(route(0, "2001:db8:1::/48", 2)),
        Ok(route(3, "198.51.100.0/25", 1)),
        Ok(route(0, "198.51.100.128/25", 2)),
        Ok(route(0, "203.0.113.0/24", 9)),
        Ok(route(5, "203.0.113.0/24", 1)),
        Ok(route(0, "192.0.2.0/24", 2)),
        Ok(route(0, "2001:db8:1::/48", 1)),
        Ok(route(0, "203.0.113.128/25", 1)),
    ]
}

fn mixed_routes_failures() -> Vec<(usize, ErrorKind, String)> {
    vec![
        (1, ErrorKind::InvalidArgument, "routes[1].prefix: host bits set".into()),
        (3, ErrorKind::NotFound, "routes[3].vrf: vrf 3 not found".into()),
        (5, ErrorKind::NotFound, "routes[5].next_hop: next hop 9 not found".into()),
        (
            6,
            ErrorKind::FailedPrecondition,
            "routes[6].vrf: vrf 5 forwards by the kernel's FIB: add its routes with `ip route`".into(),
        ),
        (7, ErrorKind::AlreadyExists, "routes[7]: route 192.0.2.0/24 in vrf 0 already exists".into()),
        (8, ErrorKind::AlreadyExists, "routes[8]: route 2001:db8:1::/48 in vrf 0 already exists".into()),
    ]
}

#[test]
fn add_routes_each_all_or_nothing_every_failure_in_order_nothing_changed() {
    let d = domain();
    let before = observe(&d);
    let generation = d.status().unwrap().generation;
    let e = d.add_routes_each(mixed_routes(), OnExisting::Refuse, AllOrNothing).unwrap_err();
    assert_eq!(entries(e), (mixed_routes_failures(), 0, generation));
    assert_eq!(observe(&d), before);
}

#[test]
fn add_routes_all_or_nothing_single_error_is_first_entry_as_before() {
    let d = domain();
    let batch: Vec<RouteSpec> = mixed_routes().into_iter().filter_map(Result::ok).collect();
    // Without the decode failure, the unknown VRF (now at index 2) is the first.
    let e = d.add_routes(batch).unwrap_err();
    assert_eq!((e.kind(), e.to_string()), (ErrorKind::NotFound, "routes[2].vrf: vrf 3 not found".into()));
}

#[test]
fn add_routes_each_continue_on_error_applies_only_valid_entries() {
    let d = domain();
    let generation = d.status().unwrap().generation;
    let e = d.add_routes_each(mixed_routes(), OnExisting::Refuse, ContinueOnError).unwrap_err();
    assert_eq!(entries(e), (mixed_routes_failures(), 4, generation + 1));
    assert_eq!(d.status().unwrap().generation, generation + 1, "one batch: one generation");
    let want = vec![
        route(0, "192.0.2.0/24", 1),
        route(0, "198.51.100.0/24", 1),
        route(0, "198.51.100.128/25", 2),
        route(0, "203.0.113.128/25", 1),
        route(0, "2001:db8:1::/48", 2),
    ];
    assert_eq!(d.list_routes(None, None), want, "192.0.2.0/24 kept its next hop; the repeated IPv6 route its first");
    for (addr, prefix, nexthop) in
        [("198.51.100.200", "198.51.100.128/25", 2), ("203.0.113.200", "203.0.113.128/25", 1)]
    {
        assert_eq!(d.lookup_route(0, addr.parse().unwrap()).unwrap(), Some(route(0, prefix, nexthop)), "{addr}");
    }
    assert_eq!(d.lookup_route(0, "203.0.113.1".parse().unwrap()).unwrap(), None, "routes[5] not applied");
    let uses: Vec<u64> = d.list_nexthops().unwrap().iter().map(|n| n.routes).collect();
    assert_eq!(uses, vec![3, 2], "route counts of the applied entries only");
}

#[test]
fn add_routes_each_repeated_route_second_fails_even_when_first_failed() {
    let d = domain();
    let batch = vec![Ok(route(0, "198.51.100.0/24", 9)), Ok(route(0, "198.51.100.0/24", 1))];
    let (failed, applied, _) = entries(d.add_routes_each(batch, OnExisting::Replace, ContinueOnError).unwrap_err());
    let kinds: Vec<(usize, ErrorKind)> = failed.iter().map(|f| (f.0, f.1)).collect();
    assert_eq!(kinds, vec![(0, ErrorKind::NotFound), (1, ErrorKind::AlreadyExists)]);
    assert_eq!(applied, 0);
    assert_eq!(d.list_routes(None, None), vec![route(0, "192.0.2.0/24", 1)]);
}

#[test]
fn add_routes_each_continue_on_error_every_entry_failed_changes_nothing() {
    let d = domain();
    let before = observe(&d);
    let generation = d.status().unwrap().generation;
    let batch = vec![Ok(route(0, "198.51.100.0/24", 9)), Err(DomainError::invalid("routes[1].prefix", "bad"))];
    let (failed, applied, g) = entries(d.add_routes_each(batch, OnExisting::Refuse, ContinueOnError).unwrap_err());
    assert_eq!((failed.len(), applied, g), (2, 0, generation));
    assert_eq!(observe(&d), before);
}

#[test]
fn add_routes_each_continue_on_error_all_valid_ok_as_usual() {
    let d = domain();
    let generation = d.status().unwrap().generation;
    let batch = vec![Ok(route(0, "198.51.100.0/24", 2))];
    assert_eq!(d.add_routes_each(batch, OnExisting::Refuse, ContinueOnError).unwrap(), generation + 1);
}

/// The valid entries of a continue-on-error batch are one batch: a kernel write failing at any
/// point takes all of them back, and the error names the entry by its index in the request.
#[test]
fn add_routes_each_continue_on_error_kernel_failure_at_every_write_changes_nothing() {
    let errors = fail_at_every_write(domain, |d| {
        let batch = vec![
            Ok(route(0, "2001:db8:1::/48", 1)),
            Err(DomainError::invalid("routes[1].prefix", "bad")),
            Ok(route(0, "198.51.100.0/24", 9)),
            Ok(route(0, "2001:db8:2::/48", 2)),
            Ok(route(0, "198.51.100.0/24", 2)),
        ];
        applied_generation(d.add_routes_each(batch, OnExisting::Refuse, ContinueOnError))
    });
    assert!(errors[0].starts_with("routes[0]: dataplane:"), "{errors:?}");
    assert!(errors[1].starts_with("routes[3]: dataplane:"), "{errors:?}");
    assert!(errors[2..].iter().all(|e| e.starts_with("routes: dataplane:")), "{errors:?}");
}

/// A continue-on-error batch with failed entries as `fail_at_every_write` takes a batch: the
/// generation its valid entries made, or the failure of the batch as a whole.
fn applied_generation(r: Result<u64, BatchError>) -> Result<u64, DomainError> {
    match r {
        Err(BatchError::Entries { generation, applied, .. }) if applied > 0 => Ok(generation),
        Err(BatchError::Batch(e)) => Err(e),
        other => panic!("expected failed entries beside applied ones, or a whole-batch failure: {other:?}"),
    }
}

#[test]
fn delete_routes_each_unknown_and_repeated_reported_valid_deleted() {
    let d = domain();
    d.add_routes(vec![route(0, "198.51.100.0/24", 2), route(0, "2001:db8::/32", 2)]).unwrap();
    let p = |s: &str| s.parse().unwrap();
    let batch = || {
        vec![
            Ok((0, p("2001:db8::/32"))),
            Ok((0, p("203.0.113.0/24"))),
            Err(DomainError::invalid("routes[2].prefix", "bad")),
            Ok((0, p("2001:db8::/32"))),
            Ok((0, p("192.0.2.0/24"))),
        ]
    };
    let before = observe(&d);
    let all = d.delete_routes_each(batch(), AllOrNothing).unwrap_err();
    let (failed, _, _) = entries(all);
    let want = vec![
        (1, ErrorKind::NotFound, "routes[1]: route 203.0.113.0/24 in vrf 0 not found".to_string()),
        (2, ErrorKind::InvalidArgument, "routes[2].prefix: bad".into()),
        (3, ErrorKind::InvalidArgument, "routes[3]: route listed twice".into()),
    ];
    assert_eq!(failed, want);
    assert_eq!(observe(&d), before);
    let (failed, applied, _) = entries(d.delete_routes_each(batch(), ContinueOnError).unwrap_err());
    assert_eq!((failed, applied), (want, 2));
    assert_eq!(d.list_routes(None, None), vec![route(0, "198.51.100.0/24", 2)]);
    assert_eq!(d.lookup_route(0, "192.0.2.1".parse().unwrap()).unwrap(), None, "gone from the kernel too");
}

#[test]
fn add_nexthops_each_group_of_failed_member_fails_naming_it() {
    let d = domain();
    let batch = vec![Ok(encap(10, "eth9")), Ok(encap(11, "eth0")), Ok(ecmp(12, &[11, 10])), Ok(ecmp(13, &[11, 1]))];
    let (failed, applied, _) = entries(d.add_nexthops_each(batch, OnExisting::Refuse, ContinueOnError).unwrap_err());
    assert_eq!(
        failed.iter().map(|f| (f.0, f.1)).collect::<Vec<_>>(),
        [(0, ErrorKind::NotFound), (2, ErrorKind::NotFound)]
    );
    assert!(failed[0].2.starts_with("next_hops[0].encap.interface: interface eth9 not found"), "{failed:?}");
    assert_eq!(failed[1].2, "next_hops[2].ecmp.members[1]: next hop 10 not found: its entry next_hops[0] failed");
    assert_eq!(applied, 2);
    let ids: Vec<u32> = d.list_nexthops().unwrap().iter().map(|n| n.id).collect();
    assert_eq!(ids, vec![1, 2, 11, 13]);
}

#[test]
fn add_nexthops_each_all_or_nothing_every_failure_nothing_changed() {
    let d = domain();
    let before = observe(&d);
    let batch = vec![
        Ok(ecmp(10, &[99])),
        Err(DomainError::invalid("next_hops[1].kind", "one of encap, ecmp, discard, receive is required")),
        Ok(encap(1, "eth0")),
        Ok(encap(11, "eth0")),
        Ok(encap(11, "eth0")),
        Ok(ecmp(12, &[])),
    ];
    let (failed, applied, _) = entries(d.add_nexthops_each(batch, OnExisting::Refuse, AllOrNothing).unwrap_err());
    let got: Vec<(usize, &str)> = failed.iter().map(|f| (f.0, f.2.as_str())).collect();
    assert_eq!(
        got,
        vec![
            (0, "next_hops[0].ecmp.members[0]: next hop 99 not found"),
            (1, "next_hops[1].kind: one of encap, ecmp, discard, receive is required"),
            (2, "next_hops[2].id: next hop 1 already exists"),
            (4, "next_hops[4].id: next hop 11 already exists"),
            (5, "next_hops[5].ecmp.members: 1 to 16 members, not 0"),
        ]
    );
    assert_eq!(applied, 0);
    assert_eq!(observe(&d), before);
}

/// Replays and new next hops mixed: a failed new one is named by its index in the request (the
/// slots' errors used to count the new ones only).
#[test]
fn add_nexthops_each_replace_mixed_failures_named_by_request_index() {
    let d = domain();
    let batch = vec![
        Ok(NewNextHop { id: 1, spec: NextHopSpec::Receive }),
        Ok(ecmp(2, &[99])),
        Ok(encap(10, "eth9")),
        Ok(encap(11, "eth0")),
    ];
    let (failed, applied, _) = entries(d.add_nexthops_each(batch, OnExisting::Replace, ContinueOnError).unwrap_err());
    let got: Vec<(usize, ErrorKind)> = failed.iter().map(|f| (f.0, f.1)).collect();
    assert_eq!(got, vec![(1, ErrorKind::NotFound), (2, ErrorKind::NotFound)], "{failed:?}");
    assert!(failed[1].2.starts_with("next_hops[2].encap.interface:"), "{failed:?}");
    assert_eq!(applied, 2);
    let specs: Vec<(u32, NextHopSpec)> = d.list_nexthops().unwrap().into_iter().map(|n| (n.id, n.spec)).collect();
    assert_eq!(specs[0], (1, NextHopSpec::Receive));
    assert_eq!(specs[1], (2, NextHopSpec::Receive), "the failed replay left next hop 2 as it was");
    assert_eq!(specs[2].0, 11);
}

#[test]
fn add_nexthops_each_continue_on_error_kernel_failure_at_every_write_changes_nothing() {
    let errors = fail_at_every_write(domain, |d| {
        let batch = vec![Ok(encap(10, "eth0")), Ok(encap(11, "eth9")), Ok(ecmp(12, &[10, 1]))];
        applied_generation(d.add_nexthops_each(batch, OnExisting::Refuse, ContinueOnError))
    });
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[1].starts_with("next_hops[2]: dataplane:"), "{errors:?}");
}

/// Group 3 (of 1 and 4) carries a route: its delete fails, and so do its members', since the
/// group stays; next hop 5 goes.
fn with_group() -> Domain<FakeDataplane> {
    let d = domain();
    d.add_nexthops(vec![encap(4, "eth0"), NewNextHop { id: 5, spec: NextHopSpec::Discard }, ecmp(3, &[1, 4])]).unwrap();
    d.add_routes(vec![route(0, "198.51.100.0/24", 3)]).unwrap();
    d
}

#[test]
fn delete_nexthops_each_members_of_group_that_stays_fail_too() {
    let d = with_group();
    let before = observe(&d);
    let ids = [4, 3, 5, 9, 5];
    let all = entries(d.delete_nexthops_each(&ids, AllOrNothing).unwrap_err());
    assert_eq!(observe(&d), before);
    let (failed, applied, _) = entries(d.delete_nexthops_each(&ids, ContinueOnError).unwrap_err());
    assert_eq!(failed, all.0, "the same failures either way");
    let got: Vec<(usize, ErrorKind, &str)> = failed.iter().map(|f| (f.0, f.1, f.2.as_str())).collect();
    assert_eq!(
        got,
        vec![
            (
                0,
                ErrorKind::FailedPrecondition,
                "ids[0]: next hop 4 is a member of ECMP group 3 (whose delete, ids[1], failed)"
            ),
            (1, ErrorKind::FailedPrecondition, "ids[1]: next hop 3 is used by 1 route(s)"),
            (3, ErrorKind::NotFound, "ids[3]: next hop 9 not found"),
            (4, ErrorKind::InvalidArgument, "ids[4]: next hop 5 listed twice"),
        ]
    );
    assert_eq!(applied, 1);
    let ids: Vec<u32> = d.list_nexthops().unwrap().iter().map(|n| n.id).collect();
    assert_eq!(ids, vec![1, 2, 3, 4]);
}

#[test]
fn delete_nexthops_each_continue_on_error_kernel_failure_at_every_write_changes_nothing() {
    let errors =
        fail_at_every_write(with_group, |d| applied_generation(d.delete_nexthops_each(&[9, 5, 2], ContinueOnError)));
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].starts_with("ids[1]: dataplane:"), "{errors:?}");
    assert!(errors[1].starts_with("ids[2]: dataplane:"), "{errors:?}");
}
