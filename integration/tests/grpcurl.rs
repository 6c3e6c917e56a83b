//! Operators' view: grpcurl through the unix socket with no proto files (server reflection) and
//! the standard gRPC health service.

use std::process::Command;

use integration::{Server, Topology};

/// grpcurl against the server's socket. `-authority localhost`: grpcurl 1.8 otherwise sends the
/// socket path as :authority, which HTTP/2 servers (hyper's h2 included) reject as malformed.
fn grpcurl(server: &Server, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new("grpcurl");
    cmd.args(["-plaintext", "-unix", "-authority", "localhost"]);
    // Flags (with their values) come before the address, the verb and symbols after it.
    let mut it = args.iter();
    let mut pre = Vec::new();
    let mut post = Vec::new();
    while let Some(a) = it.next() {
        if a.starts_with('-') {
            pre.push(*a);
            if let Some(v) = it.next() {
                pre.push(*v);
            }
        } else {
            post.push(*a);
        }
    }
    cmd.args(&pre).arg(server.socket.to_str().unwrap()).args(&post);
    let out = cmd.output().expect("grpcurl is installed by scripts/bootstrap.sh");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn grpcurl_list_shows_every_service() {
    let topo = Topology::new().unwrap();
    let server = Server::start(&topo.rtr).unwrap();
    let (ok, out, err) = grpcurl(&server, &["list"]);
    assert!(ok, "{err}");
    for svc in ["dataplane.v1.Interfaces", "dataplane.v1.System", "dataplane.v1.Telemetry", "grpc.health.v1.Health"] {
        assert!(out.lines().any(|l| l == svc), "{svc} missing from:\n{out}");
    }
    let (ok, out, err) = grpcurl(&server, &["describe", "dataplane.v1.Interfaces"]);
    assert!(ok, "{err}");
    assert!(out.contains("rpc AddInterface"), "{out}");
}

#[test]
fn grpcurl_health_check_serving() {
    let topo = Topology::new().unwrap();
    let server = Server::start(&topo.rtr).unwrap();
    for svc in ["", "dataplane.v1.Interfaces", "dataplane.v1.System", "dataplane.v1.Telemetry"] {
        let body = format!(r#"{{"service":"{svc}"}}"#);
        let (ok, out, err) = grpcurl(&server, &["-d", &body, "grpc.health.v1.Health/Check"]);
        assert!(ok, "{svc}: {err}");
        assert!(out.contains("\"SERVING\""), "{svc}: {out}");
    }
    let (ok, _, err) = grpcurl(&server, &["-d", r#"{"service":"no.such.Service"}"#, "grpc.health.v1.Health/Check"]);
    assert!(!ok && err.contains("NotFound"), "unknown service must be NOT_FOUND: {err}");
}

#[test]
fn grpcurl_add_interface_unknown_reports_not_found() {
    let topo = Topology::new().unwrap();
    let server = Server::start(&topo.rtr).unwrap();
    let (ok, _, err) = grpcurl(&server, &["-d", r#"{"name":"ghost0"}"#, "dataplane.v1.Interfaces/AddInterface"]);
    assert!(!ok);
    assert!(err.contains("NotFound") && err.contains("ghost0"), "{err}");
    let body = format!(r#"{{"name":"{}"}}"#, topo.r0);
    let (ok, out, err) = grpcurl(&server, &["-d", &body, "dataplane.v1.Interfaces/AddInterface"]);
    assert!(ok, "{err}");
    assert!(out.contains("XDP_MODE_NATIVE"), "{out}");
}
