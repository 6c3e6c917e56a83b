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

/// A megabyte in a field the error echoes comes back to grpc-go (grpcurl) as INVALID_ARGUMENT
/// with a short message, not as a refused header.
#[test]
fn grpcurl_megabyte_field_invalid_argument_with_short_message() {
    use std::io::Write;
    let topo = Topology::new().unwrap();
    let server = Server::start(&topo.rtr).unwrap();
    let body = format!(r#"{{"routes":[{{"vrf":0,"prefix":"{}","next_hop":1}}]}}"#, "1".repeat(1 << 20));
    let mut child = Command::new("grpcurl")
        .args(["-plaintext", "-unix", "-authority", "localhost", "-d", "@"])
        .arg(&server.socket)
        .arg("dataplane.v1.Routing/AddRoutes")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("grpcurl");
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("Code: InvalidArgument") && err.contains("routes[0].prefix"),
        "{}",
        &err[..err.len().min(500)]
    );
    assert!(err.len() < 1600, "{} bytes of error", err.len());
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
