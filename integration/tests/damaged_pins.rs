//! Damaged pins (issue 18, item 4): a map pin removed or replaced by hand, while the server is
//! stopped or while it runs, is pinned again from the map the attached programs use, and
//! reported; the routes the server lists are the ones XDP forwards, in both families, and a
//! route added afterwards forwards (the server writes the map XDP reads). A lost map that was the
//! only copy of forwarding state refuses the start, naming it, and changes nothing. A lost map the
//! restore rebuilds is created; an upgrade (which loads over the pins) repairs them first.

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::CString,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::{maps::MapInfo, programs::ProgramInfo};
use controller_client::{pb, Client};
use integration::*;

/// An address behind h2 in a prefix no route covers until the test adds one.
const EXTRA4: &str = "203.0.113.5";
const EXTRA6: &str = "2001:db8:3::5";

/// Every route the server lists, as "vrf prefix -> next hop".
async fn routes(c: &mut Client) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut s = c.routing.list_routes(pb::ListRoutesRequest::default()).await.unwrap().into_inner();
    while let Some(chunk) = s.message().await.unwrap() {
        out.extend(chunk.routes.iter().map(|r| format!("{} {} -> {}", r.vrf, r.prefix, r.next_hop)));
    }
    out
}

/// The status's pin repairs and their total.
async fn pin_health(c: &mut Client) -> pb::PinHealth {
    let st = c.system.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner();
    st.pin_health.expect("GetStatus has pin_health")
}

/// h1 reaches `dst` (IPv4 or IPv6) through the router, every ping answered.
fn ping(topo: &Topology, dst: &str) -> anyhow::Result<String> {
    let family = if dst.contains(':') { "-6" } else { "-4" };
    topo.h1.exec("ping", &[family, "-c", "3", "-i", "0.1", "-W", "2", "-q", dst])
}

/// What the router's programs forward: h1 to h2 in both families (every listed route of the
/// topology is on that path: the hosts' subnets both ways).
fn assert_forwards_both(topo: &Topology, when: &str) {
    for dst in [H2_ADDR, H2_ADDR6] {
        if let Err(e) = ping(topo, dst) {
            panic!("{when}: h1 -> {dst} not forwarded: {e}");
        }
    }
}

/// Gives h2 an address in each family in a prefix nothing routes yet; checks it is not reached.
fn prepare_extra(topo: &Topology) {
    topo.h2.exec("ip", &["addr", "add", &format!("{EXTRA4}/32"), "dev", "eth0"]).unwrap();
    topo.h2.exec("ip", &["-6", "addr", "add", &format!("{EXTRA6}/128"), "dev", "eth0", "nodad"]).unwrap();
    for dst in [EXTRA4, EXTRA6] {
        assert!(ping(topo, dst).is_err(), "{dst} reached before any route to it");
    }
}

/// Adds routes to the extra addresses (next hop 1, towards h2) and checks XDP forwards them:
/// the server writes the maps the attached programs read.
async fn assert_new_routes_forward(topo: &Topology, c: &mut Client, when: &str) {
    let routes =
        ["203.0.113.0/24", "2001:db8:3::/64"].map(|p| pb::Route { vrf: 0, prefix: p.into(), next_hop: 1 }).to_vec();
    c.routing.add_routes(pb::AddRoutesRequest { routes, replace: false, ..Default::default() }).await.unwrap();
    for dst in [EXTRA4, EXTRA6] {
        if let Err(e) = ping(topo, dst) {
            panic!("{when}: a route added now does not forward to {dst}: {e}");
        }
    }
}

/// Id of the map pinned at `<bpffs>/v1/maps/<name>`.
fn pinned_id(server: &Server, name: &str) -> u32 {
    MapInfo::from_pin(server.bpffs.join("v1/maps").join(name)).unwrap().id()
}

/// The ids of the maps the pinned XDP program uses.
fn xdp_map_ids(server: &Server) -> Vec<u32> {
    let info = ProgramInfo::from_pin(server.bpffs.join("v1/programs/dp_xdp_ingress")).unwrap();
    info.map_ids().unwrap().expect("kernel reports map ids")
}

