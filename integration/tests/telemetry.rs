//! `Telemetry.WatchStats` on a real server: the first snapshot holds totals, the following
//! ones deltas that add up to exactly the traffic sent through the attached program's maps;
//! bad requests are refused naming the field; `dpctl stats watch` prints rates from it.

use std::{net::IpAddr, time::Duration};

use controller_client::pb;
use integration::{l4_frame, Harness};

const XDP_REDIRECT: u32 = 4;

fn forwarded(s: &pb::StatsSnapshot, interface: &str) -> u64 {
    s.interfaces
        .iter()
        .filter(|i| i.name == interface)
        .flat_map(|i| i.counters.iter().flat_map(|c| c.reasons.iter()))
        .filter(|r| r.reason == "forwarded")
        .map(|r| r.packets)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_watch_stats_deltas_add_up_to_traffic_sent() {
    let (_ns, server, mut c) = integration::server_forwarding_via_lo("dte-").await.unwrap();
    let req = pb::WatchStatsRequest { interval_ms: 200, deltas: true, interface: "lo".into() };
    let mut stream = c.telemetry.watch_stats(req).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(first.totals && first.seq == 1 && first.elapsed_ns == 0, "{first:?}");
    assert_eq!(first.interfaces.len(), 1, "only lo");

    let xdp = Harness::over_pins(&server.bpffs).unwrap();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    for port in 0..25 {
        let (v, _) = xdp.run(&l4_frame(ip("192.0.2.10"), ip("198.51.100.7"), 17, 2000 + port, 53, 0));
        assert_eq!(v, XDP_REDIRECT);
    }
    // The deltas, however the 25 fell across intervals, add up to 25; and stay there.
    let (mut sum, mut nh, mut seq) = (0, 0, first.seq);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut quiet_after = 0;
    while quiet_after < 3 {
        let s =
            tokio::time::timeout_at(deadline, stream.message()).await.expect("snapshots keep coming").unwrap().unwrap();
        assert_eq!(s.seq, seq + 1, "numbered in order");
        seq = s.seq;
        assert!(!s.totals && s.elapsed_ns > 100_000_000, "{s:?}");
        let f = forwarded(&s, "lo");
        sum += f;
        nh += s.next_hops.iter().filter(|n| n.id == 1).map(|n| n.packets).sum::<u64>();
        if sum == 25 && f == 0 {
            quiet_after += 1;
        }
    }
    assert_eq!((sum, nh), (25, 25));

    // Totals: the forwarded count includes the 25.
    let req = pb::WatchStatsRequest { interval_ms: 100, deltas: false, interface: String::new() };
    let mut totals = c.telemetry.watch_stats(req).await.unwrap().into_inner();
    let a = totals.message().await.unwrap().unwrap();
    let b = totals.message().await.unwrap().unwrap();
    assert!(a.totals && b.totals && forwarded(&b, "lo") >= 25, "{b:?}");

    let e = c.telemetry.watch_stats(pb::WatchStatsRequest { interval_ms: 50, ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("interval_ms"), "{}", e.message());
    let e = c
        .telemetry
        .watch_stats(pb::WatchStatsRequest { interface: "nope0".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{}", e.message());

    // dpctl: two intervals of rates as JSON lines, while a stream of packets runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let frame = l4_frame(ip("192.0.2.10"), ip("198.51.100.7"), 17, 3000, 53, 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                xdp.run(&frame);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let address = server.address();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(integration::bin("dpctl"))
            .args(["--server", &address, "-o", "json", "stats", "watch", "--interval-ms", "300"])
            .args(["--interface", "lo", "--count", "2"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sender.join().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    for l in &lines {
        let lo = &l["interfaces"][0];
        assert_eq!(lo["interface"], "lo");
        // ~1 packet per ms sent: well above zero, well below what 1 ms sleeps allow.
        let pps = lo["reasons_per_s"]["forwarded"].as_f64().unwrap_or(0.0);
        assert!(pps > 50.0 && pps < 2000.0, "{l}");
    }
}
