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
    assert_eq!(v["generation"], 1, "failed calls changed nothing");
    assert_eq!(v["programs"], serde_json::json!(["dp_xdp_ingress", "dp_tc_egress"]));
    assert_eq!(v["interfaces"], serde_json::json!([topo.r0]));
}
