//! Policies through the real kernel path: the XDP program's verdicts (BPF_PROG_TEST_RUN of
//! `dp_xdp_ingress` over the server's pinned maps) for rule order, every match field, port-range
//! edges, both families, default actions, DENY and PUNT with their counters; atomic replacement
//! under a stream of test runs; real TCP across namespaces; and bad input.

use std::net::IpAddr;

use controller_client::{pb, Client};
use integration::{l4_frame, Harness, Netns, Server, Topology};
use tonic::Code;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A rule with only priority and action; callers set the match fields.
fn rule(priority: u32, action: pb::Action) -> pb::Rule {
    pb::Rule { priority, action: action as i32, ..Default::default() }
}

fn ports(first: u32, last: u32) -> Option<pb::PortRange> {
    Some(pb::PortRange { first, last })
}

/// The server forwards everything out of its loopback, so a test run answers REDIRECT for allowed
/// packets, DROP for denied ones and PASS for punted ones.
async fn setup(prefix: &str) -> (Netns, Server, Client) {
    integration::server_forwarding_via_lo(prefix).await.unwrap()
}

async fn put(c: &mut Client, name: &str, rules: Vec<pb::Rule>) -> Result<u64, tonic::Status> {
    c.policy.put_policy(pb::PutPolicyRequest { name: name.into(), rules }).await.map(|r| r.into_inner().generation)
}

async fn attach(c: &mut Client, name: &str, default: pb::Action) {
    c.policy
        .attach_policy(pb::AttachPolicyRequest {
            policy: name.into(),
            interface: "lo".into(),
            direction: pb::Direction::Ingress as i32,
            default_action: default as i32,
        })
        .await
        .unwrap();
}

