//! Per-flow timeouts through the real kernel: flows installed with an idle or a hard timeout,
//! their packets run through `dp_xdp_ingress` over the server's pins (BPF_PROG_TEST_RUN, so the
//! kernel moves their counters and last-seen times), are listed with their timeouts and counters,
//! and the server's aging removes each at its time: the idle one once idle for its timeout, the
//! hard one at its timeout although packets keep hitting it.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use controller_client::{pb, Client};
use integration::{l4_frame, Harness};

const XDP_REDIRECT: u32 = 4;
/// How late after its timeout a flow may still be listed: the aging period (250 ms by default)
/// plus a loaded machine's slack. (Early: by no more than the time between the kernel's clock
/// reading and the test's, 50 ms at most.)
const LATE: Duration = Duration::from_millis(650);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn key(sport: u16) -> pb::FlowKey {
    pb::FlowKey {
        vrf: 0,
        src: "192.0.2.10".into(),
        dst: "198.51.100.7".into(),
        protocol: 17,
        src_port: sport.into(),
        dst_port: 53,
    }
}

fn frame(sport: u16) -> Vec<u8> {
    l4_frame(ip("192.0.2.10"), ip("198.51.100.7"), 17, sport, 53, 0)
}

/// The installed (not held) flows, by key.
async fn installed(c: &mut Client) -> Vec<pb::Flow> {
    let mut stream = c.flows.list_flows(pb::ListFlowsRequest::default()).await.unwrap().into_inner();
    let mut all = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        all.extend(chunk.flows.into_iter().filter(|f| f.action != pb::FlowAction::Hold as i32));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_idle_and_hard_timeouts_remove_each_flow_at_its_time_through_the_kernel() {
    let (_ns, server, mut c) = integration::server_forwarding_via_lo("dpft-").await.unwrap();
    c.flows
        .set_flow_mode(pb::SetFlowModeRequest {
            interface: "lo".into(),
            enabled: true,
            punt_rate: 100_000,
            punt_burst: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    let xdp = Harness::over_pins(&server.bpffs).expect("load dp_xdp_ingress over the server's pins");
    let (idle, hard) = (4000u16, 4001u16);
    let flows = vec![
        // Idle 1 s, with its reply direction (which takes the same timeouts).
        pb::Flow {
            key: Some(key(idle)),
            action: pb::FlowAction::Forward as i32,
            next_hop: 1,
            reverse_action: pb::FlowAction::Drop as i32,
            idle_timeout_ms: 1000,
            ..Default::default()
        },
        // Hard 2 s; idle 60 s so that only the hard timeout can take it.
        pb::Flow {
            key: Some(key(hard)),
            action: pb::FlowAction::Forward as i32,
            next_hop: 1,
            idle_timeout_ms: 60_000,
            hard_timeout_ms: 2000,
            ..Default::default()
        },
    ];
    c.flows.install_flows(pb::InstallFlowsRequest { flows, ..Default::default() }).await.unwrap();
    let installed_at = Instant::now();
    for _ in 0..5 {
        assert_eq!(xdp.run(&frame(idle)).0, XDP_REDIRECT);
    }
    assert_eq!(xdp.run(&frame(hard)).0, XDP_REDIRECT);
    let idle_since = Instant::now();

    let listed = installed(&mut c).await;
    let by = |sport: u16, reverse: bool| {
        listed
            .iter()
            .find(|f| {
                let k = f.key.as_ref().unwrap();
                if reverse {
                    k.dst_port == u32::from(sport)
                } else {
                    k.src_port == u32::from(sport)
                }
            })
            .unwrap_or_else(|| panic!("flow {sport} (reverse: {reverse}) listed: {listed:?}"))
    };
    let f = by(idle, false);
    assert_eq!((f.idle_timeout_ms, f.hard_timeout_ms, f.packets), (1000, 0, 5), "{f:?}");
    assert_eq!(f.bytes, 5 * frame(idle).len() as u64, "{f:?}");
    let r = by(idle, true);
    assert_eq!((r.idle_timeout_ms, r.hard_timeout_ms, r.packets), (1000, 0, 0), "{r:?}");
    let f = by(hard, false);
    assert_eq!((f.idle_timeout_ms, f.hard_timeout_ms, f.packets), (60_000, 2000, 1), "{f:?}");

    // Keep the hard-timeout flow busy (a packet every 50 ms) and watch both go.
    let (mut idle_gone, mut hard_gone) = (None, None);
    let mut busy = 1u64;
    while (idle_gone.is_none() || hard_gone.is_none()) && installed_at.elapsed() < Duration::from_secs(6) {
        if hard_gone.is_none() {
            let (v, _) = xdp.run(&frame(hard));
            busy += u64::from(v == XDP_REDIRECT);
        }
        let listed = installed(&mut c).await;
        let has = |sport: u16| listed.iter().any(|f| f.key.as_ref().unwrap().src_port == u32::from(sport));
        if idle_gone.is_none() && !has(idle) {
            idle_gone = Some(idle_since.elapsed());
            assert!(
                !listed.iter().any(|f| f.key.as_ref().unwrap().dst_port == u32::from(idle)),
                "the reply direction, idle as long, went with it: {listed:?}"
            );
        }
        if hard_gone.is_none() {
            match listed.iter().find(|f| f.key.as_ref().unwrap().src_port == u32::from(hard)) {
                Some(f) => assert_eq!(f.packets, busy, "the hard flow counts its packets: {busy} sent, {f:?}"),
                None => hard_gone = Some(installed_at.elapsed()),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let idle_gone = idle_gone.expect("the idle flow was removed within 6 s");
    let hard_gone = hard_gone.expect("the busy flow was removed at its hard timeout within 6 s");
    assert!(
        idle_gone >= Duration::from_millis(950) && idle_gone <= Duration::from_millis(1000) + LATE,
        "the 1 s idle flow went {idle_gone:?} after its last packet"
    );
    assert!(
        hard_gone >= Duration::from_millis(1950) && hard_gone <= Duration::from_millis(2000) + LATE,
        "the 2 s hard flow went {hard_gone:?} after its installation, busy throughout ({busy} packets)"
    );
    assert!(busy >= 20, "the hard flow was kept busy until it went: {busy} packets");
}

/// Flows without timeouts of their own age by the server-wide idle timeout, which only a walk
/// of the whole table finds (a page of 1,024 flows at a time, with pauses between pages): with
/// that timeout at 1 s the walk runs every 250 ms. A table of several pages is listed whole
/// (ListFlows reads it a page at a time too), and every flow in it goes at its time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_server_idle_timeout_walk_across_pages_removes_every_flow() {
    let (_ns, _server, mut c) =
        integration::server_forwarding_via_lo_with("dpfp-", &["--flow-idle-timeout-secs", "1"]).await.unwrap();
    const N: u16 = 5000;
    let flows: Vec<pb::Flow> = (0..N)
        .map(|i| pb::Flow {
            key: Some(key(10_000 + i)),
            action: pb::FlowAction::Forward as i32,
            next_hop: 1,
            ..Default::default()
        })
        .collect();
    c.flows.install_flows(pb::InstallFlowsRequest { flows, ..Default::default() }).await.unwrap();
    let installed_at = Instant::now();
    let mut ports: Vec<u32> = installed(&mut c).await.iter().map(|f| f.key.as_ref().unwrap().src_port).collect();
    ports.sort_unstable();
    assert_eq!(ports, (10_000..10_000 + u32::from(N)).collect::<Vec<_>>(), "every flow listed once");
    // A walk over 5 pages takes ~10 ms of pauses: all gone by the timeout plus the usual slack.
    let mut left = usize::from(N);
    while left > 0 && installed_at.elapsed() < Duration::from_secs(1) + 2 * LATE {
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = installed(&mut c).await.len();
    }
    assert_eq!(left, 0, "flows still listed {:?} after install", installed_at.elapsed());
    assert!(installed_at.elapsed() > Duration::from_millis(950), "aged out before their timeout");
}
