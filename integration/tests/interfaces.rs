//! Interfaces end to end: the real server in a router namespace, AddInterface/DeleteInterface/
//! ListInterfaces over gRPC, real pings across the router, counters checked against them, and
//! errors that change nothing.

use aya::programs::loaded_links;
use controller_client::pb;
use integration::{reason, Server, Topology};
use tonic::Code;

/// Echo request/reply frame on the wire: 14 Ethernet + 20 IPv4 + 8 ICMP + 56 payload.
const PING_FRAME: u64 = 98;
/// ARP request/reply on a veth (no padding to 60 bytes on virtual links).
const ARP_FRAME: u64 = 42;

async fn counters(client: &mut controller_client::Client, name: &str) -> pb::InterfaceCounters {
    let r = client
        .interfaces
        .list_interfaces(pb::ListInterfacesRequest { name: name.into() })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(r.interfaces.len(), 1);
    r.interfaces[0].counters.clone().unwrap()
}

async fn add(client: &mut controller_client::Client, name: &str) -> Result<pb::AddInterfaceResponse, tonic::Status> {
    client
        .interfaces
        .add_interface(pb::AddInterfaceRequest { name: name.into(), xdp_mode: pb::XdpMode::Auto.into(), vrf: 0 })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_interface_ping_across_counters_match_packets_sent() {
    let topo = Topology::new().unwrap();
    // Resolve ARP everywhere first so the counted pings are the only IP packets.
    topo.ping_h1_to_h2(1).unwrap();
    let server = Server::start(&topo.rtr).unwrap();
    let mut client = server.client().await.unwrap();

    let a0 = add(&mut client, &topo.r0).await.unwrap();
    let a1 = add(&mut client, &topo.r1).await.unwrap();
    assert_eq!((a0.generation, a1.generation), (1, 2));
    let i0 = a0.interface.unwrap();
    assert_eq!(i0.xdp_mode, pb::XdpMode::Native as i32, "veth supports native XDP");
    assert_ne!(i0.slot, a1.interface.unwrap().slot);

    let out = topo.rtr.exec("ip", &["-d", "link", "show", &topo.r0]).unwrap();
    assert!(out.contains("prog/xdp"), "no XDP program on {}: {out}", topo.r0);

    const PINGS: u64 = 5;
    topo.ping_h1_to_h2(PINGS as u32).unwrap();

    // r0 receives the echo requests from h1, r1 the replies from h2: exactly PINGS IP packets
    // each. ARP may refresh meanwhile; it is counted apart, and bytes must add up exactly.
    for (iface, what) in [(&topo.r0, "echo requests"), (&topo.r1, "echo replies")] {
        let c = counters(&mut client, iface).await;
        let sum: u64 = c.reasons.iter().map(|r| r.packets).sum();
        assert_eq!(sum, c.rx_packets, "{iface}: every packet counts under exactly one reason: {c:?}");
        assert_eq!(reason(&c, "no_route"), PINGS, "{iface}: {what}: {c:?}");
        let arp = reason(&c, "pass_non_ip");
        assert_eq!(c.rx_packets, PINGS + arp, "{iface}: {c:?}");
        assert_eq!(c.rx_bytes, PINGS * PING_FRAME + arp * ARP_FRAME, "{iface}: {c:?}");
        assert_eq!(c.rx_parse_errors, 0);
        // The router transmits the forwarded packets out of the other interface.
        assert!(c.tx_packets >= PINGS, "{iface}: tx {c:?}");
        assert!(c.tx_bytes >= PINGS * PING_FRAME, "{iface}: tx {c:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_interface_detaches_both_programs_and_frees_slot() {
    let topo = Topology::new().unwrap();
    let server = Server::start(&topo.rtr).unwrap();
    let mut client = server.client().await.unwrap();
    let added = add(&mut client, &topo.r0).await.unwrap().interface.unwrap();

    let status = client.system.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner();
    let link_ids: Vec<u32> = status.attachments.iter().map(|a| a.link_id).collect();
    assert_eq!(link_ids.len(), 2, "XDP and TC links: {status:?}");
    let live = || -> Vec<u32> { loaded_links().filter_map(Result::ok).map(|l| l.id()).collect() };
    assert!(link_ids.iter().all(|id| live().contains(id)), "links {link_ids:?} not in the kernel");

    let r = client
        .interfaces
        .delete_interface(pb::DeleteInterfaceRequest { name: topo.r0.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.generation, 2);

    let out = topo.rtr.exec("ip", &["-d", "link", "show", &topo.r0]).unwrap();
    assert!(!out.contains("prog/xdp"), "XDP still attached after delete: {out}");
    let now = live();
    assert!(link_ids.iter().all(|id| !now.contains(id)), "links {link_ids:?} still exist: {now:?}");
    let status = client.system.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner();
    assert!(status.attachments.is_empty());
    let list = client.interfaces.list_interfaces(pb::ListInterfacesRequest::default()).await.unwrap().into_inner();
    assert!(list.interfaces.is_empty());

    // The slot is free again and a re-added interface starts from zero counters.
    topo.ping_h1_to_h2(2).unwrap();
    let again = add(&mut client, &topo.r0).await.unwrap().interface.unwrap();
    assert_eq!(again.slot, added.slot);
    assert_eq!(again.counters.unwrap().rx_packets, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_interface_errors_precise_status_and_change_nothing() {
    let topo = Topology::new().unwrap();
    let server = Server::start(&topo.rtr).unwrap();
    let mut client = server.client().await.unwrap();
    add(&mut client, &topo.r0).await.unwrap();
    let before = client.system.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner();

    let e = add(&mut client, "nosuchif0").await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("nosuchif0"), "{e:?}");

    let e = add(&mut client, &topo.r0).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");

    let e = add(&mut client, "").await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("name:"), "message names the field: {e:?}");

    let e = add(&mut client, "much-too-long-interface-name").await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    let e = client
        .interfaces
        .add_interface(pb::AddInterfaceRequest { name: topo.r1.clone(), xdp_mode: 42, vrf: 0 })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("xdp_mode:"), "{e:?}");

    let e = client.interfaces.delete_interface(pb::DeleteInterfaceRequest { name: topo.r1.clone() }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");

    let after = client.system.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(after.generation, before.generation);
    assert_eq!(after.attachments, before.attachments);
    let r1 = topo.rtr.exec("ip", &["-d", "link", "show", &topo.r1]).unwrap();
    assert!(!r1.contains("prog/xdp"), "a failed add left a program on {}: {r1}", topo.r1);
    let maps: Vec<(String, u64)> = after.maps.iter().map(|m| (m.name.clone(), m.occupancy)).collect();
    assert!(maps.contains(&("INTERFACES".to_owned(), 1)), "{maps:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_interface_generic_mode_runs_generic_and_counts() {
    let topo = Topology::new().unwrap();
    topo.ping_h1_to_h2(1).unwrap();
    let server = Server::start(&topo.rtr).unwrap();
    let mut client = server.client().await.unwrap();
    let r = client
        .interfaces
        .add_interface(pb::AddInterfaceRequest { name: topo.r0.clone(), xdp_mode: pb::XdpMode::Generic.into(), vrf: 0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.interface.unwrap().xdp_mode, pb::XdpMode::Generic as i32);
    let out = topo.rtr.exec("ip", &["-d", "link", "show", &topo.r0]).unwrap();
    assert!(out.contains("xdpgeneric"), "{out}");
    topo.ping_h1_to_h2(3).unwrap();
    let c = counters(&mut client, &topo.r0).await;
    assert_eq!(reason(&c, "no_route"), 3, "{c:?}");
}
