//! Fixture tests of forwarding in the real XDP ingress program (`dp_xdp_ingress` in the embedded
//! `EBPF_OBJECT`), run in the kernel through BPF_PROG_TEST_RUN with real maps written the way the
//! server writes them (`INTERFACES`, `NEXTHOPS`, `ROUTES_V4`/`ROUTES_V6`, `TX_PORTS`).
//!
//! Every fixture is a hand-built frame plus what the program must do with it: the verdict, the
//! frame it hands back (BPF_PROG_TEST_RUN returns the packet as the program left it), the one
//! [`Reason`] counted in `IFACE_STATS` of the ingress slot, and the `NEXTHOP_STATS` deltas of every
//! next-hop slot the test configured.
//!
//! Covered:
//! - IPv4 and IPv6 route hits: next hop's MACs, TTL / hop limit decremented, IPv4 header checksum
//!   valid (recomputed from scratch, over every TTL and crafted edge-case headers), payload and
//!   Ethernet padding unchanged, XDP_REDIRECT through `TX_PORTS`, next-hop counters;
//! - longest prefix match over shorter prefixes, both families;
//! - VRF isolation: the ingress interface's VRF selects the routes, adjacent VRF ids do not leak;
//! - ECMP: distinct flows spread over every member, one flow always takes one member, every
//!   fragment of a datagram takes one member (IPv4 and IPv6, also when the IPv6 fragment header
//!   announces a header later fragments do not carry), malformed groups are refused;
//! - TTL / hop limit 1 and 0: ICMP / ICMPv6 time exceeded built in XDP and redirected back out of
//!   the ingress interface through its own `TX_PORTS` entry (addresses, checksums, quote), and the
//!   cases that must not produce one (no interface address, ICMP errors, echo replies, non-first
//!   fragments, IPv4 options, short datagrams, sources that are not a single unicast host);
//! - DISCARD, RECEIVE, empty and out-of-range next-hop slots;
//! - what is never routed even under a default route: the interface's own addresses, multicast,
//!   broadcast, link-local, non-IP, VLAN-tagged, frames for another MAC (unicast or broadcast);
//!   and a plain route miss;
//! - next-hop MTU (at and one above the limit);
//! - a next hop whose `TX_PORTS` entry is absent or cleared the way the server clears it.
//!
//! BPF_PROG_TEST_RUN without `ctx_in` runs an XDP program as if the frame had been received on the
//! loopback device of the caller's network namespace, so the ingress interface is the loopback
//! ifindex, and loopback is also the redirect target in `TX_PORTS` (a devmap only accepts existing
//! devices). Without `BPF_F_TEST_XDP_LIVE_FRAMES` the kernel does not transmit anything: a
//! successful `bpf_redirect_map` just makes the run return XDP_REDIRECT with the rewritten frame,
//! and a failed one returns its fallback (XDP_ABORTED with flags 0), which the program turns into
//! XDP_DROP. Each test loads its own `Ebpf`: maps are created fresh per load and nothing is pinned
//! or attached, so the tests run in parallel without seeing each other's maps or counters.
//!
//! All addresses are documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
//! 2001:db8::/32), except where the test is about a special range (multicast, broadcast,
//! link-local), which by definition lies outside them.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, Ipv6Addr},
    ops::{Deref, DerefMut},
};

use dataplane_common::{
    route::{nexthop_kind, ECMP_MAX, IFACE_HAS_IPV4, IFACE_HAS_IPV6},
    InterfaceConfig, InterfaceStats, NextHop, Reason, MAX_NEXTHOPS,
};
use integration::{
    checksum::{self, Checksum},
    counters::{counted_once, describe_stats},
    harness::{self, verdict_name, Observed, XDP_DROP, XDP_PASS, XDP_REDIRECT},
    packet::{
        arp_request, concat, diff, icmp, icmp_checksummed, icmpv6_checksummed, ipv6_ah, ipv6_fragment, ipv6_options,
        payload, tcp, udp, Eth, Ipv4, Ipv6, ETH_HLEN, ETH_P_8021Q, ETH_P_ARP, ETH_P_IPV4, ETH_P_IPV6, IPPROTO_AH,
        IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, IPPROTO_GRE, IPPROTO_HOPOPTS, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP,
        IPPROTO_UDP, IPV4_HLEN, IPV6_HLEN, TCP_SYN, UDP_HLEN,
    },
};

/// Slot of the ingress interface (loopback): any non-zero one catches a program that counts in
/// slot 0 regardless.
const IFACE_SLOT: u32 = 5;
/// Slot of the egress interface the ENCAP next hops send through; its `TX_PORTS` entry is the
/// loopback device (the only device every namespace has).
const TX_SLOT: u32 = 3;
/// A slot whose `TX_PORTS` entry is never written.
const TX_SLOT_ABSENT: u32 = 9;

/// The sender on the ingress segment.
const HOST_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x01, 0x01];
/// The ingress interface: destination of received frames, source of the ICMP errors it sends.
const ROUTER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
/// The egress interface: source MAC of every ENCAP next hop.
const EGRESS_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];

const HOST_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const IFACE_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// Inside 198.51.100.0/24 and 198.51.100.0/25.
const DST_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
/// Inside 198.51.100.0/24 only.
const DST_V4_HIGH: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 200);
const OTHER_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);

const HOST_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10);
const IFACE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
/// Inside 2001:db8:2::/48 and 2001:db8:2::/64.
const DST_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x20);
/// Inside 2001:db8:2::/48 only.
const DST_V6_WIDE: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 1, 0, 0, 0, 0x20);
const OTHER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 7);

// ---------------------------------------------------------------------------------------------
// Frames from the sender to the router, built with the kit's builder. L4 checksums are left zero
// (nothing on the forwarding path reads them); IPv4 header checksums are always correct on
// input, so a wrong one on output is the program's.
// ---------------------------------------------------------------------------------------------

/// An IPv4 header from the sender to `dst`.
fn ipv4(dst: Ipv4Addr, proto: u8) -> Ipv4 {
    Ipv4::new(HOST_V4, dst, proto)
}

/// An IPv6 header from the sender to `dst`; traffic class and flow label non-zero, since the
/// rewrite must leave them alone.
fn ipv6(dst: Ipv6Addr, next: u8) -> Ipv6 {
    Ipv6::new(HOST_V6, dst, next).flow(0xb8, 0x5_4321)
}

/// The whole frame of an IP header, from the sender to the router.
trait ToRouter {
    fn frame(&self, payload: &[u8]) -> Vec<u8>;
}

impl ToRouter for Ipv4 {
    fn frame(&self, payload: &[u8]) -> Vec<u8> {
        Eth::new(ROUTER_MAC, HOST_MAC, ETH_P_IPV4).frame(&self.build(payload))
    }
}

impl ToRouter for Ipv6 {
    fn frame(&self, payload: &[u8]) -> Vec<u8> {
        Eth::new(ROUTER_MAC, HOST_MAC, ETH_P_IPV6).frame(&self.build(payload))
    }
}

/// A TCP SYN, no options, no payload.
fn tcp_syn(sport: u16, dport: u16) -> Vec<u8> {
    tcp(sport, dport, TCP_SYN, &[])
}

fn v4_udp(dst: Ipv4Addr, ttl: u8, sport: u16) -> Vec<u8> {
    ipv4(dst, IPPROTO_UDP).ttl(ttl).frame(&udp(sport, 4789, &payload(32)))
}

fn v6_udp(dst: Ipv6Addr, hop_limit: u8, sport: u16) -> Vec<u8> {
    ipv6(dst, IPPROTO_UDP).hop_limit(hop_limit).frame(&udp(sport, 4789, &payload(32)))
}

/// ARP request "who has 192.0.2.1, tell 192.0.2.10".
fn arp_frame() -> Vec<u8> {
    Eth::new([0xff; 6], HOST_MAC, ETH_P_ARP).frame(&arp_request(HOST_MAC, HOST_V4, IFACE_V4))
}

// ---------------------------------------------------------------------------------------------
// What the program must produce, computed independently of it.
// ---------------------------------------------------------------------------------------------

/// The frame as a router forwards it through `nh`: next hop's MACs, TTL / hop limit minus one and,
/// for IPv4, the header checksum recomputed from scratch over the new header. Untagged frames.
fn forwarded_frame(frame: &[u8], nh: &NextHop) -> Vec<u8> {
    let mut out = frame.to_vec();
    out[0..6].copy_from_slice(&nh.dst_mac);
    out[6..12].copy_from_slice(&nh.src_mac);
    match u16::from_be_bytes([frame[12], frame[13]]) {
        ETH_P_IPV4 => {
            let hlen = usize::from(out[ETH_HLEN] & 0x0f) * 4;
            out[ETH_HLEN + 8] -= 1;
            out[ETH_HLEN + 10..ETH_HLEN + 12].copy_from_slice(&[0, 0]);
            let csum = checksum::internet(&out[ETH_HLEN..ETH_HLEN + hlen]);
            out[ETH_HLEN + 10..ETH_HLEN + 12].copy_from_slice(&csum.to_be_bytes());
        }
        ETH_P_IPV6 => out[ETH_HLEN + 7] -= 1,
        other => panic!("forwarded_frame: ethertype {other:#06x}"),
    }
    out
}

/// ICMP time exceeded (type 11, code 0, RFC 792) from the interface's address to the sender of
/// `frame` (untagged IPv4 without options), quoting its IP header and the first 8 bytes after it,
/// Ethernet addresses swapped. IP TTL 64, TOS 0xc0 (RFC 1812 4.3.2.5: internetwork control) and
/// identification 0 are the values the program chose for the header it builds.
fn time_exceeded_v4(frame: &[u8], iface: &InterfaceConfig) -> Vec<u8> {
    let quote = &frame[ETH_HLEN..ETH_HLEN + IPV4_HLEN + 8];
    let sender = Ipv4Addr::from(<[u8; 4]>::try_from(&frame[ETH_HLEN + 12..ETH_HLEN + 16]).unwrap());
    let icmp = icmp_checksummed(icmp(11, 0, 0, quote));
    let ip = Ipv4::new(iface.ipv4.into(), sender, IPPROTO_ICMP).tos(0xc0).id(0).build(&icmp);
    let sender_mac: [u8; 6] = frame[6..12].try_into().unwrap();
    Eth::new(sender_mac, iface.mac, ETH_P_IPV4).frame(&ip)
}