async fn policy(c: &mut Client, name: &str) -> pb::PolicyInfo {
    c.policy.list_policies(pb::ListPoliciesRequest { name: name.into() }).await.unwrap().into_inner().policies.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_rules_first_match_each_field_edges_default_and_counters_in_xdp() {
    let (_ns, server, mut c) = setup("dppo-").await;
    use pb::Action::{Allow, Deny, Punt};
    let mut rules = Vec::new();
    // 10: TCP to 198.51.100.0/24 ports 80-89 -> DENY, but 5 (earlier) allows port 85 from one host.
    let mut r = rule(10, Deny);
    r.dst_prefix = "198.51.100.0/24".into();
    r.protocol = Some(6);
    r.dst_ports = ports(80, 89);
    rules.push(r);
    let mut r = rule(5, Allow);
    r.src_prefix = "192.0.2.99/32".into();
    r.protocol = Some(6);
    r.dst_ports = ports(85, 85);
    rules.push(r);
    // 20: UDP source ports 1000-1999 -> PUNT.
    let mut r = rule(20, Punt);
    r.protocol = Some(17);
    r.src_ports = ports(1000, 1999);
    rules.push(r);
    // 30: ICMP echo request (type 8 code 0) -> DENY; 31: ICMPv6 echo request (128) -> DENY.
    let mut r = rule(30, Deny);
    r.protocol = Some(1);
    r.icmp_type = Some(8);
    r.icmp_code = Some(0);
    rules.push(r);
    let mut r = rule(31, Deny);
    r.protocol = Some(58);
    r.icmp_type = Some(128);
    rules.push(r);
    // 40: TCP SYN-only to port 22 -> DENY (new SSH connections), established ones pass.
    let mut r = rule(40, Deny);
    r.protocol = Some(6);
    r.dst_ports = ports(22, 22);
    r.tcp_flags = Some(pb::TcpFlags { mask: 0x12, value: 0x02 });
    rules.push(r);
    // 50: anything from 2001:db8:bad::/48 -> DENY.
    let mut r = rule(50, Deny);
    r.src_prefix = "2001:db8:bad::/48".into();
    rules.push(r);
    put(&mut c, "edge", rules).await.unwrap();
    attach(&mut c, "edge", Allow).await;

    let xdp = Harness::over_pins(&server.bpffs).expect("load dp_xdp_ingress over the server\'s pins");
    let host = ip("192.0.2.10");
    let cases: &[(&str, Vec<u8>, u32)] = &[
        ("tcp 198.51.100.7:80 denied (range start)", l4_frame(host, ip("198.51.100.7"), 6, 40000, 80, 0x10), XDP_DROP),
        ("tcp :89 denied (range end)", l4_frame(host, ip("198.51.100.7"), 6, 40000, 89, 0x10), XDP_DROP),
        ("tcp :79 allowed (below range)", l4_frame(host, ip("198.51.100.7"), 6, 40000, 79, 0x10), XDP_REDIRECT),
        ("tcp :90 allowed (above range)", l4_frame(host, ip("198.51.100.7"), 6, 40000, 90, 0x10), XDP_REDIRECT),
        (
            "tcp :85 from .99 allowed by the earlier rule",
            l4_frame(ip("192.0.2.99"), ip("198.51.100.7"), 6, 40000, 85, 0x10),
            XDP_REDIRECT,
        ),
        ("tcp :85 from .98 denied", l4_frame(ip("192.0.2.98"), ip("198.51.100.7"), 6, 40000, 85, 0x10), XDP_DROP),
        (
            "tcp :80 to 198.51.101.7 allowed (outside dst prefix)",
            l4_frame(host, ip("198.51.101.7"), 6, 40000, 80, 0x10),
            XDP_REDIRECT,
        ),
        ("udp :80 allowed (protocol)", l4_frame(host, ip("198.51.100.7"), 17, 40000, 80, 0), XDP_REDIRECT),
        ("udp sport 1000 punted", l4_frame(host, ip("203.0.113.1"), 17, 1000, 53, 0), XDP_PASS),
        ("udp sport 1999 punted", l4_frame(host, ip("203.0.113.1"), 17, 1999, 53, 0), XDP_PASS),
        ("udp sport 2000 allowed", l4_frame(host, ip("203.0.113.1"), 17, 2000, 53, 0), XDP_REDIRECT),
        ("udp v6 sport 1500 punted", l4_frame(host, ip("2001:db8:2::1"), 17, 1500, 53, 0), XDP_PASS),
        ("icmp echo request denied", l4_frame(host, ip("203.0.113.1"), 1, 8, 0, 0), XDP_DROP),
        ("icmp echo reply allowed", l4_frame(host, ip("203.0.113.1"), 1, 0, 0, 0), XDP_REDIRECT),
        ("icmpv6 echo request denied", l4_frame(host, ip("2001:db8:2::1"), 58, 128, 0, 0), XDP_DROP),
        ("icmpv6 echo reply allowed", l4_frame(host, ip("2001:db8:2::1"), 58, 129, 0, 0), XDP_REDIRECT),
        ("tcp syn to 22 denied", l4_frame(host, ip("203.0.113.1"), 6, 40000, 22, 0x02), XDP_DROP),
        (
            "tcp syn+ack from server side to 22 allowed",
            l4_frame(host, ip("203.0.113.1"), 6, 40000, 22, 0x12),
            XDP_REDIRECT,
        ),
        ("tcp ack to 22 allowed", l4_frame(host, ip("203.0.113.1"), 6, 40000, 22, 0x10), XDP_REDIRECT),
        (
            "v6 from 2001:db8:bad::5 denied",
            l4_frame(ip("2001:db8:bad::5"), ip("2001:db8:2::1"), 17, 5000, 53, 0),
            XDP_DROP,
        ),
        (
            "v6 from 2001:db8:bae::5 allowed",
            l4_frame(ip("2001:db8:bae::5"), ip("2001:db8:2::1"), 17, 5000, 53, 0),
            XDP_REDIRECT,
        ),
        ("v4 never matches the v6 source rule", l4_frame(host, ip("203.0.113.1"), 17, 5000, 53, 0), XDP_REDIRECT),
    ];
    let mut wrong = Vec::new();
    for (what, frame, want) in cases {
        let (got, _) = xdp.run(frame);
        if got != *want {
            wrong.push(format!("{what}: verdict {got}, want {want}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // Counters: by rule, in priority order (5, 10, 20, 30, 31, 40, 50).
    let p = policy(&mut c, "edge").await;
    let hits: Vec<(u32, u64)> = p.rules.iter().map(|r| (r.priority, r.packets)).collect();
    assert_eq!(hits, [(5, 1), (10, 3), (20, 3), (30, 1), (31, 1), (40, 1), (50, 1)], "{p:?}");
    assert_eq!(p.rules[1].bytes, 3 * 54, "three 54-byte TCP frames: {p:?}");
    let lo = c.interfaces.list_interfaces(pb::ListInterfacesRequest { name: "lo".into() }).await.unwrap().into_inner();
    let reasons = &lo.interfaces[0].counters.as_ref().unwrap().reasons;
    let count = |n: &str| reasons.iter().find(|r| r.reason == n).map(|r| r.packets).unwrap();
    assert_eq!((count("drop_policy"), count("pass_policy_punt")), (7, 3), "{reasons:?}");

    // Default DENY: what no rule matches is dropped and counted apart.
    attach(&mut c, "edge", Deny).await;
    let (got, _) = xdp.run(&l4_frame(host, ip("203.0.113.1"), 17, 5000, 53, 0));
    assert_eq!(got, XDP_DROP);
    let lo = c.interfaces.list_interfaces(pb::ListInterfacesRequest { name: "lo".into() }).await.unwrap().into_inner();
    let reasons = &lo.interfaces[0].counters.as_ref().unwrap().reasons;
    assert_eq!(reasons.iter().find(|r| r.reason == "drop_policy_default").unwrap().packets, 1);

    // Detach: everything forwards again.
    c.policy
        .detach_policy(pb::DetachPolicyRequest { interface: "lo".into(), direction: pb::Direction::Ingress as i32 })
        .await
        .unwrap();
    let (got, _) = xdp.run(&l4_frame(host, ip("198.51.100.7"), 6, 40000, 80, 0x10));
    assert_eq!(got, XDP_REDIRECT);

    // EGRESS: the same rules judge what XDP forwards out of the interface (the next hop leaves
    // through `lo` too).
    c.policy
        .attach_policy(pb::AttachPolicyRequest {
            policy: "edge".into(),
            interface: "lo".into(),
            direction: pb::Direction::Egress as i32,
            default_action: Allow as i32,
        })
        .await
        .unwrap();
    assert_eq!(xdp.run(&l4_frame(host, ip("198.51.100.7"), 6, 40000, 80, 0x10)).0, XDP_DROP, "egress deny");
    assert_eq!(xdp.run(&l4_frame(host, ip("198.51.100.7"), 6, 40000, 90, 0x10)).0, XDP_REDIRECT, "egress allow");
}

/// Two policies whose mix would produce a verdict neither gives: A punts dst 203.0.113.0/24 with
/// dst ports 1-100 and allows the rest; B punts dst 198.51.100.0/24 with ports 200-300 and denies
/// the rest. A packet to 203.0.113.5:250 is ALLOW under A and DENY under B; only a packet that
/// saw A's address classes with B's port classes (or the reverse) would be punted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_replaced_thousands_of_times_under_test_runs_never_mixes() {
    let (_ns, server, mut c) = setup("dppr-").await;
    use pb::Action::{Allow, Deny, Punt};
    let make = |dst: &str, first: u32, last: u32, rest: pb::Action| {
        let mut r0 = rule(1, Punt);
        r0.dst_prefix = dst.into();
        r0.protocol = Some(17);
        r0.dst_ports = ports(first, last);
        // Padding rules make the tables larger than one word so a mix has room to show.
        let mut v = vec![r0];
        for i in 0..100 {
            let mut r = rule(10 + i, Deny);
            r.protocol = Some(6);
            r.dst_ports = ports(10_000 + i, 10_000 + i);
            v.push(r);
        }
        v.push(rule(1000, rest));
        v
    };
    let a = make("203.0.113.0/24", 1, 100, Allow);
    let b = make("198.51.100.0/24", 200, 300, Deny);
    put(&mut c, "flip", a.clone()).await.unwrap();
    attach(&mut c, "flip", Allow).await;

    let bpffs = server.bpffs.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let runner = std::thread::spawn(move || {
        let xdp = Harness::over_pins(&bpffs).expect("load dp_xdp_ingress over the server\'s pins");
        let frame = l4_frame(ip("192.0.2.10"), ip("203.0.113.5"), 17, 4000, 250, 0);
        let (mut allow, mut deny, mut other) = (0u64, 0u64, Vec::new());
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            match xdp.run(&frame).0 {
                XDP_REDIRECT => allow += 1,
                XDP_DROP => deny += 1,
                v => other.push(v),
            }
        }
        (allow, deny, other)
    });
    for i in 0..2000 {
        put(&mut c, "flip", if i % 2 == 0 { b.clone() } else { a.clone() }).await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (allow, deny, other) = runner.join().unwrap();
    assert!(
        other.is_empty(),
        "{} verdicts belonged to neither policy: {:?}",
        other.len(),
        &other[..other.len().min(10)]
    );
    assert!(allow > 0 && deny > 0, "both policies were seen: allow {allow}, deny {deny}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_blocks_one_tcp_port_allows_another_across_namespaces_detach_restores() {
    let topo = Topology::routed().unwrap();
    let server = Server::start(&topo.rtr).unwrap();
    let mut c = server.client().await.unwrap();
    integration::program_router(&topo, &mut c).await.unwrap();

    let mut deny = rule(10, pb::Action::Deny);
    deny.protocol = Some(6);
    deny.dst_ports = ports(5202, 5202);
    let mut allow = rule(20, pb::Action::Allow);
    allow.protocol = Some(6);
    allow.dst_ports = ports(5201, 5201);
    put(&mut c, "web", vec![deny, allow]).await.unwrap();
    c.policy
        .attach_policy(pb::AttachPolicyRequest {
            policy: "web".into(),
            interface: topo.r0.clone(),
            direction: pb::Direction::Ingress as i32,
            default_action: pb::Action::Allow as i32,
        })
        .await
        .unwrap();

    let iperf = |port: &str| -> Result<u64, String> {
        let mut srv = topo.h2.command("iperf3", &["-s", "-1", "-B", integration::H2_ADDR, "-p", port]).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let out = topo
            .h1
            .command(
                "timeout",
                &["5", "iperf3", "-c", integration::H2_ADDR, "-p", port, "-t", "1", "-J", "--connect-timeout", "1500"],
            )
            .output()
            .unwrap();
        let _ = srv.kill();
        let _ = srv.wait();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        v["end"]["sum_received"]["bytes"].as_u64().filter(|b| *b > 0).ok_or_else(|| format!("{v}"))
    };
    assert!(iperf("5201").unwrap() > 100_000, "port 5201 allowed");
    assert!(iperf("5202").is_err(), "port 5202 must be blocked");
    let p = policy(&mut c, "web").await;
    assert!(p.rules[0].packets >= 1, "deny rule counted the blocked SYNs: {p:?}");
    assert!(p.rules[1].packets > 50, "allow rule counted the transfer: {p:?}");

    c.policy
        .detach_policy(pb::DetachPolicyRequest { interface: topo.r0.clone(), direction: pb::Direction::Ingress as i32 })
        .await
        .unwrap();
    assert!(iperf("5202").unwrap() > 100_000, "detach restores port 5202");

    // EGRESS on what the router itself sends (TC egress): its pings to h2 stop, then resume.
    topo.rtr.exec("ping", &["-c", "1", "-W", "2", integration::H2_ADDR]).unwrap();
    let mut no_ping = rule(1, pb::Action::Deny);
    no_ping.protocol = Some(1);
    no_ping.icmp_type = Some(8);
    put(&mut c, "no-ping", vec![no_ping]).await.unwrap();
    let att = pb::AttachPolicyRequest {
        policy: "no-ping".into(),
        interface: topo.r1.clone(),
        direction: pb::Direction::Egress as i32,
        default_action: pb::Action::Allow as i32,
    };
    c.policy.attach_policy(att).await.unwrap();
    assert!(
        topo.rtr.exec("ping", &["-c", "2", "-i", "0.2", "-W", "1", integration::H2_ADDR]).is_err(),
        "egress policy must stop the router's pings"
    );
    assert!(policy(&mut c, "no-ping").await.rules[0].packets >= 2, "the dropped echo requests were counted");
    c.policy
        .detach_policy(pb::DetachPolicyRequest { interface: topo.r1.clone(), direction: pb::Direction::Egress as i32 })
        .await
        .unwrap();
    topo.rtr.exec("ping", &["-c", "1", "-W", "2", integration::H2_ADDR]).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_bad_input_precise_status_changes_nothing() {
    let (_ns, _server, mut c) = setup("dppb-").await;
    let mut ok = rule(1, pb::Action::Deny);
    ok.protocol = Some(6);
    ok.dst_ports = ports(80, 80);
    let g0 = put(&mut c, "p", vec![ok.clone()]).await.unwrap();

    let mut dup = rule(1, pb::Action::Allow);
    dup.protocol = Some(17);
    let mut inverted = rule(2, pb::Action::Allow);
    inverted.protocol = Some(6);
    inverted.dst_ports = ports(90, 80);
    let mut host_bits = rule(2, pb::Action::Allow);
    host_bits.src_prefix = "198.51.100.1/24".into();
    let mut no_proto = rule(2, pb::Action::Allow);
    no_proto.dst_ports = ports(80, 80);
    let mixed = pb::Rule {
        src_prefix: "198.51.100.0/24".into(),
        dst_prefix: "2001:db8::/32".into(),
        ..rule(2, pb::Action::Allow)
    };
    let cases: Vec<(Vec<pb::Rule>, Code, &str)> = vec![
        (vec![ok.clone(), dup], Code::InvalidArgument, "rules[1].priority"),
        (vec![ok.clone(), inverted], Code::InvalidArgument, "rules[1].dst_ports"),
        (vec![ok.clone(), host_bits], Code::InvalidArgument, "rules[1].src_prefix"),
        (vec![ok.clone(), no_proto], Code::InvalidArgument, "rules[1].dst_ports"),
        (vec![ok.clone(), mixed], Code::InvalidArgument, "rules[1]"),
        (vec![rule(1, pb::Action::Unspecified)], Code::InvalidArgument, "rules[0].action"),
        ((0..16385).map(|i| rule(i, pb::Action::Allow)).collect(), Code::ResourceExhausted, "rules"),
    ];
    for (rules, code, field) in cases {
        let e = put(&mut c, "p", rules).await.unwrap_err();
        assert_eq!(e.code(), code, "{e:?}");
        assert!(e.message().starts_with(field), "message names {field}: {}", e.message());
    }
    let e = c
        .policy
        .attach_policy(pb::AttachPolicyRequest {
            policy: "p".into(),
            interface: "ghost0".into(),
            direction: pb::Direction::Ingress as i32,
            default_action: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().starts_with("interface"), "{}", e.message());

    // Nothing changed: same rules, same generation.
    let p = policy(&mut c, "p").await;
    assert_eq!(p.rules.len(), 1);
    assert_eq!(p.rules[0].dst_ports, ports(80, 80));
    assert!(p.attachments.is_empty());
    let status = c.system.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.generation, g0);

    // Attached policies cannot go.
    attach(&mut c, "p", pb::Action::Allow).await;
    let e = c.policy.delete_policy(pb::DeletePolicyRequest { name: "p".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
}

/// What an earlier build left: interface entries without the flags this build's programs read
/// (here: the ingress-policy flag cleared in the pinned `INTERFACES` entry of `lo`). Before the
/// links switch to new programs (`UpgradePrograms`), the entries are rewritten from the maps they
/// mirror, so the policy is enforced by the new programs from their first packet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_entry_without_flag_from_earlier_build_refreshed_before_program_switch() {
    use aya::maps::{Array, Map, MapData};
    use dataplane_common::{route::IFACE_POLICY_IN, InterfaceConfig};
    const XDP_DROP: u32 = 1;
    let (ns, server, mut c) = setup("dppo-").await;
    let mut r = rule(10, pb::Action::Deny);
    r.protocol = Some(17);
    r.dst_ports = ports(53, 53);
    put(&mut c, "edge", vec![r]).await.unwrap();
    attach(&mut c, "edge", pb::Action::Allow).await;
    let denied = l4_frame(ip("192.0.2.10"), ip("198.51.100.1"), 17, 4000, 53, 0);
    let xdp = Harness::over_pins(&server.bpffs).expect("load dp_xdp_ingress over the server\'s pins");
    assert_eq!(xdp.run(&denied).0, XDP_DROP);

    let lo = ns.exec("cat", &["/sys/class/net/lo/ifindex"]).unwrap().trim().parse::<u32>().unwrap();
    let pin = server.bpffs.join("v1/maps/INTERFACES");
    let mut entries: Array<MapData, InterfaceConfig> =
        Array::try_from(Map::Array(MapData::from_pin(&pin).unwrap())).unwrap();
    let entry = entries.get(&lo, 0).unwrap();
    assert_ne!(entry.flags & IFACE_POLICY_IN, 0, "the server sets the flag with the attachment");
    entries.set(lo, InterfaceConfig { flags: entry.flags & !IFACE_POLICY_IN, ..entry }, 0).unwrap();
    assert_eq!(xdp.run(&denied).0, 4, "without the flag the policy is skipped: the flag is what the program reads");

    c.system.upgrade_programs(pb::UpgradeProgramsRequest::default()).await.unwrap();
    assert_ne!(entries.get(&lo, 0).unwrap().flags & IFACE_POLICY_IN, 0, "refreshed before the switch");
    assert_eq!(xdp.run(&denied).0, XDP_DROP);
    assert_eq!(xdp.run(&l4_frame(ip("192.0.2.10"), ip("198.51.100.1"), 17, 4000, 54, 0)).0, 4);
}
