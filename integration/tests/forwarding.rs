//! L3 forwarding across namespaces with the router's kernel forwarding OFF (IPv4 and IPv6):
//! whatever crosses the router was forwarded by the XDP program from routes programmed over
//! gRPC. Also ICMP time exceeded from the router, and TC egress routing of traffic the router
//! itself originates.

use controller_client::{pb, Client};
use integration::*;

fn route(prefix: &str, next_hop: u32) -> pb::Route {
    pb::Route { vrf: 0, prefix: prefix.into(), next_hop }
}

async fn program(topo: &Topology, client: &mut Client) {
    program_router(topo, client).await.unwrap();
}

async fn counters(client: &mut Client, name: &str) -> pb::InterfaceCounters {
    let r =
        client.interfaces.list_interfaces(pb::ListInterfacesRequest { name: name.into() }).await.unwrap().into_inner();
    r.interfaces[0].counters.clone().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_kernel_forwarding_off_ping_v4_v6_and_iperf3_cross_via_xdp() {
    let topo = Topology::routed().unwrap();
    // Without the dataplane nothing crosses: the router's kernel does not forward.
    assert!(topo.h1.exec("ping", &["-c", "1", "-W", "1", H2_ADDR]).is_err(), "kernel forwarded with ip_forward=0");
    let server = Server::start(&topo.rtr).unwrap();
    let mut client = server.client().await.unwrap();
    program(&topo, &mut client).await;

    let out = topo.h1.exec("ping", &["-c", "20", "-i", "0.05", "-W", "2", H2_ADDR]).unwrap();
    assert!(out.contains(" 0% packet loss"), "{out}");
    let out = topo.h1.exec("ping", &["-6", "-c", "20", "-i", "0.05", "-W", "2", H2_ADDR6]).unwrap();
    assert!(out.contains(" 0% packet loss"), "{out}");

    let r0 = counters(&mut client, &topo.r0).await;
    let r1 = counters(&mut client, &topo.r1).await;
    // 20 echo requests of each family in on r0, 20 replies of each in on r1, all by XDP.
    assert!(reason(&r0, "forwarded") >= 40, "{r0:?}");
    assert!(reason(&r1, "forwarded") >= 40, "{r1:?}");
    let nhs = client.routing.list_next_hops(pb::ListNextHopsRequest {}).await.unwrap().into_inner().next_hops;
    let to_h2 = nhs.iter().find(|n| n.id == 1).unwrap();
    assert!(to_h2.packets >= 40 && to_h2.routes == 2, "{to_h2:?}");

    // A TCP transfer through the router.
    let mut srv = topo.h2.command("iperf3", &["-s", "-1", "-B", H2_ADDR]).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = topo.h1.exec("timeout", &["20", "iperf3", "-c", H2_ADDR, "-t", "2", "-J"]).unwrap();
    let _ = srv.wait();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let bytes = v["end"]["sum_received"]["bytes"].as_u64().unwrap();
    assert!(bytes > 1_000_000, "iperf3 moved only {bytes} bytes");
    let r0 = counters(&mut client, &topo.r0).await;
    assert!(reason(&r0, "forwarded") > 1000, "TCP segments forwarded by XDP: {r0:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_ttl_one_router_answers_time_exceeded_v4_v6() {
    let topo = Topology::routed().unwrap();
    let server = Server::start(&topo.rtr).unwrap();
    let mut client = server.client().await.unwrap();
    program(&topo, &mut client).await;
    // Resolve neighbours first, so the TTL-1 probe is the first thing that matters.
    topo.h1.exec("ping", &["-c", "1", "-W", "2", H2_ADDR]).unwrap();
    topo.h1.exec("ping", &["-6", "-c", "1", "-W", "2", H2_ADDR6]).unwrap();

    let out = topo.h1.command("ping", &["-c", "1", "-W", "2", "-t", "1", H2_ADDR]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let r0 = counters(&mut client, &topo.r0).await;
    assert!(text.contains(&format!("From {R0_ADDR}")) && text.contains("Time to live exceeded"), "{text}\n{r0:?}");
    let out = topo.h1.command("ping", &["-6", "-c", "1", "-W", "2", "-t", "1", H2_ADDR6]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("From {R0_ADDR6}")) && text.contains("Time exceeded"), "{text}");
    let r0 = counters(&mut client, &topo.r0).await;
    assert_eq!(reason(&r0, "icmp_time_exceeded"), 2, "{r0:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tc_egress_router_originated_traffic_gets_next_hop_mac() {
    let topo = Topology::routed().unwrap();
    let server = Server::start(&topo.rtr).unwrap();
    let mut client = server.client().await.unwrap();
    program(&topo, &mut client).await;
    // h2 owns 203.0.113.2; the router's kernel sends to it on r1 with a wrong neighbour MAC,
    // which h2 would drop. Only the TC egress program's rewrite from the dataplane route makes
    // the ping work.
    topo.h2.exec("ip", &["addr", "add", "203.0.113.2/32", "dev", "lo"]).unwrap();
    topo.rtr.exec("ip", &["route", "add", "203.0.113.0/24", "dev", &topo.r1]).unwrap();
    topo.rtr
        .exec(
            "ip",
            &["neigh", "replace", "203.0.113.2", "lladdr", "02:00:00:00:00:99", "dev", &topo.r1, "nud", "permanent"],
        )
        .unwrap();
    assert!(
        topo.rtr.exec("ping", &["-c", "1", "-W", "1", "203.0.113.2"]).is_err(),
        "reached h2 without the dataplane route"
    );

    client
        .routing
        .add_routes(pb::AddRoutesRequest {
            routes: vec![route("203.0.113.0/24", 1)],
            replace: false,
            ..Default::default()
        })
        .await
        .unwrap();
    let out = topo.rtr.exec("ping", &["-c", "3", "-i", "0.1", "-W", "2", "203.0.113.2"]).unwrap();
    assert!(out.contains(" 0% packet loss"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_interfaces_past_the_direct_ifindex_array_forward_via_xdp() {
    // A namespace's ifindex counter only grows: on a node with interface churn the router's
    // interfaces end up past the INTERFACES array and live in INTERFACES_HIGH instead.
    let index = dataplane_common::MAX_DIRECT_IFINDEX + 7;
    let topo = Topology::routed_at(Some(index)).unwrap();
    let server = Server::start(&topo.rtr).unwrap();
    let mut client = server.client().await.unwrap();
    program(&topo, &mut client).await;

    let out = topo.h1.exec("ping", &["-c", "10", "-i", "0.05", "-W", "2", H2_ADDR]).unwrap();
    assert!(out.contains(" 0% packet loss"), "{out}");
    let out = topo.h1.exec("ping", &["-6", "-c", "10", "-i", "0.05", "-W", "2", H2_ADDR6]).unwrap();
    assert!(out.contains(" 0% packet loss"), "{out}");
    let r0 = counters(&mut client, &topo.r0).await;
    assert!(reason(&r0, "forwarded") >= 20, "{r0:?}");

    let status = client.system.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner();
    let used = |name: &str| status.maps.iter().find(|m| m.name == name).map(|m| m.occupancy).unwrap();
    assert_eq!((used("INTERFACES"), used("INTERFACES_HIGH")), (0, 2), "{:?}", status.maps);
}
