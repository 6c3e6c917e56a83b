//! IPv4 flat tables (16-8-8 multibit tries in array chunks, per routes-mode VRF) behind
//! `AddRoutes`: what the route stage reads, checked by running the XDP ingress program over a
//! server's pinned maps (BPF_PROG_TEST_RUN) and by `LookupRoute` (which reads the same table)
//! against a brute-force longest-prefix match, through churn (adds, re-points, deletes), a pool
//! too small for a VRF (the VRF falls back to its trie and comes back), and server restarts
//! (tables adopted as they are; one a crash left behind rebuilt from the tries).

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
};

use controller_client::{pb, Client};
use integration::{mask4 as mask, Harness, Netns, Rng, Server};

const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

type Table = BTreeMap<(u32, u8), u32>;

fn lpm(t: &Table, a: u32) -> Option<((u32, u8), u32)> {
    (0..=32u8).rev().find_map(|len| t.get(&(mask(a, len), len)).map(|nh| ((mask(a, len), len), *nh)))
}

fn prefix(p: (u32, u8)) -> String {
    format!("{}/{}", Ipv4Addr::from(p.0), p.1)
}

/// `text` without its terminal colour codes.
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn nh_mac(id: u32) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, id as u8]
}

/// `lo` attached (VRF 0: the test runs' ingress), next hops 1..=8 ENCAP out of it, each to its
/// own MAC, so a forwarded frame names the next hop that carried it.
async fn setup(client: &mut Client) {
    client.interfaces.add_interface(pb::AddInterfaceRequest { name: "lo".into(), ..Default::default() }).await.unwrap();
    let next_hops =
        (1..=8).map(|id| integration::encap_nexthop(id, "lo", &format!("02:00:00:00:00:{id:02x}"))).collect();
    client
        .routing
        .add_next_hops(pb::AddNextHopsRequest { next_hops, replace: false, ..Default::default() })
        .await
        .unwrap();
}

/// Random prefixes of every length 0..=32 under a few /8s, so that short and long ones nest at
/// every level of the table.
fn random_prefixes(rng: &mut Rng, n: usize, base: u32) -> Vec<(u32, u8)> {
    let mut out = std::collections::BTreeSet::new();
    while out.len() < n {
        let len = (rng.next() % 33) as u8;
        let a = base | ((rng.next() as u32 % 3) << 24) | (rng.next() as u32 & 0x00ff_ffff);
        out.insert((mask(a, len.max(6)), len.max(6)));
    }
    out.into_iter().collect()
}

/// Addresses inside, at the edges of and just outside the table's prefixes, and elsewhere.
fn probes(rng: &mut Rng, t: &Table, n: usize) -> Vec<u32> {
    let keys: Vec<(u32, u8)> = t.keys().copied().collect();
    let mut out = Vec::with_capacity(n);
    while out.len() < n && !keys.is_empty() {
        let (a, len) = keys[(rng.next() % keys.len() as u64) as usize];
        let span = if len == 0 { u32::MAX } else { (1u32 << (32 - len)) - 1 };
        out.extend([a, a.wrapping_add(span), a.wrapping_add(span).wrapping_add(1), a | (rng.next() as u32 & span)]);
    }
    out.push(0x0800_0000 | (rng.next() as u32 & 0x00ff_ffff));
    out
}

async fn add(client: &mut Client, vrf: u32, routes: &[((u32, u8), u32)], replace: bool) {
    for chunk in routes.chunks(5000) {
        let routes = chunk.iter().map(|(p, nh)| pb::Route { vrf, prefix: prefix(*p), next_hop: *nh }).collect();
        client.routing.add_routes(pb::AddRoutesRequest { routes, replace, ..Default::default() }).await.unwrap();
    }
}

async fn delete(client: &mut Client, vrf: u32, routes: &[(u32, u8)]) {
    for chunk in routes.chunks(5000) {
        let routes = chunk.iter().map(|p| pb::Route { vrf, prefix: prefix(*p), next_hop: 0 }).collect();
        client.routing.delete_routes(pb::DeleteRoutesRequest { routes, ..Default::default() }).await.unwrap();
    }
}