/// ICMPv6 time exceeded (type 3, code 0, RFC 4443 3.3) from the interface's address to the sender
/// of `frame` (untagged IPv6), quoting its fixed header and the 8 bytes after it, Ethernet
/// addresses swapped. Hop limit 64 and traffic class / flow label 0 are the program's choice.
fn time_exceeded_v6(frame: &[u8], iface: &InterfaceConfig) -> Vec<u8> {
    let quote = &frame[ETH_HLEN..ETH_HLEN + IPV6_HLEN + 8];
    let sender = &frame[ETH_HLEN + 8..ETH_HLEN + 24];
    let icmp = icmpv6_checksummed(&iface.ipv6, sender, icmp(3, 0, 0, quote));
    let ip = Ipv6::new(iface.ipv6.into(), <[u8; 16]>::try_from(sender).unwrap().into(), IPPROTO_ICMPV6).build(&icmp);
    let sender_mac: [u8; 6] = frame[6..12].try_into().unwrap();
    Eth::new(sender_mac, iface.mac, ETH_P_IPV6).frame(&ip)
}

// ---------------------------------------------------------------------------------------------
// Fixtures.
// ---------------------------------------------------------------------------------------------

/// What the frame handed back must be.
enum Output {
    /// The input, byte for byte: the kernel gets the frame as it arrived.
    Unchanged,
    Exactly(Vec<u8>),
    /// Not checked; the string says why it does not matter.
    Unspecified(&'static str),
}

struct Fixture {
    description: String,
    frame: Vec<u8>,
    verdict: u32,
    output: Output,
    reason: Reason,
    /// `NEXTHOP_STATS` deltas `(slot, packets, bytes)`; every other configured slot must not move.
    nexthops: Vec<(u32, u64, u64)>,
    checks: Vec<Checksum>,
}

/// Forwarded through ENCAP next hop `slot` (`nh`): redirected, rewritten, counted there.
fn forwarded(description: impl Into<String>, frame: Vec<u8>, slot: u32, nh: &NextHop) -> Fixture {
    let is_v4 = frame[12..14] == ETH_P_IPV4.to_be_bytes();
    Fixture {
        description: description.into(),
        output: Output::Exactly(forwarded_frame(&frame, nh)),
        verdict: XDP_REDIRECT,
        reason: Reason::Forwarded,
        nexthops: vec![(slot, 1, frame.len() as u64)],
        checks: if is_v4 { vec![Checksum::Ipv4Header] } else { vec![] },
        frame,
    }
}

/// Handed to the kernel untouched, counting `reason`, no next hop counted.
fn passed(description: impl Into<String>, frame: Vec<u8>, reason: Reason) -> Fixture {
    Fixture {
        description: description.into(),
        frame,
        verdict: XDP_PASS,
        output: Output::Unchanged,
        reason,
        nexthops: vec![],
        checks: vec![],
    }
}

/// Answered with an ICMP / ICMPv6 time exceeded sent back out of the ingress interface: redirected
/// through the interface's own `TX_PORTS` entry, like forwarded frames through the next hop's
/// (an XDP_TX out of a veth whose traffic arrived as skbs was seen to vanish). No next hop counts
/// it.
fn time_exceeded(description: impl Into<String>, frame: Vec<u8>, iface: &InterfaceConfig) -> Fixture {
    let (expected, checks) = if frame[12..14] == ETH_P_IPV4.to_be_bytes() {
        (time_exceeded_v4(&frame, iface), vec![Checksum::Ipv4Header, Checksum::Icmpv4])
    } else {
        (time_exceeded_v6(&frame, iface), vec![Checksum::Icmpv6])
    };
    Fixture {
        description: description.into(),
        frame,
        verdict: XDP_REDIRECT,
        output: Output::Exactly(expected),
        reason: Reason::IcmpTimeExceeded,
        nexthops: vec![],
        checks,
    }
}

// ---------------------------------------------------------------------------------------------
// Harness: the kit's, one loaded program and its fresh maps per test, with the interface and
// next hops these fixtures use.
// ---------------------------------------------------------------------------------------------

/// The ingress interface as the server registers it: an address of each family and its MAC, so
/// the program can answer with ICMP errors.
fn iface(vrf: u32) -> InterfaceConfig {
    InterfaceConfig {
        slot: IFACE_SLOT,
        vrf,
        mtu: 1500,
        flags: IFACE_HAS_IPV4 | IFACE_HAS_IPV6,
        mac: ROUTER_MAC,
        _pad: [0; 2],
        ipv4: IFACE_V4.octets(),
        ipv6: IFACE_V6.octets(),
        table: 0,
    }
}

fn ecmp(members: &[u32]) -> NextHop {
    let mut nh = NextHop { kind: nexthop_kind::ECMP, ..NextHop::EMPTY };
    nh.member_count = members.len() as u32;
    nh.members[..members.len()].copy_from_slice(members);
    nh
}

fn discard() -> NextHop {
    NextHop { kind: nexthop_kind::DISCARD, ..NextHop::EMPTY }
}

fn receive() -> NextHop {
    NextHop { kind: nexthop_kind::RECEIVE, ..NextHop::EMPTY }
}

/// A distinct, recognisable next-hop MAC per slot.
fn nh_mac(slot: u32) -> [u8; 6] {
    let s = slot.to_be_bytes();
    [0x02, 0x00, 0x5e, s[1], s[2], s[3]]
}

/// The kit's harness with the ingress interface registered.
struct Harness(integration::Harness);

impl Deref for Harness {
    type Target = integration::Harness;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Harness {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Harness {
    /// Loads the object and the XDP program and registers the ingress interface (VRF 0, both
    /// addresses); no next hop, route or TX port beyond the interface's own.
    fn load() -> Self {
        let mut h = Self(integration::Harness::load());
        h.interface(iface(0));
        // The egress interface of the ENCAP next hops, attached as the server attaches one.
        let lo = h.lo;
        h.tx_port(TX_SLOT, lo);
        h
    }

    /// (Re-)registers the loopback ifindex as the server's attach does.
    fn interface(&mut self, cfg: InterfaceConfig) {
        self.attach_lo(cfg);
    }

    /// An ENCAP next hop towards `nh_mac(slot)` out of the egress interface, MTU 1500.
    fn encap(&self, slot: u32) -> NextHop {
        self.encap_via(slot, TX_SLOT, 1500)
    }

    fn encap_via(&self, slot: u32, tx_slot: u32, mtu: u32) -> NextHop {
        NextHop {
            kind: nexthop_kind::ENCAP,
            tx_slot,
            ifindex: self.lo,
            mtu,
            dst_mac: nh_mac(slot),
            src_mac: EGRESS_MAC,
            ..NextHop::EMPTY
        }
    }

    /// Writes an ENCAP next hop at `slot` (see [`Self::encap`]) and returns it.
    fn encap_at(&mut self, slot: u32) -> NextHop {
        let nh = self.encap(slot);
        self.nexthop(slot, &nh);
        nh
    }

    /// Default routes of both families in `vrf`, so anything not stopped before the route lookup
    /// would be forwarded.
    fn default_routes(&mut self, vrf: u32, slot: u32) {
        self.route(vrf, Ipv4Addr::UNSPECIFIED.into(), 0, slot);
        self.route(vrf, Ipv6Addr::UNSPECIFIED.into(), 0, slot);
    }

    /// Runs `fx` and lists every way the run differs from it.
    fn check(&self, fx: &Fixture) -> Result<Observed, String> {
        let obs = self.observe(IFACE_SLOT, &fx.frame);
        let mut problems = Vec::new();
        match &obs.result {
            Err(e) => problems.push(format!("test run failed: {e}")),
            Ok((verdict, out)) => {
                if *verdict != fx.verdict {
                    problems.push(format!(
                        "verdict {} ({verdict}), expected {} ({})",
                        verdict_name(*verdict),
                        verdict_name(fx.verdict),
                        fx.verdict
                    ));
                }
                let expected = match &fx.output {
                    Output::Unchanged => Some(fx.frame.as_slice()),
                    Output::Exactly(e) => Some(e.as_slice()),
                    Output::Unspecified(_) => None,
                };
                if let Some(expected) = expected {
                    if out.as_slice() != expected {
                        problems.push(format!("output frame {}", diff(expected, out)));
                    }
                }
                for check in &fx.checks {
                    problems.extend(check.verify(out).err());
                }
            }
        }
        let want = counted_once(fx.frame.len(), fx.reason);
        if obs.iface != want {
            problems.push(format!(
                "IFACE_STATS[{IFACE_SLOT}] delta {}, expected {}",
                describe_stats(&obs.iface),
                describe_stats(&want)
            ));
        }
        if obs.unknown != InterfaceStats::ZERO {
            problems.push(format!("UNKNOWN_IFACE_STATS delta {}", describe_stats(&obs.unknown)));
        }
        for (slot, d) in &obs.nexthops {
            let (packets, bytes) = fx.nexthops.iter().find(|(s, _, _)| s == slot).map_or((0, 0), |&(_, p, b)| (p, b));
            if d.packets != packets || d.bytes != bytes {
                problems.push(format!(
                    "NEXTHOP_STATS[{slot}] delta +{} packets +{} bytes, expected +{packets} +{bytes}",
                    d.packets, d.bytes
                ));
            }
        }
        for (slot, _, _) in &fx.nexthops {
            assert!(self.nexthop_slots().contains(slot), "fixture expects unconfigured slot {slot}");
        }
        if let Output::Unspecified(why) = &fx.output {
            if !problems.is_empty() {
                problems.push(format!("(output frame not checked: {why})"));
            }
        }
        if problems.is_empty() {
            Ok(obs)
        } else {
            Err(format!("{} ({} bytes):\n      {}", fx.description, fx.frame.len(), problems.join("\n      ")))
        }
    }
}

/// Runs every fixture (not stopping at the first failure) and fails listing every mismatch.
fn check_all(h: &Harness, group: &str, fixtures: &[Fixture]) {
    harness::check_all(group, fixtures, |fx| h.check(fx));
}

// ---------------------------------------------------------------------------------------------
// Route hits.
// ---------------------------------------------------------------------------------------------

#[test]
fn ipv4_route_hit_redirects_rewritten_frame() {
    let mut h = Harness::load();
    let nh = h.encap_at(1);
    h.route(0, Ipv4Addr::new(198, 51, 100, 0).into(), 24, 1);
    let fixtures = [
        forwarded("IPv4 UDP TTL 64", v4_udp(DST_V4, 64, 40000), 1, &nh),
        // The lowest TTL that is still forwarded: it leaves with TTL 1.
        forwarded("IPv4 UDP TTL 2", v4_udp(DST_V4, 2, 40000), 1, &nh),
        forwarded("IPv4 UDP TTL 255", v4_udp(DST_V4, 255, 40000), 1, &nh),
        forwarded(
            "IPv4 TCP SYN with DF",
            ipv4(DST_V4_HIGH, IPPROTO_TCP).dont_fragment().frame(&tcp_syn(40000, 443)),
            1,
            &nh,
        ),
        forwarded(
            "IPv4 ICMP echo request",
            ipv4(DST_V4, IPPROTO_ICMP).frame(&icmp(8, 0, 0x0001_0001, &payload(56))),
            1,
            &nh,
        ),
        forwarded(
            // The checksum covers the options too; the TTL sits at the same offset.
            "IPv4 with options (IHL 6, Router Alert) UDP",
            ipv4(DST_V4, IPPROTO_UDP).options(&[148, 4, 0, 0]).frame(&udp(1, 2, &payload(9))),
            1,
            &nh,
        ),
        forwarded(
            // The 18 bytes of Ethernet padding after the 28-byte datagram go out as they came.
            "IPv4 UDP padded to the 60-byte Ethernet minimum",
            {
                let mut f = ipv4(DST_V4, IPPROTO_UDP).frame(&udp(7, 7, &[]));
                f.resize(60, 0xee);
                f
            },
            1,
            &nh,
        ),
        forwarded("IPv4 non-first fragment", ipv4(DST_V4, IPPROTO_UDP).fragment(100, true).frame(&payload(64)), 1, &nh),
        forwarded(
            "IPv4 1000-byte UDP datagram",
            ipv4(DST_V4, IPPROTO_UDP).frame(&udp(53, 53000, &payload(972))),
            1,
            &nh,
        ),
    ];
    check_all(&h, "IPv4 route hit", &fixtures);
}

#[test]
fn ipv6_route_hit_redirects_rewritten_frame() {
    let mut h = Harness::load();
    let nh = h.encap_at(1);
    h.route(0, Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0).into(), 48, 1);
    let fixtures = [
        forwarded("IPv6 UDP hop limit 64", v6_udp(DST_V6, 64, 40000), 1, &nh),
        forwarded("IPv6 UDP hop limit 2", v6_udp(DST_V6, 2, 40000), 1, &nh),
        forwarded("IPv6 UDP hop limit 255", v6_udp(DST_V6_WIDE, 255, 40000), 1, &nh),
        forwarded("IPv6 TCP SYN", ipv6(DST_V6, IPPROTO_TCP).frame(&tcp_syn(40000, 443)), 1, &nh),
        forwarded(
            "IPv6 ICMPv6 echo request",
            ipv6(DST_V6, IPPROTO_ICMPV6).frame(&icmp(128, 0, 0x0001_0001, &payload(56))),
            1,
            &nh,
        ),
        forwarded(
            "IPv6 hop-by-hop then UDP",
            ipv6(DST_V6, IPPROTO_HOPOPTS).frame(&concat(&[&ipv6_options(IPPROTO_UDP, 0), &udp(1, 2, &payload(20))])),
            1,
            &nh,
        ),
        forwarded(
            "IPv6 non-first fragment",
            ipv6(DST_V6, IPPROTO_FRAGMENT).frame(&concat(&[&ipv6_fragment(IPPROTO_UDP, 10, true, 7), &payload(64)])),
            1,
            &nh,
        ),
        forwarded(
            "IPv6 1000-byte UDP datagram",
            ipv6(DST_V6, IPPROTO_UDP).frame(&udp(53, 53000, &payload(952))),
            1,
            &nh,
        ),
    ];
    check_all(&h, "IPv6 route hit", &fixtures);
}

/// The incremental checksum update (RFC 1624) must agree with a checksum computed from scratch
/// for every TTL and for headers whose checksum sits at the edges of one's-complement
/// arithmetic, where an RFC 1141-style update goes wrong (0x0000 vs 0xffff, carries).
#[test]
fn ipv4_forward_header_checksum_matches_recomputed_checksum_for_every_ttl() {
    let mut h = Harness::load();
    let nh = h.encap_at(1);
    h.route(0, Ipv4Addr::new(198, 51, 100, 0).into(), 24, 1);
    let base = ipv4(DST_V4, IPPROTO_UDP);
    let body = udp(1000, 2000, &payload(8));
    // The identification value that makes the checksum of `hdr` with `ttl` exactly 0x0000 (the
    // sum of the other words is then 0xffff).
    let id_for_zero_checksum = |hdr: &Ipv4, ttl: u8| -> u16 {
        let mut probe = hdr.clone().ttl(ttl).id(0).build(&body)[..IPV4_HLEN].to_vec();
        probe[10..12].copy_from_slice(&[0, 0]);
        0xffff - checksum::ones_sum(&probe, 0)
    };
    let mut fixtures = Vec::new();
    for ttl in 2..=255u8 {
        for (what, hdr) in [
            ("id 0x0000", base.clone().id(0)),
            ("id 0xffff", base.clone().id(0xffff)),
            ("id 0x00ff tos 0xff", base.clone().id(0x00ff).tos(0xff)),
            ("checksum 0x0000 before", base.clone().id(id_for_zero_checksum(&base, ttl))),
            ("checksum 0x0000 after", base.clone().id(id_for_zero_checksum(&base, ttl - 1))),
        ] {
            let frame = hdr.ttl(ttl).frame(&body);
            fixtures.push(forwarded(format!("TTL {ttl}, {what}"), frame, 1, &nh));
        }
    }
    // The crafted headers really are edge cases: the input and the output checksum each hit 0.
    let zero_in = &fixtures[3].frame;
    assert_eq!(zero_in[ETH_HLEN + 10..ETH_HLEN + 12], [0, 0]);
    let Output::Exactly(zero_out) = &fixtures[4].output else { unreachable!() };
    assert_eq!(zero_out[ETH_HLEN + 10..ETH_HLEN + 12], [0, 0]);
    check_all(&h, "IPv4 checksum sweep", &fixtures);
}

// ---------------------------------------------------------------------------------------------
// Longest prefix match and VRFs.
// ---------------------------------------------------------------------------------------------

#[test]
fn ipv4_longer_prefix_wins_over_shorter_prefix() {
    let mut h = Harness::load();
    let (nh1, nh2, nh3) = (h.encap_at(1), h.encap_at(2), h.encap_at(3));
    // Inserted longest first, so a lookup that returned the first or last inserted match would
    // not pass by accident.
    h.route(0, Ipv4Addr::new(198, 51, 100, 21).into(), 32, 3);
    h.route(0, Ipv4Addr::new(198, 51, 100, 0).into(), 25, 2);
    h.route(0, Ipv4Addr::new(198, 51, 100, 0).into(), 24, 1);
    h.route(0, Ipv4Addr::new(198, 51, 0, 0).into(), 16, 4);
    h.nexthop(4, &discard());
    let fixtures = [
        forwarded("198.51.100.20: /25 over /24 and /16", v4_udp(DST_V4, 64, 1), 2, &nh2),
        forwarded("198.51.100.127: last address of the /25", v4_udp(Ipv4Addr::new(198, 51, 100, 127), 64, 1), 2, &nh2),
        forwarded("198.51.100.128: /24 only", v4_udp(Ipv4Addr::new(198, 51, 100, 128), 64, 1), 1, &nh1),
        forwarded("198.51.100.200: /24 only", v4_udp(DST_V4_HIGH, 64, 1), 1, &nh1),
        forwarded("198.51.100.21: /32 host route", v4_udp(Ipv4Addr::new(198, 51, 100, 21), 64, 1), 3, &nh3),
        Fixture {
            verdict: XDP_DROP,
            ..passed(
                "198.51.101.1: /16 (DISCARD) only",
                v4_udp(Ipv4Addr::new(198, 51, 101, 1), 64, 1),
                Reason::DropDiscard,
            )
        },
    ];
    check_all(&h, "IPv4 longest prefix", &fixtures);
}

#[test]
fn ipv6_longer_prefix_wins_over_shorter_prefix() {
    let mut h = Harness::load();
    let (nh1, nh2, nh3) = (h.encap_at(1), h.encap_at(2), h.encap_at(3));
    h.route(0, DST_V6.into(), 128, 3);
    h.route(0, Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0).into(), 64, 2);
    h.route(0, Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0).into(), 48, 1);
    let fixtures = [
        forwarded("2001:db8:2::20: /128 host route", v6_udp(DST_V6, 64, 1), 3, &nh3),
        forwarded(
            "2001:db8:2::21: /64 over /48",
            v6_udp(Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x21), 64, 1),
            2,
            &nh2,
        ),
        forwarded(
            "2001:db8:2:0:ffff:ffff:ffff:ffff: last address of the /64",
            v6_udp(Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0xffff, 0xffff, 0xffff, 0xffff), 64, 1),
            2,
            &nh2,
        ),
        forwarded("2001:db8:2:1::20: /48 only", v6_udp(DST_V6_WIDE, 64, 1), 1, &nh1),
        passed("2001:db8:3::7: outside every prefix", v6_udp(OTHER_V6, 64, 1), Reason::NoRoute),
    ];
    check_all(&h, "IPv6 longest prefix", &fixtures);
}

