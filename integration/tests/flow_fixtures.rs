//! The flow stage of the real XDP program through BPF_PROG_TEST_RUN (a copy of `dp_xdp_ingress`
//! over the server's pinned maps, received on the loopback the server attached), with the real
//! server reading the ring buffer: HOLD dedupes a flow's misses into one event, an installed flow
//! is hit without punting again and counts, the HOLD cap and the punt rate hold under a burst of
//! 100,000 distinct flows with counters that add up exactly, IPv4 and IPv6.

use std::{net::IpAddr, time::Duration};

use controller_client::{pb, Client};
use integration::{l4_frame, Harness, Netns, Server};

const XDP_DROP: u32 = 1;
const XDP_REDIRECT: u32 = 4;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

async fn setup(prefix: &str) -> (Netns, Server, Client) {
    integration::server_forwarding_via_lo(prefix).await.unwrap()
}

async fn flow_mode(c: &mut Client, hold_cap: u32, punt_rate: u32, punt_burst: u32) {
    c.flows
        .set_flow_mode(pb::SetFlowModeRequest {
            interface: "lo".into(),
            enabled: true,
            hold_cap,
            punt_rate,
            punt_burst,
            ..Default::default()
        })
        .await
        .unwrap();
}

/// Misses received within `wait` after the last one.
async fn drain(stream: &mut tonic::Streaming<pb::FlowMissMessage>, wait: Duration) -> Vec<pb::FlowMiss> {
    let mut out = Vec::new();
    while let Ok(Ok(Some(m))) = tokio::time::timeout(wait, stream.message()).await {
        match m.kind {
            Some(pb::flow_miss_message::Kind::Miss(miss)) => out.push(miss),
            other => panic!("unexpected {other:?}"),
        }
    }
    out
}