/// Every pin under `<bpffs>/v1/{maps,programs}` with the id of the object it names.
fn pins(server: &Server) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for (dir, is_map) in [("v1/maps", true), ("v1/programs", false)] {
        for e in std::fs::read_dir(server.bpffs.join(dir)).unwrap().flatten() {
            let id = if is_map {
                MapInfo::from_pin(e.path()).unwrap().id()
            } else {
                ProgramInfo::from_pin(e.path()).unwrap().id()
            };
            out.insert(format!("{dir}/{}", e.file_name().to_string_lossy()), id);
        }
    }
    out
}

/// Waits until the status counts `total` repairs (the periodic check runs every 2 s).
async fn wait_for_repairs(c: &mut Client, total: u64) -> pb::PinHealth {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let h = pin_health(c).await;
        if h.repairs_total >= total || Instant::now() > deadline {
            return h;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The repair of `map` among `h`'s, as (found, done, phase).
fn repair_of(h: &pb::PinHealth, map: &str, phase: &str) -> (String, String) {
    let r = h
        .repairs
        .iter()
        .rev()
        .find(|r| r.map == map && r.phase == phase)
        .unwrap_or_else(|| panic!("no {phase} repair of {map} reported: {h:?}"));
    assert!(r.at_unix_ms > 0, "{r:?}");
    (r.found.clone(), r.done.clone())
}

/// A router programmed with both families, checked forwarding; the server and its client.
async fn routed_server() -> (Topology, Server, Client) {
    let topo = Topology::routed().unwrap();
    let server = Server::start(&topo.rtr).unwrap();
    let mut c = server.client().await.unwrap();
    program_router(&topo, &mut c).await.unwrap();
    assert_forwards_both(&topo, "before any damage");
    prepare_extra(&topo);
    (topo, server, c)
}

/// Creates a map of the same type, sizes, capacity and flags as `like` (its pin), and pins it
/// at `like`'s path in its place: a pin replaced by hand. Returns the new map's id.
fn replace_with_foreign_map(like: &Path) -> u32 {
    let info = MapInfo::from_pin(like).unwrap();
    // union bpf_attr for BPF_MAP_CREATE: map_type, key_size, value_size, max_entries, map_flags,
    // inner_map_fd, numa_node, map_name[16].
    let mut attr = [0u8; 128];
    let t = info.map_type().unwrap() as u32;
    for (i, v) in [t, info.key_size(), info.value_size(), info.max_entries(), info.map_flags()].iter().enumerate() {
        attr[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
    }
    attr[28..28 + 7].copy_from_slice(b"FOREIGN");
    // SAFETY: bpf(2) reads `attr` (128 bytes, zero past the fields set) and returns an fd.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 0 as libc::c_long, attr.as_ptr(), attr.len() as libc::c_long) };
    assert!(fd >= 0, "BPF_MAP_CREATE: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    std::fs::remove_file(like).unwrap();
    let path = CString::new(like.as_os_str().as_encoded_bytes()).unwrap();
    // union bpf_attr for BPF_OBJ_PIN: pathname (u64), bpf_fd (u32), file_flags (u32).
    let mut pin = [0u8; 16];
    pin[..8].copy_from_slice(&(path.as_ptr() as u64).to_ne_bytes());
    pin[8..12].copy_from_slice(&(fd.as_raw_fd() as u32).to_ne_bytes());
    // SAFETY: bpf(2) reads `pin` and the NUL-terminated path it points to.
    let r = unsafe { libc::syscall(libc::SYS_bpf, 6 as libc::c_long, pin.as_ptr(), pin.len() as libc::c_long) };
    assert_eq!(r, 0, "BPF_OBJ_PIN: {}", std::io::Error::last_os_error());
    let id = MapInfo::from_pin(like).unwrap().id();
    assert_ne!(id, info.id());
    id
}

fn map_pin(server: &Server, name: &str) -> PathBuf {
    server.bpffs.join("v1/maps").join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_removed_while_stopped_repinned_at_start_listing_equals_forwarding() {
    let (topo, mut server, mut c) = routed_server().await;
    let listed = routes(&mut c).await;
    let (v6, chunks) = (pinned_id(&server, "ROUTES_V6"), pinned_id(&server, "FIB4_CHUNKS"));
    assert!(xdp_map_ids(&server).contains(&v6) && xdp_map_ids(&server).contains(&chunks));
    drop(c);
    server.stop().unwrap();
    for map in ["ROUTES_V6", "FIB4_CHUNKS"] {
        std::fs::remove_file(map_pin(&server, map)).unwrap();
    }
    // XDP goes on forwarding with the maps it holds, pins or not.
    assert_forwards_both(&topo, "pins removed, server stopped");

    server.restart().unwrap();
    let mut c = server.client().await.unwrap();
    let h = pin_health(&mut c).await;
    assert_eq!(h.repairs_total, 2, "{h:?}");
    for (map, id) in [("ROUTES_V6", v6), ("FIB4_CHUNKS", chunks)] {
        let (found, done) = repair_of(&h, map, "start");
        assert_eq!(found, "pin missing");
        assert!(done.contains(&format!("map id {id} (the one in use) pinned again")), "{done}");
        assert_eq!(pinned_id(&server, map), id, "{map} pinned again is the programs' own");
    }
    assert!(server.log_text().contains("damaged pin repaired"), "{}", server.log_text());
    let shown = server.dpctl(&["status"]);
    assert!(String::from_utf8_lossy(&shown.stdout).contains("pin repairs 2 since start"), "{shown:?}");
    assert_eq!(routes(&mut c).await, listed, "the listing after the restart");
    assert_forwards_both(&topo, "after the restart");
    assert_new_routes_forward(&topo, &mut c, "after the restart").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_removed_while_running_repinned_by_periodic_check() {
    let (topo, mut server, mut c) = routed_server().await;
    let listed = routes(&mut c).await;
    let (v6, chunks) = (pinned_id(&server, "ROUTES_V6"), pinned_id(&server, "FIB4_CHUNKS"));
    for map in ["ROUTES_V6", "FIB4_CHUNKS"] {
        std::fs::remove_file(map_pin(&server, map)).unwrap();
    }
    let h = wait_for_repairs(&mut c, 2).await;
    assert_eq!(h.repairs_total, 2, "{h:?}");
    for (map, id) in [("ROUTES_V6", v6), ("FIB4_CHUNKS", chunks)] {
        let (found, _) = repair_of(&h, map, "running");
        assert_eq!(found, "pin missing");
        assert_eq!(pinned_id(&server, map), id, "{map}");
    }
    assert_new_routes_forward(&topo, &mut c, "after the periodic repair").await;
    // And a restart finds nothing to repair: the listing is what forwards.
    let listed_now = routes(&mut c).await;
    assert_eq!(listed_now.len(), listed.len() + 2);
    drop(c);
    server.stop().unwrap();
    server.restart().unwrap();
    let mut c = server.client().await.unwrap();
    assert_eq!(pin_health(&mut c).await.repairs_total, 0);
    assert_eq!(routes(&mut c).await, listed_now);
    assert_forwards_both(&topo, "after the restart");
    for dst in [EXTRA4, EXTRA6] {
        ping(&topo, dst).unwrap_or_else(|e| panic!("{dst} after the restart: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_replaced_by_foreign_map_moved_aside_and_repinned() {
    let (topo, mut server, mut c) = routed_server().await;
    let listed = routes(&mut c).await;
    let v6 = pinned_id(&server, "ROUTES_V6");

    // Stopped: the start finds the foreign pin.
    drop(c);
    server.stop().unwrap();
    let foreign = replace_with_foreign_map(&map_pin(&server, "ROUTES_V6"));
    server.restart().unwrap();
    let mut c = server.client().await.unwrap();
    let h = pin_health(&mut c).await;
    assert_eq!(h.repairs_total, 1, "{h:?}");
    let (found, done) = repair_of(&h, "ROUTES_V6", "start");
    assert_eq!(found, format!("pin replaced: it named map id {foreign}"));
    let aside = server.bpffs.join(format!("v1/displaced/ROUTES_V6-{foreign}"));
    assert!(done.contains(&aside.display().to_string()), "{done}");
    assert_eq!(MapInfo::from_pin(&aside).unwrap().id(), foreign, "the foreign map kept aside");
    assert_eq!(pinned_id(&server, "ROUTES_V6"), v6);
    assert_eq!(routes(&mut c).await, listed);
    assert_forwards_both(&topo, "after the start's repair");

    // Running: the periodic check finds it.
    let foreign = replace_with_foreign_map(&map_pin(&server, "ROUTES_V6"));
    let h = wait_for_repairs(&mut c, 2).await;
    assert_eq!(h.repairs_total, 2, "{h:?}");
    let (found, _) = repair_of(&h, "ROUTES_V6", "running");
    assert_eq!(found, format!("pin replaced: it named map id {foreign}"));
    assert_eq!(pinned_id(&server, "ROUTES_V6"), v6);
    assert!(server.bpffs.join(format!("v1/displaced/ROUTES_V6-{foreign}")).exists());
    assert_new_routes_forward(&topo, &mut c, "after the periodic repair").await;

    // --reset takes the displaced pins with the rest.
    drop(c);
    server.stop().unwrap();
    let out = topo
        .rtr
        .command(
            bin("dataplane-server").to_str().unwrap(),
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
    assert!(!server.bpffs.exists(), "pins left under {}", server.bpffs.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_of_unused_only_copy_map_missing_refuses_start_and_changes_nothing() {
    let (topo, mut server, c) = routed_server().await;
    // ROUTE4_RECORDS: the server's record of every IPv4 route (the flat tables keep no
    // prefixes); no program uses it, so nothing holds it once its pin and the server are gone.
    let records = pinned_id(&server, "ROUTE4_RECORDS");
    assert!(!xdp_map_ids(&server).contains(&records), "the test needs a map no program uses");
    drop(c);
    server.stop().unwrap();
    std::fs::remove_file(map_pin(&server, "ROUTE4_RECORDS")).unwrap();
    let before = pins(&server);
    let state = std::fs::read(&server.state_file).unwrap();

    let e = server.restart().unwrap_err().to_string();
    assert!(e.contains("ROUTE4_RECORDS") && e.contains("--reset"), "{e}");
    assert!(e.contains("Nothing was changed"), "{e}");
    assert_eq!(pins(&server), before, "the refused start changed the pins");
    assert!(!map_pin(&server, "ROUTE4_RECORDS").exists());
    assert_eq!(std::fs::read(&server.state_file).unwrap(), state, "the refused start rewrote the state file");
    let out = topo.rtr.exec("ip", &["-d", "link", "show", &topo.r0]).unwrap();
    assert!(out.contains("prog/xdp"), "XDP detached: {out}");
    assert_forwards_both(&topo, "after the refused start");
}

/// `FIB4_VRFS[vrf]` as pinned (the VRF's flat-table root + 1; 0: none).
fn fib4_root(server: &Server, vrf: u32) -> u32 {
    let data = aya::maps::MapData::from_pin(map_pin(server, "FIB4_VRFS")).unwrap();
    let roots = aya::maps::Array::<_, u32>::try_from(aya::maps::Map::Array(data)).unwrap();
    roots.get(&vrf, 0).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_of_unused_rebuildable_map_missing_created_and_roots_taken_back() {
    let (topo, mut server, mut c) = routed_server().await;
    let listed = routes(&mut c).await;
    // FIB4_VRFS: only the server (and the benchmark) read it; XDP has each VRF's root in the
    // interface entries. Created empty, it would say "no flat table" and the restore would
    // build one over the chunks XDP is reading: the roots are taken back from the entries.
    let vrfs = pinned_id(&server, "FIB4_VRFS");
    assert!(!xdp_map_ids(&server).contains(&vrfs), "the test needs a map no program uses");
    let root = fib4_root(&server, 0);
    assert_ne!(root, 0, "vrf 0 has a flat table");
    drop(c);
    server.stop().unwrap();
    std::fs::remove_file(map_pin(&server, "FIB4_VRFS")).unwrap();

    server.restart().unwrap();
    let mut c = server.client().await.unwrap();
    let h = pin_health(&mut c).await;
    assert_eq!(h.repairs_total, 1, "{h:?}");
    let (found, done) = repair_of(&h, "FIB4_VRFS", "start");
    assert_eq!(found, "pin missing");
    assert!(done.starts_with("created empty"), "{done}");
    assert_ne!(pinned_id(&server, "FIB4_VRFS"), vrfs, "a new map");
    assert!(
        server.log_text().contains("FIB4_VRFS: root taken back from the interface entries"),
        "{}",
        server.log_text()
    );
    assert_eq!(fib4_root(&server, 0), root, "the flat table in use kept its root");
    assert_eq!(routes(&mut c).await, listed);
    assert_forwards_both(&topo, "after the restart");
    assert_new_routes_forward(&topo, &mut c, "after the restart").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_with_pin_missing_repins_before_loading_over_pins() {
    let topo = Topology::routed().unwrap();
    // No periodic check in the test's time: only the upgrade may find the damage.
    let server = Server::start_with(&topo.rtr, &["--pin-check-period-ms", "3600000"]).unwrap();
    let mut c = server.client().await.unwrap();
    program_router(&topo, &mut c).await.unwrap();
    assert_forwards_both(&topo, "before any damage");
    prepare_extra(&topo);
    let listed = routes(&mut c).await;
    let v6 = pinned_id(&server, "ROUTES_V6");
    std::fs::remove_file(map_pin(&server, "ROUTES_V6")).unwrap();

    // The new programs are loaded over the pins: a missing one would give them a fresh, empty
    // ROUTES_V6 while the server goes on writing the old one.
    c.system.upgrade_programs(pb::UpgradeProgramsRequest::default()).await.unwrap();
    let h = pin_health(&mut c).await;
    assert_eq!(h.repairs_total, 1, "{h:?}");
    let (found, _) = repair_of(&h, "ROUTES_V6", "running");
    assert_eq!(found, "pin missing");
    assert_eq!(pinned_id(&server, "ROUTES_V6"), v6);
    assert!(xdp_map_ids(&server).contains(&v6), "the upgraded program reads the server's ROUTES_V6");
    assert_eq!(routes(&mut c).await, listed);
    assert_forwards_both(&topo, "after the upgrade");
    assert_new_routes_forward(&topo, &mut c, "after the upgrade").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn program_pins_removed_too_maps_found_through_links_programs() {
    let (topo, mut server, mut c) = routed_server().await;
    let listed = routes(&mut c).await;
    let v6 = pinned_id(&server, "ROUTES_V6");
    drop(c);
    server.stop().unwrap();
    // Nothing pinned names the programs any more: only the links hold them, and with them the
    // maps they read.
    std::fs::remove_dir_all(server.bpffs.join("v1/programs")).unwrap();
    std::fs::remove_file(map_pin(&server, "ROUTES_V6")).unwrap();
    assert_forwards_both(&topo, "program and map pins removed, server stopped");

    server.restart().unwrap();
    let mut c = server.client().await.unwrap();
    let h = pin_health(&mut c).await;
    assert_eq!(h.repairs_total, 1, "{h:?}");
    let (found, done) = repair_of(&h, "ROUTES_V6", "start");
    assert_eq!(found, "pin missing");
    assert!(done.contains(&format!("map id {v6} (the one in use)")), "{done}");
    // The programs were loaded again and the links switched to them, over the same maps.
    assert!(xdp_map_ids(&server).contains(&v6), "the new program reads the ROUTES_V6 that forwarded");
    assert_eq!(routes(&mut c).await, listed);
    assert_forwards_both(&topo, "after the restart");
    assert_new_routes_forward(&topo, &mut c, "after the restart").await;
}