#[test]
fn route_lookup_same_prefix_in_two_vrfs_follows_ingress_vrf() {
    let mut h = Harness::load();
    let (nh1, nh2) = (h.encap_at(1), h.encap_at(2));
    let net4 = Ipv4Addr::new(198, 51, 100, 0).into();
    let net6 = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0).into();
    for (vrf, slot) in [(0, 1), (7, 2)] {
        h.route(vrf, net4, 24, slot);
        h.route(vrf, net6, 48, slot);
    }
    // Only in VRF 7.
    h.route(7, Ipv4Addr::new(203, 0, 113, 0).into(), 24, 2);
    h.route(7, Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 0).into(), 48, 2);

    let vrf0 = [
        forwarded("VRF 0: 198.51.100.20 via VRF 0's next hop", v4_udp(DST_V4, 64, 1), 1, &nh1),
        forwarded("VRF 0: 2001:db8:2::20 via VRF 0's next hop", v6_udp(DST_V6, 64, 1), 1, &nh1),
        passed("VRF 0: 203.0.113.7 is only routed in VRF 7", v4_udp(OTHER_V4, 64, 1), Reason::NoRoute),
        passed("VRF 0: 2001:db8:3::7 is only routed in VRF 7", v6_udp(OTHER_V6, 64, 1), Reason::NoRoute),
    ];
    check_all(&h, "ingress interface in VRF 0", &vrf0);

    // The same interface moved to VRF 7, as the server would re-register it.
    h.interface(iface(7));
    let vrf7 = [
        forwarded("VRF 7: 198.51.100.20 via VRF 7's next hop", v4_udp(DST_V4, 64, 1), 2, &nh2),
        forwarded("VRF 7: 2001:db8:2::20 via VRF 7's next hop", v6_udp(DST_V6, 64, 1), 2, &nh2),
        forwarded("VRF 7: 203.0.113.7", v4_udp(OTHER_V4, 64, 1), 2, &nh2),
        forwarded("VRF 7: 2001:db8:3::7", v6_udp(OTHER_V6, 64, 1), 2, &nh2),
    ];
    check_all(&h, "ingress interface in VRF 7", &vrf7);
}

