//! Packet path by BPF_PROG_TEST_RUN, in ns/packet: the full L3 path (`dp_xdp_ingress` with 10,
//! 100,000, 1,000,000 routes per family) next to an XDP_PASS program and a bare MAC-swap +
//! devmap-redirect program, all measured in the same run, interleaved, so noise hits them alike.
//!
//! A repeated test run hands the program its own output again, so the forwarding path runs under
//! `dp_bench_harness` (restore the frame head, tail-call); the harness alone (tail-calling the
//! XDP_PASS program) is measured too and taken out: net L3 = harnessed L3 - harnessed pass + pass.

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use anyhow::{bail, ensure, Context, Result};
use dataplane_server::{
    dataplane::{TestProgram, TestRunOutcome},
    domain::{
        Direction, InterfaceName, Ipv4Lookup, NewNextHop, NextHopSpec, PolicyName, RouteSpec, RuleAction, RuleSpec,
    },
    net::{Mac, Prefix},
};

use integration::{
    packet::{udp, Eth, Ipv4, Ipv6, ETH_P_IPV4, ETH_P_IPV6, IPPROTO_UDP, L4_SENDER_V6},
    Rng,
};

use crate::sandbox::{Sandbox, EGRESS};

const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;
const NEXT_HOP: u32 = 1;
const NEXT_HOP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const SENDER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const TTL: u8 = 64;

pub struct Config {
    pub runs: usize,
    pub repeat: u32,
    pub route_counts: Vec<usize>,
    /// Policy sizes measured (rules, the last an ALLOW-all).
    pub rule_counts: Vec<usize>,
}

/// Samples (ns/packet) of one case.
#[derive(Clone, Debug)]
pub struct Figure {
    pub case: String,
    /// Table size of the case: routes per family, or rules.
    pub size: Option<usize>,
    pub samples: Vec<f64>,
}

impl Figure {
    pub fn median(&self) -> f64 {
        let mut s = self.samples.clone();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        }
    }
    pub fn min(&self) -> f64 {
        self.samples.iter().copied().fold(f64::INFINITY, f64::min)
    }
    pub fn max(&self) -> f64 {
        self.samples.iter().copied().fold(0.0, f64::max)
    }
}

/// Everything the packet-path cases measured.
pub struct Results {
    pub repeat: u32,
    pub runs: usize,
    pub pass: Figure,
    pub redirect: Figure,
    pub harness: Figure,
    /// Per route count: (IPv4 harnessed, IPv6 harnessed).
    pub l3: Vec<(Figure, Figure)>,
    /// The IPv4 L3 path (smallest route table) with no policy attached, measured alongside
    /// `policy`.
    pub no_policy: Figure,
    /// Per rule count: the same path with an ingress policy of that many rules.
    pub policy: Vec<Figure>,
    /// Per route count: (the route stage's IPv4 lookup alone, in VRF 0's flat table; a plain
    /// kernel LPM trie holding the same prefixes).
    pub lookup: Vec<(Figure, Figure)>,
    /// Per route count: the same prefixes in `ROUTES_V4` (`dp_bench_trie_v4`), where a VRF
    /// without a flat table is looked up.
    pub trie: Vec<Figure>,
}

impl Results {
    /// Net cost of an L3 figure: the harness taken out, the XDP_PASS floor kept.
    pub fn net(&self, f: &Figure) -> f64 {
        f.median() - self.harness.median() + self.pass.median()
    }
}

