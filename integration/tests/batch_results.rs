//! Per-entry results of batch writes against the real server and kernel (issue 20, item 2): a
//! batch's failed entries come back in order, with their codes, in the status details
//! (`BatchStatus`); ATOMICITY_ALL_OR_NOTHING changes nothing, ATOMICITY_CONTINUE_ON_ERROR puts
//! every other entry in the maps XDP reads (checked with LookupRoute). Rust, dpctl and Python
//! read the same details.

use std::{collections::BTreeSet, net::Ipv4Addr};

use controller_client::{batch_status, pb, Client};
use integration::{Netns, Server};
use tonic::Code;

/// Where the three bad entries of [`batch_of_1000`] are, and what each is.
const MALFORMED: usize = 17;
const UNKNOWN_NEXT_HOP: usize = 503;
const UNKNOWN_VRF: usize = 868;

/// Next hops 1 (discard) and 2 (receive).
async fn nexthops(client: &mut Client) {
    let next_hops = vec![
        pb::NextHop { id: 1, kind: Some(pb::next_hop::Kind::Discard(pb::Discard {})), ..Default::default() },
        pb::NextHop { id: 2, kind: Some(pb::next_hop::Kind::Receive(pb::Receive {})), ..Default::default() },
    ];
    client.routing.add_next_hops(pb::AddNextHopsRequest { next_hops, ..Default::default() }).await.unwrap();
}

/// 1,000 routes in documentation ranges: IPv4 /32s in 192.0.2.0/24, 198.51.100.0/24 and
/// 203.0.113.0/24, then IPv6 /64s in 2001:db8::/32; three of them bad.
fn batch_of_1000() -> Vec<pb::Route> {
    let bases = [Ipv4Addr::new(192, 0, 2, 0), Ipv4Addr::new(198, 51, 100, 0), Ipv4Addr::new(203, 0, 113, 0)];
    let mut routes: Vec<pb::Route> = (0..1000u32)
        .map(|i| {
            let prefix = match bases.get((i / 256) as usize) {
                Some(base) if i < 700 => format!("{}/32", Ipv4Addr::from(u32::from(*base) + i % 256)),
                _ => format!("2001:db8:0:{i:x}::/64"),
            };
            pb::Route { vrf: 0, prefix, next_hop: 1 + i % 2 }
        })
        .collect();
    routes[MALFORMED].prefix = "192.0.2.999/32".into();
    routes[UNKNOWN_NEXT_HOP].next_hop = 99;
    routes[UNKNOWN_VRF].vrf = 42;
    routes
}

async fn generation(client: &mut Client) -> u64 {
    client.system.get_status(pb::GetStatusRequest::default()).await.unwrap().into_inner().generation
}

async fn listed_routes(client: &mut Client) -> BTreeSet<(u32, String, u32)> {
    let mut s = client.routing.list_routes(pb::ListRoutesRequest::default()).await.unwrap().into_inner();
    let mut out = BTreeSet::new();
    while let Some(c) = s.message().await.unwrap() {
        out.extend(c.routes.into_iter().map(|r| (r.vrf, r.prefix, r.next_hop)));
    }
    out
}

/// The longest match for the route's own address, from the map XDP reads.
async fn lookup(client: &mut Client, route: &pb::Route) -> Option<(String, u32)> {
    let address = route.prefix.split('/').next().unwrap().to_owned();
    let r = client.routing.lookup_route(pb::LookupRouteRequest { vrf: 0, address }).await.unwrap().into_inner();
    r.route.filter(|_| r.found).map(|r| (r.prefix, r.next_hop))
}

/// The failed entries as (index, code, message).
fn failed(batch: &pb::BatchStatus) -> Vec<(u32, Code, String)> {
    batch.failed.iter().map(|e| (e.index, Code::from_i32(e.code), e.message.clone())).collect()
}

