//! The server process: socket mode, SIGTERM leaving the dataplane attached and pinned (forwarding
//! survives the server), `--reset` removing all of it, refusal to run twice on one socket or one
//! pin directory (and of `--reset` under a live server), a socket path that is not a socket left
//! alone, restarts right after SIGKILL, and a clear error where bpffs is missing.

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

/// Runs `dataplane-server` in `topo`'s router namespace with `args`; its output. Under a 30 s
/// timeout: a server that is not refused would otherwise serve (and the test wait) forever.
fn server_cmd(topo: &Topology, args: &[&str]) -> std::process::Output {
    let server = integration::bin("dataplane-server");
    let mut all = vec!["30", server.to_str().unwrap()];
    all.extend_from_slice(args);
    topo.rtr.command("timeout", &all).output().unwrap()
}

/// What a refused second server or reset must not have changed: the first server answers, the
/// interface is still attached with its XDP program, and the pins are all there.
fn assert_untouched(topo: &Topology, server: &Server) {
    assert!(server.dpctl(&["status"]).status.success(), "{}", server.log_text());
    let list = server.dpctl(&["interface", "list"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains(topo.r0.as_str()), "interface gone: {}", server.log_text());
    let out = topo.rtr.exec("ip", &["-d", "link", "show", &topo.r0]).unwrap();
    assert!(out.contains("prog/xdp"), "XDP detached: {out}");
    for pin in ["v1/links", "v1/programs/dp_xdp_ingress", "v1/maps/INTERFACES"] {
        assert!(server.bpffs.join(pin).exists(), "{pin} unpinned");
    }
}

#[test]
fn server_second_instance_same_pin_directory_refuses_naming_holder() {
    let topo = Topology::new().unwrap();
    let server = Server::start(&topo.rtr).unwrap();
    assert!(server.dpctl(&["interface", "add", &topo.r0]).status.success());
    let (sock, state) = (server.run_dir.join("second.sock"), server.run_dir.join("second.json"));
    let out = server_cmd(
        &topo,
        &[
            "--grpc-socket",
            sock.to_str().unwrap(),
            "--bpffs",
            server.bpffs.to_str().unwrap(),
            "--state-file",
            state.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let holder = format!("in use by another dataplane-server (pid {})", server.pid().unwrap());
    assert!(err.contains(&holder), "{err}");
    assert!(!sock.exists() && !state.exists(), "the refused server left its socket or state file");
    assert_untouched(&topo, &server);
}

#[test]
fn server_reset_under_live_server_refuses_and_changes_nothing() {
    let topo = Topology::new().unwrap();
    let server = Server::start(&topo.rtr).unwrap();
    assert!(server.dpctl(&["interface", "add", &topo.r0]).status.success());
    let sock = server.run_dir.join("reset.sock");
    let out = server_cmd(
        &topo,
        &[
            "--reset",
            "--grpc-socket",
            sock.to_str().unwrap(),
            "--bpffs",
            server.bpffs.to_str().unwrap(),
            "--state-file",
            server.state_file.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("(pid {})", server.pid().unwrap())), "{err}");
    assert!(server.state_file.exists(), "the refused reset removed the state file");
    assert_untouched(&topo, &server);
    topo.ping_h1_to_h2(1).unwrap();
}

#[test]
fn server_socket_path_naming_regular_file_refuses_and_keeps_file() {
    let topo = Topology::new().unwrap();
    let dir = std::env::temp_dir().join(integration::unique("notsock"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("precious.txt");
    std::fs::write(&file, "keep me").unwrap();
    let bpffs = format!("/sys/fs/bpf/{}", integration::unique("notsock"));
    let out = server_cmd(&topo, &["--grpc-socket", file.to_str().unwrap(), "--bpffs", &bpffs]);
    let kept = std::fs::read_to_string(&file);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&bpffs);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exists and is not a socket"), "{err}");
    assert_eq!(kept.unwrap(), "keep me");
}

#[test]
fn server_restart_right_after_sigkill_takes_over_socket_and_pins() {
    let topo = Topology::new().unwrap();
    let mut server = Server::start(&topo.rtr).unwrap();
    assert!(server.dpctl(&["interface", "add", &topo.r0]).status.success());
    for round in 0..5 {
        let before = server.pid();
        server.kill9_and_restart_at_once().unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_ne!(server.pid(), before);
        assert_untouched(&topo, &server);
    }
    topo.ping_h1_to_h2(1).unwrap();
}
