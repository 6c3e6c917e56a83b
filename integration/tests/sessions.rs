//! Controller sessions (`dataplane.v1.Controller/Session`) against a real server: arbitration
//! and the write fence, misses answered by decisions on the stream with every held first packet
//! delivered, per-entry decision results, packet-out, and a primary's crash that forwarding does
//! not notice.

use std::{net::Ipv4Addr, time::Duration};

use controller_client::{
    pb,
    stream_channel::{from_uint128, StreamChannel},
    Client, Credentials,
};
use integration::*;
use pb::session_response::Kind;
use tonic::Code;

fn mac(s: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    for (b, part) in m.iter_mut().zip(s.split(':')) {
        *b = u8::from_str_radix(part, 16).unwrap();
    }
    m
}

async fn open(c: &Client, id: u128) -> StreamChannel {
    StreamChannel::open(c, "", id, pb::SessionConfig::default()).await.unwrap()
}

/// The next message that is not a miss batch (within 5 s).
async fn next_control(s: &mut StreamChannel) -> Kind {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.next()).await.expect("a message within 5 s").unwrap() {
            Some(Kind::Misses(_)) => continue,
            Some(k) => return k,
            None => panic!("the session ended"),
        }
    }
}

async fn vrfs(c: &mut Client) -> Vec<u32> {
    c.routing.list_vrfs(pb::ListVrfsRequest {}).await.unwrap().into_inner().vrfs.iter().map(|v| v.id).collect()
}

