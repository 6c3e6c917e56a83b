//! Forwarding survives the controller and the server: a controller killed, the server killed ten
//! times and restarted (adopting pins, links and state: same ids, same lists), a hundred hitless
//! program upgrades, a resync that keeps half the routes, refusal of a pinned map of another
//! layout, a failed upgrade that changes nothing, and a reset that leaves nothing behind; each
//! under a steady sequence-numbered UDP stream whose loss is counted at the receiver.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use controller_client::{pb, Client};
use dataplane_server::dataplane::loader::{links_running, program_exists};
use integration::*;

const STREAM_PORT: u16 = 7001;
const STREAM_PPS: u32 = 4000;

/// Everything the lists show, without counters: what must be identical across restarts.
async fn snapshot(c: &mut Client) -> String {
    let mut out = BTreeMap::new();
    let ifs = c.interfaces.list_interfaces(pb::ListInterfacesRequest::default()).await.unwrap().into_inner().interfaces;
    out.insert(
        "interfaces",
        ifs.iter()
            .map(|i| {
                format!(
                    "{} ifindex {} slot {} vrf {} mode {} mtu {} mac {}",
                    i.name, i.ifindex, i.slot, i.vrf, i.xdp_mode, i.mtu, i.mac
                )
            })
            .collect::<Vec<_>>(),
    );
    let vrfs = c.routing.list_vrfs(pb::ListVrfsRequest {}).await.unwrap().into_inner().vrfs;
    out.insert("vrfs", vrfs.iter().map(|v| format!("{v:?}")).collect());
    let nhs = c.routing.list_next_hops(pb::ListNextHopsRequest {}).await.unwrap().into_inner().next_hops;
    out.insert(
        "next_hops",
        nhs.iter()
            .map(|n| format!("{} {:?} routes {} state {} mac {}", n.id, n.kind, n.routes, n.state, n.resolved_mac))
            .collect(),
    );
    let mut routes = Vec::new();
    let mut s = c.routing.list_routes(pb::ListRoutesRequest::default()).await.unwrap().into_inner();
    while let Some(chunk) = s.message().await.unwrap() {
        routes.extend(chunk.routes.iter().map(|r| format!("{} {} -> {}", r.vrf, r.prefix, r.next_hop)));
    }
    out.insert("routes", routes);
    let pols = c.policy.list_policies(pb::ListPoliciesRequest::default()).await.unwrap().into_inner().policies;
    out.insert(
        "policies",
        pols.iter()
            .map(|p| {
                let rules: Vec<String> =
                    p.rules.iter().map(|r| format!("{} {:?} {}", r.priority, r.dst_prefix, r.action)).collect();
                format!("{} rules {rules:?} attached {:?}", p.name, p.attachments)
            })
            .collect(),
    );
    let mut flows = Vec::new();
    let mut s = c.flows.list_flows(pb::ListFlowsRequest::default()).await.unwrap().into_inner();
    while let Some(chunk) = s.message().await.unwrap() {
        flows.extend(chunk.flows.iter().map(|f| format!("{:?} action {} nh {}", f.key, f.action, f.next_hop)));
    }
    out.insert("flows", flows);
    let st = c.system.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner();
    out.insert(
        "programs",
        st.programs.iter().map(|p| format!("{} id {} tag {}", p.name, p.kernel_id, p.tag)).collect(),
    );
    out.insert(
        "attachments",
        st.attachments.iter().map(|a| format!("{} {} link {}", a.interface, a.hook, a.link_id)).collect(),
    );
    out.insert("generation", vec![st.generation.to_string()]);
    format!("{out:#?}")
}

async fn program_ids(c: &mut Client) -> Vec<u32> {
    c.system
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .programs
        .iter()
        .map(|p| p.kernel_id)
        .collect()
}

