//! Flow mode across namespaces, kernel forwarding off: a new TCP connection's first SYN misses,
//! is held and punted to a subscribed controller (here a Rust task on the client library), which
//! installs the flow; the server re-injects the held SYN, so the connection completes without the
//! 1 s SYN retransmit; the rest of the connection hits the flow in XDP.

use std::time::Duration;

use controller_client::pb;
use integration::*;

/// Seconds a TCP connect from h1 to h2:port takes (python3 in h1).
fn connect_time(topo: &Topology, port: u16) -> f64 {
    let script = format!(
        "import socket,time\nt=time.time()\ns=socket.create_connection(('{H2_ADDR}',{port}),timeout=5)\nprint(time.time()-t)\ns.close()"
    );
    let out = topo.h1.exec("python3", &["-c", &script]).unwrap();
    out.trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_miss_punted_controller_installs_first_syn_reinjected_no_retransmit() {
    let topo = Topology::routed().unwrap();
    let server = Server::start(&topo.rtr).unwrap();
    let mut c = server.client().await.unwrap();
    program_router(&topo, &mut c).await.unwrap();
    c.flows
        .set_flow_mode(pb::SetFlowModeRequest { interface: topo.r0.clone(), enabled: true, ..Default::default() })
        .await
        .unwrap();

    // The controller: every miss gets its flow, forward to h2 (next hop 1).
    let mut stream =
        c.flows.subscribe_flow_misses(pb::SubscribeFlowMissesRequest::default()).await.unwrap().into_inner();
    let mut ctl = server.client().await.unwrap();
    let controller = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Ok(Some(m)) = stream.message().await {
            let Some(pb::flow_miss_message::Kind::Miss(miss)) = m.kind else { continue };
            let flow = pb::Flow {
                key: miss.key.clone(),
                action: pb::FlowAction::Forward as i32,
                next_hop: 1,
                ..Default::default()
            };
            ctl.flows.install_flows(pb::InstallFlowsRequest { flows: vec![flow], ..Default::default() }).await.unwrap();
            seen.push(miss);
        }
        seen
    });

    let mut srv = topo.h2.command("iperf3", &["-s", "-B", H2_ADDR, "-p", "5301"]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t = connect_time(&topo, 5301);
    assert!(t < 0.5, "connect took {t:.3} s: the first SYN was lost and retransmitted");
    // A whole transfer rides the flow (new connections: new flows, each punted once).
    let out = topo.h1.exec("timeout", &["10", "iperf3", "-c", H2_ADDR, "-p", "5301", "-t", "1", "-J"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["end"]["sum_received"]["bytes"].as_u64().unwrap() > 1_000_000);
    let _ = srv.kill();
    let _ = srv.wait();

    let mut flows = c.flows.list_flows(pb::ListFlowsRequest::default()).await.unwrap().into_inner();
    let mut all = Vec::new();
    while let Some(chunk) = flows.message().await.unwrap() {
        all.extend(chunk.flows);
    }
    let big = all.iter().max_by_key(|f| f.packets).unwrap();
    assert_eq!(big.action, pb::FlowAction::Forward as i32, "{all:?}");
    assert!(big.packets > 100, "the transfer hit its flow in XDP: {big:?}");
    let r0 =
        c.interfaces.list_interfaces(pb::ListInterfacesRequest { name: topo.r0.clone() }).await.unwrap().into_inner();
    let reasons = &r0.interfaces[0].counters.as_ref().unwrap().reasons;
    let count = |n: &str| reasons.iter().find(|r| r.reason == n).map(|r| r.packets).unwrap_or(0);
    let punted = count("flow_miss_punted");
    drop(c);
    drop(server);
    let seen = controller.await.unwrap();
    // One event per flow: the connect test (1 flow) + iperf3's control and data connections.
    assert_eq!(seen.len() as u64, punted, "one miss event per punted flow: {seen:?}");
    assert!((2..=4).contains(&seen.len()), "{} misses: {seen:?}", seen.len());
    assert!(seen.iter().all(|m| m.key.as_ref().unwrap().dst_port == 5301));
    assert!(seen.windows(2).all(|w| w[0].seq < w[1].seq), "sequence numbers increase");
}