/// A default route is a prefix of length 0 after the VRF bits: it must match every address in its
/// VRF and nothing in any other, adjacent VRF ids included (a VRF stored with the wrong byte order
/// or prefix length would leak into them).
#[test]
fn default_route_in_vrf_7_misses_in_other_vrfs() {
    let mut h = Harness::load();
    let nh = h.encap_at(1);
    h.default_routes(7, 1);
    for vrf in [0, 6, 8, 0x0700_0000, 0x0007_0000] {
        h.interface(iface(vrf));
        let fixtures = [
            passed(format!("VRF {vrf:#x}: IPv4"), v4_udp(DST_V4, 64, 1), Reason::NoRoute),
            passed(format!("VRF {vrf:#x}: IPv6"), v6_udp(DST_V6, 64, 1), Reason::NoRoute),
        ];
        check_all(&h, &format!("VRF {vrf:#x}"), &fixtures);
    }
    h.interface(iface(7));
    let fixtures = [
        forwarded("VRF 7: IPv4 by the default route", v4_udp(DST_V4, 64, 1), 1, &nh),
        forwarded("VRF 7: IPv6 by the default route", v6_udp(DST_V6, 64, 1), 1, &nh),
    ];
    check_all(&h, "VRF 7", &fixtures);
}

// ---------------------------------------------------------------------------------------------
// ECMP.
// ---------------------------------------------------------------------------------------------

const ECMP_GROUP: u32 = 20;
const ECMP_MEMBERS: [u32; 4] = [21, 22, 23, 24];

/// An ECMP group of four ENCAP members (distinct MACs) as the route for DST_V4/DST_V6's networks.
fn ecmp_harness() -> (Harness, Vec<NextHop>) {
    let mut h = Harness::load();
    let members: Vec<NextHop> = ECMP_MEMBERS.iter().map(|&s| h.encap_at(s)).collect();
    h.nexthop(ECMP_GROUP, &ecmp(&ECMP_MEMBERS));
    h.route(0, Ipv4Addr::new(198, 51, 100, 0).into(), 24, ECMP_GROUP);
    h.route(0, Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0).into(), 48, ECMP_GROUP);
    (h, members)
}

/// Runs `frame` through an ECMP harness and returns the index of the member that took it, after
/// checking it was forwarded exactly as that member forwards (output, counters: the member's
/// slot counts it, the group's does not).
fn ecmp_member(h: &Harness, members: &[NextHop], description: &str, frame: &[u8]) -> usize {
    let obs = h.observe(IFACE_SLOT, frame);
    let out = obs.output();
    let idx = members.iter().position(|m| out.len() >= 6 && out[0..6] == m.dst_mac).unwrap_or_else(|| {
        panic!("{description}: verdict {:?}, output dst MAC {:02x?} is no member's", obs.verdict(), out.get(0..6))
    });
    let fx = forwarded(description, frame.to_vec(), ECMP_MEMBERS[idx], &members[idx]);
    // Re-check this very run against the member's fixture.
    let mut problems = Vec::new();
    if obs.verdict() != Some(XDP_REDIRECT) {
        problems.push(format!("verdict {:?}", obs.verdict()));
    }
    if let Output::Exactly(e) = &fx.output {
        if out != e.as_slice() {
            problems.push(format!("output {}", diff(e, out)));
        }
    }
    problems.extend(fx.checks.iter().filter_map(|c| c.verify(out).err()));
    if obs.iface != counted_once(frame.len(), Reason::Forwarded) {
        problems.push(format!("IFACE_STATS delta {}", describe_stats(&obs.iface)));
    }
    for (slot, d) in &obs.nexthops {
        let want = if *slot == ECMP_MEMBERS[idx] { (1, frame.len() as u64) } else { (0, 0) };
        if (d.packets, d.bytes) != want {
            problems.push(format!("NEXTHOP_STATS[{slot}] delta {d:?}, expected {want:?}"));
        }
    }
    assert!(problems.is_empty(), "{description}: {}", problems.join("; "));
    idx
}

#[test]
fn ecmp_distinct_flows_spread_over_every_member() {
    let (h, members) = ecmp_harness();
    for (family, build) in [
        ("IPv4", &(|sport: u16| v4_udp(DST_V4, 64, sport)) as &dyn Fn(u16) -> Vec<u8>),
        ("IPv6", &|sport: u16| v6_udp(DST_V6, 64, sport)),
    ] {
        let mut per_member = [0usize; 4];
        for sport in 0..256u16 {
            let flow = 30000 + sport;
            per_member[ecmp_member(&h, &members, &format!("{family} UDP sport {flow}"), &build(flow))] += 1;
        }
        // 256 flows over 4 members: a hash that ignored the ports (or a group that always took
        // one member) leaves members empty. Each member expects 64; 16 is far below any
        // plausible spread of a working hash.
        assert!(
            per_member.iter().all(|&n| n >= 16),
            "{family}: 256 flows spread unevenly over the 4 members: {per_member:?}"
        );
    }
}

#[test]
fn ecmp_same_flow_always_picks_same_member() {
    let (h, members) = ecmp_harness();
    for sport in [1u16, 4242, 40000, 65535] {
        for (family, frame) in [("IPv4", v4_udp(DST_V4, 64, sport)), ("IPv6", v6_udp(DST_V6, 64, sport))] {
            let picks: Vec<usize> = (0..20)
                .map(|i| ecmp_member(&h, &members, &format!("{family} sport {sport} run {i}"), &frame))
                .collect();
            assert!(
                picks.iter().all(|&p| p == picks[0]),
                "{family} flow with sport {sport} changed member across 20 runs: {picks:?}"
            );
        }
    }
}

/// Fragments after the first carry no ports, so the hash must ignore the ports in the first one
/// too, or a datagram's fragments split over members (and get reordered). Sixteen datagrams with
/// different ports: a hash that used the first fragment's ports would move some first fragment
/// away from the rest with probability 1 - (1/4)^16.
#[test]
fn ecmp_ipv4_fragments_of_one_datagram_pick_same_member() {
    let (h, members) = ecmp_harness();
    for i in 0..16u16 {
        let ip = ipv4(DST_V4, IPPROTO_UDP).id(0x4000 + i);
        let data = payload(64);
        let datagram = udp(10000 + 7 * i, 20000 + 13 * i, &payload(200));
        let first = ip.clone().fragment(0, true).frame(&datagram[..64]);
        let middle = ip.clone().fragment(8, true).frame(&data);
        let last = ip.clone().fragment(16, false).frame(&datagram[128..]);
        let picks = [
            ecmp_member(&h, &members, &format!("datagram {i} first fragment"), &first),
            ecmp_member(&h, &members, &format!("datagram {i} middle fragment"), &middle),
            ecmp_member(&h, &members, &format!("datagram {i} last fragment"), &last),
        ];
        assert!(
            picks.iter().all(|&p| p == picks[0]),
            "IPv4 datagram {i}: fragments took members {picks:?} (first, middle, last)"
        );
    }
}

#[test]
fn ecmp_ipv6_fragments_of_one_datagram_pick_same_member() {
    let (h, members) = ecmp_harness();
    for i in 0..16u16 {
        let ip = ipv6(DST_V6, IPPROTO_FRAGMENT);
        let id = 0x1000 + u32::from(i);
        let datagram = udp(10000 + 7 * i, 20000 + 13 * i, &payload(200));
        let first = ip.frame(&concat(&[&ipv6_fragment(IPPROTO_UDP, 0, true, id), &datagram[..64]]));
        let middle = ip.frame(&concat(&[&ipv6_fragment(IPPROTO_UDP, 8, true, id), &datagram[64..128]]));
        let last = ip.frame(&concat(&[&ipv6_fragment(IPPROTO_UDP, 16, false, id), &datagram[128..]]));
        let picks = [
            ecmp_member(&h, &members, &format!("datagram {i} first fragment"), &first),
            ecmp_member(&h, &members, &format!("datagram {i} middle fragment"), &middle),
            ecmp_member(&h, &members, &format!("datagram {i} last fragment"), &last),
        ];
        assert!(
            picks.iter().all(|&p| p == picks[0]),
            "IPv6 datagram {i}: fragments took members {picks:?} (first, middle, last)"
        );
    }
}

