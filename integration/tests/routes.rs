//! Routes at scale and against the Linux FIB: 100,000 routes in one AddRoutes batch answered
//! correctly by LookupRoute (which reads the LPM map the XDP program reads), an all-or-nothing
//! batch, and longest-prefix answers that agree with the kernel's own FIB (`ip route get
//! fibmatch`) for thousands of random overlapping IPv4 and IPv6 prefixes, both from LookupRoute
//! and from the XDP program's own verdict (a test run over the server's pinned maps).

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    process::Stdio,
};

use controller_client::{pb, Client};
use integration::{mask4, mask6, Netns, Rng, Server};
use tonic::Code;

/// Next hops 1..=8: DISCARD and RECEIVE alternate; they need no interface.
async fn nexthops(client: &mut Client) {
    let next_hops = (1..=8)
        .map(|id| pb::NextHop {
            id,
            kind: Some(if id % 2 == 0 {
                pb::next_hop::Kind::Receive(pb::Receive {})
            } else {
                pb::next_hop::Kind::Discard(pb::Discard {})
            }),
            ..Default::default()
        })
        .collect();
    client
        .routing
        .add_next_hops(pb::AddNextHopsRequest { next_hops, replace: false, ..Default::default() })
        .await
        .unwrap();
}

async fn lookup(client: &mut Client, addr: &str) -> Option<(String, u32)> {
    let r = client
        .routing
        .lookup_route(pb::LookupRouteRequest { vrf: 0, address: addr.into() })
        .await
        .unwrap()
        .into_inner();
    r.found.then(|| {
        let route = r.route.unwrap();
        (route.prefix, route.next_hop)
    })
}