/// The routed topology, programmed, with a policy attached and a flow installed for the stream.
async fn programmed(topo: &Topology, server: &Server) -> Client {
    let mut c = server.client().await.unwrap();
    program_router(topo, &mut c).await.unwrap();
    let rule = pb::Rule {
        priority: 10,
        dst_prefix: "203.0.113.0/24".into(),
        action: pb::Action::Deny.into(),
        ..Default::default()
    };
    c.policy.put_policy(pb::PutPolicyRequest { name: "edge".into(), rules: vec![rule] }).await.unwrap();
    c.policy
        .attach_policy(pb::AttachPolicyRequest {
            policy: "edge".into(),
            interface: topo.r0.clone(),
            direction: pb::Direction::Ingress.into(),
            default_action: pb::Action::Allow.into(),
        })
        .await
        .unwrap();
    let key =
        pb::FlowKey { vrf: 0, src: H1_ADDR.into(), dst: H2_ADDR.into(), protocol: 17, src_port: 40000, dst_port: 9 };
    let flow = pb::Flow { key: Some(key), action: pb::FlowAction::Forward.into(), next_hop: 1, ..Default::default() };
    c.flows.install_flows(pb::InstallFlowsRequest { flows: vec![flow], ..Default::default() }).await.unwrap();
    c
}