/// RFC 8200 4.5: the fragment header's next header is the first header of the fragmentable part,
/// which may be an extension header the first fragment carries and later ones do not (destination
/// options, AH). The first fragment then shows the upper layer (UDP, TCP) behind it, later
/// fragments only the fragment header's next header: a hash that mixed in the protocol split
/// such a datagram over two members. Sixteen datagrams from sixteen sources, so the hash inputs
/// differ per datagram and a protocol-dependent hash would separate some first fragment from the
/// rest with probability 1 - (1/4)^16.
#[test]
fn ecmp_ipv6_fragments_with_extension_header_after_fragment_header_pick_same_member() {
    let (h, members) = ecmp_harness();
    let mut firsts = BTreeSet::new();
    for i in 0..16u16 {
        let src = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 1, 0x100 + i);
        let ip = ipv6(DST_V6, IPPROTO_FRAGMENT).src(src);
        let id = 0x6000 + u32::from(i);
        let (sport, dport) = (10000 + 7 * i, 20000 + 13 * i);
        // The fragmentable part: an extension header and the upper layer, cut into 64-byte
        // pieces; what the fragment header announces is its first header.
        let (layout, announced, fragmentable) = match i % 3 {
            0 => (
                "fragment, destination options, UDP",
                IPPROTO_DSTOPTS,
                concat(&[&ipv6_options(IPPROTO_UDP, 0), &udp(sport, dport, &payload(184))]),
            ),
            1 => (
                "fragment, destination options, TCP",
                IPPROTO_DSTOPTS,
                concat(&[&ipv6_options(IPPROTO_TCP, 0), &tcp_syn(sport, dport), &payload(172)]),
            ),
            _ => (
                "fragment, AH, UDP",
                IPPROTO_AH,
                concat(&[&ipv6_ah(IPPROTO_UDP, 0x1000 + u32::from(i)), &udp(sport, dport, &payload(168))]),
            ),
        };
        assert_eq!(fragmentable.len(), 200);
        let piece = |offset: u16, more: bool, data: &[u8]| {
            ip.frame(&concat(&[&ipv6_fragment(announced, offset, more, id), data]))
        };
        let first = piece(0, true, &fragmentable[..64]);
        let middle = piece(8, true, &fragmentable[64..128]);
        let last = piece(16, false, &fragmentable[128..]);
        let what = format!("datagram {i} from {src} ({layout})");
        let picks = [
            ecmp_member(&h, &members, &format!("{what}: first fragment"), &first),
            ecmp_member(&h, &members, &format!("{what}: middle fragment"), &middle),
            ecmp_member(&h, &members, &format!("{what}: last fragment"), &last),
        ];
        assert!(
            picks.iter().all(|&p| p == picks[0]),
            "IPv6 {what}: fragments took members {picks:?} (first, middle, last)"
        );
        firsts.insert(picks[0]);
    }
    // Sixteen sources all on one member would mean the hash ignores the addresses too, and the
    // check above proved nothing.
    assert!(firsts.len() > 1, "16 datagrams from 16 sources all took member {firsts:?}");
}

#[test]
fn ecmp_group_without_usable_member_stops_with_member_reason() {
    let mut h = Harness::load();
    h.encap_at(1);
    // Slots 10..: groups; 2: DISCARD, 3: RECEIVE, 4: never written (empty).
    h.nexthop(2, &discard());
    h.nexthop(3, &receive());
    h.nexthop(10, &ecmp(&[]));
    let mut too_many = ecmp(&[1; ECMP_MAX]);
    too_many.member_count = ECMP_MAX as u32 + 1;
    h.nexthop(11, &too_many);
    h.nexthop(12, &ecmp(&[13]));
    h.nexthop(13, &ecmp(&[1]));
    h.nexthop(14, &ecmp(&[4]));
    h.nexthop(15, &ecmp(&[2]));
    h.nexthop(16, &ecmp(&[3]));
    let cases = [
        (10, "empty group", Reason::PassNextHopInvalid),
        (11, "member count above ECMP_MAX", Reason::PassNextHopInvalid),
        (12, "member that is itself a group", Reason::PassNextHopInvalid),
        (14, "member slot empty", Reason::PassNextHopInvalid),
        (15, "only member DISCARD", Reason::DropDiscard),
        (16, "only member RECEIVE", Reason::PassReceive),
    ];
    let mut fixtures = Vec::new();
    for (i, (group, what, reason)) in cases.into_iter().enumerate() {
        let net = Ipv4Addr::new(203, 0, 113, 16 * i as u8);
        h.route(0, net.into(), 28, group);
        let dst = Ipv4Addr::new(203, 0, 113, 16 * i as u8 + 5);
        let mut fx = passed(format!("ECMP {what}"), v4_udp(dst, 64, 1), reason);
        if reason == Reason::DropDiscard {
            fx.verdict = XDP_DROP;
        }
        fixtures.push(fx);
    }
    check_all(&h, "unusable ECMP groups", &fixtures);
}

// ---------------------------------------------------------------------------------------------
// TTL / hop limit expiry.
// ---------------------------------------------------------------------------------------------

#[test]
fn ipv4_ttl_1_to_routed_destination_sends_icmp_time_exceeded() {
    let mut h = Harness::load();
    h.encap_at(1);
    h.route(0, Ipv4Addr::new(198, 51, 100, 0).into(), 24, 1);
    let cfg = iface(0);
    let fixtures = [
        time_exceeded("IPv4 UDP TTL 1", v4_udp(DST_V4, 1, 40000), &cfg),
        // Arrived already expired: still the sender's to learn about, never wrapped to 255.
        time_exceeded("IPv4 UDP TTL 0", v4_udp(DST_V4, 0, 40000), &cfg),
        time_exceeded(
            "IPv4 TCP SYN TTL 1 (traceroute -T)",
            ipv4(DST_V4, IPPROTO_TCP).ttl(1).frame(&tcp_syn(40000, 443)),
            &cfg,
        ),
        time_exceeded(
            "IPv4 ICMP echo request TTL 1 (traceroute -I)",
            ipv4(DST_V4, IPPROTO_ICMP).ttl(1).frame(&icmp(8, 0, 0x0001_0001, &payload(56))),
            &cfg,
        ),
        time_exceeded(
            // Only the first fragment is answered (RFC 1812 4.3.2.7 allows answering it).
            "IPv4 first fragment TTL 1",
            ipv4(DST_V4, IPPROTO_UDP).ttl(1).fragment(0, true).frame(&udp(1, 2, &payload(64))),
            &cfg,
        ),
        time_exceeded(
            // Exactly header + 8 bytes, padded: the quote must stop at the datagram's end.
            "IPv4 UDP TTL 1, 28-byte datagram padded to 60 bytes",
            {
                let mut f = ipv4(DST_V4, IPPROTO_UDP).ttl(1).frame(&udp(33434, 33434, &[]));
                f.resize(60, 0xee);
                f
            },
            &cfg,
        ),
        time_exceeded(
            "IPv4 1000-byte UDP datagram TTL 1 (quote is header + 8 bytes)",
            ipv4(DST_V4, IPPROTO_UDP).ttl(1).frame(&udp(53, 53000, &payload(972))),
            &cfg,
        ),
    ];
    check_all(&h, "IPv4 TTL expiry", &fixtures);
}

#[test]
fn ipv6_hop_limit_1_to_routed_destination_sends_icmpv6_time_exceeded() {
    let mut h = Harness::load();
    h.encap_at(1);
    h.route(0, Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0).into(), 48, 1);
    let cfg = iface(0);
    let fixtures = [
        time_exceeded("IPv6 UDP hop limit 1", v6_udp(DST_V6, 1, 40000), &cfg),
        time_exceeded("IPv6 UDP hop limit 0", v6_udp(DST_V6, 0, 40000), &cfg),
        time_exceeded(
            "IPv6 TCP SYN hop limit 1",
            ipv6(DST_V6, IPPROTO_TCP).hop_limit(1).frame(&tcp_syn(40000, 443)),
            &cfg,
        ),
        time_exceeded(
            "IPv6 ICMPv6 echo request hop limit 1",
            ipv6(DST_V6, IPPROTO_ICMPV6).hop_limit(1).frame(&icmp(128, 0, 0x0001_0001, &payload(56))),
            &cfg,
        ),
        time_exceeded(
            // The 8 quoted bytes after the fixed header are the hop-by-hop header here.
            "IPv6 hop-by-hop then UDP, hop limit 1",
            ipv6(DST_V6, IPPROTO_HOPOPTS)
                .hop_limit(1)
                .frame(&concat(&[&ipv6_options(IPPROTO_UDP, 0), &udp(1, 2, &payload(16))])),
            &cfg,
        ),
        time_exceeded(
            "IPv6 first fragment hop limit 1",
            ipv6(DST_V6, IPPROTO_FRAGMENT)
                .hop_limit(1)
                .frame(&concat(&[&ipv6_fragment(IPPROTO_UDP, 0, true, 9), &udp(1, 2, &payload(64))])),
            &cfg,
        ),
        time_exceeded(
            "IPv6 1000-byte UDP datagram hop limit 1",
            ipv6(DST_V6, IPPROTO_UDP).hop_limit(1).frame(&udp(53, 53000, &payload(952))),
            &cfg,
        ),
    ];
    check_all(&h, "IPv6 hop limit expiry", &fixtures);
}

#[test]
fn ttl_1_without_interface_address_passes_ttl_exceeded() {
    let mut h = Harness::load();
    h.encap_at(1);
    h.route(0, Ipv4Addr::new(198, 51, 100, 0).into(), 24, 1);
    h.route(0, Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0).into(), 48, 1);
    // No source for an error of the family: the kernel gets the packet. The address fields are
    // filled in anyway, so only the flags can tell the program there is none.
    h.interface(InterfaceConfig { flags: IFACE_HAS_IPV6, ..iface(0) });
    check_all(
        &h,
        "no IPv4 address",
        &[
            passed("IPv4 UDP TTL 1", v4_udp(DST_V4, 1, 1), Reason::PassTtlExceeded),
            passed("IPv4 UDP TTL 0", v4_udp(DST_V4, 0, 1), Reason::PassTtlExceeded),
        ],
    );
    h.interface(InterfaceConfig { flags: IFACE_HAS_IPV4, ..iface(0) });
    check_all(
        &h,
        "no IPv6 address",
        &[
            passed("IPv6 UDP hop limit 1", v6_udp(DST_V6, 1, 1), Reason::PassTtlExceeded),
            passed("IPv6 UDP hop limit 0", v6_udp(DST_V6, 0, 1), Reason::PassTtlExceeded),
        ],
    );
}