pub fn run(sandbox: &Sandbox, config: &Config) -> Result<Results> {
    let domain = &sandbox.domain;
    domain.add_nexthops(vec![NewNextHop {
        id: NEXT_HOP,
        spec: NextHopSpec::Encap {
            interface: InterfaceName::parse("interface", EGRESS)?,
            dst_mac: Mac(NEXT_HOP_MAC),
            src_mac: None,
        },
    }])?;
    let max = config.route_counts.iter().copied().max().unwrap_or(0);
    let (v4, v6) = random_prefixes(max, 0x005e_ed0f_b3c4);
    // The probed prefixes come first, so every table size holds them.
    let (dst4, dst6) = (host_in(&v4[0], 0x0a), host_in(&v6[0], 0x0a));
    let frame4 = udp_frame(dst4);
    let frame6 = udp_frame(dst6);

    let mut results = Results {
        repeat: config.repeat,
        runs: config.runs,
        pass: figure("XDP_PASS program (baseline)", None),
        redirect: figure("bare MAC swap + devmap redirect (baseline)", None),
        harness: figure("harness (restore + tail call) -> XDP_PASS", None),
        l3: Vec::new(),
        no_policy: figure("full L3 path, IPv4, no policy", Some(config.route_counts.first().copied().unwrap_or(0))),
        policy: Vec::new(),
        lookup: Vec::new(),
        trie: Vec::new(),
    };
    let mut installed = 0;
    let mut warmed = false;
    for &count in &config.route_counts {
        let batch: Vec<RouteSpec> = v4[installed..count]
            .iter()
            .chain(&v6[installed..count])
            .map(|p| RouteSpec { vrf: 0, prefix: *p, nexthop: NEXT_HOP })
            .collect();
        for chunk in batch.chunks(100_000) {
            domain.add_routes(chunk.to_vec())?;
        }
        let plain: Vec<(Ipv4Addr, u8)> = v4[installed..count]
            .iter()
            .map(|p| match p.addr() {
                IpAddr::V4(a) => (a, p.len()),
                IpAddr::V6(_) => unreachable!("v4 prefixes only"),
            })
            .collect();
        sandbox.domain.dataplane().bench_lpm_v4_insert(&plain)?;
        sandbox.domain.dataplane().bench_trie_v4_insert(&plain)?;
        installed = count;
        eprintln!("  {count} routes per family installed");

        check_forwarded(sandbox, &frame4)?;
        check_forwarded(sandbox, &frame6)?;
        if !warmed {
            warmed = true;
            // One unrecorded round first: the first test runs after loading are slower (cold
            // caches, the dispatcher's first swaps), which showed as an outlier first row.
            for (program, frame, verdict) in [
                (TestProgram::Pass, &frame4, XDP_PASS),
                (TestProgram::BareRedirect, &frame4, XDP_REDIRECT),
                (TestProgram::HarnessedPass, &frame4, XDP_PASS),
                (TestProgram::HarnessedIngress, &frame4, XDP_REDIRECT),
                (TestProgram::HarnessedIngress, &frame6, XDP_REDIRECT),
            ] {
                measure(sandbox, program, frame, config.repeat, verdict)?;
            }
        }
        let mut f4 = figure("full L3 path, IPv4 UDP 64 B", Some(count));
        let mut f6 = figure("full L3 path, IPv6 UDP 78 B", Some(count));
        for _ in 0..config.runs {
            results.pass.samples.push(measure(sandbox, TestProgram::Pass, &frame4, config.repeat, XDP_PASS)?);
            results.redirect.samples.push(measure(
                sandbox,
                TestProgram::BareRedirect,
                &frame4,
                config.repeat,
                XDP_REDIRECT,
            )?);
            results.harness.samples.push(measure(
                sandbox,
                TestProgram::HarnessedPass,
                &frame4,
                config.repeat,
                XDP_PASS,
            )?);
            f4.samples.push(measure(sandbox, TestProgram::HarnessedIngress, &frame4, config.repeat, XDP_REDIRECT)?);
            f6.samples.push(measure(sandbox, TestProgram::HarnessedIngress, &frame6, config.repeat, XDP_REDIRECT)?);
        }
        eprintln!(
            "  IPv4 {:.1} ns, IPv6 {:.1} ns (harnessed medians); net {:.1} / {:.1} ns = {:.2}x / {:.2}x the bare redirect's {:.1} ns",
            f4.median(),
            f6.median(),
            results.net(&f4),
            results.net(&f6),
            results.net(&f4) / results.redirect.median(),
            results.net(&f6) / results.redirect.median(),
            results.redirect.median()
        );
        results.l3.push((f4, f6));
        // What is measured must be the flat table, and must answer as a longest-prefix match.
        check_flat(sandbox, &v4[..count])?;
        let mut ours = figure("route stage lookup (VRF 0's flat table, 16-8-8)", Some(count));
        let mut plain = figure("plain kernel LPM trie (address key)", Some(count));
        let mut trie = figure("ROUTES_V4 trie (VRF + address key; VRFs without a flat table)", Some(count));
        for _ in 0..config.runs {
            ours.samples.push(measure(sandbox, TestProgram::RouteLookupV4, &frame4, config.repeat, XDP_PASS)?);
            plain.samples.push(measure(sandbox, TestProgram::PlainLpmV4, &frame4, config.repeat, XDP_PASS)?);
            trie.samples.push(measure(sandbox, TestProgram::TrieLookupV4, &frame4, config.repeat, XDP_PASS)?);
        }
        eprintln!(
            "  lookup: ours (flat) {:.1} ns, plain LPM trie {:.1} ns, ROUTES_V4 trie {:.1} ns",
            ours.median(),
            plain.median(),
            trie.median()
        );
        results.lookup.push((ours, plain));
        results.trie.push(trie);
        if results.policy.is_empty() {
            measure_policies(sandbox, config, &frame4, &mut results)?;
        }
    }
    Ok(results)
}