fn assert_no_loss(r: StreamReport, what: &str) {
    assert!(r.sent > 1000, "{what}: the stream hardly ran: {r:?}");
    assert_eq!(r.lost, 0, "{what}: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_sigkill_installed_flows_keep_forwarding_zero_loss() {
    let topo = Topology::routed().unwrap();
    let server = Server::start(&topo.rtr).unwrap();
    let mut c = server.client().await.unwrap();
    program_router(&topo, &mut c).await.unwrap();
    let mode = pb::SetFlowModeRequest {
        interface: topo.r0.clone(),
        enabled: true,
        miss_action: pb::MissAction::ForwardByRoute.into(),
        ..Default::default()
    };
    c.flows.set_flow_mode(mode).await.unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/python/flow_controller.py");
    let mut ctl = FlowController::start("python3", script, &server.socket, 1000).unwrap().child;

    let stream = UdpStream::start(&topo.h1, &topo.h2, H2_ADDR.parse().unwrap(), STREAM_PORT, STREAM_PPS).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let flow_packets = |flows: &[pb::Flow]| -> u64 {
        flows
            .iter()
            .filter(|f| f.key.as_ref().is_some_and(|k| k.dst_port == u32::from(STREAM_PORT)))
            .map(|f| f.packets)
            .sum()
    };
    let list = |mut c: Client| async move {
        let mut v = Vec::new();
        let mut s = c.flows.list_flows(pb::ListFlowsRequest::default()).await.unwrap().into_inner();
        while let Some(chunk) = s.message().await.unwrap() {
            v.extend(chunk.flows);
        }
        v
    };
    let before = list(c.clone()).await;
    assert!(
        before.iter().any(|f| f.action == pb::FlowAction::Forward as i32
            && f.key.as_ref().unwrap().dst_port == u32::from(STREAM_PORT)),
        "{before:?}"
    );
    ctl.kill().unwrap();
    ctl.wait().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = list(c.clone()).await;
    let r = stream.stop().unwrap();
    assert_no_loss(r, "controller killed");
    assert!(
        flow_packets(&after) > flow_packets(&before) + 4000,
        "the installed flow kept forwarding: {before:?} -> {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sigkill_ten_times_under_traffic_zero_loss_state_and_ids_unchanged() {
    let topo = Topology::routed().unwrap();
    let mut server = Server::start(&topo.rtr).unwrap();
    let mut c = programmed(&topo, &server).await;
    let before = snapshot(&mut c).await;
    let progs = program_ids(&mut c).await;
    assert_eq!(links_running(progs[0]), 2, "one XDP link per interface");
    let stream = UdpStream::start(&topo.h1, &topo.h2, H2_ADDR.parse().unwrap(), STREAM_PORT, STREAM_PPS).unwrap();
    // Deterministic "random" moments: a different pause before every kill and restart.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..10 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        tokio::time::sleep(Duration::from_millis(50 + x % 500)).await;
        server.kill9().unwrap();
        tokio::time::sleep(Duration::from_millis(x % 300)).await;
        server.restart().unwrap();
        let mut c = server.client().await.unwrap();
        let after = snapshot(&mut c).await;
        assert_eq!(after, before, "round {round}: lists changed across a restart\n{}", server.log_text());
        assert_eq!(links_running(progs[0]), 2, "round {round}: a duplicate XDP link");
        assert_eq!(links_running(progs[1]), 2, "round {round}: a duplicate TC link");
    }
    // New RPCs work on the adopted state (and change the generation as usual).
    let mut c = server.client().await.unwrap();
    let r = pb::Route { vrf: 0, prefix: "198.18.0.0/15".into(), next_hop: 1 };
    c.routing
        .add_routes(pb::AddRoutesRequest { routes: vec![r.clone()], replace: false, ..Default::default() })
        .await
        .unwrap();
    c.routing.delete_routes(pb::DeleteRoutesRequest { routes: vec![r], ..Default::default() }).await.unwrap();
    let report = stream.stop().unwrap();
    assert_no_loss(report, "ten server crashes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_hundred_times_under_traffic_zero_loss_new_program_ids() {
    let topo = Topology::routed().unwrap();
    let server = Server::start(&topo.rtr).unwrap();
    let mut c = programmed(&topo, &server).await;
    let links: Vec<u32> = c
        .system
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .attachments
        .iter()
        .map(|a| a.link_id)
        .collect();
    let mut ids = program_ids(&mut c).await;
    let stream = UdpStream::start(&topo.h1, &topo.h2, H2_ADDR.parse().unwrap(), STREAM_PORT, STREAM_PPS).unwrap();
    let t = Instant::now();
    for round in 0..100 {
        let r = c.system.upgrade_programs(pb::UpgradeProgramsRequest::default()).await.unwrap().into_inner();
        let new: Vec<u32> = r.programs.iter().map(|p| p.kernel_id).collect();
        assert!(new.iter().all(|id| !ids.contains(id)), "round {round}: {ids:?} -> {new:?}");
        assert!(ids.iter().all(|id| !program_exists(*id)), "round {round}: old programs still loaded");
        assert_eq!(links_running(new[0]), 2, "round {round}");
        ids = new;
    }
    let elapsed = t.elapsed();
    let st = c.system.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(st.programs.iter().map(|p| p.kernel_id).collect::<Vec<_>>(), ids);
    assert_eq!(
        st.attachments.iter().map(|a| a.link_id).collect::<Vec<_>>(),
        links,
        "links are updated, never replaced"
    );
    let report = stream.stop().unwrap();
    assert_no_loss(report, "100 upgrades");
    eprintln!("100 upgrades in {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_replaying_half_the_routes_leaves_exactly_that_half_zero_loss_for_kept() {
    let topo = Topology::routed().unwrap();
    topo.h2.exec("ip", &["addr", "add", "203.0.113.2/32", "dev", "lo"]).unwrap();
    let server = Server::start(&topo.rtr).unwrap();
    let mut c = server.client().await.unwrap();
    program_router(&topo, &mut c).await.unwrap();
    // 256 more routes, /32s in 203.0.113.0/24, all towards h2; the stream's is among those kept.
    let extra: Vec<pb::Route> =
        (0..=255u32).map(|i| pb::Route { vrf: 0, prefix: format!("203.0.113.{i}/32"), next_hop: 1 }).collect();
    c.routing
        .add_routes(pb::AddRoutesRequest { routes: extra.clone(), replace: false, ..Default::default() })
        .await
        .unwrap();
    let stream = UdpStream::start(&topo.h1, &topo.h2, "203.0.113.2".parse().unwrap(), STREAM_PORT, STREAM_PPS).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let all_before: Vec<String> = {
        let mut v = Vec::new();
        let mut s = c.routing.list_routes(pb::ListRoutesRequest::default()).await.unwrap().into_inner();
        while let Some(chunk) = s.message().await.unwrap() {
            v.extend(chunk.routes.iter().map(|r| r.prefix.clone()));
        }
        v
    };
    c.system.begin_resync(pb::BeginResyncRequest {}).await.unwrap();
    assert!(c.system.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner().resync_open);
    // The controller replays everything but only the even half of the extra routes.
    program_router(&topo, &mut c).await.unwrap();
    let kept: Vec<pb::Route> = extra.iter().step_by(2).cloned().collect();
    c.routing
        .add_routes(pb::AddRoutesRequest { routes: kept.clone(), replace: false, ..Default::default() })
        .await
        .unwrap();
    let end = c.system.end_resync(pb::EndResyncRequest {}).await.unwrap().into_inner();
    assert_eq!((end.routes, end.next_hops, end.interfaces), (128, 0, 0), "{end:?}");
    let mut after = Vec::new();
    let mut s = c.routing.list_routes(pb::ListRoutesRequest::default()).await.unwrap().into_inner();
    while let Some(chunk) = s.message().await.unwrap() {
        after.extend(chunk.routes.iter().map(|r| r.prefix.clone()));
    }
    assert_eq!(after.len(), all_before.len() - 128);
    for r in &extra {
        let i: u32 = r.prefix.trim_start_matches("203.0.113.").trim_end_matches("/32").parse().unwrap();
        assert_eq!(after.contains(&r.prefix), i.is_multiple_of(2), "{}", r.prefix);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = stream.stop().unwrap();
    assert_no_loss(report, "resync");
    let e = c.system.end_resync(pb::EndResyncRequest {}).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
}

/// Names of everything pinned under `root`, recursively, with their inode numbers.
fn pins(root: &std::path::Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let md = e.metadata().unwrap();
            if md.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path().display().to_string(), std::os::unix::fs::MetadataExt::ino(&md)));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_map_with_other_layout_refused_naming_it_nothing_changed() {
    let topo = Topology::routed().unwrap();
    let mut server = Server::start(&topo.rtr).unwrap();
    let _c = programmed(&topo, &server).await;
    server.kill9().unwrap();
    // An older build's INTERFACES (simulated: the NEXTHOPS map, 96-byte values, in its place).
    let maps = server.bpffs.join("v1/maps");
    std::fs::rename(maps.join("INTERFACES"), maps.join("INTERFACES_saved")).unwrap();
    std::fs::rename(maps.join("NEXTHOPS"), maps.join("INTERFACES")).unwrap();
    let pins_before = pins(&server.bpffs);
    let state_before = std::fs::read(&server.state_file).unwrap();
    let err = server.restart().unwrap_err().to_string();
    assert!(err.contains("pinned map INTERFACES") && err.contains("value 48 B") && err.contains("value 96 B"), "{err}");
    assert_eq!(pins(&server.bpffs), pins_before, "pins changed");
    assert_eq!(std::fs::read(&server.state_file).unwrap(), state_before, "state file changed");
    // Forwarding went on meanwhile, and the right maps back make it start again.
    topo.ping_h1_to_h2(2).unwrap();
    std::fs::rename(maps.join("INTERFACES"), maps.join("NEXTHOPS")).unwrap();
    std::fs::rename(maps.join("INTERFACES_saved"), maps.join("INTERFACES")).unwrap();
    server.restart().unwrap();
    assert!(server.dpctl(&["status"]).status.success());
}

/// This build's object with the first instruction of `dp_xdp_ingress` replaced by an exit with
/// R0 never set: it parses and relocates, and the verifier rejects it.
fn unverifiable_object() -> Vec<u8> {
    use object::{Object, ObjectSection, ObjectSymbol};
    let mut bytes = dataplane_server::dataplane::loader::EBPF_OBJECT.to_vec();
    let file = object::File::parse(&*bytes).unwrap();
    let sym = file.symbols().find(|s| s.name() == Ok("dp_xdp_ingress")).unwrap();
    let section = file.section_by_index(sym.section_index().unwrap()).unwrap();
    let (offset, _) = section.file_range().unwrap();
    let at = (offset + sym.address()) as usize;
    drop(file);
    // exit
    bytes[at..at + 8].copy_from_slice(&[0x95, 0, 0, 0, 0, 0, 0, 0]);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_that_fails_to_load_changes_nothing_and_carries_the_message() {
    let topo = Topology::routed().unwrap();
    let server = Server::start(&topo.rtr).unwrap();
    let mut c = programmed(&topo, &server).await;
    // The flow install reaches the state file lazily (within 200 ms): let it settle first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = snapshot(&mut c).await;
    let pins_before = pins(&server.bpffs);
    let state_before = std::fs::read(&server.state_file).unwrap();

    let bad = server.run_dir.join("unverifiable.o");
    std::fs::write(&bad, unverifiable_object()).unwrap();
    let e = c
        .system
        .upgrade_programs(pb::UpgradeProgramsRequest { object_path: bad.display().to_string() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("dp_xdp_ingress")
            && e.message().contains("Verifier output")
            && e.message().contains("unreachable insn"),
        "{}",
        e.message()
    );

    let garbage = server.run_dir.join("garbage.o");
    std::fs::write(&garbage, b"not an ELF object").unwrap();
    let e = c
        .system
        .upgrade_programs(pb::UpgradeProgramsRequest { object_path: garbage.display().to_string() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    let e = c
        .system
        .upgrade_programs(pb::UpgradeProgramsRequest { object_path: "/nonexistent.o".into() })
        .await
        .unwrap_err();
    assert!(e.code() == tonic::Code::InvalidArgument && e.message().starts_with("object_path:"), "{e:?}");

    assert_eq!(snapshot(&mut c).await, before);
    assert_eq!(pins(&server.bpffs), pins_before);
    assert_eq!(std::fs::read(&server.state_file).unwrap(), state_before);
    topo.ping_h1_to_h2(2).unwrap();
}

/// An object path naming a FIFO (whose open would wait for a writer forever), a device that
/// never ends, or a directory is refused at once, naming the field; a megabyte of path comes
/// back short; the server answers health meanwhile within 100 ms and changed nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_object_path_fifo_device_or_directory_refused_at_once_health_answers() {
    let ns = Netns::new("dfi-").unwrap();
    let server = Server::start(&ns).unwrap();
    let mut c = server.client().await.unwrap();
    let before = program_ids(&mut c).await;
    let fifo = server.run_dir.join("object.fifo");
    let path = std::ffi::CString::new(fifo.display().to_string()).unwrap();
    // SAFETY: a NUL-terminated path; mkfifo only creates the node.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    let long = "x".repeat(1 << 20);
    for p in [fifo.display().to_string(), "/dev/zero".into(), "/".into(), long] {
        let mut upgrade = c.clone();
        let req = pb::UpgradeProgramsRequest { object_path: p.clone() };
        let call = tokio::spawn(async move { upgrade.system.upgrade_programs(req).await });
        // Health is answered, fast, whatever the upgrade call is doing.
        let t = Instant::now();
        let h = c
            .health()
            .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(h.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
        assert!(t.elapsed() < Duration::from_millis(100), "health took {:?}", t.elapsed());
        let e =
            tokio::time::timeout(Duration::from_secs(2), call).await.expect("refused at once").unwrap().unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{}", &e.message()[..e.message().len().min(300)]);
        assert!(e.message().starts_with("object_path:") && e.message().len() < 600, "{} bytes", e.message().len());
    }
    assert_eq!(program_ids(&mut c).await, before, "nothing changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpctl_system_reset_leaves_no_pin_link_or_program() {
    let topo = Topology::routed().unwrap();
    let mut server = Server::start(&topo.rtr).unwrap();
    let mut c = programmed(&topo, &server).await;
    let ids = program_ids(&mut c).await;
    drop(c);
    let o = server.dpctl(&["system", "reset"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let status = server.stop_or_wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!server.bpffs.exists(), "pins left: {:?}", pins(&server.bpffs));
    assert!(!server.state_file.exists());
    for dev in [&topo.r0, &topo.r1] {
        let out = topo.rtr.exec("ip", &["-d", "link", "show", dev]).unwrap();
        assert!(!out.contains("prog/xdp"), "{out}");
    }
    // Programs go once nothing references them (the kernel frees them asynchronously).
    let deadline = Instant::now() + Duration::from_secs(5);
    while ids.iter().any(|id| program_exists(*id) || links_running(*id) > 0) {
        assert!(Instant::now() < deadline, "programs {ids:?} still loaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