async fn generation(c: &mut Client) -> u64 {
    c.system.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner().generation
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_backup_write_refused_permission_denied_changes_nothing() {
    let ns = Netns::new("dse-").unwrap();
    let server = Server::start(&ns).unwrap();
    let mut anon = server.client().await.unwrap();
    let primary = open(&anon, 10).await;
    assert!(primary.arbitration.primary, "{:?}", primary.arbitration);
    let backup = open(&anon, 5).await;
    assert!(!backup.arbitration.primary);
    assert_eq!(backup.arbitration.primary_election_id.as_ref().map(from_uint128), Some(10));
    assert_eq!(backup.arbitration.instance_id, primary.arbitration.instance_id);
    assert_eq!(backup.arbitration.instance_id.len(), 32, "128 bits in hex");

    let before = (vrfs(&mut anon).await, generation(&mut anon).await);
    let add = |id| pb::AddVrfRequest { id, ..Default::default() };
    for (who, mut c) in [("backup", backup.client()), ("no id", anon.clone())] {
        let e = c.routing.add_vrf(add(7)).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{who}: {e:?}");
        assert!(e.message().contains("primary"), "{who}: {}", e.message());
    }
    // An id no session holds is refused too (a deposed controller that has not noticed).
    let mut stranger = anon.with_credentials(Credentials::new("", 99).unwrap());
    assert_eq!(stranger.routing.add_vrf(add(7)).await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!((vrfs(&mut anon).await, generation(&mut anon).await), before, "nothing changed");
    // Reads are not fenced; the primary writes.
    primary.client().routing.add_vrf(add(7)).await.unwrap();
    assert!(vrfs(&mut anon).await.contains(&7));

    let status = anon.system.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.instance_id, primary.arbitration.instance_id);
    let seen: Vec<(u128, bool)> =
        status.sessions.iter().map(|s| (from_uint128(s.election_id.as_ref().unwrap()), s.primary)).collect();
    assert_eq!(seen, vec![(5, false), (10, true)]);

    // A duplicate id is refused; with every session gone, writes without an id work again.
    let dup = StreamChannel::open(&anon, "", 10, pb::SessionConfig::default()).await.err().unwrap();
    assert_eq!(dup.code(), Code::AlreadyExists, "{dup:?}");
    drop(primary);
    drop(backup);
    tokio::time::sleep(Duration::from_millis(300)).await;
    anon.routing.add_vrf(add(8)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_higher_id_takes_over_old_primary_refused_and_told() {
    let ns = Netns::new("dst-").unwrap();
    let server = Server::start(&ns).unwrap();
    let anon = server.client().await.unwrap();
    let mut old = open(&anon, 10).await;
    let new = open(&anon, 20).await;
    assert!(new.arbitration.primary);
    match next_control(&mut old).await {
        Kind::Arbitration(a) => {
            assert!(!a.primary);
            assert_eq!(a.primary_election_id.as_ref().map(from_uint128), Some(20));
        }
        other => panic!("expected the primary change to be announced, got {other:?}"),
    }
    let add = pb::AddVrfRequest { id: 3, ..Default::default() };
    assert_eq!(old.client().routing.add_vrf(add).await.unwrap_err().code(), Code::PermissionDenied);
    // The deposed primary's decisions are refused on its stream, naming the request.
    old.sender.decide(41, Vec::new(), pb::Atomicity::AllOrNothing).await.unwrap();
    match next_control(&mut old).await {
        Kind::Error(e) => {
            assert_eq!((Code::from(e.code), e.about.as_str(), e.id), (Code::PermissionDenied, "decisions", 41));
        }
        other => panic!("expected a stream error, got {other:?}"),
    }
    new.client().routing.add_vrf(add).await.unwrap();
    // The old one raises its id and takes over again.
    old.sender.rearbitrate("", 30).await.unwrap();
    loop {
        match next_control(&mut old).await {
            Kind::Arbitration(a) if a.primary => break,
            Kind::Arbitration(_) => continue,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        new.client().routing.add_vrf(pb::AddVrfRequest { id: 4, ..Default::default() }).await.unwrap_err().code(),
        Code::PermissionDenied
    );
}

/// Flows by key for the decision tests: UDP 192.0.2.2 -> 198.51.100.x.
fn flow(i: u32, next_hop: u32) -> pb::Flow {
    pb::Flow {
        key: Some(pb::FlowKey {
            vrf: 0,
            src: "192.0.2.2".into(),
            dst: Ipv4Addr::from(0xc633_6400 | (i & 0xff)).to_string(),
            protocol: 17,
            src_port: 1024 + (i >> 8),
            dst_port: 53,
        }),
        action: pb::FlowAction::Forward as i32,
        next_hop,
        ..Default::default()
    }
}

async fn flow_count(c: &mut Client) -> usize {
    let mut s = c.flows.list_flows(pb::ListFlowsRequest::default()).await.unwrap().into_inner();
    let mut n = 0;
    while let Some(chunk) = s.message().await.unwrap() {
        n += chunk.flows.len();
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_decisions_three_bad_of_thousand_reported_in_order() {
    let (_ns, _server, mut c) = server_forwarding_via_lo("dsd-").await.unwrap();
    let mut s = open(&c, 1).await;
    let mut batch: Vec<pb::Flow> = (0..1000).map(|i| flow(i, 1)).collect();
    batch[17].next_hop = 77; // unknown next hop
    batch[500].key.as_mut().unwrap().vrf = 9; // unknown VRF
    batch[998].key.as_mut().unwrap().dst = "not-an-address".into();
    let want = [
        (17, Code::NotFound, "flows[17].next_hop"),
        (500, Code::NotFound, "flows[500].key.vrf"),
        (998, Code::InvalidArgument, "flows[998].dst"),
    ];
    let check = |r: &pb::DecisionResult| {
        let got: Vec<(u32, Code)> = r.failed.iter().map(|e| (e.index, Code::from(e.code))).collect();
        assert_eq!(got, want.iter().map(|w| (w.0, w.1)).collect::<Vec<_>>(), "{:?}", r.failed);
        for (e, w) in r.failed.iter().zip(&want) {
            assert!(e.message.starts_with(w.2), "{:?} should name {}", e.message, w.2);
        }
    };

    let before = generation(&mut c).await;
    s.sender.decide(1, batch.clone(), pb::Atomicity::AllOrNothing).await.unwrap();
    let Kind::DecisionResult(r) = next_control(&mut s).await else { panic!() };
    check(&r);
    assert_eq!((r.id, r.applied), (1, 0));
    assert_eq!((flow_count(&mut c).await, generation(&mut c).await), (0, before), "all or nothing: nothing");

    s.sender.decide(2, batch, pb::Atomicity::ContinueOnError).await.unwrap();
    let Kind::DecisionResult(r) = next_control(&mut s).await else { panic!() };
    check(&r);
    assert_eq!((r.id, r.applied), (2, 997));
    assert_eq!(flow_count(&mut c).await, 997);
    assert!(r.generation > before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_misses_answered_on_stream_every_held_first_packet_delivered() {
    let topo = Topology::routed().unwrap();
    let server = Server::start(&topo.rtr).unwrap();
    let mut c = server.client().await.unwrap();
    program_router(&topo, &mut c).await.unwrap();
    c.flows
        .set_flow_mode(pb::SetFlowModeRequest {
            interface: topo.r0.clone(),
            enabled: true,
            punt_rate: 100_000,
            punt_burst: 10_000,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut s = open(&c, 1).await;
    let sender = s.sender.clone();
    let controller = tokio::spawn(async move {
        let (mut misses, mut batches, mut decided) = (0usize, 0usize, 0u64);
        while let Ok(Some(k)) = s.next().await {
            match k {
                Kind::Misses(b) => {
                    batches += 1;
                    misses += b.misses.len();
                    let flows = b
                        .misses
                        .iter()
                        .map(|m| pb::Flow {
                            request_id: m.request_id,
                            action: pb::FlowAction::Forward as i32,
                            next_hop: 1,
                            ..Default::default()
                        })
                        .collect();
                    sender.decide(batches as u64, flows, pb::Atomicity::ContinueOnError).await.unwrap();
                }
                Kind::DecisionResult(r) => {
                    assert!(r.failed.is_empty(), "{r:?}");
                    decided += u64::from(r.applied);
                }
                Kind::Lost(l) => panic!("lost {l:?}"),
                _ => {}
            }
        }
        (misses, batches, decided)
    });

    // 300 flows, one datagram each: every one misses, is held, and must arrive.
    let n = 300;
    let recv = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.setsockopt(socket.SOL_SOCKET,socket.SO_RCVBUF,1<<22)\ns.bind(('{H2_ADDR}',7000))\ns.settimeout(3)\nn=0\ntry:\n  while True:\n    s.recv(100); n+=1\nexcept socket.timeout:\n  pass\nprint(n)"
    );
    let receiver = topo.h2.command("python3", &["-c", &recv]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let send = format!(
        "import socket\nfor p in range({n}):\n  s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n  s.bind(('{H1_ADDR}',20000+p))\n  s.sendto(b'first',('{H2_ADDR}',7000))\n  s.close()"
    );
    topo.h1.exec("python3", &["-c", &send]).unwrap();
    let out = receiver.wait_with_output().unwrap();
    let received: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(received, n, "every held first packet re-injected and delivered");
    drop(c);
    drop(server);
    let (misses, batches, decided) = controller.await.unwrap();
    assert_eq!((misses, decided), (n, n as u64));
    assert!(batches >= 1 && batches <= n, "{batches} batches");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_packet_out_crafted_frame_arrives_in_host_namespace() {
    let topo = Topology::routed().unwrap();
    let server = Server::start(&topo.rtr).unwrap();
    let mut c = server.client().await.unwrap();
    program_router(&topo, &mut c).await.unwrap();
    let mut s = open(&c, 1).await;
    let recv = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('{H2_ADDR}',7100))\ns.settimeout(5)\nfor _ in range(2):\n  print(s.recv(100).decode())"
    );
    let receiver = topo.h2.command("python3", &["-c", &recv]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let frame = |dst: [u8; 6], src: [u8; 6], from: &str, text: &[u8]| {
        let udp = packet::udp(40000, 7100, text);
        let ip = packet::Ipv4::new(from.parse().unwrap(), H2_ADDR.parse().unwrap(), 17).build(&udp);
        packet::Eth::new(dst, src, 0x0800).frame(&ip)
    };
    // Out of r1, straight to h2.
    let h2 = mac(&topo.h2.mac("eth0").unwrap());
    let r1 = mac(&topo.rtr.mac(&topo.r1).unwrap());
    s.sender.packet_out(1, &topo.r1, frame(h2, r1, R1_ADDR, b"out-of-r1"), false).await.unwrap();
    // Into r0's ingress, as if h1 had sent it: routed by XDP to h2.
    let r0 = mac(&topo.rtr.mac(&topo.r0).unwrap());
    let h1 = mac(&topo.h1.mac("eth0").unwrap());
    s.sender.packet_out(2, &topo.r0, frame(r0, h1, H1_ADDR, b"into-r0"), true).await.unwrap();
    // A frame for an interface the dataplane does not own is refused on the stream.
    s.sender.packet_out(3, "lo", frame(h2, r1, R1_ADDR, b"x"), false).await.unwrap();
    match next_control(&mut s).await {
        Kind::Error(e) => {
            assert_eq!((Code::from(e.code), e.about.as_str(), e.id), (Code::NotFound, "packet_out", 3), "{e:?}")
        }
        other => panic!("{other:?}"),
    }
    let out = receiver.wait_with_output().unwrap();
    let got = String::from_utf8_lossy(&out.stdout);
    let mut lines: Vec<&str> = got.lines().collect();
    lines.sort();
    assert_eq!(lines, vec!["into-r0", "out-of-r1"], "stderr: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_primary_crash_keeps_forwarding_new_primary_resyncs() {
    let topo = Topology::routed().unwrap();
    let server = Server::start(&topo.rtr).unwrap();
    let anon = server.client().await.unwrap();
    let first = open(&anon, 1).await;
    program_router(&topo, &mut first.client()).await.unwrap();
    let stream = UdpStream::start(&topo.h1, &topo.h2, H2_ADDR.parse().unwrap(), 7200, 2000).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let instance = first.arbitration.instance_id.clone();
    // The primary dies without a goodbye: its stream is simply gone.
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = open(&anon, 2).await;
    assert!(second.arbitration.primary);
    assert_eq!(second.arbitration.instance_id, instance, "same server run: no restart to recover from");
    // It resyncs anyway (a new controller process knows nothing): replay, nothing removed.
    let mut c = second.client();
    c.system.begin_resync(pb::BeginResyncRequest {}).await.unwrap();
    program_router(&topo, &mut c).await.unwrap();
    let end = c.system.end_resync(pb::EndResyncRequest {}).await.unwrap().into_inner();
    assert_eq!((end.routes, end.next_hops, end.interfaces), (0, 0, 0), "{end:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = stream.stop().unwrap();
    assert!(report.received > 500, "{report:?}");
    assert_eq!(report.lost, 0, "{report:?}");
    drop(second);

    // A restarted server has a new instance id.
    drop(anon);
    let mut server = server;
    server.stop().unwrap();
    server.restart().unwrap();
    let anon = server.client().await.unwrap();
    let third = open(&anon, 3).await;
    assert_ne!(third.arbitration.instance_id, instance);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_flow_idle_timeout_removed_and_announced_with_counters() {
    let (_ns, server, mut c) = server_forwarding_via_lo("dsi-").await.unwrap();
    // Flows are looked up on interfaces in flow mode.
    let mode = pb::SetFlowModeRequest { interface: "lo".into(), enabled: true, ..Default::default() };
    c.flows.set_flow_mode(mode).await.unwrap();
    let program = Harness::over_pins(&server.bpffs).unwrap();
    let mut s = open(&server.client().await.unwrap(), 1).await;
    let key = pb::FlowKey {
        vrf: 0,
        src: "192.0.2.10".into(),
        dst: "198.51.100.9".into(),
        protocol: 17,
        src_port: 4000,
        dst_port: 53,
    };
    let f = pb::Flow {
        key: Some(key.clone()),
        action: pb::FlowAction::Forward as i32,
        next_hop: 1,
        idle_timeout_ms: 1000,
        ..Default::default()
    };
    s.sender.decide(1, vec![f], pb::Atomicity::AllOrNothing).await.unwrap();
    let Kind::DecisionResult(r) = next_control(&mut s).await else { panic!() };
    assert_eq!(r.applied, 1, "{r:?}");
    let frame = udp_frame("198.51.100.9".parse().unwrap(), 4000, 53);
    for _ in 0..3 {
        assert_eq!(program.run(&frame).0, 4, "redirected by its flow");
    }
    let quiet = std::time::Instant::now();
    let removed = loop {
        match next_control(&mut s).await {
            Kind::FlowsRemoved(r) => break r.flows,
            Kind::Lost(l) => panic!("{l:?}"),
            _ => continue,
        }
    };
    let after = quiet.elapsed();
    assert_eq!(removed.len(), 1, "{removed:?}");
    let r = &removed[0];
    assert_eq!(r.key.as_ref(), Some(&key));
    assert_eq!(r.reason, pb::FlowRemovedReason::IdleTimeout as i32);
    assert_eq!((r.packets, r.idle_timeout_ms), (3, 1000), "{r:?}");
    assert!(r.bytes >= 3 * 42, "{r:?}");
    assert!(after >= Duration::from_millis(900) && after < Duration::from_millis(2500), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_delete_flows_on_disconnect_removes_its_flows_only() {
    let (_ns, server, mut c) = server_forwarding_via_lo("dsx-").await.unwrap();
    // Installed before any session: not the session's to remove.
    c.flows.install_flows(pb::InstallFlowsRequest { flows: vec![flow(900, 1)], ..Default::default() }).await.unwrap();
    let config = pb::SessionConfig { on_disconnect: pb::OnDisconnect::DeleteFlows as i32, ..Default::default() };
    let mut s = StreamChannel::open(&c, "", 1, config).await.unwrap();
    s.sender.decide(1, (0..5).map(|i| flow(i, 1)).collect(), pb::Atomicity::AllOrNothing).await.unwrap();
    let Kind::DecisionResult(r) = next_control(&mut s).await else { panic!() };
    assert_eq!(r.applied, 5);
    assert_eq!(flow_count(&mut c).await, 6);
    drop(s);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while flow_count(&mut c).await != 1 {
        assert!(std::time::Instant::now() < deadline, "the session's flows were not removed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(server);
}

/// The flow table read in batches (several kernel calls for 9,000 flows) lists each flow once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_decisions_nine_thousand_listed_each_once() {
    let (_ns, _server, mut c) = server_forwarding_via_lo("dsn-").await.unwrap();
    let mut s = open(&c, 1).await;
    s.sender.decide(1, (0..9000).map(|i| flow(i, 1)).collect(), pb::Atomicity::AllOrNothing).await.unwrap();
    let Kind::DecisionResult(r) = next_control(&mut s).await else { panic!() };
    assert_eq!(r.applied, 9000, "{:?}", r.failed.first());
    let mut stream = c.flows.list_flows(pb::ListFlowsRequest::default()).await.unwrap().into_inner();
    let mut keys = std::collections::HashSet::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        for f in chunk.flows {
            let k = f.key.unwrap();
            assert!(keys.insert((k.dst, k.src_port)), "listed twice");
        }
    }
    assert_eq!(keys.len(), 9000);
}

/// A miss no controller answers is dropped after the hold timeout, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_unanswered_miss_dropped_after_hold_timeout_and_counted() {
    let ns = Netns::new("dsu-").unwrap();
    let server = Server::start_with(&ns, &["--flow-hold-timeout-ms", "400"]).unwrap();
    let mut c = server.client().await.unwrap();
    c.interfaces.add_interface(pb::AddInterfaceRequest { name: "lo".into(), ..Default::default() }).await.unwrap();
    let nh = encap_nexthop(1, "lo", "02:00:00:00:00:01");
    c.routing.add_next_hops(pb::AddNextHopsRequest { next_hops: vec![nh], ..Default::default() }).await.unwrap();
    let route = pb::Route { vrf: 0, prefix: "0.0.0.0/0".into(), next_hop: 1 };
    c.routing.add_routes(pb::AddRoutesRequest { routes: vec![route], ..Default::default() }).await.unwrap();
    c.flows
        .set_flow_mode(pb::SetFlowModeRequest { interface: "lo".into(), enabled: true, ..Default::default() })
        .await
        .unwrap();
    let mut s = open(&c, 1).await;
    let program = Harness::over_pins(&server.bpffs).unwrap();
    program.run(&udp_frame("198.51.100.9".parse().unwrap(), 4001, 53));
    let Some(Kind::Misses(b)) = tokio::time::timeout(Duration::from_secs(5), s.next()).await.unwrap().unwrap() else {
        panic!("expected the miss")
    };
    assert_eq!(b.misses.len(), 1);
    let status = |c: &mut Client| {
        let mut c = c.clone();
        async move {
            let r = c.system.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner();
            (r.held_misses, r.unanswered_misses)
        }
    };
    assert_eq!(status(&mut c).await, (1, 0));
    // Not answered: after the hold timeout (and an aging pass) it is gone and counted.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while status(&mut c).await != (0, 1) {
        assert!(std::time::Instant::now() < deadline, "{:?}", status(&mut c).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A late decision for it fails, naming it.
    let f = pb::Flow { request_id: b.misses[0].request_id, action: pb::FlowAction::Drop as i32, ..Default::default() };
    s.sender.decide(5, vec![f], pb::Atomicity::ContinueOnError).await.unwrap();
    let Kind::DecisionResult(r) = next_control(&mut s).await else { panic!() };
    assert_eq!((r.applied, r.failed.len()), (0, 1), "{r:?}");
    assert_eq!(Code::from(r.failed[0].code), Code::NotFound);
}

/// A held first packet answered with DROP goes through the program once more (a plain test run
/// now, with nothing to send): counted under the interface's `drop_flow`, never delivered, and
/// the flow's next packet is dropped the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_drop_decision_held_packet_counted_dropped_not_delivered() {
    let topo = Topology::routed().unwrap();
    let server = Server::start(&topo.rtr).unwrap();
    let mut c = server.client().await.unwrap();
    program_router(&topo, &mut c).await.unwrap();
    c.flows
        .set_flow_mode(pb::SetFlowModeRequest { interface: topo.r0.clone(), enabled: true, ..Default::default() })
        .await
        .unwrap();
    let drop_flow = |c: &Client| {
        let (mut c, name) = (c.clone(), topo.r0.clone());
        async move {
            let r = c.interfaces.list_interfaces(pb::ListInterfacesRequest { name }).await.unwrap().into_inner();
            let counters = r.interfaces[0].counters.clone().unwrap();
            counters.reasons.iter().find(|r| r.reason == "drop_flow").map_or(0, |r| r.packets)
        }
    };
    let mut s = open(&c, 1).await;
    let recv = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('{H2_ADDR}',7000))\ns.settimeout(2)\nn=0\ntry:\n  while True:\n    s.recv(100); n+=1\nexcept socket.timeout:\n  pass\nprint(n)"
    );
    let receiver = topo.h2.command("python3", &["-c", &recv]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let send = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('{H1_ADDR}',20000))\ns.sendto(b'first',('{H2_ADDR}',7000))"
    );
    topo.h1.exec("python3", &["-c", &send]).unwrap();
    let Some(Kind::Misses(b)) = tokio::time::timeout(Duration::from_secs(5), s.next()).await.unwrap().unwrap() else {
        panic!("expected the miss")
    };
    assert_eq!(b.misses.len(), 1);
    assert_eq!(drop_flow(&c).await, 0);
    let f = pb::Flow { request_id: b.misses[0].request_id, action: pb::FlowAction::Drop as i32, ..Default::default() };
    s.sender.decide(1, vec![f], pb::Atomicity::AllOrNothing).await.unwrap();
    let Kind::DecisionResult(r) = next_control(&mut s).await else { panic!() };
    assert_eq!((r.applied, r.failed.len()), (1, 0), "{r:?}");
    assert_eq!(drop_flow(&c).await, 1, "the held packet went through the program and its DROP flow");
    topo.h1.exec("python3", &["-c", &send]).unwrap();
    let out = receiver.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0", "nothing of the dropped flow delivered");
    assert_eq!(drop_flow(&c).await, 2);
}

/// With the reader's wakeups moderated (`--flow-miss-gather-us`), a fast burst of misses (well
/// past the 20,000 a second that turns it on) still reaches the session whole, each miss once,
/// in fewer and larger batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_misses_with_moderated_wakeups_arrive_each_once() {
    let (_ns, server, mut c) =
        integration::server_forwarding_via_lo_with("dsm-", &["--flow-miss-gather-us", "200"]).await.unwrap();
    c.flows
        .set_flow_mode(pb::SetFlowModeRequest {
            interface: "lo".into(),
            enabled: true,
            punt_rate: 1_000_000,
            punt_burst: 100_000,
            hold_cap: 100_000,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut s = open(&c, 1).await;
    let program = Harness::over_pins(&server.bpffs).unwrap();
    const N: u16 = 3000;
    let sender = std::thread::spawn(move || {
        for p in 0..N {
            program.run(&udp_frame("198.51.100.9".parse().unwrap(), 10_000 + p, 53));
        }
    });
    let (mut seen, mut batches) = (std::collections::HashSet::new(), 0);
    while seen.len() < usize::from(N) {
        match tokio::time::timeout(Duration::from_secs(5), s.next()).await {
            Ok(Ok(Some(Kind::Misses(b)))) => {
                batches += 1;
                for m in b.misses {
                    let port = m.key.unwrap().src_port;
                    assert!(seen.insert(port), "miss of port {port} delivered twice");
                }
            }
            Ok(Ok(Some(Kind::Lost(l)))) => panic!("lost {l:?}"),
            Ok(Ok(Some(_))) => {}
            other => panic!("{} of {N} misses, then {other:?}", seen.len()),
        }
    }
    sender.join().unwrap();
    assert!(batches < usize::from(N) / 2, "{batches} batches for {N} misses: wakeups not gathered");
}

/// A PUNT policy rule's packets reach the primary session as packet-ins: whole (a 1,400-byte
/// frame arrives byte for byte), with the ingress interface, VRF, reason and length; the
/// packets themselves go on to the kernel stack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_punt_rule_packets_arrive_as_whole_packet_ins() {
    let (_ns, server, mut c) = server_forwarding_via_lo("dsp-").await.unwrap();
    punt_udp_port(&mut c, "dns", "lo", 53).await.unwrap();
    let mut s = open(&c, 1).await;
    let program = Harness::over_pins(&server.bpffs).unwrap();
    let frames: Vec<Vec<u8>> = [60usize, 1400, 700]
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            // A UDP datagram to port 53 whose frame is `len` bytes, its payload patterned.
            let room = len - packet::ETH_HLEN - packet::IPV4_HLEN - packet::UDP_HLEN;
            let payload: Vec<u8> = (0..room).map(|b| (b * 7 + i) as u8).collect();
            let datagram = packet::udp(4000 + i as u16, 53, &payload);
            let src = "192.0.2.10".parse().unwrap();
            let ip = packet::Ipv4::new(src, "198.51.100.7".parse().unwrap(), packet::IPPROTO_UDP);
            packet::Eth::new([0; 6], packet::L4_SENDER_MAC, packet::ETH_P_IPV4).frame(&ip.build(&datagram))
        })
        .collect();
    for f in &frames {
        assert_eq!(program.run(f).0, 2, "PUNT: the packet goes on to the kernel stack");
    }
    let mut got = Vec::new();
    while got.len() < frames.len() {
        match tokio::time::timeout(Duration::from_secs(5), s.next()).await.unwrap().unwrap() {
            Some(Kind::PacketIn(p)) => got.push(p),
            Some(Kind::Misses(b)) => panic!("a PUNT rule's packet came as a miss: {b:?}"),
            Some(_) => {}
            None => panic!("the session ended"),
        }
    }
    for (p, f) in got.iter().zip(&frames) {
        assert_eq!((p.interface.as_str(), p.vrf, p.reason.as_str()), ("lo", 0, "punt"), "{p:?}");
        assert_eq!(p.packet_length as usize, f.len());
        assert_eq!(p.frame.as_ref(), &f[..], "the frame whole, {} bytes", f.len());
    }
}

/// The unary InstallFlows takes an atomicity too, and its failed entries come back as the
/// status's BatchStatus detail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_flows_continue_on_error_details_list_the_bad_entries() {
    let (_ns, _server, mut c) = server_forwarding_via_lo("dsf-").await.unwrap();
    let mut flows: Vec<pb::Flow> = (0..1000).map(|i| flow(i, 1)).collect();
    flows[3].next_hop = 77;
    flows[640].key.as_mut().unwrap().protocol = 300;
    flows[999].key.as_mut().unwrap().vrf = 9;
    let req = |atomicity: pb::Atomicity| pb::InstallFlowsRequest { flows: flows.clone(), atomicity: atomicity as i32 };
    let e = c.flows.install_flows(req(pb::Atomicity::AllOrNothing)).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::NotFound, "flows[3].next_hop: next hop 77 not found"));
    let d = controller_client::batch_status(&e).expect("a BatchStatus detail");
    let got: Vec<(u32, Code)> = d.failed.iter().map(|f| (f.index, Code::from(f.code))).collect();
    assert_eq!(got, vec![(3, Code::NotFound), (640, Code::InvalidArgument), (999, Code::NotFound)]);
    assert_eq!((d.entries, d.applied, flow_count(&mut c).await), (1000, 0, 0));

    let e = c.flows.install_flows(req(pb::Atomicity::ContinueOnError)).await.unwrap_err();
    let d = controller_client::batch_status(&e).expect("a BatchStatus detail");
    assert_eq!(d.failed.iter().map(|f| f.index).collect::<Vec<_>>(), vec![3, 640, 999]);
    assert_eq!((d.applied, flow_count(&mut c).await), (997, 997));
    assert!(e.message().starts_with("3 of 1000 entries failed"), "{}", e.message());
}

/// DeleteFlows takes an atomicity too: CONTINUE_ON_ERROR deletes the flows present and lists the
/// absent and malformed keys; ALL_OR_NOTHING lists the same and deletes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_flows_continue_on_error_deletes_present_reports_absent() {
    let (_ns, _server, mut c) = server_forwarding_via_lo("dsg-").await.unwrap();
    let flows: Vec<pb::Flow> = (0..10).map(|i| flow(i, 1)).collect();
    c.flows.install_flows(pb::InstallFlowsRequest { flows: flows.clone(), ..Default::default() }).await.unwrap();
    let mut keys: Vec<pb::FlowKey> = flows.iter().map(|f| f.key.clone().unwrap()).collect();
    keys[2] = flow(500, 1).key.unwrap(); // never installed
    keys[7].src = "bad".into();
    let req = |atomicity: pb::Atomicity| pb::DeleteFlowsRequest { keys: keys.clone(), atomicity: atomicity as i32 };
    let e = c.flows.delete_flows(req(pb::Atomicity::AllOrNothing)).await.unwrap_err();
    let d = controller_client::batch_status(&e).expect("details");
    let got: Vec<(u32, Code)> = d.failed.iter().map(|f| (f.index, Code::from(f.code))).collect();
    assert_eq!(got, vec![(2, Code::NotFound), (7, Code::InvalidArgument)]);
    assert_eq!(flow_count(&mut c).await, 10, "all or nothing: nothing deleted");
    let e = c.flows.delete_flows(req(pb::Atomicity::ContinueOnError)).await.unwrap_err();
    let d = controller_client::batch_status(&e).expect("details");
    assert_eq!((d.failed.len(), d.applied), (2, 8));
    // Left: the two flows whose keys were replaced in the request (2 and 7).
    assert_eq!(flow_count(&mut c).await, 2);
}

/// With `max_unacked`, the server holds miss batches back until the controller acknowledges
/// the earlier ones (P4Runtime's digest acks); nothing is lost meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_miss_batches_wait_for_acks_past_max_unacked() {
    let (_ns, server, mut c) = server_forwarding_via_lo("dsa-").await.unwrap();
    let mode = pb::SetFlowModeRequest { interface: "lo".into(), enabled: true, ..Default::default() };
    c.flows.set_flow_mode(mode).await.unwrap();
    let config = pb::SessionConfig { max_unacked: 1, ..Default::default() };
    let mut s = StreamChannel::open(&c, "", 1, config).await.unwrap();
    let program = Harness::over_pins(&server.bpffs).unwrap();
    let miss = |port| program.run(&udp_frame("198.51.100.9".parse().unwrap(), port, 53));
    miss(5001);
    let first = next_batch(&mut s, Duration::from_secs(5)).await.expect("the first batch");
    assert_eq!((first.id, first.misses.len()), (1, 1));
    miss(5002);
    miss(5003);
    assert!(next_batch(&mut s, Duration::from_millis(500)).await.is_none(), "held back until batch 1 is acked");
    s.sender.ack(1).await.unwrap();
    let second = next_batch(&mut s, Duration::from_secs(5)).await.expect("released by the ack");
    assert_eq!((second.id, second.misses.len()), (2, 2), "both misses waited, none lost");
    let ports: Vec<u32> = second.misses.iter().map(|m| m.key.as_ref().unwrap().src_port).collect();
    assert_eq!(ports, vec![5002, 5003]);
}

/// The next miss batch within `wait`, or none.
async fn next_batch(s: &mut StreamChannel, wait: Duration) -> Option<pb::MissBatch> {
    match tokio::time::timeout(wait, s.next()).await {
        Ok(Ok(Some(Kind::Misses(b)))) => Some(b),
        Ok(other) => panic!("{other:?}"),
        Err(_) => None,
    }
}