/// RFC 1812 4.3.2.7 / RFC 4443 2.4(e): no error about an ICMP error or a non-first fragment; the
/// program also leaves echo replies and other non-request ICMP to the kernel, and frames whose
/// error it cannot build with fixed sizes (IPv4 options, datagrams shorter than header + 8).
#[test]
fn ttl_1_packets_that_must_not_trigger_icmp_pass_ttl_exceeded() {
    let mut h = Harness::load();
    h.encap_at(1);
    h.route(0, Ipv4Addr::new(198, 51, 100, 0).into(), 24, 1);
    h.route(0, Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0).into(), 48, 1);
    let v4 = |proto: u8, body: Vec<u8>| ipv4(DST_V4, proto).ttl(1).frame(&body);
    let v6 = |next: u8, body: Vec<u8>| ipv6(DST_V6, next).hop_limit(1).frame(&body);
    // An ICMP error quoting some earlier datagram.
    let quoted = ipv4(HOST_V4, IPPROTO_UDP).src(DST_V4).build(&udp(1, 2, &[]));
    let quoted6 = ipv6(HOST_V6, IPPROTO_UDP).src(DST_V6).build(&udp(1, 2, &[]));
    let none = |d: &str, f: Vec<u8>| passed(d, f, Reason::PassTtlExceeded);
    let fixtures = [
        none("IPv4 ICMP echo reply TTL 1", v4(IPPROTO_ICMP, icmp(0, 0, 0x0001_0001, &payload(56)))),
        none("IPv4 ICMP destination unreachable TTL 1", v4(IPPROTO_ICMP, icmp(3, 3, 0x0001_0001, &quoted))),
        none("IPv4 ICMP time exceeded TTL 1", v4(IPPROTO_ICMP, icmp(11, 0, 0x0001_0001, &quoted))),
        none(
            "IPv4 ICMP echo reply TTL 0",
            ipv4(DST_V4, IPPROTO_ICMP).ttl(0).frame(&icmp(0, 0, 0x0001_0001, &payload(8))),
        ),
        none("IPv4 non-first fragment TTL 1", ipv4(DST_V4, IPPROTO_UDP).ttl(1).fragment(8, true).frame(&payload(64))),
        none(
            "IPv4 with options (IHL 6) TTL 1",
            ipv4(DST_V4, IPPROTO_UDP).ttl(1).options(&[148, 4, 0, 0]).frame(&udp(1, 2, &payload(8))),
        ),
        none(
            // 4 bytes after the header, padded to 60: the padding must not be taken for the
            // missing quote bytes.
            "IPv4 GRE TTL 1 with 4 payload bytes, padded to 60 bytes",
            {
                let mut f = v4(IPPROTO_GRE, vec![0, 0, 0x08, 0x00]);
                f.resize(60, 0xee);
                f
            },
        ),
        none("IPv6 ICMPv6 echo reply hop limit 1", v6(IPPROTO_ICMPV6, icmp(129, 0, 0x0001_0001, &payload(56)))),
        none("IPv6 ICMPv6 destination unreachable hop limit 1", v6(IPPROTO_ICMPV6, icmp(1, 3, 0x0001_0001, &quoted6))),
        none("IPv6 ICMPv6 packet too big hop limit 1", v6(IPPROTO_ICMPV6, icmp(2, 0, 0x0001_0001, &quoted6))),
        none("IPv6 ICMPv6 time exceeded hop limit 1", v6(IPPROTO_ICMPV6, icmp(3, 0, 0x0001_0001, &quoted6))),
        none(
            "IPv6 non-first fragment hop limit 1",
            v6(IPPROTO_FRAGMENT, concat(&[&ipv6_fragment(IPPROTO_UDP, 8, true, 3), &payload(64)])),
        ),
        none("IPv6 GRE hop limit 1 with 4 payload bytes", v6(IPPROTO_GRE, vec![0, 0, 0x86, 0xdd])),
    ];
    check_all(&h, "TTL 1 without ICMP", &fixtures);
}

/// RFC 1812 4.3.2.7 / RFC 4443 2.4(e): no ICMP error to a source that is not a single host:
/// unspecified, "this network" (0/8), loopback, multicast, reserved (240/4) and limited broadcast;
/// such packets go to the kernel as they came. Sources just outside those ranges still get their
/// error.
#[test]
fn ttl_1_from_source_that_is_not_a_unicast_host_passes_ttl_exceeded_without_icmp() {
    let mut h = Harness::load();
    h.encap_at(1);
    h.route(0, Ipv4Addr::new(198, 51, 100, 0).into(), 24, 1);
    h.route(0, Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0).into(), 48, 1);
    let cfg = iface(0);
    // Special-purpose ranges: necessarily outside the documentation prefixes.
    let v4 = |src: [u8; 4], ttl: u8| {
        ipv4(DST_V4, IPPROTO_UDP).src(src.into()).ttl(ttl).frame(&udp(40000, 33434, &payload(8)))
    };
    let v6 = |src: &str, hop_limit: u8| {
        ipv6(DST_V6, IPPROTO_UDP).src(src.parse().unwrap()).hop_limit(hop_limit).frame(&udp(40000, 33434, &payload(8)))
    };
    let none = |d: &str, f: Vec<u8>| passed(d, f, Reason::PassTtlExceeded);
    let fixtures = [
        none("IPv4 from 0.0.0.0 TTL 1", v4([0, 0, 0, 0], 1)),
        none("IPv4 from 0.0.0.0 TTL 0", v4([0, 0, 0, 0], 0)),
        none("IPv4 from 0.1.2.3 (this network) TTL 1", v4([0, 1, 2, 3], 1)),
        none("IPv4 from 127.0.0.1 TTL 1", v4([127, 0, 0, 1], 1)),
        none("IPv4 from 127.255.255.254 TTL 1", v4([127, 255, 255, 254], 1)),
        none("IPv4 from 224.0.0.5 (OSPF routers) TTL 1", v4([224, 0, 0, 5], 1)),
        none("IPv4 from 239.255.255.255 TTL 1", v4([239, 255, 255, 255], 1)),
        none("IPv4 from 240.0.0.1 (reserved) TTL 1", v4([240, 0, 0, 1], 1)),
        none("IPv4 from 255.255.255.255 TTL 1", v4([255, 255, 255, 255], 1)),
        none(
            "IPv4 ICMP echo request from 224.0.0.5 TTL 1",
            ipv4(DST_V4, IPPROTO_ICMP).src(Ipv4Addr::new(224, 0, 0, 5)).ttl(1).frame(&icmp(
                8,
                0,
                0x0001_0001,
                &payload(8),
            )),
        ),
        none("IPv6 from :: hop limit 1", v6("::", 1)),
        none("IPv6 from :: hop limit 0", v6("::", 0)),
        none("IPv6 from ::1 hop limit 1", v6("::1", 1)),
        none("IPv6 from ff02::1 hop limit 1", v6("ff02::1", 1)),
        none("IPv6 from ff0e::101 hop limit 1", v6("ff0e::101", 1)),
        none("IPv6 from ff00:: hop limit 1", v6("ff00::", 1)),
        none(
            "IPv6 ICMPv6 echo request from ff02::1 hop limit 1",
            ipv6(DST_V6, IPPROTO_ICMPV6).src("ff02::1".parse().unwrap()).hop_limit(1).frame(&icmp(
                128,
                0,
                0x0001_0001,
                &payload(8),
            )),
        ),
        // Single hosts next to those ranges: answered.
        time_exceeded("IPv4 from 1.0.0.1 TTL 1", v4([1, 0, 0, 1], 1), &cfg),
        time_exceeded("IPv4 from 126.255.255.254 TTL 1", v4([126, 255, 255, 254], 1), &cfg),
        time_exceeded("IPv4 from 128.0.0.1 TTL 1", v4([128, 0, 0, 1], 1), &cfg),
        time_exceeded("IPv4 from 223.255.255.254 TTL 1", v4([223, 255, 255, 254], 1), &cfg),
        time_exceeded("IPv6 from fc00::1 (unique local) hop limit 1", v6("fc00::1", 1), &cfg),
        time_exceeded("IPv6 from 2001:db8:1::1:0:0:1 hop limit 1", v6("2001:db8:1::1:0:0:1", 1), &cfg),
    ];
    check_all(&h, "TTL 1 from sources that are not a unicast host", &fixtures);
}

/// The error leaves through the ingress interface's own `TX_PORTS` entry, whatever the next hop
/// would have used: it is sent when the next hop's TX port is missing, and dropped (the frame is
/// already the error) when the ingress interface's entry is cleared.
#[test]
fn icmp_time_exceeded_leaves_through_ingress_interface_tx_port() {
    let mut h = Harness::load();
    let nh = h.encap_via(1, TX_SLOT_ABSENT, 1500);
    h.nexthop(1, &nh);
    h.route(0, Ipv4Addr::new(198, 51, 100, 0).into(), 24, 1);
    h.route(0, Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0).into(), 48, 1);
    let cfg = iface(0);
    check_all(
        &h,
        "next hop without TX port",
        &[
            time_exceeded("IPv4 UDP TTL 1", v4_udp(DST_V4, 1, 1), &cfg),
            time_exceeded("IPv6 UDP hop limit 1", v6_udp(DST_V6, 1, 1), &cfg),
        ],
    );
    h.tx_port(IFACE_SLOT, 0);
    let no_port = |d: &str, f: Vec<u8>| Fixture {
        verdict: XDP_DROP,
        output: Output::Unspecified("dropped after the rewrite into the ICMP error"),
        ..passed(d, f, Reason::DropNoTxPort)
    };
    check_all(
        &h,
        "ingress interface's TX port cleared",
        &[no_port("IPv4 UDP TTL 1", v4_udp(DST_V4, 1, 1)), no_port("IPv6 UDP hop limit 1", v6_udp(DST_V6, 1, 1))],
    );
}

