//! Netlink: typed events for `ip link/addr/route/neigh` in the server's namespace (in order, with
//! fields, filters, snapshot), gateway next hops resolved from the kernel's neighbour table and
//! kept current, owned links that vanish, and kernel-FIB VRFs forwarding by `ip route` alone.

use std::time::{Duration, Instant};

use controller_client::{pb, Client};
use integration::*;
use pb::netlink_event::Detail;

/// A netlink event subscription.
struct Watch(tonic::Streaming<pb::NetlinkEventMessage>);

impl Watch {
    async fn open(client: &mut Client, kinds: &[pb::NetlinkEventKind], interface: &str, snapshot: bool) -> Self {
        let req = pb::SubscribeNetlinkEventsRequest {
            kinds: kinds.iter().map(|k| *k as i32).collect(),
            interface: interface.into(),
            snapshot,
        };
        Self(client.events.subscribe_netlink_events(req).await.unwrap().into_inner())
    }

    /// Messages until one satisfies `done` (included), failing after 5 s.
    async fn until(
        &mut self,
        done: impl Fn(&pb::netlink_event_message::Kind) -> bool,
    ) -> Vec<pb::netlink_event_message::Kind> {
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = match tokio::time::timeout(left, self.0.message()).await {
                Ok(m) => m.unwrap().expect("stream ended"),
                Err(_) => panic!("no matching event within 5 s; seen: {seen:#?}"),
            };
            let k = m.kind.unwrap();
            let stop = done(&k);
            seen.push(k);
            if stop {
                return seen;
            }
        }
    }
}

fn events(msgs: &[pb::netlink_event_message::Kind]) -> Vec<&pb::NetlinkEvent> {
    msgs.iter()
        .filter_map(|m| match m {
            pb::netlink_event_message::Kind::Event(e) => Some(e),
            _ => None,
        })
        .collect()
}

fn action(e: &pb::NetlinkEvent) -> pb::EventAction {
    pb::EventAction::try_from(e.action).unwrap()
}

/// A short human form of an event, to compare sequences: "link added", "address removed
/// 192.0.2.5/24", "neighbour changed 192.0.2.9 02:..:09 permanent", ...
fn short(e: &pb::NetlinkEvent) -> String {
    let a = match action(e) {
        pb::EventAction::Added => "added",
        pb::EventAction::Removed => "removed",
        pb::EventAction::Changed => "changed",
        pb::EventAction::Unspecified => "?",
    };
    match e.detail.as_ref().unwrap() {
        Detail::Link(l) => format!(
            "link {a}{}",
            if l.changes.is_empty() { String::new() } else { format!(" {}", l.changes.join(",")) }
        ),
        Detail::Address(x) => format!("address {a} {}/{}", x.address, x.prefix_len),
        Detail::Route(r) => format!("route {a} {} via {}", r.destination, r.gateway),
        Detail::Neighbour(n) => format!("neighbour {a} {} {} {}", n.address, n.mac, n.state),
    }
}