/// What the three bad entries of [`batch_of_1000`] report.
fn the_three() -> Vec<(u32, Code, String)> {
    vec![
        (MALFORMED as u32, Code::InvalidArgument, "routes[17].prefix: \"192.0.2.999/32\" is not an IP prefix (expected ADDR/LEN, e.g. 198.51.100.0/24 or 2001:db8::/32)".into()),
        (UNKNOWN_NEXT_HOP as u32, Code::NotFound, "routes[503].next_hop: next hop 99 not found".into()),
        (UNKNOWN_VRF as u32, Code::NotFound, "routes[868].vrf: vrf 42 not found".into()),
    ]
}

async fn add_routes(client: &mut Client, atomicity: pb::Atomicity) -> tonic::Status {
    let req = pb::AddRoutesRequest { routes: batch_of_1000(), replace: false, atomicity: atomicity.into() };
    client.routing.add_routes(req).await.expect_err("three entries are bad")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_routes_continue_on_error_1000_with_3_bad_reports_them_applies_997() {
    let ns = Netns::new("dpbr-").unwrap();
    let server = Server::start(&ns).unwrap();
    let mut client = server.client().await.unwrap();
    nexthops(&mut client).await;
    let before = generation(&mut client).await;

    let e = add_routes(&mut client, pb::Atomicity::ContinueOnError).await;
    assert_eq!(e.code(), Code::InvalidArgument, "the first failed entry's code: {e:?}");
    let want = format!("3 of 1000 entries failed, the others were applied; first: {}", the_three()[0].2);
    assert_eq!(e.message(), want);
    let batch = batch_status(&e).expect("a BatchStatus in the details");
    assert_eq!(failed(&batch), the_three());
    assert_eq!((batch.unlisted, batch.entries, batch.applied), (0, 1000, 997));
    assert_eq!(batch.generation, before + 1, "one batch, one generation");
    assert_eq!(generation(&mut client).await, before + 1);

    let bad = [MALFORMED, UNKNOWN_NEXT_HOP, UNKNOWN_VRF];
    let good: Vec<pb::Route> =
        batch_of_1000().into_iter().enumerate().filter(|(i, _)| !bad.contains(i)).map(|(_, r)| r).collect();
    let want: BTreeSet<(u32, String, u32)> = good.iter().map(|r| (r.vrf, r.prefix.clone(), r.next_hop)).collect();
    assert_eq!(listed_routes(&mut client).await, want);
    for r in &good {
        assert_eq!(lookup(&mut client, r).await, Some((r.prefix.clone(), r.next_hop)), "in the kernel: {r:?}");
    }
    let routes = batch_of_1000();
    assert_eq!(lookup(&mut client, &routes[UNKNOWN_NEXT_HOP]).await, None);
    let mut in_vrf_0 = routes[UNKNOWN_VRF].clone();
    in_vrf_0.vrf = 0;
    assert_eq!(lookup(&mut client, &in_vrf_0).await, None, "nor the unknown VRF's route anywhere");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_routes_all_or_nothing_same_batch_reports_same_3_changes_nothing() {
    let ns = Netns::new("dpbr-").unwrap();
    let server = Server::start(&ns).unwrap();
    let mut client = server.client().await.unwrap();
    nexthops(&mut client).await;
    let before = generation(&mut client).await;

    for atomicity in [pb::Atomicity::AllOrNothing, pb::Atomicity::Unspecified] {
        let e = add_routes(&mut client, atomicity).await;
        assert_eq!((e.code(), e.message()), (Code::InvalidArgument, the_three()[0].2.as_str()), "as before: {e:?}");
        let batch = batch_status(&e).expect("a BatchStatus in the details");
        assert_eq!(failed(&batch), the_three());
        assert_eq!((batch.unlisted, batch.entries, batch.applied, batch.generation), (0, 1000, 0, before));
    }
    let req = pb::AddRoutesRequest { routes: batch_of_1000(), replace: false, atomicity: 7 };
    let e = client.routing.add_routes(req).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "atomicity: unknown atomicity 7"));
    assert_eq!(generation(&mut client).await, before);
    assert!(listed_routes(&mut client).await.is_empty());
    assert_eq!(lookup(&mut client, &batch_of_1000()[0]).await, None);

    // Without the bad entries the same batch goes in whole; a batch all of whose entries are
    // fine returns OK under either atomicity.
    let good: Vec<pb::Route> = batch_of_1000()
        .into_iter()
        .enumerate()
        .filter(|(i, _)| ![MALFORMED, UNKNOWN_NEXT_HOP, UNKNOWN_VRF].contains(i))
        .map(|(_, r)| r)
        .collect();
    let req = pb::AddRoutesRequest { routes: good, replace: false, atomicity: pb::Atomicity::ContinueOnError.into() };
    let r = client.routing.add_routes(req).await.unwrap().into_inner();
    assert_eq!(r.generation, before + 1);
    assert_eq!(listed_routes(&mut client).await.len(), 997);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_hops_failed_entries_reported_group_of_failed_member_fails_others_applied() {
    use pb::next_hop::Kind;
    let ns = Netns::new("dpbr-").unwrap();
    let server = Server::start(&ns).unwrap();
    let mut client = server.client().await.unwrap();
    nexthops(&mut client).await;
    client
        .routing
        .add_routes(pb::AddRoutesRequest {
            routes: vec![pb::Route { vrf: 0, prefix: "198.51.100.0/24".into(), next_hop: 1 }],
            ..Default::default()
        })
        .await
        .unwrap();
    let nh = |id, kind| pb::NextHop { id, kind: Some(kind), ..Default::default() };
    let encap =
        pb::EncapNextHop { interface: "eth9".into(), dst_mac: "02:00:00:00:00:01".into(), ..Default::default() };
    let batch = vec![
        nh(10, Kind::Discard(pb::Discard {})),
        nh(11, Kind::Encap(encap)),
        nh(12, Kind::Ecmp(pb::EcmpNextHop { members: vec![10, 11] })),
        pb::NextHop { id: 13, kind: None, ..Default::default() },
        nh(14, Kind::Receive(pb::Receive {})),
    ];
    let ids = |c: &mut Client| {
        let mut c = c.clone();
        async move {
            let r = c.routing.list_next_hops(pb::ListNextHopsRequest {}).await.unwrap().into_inner();
            r.next_hops.iter().map(|n| n.id).collect::<Vec<u32>>()
        }
    };
    let want = vec![
        (
            1,
            Code::NotFound,
            "next_hops[1].encap.interface: interface eth9 not found among the dataplane's interfaces".into(),
        ),
        (
            2,
            Code::NotFound,
            "next_hops[2].ecmp.members[1]: next hop 11 not found: its entry next_hops[1] failed".into(),
        ),
        (3, Code::InvalidArgument, "next_hops[3]: kind: one of encap, ecmp, discard, receive is required".into()),
    ];
    let before = generation(&mut client).await;
    for (atomicity, applied, listed) in
        [(pb::Atomicity::AllOrNothing, 0, vec![1, 2]), (pb::Atomicity::ContinueOnError, 2, vec![1, 2, 10, 14])]
    {
        let req = pb::AddNextHopsRequest { next_hops: batch.clone(), replace: false, atomicity: atomicity.into() };
        let e = client.routing.add_next_hops(req).await.expect_err("three entries are bad");
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        let b = batch_status(&e).expect("a BatchStatus in the details");
        let failed: Vec<(u32, Code, String)> = failed(&b);
        assert_eq!(failed, want, "{atomicity:?}");
        assert_eq!((b.entries, b.applied), (5, applied), "{atomicity:?}");
        assert_eq!(ids(&mut client).await, listed, "{atomicity:?}");
    }
    assert_eq!(generation(&mut client).await, before + 1);

    // Next hop 1 carries a route, 77 does not exist: 14 goes, the others stay.
    let req = pb::DeleteNextHopsRequest { ids: vec![1, 14, 77], atomicity: pb::Atomicity::ContinueOnError.into() };
    let e = client.routing.delete_next_hops(req).await.expect_err("two entries are bad");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().starts_with("2 of 3 entries failed, the others were applied; first: ids[0]:"), "{e:?}");
    let b = batch_status(&e).unwrap();
    let codes: Vec<(u32, Code)> = b.failed.iter().map(|f| (f.index, Code::from_i32(f.code))).collect();
    assert_eq!(codes, vec![(0, Code::FailedPrecondition), (2, Code::NotFound)]);
    assert_eq!(ids(&mut client).await, vec![1, 2, 10]);
}

