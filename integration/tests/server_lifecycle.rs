//! The server process: socket mode, SIGTERM leaving the dataplane attached and pinned (forwarding
//! survives the server), `--reset` removing all of it, refusal to run twice on one socket, and a
//! clear error where bpffs is missing.

use std::os::unix::fs::PermissionsExt;

use integration::{Server, Topology};

#[test]
fn server_sigterm_keeps_dataplane_pinned_then_reset_removes_everything() {
    let topo = Topology::new().unwrap();
    let mut server = Server::start(&topo.rtr).unwrap();
    let mode = std::fs::metadata(&server.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode");
    assert!(server.bpffs.join("v1/maps/INTERFACES").exists(), "maps pinned under --bpffs");

    let o = server.dpctl(&["interface", "add", &topo.r0]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = topo.rtr.exec("ip", &["-d", "link", "show", &topo.r0]).unwrap();
    assert!(out.contains("prog/xdp"));

    let status = server.stop().unwrap();
    assert!(status.success(), "exit status {status}: {}", server.log_text());
    assert!(!server.socket.exists(), "socket left behind");
    // The dataplane outlives the server: still attached, links and programs pinned.
    let out = topo.rtr.exec("ip", &["-d", "link", "show", &topo.r0]).unwrap();
    assert!(out.contains("prog/xdp"), "XDP detached with the server: {out}");
    for pin in ["v1/links", "v1/programs/dp_xdp_ingress", "v1/maps/INTERFACES"] {
        assert!(server.bpffs.join(pin).exists(), "{pin} not pinned");
    }
    topo.ping_h1_to_h2(1).unwrap();

    // --reset takes it all away.
    let out = topo
        .rtr
        .command(
            integration::bin("dataplane-server").to_str().unwrap(),
            &[
                "--reset",
                "--grpc-socket",
                server.socket.to_str().unwrap(),
                "--bpffs",
                server.bpffs.to_str().unwrap(),
                "--state-file",
                server.state_file.to_str().unwrap(),
            ],
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = topo.rtr.exec("ip", &["-d", "link", "show", &topo.r0]).unwrap();
    assert!(!out.contains("prog/xdp"), "XDP left attached: {out}");
    assert!(!server.bpffs.exists(), "pins left under {}", server.bpffs.display());
    assert!(!server.state_file.exists());
    topo.ping_h1_to_h2(1).unwrap();
}

#[test]
fn server_second_instance_same_socket_refuses() {
    let topo = Topology::new().unwrap();
    let server = Server::start(&topo.rtr).unwrap();
    let other_bpffs = format!("{}-other", server.bpffs.display());
    let out = topo
        .rtr
        .command(
            integration::bin("dataplane-server").to_str().unwrap(),
            &["--grpc-socket", server.socket.to_str().unwrap(), "--bpffs", &other_bpffs],
        )
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&other_bpffs);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already listening"), "{err}");
    // The first server is unharmed.
    assert!(server.dpctl(&["status"]).status.success());
}

#[test]
fn server_bpffs_not_bpf_filesystem_fails_with_hint() {
    let topo = Topology::new().unwrap();
    let dir = std::env::temp_dir().join(integration::unique("notbpf"));
    let sock = dir.join("s.sock");
    let out = topo
        .rtr
        .command(
            integration::bin("dataplane-server").to_str().unwrap(),
            &["--grpc-socket", sock.to_str().unwrap(), "--bpffs", dir.join("pins").to_str().unwrap()],
        )
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not on a bpf filesystem"), "{err}");
}

#[test]
fn server_sigterm_with_idle_client_connection_still_exits_and_keeps_forwarding() {
    use std::io::Write;
    let topo = Topology::new().unwrap();
    let mut server = Server::start(&topo.rtr).unwrap();
    assert!(server.dpctl(&["interface", "add", &topo.r0]).status.success());
    // A client that opened an HTTP/2 connection and then went silent (hung controller).
    let mut idle = std::os::unix::net::UnixStream::connect(&server.socket).unwrap();
    idle.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").unwrap();
    let t = std::time::Instant::now();
    let status = server.stop().unwrap();
    assert!(status.success(), "{status}: {}", server.log_text());
    assert!(t.elapsed() < std::time::Duration::from_secs(8), "shutdown took {:?}", t.elapsed());
    let out = topo.rtr.exec("ip", &["-d", "link", "show", &topo.r0]).unwrap();
    assert!(out.contains("prog/xdp"), "XDP detached: {out}");
    drop(idle);
}