async fn reason(c: &mut Client, name: &str) -> u64 {
    let r = c.interfaces.list_interfaces(pb::ListInterfacesRequest { name: "lo".into() }).await.unwrap().into_inner();
    r.interfaces[0].counters.as_ref().unwrap().reasons.iter().find(|r| r.reason == name).map(|r| r.packets).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_hold_dedupes_misses_installed_flow_hits_and_counts_v4_v6() {
    let (_ns, server, mut c) = setup("dpfl-").await;
    flow_mode(&mut c, 4096, 100_000, 1000).await;
    let mut stream =
        c.flows.subscribe_flow_misses(pb::SubscribeFlowMissesRequest::default()).await.unwrap().into_inner();
    let xdp = Harness::over_pins(&server.bpffs).expect("load dp_xdp_ingress over the server\'s pins");
    for (src, dst) in [("192.0.2.10", "198.51.100.7"), ("2001:db8:1::10", "2001:db8:2::7")] {
        let frame = l4_frame(ip(src), ip(dst), 17, 4000, 53, 0);
        for _ in 0..100 {
            assert_eq!(xdp.run(&frame).0, XDP_DROP, "held packets are dropped (the first is captured)");
        }
        let misses = drain(&mut stream, Duration::from_millis(500)).await;
        assert_eq!(misses.len(), 1, "100 packets of one flow -> one event: {misses:?}");
        let m = &misses[0];
        let key = m.key.clone().unwrap();
        assert_eq!(
            (key.src.as_str(), key.dst.as_str(), key.protocol, key.src_port, key.dst_port),
            (src, dst, 17, 4000, 53)
        );
        assert_eq!(m.interface, "lo");
        assert_eq!(m.packet_length as usize, frame.len());
        assert_eq!(m.packet, frame[..frame.len().min(256)], "the event carries the packet");

        // IPv4 answers by key, with the reply direction too; IPv6 by the miss's request id.
        let flow = if src.contains('.') {
            pb::Flow {
                key: Some(key),
                action: pb::FlowAction::Forward as i32,
                next_hop: 1,
                reverse_action: pb::FlowAction::Drop as i32,
                ..Default::default()
            }
        } else {
            pb::Flow {
                request_id: m.request_id,
                action: pb::FlowAction::Forward as i32,
                next_hop: 1,
                ..Default::default()
            }
        };
        c.flows.install_flows(pb::InstallFlowsRequest { flows: vec![flow], ..Default::default() }).await.unwrap();
        for _ in 0..10 {
            let (v, out) = xdp.run(&frame);
            assert_eq!(v, XDP_REDIRECT);
            assert_eq!(out[..6], [2, 0, 0, 0, 0, 1], "out through the flow's next hop");
        }
        assert!(drain(&mut stream, Duration::from_millis(300)).await.is_empty(), "a hit is not punted again");
    }
    // The IPv4 reply direction was installed alongside: a reply is dropped by its flow.
    let reply = l4_frame(ip("198.51.100.7"), ip("192.0.2.10"), 17, 53, 4000, 0);
    assert_eq!(xdp.run(&reply).0, XDP_DROP);
    assert!(drain(&mut stream, Duration::from_millis(300)).await.is_empty(), "the reply hit its flow, no miss");
    // A request id nobody holds is refused, naming the field.
    let e = c
        .flows
        .install_flows(pb::InstallFlowsRequest {
            flows: vec![pb::Flow { request_id: 12345, action: pb::FlowAction::Drop as i32, ..Default::default() }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert!(e.message().starts_with("flows[0].request_id"), "{}", e.message());

    let mut list = c.flows.list_flows(pb::ListFlowsRequest::default()).await.unwrap().into_inner();
    let mut flows = list.message().await.unwrap().unwrap().flows;
    let reverse = flows.iter().position(|f| f.action == pb::FlowAction::Drop as i32).expect("the reverse flow");
    assert_eq!(flows[reverse].packets, 1, "{flows:?}");
    flows.remove(reverse);
    assert_eq!(flows.len(), 2, "{flows:?}");
    for f in &flows {
        assert_eq!(f.action, pb::FlowAction::Forward as i32);
        // The HOLD counted 100 packets; the installed flow starts from zero and counts its own:
        // the re-injected first packet and the 10 test runs.
        assert_eq!(f.packets, 11, "{f:?}");
    }
    assert_eq!((reason(&mut c, "flow_miss_punted").await, reason(&mut c, "drop_flow_held").await), (2, 198));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_hold_cap_and_punt_rate_hold_under_100k_flow_burst_counters_exact() {
    let (_ns, server, mut c) = setup("dpfc-").await;
    let mut stream =
        c.flows.subscribe_flow_misses(pb::SubscribeFlowMissesRequest::default()).await.unwrap().into_inner();
    let bpffs = server.bpffs.clone();
    // Punt buckets are per CPU: run every burst from one thread pinned to CPU 0.
    let burst = move |base: u32| {
        let bpffs = bpffs.clone();
        std::thread::spawn(move || {
            // SAFETY: a zeroed cpu_set_t with CPU 0 set, for this thread.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(0, &mut set);
                assert_eq!(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set), 0);
            }
            let xdp = Harness::over_pins(&bpffs).expect("load dp_xdp_ingress over the server\'s pins");
            for i in 0..100_000u32 {
                let n = base + i;
                let dst = IpAddr::V4(std::net::Ipv4Addr::from(0xc633_6400u32 | (n & 0xff)));
                assert_eq!(xdp.run(&l4_frame(ip("192.0.2.10"), dst, 17, (n >> 8) as u16, 53, 0)).0, XDP_DROP);
            }
        })
        .join()
        .unwrap();
    };

    // Cap 300 (below the burst of 500 tokens): exactly 300 punted, the rest over the cap.
    flow_mode(&mut c, 300, 1, 500).await;
    burst(0);
    let misses = drain(&mut stream, Duration::from_millis(500)).await;
    let (punted, capped) = (reason(&mut c, "flow_miss_punted").await, reason(&mut c, "drop_flow_hold_cap").await);
    assert_eq!((punted, capped), (300, 99_700));
    assert_eq!(misses.len(), 300, "every punt is an event");

    // A cap that does not bind: the punt rate does (burst 500, 1 token per second per CPU).
    flow_mode(&mut c, 1_000_000, 1, 500).await;
    burst(100_000);
    let misses = drain(&mut stream, Duration::from_millis(500)).await;
    let punted2 = reason(&mut c, "flow_miss_punted").await - punted;
    let limited = reason(&mut c, "drop_punt_rate").await;
    assert_eq!(punted2 + limited, 100_000, "every miss is either punted or counted as rate limited");
    // CPU 0's bucket held 200 tokens left over from the first burst, plus one per second since.
    assert!((200..=230).contains(&punted2), "punted {punted2}");
    assert_eq!(misses.len() as u64, punted2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_punt_policy_rule_sends_event_packet_goes_to_stack() {
    let (_ns, server, mut c) = setup("dpfp-").await;
    integration::punt_udp_port(&mut c, "dns", "lo", 53).await.unwrap();
    let mut stream =
        c.flows.subscribe_flow_misses(pb::SubscribeFlowMissesRequest::default()).await.unwrap().into_inner();
    let xdp = Harness::over_pins(&server.bpffs).expect("load dp_xdp_ingress over the server\'s pins");
    let frame = l4_frame(ip("192.0.2.10"), ip("198.51.100.7"), 17, 4000, 53, 0);
    for _ in 0..3 {
        assert_eq!(xdp.run(&frame).0, 2, "PUNT: the packet goes on to the kernel stack");
    }
    let misses = drain(&mut stream, Duration::from_millis(500)).await;
    assert_eq!(misses.len(), 3, "no HOLD for PUNT: every packet is reported: {misses:?}");
    assert!(misses.iter().all(|m| m.reason == "punt" && m.key.as_ref().unwrap().dst_port == 53));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_two_subscribers_get_every_event_stalled_one_gets_lag_notice() {
    let (_ns, server, mut c) = setup("dpfs-").await;
    flow_mode(&mut c, 1_000_000, 1_000_000, 1_000_000).await;
    let mut a = c.flows.subscribe_flow_misses(pb::SubscribeFlowMissesRequest::default()).await.unwrap().into_inner();
    let mut b = c.flows.subscribe_flow_misses(pb::SubscribeFlowMissesRequest::default()).await.unwrap().into_inner();
    // The stalled subscriber on a connection of its own with small HTTP/2 windows, so little of
    // what it does not read is buffered on the way.
    let address: controller_client::ServerAddress = format!("unix:{}", server.socket.display()).parse().unwrap();
    let mut slow = Client::connect_with_window(&address, 65_535).await.unwrap();
    let mut stalled =
        slow.flows.subscribe_flow_misses(pb::SubscribeFlowMissesRequest::default()).await.unwrap().into_inner();
    // Loaded before the clock starts: verifying it can take seconds on a busy machine.
    let xdp = Harness::over_pins(&server.bpffs).expect("load dp_xdp_ingress over the server\'s pins");
    // More than the stalled subscriber's queue (4,096) plus what its 64 KiB HTTP/2 window and
    // the socket buffers hold.
    let total = 12_000u32;
    let sender = std::thread::spawn(move || {
        for n in 0..total {
            let dst = IpAddr::V4(std::net::Ipv4Addr::from(0xc633_6400u32 | (n & 0xff)));
            xdp.run(&l4_frame(ip("192.0.2.10"), dst, 17, (n >> 8) as u16, 53, 0));
            if n % 100 == 99 {
                // About 6,000 misses a second: within what a reading subscriber takes even on a
                // loaded test machine.
                std::thread::sleep(Duration::from_millis(15));
            }
        }
    });
    // A and B read as the events come; `stalled` reads nothing until the end.
    let (ra, rb) = tokio::join!(drain(&mut a, Duration::from_secs(5)), drain(&mut b, Duration::from_secs(5)));
    sender.join().unwrap();
    let punted = reason(&mut c, "flow_miss_punted").await;
    assert_eq!(ra.len() as u64, punted, "subscriber A got every event");
    assert_eq!(rb.len() as u64, punted, "subscriber B got every event");
    assert_eq!(punted, u64::from(total));
    let seqs: Vec<u64> = ra.iter().map(|m| m.seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "no gaps for a reader that keeps up");

    let mut got = 0u64;
    let mut lost = 0u64;
    while let Ok(Ok(Some(m))) = tokio::time::timeout(Duration::from_secs(2), stalled.message()).await {
        match m.kind {
            Some(pb::flow_miss_message::Kind::Miss(_)) => got += 1,
            Some(pb::flow_miss_message::Kind::Lagged(n)) => lost += n,
            None => {}
        }
    }
    assert!(lost > 0, "the stalled subscriber is told it lost events");
    assert_eq!(got + lost, punted, "what it got plus what it was told it lost is everything");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_unanswered_holds_and_idle_flows_age_out_hold_cap_recovers() {
    let ns = Netns::new("dpfa-").unwrap();
    let server = Server::start_with(&ns, &["--flow-hold-timeout-ms", "400", "--flow-idle-timeout-secs", "1"]).unwrap();
    let mut c = server.client().await.unwrap();
    c.interfaces.add_interface(pb::AddInterfaceRequest { name: "lo".into(), ..Default::default() }).await.unwrap();
    let nh = pb::NextHop { id: 1, kind: Some(pb::next_hop::Kind::Discard(pb::Discard {})), ..Default::default() };
    c.routing
        .add_next_hops(pb::AddNextHopsRequest { next_hops: vec![nh], replace: false, ..Default::default() })
        .await
        .unwrap();
    c.routing
        .add_routes(pb::AddRoutesRequest {
            routes: vec![pb::Route { vrf: 0, prefix: "0.0.0.0/0".into(), next_hop: 1 }],
            replace: false,
            ..Default::default()
        })
        .await
        .unwrap();
    // A cap of 5: unanswered HOLDs fill it, aging must free it again.
    flow_mode(&mut c, 5, 100_000, 1000).await;
    let xdp = Harness::over_pins(&server.bpffs).expect("load dp_xdp_ingress over the server\'s pins");
    let frame = |port: u16| l4_frame(ip("192.0.2.10"), ip("198.51.100.7"), 17, port, 53, 0);
    for p in 0..10 {
        xdp.run(&frame(p));
    }
    assert_eq!((reason(&mut c, "flow_miss_punted").await, reason(&mut c, "drop_flow_hold_cap").await), (5, 5));
    // An installed flow, idle from now on.
    let key = pb::FlowKey {
        vrf: 0,
        src: "192.0.2.10".into(),
        dst: "198.51.100.7".into(),
        protocol: 17,
        src_port: 999,
        dst_port: 53,
    };
    let flow = pb::Flow { key: Some(key), action: pb::FlowAction::Drop as i32, ..Default::default() };
    c.flows.install_flows(pb::InstallFlowsRequest { flows: vec![flow], ..Default::default() }).await.unwrap();

    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut list = c.flows.list_flows(pb::ListFlowsRequest::default()).await.unwrap().into_inner();
    let mut left = Vec::new();
    while let Some(chunk) = list.message().await.unwrap() {
        left.extend(chunk.flows);
    }
    assert!(left.is_empty(), "HOLDs past the hold timeout and flows past the idle timeout are gone: {left:?}");
    // The cap counts only live HOLDs again: new misses are punted.
    for p in 100..103 {
        xdp.run(&frame(p));
    }
    assert_eq!(reason(&mut c, "flow_miss_punted").await, 8);
}

/// Unanswered HOLDs go by schedule (no walk of the table: the server-wide idle timeout of 300 s
/// leaves the first walk, at start, as the only one during the test), removed in the kernel by
/// `dp_sweep_holds` only while the entry is still the HOLD of the miss the server holds: a key
/// whose entry became another miss's HOLD meanwhile (an eviction and a miss the server never
/// read) keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_expired_holds_swept_in_kernel_only_while_still_their_own() {
    let ns = Netns::new("dpsw-").unwrap();
    let server = Server::start_with(&ns, &["--flow-hold-timeout-ms", "400"]).unwrap();
    let mut c = server.client().await.unwrap();
    c.interfaces.add_interface(pb::AddInterfaceRequest { name: "lo".into(), ..Default::default() }).await.unwrap();
    flow_mode(&mut c, 1000, 100_000, 1000).await;
    let mut xdp = Harness::over_pins(&server.bpffs).expect("load dp_xdp_ingress over the server\'s pins");
    let key = |port: u16| dataplane_common::flow::FlowKeyV4 {
        vrf: 0,
        src: [192, 0, 2, 10],
        dst: [198, 51, 100, 7],
        sport: port,
        dport: 53,
        proto: 17,
        _pad: [0; 3],
    };
    let ports: Vec<u16> = (1..=300).collect();
    for &p in &ports {
        xdp.run(&l4_frame(ip("192.0.2.10"), ip("198.51.100.7"), 17, p, 53, 0));
    }
    let holds: Vec<_> = ports.iter().map(|&p| xdp.flow_v4(key(p)).expect("a HOLD per miss")).collect();
    assert!(holds.iter().all(|v| v.action == dataplane_common::flow::FLOW_HOLD));
    // Port 7's entry becomes a later miss's HOLD (another request id).
    let mut later = holds[6];
    later.request_id += 1_000_000;
    xdp.put_flow_v4(key(7), later);

    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let status = c.system.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner();
        let left: Vec<u16> = ports.iter().copied().filter(|&p| xdp.flow_v4(key(p)).is_some()).collect();
        if left == [7] && (status.held_misses, status.unanswered_misses) == (0, 300) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "HOLDs left {left:?}; held {}, unanswered {}",
            status.held_misses,
            status.unanswered_misses
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(xdp.flow_v4(key(7)).map(|v| v.request_id), Some(later.request_id), "the other miss's HOLD stays");
    assert_eq!(reason(&mut c, "flow_miss_punted").await, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_table_overfilled_lru_evicts_and_forwarding_goes_on() {
    let (_ns, server, mut c) = setup("dpfe-").await;
    // Held flows and evicted ones go by route meanwhile.
    c.flows
        .set_flow_mode(pb::SetFlowModeRequest {
            interface: "lo".into(),
            enabled: true,
            miss_action: pb::MissAction::ForwardByRoute as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    let nh2 = integration::encap_nexthop(2, "lo", "02:00:00:00:00:02");
    c.routing
        .add_next_hops(pb::AddNextHopsRequest { next_hops: vec![nh2], replace: false, ..Default::default() })
        .await
        .unwrap();
    let key = |n: u32| pb::FlowKey {
        vrf: 0,
        src: "192.0.2.10".into(),
        dst: std::net::Ipv4Addr::from(0xcb00_7100u32 | (n & 0xff)).to_string(),
        protocol: 17,
        src_port: n >> 8,
        dst_port: 53,
    };
    let flow = |n: u32| pb::Flow {
        key: Some(key(n)),
        action: pb::FlowAction::Forward as i32,
        next_hop: 2,
        ..Default::default()
    };
    let xdp = Harness::over_pins(&server.bpffs).expect("load dp_xdp_ingress over the server\'s pins");
    let frame = |n: u32| l4_frame(ip("192.0.2.10"), ip(&key(n).dst), 17, (n >> 8) as u16, 53, 0);

    // 300,000 flows into a 262,144-entry table: the LRU makes room.
    for chunk in (0..300_000u32).collect::<Vec<_>>().chunks(50_000) {
        c.flows
            .install_flows(pb::InstallFlowsRequest {
                flows: chunk.iter().map(|&n| flow(n)).collect(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let mut list = c.flows.list_flows(pb::ListFlowsRequest::default()).await.unwrap().into_inner();
    let mut count = 0;
    while let Some(chunk) = list.message().await.unwrap() {
        count += chunk.flows.len();
    }
    assert!(count <= dataplane_common::flow::MAX_FLOWS as usize && count > 200_000, "{count} flows");
    // Recent flows hit, the oldest were evicted and go by route: every packet is forwarded.
    for n in [0, 1, 1000, 299_998, 299_999] {
        let (v, out) = xdp.run(&frame(n));
        assert_eq!(v, XDP_REDIRECT, "flow {n}");
        assert!(out[..6] == [2, 0, 0, 0, 0, 2] || out[..6] == [2, 0, 0, 0, 0, 1], "flow {n}: {:02x?}", &out[..6]);
    }
    // And an evicted flow can be installed again.
    c.flows.install_flows(pb::InstallFlowsRequest { flows: vec![flow(0)], ..Default::default() }).await.unwrap();
    let (v, out) = xdp.run(&frame(0));
    assert_eq!((v, &out[..6]), (XDP_REDIRECT, &[2u8, 0, 0, 0, 0, 2][..]));
}