/// Whether `want` appears in `have` in order (other entries may sit between).
fn in_order(have: &[String], want: &[&str]) -> bool {
    let mut it = have.iter();
    want.iter().all(|w| it.any(|h| h == w))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netlink_events_ip_commands_seen_in_order_with_fields_and_filters() {
    let ns = Netns::with_ipv6("dpnl-").unwrap();
    let server = Server::start(&ns).unwrap();
    let mut client = server.client().await.unwrap();
    let mut all = Watch::open(&mut client, &[], "", false).await;
    let dev = unique("nla");
    let peer = unique("nlb");
    let mut addrs_only = Watch::open(&mut client, &[pb::NetlinkEventKind::Address], &dev, false).await;

    let ip = |args: &[&str]| ns.exec("ip", args).unwrap();
    ip(&["link", "add", &dev, "type", "veth", "peer", "name", &peer]);
    ip(&["link", "set", &peer, "up"]);
    ip(&["link", "set", &dev, "up"]);
    ip(&["link", "set", &dev, "mtu", "1400"]);
    ip(&["link", "set", &dev, "address", "02:00:00:00:0a:01"]);
    ip(&["addr", "add", "192.0.2.5/24", "dev", &dev]);
    ip(&["-6", "addr", "add", "2001:db8:5::1/64", "dev", &dev, "nodad"]);
    ip(&["route", "add", "198.51.100.0/24", "via", "192.0.2.9", "dev", &dev]);
    ip(&["-6", "route", "add", "2001:db8:6::/64", "via", "2001:db8:5::9", "dev", &dev]);
    ip(&["neigh", "replace", "192.0.2.9", "lladdr", "02:00:00:00:0a:09", "dev", &dev]);
    ip(&["neigh", "replace", "192.0.2.9", "lladdr", "02:00:00:00:0a:10", "dev", &dev]);
    ip(&["-6", "neigh", "replace", "2001:db8:5::9", "lladdr", "02:00:00:00:0a:09", "dev", &dev]);
    ip(&["neigh", "del", "192.0.2.9", "dev", &dev]);
    ip(&["route", "del", "198.51.100.0/24", "via", "192.0.2.9", "dev", &dev]);
    ip(&["addr", "del", "192.0.2.5/24", "dev", &dev]);
    ip(&["link", "set", &dev, "down"]);
    ip(&["link", "del", &dev]);

    let msgs = all
        .until(|k| {
            matches!(k, pb::netlink_event_message::Kind::Event(e)
            if e.interface == dev && action(e) == pb::EventAction::Removed && matches!(e.detail, Some(Detail::Link(_))))
        })
        .await;
    let evs = events(&msgs);
    // One sequence, strictly increasing, nothing lost.
    assert!(evs.windows(2).all(|w| w[1].seq > w[0].seq), "seqs: {:?}", evs.iter().map(|e| e.seq).collect::<Vec<_>>());
    assert!(!msgs.iter().any(|m| matches!(m, pb::netlink_event_message::Kind::Lagged(_))));
    let mine: Vec<String> = evs.iter().filter(|e| e.interface == dev).map(|e| short(e)).collect();
    let want = [
        "link added",
        "link changed up",
        "link changed mtu",
        "link changed mac",
        "address added 192.0.2.5/24",
        "address added 2001:db8:5::1/64",
        "route added 198.51.100.0/24 via 192.0.2.9",
        "route added 2001:db8:6::/64 via 2001:db8:5::9",
        "neighbour added 192.0.2.9 02:00:00:00:0a:09 permanent",
        "neighbour changed 192.0.2.9 02:00:00:00:0a:10 permanent",
        "neighbour added 2001:db8:5::9 02:00:00:00:0a:09 permanent",
        // `ip neigh del` marks the entry failed (lladdr gone), then the kernel drops it.
        "neighbour removed 192.0.2.9  failed",
        "route removed 198.51.100.0/24 via 192.0.2.9",
        "address removed 192.0.2.5/24",
        "link changed down,carrier_down",
        "link removed",
    ];
    assert!(in_order(&mine, &want), "events of {dev}:\n{mine:#?}");

    // Fields of a few, checked whole.
    let link_mtu = evs.iter().find(|e| e.interface == dev && short(e) == "link changed mtu").unwrap();
    match link_mtu.detail.as_ref().unwrap() {
        Detail::Link(l) => assert!(l.mtu == 1400 && l.up && !l.owned, "{l:?}"),
        _ => unreachable!(),
    }
    let ifindex = link_mtu.ifindex;
    assert!(ifindex > 1);
    let route = evs.iter().find(|e| short(e) == "route added 198.51.100.0/24 via 192.0.2.9").unwrap();
    match route.detail.as_ref().unwrap() {
        Detail::Route(r) => assert_eq!(
            (r.table, r.protocol.as_str(), r.r#type.as_str(), route.ifindex),
            (254, "boot", "unicast", ifindex),
            "{r:?}"
        ),
        _ => unreachable!(),
    }
    let mac = evs.iter().find(|e| short(e) == "link changed mac").unwrap();
    assert!(matches!(mac.detail.as_ref().unwrap(), Detail::Link(l) if l.mac == "02:00:00:00:0a:01"));

    // The filtered subscriber saw only its interface's address events, in the same order.
    let msgs = addrs_only
        .until(|k| matches!(k, pb::netlink_event_message::Kind::Event(e) if short(e) == "address removed 192.0.2.5/24"))
        .await;
    let got: Vec<String> = events(&msgs).iter().map(|e| short(e)).collect();
    assert!(got.iter().all(|s| s.starts_with("address ")), "{got:?}");
    assert!(
        in_order(
            &got,
            &["address added 192.0.2.5/24", "address added 2001:db8:5::1/64", "address removed 192.0.2.5/24"]
        ),
        "{got:?}"
    );
    assert!(events(&msgs).iter().all(|e| e.interface == dev));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netlink_snapshot_returns_current_links_and_addresses_then_live_events() {
    let ns = Netns::new("dpns-").unwrap();
    let dev = unique("nsa");
    let peer = unique("nsb");
    ns.exec("ip", &["link", "add", &dev, "type", "veth", "peer", "name", &peer]).unwrap();
    ns.exec("ip", &["addr", "add", "203.0.113.7/24", "dev", &dev]).unwrap();
    let server = Server::start(&ns).unwrap();
    let mut client = server.client().await.unwrap();
    client.interfaces.add_interface(pb::AddInterfaceRequest { name: dev.clone(), ..Default::default() }).await.unwrap();

    let kinds = [pb::NetlinkEventKind::Link, pb::NetlinkEventKind::Address];
    let mut w = Watch::open(&mut client, &kinds, "", true).await;
    let msgs = w.until(|k| matches!(k, pb::netlink_event_message::Kind::SnapshotDone(_))).await;
    let snap = events(&msgs);
    let Some(pb::netlink_event_message::Kind::SnapshotDone(done)) = msgs.last() else { unreachable!() };
    assert_eq!(done.entries as usize, snap.len());
    assert!(snap.iter().all(|e| e.snapshot && e.seq == 0 && action(e) == pb::EventAction::Added));
    let links: Vec<(&str, bool)> = snap
        .iter()
        .filter_map(|e| match e.detail.as_ref().unwrap() {
            Detail::Link(l) => Some((e.interface.as_str(), l.owned)),
            _ => None,
        })
        .collect();
    for want in [("lo", false), (dev.as_str(), true), (peer.as_str(), false)] {
        assert!(links.contains(&want), "{want:?} not in {links:?}");
    }
    let addrs: Vec<String> = snap
        .iter()
        .filter(|e| matches!(e.detail, Some(Detail::Address(_))))
        .map(|e| format!("{} {}", e.interface, short(e)))
        .collect();
    for want in ["lo address added 127.0.0.1/8".to_string(), format!("{dev} address added 203.0.113.7/24")] {
        assert!(addrs.contains(&want), "{want} not in {addrs:?}");
    }
    assert!(
        !snap.iter().any(|e| matches!(e.detail, Some(Detail::Route(_)) | Some(Detail::Neighbour(_)))),
        "kinds filter"
    );

    // Live events follow, numbered.
    ns.exec("ip", &["link", "set", &dev, "mtu", "1300"]).unwrap();
    let msgs =
        w.until(|k| matches!(k, pb::netlink_event_message::Kind::Event(e) if short(e) == "link changed mtu")).await;
    let e = events(&msgs).pop().unwrap();
    assert!(!e.snapshot && e.seq > 0 && e.interface == dev);
    assert!(matches!(e.detail.as_ref().unwrap(), Detail::Link(l) if l.owned && l.mtu == 1300));
    // ... and the owned interface's entry follows the MTU, and the MAC.
    ns.exec("ip", &["link", "set", &dev, "address", "02:00:00:00:0b:07"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let r = client
            .interfaces
            .list_interfaces(pb::ListInterfacesRequest { name: dev.clone() })
            .await
            .unwrap()
            .into_inner();
        if r.interfaces[0].mtu == 1300 && r.interfaces[0].mac == "02:00:00:00:0b:07" {
            break;
        }
        assert!(Instant::now() < deadline, "interface MTU/MAC not updated: {:?}", r.interfaces[0]);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netlink_bad_subscription_invalid_argument_naming_field() {
    let ns = Netns::new("dpnb-").unwrap();
    let server = Server::start(&ns).unwrap();
    let mut client = server.client().await.unwrap();
    let bad = pb::SubscribeNetlinkEventsRequest { kinds: vec![1, 9], ..Default::default() };
    let e = client.events.subscribe_netlink_events(bad).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().starts_with("kinds[1]:"), "{}", e.message());
    let bad = pb::SubscribeNetlinkEventsRequest { interface: "a/b".into(), ..Default::default() };
    let e = client.events.subscribe_netlink_events(bad).await.unwrap_err();
    assert!(e.code() == tonic::Code::InvalidArgument && e.message().starts_with("interface:"), "{e:?}");
}

/// The kernel's forwarded-datagram counters (IPv4 + IPv6) of a namespace.
fn kernel_forwarded(ns: &Netns) -> u64 {
    let snmp = ns.exec("cat", &["/proc/net/snmp"]).unwrap();
    let mut lines = snmp.lines().filter(|l| l.starts_with("Ip:"));
    let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
    let col = names.split_whitespace().position(|n| n == "ForwDatagrams").unwrap();
    let v4: u64 = values.split_whitespace().nth(col).unwrap().parse().unwrap();
    let snmp6 = ns.exec("cat", &["/proc/net/snmp6"]).unwrap();
    let v6: u64 = snmp6
        .lines()
        .find_map(|l| l.strip_prefix("Ip6OutForwDatagrams"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    v4 + v6
}

async fn counters(client: &mut Client, name: &str) -> pb::InterfaceCounters {
    let r =
        client.interfaces.list_interfaces(pb::ListInterfacesRequest { name: name.into() }).await.unwrap().into_inner();
    r.interfaces[0].counters.clone().unwrap()
}

async fn nexthop(client: &mut Client, id: u32) -> pb::NextHop {
    let r = client.routing.list_next_hops(pb::ListNextHopsRequest {}).await.unwrap().into_inner();
    r.next_hops.into_iter().find(|n| n.id == id).unwrap()
}

fn gateway_nexthop(id: u32, interface: &str, gateway: &str) -> pb::NextHop {
    pb::NextHop {
        id,
        kind: Some(pb::next_hop::Kind::Encap(pb::EncapNextHop {
            interface: interface.into(),
            gateway: gateway.into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_nexthop_unresolved_goes_via_stack_then_xdp_forwards_and_follows_mac_change() {
    let topo = Topology::routed().unwrap();
    // The kernel is the slow path here: what XDP hands it, it forwards (and resolves).
    topo.rtr.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]).unwrap();
    // h2 does not hold its address yet: nobody answers ARP for the gateway.
    topo.h2.exec("ip", &["addr", "del", &format!("{H2_ADDR}/24"), "dev", "eth0"]).unwrap();
    let server = Server::start(&topo.rtr).unwrap();
    let mut client = server.client().await.unwrap();
    for name in [&topo.r0, &topo.r1] {
        client
            .interfaces
            .add_interface(pb::AddInterfaceRequest { name: name.clone(), ..Default::default() })
            .await
            .unwrap();
    }
    let next_hops =
        vec![gateway_nexthop(1, &topo.r1, H2_ADDR), encap_nexthop(2, &topo.r0, &topo.h1.mac("eth0").unwrap())];
    client
        .routing
        .add_next_hops(pb::AddNextHopsRequest { next_hops, replace: false, ..Default::default() })
        .await
        .unwrap();
    let routes = [("198.51.100.0/24", 1), ("192.0.2.0/24", 2)]
        .map(|(p, nh)| pb::Route { vrf: 0, prefix: p.into(), next_hop: nh })
        .to_vec();
    client.routing.add_routes(pb::AddRoutesRequest { routes, replace: false, ..Default::default() }).await.unwrap();

    let nh = nexthop(&mut client, 1).await;
    assert_eq!((nh.state(), nh.resolved_mac.as_str()), (pb::NextHopState::Unresolved, ""), "{nh:?}");
    // While unresolved, XDP hands the packets to the kernel, which forwards them (and asks ARP).
    let fwd_before = kernel_forwarded(&topo.rtr);
    let _ = topo.h1.exec("ping", &["-c", "5", "-i", "0.05", "-W", "1", H2_ADDR]);
    let r0 = counters(&mut client, &topo.r0).await;
    assert!(reason(&r0, "pass_neigh_unresolved") >= 5, "{r0:?}");
    assert_eq!(reason(&r0, "forwarded"), 0, "{r0:?}");
    assert!(kernel_forwarded(&topo.rtr) - fwd_before >= 5, "the kernel forwarded what XDP passed");

    // The gateway appears: the kernel resolves it (ARP from its forwarding or the server's
    // managed entry), the server learns the MAC from netlink, XDP takes over; no controller call.
    topo.h2.exec("ip", &["addr", "add", &format!("{H2_ADDR}/24"), "dev", "eth0"]).unwrap();
    topo.h2.exec("ip", &["route", "add", "default", "via", R1_ADDR]).unwrap();
    let out = topo.h1.exec("ping", &["-c", "20", "-i", "0.05", "-W", "2", H2_ADDR]).unwrap();
    assert!(out.contains(" 0% packet loss"), "traffic gets through: {out}");
    let h2_mac = topo.h2.mac("eth0").unwrap();
    let nh = nexthop(&mut client, 1).await;
    assert_eq!((nh.state(), nh.resolved_mac.as_str()), (pb::NextHopState::Ready, h2_mac.as_str()), "{nh:?}");
    let before = reason(&counters(&mut client, &topo.r0).await, "forwarded");
    let fwd_before = kernel_forwarded(&topo.rtr);
    let out = topo.h1.exec("ping", &["-c", "20", "-i", "0.05", "-W", "2", H2_ADDR]).unwrap();
    assert!(out.contains(" 0% packet loss"), "{out}");
    let r0 = counters(&mut client, &topo.r0).await;
    assert!(reason(&r0, "forwarded") - before >= 20, "XDP forwards to the resolved gateway: {r0:?}");
    assert_eq!(kernel_forwarded(&topo.rtr), fwd_before, "the kernel forwarded nothing once resolved");
    assert!(nexthop(&mut client, 1).await.packets >= 20);

    // The gateway's MAC changes: followed within a second of `ip neigh replace`.
    let new_mac = "02:00:00:00:77:01";
    topo.h2.exec("ip", &["link", "set", "eth0", "address", new_mac]).unwrap();
    let started = Instant::now();
    topo.rtr.exec("ip", &["neigh", "replace", H2_ADDR, "lladdr", new_mac, "dev", &topo.r1]).unwrap();
    loop {
        let nh = nexthop(&mut client, 1).await;
        if nh.resolved_mac == new_mac {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(1), "MAC change not followed within 1 s: {nh:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = reason(&counters(&mut client, &topo.r0).await, "forwarded");
    let out = topo.h1.exec("ping", &["-c", "10", "-i", "0.05", "-W", "2", H2_ADDR]).unwrap();
    assert!(out.contains(" 0% packet loss"), "forwarded to the new MAC: {out}");
    assert!(reason(&counters(&mut client, &topo.r0).await, "forwarded") - before >= 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_nexthop_kernel_forwarding_off_resolved_by_managed_neighbour() {
    // No traffic through the kernel resolves anything here (its forwarding is off): the server's
    // managed neighbour entry does.
    let topo = Topology::routed().unwrap();
    let server = Server::start(&topo.rtr).unwrap();
    let mut client = server.client().await.unwrap();
    for name in [&topo.r0, &topo.r1] {
        client
            .interfaces
            .add_interface(pb::AddInterfaceRequest { name: name.clone(), ..Default::default() })
            .await
            .unwrap();
    }
    let next_hops = vec![
        gateway_nexthop(1, &topo.r1, H2_ADDR),
        gateway_nexthop(2, &topo.r0, H1_ADDR),
        gateway_nexthop(3, &topo.r1, H2_ADDR6),
    ];
    client
        .routing
        .add_next_hops(pb::AddNextHopsRequest { next_hops, replace: false, ..Default::default() })
        .await
        .unwrap();
    let routes = [("198.51.100.0/24", 1), ("192.0.2.0/24", 2), ("2001:db8:2::/64", 3)]
        .map(|(p, nh)| pb::Route { vrf: 0, prefix: p.into(), next_hop: nh })
        .to_vec();
    client.routing.add_routes(pb::AddRoutesRequest { routes, replace: false, ..Default::default() }).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    for id in [1, 2, 3] {
        loop {
            let nh = nexthop(&mut client, id).await;
            if nh.state() == pb::NextHopState::Ready {
                break;
            }
            assert!(Instant::now() < deadline, "next hop {id} not resolved: {nh:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let neigh = topo.rtr.exec("ip", &["neigh", "show", H2_ADDR, "dev", &topo.r1]).unwrap();
    assert!(neigh.contains("managed"), "{neigh}");
    let out = topo.h1.exec("ping", &["-c", "10", "-i", "0.05", "-W", "2", H2_ADDR]).unwrap();
    assert!(out.contains(" 0% packet loss"), "{out}");
    assert!(reason(&counters(&mut client, &topo.r0).await, "forwarded") >= 10);

    // Once no next hop needs the gateway, the server's managed entry goes.
    let routes = ["198.51.100.0/24", "192.0.2.0/24", "2001:db8:2::/64"]
        .map(|p| pb::Route { vrf: 0, prefix: p.into(), next_hop: 0 })
        .to_vec();
    client.routing.delete_routes(pb::DeleteRoutesRequest { routes, ..Default::default() }).await.unwrap();
    client
        .routing
        .delete_next_hops(pb::DeleteNextHopsRequest { ids: vec![1, 2, 3], ..Default::default() })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let neigh = topo.rtr.exec("ip", &["neigh", "show", "dev", &topo.r1]).unwrap();
        if !neigh.contains("managed") {
            break;
        }
        assert!(Instant::now() < deadline, "managed entries left behind: {neigh}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owned_veth_deleted_removed_from_interfaces_event_emitted_nothing_leaks() {
    let ns = Netns::new("dpnd-").unwrap();
    let (a, b) = (unique("nda"), unique("ndb"));
    ns.exec("ip", &["link", "add", &a, "type", "veth", "peer", "name", &b]).unwrap();
    let server = Server::start(&ns).unwrap();
    let mut client = server.client().await.unwrap();
    client.interfaces.add_interface(pb::AddInterfaceRequest { name: a.clone(), ..Default::default() }).await.unwrap();
    client
        .routing
        .add_next_hops(pb::AddNextHopsRequest {
            next_hops: vec![encap_nexthop(1, &a, "02:00:00:00:00:05")],
            replace: false,
            ..Default::default()
        })
        .await
        .unwrap();
    let route = pb::Route { vrf: 0, prefix: "203.0.113.0/24".into(), next_hop: 1 };
    client
        .routing
        .add_routes(pb::AddRoutesRequest { routes: vec![route], replace: false, ..Default::default() })
        .await
        .unwrap();
    let status = client.system.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner();
    let generation = status.generation;
    assert_eq!(status.attachments.len(), 2, "XDP and TC: {:?}", status.attachments);

    let mut w = Watch::open(&mut client, &[pb::NetlinkEventKind::Link], &a, false).await;
    ns.exec("ip", &["link", "del", &a]).unwrap();
    let msgs = w
        .until(|k| matches!(k, pb::netlink_event_message::Kind::Event(e) if action(e) == pb::EventAction::Removed))
        .await;
    let e = events(&msgs).pop().unwrap();
    assert!(matches!(e.detail.as_ref().unwrap(), Detail::Link(l) if l.owned), "{e:?}");

    // The event is published once the dataplane has let go of it.
    let r = client.interfaces.list_interfaces(pb::ListInterfacesRequest::default()).await.unwrap().into_inner();
    assert!(r.interfaces.is_empty(), "{r:?}");
    let status = client.system.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner();
    assert!(status.attachments.is_empty(), "{status:?}");
    assert_eq!(status.generation, generation + 1);
    let nh = nexthop(&mut client, 1).await;
    assert_eq!(nh.state(), pb::NextHopState::InterfaceMissing);
    // The route stays (the controller's), its next hop now hands packets to the kernel.
    let found = client
        .routing
        .lookup_route(pb::LookupRouteRequest { vrf: 0, address: "203.0.113.9".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(found.found);

    // A new link of the same name: AddInterface takes the freed slot, counters start at zero,
    // and the next hop through it forwards again.
    ns.exec("ip", &["link", "add", &a, "type", "veth", "peer", "name", &b]).unwrap();
    let added = client
        .interfaces
        .add_interface(pb::AddInterfaceRequest { name: a.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let iface = added.interface.unwrap();
    assert_eq!(iface.slot, 0);
    assert_eq!(iface.counters.unwrap().rx_packets, 0);
    assert_eq!(nexthop(&mut client, 1).await.state(), pb::NextHopState::Ready);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_fib_vrf_ping_and_iperf3_cross_by_ip_routes_only_forwarded_by_xdp() {
    let topo = Topology::routed().unwrap();
    // A prefix behind h2 that only `ip route` in the router knows.
    topo.h2.exec("ip", &["addr", "add", "203.0.113.2/32", "dev", "lo"]).unwrap();
    topo.h2.exec("ip", &["-6", "addr", "add", "2001:db8:99::2/128", "dev", "lo"]).unwrap();
    topo.rtr.exec("ip", &["route", "add", "203.0.113.0/24", "via", H2_ADDR]).unwrap();
    topo.rtr.exec("ip", &["-6", "route", "add", "2001:db8:99::/64", "via", H2_ADDR6]).unwrap();
    // bpf_fib_lookup answers only for interfaces with forwarding on (it is the kernel's FIB
    // verdict, forwarding switch included); that the kernel itself forwards nothing is checked
    // on its counters below.
    topo.rtr.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]).unwrap();
    topo.rtr.exec("sysctl", &["-qw", "net.ipv6.conf.all.forwarding=1"]).unwrap();
    let server = Server::start(&topo.rtr).unwrap();
    let mut client = server.client().await.unwrap();
    client
        .routing
        .add_vrf(pb::AddVrfRequest { id: 1, mode: pb::VrfMode::KernelFib.into(), kernel_table: 0 })
        .await
        .unwrap();
    for name in [&topo.r0, &topo.r1] {
        client
            .interfaces
            .add_interface(pb::AddInterfaceRequest { name: name.clone(), vrf: 1, ..Default::default() })
            .await
            .unwrap();
    }
    // Routes of a kernel-FIB VRF come from the kernel only.
    let bad = pb::Route { vrf: 1, prefix: "198.18.0.0/15".into(), next_hop: 1 };
    let e = client
        .routing
        .add_routes(pb::AddRoutesRequest { routes: vec![bad], replace: false, ..Default::default() })
        .await
        .unwrap_err();
    assert!(e.code() == tonic::Code::FailedPrecondition && e.message().starts_with("routes[0].vrf:"), "{e:?}");
    let vrfs = client.routing.list_vrfs(pb::ListVrfsRequest {}).await.unwrap().into_inner().vrfs;
    assert!(vrfs.iter().any(|v| v.id == 1 && v.mode() == pb::VrfMode::KernelFib && v.interfaces == 2), "{vrfs:?}");

    // First packets find no neighbour yet: the kernel forwards them and resolves.
    topo.h1.exec("ping", &["-c", "2", "-i", "0.2", "-W", "2", "203.0.113.2"]).unwrap();
    topo.h1.exec("ping", &["-6", "-c", "2", "-i", "0.2", "-W", "2", "2001:db8:99::2"]).unwrap();
    let r0 = counters(&mut client, &topo.r0).await;
    let fwd_before = kernel_forwarded(&topo.rtr);
    let xdp_before = reason(&r0, "forwarded");

    let out = topo.h1.exec("ping", &["-c", "20", "-i", "0.05", "-W", "2", "203.0.113.2"]).unwrap();
    assert!(out.contains(" 0% packet loss"), "{out}");
    let out = topo.h1.exec("ping", &["-6", "-c", "20", "-i", "0.05", "-W", "2", "2001:db8:99::2"]).unwrap();
    assert!(out.contains(" 0% packet loss"), "{out}");
    let mut srv = topo.h2.command("iperf3", &["-s", "-1", "-B", "203.0.113.2"]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = topo.h1.exec("timeout", &["20", "iperf3", "-c", "203.0.113.2", "-t", "2", "-J"]).unwrap();
    let _ = srv.wait();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let bytes = v["end"]["sum_received"]["bytes"].as_u64().unwrap();
    assert!(bytes > 1_000_000, "iperf3 moved only {bytes} bytes");

    let r0 = counters(&mut client, &topo.r0).await;
    let r1 = counters(&mut client, &topo.r1).await;
    assert!(reason(&r0, "forwarded") - xdp_before > 1000, "forwarded by XDP: {r0:?}");
    assert!(reason(&r1, "forwarded") >= 40, "replies forwarded by XDP: {r1:?}");
    assert_eq!(kernel_forwarded(&topo.rtr), fwd_before, "the kernel forwarded none of it");
}