async fn vrf(client: &mut Client, id: u32) -> pb::Vrf {
    let vrfs = client.routing.list_vrfs(pb::ListVrfsRequest {}).await.unwrap().into_inner().vrfs;
    vrfs.into_iter().find(|v| v.id == id).unwrap()
}

/// Every probe, through the XDP program (VRF 0, the ingress `lo`'s): forwarded out of the next
/// hop of the brute-force longest match, or passed unrouted where there is none.
fn check_xdp(xdp: &Harness, t: &Table, addrs: &[u32]) {
    let mut wrong = Vec::new();
    for &a in addrs {
        let (verdict, out) = xdp.run(&integration::udp_frame(IpAddr::V4(Ipv4Addr::from(a)), 12345, 53));
        let ok = match lpm(t, a) {
            Some((_, nh)) => verdict == XDP_REDIRECT && out[..6] == nh_mac(nh),
            None => verdict == XDP_PASS,
        };
        if !ok {
            wrong.push(format!(
                "{}: expected {:?}, verdict {verdict}, dst MAC {:02x?}",
                Ipv4Addr::from(a),
                lpm(t, a),
                &out[..6]
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} disagree:\n{}",
        wrong.len(),
        addrs.len(),
        wrong[..wrong.len().min(20)].join("\n")
    );
}

/// Every probe through `LookupRoute` in `vrf`: the matched prefix and next hop.
async fn check_lookup(client: &mut Client, vrf: u32, t: &Table, addrs: &[u32]) {
    let mut wrong = Vec::new();
    for &a in addrs {
        let r = client
            .routing
            .lookup_route(pb::LookupRouteRequest { vrf, address: Ipv4Addr::from(a).to_string() })
            .await
            .unwrap()
            .into_inner();
        let got = r.found.then(|| r.route.map(|r| (r.prefix, r.next_hop))).flatten();
        let want = lpm(t, a).map(|(p, nh)| (prefix(p), nh));
        if got != want {
            wrong.push(format!("{}: expected {want:?}, got {got:?}", Ipv4Addr::from(a)));
        }
    }
    assert!(
        wrong.is_empty(),
        "vrf {vrf}: {} of {} disagree:\n{}",
        wrong.len(),
        addrs.len(),
        wrong[..wrong.len().min(20)].join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fib4_random_churn_in_two_vrfs_forwards_as_longest_prefix_match() {
    let ns = Netns::new("dpf4-").unwrap();
    let server = Server::start(&ns).unwrap();
    let mut client = server.client().await.unwrap();
    setup(&mut client).await;
    client.routing.add_vrf(pb::AddVrfRequest { id: 7, ..Default::default() }).await.unwrap();
    assert_eq!(vrf(&mut client, 7).await.ipv4_lookup(), pb::Ipv4Lookup::Flat, "a new VRF gets a flat table");
    let mut rng = Rng(0x00f1_b4c4_0ffe_e123);
    let mut t0: Table =
        random_prefixes(&mut rng, 4000, 0xc000_0000).into_iter().map(|p| (p, 1 + (rng.next() % 8) as u32)).collect();
    let t7: Table =
        random_prefixes(&mut rng, 2000, 0xc000_0000).into_iter().map(|p| (p, 1 + (rng.next() % 8) as u32)).collect();
    add(&mut client, 0, &t0.iter().map(|(p, n)| (*p, *n)).collect::<Vec<_>>(), false).await;
    add(&mut client, 7, &t7.iter().map(|(p, n)| (*p, *n)).collect::<Vec<_>>(), false).await;
    for id in [0, 7] {
        let v = vrf(&mut client, id).await;
        assert_eq!(v.ipv4_lookup(), pb::Ipv4Lookup::Flat, "vrf {id}");
        assert!(v.ipv4_flat_chunks > 256, "vrf {id}: chunks below the root ({})", v.ipv4_flat_chunks);
    }
    let xdp = Harness::over_pins(&server.bpffs).expect("load dp_xdp_ingress over the server\'s pins");
    let addrs = probes(&mut rng, &t0, 3000);
    check_xdp(&xdp, &t0, &addrs);
    check_lookup(&mut client, 0, &t0, &addrs[..800]).await;
    let addrs7 = probes(&mut rng, &t7, 800);
    check_lookup(&mut client, 7, &t7, &addrs7).await;

    // Churn: half deleted, a quarter re-pointed in place, a thousand new.
    let keys: Vec<(u32, u8)> = t0.keys().copied().collect();
    let gone: Vec<(u32, u8)> = keys.iter().copied().filter(|_| rng.next().is_multiple_of(2)).collect();
    delete(&mut client, 0, &gone).await;
    for p in &gone {
        t0.remove(p);
    }
    let mut moved: Vec<((u32, u8), u32)> = Vec::new();
    for &p in t0.keys() {
        let r = rng.next();
        if r.is_multiple_of(4) {
            moved.push((p, 1 + ((r >> 8) % 8) as u32));
        }
    }
    add(&mut client, 0, &moved, true).await;
    t0.extend(moved.iter().copied());
    let fresh: Vec<((u32, u8), u32)> = random_prefixes(&mut rng, 1000, 0xc600_0000)
        .into_iter()
        .filter(|p| !t0.contains_key(p))
        .map(|p| (p, 1 + (rng.next() % 8) as u32))
        .collect();
    add(&mut client, 0, &fresh, false).await;
    t0.extend(fresh.iter().copied());
    let addrs = probes(&mut rng, &t0, 3000);
    check_xdp(&xdp, &t0, &addrs);
    check_lookup(&mut client, 7, &t7, &addrs7[..200]).await;

    // Everything deleted: every chunk below the root is given back (VRF 7's stay).
    let all: Vec<(u32, u8)> = t0.keys().copied().collect();
    delete(&mut client, 0, &all).await;
    let v0 = vrf(&mut client, 0).await;
    assert_eq!((v0.ipv4_lookup(), v0.ipv4_flat_chunks), (pb::Ipv4Lookup::Flat, 256));
    check_xdp(&xdp, &Table::new(), &addrs[..500]);
    let v7 = vrf(&mut client, 7).await;
    let status = client.system.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner();
    let pool = status.maps.iter().find(|m| m.name == "FIB4_CHUNKS").unwrap();
    assert_eq!(pool.occupancy, u64::from(256 + v7.ipv4_flat_chunks), "pool occupancy: VRF 0's root and VRF 7's table");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fib4_pool_too_small_vrf_falls_back_to_trie_forwards_same_then_flat_again() {
    let ns = Netns::new("dpf4-").unwrap();
    // VRF 0's root and 44 chunks.
    let server = Server::start_with(&ns, &["--fib4-chunks", "300"]).unwrap();
    let mut client = server.client().await.unwrap();
    setup(&mut client).await;
    // A /24 and a /28 in each of 50 /16s: one chunk per /16 for the /24s, one per /24 for
    // the /28s.
    let mut t: Table = Table::new();
    for i in 0..50u32 {
        t.insert((0xc612_0000 + (i << 16) + 0x0100, 24), 1 + i % 8);
    }
    let first: Vec<((u32, u8), u32)> = t.iter().take(40).map(|(p, n)| (*p, *n)).collect();
    add(&mut client, 0, &first, false).await;
    let v = vrf(&mut client, 0).await;
    assert_eq!((v.ipv4_lookup(), v.ipv4_flat_chunks), (pb::Ipv4Lookup::Flat, 296));
    // Ten more /16s than there are chunks: the VRF is looked up in its trie from then on.
    let rest: Vec<((u32, u8), u32)> = t.iter().skip(40).map(|(p, n)| (*p, *n)).collect();
    add(&mut client, 0, &rest, false).await;
    assert_eq!(vrf(&mut client, 0).await.ipv4_lookup(), pb::Ipv4Lookup::Trie);
    let long: Vec<((u32, u8), u32)> = t.keys().take(5).map(|(a, _)| ((a + 0x40, 28), 8)).collect();
    add(&mut client, 0, &long, false).await;
    t.extend(long.iter().copied());
    let xdp = Harness::over_pins(&server.bpffs).expect("load dp_xdp_ingress over the server\'s pins");
    let mut rng = Rng(0x7e57_0001);
    let addrs = probes(&mut rng, &t, 600);
    check_xdp(&xdp, &t, &addrs);
    let log = server.log_text();
    assert!(log.contains("IPv4 flat table left"), "the fallback is logged:\n{log}");
    // The room VRF 0 could not use is there for a VRF that fits (its root).
    client.routing.add_vrf(pb::AddVrfRequest { id: 3, ..Default::default() }).await.unwrap();
    let v3 = vrf(&mut client, 3).await;
    assert_eq!((v3.ipv4_lookup(), v3.ipv4_flat_chunks), (pb::Ipv4Lookup::Flat, 256));
    client.routing.delete_vrf(pb::DeleteVrfRequest { id: 3 }).await.unwrap();
    assert_eq!(vrf(&mut client, 0).await.ipv4_lookup(), pb::Ipv4Lookup::Trie, "50 /16s still do not fit");

    // Deleting 14 /24s (and the /28s in them) makes room: a flat table again, built from
    // every route, 256 + 36 + 0 chunks.
    let gone: Vec<(u32, u8)> = t.keys().copied().filter(|(a, _)| (a >> 16) & 0xff >= 0x12 + 36).collect();
    let gone_long: Vec<(u32, u8)> = t.keys().copied().filter(|(_, l)| *l == 28).collect();
    delete(&mut client, 0, &gone_long).await;
    for p in &gone_long {
        t.remove(p);
    }
    delete(&mut client, 0, &gone).await;
    for p in &gone {
        t.remove(p);
    }
    let v = vrf(&mut client, 0).await;
    assert_eq!((v.ipv4_lookup(), v.ipv4_flat_chunks), (pb::Ipv4Lookup::Flat, 256 + 36), "{:?}", gone.len());
    let addrs = probes(&mut rng, &t, 600);
    check_xdp(&xdp, &t, &addrs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fib4_restart_adopts_tables_and_rebuilds_one_a_crash_left_behind() {
    use aya::maps::{lpm_trie::Key, Array, LpmTrie, Map, MapData};
    use dataplane_common::{route::RECORD_VALID, RouteAddrV4, RouteRecord4, RouteValue};

    let ns = Netns::new("dpf4-").unwrap();
    let mut server = Server::start(&ns).unwrap();
    let mut client = server.client().await.unwrap();
    setup(&mut client).await;
    client.routing.add_vrf(pb::AddVrfRequest { id: 7, ..Default::default() }).await.unwrap();
    let mut rng = Rng(0x0ad0_97ed);
    let mut t: Table =
        random_prefixes(&mut rng, 1500, 0xc000_0000).into_iter().map(|p| (p, 1 + (rng.next() % 8) as u32)).collect();
    add(&mut client, 0, &t.iter().map(|(p, n)| (*p, *n)).collect::<Vec<_>>(), false).await;
    add(&mut client, 7, &[((0xcb00_7100, 24), 3)], false).await;
    let chunks = vrf(&mut client, 0).await.ipv4_flat_chunks;

    // A crash, then a restart: both tables adopted as the kernel holds them, none rebuilt.
    server.kill9().unwrap();
    server.restart().unwrap();
    let log = plain(&server.log_text());
    let restored: Vec<&str> = log.lines().filter(|l| l.contains("state restored")).collect();
    assert_eq!(restored.len(), 2, "{log}");
    assert!(
        restored[1].contains("ipv4_flat_adopted=2") && restored[1].contains("ipv4_flat_built=0"),
        "{}",
        restored[1]
    );
    let mut client = server.client().await.unwrap();
    assert_eq!(vrf(&mut client, 0).await.ipv4_flat_chunks, chunks);
    let xdp = Harness::over_pins(&server.bpffs).expect("load dp_xdp_ingress over the server\'s pins");
    let addrs = probes(&mut rng, &t, 1500);
    check_xdp(&xdp, &t, &addrs);
    drop(xdp);

    // What a crash in the middle of AddRoutes leaves: a route's record (written first) that
    // never reached the flat table; and a route in the trie without a record, as a build that
    // kept IPv4 routes in the trie left them. The restart finds the table differ from the
    // routes and rebuilds it.
    server.kill9().unwrap();
    let maps = server.bpffs.join("v1/maps");
    let state = MapData::from_pin(maps.join("FLOW_STATE")).unwrap();
    let mut state: Array<MapData, u64> = Array::try_from(Map::Array(state)).unwrap();
    let mark = state.get(&dataplane_common::globals::ROUTE4_RECORDS_MARK, 0).unwrap() as u32;
    let records = MapData::from_pin(maps.join("ROUTE4_RECORDS")).unwrap();
    let mut records: Array<MapData, RouteRecord4> = Array::try_from(Map::Array(records)).unwrap();
    let (&some, _) = t.iter().next().unwrap();
    let nexthop = (0..mark)
        .map(|i| records.get(&i, 0).unwrap())
        .find(|r| r.flags != 0 && (u32::from_be_bytes(r.addr), r.prefix_len) == some)
        .unwrap()
        .nexthop;
    let crashed = (0xcb00_7180u32, 25u8);
    let rec = RouteRecord4 {
        vrf: 0,
        addr: crashed.0.to_be_bytes(),
        prefix_len: 25,
        _pad: [0; 2],
        flags: RECORD_VALID,
        nexthop,
    };
    state.set(dataplane_common::globals::ROUTE4_RECORDS_MARK, u64::from(mark + 1), 0).unwrap();
    records.set(mark, rec, 0).unwrap();
    let old_build = (0xcb00_7140u32, 26u8);
    let trie = MapData::from_pin(maps.join("ROUTES_V4")).unwrap();
    let mut trie: LpmTrie<MapData, RouteAddrV4, RouteValue> = LpmTrie::try_from(Map::LpmTrie(trie)).unwrap();
    trie.insert(
        &Key::new(32 + 26, RouteAddrV4 { vrf: [0; 4], addr: old_build.0.to_be_bytes() }),
        RouteValue { nexthop, prefix_len: 26 },
        0,
    )
    .unwrap();
    drop((state, records, trie));
    t.insert(crashed, t[&some]);
    t.insert(old_build, t[&some]);
    server.restart().unwrap();
    let log = plain(&server.log_text());
    let last = log.lines().rfind(|l| l.contains("state restored")).unwrap().to_owned();
    assert!(last.contains("ipv4_flat_adopted=1") && last.contains("ipv4_flat_built=1"), "{last}");
    let mut client = server.client().await.unwrap();
    assert_eq!(vrf(&mut client, 0).await.ipv4_lookup(), pb::Ipv4Lookup::Flat);
    let listed = client
        .routing
        .list_routes(pb::ListRoutesRequest { vrf: Some(0), prefix: "203.0.113.0/24".into() })
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(listed.routes.len(), 2, "{listed:?}");
    let xdp = Harness::over_pins(&server.bpffs).expect("load dp_xdp_ingress over the server\'s pins");
    let mut addrs = probes(&mut rng, &t, 1500);
    addrs.extend([0xcb00_7181, 0xcb00_71ff, 0xcb00_717f, 0xcb00_7141, 0xcb00_713f]);
    check_xdp(&xdp, &t, &addrs);
    check_lookup(&mut client, 7, &[((0xcb00_7100, 24), 3)].into_iter().collect(), &[0xcb00_7101, 0xcb00_7201]).await;
}
