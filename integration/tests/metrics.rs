//! The Prometheus endpoint (`--metrics-listen`) of a real server: scraped from inside its
//! namespace, parsed by Prometheus's own OpenMetrics parser (the Python client's, strict: it
//! refuses an exposition that breaks the format), scraped again after traffic through the
//! attached program's maps and a few RPCs, with every counter that should move moved by
//! exactly what was sent.

use std::{collections::BTreeMap, io::Read, io::Write, net::IpAddr};

use controller_client::pb;
use integration::{enter_netns, l4_frame, Harness};

const ADDR: &str = "127.0.0.1:9464";
const XDP_REDIRECT: u32 = 4;

/// `GET /metrics` from inside namespace `ns`: status line, content type and body.
fn scrape(ns: &str, path: &str) -> (String, String, String) {
    let (ns, path) = (ns.to_owned(), path.to_owned());
    std::thread::spawn(move || {
        enter_netns(&ns).unwrap();
        let mut s = std::net::TcpStream::connect(ADDR).expect("the metrics endpoint listens");
        write!(s, "GET {path} HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n").unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
        let status = head.lines().next().unwrap_or_default().to_owned();
        let ctype = head
            .lines()
            .find_map(|l| l.strip_prefix("content-type: ").or_else(|| l.strip_prefix("Content-Type: ")))
            .unwrap_or_default()
            .to_owned();
        (status, ctype, body.to_owned())
    })
    .join()
    .unwrap()
}

