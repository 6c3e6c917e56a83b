//! dpctl against the real server: verbs, table and JSON output, and errors that print the gRPC
//! code and exit non-zero.

use integration::{Server, Topology};
use serde_json::Value;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs dpctl, asserts success, returns its stdout.
fn ok(server: &Server, args: &[&str]) -> String {
    let o = server.dpctl(args);
    assert!(o.status.success(), "dpctl {args:?}: {}", stderr(&o));
    stdout(&o)
}

/// Runs dpctl, asserts exit 1 with `error: CODE: ...`, returns its stderr.
fn fails(server: &Server, args: &[&str], code: &str) -> String {
    let o = server.dpctl(args);
    assert_eq!(o.status.code(), Some(1), "dpctl {args:?} should fail: {}", stdout(&o));
    assert!(stderr(&o).starts_with(&format!("error: {code}: ")), "dpctl {args:?}: {}", stderr(&o));
    stderr(&o)
}

#[test]
fn dpctl_interface_add_list_del_round_trip() {
    let topo = Topology::new().unwrap();
    topo.ping_h1_to_h2(1).unwrap();
    let server = Server::start(&topo.rtr).unwrap();

    let o = server.dpctl(&["interface", "add", &topo.r0, "--mode", "native"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains(&format!("attached {}", topo.r0)), "{}", stdout(&o));

    topo.ping_h1_to_h2(4).unwrap();

    let o = server.dpctl(&["interface", "list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = stdout(&o);
    let header = table.lines().next().unwrap();
    assert!(header.starts_with("NAME") && header.contains("RX_PKTS"), "{table}");
    let row = table.lines().find(|l| l.starts_with(&topo.r0)).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("no_route=4"), "{row}");
    // Columns are aligned: every line has RX_PKTS at the same offset.
    let col = header.find("RX_PKTS").unwrap();
    assert!(row[..col].ends_with("  "), "misaligned: {table}");

    let o = server.dpctl(&["interface", "list", "-o", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v[0]["name"], topo.r0.as_str());
    assert_eq!(v[0]["xdp_mode"], "native");
    assert_eq!(v[0]["reasons"]["no_route"], 4);

    let o = server.dpctl(&["status", "-o", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["generation"], 1);
    assert_eq!(v["programs"].as_array().unwrap().len(), 2);
    assert!(v["programs"][0]["kernel_id"].as_u64().unwrap() > 0);
    assert_eq!(v["attachments"].as_array().unwrap().len(), 2);

    let o = server.dpctl(&["status"]);
    assert!(o.status.success() && stdout(&o).contains("dp_xdp_ingress"), "{}", stdout(&o));

    let o = server.dpctl(&["interface", "del", &topo.r0]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = server.dpctl(&["interface", "list", "-o", "json"]);
    assert_eq!(stdout(&o).trim(), "[]");
}

#[test]
fn dpctl_errors_print_code_and_exit_nonzero() {
    let topo = Topology::new().unwrap();
    let server = Server::start(&topo.rtr).unwrap();

    let o = server.dpctl(&["interface", "del", "ghost0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).starts_with("error: NOT_FOUND: "), "{}", stderr(&o));

    let o = server.dpctl(&["interface", "add", &topo.r0]);
    assert!(o.status.success());
    let o = server.dpctl(&["interface", "add", &topo.r0]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).starts_with("error: ALREADY_EXISTS: "), "{}", stderr(&o));

    let o = std::process::Command::new(integration::bin("dpctl"))
        .args(["--server", "unix:/nonexistent/dataplane.sock", "status"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "connection failure is not a gRPC status");
    assert!(stderr(&o).contains("/nonexistent/dataplane.sock"), "{}", stderr(&o));
}

/// dpctl's routing verbs end to end: VRFs, every next-hop kind, routes one by one and from a
/// file, list filters, lookup, deletion, and the errors a controller meets most.
#[test]
fn dpctl_vrf_nexthop_route_verbs_round_trip() {
    let ns = integration::Netns::new("dpcr-").unwrap();
    let server = Server::start(&ns).unwrap();
    let ok = |args: &[&str]| ok(&server, args);
    let fails = |args: &[&str], code: &str| fails(&server, args, code);

    ok(&["vrf", "add", "7"]);
    ok(&["interface", "add", "lo", "--vrf", "7"]);
    let vrfs: Value = serde_json::from_str(&ok(&["vrf", "list", "-o", "json"])).unwrap();
    let ids: Vec<u64> = vrfs.as_array().unwrap().iter().map(|v| v["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [0, 7], "{vrfs}");

    ok(&["nexthop", "add", "1", "--interface", "lo", "--dst-mac", "02:00:00:00:00:01"]);
    ok(&[
        "nexthop",
        "add",
        "2",
        "--interface",
        "lo",
        "--dst-mac",
        "02:00:00:00:00:02",
        "--src-mac",
        "02:00:00:00:00:aa",
    ]);
    ok(&["nexthop", "add", "3", "--ecmp", "1,2"]);
    ok(&["nexthop", "add", "4", "--discard"]);
    ok(&["nexthop", "add", "5", "--receive"]);
    let table = ok(&["nexthop", "list"]);
    for kind in ["encap", "ecmp", "discard", "receive"] {
        assert!(table.contains(kind), "{table}");
    }

    ok(&["route", "add", "198.51.100.0/24", "--nexthop", "3"]);
    ok(&["route", "add", "198.51.100.0/24", "--nexthop", "1", "--vrf", "7"]);
    let file = server.run_dir.join("routes");
    std::fs::write(&file, "# prefix nexthop [vrf]\n203.0.113.0/24 4\n2001:db8:5::/48 5\n192.0.2.0/25 2 7\n\n").unwrap();
    ok(&["route", "add", "--file", file.to_str().unwrap()]);

    let all: Value = serde_json::from_str(&ok(&["route", "list", "-o", "json"])).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 5, "{all}");
    let vrf7: Value = serde_json::from_str(&ok(&["route", "list", "--vrf", "7", "-o", "json"])).unwrap();
    assert_eq!(vrf7.as_array().unwrap().len(), 2, "{vrf7}");
    let within: Value =
        serde_json::from_str(&ok(&["route", "list", "--prefix", "198.51.100.0/23", "-o", "json"])).unwrap();
    assert_eq!(within.as_array().unwrap().len(), 2, "both VRFs' 198.51.100.0/24: {within}");

    let hit = ok(&["route", "lookup", "198.51.100.9"]);
    assert!(hit.contains("198.51.100.0/24") && hit.contains("next hop 3"), "{hit}");
    let hit = ok(&["route", "lookup", "198.51.100.9", "--vrf", "7"]);
    assert!(hit.contains("next hop 1"), "{hit}");
    let hit = ok(&["route", "lookup", "2001:db8:5::1"]);
    assert!(hit.contains("2001:db8:5::/48"), "{hit}");

    // Errors: precise codes, and nothing changes.
    fails(&["nexthop", "del", "1"], "FAILED_PRECONDITION");
    fails(&["route", "add", "198.51.100.128/24", "--nexthop", "1"], "INVALID_ARGUMENT");
    fails(&["route", "add", "198.51.101.0/24", "--nexthop", "99"], "NOT_FOUND");
    fails(&["vrf", "del", "7"], "FAILED_PRECONDITION");
    let bad = server.run_dir.join("bad-routes");
    std::fs::write(&bad, "203.0.113.128/25 4\n203.0.113.0/33 4\n").unwrap();
    let o = server.dpctl(&["route", "add", "--file", bad.to_str().unwrap()]);
    assert_ne!(o.status.code(), Some(0), "a file with a bad line must not load");
    let after: Value = serde_json::from_str(&ok(&["route", "list", "-o", "json"])).unwrap();
    assert_eq!(after.as_array().unwrap().len(), 5, "the good line of a bad file was applied: {after}");

    ok(&["route", "del", "198.51.100.0/24", "--vrf", "7"]);
    ok(&["route", "del", "--file", file.to_str().unwrap()]);
    ok(&["route", "del", "198.51.100.0/24"]);
    assert_eq!(ok(&["route", "list", "-o", "json"]).trim(), "[]");
    ok(&["nexthop", "del", "3"]);
    fails(&["interface", "del", "lo"], "FAILED_PRECONDITION");
    ok(&["nexthop", "del", "1"]);
    ok(&["nexthop", "del", "2"]);
    ok(&["interface", "del", "lo"]);
    ok(&["vrf", "del", "7"]);
}

/// dpctl's policy verbs: put from YAML and JSON files, attach, list with counters, detach, del,
/// and errors from the file (exit 2) and from the server (exit 1).
#[test]
fn dpctl_policy_put_attach_list_detach_del() {
    let ns = integration::Netns::new("dpcp-").unwrap();
    let server = Server::start(&ns).unwrap();
    let ok = |args: &[&str]| ok(&server, args);
    ok(&["interface", "add", "lo"]);
    let yaml = server.run_dir.join("web.yaml");
    std::fs::write(
        &yaml,
        "rules:\n  - priority: 10\n    dst: 198.51.100.0/24\n    protocol: tcp\n    dst_ports: 80-89\n    action: deny\n  - priority: 20\n    protocol: tcp\n    dst_ports: 22\n    tcp_flags: syn-only\n    action: deny\n  - priority: 30\n    protocol: icmp\n    icmp_type: 8\n    action: punt\n",
    )
    .unwrap();
    assert!(ok(&["policy", "put", "web", "--file", yaml.to_str().unwrap()]).contains("3 rules"));
    ok(&["policy", "attach", "web", "--interface", "lo", "--direction", "ingress", "--default", "deny"]);
    let v: Value = serde_json::from_str(&ok(&["policy", "list", "-o", "json"])).unwrap();
    assert_eq!(v[0]["name"], "web");
    assert_eq!(v[0]["rules"].as_array().unwrap().len(), 3);
    assert_eq!(v[0]["rules"][0]["dst_ports"], serde_json::json!([80, 89]));
    assert_eq!(v[0]["rules"][1]["tcp_flags"], serde_json::json!({"mask": 18, "value": 2}));
    assert_eq!(
        v[0]["attachments"][0],
        serde_json::json!({"interface": "lo", "direction": "ingress", "default": "deny"})
    );
    let table = ok(&["policy", "list", "web"]);
    assert!(table.contains("PACKETS") && table.contains("80-89") && table.contains("punt"), "{table}");

    // Replace from JSON.
    let json = server.run_dir.join("web.json");
    std::fs::write(&json, r#"[{"priority": 1, "protocol": "udp", "dst_ports": 53, "action": "allow"}]"#).unwrap();
    ok(&["policy", "put", "web", "--file", json.to_str().unwrap()]);
    let v: Value = serde_json::from_str(&ok(&["policy", "list", "web", "-o", "json"])).unwrap();
    assert_eq!(v[0]["rules"].as_array().unwrap().len(), 1);

    let bad = server.run_dir.join("bad.yaml");
    std::fs::write(&bad, "- priority: 1\n  action: maybe\n").unwrap();
    let o = server.dpctl(&["policy", "put", "web", "--file", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("bad.yaml:2:11: rules[0].action: \"maybe\" is not allow, deny or punt"),
        "{}",
        stderr(&o)
    );
    std::fs::write(&bad, "- priority: 1\n  protocol: tcp\n  dst_ports: 90-80\n  action: deny\n").unwrap();
    let o = server.dpctl(&["policy", "put", "web", "--file", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("bad.yaml:3:14: rules[0].dst_ports: \"90-80\": the first port is above the last"),
        "{}",
        stderr(&o)
    );
    // What only the server can judge (ports on ICMP) comes back as its INVALID_ARGUMENT.
    std::fs::write(&bad, "- priority: 1\n  protocol: icmp\n  dst_ports: 80\n  action: deny\n").unwrap();
    let o = server.dpctl(&["policy", "put", "web", "--file", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).starts_with("error: INVALID_ARGUMENT: rules[0].dst_ports"), "{}", stderr(&o));
    let o = server.dpctl(&["policy", "del", "web"]);
    assert!(stderr(&o).starts_with("error: FAILED_PRECONDITION"), "{}", stderr(&o));

    ok(&["policy", "detach", "--interface", "lo", "--direction", "ingress"]);
    ok(&["policy", "del", "web"]);
    assert_eq!(ok(&["policy", "list", "-o", "json"]).trim(), "[]");
}

/// dpctl's flow verbs: flowmode set, flows watch (a live miss from a test run of the XDP
/// program), flow add / list / del.
#[test]
fn dpctl_flowmode_watch_flow_add_list_del() {
    let ns = integration::Netns::new("dpcf-").unwrap();
    let server = Server::start(&ns).unwrap();
    let ok = |args: &[&str]| ok(&server, args);
    ok(&["interface", "add", "lo"]);
    ok(&["nexthop", "add", "1", "--interface", "lo", "--dst-mac", "02:00:00:00:00:01"]);
    ok(&["route", "add", "0.0.0.0/0", "--nexthop", "1"]);
    assert!(ok(&["flowmode", "set", "lo", "--hold-cap", "100"]).contains("flow mode on for lo"));

    let mut watch = std::process::Command::new(integration::bin("dpctl"))
        .args(["--server", &format!("unix:{}", server.socket.display()), "-o", "json", "flows", "watch"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let xdp = integration::Harness::over_pins(&server.bpffs).expect("load dp_xdp_ingress over the server\'s pins");
    let frame =
        integration::l4_frame("192.0.2.10".parse().unwrap(), "198.51.100.7".parse().unwrap(), 6, 40000, 443, 0x02);
    xdp.run(&frame);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(watch.stdout.take().unwrap()), &mut line).unwrap();
    let _ = watch.kill();
    let _ = watch.wait();
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    assert_eq!(
        (v["seq"].as_u64(), v["interface"].as_str(), v["reason"].as_str()),
        (Some(1), Some("lo"), Some("miss")),
        "{v}"
    );
    assert_eq!(v["key"]["dst_port"], 443);

    let key = ["--src", "192.0.2.10", "--dst", "198.51.100.7", "--proto", "tcp", "--sport", "40000", "--dport", "443"];
    let v: Value = serde_json::from_str(&ok(&["flow", "list", "-o", "json"])).unwrap();
    assert_eq!(v[0]["action"], "hold", "{v}");
    ok(&[&["flow", "add", "--nexthop", "1"][..], &key].concat());
    let v: Value = serde_json::from_str(&ok(&["flow", "list", "-o", "json"])).unwrap();
    assert_eq!((v[0]["action"].as_str(), v[0]["next_hop"].as_u64()), (Some("forward"), Some(1)), "{v}");
    let table = ok(&["flow", "list"]);
    assert!(table.contains("198.51.100.7:443") && table.contains("forward"), "{table}");
    ok(&[&["flow", "del"][..], &key].concat());
    assert_eq!(ok(&["flow", "list", "-o", "json"]).trim(), "[]");
    let o = server.dpctl(&[&["flow", "del"][..], &key].concat());
    assert!(stderr(&o).starts_with("error: NOT_FOUND: keys[0]"), "{}", stderr(&o));
}

#[test]
fn dpctl_events_watch_gateway_nexthop_and_kernel_fib_vrf() {
    let ns = integration::Netns::new("dpce-").unwrap();
    let server = Server::start(&ns).unwrap();
    let ok = |args: &[&str]| ok(&server, args);
    let (a, b) = (integration::unique("dea"), integration::unique("deb"));

    let mut watch = std::process::Command::new(integration::bin("dpctl"))
        .args([
            "--server",
            &format!("unix:{}", server.socket.display()),
            "-o",
            "json",
            "events",
            "watch",
            "--snapshot",
            "--kind",
            "link",
            "--kind",
            "neighbour",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(watch.stdout.take().unwrap()));
    let mut next = || -> Value {
        let line = lines.next().unwrap().unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    };
    // The snapshot: lo, then its end marker.
    let v = next();
    assert_eq!(
        (v["kind"].as_str(), v["interface"].as_str(), v["snapshot"].as_bool()),
        (Some("link"), Some("lo"), Some(true)),
        "{v}"
    );
    assert_eq!(next()["snapshot_done"], 1);
    ns.exec("ip", &["link", "add", &a, "type", "veth", "peer", "name", &b]).unwrap();
    ns.exec("ip", &["link", "set", &a, "up"]).unwrap();
    ns.exec("ip", &["link", "set", &b, "up"]).unwrap();
    ns.exec("ip", &["addr", "add", "192.0.2.1/24", "dev", &a]).unwrap();
    ns.exec("ip", &["neigh", "replace", "192.0.2.2", "lladdr", "02:00:00:00:00:22", "dev", &a]).unwrap();
    let mut seen = Vec::new();
    loop {
        let v = next();
        seen.push(v.clone());
        if v["kind"] == "neighbour" && v["neighbour"]["address"] == "192.0.2.2" {
            assert_eq!(
                (v["action"].as_str(), v["neighbour"]["mac"].as_str(), v["neighbour"]["state"].as_str()),
                (Some("added"), Some("02:00:00:00:00:22"), Some("permanent")),
                "{v}"
            );
            break;
        }
        assert!(seen.len() < 50, "{seen:#?}");
    }
    assert!(
        seen.iter().any(|v| v["kind"] == "link"
            && v["interface"] == a.as_str()
            && v["action"] == "added"
            && v["seq"].as_u64() > Some(0)),
        "{seen:#?}"
    );
    let _ = watch.kill();
    let _ = watch.wait();

    // A gateway next hop: resolved from the kernel's neighbour table.
    ok(&["interface", "add", &a]);
    ok(&["nexthop", "add", "1", "--interface", &a, "--gateway", "192.0.2.2"]);
    let v: Value = serde_json::from_str(&ok(&["nexthop", "list", "-o", "json"])).unwrap();
    assert_eq!(
        (v[0]["state"].as_str(), v[0]["resolved_mac"].as_str()),
        (Some("ready"), Some("02:00:00:00:00:22")),
        "{v}"
    );
    let table = ok(&["nexthop", "list"]);
    assert!(table.contains("gateway 192.0.2.2 (02:00:00:00:00:22)") && table.contains("ready"), "{table}");
    let e = fails(&server, &["nexthop", "add", "2", "--interface", &a, "--gateway", "224.0.0.1"], "INVALID_ARGUMENT");
    assert!(e.contains("next_hops[0].encap.gateway"), "{e}");

    // A kernel-FIB VRF refuses API routes.
    ok(&["vrf", "add", "5", "--kernel-fib", "--table", "100"]);
    let v: Value = serde_json::from_str(&ok(&["vrf", "list", "-o", "json"])).unwrap();
    assert_eq!((v[1]["mode"].as_str(), v[1]["kernel_table"].as_u64()), (Some("kernel-fib"), Some(100)), "{v}");
    assert!(ok(&["vrf", "list"]).contains("kernel-fib table 100"));
    fails(&server, &["route", "add", "198.51.100.0/24", "--nexthop", "1", "--vrf", "5"], "FAILED_PRECONDITION");
}