// ---------------------------------------------------------------------------------------------
// Next-hop kinds.
// ---------------------------------------------------------------------------------------------

#[test]
fn discard_receive_and_invalid_next_hops_stop_forwarding() {
    let mut h = Harness::load();
    h.nexthop(1, &discard());
    h.nexthop(2, &receive());
    // Slot 3 is never written (an all-zero, EMPTY entry); slot MAX_NEXTHOPS is outside the array.
    let routes = [(0u8, 1), (1, 2), (2, 3)];
    for (third, slot) in routes {
        h.route(0, Ipv4Addr::new(203, 0, 113, 64 * third).into(), 26, slot);
        h.route(0, Ipv6Addr::new(0x2001, 0xdb8, 0x10 + u16::from(third), 0, 0, 0, 0, 0).into(), 48, slot);
    }
    h.route(0, Ipv4Addr::new(203, 0, 113, 192).into(), 26, MAX_NEXTHOPS);
    h.route(0, Ipv6Addr::new(0x2001, 0xdb8, 0x13, 0, 0, 0, 0, 0).into(), 48, MAX_NEXTHOPS);
    let v4 = |last: u8, ttl: u8| v4_udp(Ipv4Addr::new(203, 0, 113, last), ttl, 1);
    let v6 = |net: u16, hl: u8| v6_udp(Ipv6Addr::new(0x2001, 0xdb8, net, 0, 0, 0, 0, 1), hl, 1);
    let drop = |d: &str, f: Vec<u8>| Fixture { verdict: XDP_DROP, ..passed(d, f, Reason::DropDiscard) };
    let fixtures = [
        drop("IPv4 to DISCARD", v4(1, 64)),
        drop("IPv6 to DISCARD", v6(0x10, 64)),
        // The next hop decides before the TTL does: a discarded packet gets no ICMP error.
        drop("IPv4 TTL 1 to DISCARD", v4(1, 1)),
        passed("IPv4 to RECEIVE", v4(65, 64), Reason::PassReceive),
        passed("IPv6 to RECEIVE", v6(0x11, 64), Reason::PassReceive),
        passed("IPv4 TTL 1 to RECEIVE (the router's own: not expired)", v4(65, 1), Reason::PassReceive),
        passed("IPv4 to an empty next-hop slot", v4(129, 64), Reason::PassNextHopInvalid),
        passed("IPv6 to an empty next-hop slot", v6(0x12, 64), Reason::PassNextHopInvalid),
        passed("IPv4 to a slot beyond NEXTHOPS", v4(193, 64), Reason::PassNextHopInvalid),
        passed("IPv6 to a slot beyond NEXTHOPS", v6(0x13, 64), Reason::PassNextHopInvalid),
    ];
    check_all(&h, "non-forwarding next hops", &fixtures);
}

#[test]
fn unresolved_gateway_next_hop_passes_to_stack_unchanged() {
    let mut h = Harness::load();
    // What the server writes for a gateway the kernel has not resolved: egress known, no MAC.
    let unresolved = NextHop {
        kind: nexthop_kind::UNRESOLVED,
        tx_slot: TX_SLOT,
        ifindex: 1,
        mtu: 1500,
        src_mac: ROUTER_MAC,
        ..NextHop::EMPTY
    };
    h.nexthop(1, &unresolved);
    h.encap_at(2);
    h.nexthop(10, &ecmp(&[1]));
    h.route(0, Ipv4Addr::new(203, 0, 113, 0).into(), 26, 1);
    h.route(0, Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0, 0, 0, 0, 0).into(), 48, 1);
    h.route(0, Ipv4Addr::new(203, 0, 113, 64).into(), 26, 10);
    h.route(0, Ipv4Addr::new(203, 0, 113, 128).into(), 26, 2);
    let v4 = |last: u8, ttl: u8| v4_udp(Ipv4Addr::new(203, 0, 113, last), ttl, 1);
    let fixtures = [
        passed("IPv4 to an unresolved gateway", v4(1, 64), Reason::PassNeighUnresolved),
        passed(
            "IPv6 to an unresolved gateway",
            v6_udp(Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0, 0, 0, 0, 1), 64, 1),
            Reason::PassNeighUnresolved,
        ),
        // The kernel routes it, decrements the TTL and answers TTL 1 itself.
        passed("IPv4 TTL 1 to an unresolved gateway", v4(1, 1), Reason::PassNeighUnresolved),
        passed("IPv4 to an ECMP group whose member is unresolved", v4(65, 64), Reason::PassNeighUnresolved),
    ];
    check_all(&h, "unresolved gateway", &fixtures);
    // Resolved (the server rewrites the slot as ENCAP): forwarded like any other.
    let nh = h.encap_at(1);
    check_all(&h, "resolved gateway", &[forwarded("IPv4 to a resolved gateway", v4(1, 64), 1, &nh)]);
}

// ---------------------------------------------------------------------------------------------
// Traffic that is never routed.
// ---------------------------------------------------------------------------------------------

#[test]
fn ip_without_matching_route_passes_no_route_unchanged() {
    let mut h = Harness::load();
    h.encap_at(1);
    // Routes exist, just not for these destinations, in either family.
    h.route(0, Ipv4Addr::new(203, 0, 113, 0).into(), 24, 1);
    h.route(0, Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 0).into(), 48, 1);
    let fixtures = [
        passed("IPv4 UDP to 198.51.100.20", v4_udp(DST_V4, 64, 1), Reason::NoRoute),
        passed("IPv4 UDP TTL 1 to 198.51.100.20 (no route: no ICMP)", v4_udp(DST_V4, 1, 1), Reason::NoRoute),
        passed("IPv6 UDP to 2001:db8:2::20", v6_udp(DST_V6, 64, 1), Reason::NoRoute),
        passed("IPv6 UDP hop limit 1 to 2001:db8:2::20", v6_udp(DST_V6, 1, 1), Reason::NoRoute),
    ];
    check_all(&h, "route miss", &fixtures);
}

#[test]
fn interface_address_destination_passes_local_despite_default_route() {
    let mut h = Harness::load();
    h.encap_at(1);
    // Without the local check these would be forwarded by the covering routes.
    h.default_routes(0, 1);
    h.route(0, Ipv4Addr::new(192, 0, 2, 0).into(), 24, 1);
    let fixtures = [
        passed("IPv4 UDP to 192.0.2.1", v4_udp(IFACE_V4, 64, 1), Reason::PassLocal),
        passed(
            "IPv4 ICMP echo request TTL 1 to 192.0.2.1 (ours: not expired)",
            ipv4(IFACE_V4, IPPROTO_ICMP).ttl(1).frame(&icmp(8, 0, 0x0001_0001, &payload(8))),
            Reason::PassLocal,
        ),
        passed("IPv6 UDP to 2001:db8:1::1", v6_udp(IFACE_V6, 64, 1), Reason::PassLocal),
        passed("IPv6 UDP hop limit 1 to 2001:db8:1::1", v6_udp(IFACE_V6, 1, 1), Reason::PassLocal),
    ];
    check_all(&h, "interface address", &fixtures);
}

#[test]
fn multicast_broadcast_and_link_local_pass_multicast_despite_default_route() {
    let mut h = Harness::load();
    h.encap_at(1);
    h.default_routes(0, 1);
    // Special-purpose ranges: necessarily outside the documentation prefixes.
    let v4 = |a: [u8; 4]| v4_udp(Ipv4Addr::from(a), 64, 1);
    let v6 = |a: &str| v6_udp(a.parse().unwrap(), 64, 1);
    let mc = |d: &str, f: Vec<u8>| passed(d, f, Reason::PassMulticast);
    let fixtures = [
        mc("IPv4 224.0.0.1 (all hosts)", v4([224, 0, 0, 1])),
        mc("IPv4 224.0.0.251 (mDNS)", v4([224, 0, 0, 251])),
        mc("IPv4 239.255.255.250 (SSDP)", v4([239, 255, 255, 250])),
        mc("IPv4 240.0.0.1 (reserved)", v4([240, 0, 0, 1])),
        mc("IPv4 255.255.255.255 (limited broadcast)", v4([255, 255, 255, 255])),
        mc("IPv4 169.254.1.1 (link-local)", v4([169, 254, 1, 1])),
        mc("IPv4 169.254.255.255 (link-local)", v4([169, 254, 255, 255])),
        mc(
            "IPv4 224.0.0.1 TTL 1 (no ICMP about multicast)",
            ipv4(Ipv4Addr::new(224, 0, 0, 1), IPPROTO_UDP).ttl(1).frame(&udp(1, 2, &payload(8))),
        ),
        mc("IPv6 ff02::1 (all nodes)", v6("ff02::1")),
        mc("IPv6 ff02::1:ff00:1 (solicited node)", v6("ff02::1:ff00:1")),
        mc("IPv6 ff0e::101 (global scope)", v6("ff0e::101")),
        mc("IPv6 fe80::1 (link-local)", v6("fe80::1")),
        mc("IPv6 febf:ffff::1 (top of fe80::/10)", v6("febf:ffff::1")),
        mc(
            "IPv6 ff02::1 hop limit 1 (no ICMPv6 about multicast)",
            ipv6("ff02::1".parse().unwrap(), IPPROTO_UDP).hop_limit(1).frame(&udp(1, 2, &payload(8))),
        ),
    ];
    check_all(&h, "multicast, broadcast, link-local", &fixtures);
}

