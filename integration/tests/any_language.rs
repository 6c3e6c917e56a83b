//! Controllers in other languages: a Python client with stubs generated from proto/ at run
//! time drives the real server over the unix socket.

use integration::{Server, Topology};
use serde_json::Value;

#[test]
fn python_client_add_interface_and_errors_match_rust_semantics() {
    let topo = Topology::new().unwrap();
    let server = Server::start(&topo.rtr).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/python/dataplane_client.py");
    let out = std::process::Command::new("python3")
        .args([script, server.socket.to_str().unwrap(), &topo.r0])
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["health"], "SERVING");
    assert_eq!(v["added"]["name"], topo.r0.as_str());
    assert_eq!(v["added"]["generation"], 1);
    assert!(v["errors"]["unknown"].as_str().unwrap().starts_with("NOT_FOUND: "), "{v}");
    assert!(v["errors"]["duplicate"].as_str().unwrap().starts_with("ALREADY_EXISTS: "), "{v}");
    assert!(v["errors"]["empty"].as_str().unwrap().starts_with("INVALID_ARGUMENT: name:"), "{v}");
    let huge = v["errors"]["huge"].as_str().unwrap();
    assert!(huge.starts_with("INVALID_ARGUMENT: routes[0].prefix:") && huge.len() < 1200, "{} bytes", huge.len());
    assert_eq!(v["generation"], 1, "failed calls changed nothing");
    assert_eq!(v["programs"], serde_json::json!(["dp_xdp_ingress", "dp_tc_egress"]));
    assert_eq!(v["interfaces"], serde_json::json!([topo.r0]));
}

/// Flow controllers in Python and Node: each, in its own run, subscribes to flow misses and
/// installs the flow for a new TCP connection through the router (kernel forwarding off, flow
/// mode on); the connection completes with its first SYN re-injected (no 1 s retransmit).
fn flow_controller_completes_tcp_connect(cmd: &str, script: &str) {
    use controller_client::pb;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let topo = Topology::routed().unwrap();
    let server = Server::start(&topo.rtr).unwrap();
    rt.block_on(async {
        let mut c = server.client().await.unwrap();
        integration::program_router(&topo, &mut c).await.unwrap();
        c.flows
            .set_flow_mode(pb::SetFlowModeRequest { interface: topo.r0.clone(), enabled: true, ..Default::default() })
            .await
            .unwrap();
    });

    let integration::FlowController { child: mut ctl, mut out } =
        integration::FlowController::start(cmd, script, &server.socket, 1).unwrap();
    let mut line = String::new();

    let mut srv = topo.h2.command("iperf3", &["-s", "-1", "-B", integration::H2_ADDR, "-p", "5302"]).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let script_py = format!(
        "import socket,time\nt=time.time()\ns=socket.create_connection(('{}',5302),timeout=5)\nprint(time.time()-t)\ns.close()",
        integration::H2_ADDR
    );
    let t: f64 = topo.h1.exec("python3", &["-c", &script_py]).unwrap().trim().parse().unwrap();
    let _ = srv.kill();
    let _ = srv.wait();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let _ = ctl.wait();
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    assert_eq!(v["misses"][0]["dst_port"], 5302, "{v}");
    assert_eq!(v["misses"][0]["reason"], "miss", "{v}");
    eprintln!("{cmd}: connect {t:.3} s through the flow-miss loop, {v}");
    assert!(t < 0.5, "{cmd}: connect took {t:.3} s (first SYN lost)");
}

#[test]
fn python_flow_controller_installs_flow_connect_completes_first_syn() {
    flow_controller_completes_tcp_connect(
        "python3",
        concat!(env!("CARGO_MANIFEST_DIR"), "/clients/python/flow_controller.py"),
    );
}

#[test]
fn node_flow_controller_installs_flow_connect_completes_first_syn() {
    flow_controller_completes_tcp_connect(
        "node",
        concat!(env!("CARGO_MANIFEST_DIR"), "/clients/node/flow_controller.js"),
    );
}