#[test]
fn dpctl_route_add_file_continue_on_error_prints_failed_entries_exit_1() {
    let ns = Netns::new("dpbr-").unwrap();
    let server = Server::start(&ns).unwrap();
    let out = server.dpctl(&["nexthop", "add", "1", "--discard"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let file = std::env::temp_dir().join(integration::unique("dpbr"));
    std::fs::write(&file, "192.0.2.0/24 1\n198.51.100.0/24 9\n203.0.113.0/24 1\n2001:db8::/33 1 42\n").unwrap();
    let path = file.to_str().unwrap();
    let out = server.dpctl(&["route", "add", "--file", path, "--continue-on-error"]);
    let _ = std::fs::remove_file(&file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        vec![
            "error: NOT_FOUND: 2 of 4 entries failed, the others were applied; first: routes[1].next_hop: next hop 9 not found",
            "  entry 1: NOT_FOUND: routes[1].next_hop: next hop 9 not found",
            "  entry 3: NOT_FOUND: routes[3].vrf: vrf 42 not found",
            "2 of 4 entries failed, 2 applied, generation 2",
        ]
    );
    let out = server.dpctl(&["route", "list"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("192.0.2.0/24") && listed.contains("203.0.113.0/24"), "{listed}");
    assert!(!listed.contains("198.51.100.0/24"), "{listed}");
}

/// Python (gRPC C-core) reads the same details from the trailer, at its largest: more failed
/// entries than listed.
#[test]
fn python_client_continue_on_error_reads_batch_status_from_trailer() {
    let ns = Netns::new("dpbr-").unwrap();
    let server = Server::start(&ns).unwrap();
    let out = server.dpctl(&["nexthop", "add", "1", "--discard"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/python/batch_results.py");
    let out = std::process::Command::new("python3")
        .args([script, server.socket.to_str().unwrap(), "1"])
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["code"], "NOT_FOUND", "{v}");
    assert!(v["message"].as_str().unwrap().starts_with("134 of 400 entries failed, the others were applied"), "{v}");
    let failed = v["failed"].as_array().expect("a BatchStatus in the trailer");
    assert_eq!(failed.len(), 64, "{v}");
    assert_eq!(failed[1], serde_json::json!([3, 5, "routes[3].next_hop: next hop 999999 not found"]));
    assert_eq!(
        (v["unlisted"].as_u64(), v["entries"].as_u64(), v["applied"].as_u64()),
        (Some(70), Some(400), Some(266))
    );
}

/// grpcurl (no proto files: reflection) shows the details decoded, `BatchStatus` and all.
#[test]
fn grpcurl_add_routes_continue_on_error_shows_batch_status_details() {
    let ns = Netns::new("dpbr-").unwrap();
    let server = Server::start(&ns).unwrap();
    let out = server.dpctl(&["nexthop", "add", "1", "--discard"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let body = r#"{"routes": [{"prefix": "192.0.2.0/24", "next_hop": 1}, {"prefix": "198.51.100.0/24", "next_hop": 9}],
                   "atomicity": "ATOMICITY_CONTINUE_ON_ERROR"}"#;
    let out = std::process::Command::new("grpcurl")
        .args(["-plaintext", "-unix", "-authority", "localhost", "-d", body])
        .arg(server.socket.to_str().unwrap())
        .arg("dataplane.v1.Routing/AddRoutes")
        .output()
        .expect("grpcurl is installed by scripts/bootstrap.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("Code: NotFound"), "{stderr}");
    let want = concat!(
        r#"{"@type":"type.googleapis.com/dataplane.v1.BatchStatus","applied":1,"entries":2,"#,
        r#""failed":[{"index":1,"code":5,"message":"routes[1].next_hop: next hop 9 not found"}],"generation":"2"}"#
    );
    assert!(stderr.contains(want), "{stderr}");
}