/// Only frames sent to the ingress interface's MAC are routed: a unicast frame for another host
/// (seen on a promiscuous or bridged port) or a broadcast/multicast frame carrying unicast IP is
/// the kernel's to drop or handle, untouched: not forwarded, not answered with ICMP, not counted
/// on any next hop. Multicast destinations are still told apart first.
#[test]
fn routed_ip_in_frame_for_another_mac_passes_other_host_unchanged() {
    let mut h = Harness::load();
    let nh = h.encap_at(1);
    h.default_routes(0, 1);
    h.route(0, Ipv4Addr::new(198, 51, 100, 0).into(), 24, 1);
    h.route(0, Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0).into(), 48, 1);
    const FOREIGN: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x09];
    const BROADCAST: [u8; 6] = [0xff; 6];
    const V4_GROUP_MAC: [u8; 6] = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01];
    const V6_GROUP_MAC: [u8; 6] = [0x33, 0x33, 0x00, 0x00, 0x00, 0x01];
    let to = |mac: [u8; 6], mut f: Vec<u8>| {
        f[0..6].copy_from_slice(&mac);
        f
    };
    let other = |d: &str, f: Vec<u8>| passed(d, f, Reason::PassOtherHost);
    let fixtures = [
        other("IPv4 UDP to a foreign unicast MAC", to(FOREIGN, v4_udp(DST_V4, 64, 1))),
        other("IPv4 UDP to ff:ff:ff:ff:ff:ff", to(BROADCAST, v4_udp(DST_V4, 64, 1))),
        other("IPv4 UDP to a multicast MAC", to(V4_GROUP_MAC, v4_udp(DST_V4, 64, 1))),
        other("IPv4 UDP by the default route to a foreign MAC", to(FOREIGN, v4_udp(OTHER_V4, 64, 1))),
        other("IPv4 UDP TTL 1 to a foreign MAC (no ICMP)", to(FOREIGN, v4_udp(DST_V4, 1, 1))),
        other("IPv4 UDP TTL 1 to ff:ff:ff:ff:ff:ff (no ICMP)", to(BROADCAST, v4_udp(DST_V4, 1, 1))),
        other(
            "IPv4 non-first fragment to a foreign MAC",
            to(FOREIGN, ipv4(DST_V4, IPPROTO_UDP).fragment(8, true).frame(&payload(64))),
        ),
        other("IPv4 to the interface's address in a foreign MAC's frame", to(FOREIGN, v4_udp(IFACE_V4, 64, 1))),
        other("IPv6 UDP to a foreign unicast MAC", to(FOREIGN, v6_udp(DST_V6, 64, 1))),
        other("IPv6 UDP to ff:ff:ff:ff:ff:ff", to(BROADCAST, v6_udp(DST_V6, 64, 1))),
        other("IPv6 UDP to a multicast MAC", to(V6_GROUP_MAC, v6_udp(DST_V6, 64, 1))),
        other("IPv6 UDP hop limit 1 to a foreign MAC (no ICMPv6)", to(FOREIGN, v6_udp(DST_V6, 1, 1))),
        // Multicast, broadcast and link-local destinations are decided before the MAC.
        passed(
            "IPv4 to 255.255.255.255 in a broadcast frame",
            to(BROADCAST, v4_udp(Ipv4Addr::BROADCAST, 64, 1)),
            Reason::PassMulticast,
        ),
        passed(
            "IPv4 to 224.0.0.1 in its group's frame",
            to(V4_GROUP_MAC, v4_udp(Ipv4Addr::new(224, 0, 0, 1), 64, 1)),
            Reason::PassMulticast,
        ),
        passed(
            "IPv6 to ff02::1 in its group's frame",
            to(V6_GROUP_MAC, v6_udp("ff02::1".parse().unwrap(), 64, 1)),
            Reason::PassMulticast,
        ),
        passed(
            "IPv6 to fe80::1 in a foreign MAC's frame",
            to(FOREIGN, v6_udp("fe80::1".parse().unwrap(), 64, 1)),
            Reason::PassMulticast,
        ),
        // The interface's own MAC is still routed.
        forwarded("IPv4 UDP to the interface's MAC", v4_udp(DST_V4, 64, 1), 1, &nh),
        forwarded("IPv6 UDP to the interface's MAC", v6_udp(DST_V6, 64, 1), 1, &nh),
    ];
    check_all(&h, "frames for another MAC", &fixtures);

    // The MAC compared is the interface's configured one: re-registered with FOREIGN, frames to
    // the old MAC are another host's and frames to FOREIGN are routed (and answered from it).
    let moved = InterfaceConfig { mac: FOREIGN, ..iface(0) };
    h.interface(moved);
    let fixtures = [
        other("IPv4 UDP to the previous MAC", v4_udp(DST_V4, 64, 1)),
        other("IPv6 UDP to the previous MAC", v6_udp(DST_V6, 64, 1)),
        forwarded("IPv4 UDP to the new MAC", to(FOREIGN, v4_udp(DST_V4, 64, 1)), 1, &nh),
        forwarded("IPv6 UDP to the new MAC", to(FOREIGN, v6_udp(DST_V6, 64, 1)), 1, &nh),
        time_exceeded("IPv4 UDP TTL 1 to the new MAC", to(FOREIGN, v4_udp(DST_V4, 1, 1)), &moved),
        time_exceeded("IPv6 UDP hop limit 1 to the new MAC", to(FOREIGN, v6_udp(DST_V6, 1, 1)), &moved),
    ];
    check_all(&h, "frames for another MAC after a MAC change", &fixtures);
}

#[test]
fn non_ip_and_vlan_tagged_frames_pass_despite_default_route() {
    let mut h = Harness::load();
    h.encap_at(1);
    h.default_routes(0, 1);
    let tagged = |ethertype: u16, l3: &[u8]| {
        concat(&[
            &ROUTER_MAC,
            &HOST_MAC,
            &ETH_P_8021Q.to_be_bytes(),
            &100u16.to_be_bytes(),
            &ethertype.to_be_bytes(),
            l3,
        ])
    };
    let fixtures = [
        passed("ARP request", arp_frame(), Reason::PassNonIp),
        passed(
            "ARP request padded to 60 bytes",
            {
                let mut f = arp_frame();
                f.resize(60, 0);
                f
            },
            Reason::PassNonIp,
        ),
        passed(
            "802.1Q VLAN 100 IPv4 UDP to a routed destination",
            tagged(ETH_P_IPV4, &ipv4(DST_V4, IPPROTO_UDP).build(&udp(1, 2, &payload(8)))),
            Reason::PassVlan,
        ),
        passed(
            "802.1Q VLAN 100 IPv6 UDP hop limit 1",
            tagged(ETH_P_IPV6, &ipv6(DST_V6, IPPROTO_UDP).hop_limit(1).build(&udp(1, 2, &[]))),
            Reason::PassVlan,
        ),
    ];
    check_all(&h, "non-IP and VLAN", &fixtures);
}

// ---------------------------------------------------------------------------------------------
// MTU.
// ---------------------------------------------------------------------------------------------

#[test]
fn packet_larger_than_next_hop_mtu_passes_mtu_unchanged() {
    let mut h = Harness::load();
    // The egress MTU is the next hop's, not the ingress interface's (1500).
    let nh = h.encap_via(1, TX_SLOT, 1400);
    h.nexthop(1, &nh);
    h.route(0, Ipv4Addr::new(198, 51, 100, 0).into(), 24, 1);
    h.route(0, Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0).into(), 48, 1);
    // IP datagram lengths (what the MTU limits), not frame lengths.
    let v4_of = |ip_len: usize| {
        ipv4(DST_V4, IPPROTO_UDP).dont_fragment().frame(&udp(1, 2, &payload(ip_len - IPV4_HLEN - UDP_HLEN)))
    };
    let v6_of = |ip_len: usize| ipv6(DST_V6, IPPROTO_UDP).frame(&udp(1, 2, &payload(ip_len - IPV6_HLEN - UDP_HLEN)));
    let oversized_ttl_1 =
        ipv4(DST_V4, IPPROTO_UDP).ttl(1).dont_fragment().frame(&udp(1, 2, &payload(1401 - IPV4_HLEN - UDP_HLEN)));
    let fixtures = [
        forwarded("IPv4 of exactly the MTU (1400)", v4_of(1400), 1, &nh),
        passed("IPv4 one byte above the MTU (1401)", v4_of(1401), Reason::PassMtu),
        passed("IPv4 of the ingress MTU (1500)", v4_of(1500), Reason::PassMtu),
        // Expiry is checked before the MTU: the sender learns about the TTL, as from a router
        // that never got as far as fragmenting.
        time_exceeded("IPv4 one byte above the MTU with TTL 1", oversized_ttl_1, &iface(0)),
        forwarded("IPv6 of exactly the MTU (1400)", v6_of(1400), 1, &nh),
        passed("IPv6 one byte above the MTU (1401)", v6_of(1401), Reason::PassMtu),
        passed("IPv6 of the ingress MTU (1500)", v6_of(1500), Reason::PassMtu),
    ];
    check_all(&h, "next-hop MTU", &fixtures);
}

// ---------------------------------------------------------------------------------------------
// TX ports.
// ---------------------------------------------------------------------------------------------

#[test]
fn next_hop_without_tx_port_drops_no_tx_port() {
    let mut h = Harness::load();
    // Slot 1 sends through a TX_PORTS entry never written; slot 2 through one the server cleared
    // (ifindex 0) after it had been set.
    let absent = h.encap_via(1, TX_SLOT_ABSENT, 1500);
    h.nexthop(1, &absent);
    let cleared_slot = TX_SLOT_ABSENT + 1;
    let lo = h.lo;
    h.tx_port(cleared_slot, lo);
    h.tx_port(cleared_slot, 0);
    let cleared = h.encap_via(2, cleared_slot, 1500);
    h.nexthop(2, &cleared);
    h.route(0, Ipv4Addr::new(198, 51, 100, 0).into(), 24, 1);
    h.route(0, Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0).into(), 48, 1);
    h.route(0, Ipv4Addr::new(203, 0, 113, 0).into(), 24, 2);
    h.route(0, Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 0).into(), 48, 2);
    // The frame is already rewritten when the redirect fails and it is dropped: its bytes do not
    // matter, only that it is not handed on and not counted as sent through the next hop.
    let no_port = |d: &str, f: Vec<u8>| Fixture {
        verdict: XDP_DROP,
        output: Output::Unspecified("dropped after the rewrite"),
        ..passed(d, f, Reason::DropNoTxPort)
    };
    let fixtures = [
        no_port("IPv4 via a TX slot never set", v4_udp(DST_V4, 64, 1)),
        no_port("IPv6 via a TX slot never set", v6_udp(DST_V6, 64, 1)),
        no_port("IPv4 via a cleared TX slot", v4_udp(OTHER_V4, 64, 1)),
        no_port("IPv6 via a cleared TX slot", v6_udp(OTHER_V6, 64, 1)),
    ];
    check_all(&h, "missing TX port", &fixtures);
}