/// The IPv4 path with ingress policies of each size attached to the ingress interface, next to the
/// path without one. Rules are random and never match the probe (each names a source or
/// destination prefix in 100.64.0.0/10, or protocol/ports it does not use) except the last, an
/// ALLOW-all, so every case classifies through the whole table to its last rule. Prefixes and
/// port ranges come from pools of 256 and 64, as in real rule sets.
fn measure_policies(sandbox: &Sandbox, config: &Config, frame: &[u8], results: &mut Results) -> Result<()> {
    let domain = &sandbox.domain;
    let lo = InterfaceName::parse("interface", "lo")?;
    let name = PolicyName::parse("name", "bench")?;
    let mut rng = Rng(0x0070_11c1_e5ee_d001);
    let pools = Pools::new(&mut rng);
    let mut figures: Vec<Figure> = config
        .rule_counts
        .iter()
        .map(|&n| figure(&format!("full L3 path, IPv4, ingress policy of {n} rules"), Some(n)))
        .collect();
    let mut tables = Vec::new();
    for &n in &config.rule_counts {
        let mut rules: Vec<RuleSpec> =
            (0..n.saturating_sub(1)).map(|i| random_rule(&mut rng, &pools, i as u32)).collect();
        rules.push(RuleSpec::any(u32::MAX, RuleAction::Allow));
        tables.push(rules);
    }
    eprintln!("  policies of {:?} rules", config.rule_counts);
    for _ in 0..config.runs {
        domain.detach_policy(&lo, Direction::Ingress).ok();
        results.no_policy.samples.push(measure(
            sandbox,
            TestProgram::HarnessedIngress,
            frame,
            config.repeat,
            XDP_REDIRECT,
        )?);
        for (rules, f) in tables.iter().zip(&mut figures) {
            domain.put_policy(name.clone(), rules.clone())?;
            domain.attach_policy(&name, &lo, Direction::Ingress, true)?;
            f.samples.push(measure(sandbox, TestProgram::HarnessedIngress, frame, config.repeat, XDP_REDIRECT)?);
        }
    }
    domain.detach_policy(&lo, Direction::Ingress)?;
    domain.delete_policy(&name)?;
    results.policy = figures;
    Ok(())
}

/// What the random rules draw from: like real ACLs (and ClassBench), rules name a few hundred
/// address blocks and a few dozen port ranges, not a fresh prefix each.
struct Pools {
    prefixes: Vec<Prefix>,
    ports: Vec<(u16, u16)>,
}

