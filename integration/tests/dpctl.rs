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