/// Every sample of an OpenMetrics exposition, as `name{labels}` (labels sorted, JSON) -> value,
/// parsed by `prometheus_client.openmetrics.parser` (it fails on anything malformed).
fn parse(text: &str) -> BTreeMap<String, f64> {
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out[s.name + json.dumps(s.labels, sort_keys=True, separators=(",", ":"))] = s.value
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused the exposition: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn key(name: &str, labels: &[(&str, &str)]) -> String {
    let mut l: Vec<_> = labels.to_vec();
    l.sort();
    let json = l.iter().map(|(k, v)| format!("\"{k}\":\"{v}\"")).collect::<Vec<_>>().join(",");
    format!("{name}{{{json}}}")
}

fn sample(m: &BTreeMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let key = key(name, labels);
    *m.get(&key).unwrap_or_else(|| {
        panic!("no sample {key}; have {:?}", m.keys().filter(|k| k.starts_with(name)).collect::<Vec<_>>())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_scrape_parses_and_counters_move_with_traffic_and_rpcs() {
    let (ns, server, mut c) =
        integration::server_forwarding_via_lo_with("dme-", &["--metrics-listen", ADDR]).await.unwrap();
    // Everything on lo goes through XDP, which forwards 0/0 to next hop 1: the scrapes' own
    // packets (to 127.0.0.1) go to the stack through a RECEIVE next hop.
    let receive = pb::NextHop { id: 2, kind: Some(pb::next_hop::Kind::Receive(pb::Receive {})), ..Default::default() };
    c.routing.add_next_hops(pb::AddNextHopsRequest { next_hops: vec![receive], ..Default::default() }).await.unwrap();
    let route = pb::Route { vrf: 0, prefix: "127.0.0.0/8".into(), next_hop: 2 };
    c.routing.add_routes(pb::AddRoutesRequest { routes: vec![route], ..Default::default() }).await.unwrap();
    let (status, ctype, text) = scrape(&ns.name, "/metrics");
    assert!(status.contains("200"), "{status}");
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    let before = parse(&text);

    // 25 packets forwarded through next hop 1 by the attached program's maps.
    let xdp = Harness::over_pins(&server.bpffs).unwrap();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    for port in 0..25 {
        let (v, _) = xdp.run(&l4_frame(ip("192.0.2.10"), ip("198.51.100.7"), 17, 1000 + port, 53, 0));
        assert_eq!(v, XDP_REDIRECT);
    }
    // RPCs: 3 reads, 2 refused with NOT_FOUND.
    for _ in 0..3 {
        c.interfaces.list_interfaces(pb::ListInterfacesRequest::default()).await.unwrap();
    }
    for _ in 0..2 {
        let e = c.interfaces.delete_interface(pb::DeleteInterfaceRequest { name: "nope0".into() }).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
    }
    let (_, _, text) = scrape(&ns.name, "/metrics");
    let after = parse(&text);
    // A series first seen after the traffic was 0 before it (its label set had not occurred).
    let moved = |name: &str, labels: &[(&str, &str)]| {
        sample(&after, name, labels) - before.get(&key(name, labels)).copied().unwrap_or(0.0)
    };

    // The scrape's own packets are received on lo too.
    assert!(moved("dataplane_interface_rx_packets_total", &[("interface", "lo")]) >= 25.0);
    assert_eq!(
        moved("dataplane_interface_packets_total", &[("interface", "lo"), ("reason", "forwarded"), ("kind", "pass")]),
        25.0
    );
    assert_eq!(
        moved("dataplane_interface_packets_total", &[("interface", "lo"), ("reason", "drop_policy"), ("kind", "drop")]),
        0.0
    );
    assert_eq!(moved("dataplane_nexthop_packets_total", &[("nexthop", "1")]), 25.0);
    assert_eq!(sample(&after, "dataplane_nexthop_routes", &[("nexthop", "1")]), 2.0);
    assert_eq!(sample(&after, "dataplane_vrf_routes", &[("vrf", "0")]), 3.0);
    let list = [("method", "/dataplane.v1.Interfaces/ListInterfaces"), ("code", "OK")];
    assert_eq!(moved("dataplane_grpc_requests_total", &list), 3.0);
    assert_eq!(moved("dataplane_grpc_request_duration_seconds_count", &list), 3.0);
    let refused = [("method", "/dataplane.v1.Interfaces/DeleteInterface"), ("code", "NOT_FOUND")];
    assert_eq!(sample(&after, "dataplane_grpc_requests_total", &refused), 2.0);
    // Every call lands in the histogram's last bucket.
    let inf = [("method", "/dataplane.v1.Interfaces/DeleteInterface"), ("code", "NOT_FOUND"), ("le", "+Inf")];
    assert_eq!(sample(&after, "dataplane_grpc_request_duration_seconds_bucket", &inf), 2.0);
    assert!(sample(&after, "dataplane_map_capacity", &[("map", "FLOWS_V4")]) > 0.0);

    // Flow mode (held flows forwarded by route, so the scrapes still get through): one flow
    // installed, one miss held; the flow tables are counted by kind.
    c.flows
        .set_flow_mode(pb::SetFlowModeRequest {
            interface: "lo".into(),
            enabled: true,
            miss_action: pb::MissAction::ForwardByRoute as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    let key = pb::FlowKey {
        vrf: 0,
        src: "192.0.2.10".into(),
        dst: "198.51.100.7".into(),
        protocol: 17,
        src_port: 7000,
        dst_port: 53,
    };
    let flow = pb::Flow { key: Some(key), action: pb::FlowAction::Forward as i32, next_hop: 1, ..Default::default() };
    c.flows.install_flows(pb::InstallFlowsRequest { flows: vec![flow], ..Default::default() }).await.unwrap();
    xdp.run(&l4_frame(ip("192.0.2.10"), ip("198.51.100.7"), 17, 7001, 53, 0));
    let (_, _, text) = scrape(&ns.name, "/metrics");
    let flows = parse(&text);
    assert_eq!(sample(&flows, "dataplane_flow_entries", &[("family", "ipv4"), ("kind", "forward")]), 1.0);
    // The miss, and the scrape's own connection (its packets are flows too now).
    assert!(sample(&flows, "dataplane_flow_entries", &[("family", "ipv4"), ("kind", "hold")]) >= 1.0);
    assert_eq!(sample(&flows, "dataplane_flow_entries", &[("family", "ipv6"), ("kind", "forward")]), 0.0);

    let (status, _, _) = scrape(&ns.name, "/nothing");
    assert!(status.contains("404"), "{status}");
}