impl Pools {
    fn new(rng: &mut Rng) -> Self {
        let prefixes = (0..256)
            .map(|_| {
                let len = 10 + rng.below(15) as u8;
                let a = 0x6440_0000 | (rng.next() as u32 & 0x003f_ffff);
                Prefix::containing(IpAddr::V4(Ipv4Addr::from(a)), len)
            })
            .collect();
        let ports = (0..64)
            .map(|_| {
                let a = 1024 + rng.below(60000) as u16;
                (a, a.saturating_add(rng.below(100) as u16))
            })
            .collect();
        Self { prefixes, ports }
    }
}

fn random_rule(rng: &mut Rng, pools: &Pools, priority: u32) -> RuleSpec {
    let cgnat = |rng: &mut Rng| Some(pools.prefixes[rng.below(pools.prefixes.len() as u64) as usize]);
    let (src, dst) = match rng.below(3) {
        0 => (cgnat(rng), None),
        1 => (None, cgnat(rng)),
        _ => (cgnat(rng), cgnat(rng)),
    };
    let protocol = if rng.below(2) == 0 { 6 } else { 17 };
    let dst_ports = (rng.below(2) == 0).then(|| pools.ports[rng.below(pools.ports.len() as u64) as usize]);
    let action = if rng.below(2) == 0 { RuleAction::Deny } else { RuleAction::Allow };
    RuleSpec { src, dst, protocol: Some(protocol), dst_ports, ..RuleSpec::any(priority, action) }
}

fn figure(case: &str, size: Option<usize>) -> Figure {
    Figure { case: case.to_owned(), size, samples: Vec::new() }
}

/// One figure: mean ns per repetition over `repeat` repetitions, refusing a run whose verdict
/// says it did not take the path being measured.
fn measure(sandbox: &Sandbox, program: TestProgram, frame: &[u8], repeat: u32, verdict: u32) -> Result<f64> {
    let out = sandbox.domain.dataplane().test_run(program, frame, repeat)?;
    ensure!(out.verdict == verdict, "{program:?}: verdict {} instead of {verdict}", out.verdict);
    Ok(ns(out.per_run))
}

fn ns(d: Duration) -> f64 {
    d.as_nanos() as f64
}

/// One unharnessed run of the real program: the frame must leave rewritten for the next hop
/// (its MAC, TTL one lower), or the figures would measure some other path.
fn check_forwarded(sandbox: &Sandbox, frame: &[u8]) -> Result<()> {
    let TestRunOutcome { verdict, frame: out, .. } =
        sandbox.domain.dataplane().test_run(TestProgram::Ingress, frame, 1)?;
    let ttl_at = if frame[12..14] == [0x08, 0x00] { 14 + 8 } else { 14 + 7 };
    if verdict != XDP_REDIRECT || out[..6] != NEXT_HOP_MAC || out[ttl_at] != TTL - 1 {
        bail!("the benchmark frame is not forwarded: verdict {verdict}, frame {out:02x?}");
    }
    Ok(())
}