async fn count_routes(client: &mut Client) -> usize {
    let mut s = client.routing.list_routes(pb::ListRoutesRequest::default()).await.unwrap().into_inner();
    let mut n = 0;
    while let Some(c) = s.message().await.unwrap() {
        n += c.routes.len();
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_routes_100k_one_batch_lookups_correct_bad_batch_changes_nothing() {
    let ns = Netns::new("dprs-").unwrap();
    let server = Server::start(&ns).unwrap();
    let mut client = server.client().await.unwrap();
    nexthops(&mut client).await;

    // 100,000 distinct IPv4 prefixes of length 16..=32 inside 10.0.0.0/8-like space of the
    // 203.0.113.0/24-unrelated range: any unicast space works for map lookups.
    let mut rng = Rng(0x5eed_1234_abcd);
    let mut table: BTreeMap<(u32, u8), u32> = BTreeMap::new();
    while table.len() < 100_000 {
        let len = 16 + (rng.next() % 17) as u8;
        let addr = mask4(0x0a00_0000 | (rng.next() as u32 & 0x00ff_ffff), len);
        table.entry((addr, len)).or_insert(1 + (rng.next() % 8) as u32);
    }
    let routes: Vec<pb::Route> = table
        .iter()
        .map(|(&(a, l), &nh)| pb::Route { vrf: 0, prefix: format!("{}/{l}", Ipv4Addr::from(a)), next_hop: nh })
        .collect();
    let t = std::time::Instant::now();
    client.routing.add_routes(pb::AddRoutesRequest { routes, replace: false, ..Default::default() }).await.unwrap();
    eprintln!("100,000 routes in one batch: {:?}", t.elapsed());
    assert_eq!(count_routes(&mut client).await, 100_000);

    // Sample addresses inside installed prefixes; the expected answer is the longest installed
    // prefix containing the address (computed here, independently of the server).
    let keys: Vec<(u32, u8)> = table.keys().copied().collect();
    for _ in 0..2000 {
        let (a, l) = keys[(rng.next() % keys.len() as u64) as usize];
        let host = if l == 32 { 0 } else { rng.next() as u32 & (u32::MAX >> l) };
        let addr = a | host;
        let want = (16..=32u8).rev().find_map(|len| table.get(&(mask4(addr, len), len)).map(|nh| (len, *nh))).unwrap();
        let got = lookup(&mut client, &Ipv4Addr::from(addr).to_string()).await.unwrap();
        assert_eq!(
            got,
            (format!("{}/{}", Ipv4Addr::from(mask4(addr, want.0)), want.0), want.1),
            "lookup {}",
            Ipv4Addr::from(addr)
        );
    }
    assert_eq!(lookup(&mut client, "198.51.100.1").await, None);

    // One bad entry (host bits set) at the end of a big batch: nothing from it is installed.
    let mut bad: Vec<pb::Route> = (0..1000u32)
        .map(|i| pb::Route {
            vrf: 0,
            prefix: format!("{}/32", Ipv4Addr::from(0xc633_6400 + (i % 256) + ((i / 256) << 8) + (1 << 16))),
            next_hop: 1,
        })
        .collect();
    bad.push(pb::Route { vrf: 0, prefix: "198.51.100.7/24".into(), next_hop: 1 });
    let e = client
        .routing
        .add_routes(pb::AddRoutesRequest { routes: bad.clone(), replace: false, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("routes[1000].prefix:"), "{e:?}");
    assert_eq!(count_routes(&mut client).await, 100_000);
    assert_eq!(lookup(&mut client, bad[0].prefix.trim_end_matches("/32")).await, None);
    // Unknown next hop in the middle: NOT_FOUND, still nothing installed.
    bad.pop();
    bad[500].next_hop = 99;
    let e = client
        .routing
        .add_routes(pb::AddRoutesRequest { routes: bad, replace: false, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().starts_with("routes[500].next_hop:"), "{e:?}");
    assert_eq!(count_routes(&mut client).await, 100_000);
}

/// Runs `ip -batch FILE` in `ns` with `lines` as the file; returns stdout. (A file, not a pipe:
/// writing a long script to stdin while ip fills its stdout pipe would deadlock.)
fn ip_batch(ns: &Netns, lines: &str) -> String {
    let path = std::env::temp_dir().join(integration::unique("ipbatch"));
    std::fs::File::create(&path).unwrap().write_all(lines.as_bytes()).unwrap();
    let out = ns.command("ip", &["-batch", path.to_str().unwrap()]).stdin(Stdio::null()).output().unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "ip -batch: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_route_random_overlapping_prefixes_agrees_with_kernel_fib() {
    // The kernel FIB under comparison lives in its own scratch namespace, on a veth (this
    // kernel has no dummy driver).
    let fib = Netns::with_ipv6("dpfib-").unwrap();
    fib.exec("ip", &["link", "add", "dum0", "type", "veth", "peer", "name", "dum1"]).unwrap();
    fib.exec("ip", &["link", "set", "dum0", "up"]).unwrap();
    fib.exec("ip", &["link", "set", "dum1", "up"]).unwrap();
    let dp = Netns::new("dprs-").unwrap();
    let server = Server::start(&dp).unwrap();
    let mut client = server.client().await.unwrap();
    encap_nexthops_via_lo(&mut client).await;

    let mut rng = Rng(0xf1b_5eed_0042);
    let mut v4: BTreeSet<(u32, u8)> = BTreeSet::new();
    let mut v6: BTreeSet<(u128, u8)> = BTreeSet::new();
    // Overlap on purpose: few top bits vary, so short and long prefixes nest.
    while v4.len() < 3000 {
        let len = 8 + (rng.next() % 25) as u8;
        v4.insert((mask4(0xc600_0000 | (rng.next() as u32 & 0x00ff_ffff) & 0xfff0_ffff, len), len));
    }
    while v6.len() < 3000 {
        let len = 32 + (rng.next() % 97) as u8;
        let a = (0x2001_0db8u128 << 96)
            | (u128::from(rng.next()) << 32 & ((1u128 << 96) - 1))
            | u128::from(rng.next() as u32);
        v6.insert((mask6(a & !(0xffffu128 << 80), len), len));
    }
    let mut script = String::from("route add default dev dum0\nroute add ::/0 dev dum0\n");
    let mut routes = vec![
        pb::Route { vrf: 0, prefix: "0.0.0.0/0".into(), next_hop: 1 },
        pb::Route { vrf: 0, prefix: "::/0".into(), next_hop: 1 },
    ];
    for (i, &(a, l)) in v4.iter().enumerate() {
        let p = format!("{}/{l}", Ipv4Addr::from(a));
        script += &format!("route add {p} dev dum0\n");
        routes.push(pb::Route { vrf: 0, prefix: p, next_hop: 1 + (i % 8) as u32 });
    }
    for (i, &(a, l)) in v6.iter().enumerate() {
        let p = format!("{}/{l}", Ipv6Addr::from(a));
        script += &format!("route add {p} dev dum0\n");
        routes.push(pb::Route { vrf: 0, prefix: p, next_hop: 1 + (i % 8) as u32 });
    }
    ip_batch(&fib, &script);
    client
        .routing
        .add_routes(pb::AddRoutesRequest { routes: routes.clone(), replace: false, ..Default::default() })
        .await
        .unwrap();

    // Random addresses, half of them inside installed prefixes, half anywhere in the space.
    let v4k: Vec<_> = v4.iter().copied().collect();
    let v6k: Vec<_> = v6.iter().copied().collect();
    let mut addrs: Vec<IpAddr> = Vec::new();
    for i in 0..1500 {
        let (a, l) = v4k[(rng.next() % v4k.len() as u64) as usize];
        let host = if l == 32 { 0 } else { rng.next() as u32 & (u32::MAX >> l) };
        addrs.push(IpAddr::V4(Ipv4Addr::from(if i % 2 == 0 {
            a | host
        } else {
            0xc600_0000 | (rng.next() as u32 & 0x00ff_ffff)
        })));
        let (a, l) = v6k[(rng.next() % v6k.len() as u64) as usize];
        let host =
            if l == 128 { 0 } else { (u128::from(rng.next()) << 64 | u128::from(rng.next())) & (u128::MAX >> l) };
        addrs.push(IpAddr::V6(Ipv6Addr::from(a | host)));
    }
    // One `ip -batch` for every query: a default route in both tables makes every lookup
    // succeed, so the answers come back one line per query, in order.
    let queries: String = addrs.iter().map(|a| format!("route get fibmatch {a}\n")).collect();
    let answers = ip_batch(&fib, &queries);
    let answers: Vec<&str> = answers.lines().collect();
    assert_eq!(answers.len(), addrs.len(), "one fibmatch line per query");
    let mut mismatches = Vec::new();
    let mut checked = 0;
    let mut kernel_answers = Vec::new();
    for (a, line) in addrs.iter().zip(answers) {
        // fibmatch prints the matched route: "PREFIX dev ...", "default dev ...", or a bare
        // address for a host route.
        let kernel = match line.split_whitespace().next().unwrap_or("") {
            "default" if a.is_ipv4() => "0.0.0.0/0".to_owned(),
            "default" => "::/0".to_owned(),
            p if p.contains('/') => p.to_owned(),
            p if a.is_ipv4() => format!("{p}/32"),
            p => format!("{p}/128"),
        };
        let ours = lookup(&mut client, &a.to_string()).await.map(|(p, _)| p);
        if Some(&kernel) != ours.as_ref() {
            mismatches.push(format!("{a}: kernel {kernel}, dataplane {ours:?}"));
        }
        kernel_answers.push(kernel);
        checked += 1;
    }
    assert!(checked >= 3000);
    assert!(
        mismatches.is_empty(),
        "{} of {checked} disagree:\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(20)].join("\n")
    );

    // The XDP program itself, over the server's own pinned maps: every address must leave
    // through the next hop of the route the kernel chose (each next hop has its own MAC).
    let nh_of: BTreeMap<&str, u32> = routes.iter().map(|r| (r.prefix.as_str(), r.next_hop)).collect();
    let xdp = integration::Harness::over_pins(&server.bpffs).expect("load dp_xdp_ingress over the server\'s pins");
    let mut wrong = Vec::new();
    for (a, kernel) in addrs.iter().zip(&kernel_answers) {
        let nh = nh_of[kernel.as_str()];
        let (verdict, out) = xdp.run(&integration::udp_frame(*a, 12345, 53));
        if verdict != XDP_REDIRECT || out[..6] != nh_mac(nh) {
            wrong.push(format!(
                "{a}: kernel {kernel} (next hop {nh}), XDP verdict {verdict}, dst MAC {:02x?}",
                &out[..6]
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} XDP verdicts disagree:\n{}",
        wrong.len(),
        addrs.len(),
        wrong[..wrong.len().min(20)].join("\n")
    );
}

const XDP_REDIRECT: u32 = 4;

/// MAC of next hop `id` in the FIB comparison.
fn nh_mac(id: u32) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, id as u8]
}

/// Next hops 1..=8: ENCAP out of the server namespace's loopback (attached for this), each to
/// its own MAC, so a forwarded frame names the next hop that carried it.
async fn encap_nexthops_via_lo(client: &mut Client) {
    client.interfaces.add_interface(pb::AddInterfaceRequest { name: "lo".into(), ..Default::default() }).await.unwrap();
    let next_hops = (1..=8)
        .map(|id| pb::NextHop {
            id,
            kind: Some(pb::next_hop::Kind::Encap(pb::EncapNextHop {
                interface: "lo".into(),
                dst_mac: nh_mac(id).iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"),
                src_mac: String::new(),
                gateway: String::new(),
            })),
            ..Default::default()
        })
        .collect();
    client
        .routing
        .add_next_hops(pb::AddNextHopsRequest { next_hops, replace: false, ..Default::default() })
        .await
        .unwrap();
}