/// VRF 0 is looked up in its flat table, and the kernel's answer (`LookupRoute`, read from the
/// table the route stage reads) is the longest-prefix match of `prefixes` on the probe and on
/// addresses in and around each of the first thousand prefixes.
fn check_flat(sandbox: &Sandbox, prefixes: &[Prefix]) -> Result<()> {
    let vrf0 = sandbox.domain.list_vrfs().into_iter().find(|v| v.id == 0).context("no VRF 0")?;
    anyhow::ensure!(
        matches!(vrf0.ipv4_lookup, Some(Ipv4Lookup::Flat { .. })),
        "VRF 0 has no flat IPv4 table ({:?}): the pool is too small",
        vrf0.ipv4_lookup
    );
    let index: std::collections::HashSet<Prefix> = prefixes.iter().copied().collect();
    let lpm =
        |a: Ipv4Addr| (0..=32u8).rev().map(|len| Prefix::containing(IpAddr::V4(a), len)).find(|p| index.contains(p));
    for p in prefixes.iter().take(1000) {
        let IpAddr::V4(base) = p.addr() else { continue };
        let b = u32::from(base);
        let span = if p.len() == 0 { u32::MAX } else { (1u32 << (32 - u32::from(p.len()))) - 1 };
        for a in
            [b, b.wrapping_add(span / 2), b.wrapping_add(span), b.wrapping_add(span).wrapping_add(1), b.wrapping_sub(1)]
        {
            let a = Ipv4Addr::from(a);
            let got = sandbox.domain.lookup_route(0, IpAddr::V4(a))?.map(|r| r.prefix);
            anyhow::ensure!(got == lpm(a), "the flat table answers {got:?} for {a}, the prefixes {:?}", lpm(a));
        }
    }
    Ok(())
}

/// `n` distinct IPv4 and `n` distinct IPv6 prefixes, shaped like an Internet table: IPv4 mostly
/// /24 with /16-/23 and some shorter, in 1.0.0.0-223.255.255.255; IPv6 mostly /48 with /32-/64,
/// in 2000::/3. The first of each is a /24 and a /48.
fn random_prefixes(n: usize, seed: u64) -> (Vec<Prefix>, Vec<Prefix>) {
    let mut rng = Rng(seed);
    let mut seen = HashSet::new();
    let mut v4 = Vec::with_capacity(n);
    while v4.len() < n {
        let len = if v4.is_empty() {
            24
        } else {
            match rng.below(100) {
                0..=54 => 24,
                55..=79 => 20 + rng.below(4) as u8,
                80..=94 => 16 + rng.below(4) as u8,
                _ => 8 + rng.below(8) as u8,
            }
        };
        let a = 0x0100_0000 + (rng.next() % (0xe000_0000 - 0x0100_0000)) as u32;
        let p = Prefix::containing(IpAddr::V4(Ipv4Addr::from(a)), len);
        if seen.insert(p) {
            v4.push(p);
        }
    }
    let mut v6 = Vec::with_capacity(n);
    while v6.len() < n {
        let len = if v6.is_empty() {
            48
        } else {
            match rng.below(100) {
                0..=44 => 48,
                45..=74 => 32 + rng.below(16) as u8,
                _ => 49 + rng.below(16) as u8,
            }
        };
        let a = (0x2000u128 << 112) | ((u128::from(rng.next()) << 64 | u128::from(rng.next())) >> 3);
        let p = Prefix::containing(IpAddr::V6(Ipv6Addr::from(a)), len);
        if seen.insert(p) {
            v6.push(p);
        }
    }
    (v4, v6)
}

/// An address inside `p` with `host` in its last byte.
fn host_in(p: &Prefix, host: u8) -> IpAddr {
    match p.addr() {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) | u32::from(host))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) | u128::from(host))),
    }
}

/// A UDP datagram from the sender to `dst`, in a frame addressed to the ingress interface
/// (loopback: all-zero MAC): 64 bytes for IPv4, 78 for IPv6 (the smallest with 16 B of payload).
fn udp_frame(dst: IpAddr) -> Vec<u8> {
    let payload = [0x5au8; 22];
    match dst {
        IpAddr::V4(d) => {
            let ip = Ipv4::new(Ipv4Addr::new(192, 0, 2, 10), d, IPPROTO_UDP).id(1).dont_fragment().ttl(TTL);
            Eth::new([0; 6], SENDER_MAC, ETH_P_IPV4).frame(&ip.build(&udp(12345, 53, &payload)))
        }
        IpAddr::V6(d) => {
            let ip = Ipv6::new(L4_SENDER_V6, d, IPPROTO_UDP).hop_limit(TTL);
            Eth::new([0; 6], SENDER_MAC, ETH_P_IPV6).frame(&ip.build(&udp(12345, 53, &payload[..16])))
        }
    }
}
