//! Fixture tests of the real XDP ingress program (`dp_xdp_ingress` in the embedded `EBPF_OBJECT`),
//! run in the kernel through BPF_PROG_TEST_RUN.
//!
//! Every fixture is a hand-built frame plus the verdict and the single [`Reason`] the program must
//! count for it. The tests read the counters the program itself writes (`IFACE_STATS` for the
//! registered slot, `UNKNOWN_IFACE_STATS` otherwise), so they check the parser and the
//! interface/stats stages together, through the same maps the server reads.
//!
//! No route, next hop or TX port is ever installed here (forwarding has its own fixtures in
//! `xdp_forward_fixtures.rs`), so a frame the parser accepts ends at the first stage after it
//! that applies: non-IP -> `PassNonIp`, VLAN-tagged IP -> `PassVlan`, multicast/broadcast/
//! link-local destination -> `PassMulticast`, any other IP packet in a frame not addressed to the
//! interface's MAC -> `PassOtherHost`, and the rest (non-first fragments included: they are
//! routed like any other) -> `NoRoute`. The fixtures' frames go to the MAC the interface is
//! registered with, their addresses (192.0.2.0/24, 198.51.100.0/24, 2001:db8::/32) are unicast,
//! and the registered interface has no address, so a well-formed untagged IP fixture counts
//! `NoRoute`.
//!
//! Covered:
//! - well-formed IPv4 and IPv6 with UDP, TCP, ICMP/ICMPv6, IPv4 options (every IHL from 6 to 15),
//!   IPv6 extension headers (hop-by-hop, destination options, routing, AH, fragment), first and
//!   non-first fragments, Ethernet padding, one and two VLAN tags, and non-IP frames;
//! - malformed headers: too many VLAN tags, bad versions, bad IHL, lengths that disagree with the
//!   frame, over-long extension header chains;
//! - truncation sweeps: well-formed frames cut at every length, both with their original length
//!   fields and with the IP length fields fixed up to match the cut;
//! - frames on an ifindex the server has not registered;
//! - frames for another MAC (unicast, broadcast, multicast): every check before the MAC check
//!   still decides first, and only routable IP counts `PassOtherHost`;
//! - deterministic pseudo-random frames, each of which must be passed and counted exactly once.
//!
//! BPF_PROG_TEST_RUN without `ctx_in` runs an XDP program as if it had received the frame on the
//! loopback device of the caller's network namespace, so "registering an interface" here means
//! entering the loopback ifindex in `INTERFACES` with a slot, as the server does on attach. Each test loads its own `Ebpf` instance: maps are
//! created fresh per load and nothing is pinned or attached, so the tests run in parallel in one
//! process without seeing each other's counters.

use std::net::{Ipv4Addr, Ipv6Addr};

use aya::{programs::ProgramError, sys::SyscallError};
use dataplane_common::{maps as map_names, route::IFACE_PRESENT, InterfaceConfig, InterfaceStats, Reason};
use integration::{
    checksum,
    counters::{counted_once, describe_stats},
    harness::{self, XDP_PASS},
    packet::{
        self, concat, icmp, icmp_checksummed, ipv6_ah, ipv6_fragment, ipv6_options, ipv6_routing, payload,
        set_ipv4_total_len, set_ipv6_payload_len, tcp, udp, Eth, Ipv4, Ipv6, ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q,
        ETH_P_ARP, ETH_P_IPV4, ETH_P_IPV6, ETH_P_LLDP, IPPROTO_AH, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, IPPROTO_GRE,
        IPPROTO_HOPOPTS, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_ROUTING, IPPROTO_TCP, IPPROTO_UDP, IPV4_HLEN, IPV6_HLEN,
        TCP_ACK, TCP_HLEN, TCP_PSH, TCP_SYN, VLAN_HLEN,
    },
    Harness, Rng,
};

/// Any slot other than 0 will do; a non-zero one catches a program that ignores the slot lookup.
const SLOT: u32 = 5;

const MAC_DST: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
const MAC_SRC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
const V4_SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const V4_DST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const V6_SRC: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const V6_DST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

// ---------------------------------------------------------------------------------------------
// Frames built with the kit's builder, with these fixtures' addresses. L4 checksums are left
// zero: the parser never reads them, and a wrong value would not change any expectation.
// ---------------------------------------------------------------------------------------------

/// Untagged Ethernet header.
fn eth(ethertype: u16) -> Vec<u8> {
    eth_tagged(&[], ethertype)
}

/// Ethernet header with VLAN tags, outermost first, each `(tpid, vid)`; `ethertype` follows the
/// last tag.
fn eth_tagged(tags: &[(u16, u16)], ethertype: u16) -> Vec<u8> {
    Eth::new(MAC_DST, MAC_SRC, ethertype).tags(tags).build()
}

fn ipv4(proto: u8) -> Ipv4 {
    Ipv4::new(V4_SRC, V4_DST, proto)
}

fn ipv6(next: u8) -> Ipv6 {
    Ipv6::new(V6_SRC, V6_DST, next)
}

fn icmp_echo_request(payload: &[u8]) -> Vec<u8> {
    icmp_checksummed(icmp(8, 0, 0x0001_0001, payload))
}

fn icmpv6_echo_request(payload: &[u8]) -> Vec<u8> {
    icmp(128, 0, 0x0001_0001, payload)
}

/// ARP request "who has 198.51.100.2, tell 192.0.2.1".
fn arp_request() -> Vec<u8> {
    packet::arp_request(MAC_SRC, V4_SRC, V4_DST)
}

/// A short LLDP PDU: chassis id, port id, TTL, end.
fn lldp_pdu() -> Vec<u8> {
    let mut l = vec![0x02, 0x07, 0x04];
    l.extend_from_slice(&MAC_SRC);
    l.extend_from_slice(&[0x04, 0x03, 0x05, b'p', b'1', 0x06, 0x02, 0x00, 0x78, 0x00, 0x00]);
    l
}

/// Router Alert (RFC 2113): one 32-bit option word, so IHL 6.
const IPV4_OPT_ROUTER_ALERT: [u8; 4] = [148, 4, 0, 0];

/// Record Route with room for nine addresses plus End of Options: 40 bytes, so IHL 15.
fn ipv4_opt_record_route_full() -> Vec<u8> {
    let mut o = vec![7, 39, 4];
    o.resize(39, 0);
    o.push(0); // End of Options List
    o
}

/// Two option words: NOP, NOP, Router Alert, NOP, End of Options. IHL 7.
fn ipv4_opts_two_words() -> Vec<u8> {
    let mut o = vec![1, 1];
    o.extend_from_slice(&IPV4_OPT_ROUTER_ALERT);
    o.extend_from_slice(&[1, 0]); // NOP, End of Options List
    o
}

// ---------------------------------------------------------------------------------------------
// Harness: the kit's, one loaded program and its fresh maps per test.
// ---------------------------------------------------------------------------------------------

/// One fixture: a frame and what the program must do with it.
struct Fixture {
    description: String,
    frame: Vec<u8>,
    verdict: u32,
    reason: Reason,
}

/// A fixture the program must pass (with no routes installed, every path of the ingress pipeline
/// passes).
fn pass(description: impl Into<String>, frame: Vec<u8>, reason: Reason) -> Fixture {
    Fixture { description: description.into(), frame, verdict: XDP_PASS, reason }
}

/// Which counters entry a run is expected to land in.
#[derive(Clone, Copy, Debug)]
enum Counted {
    /// `IFACE_STATS[SLOT]`.
    Slot,
    /// `UNKNOWN_IFACE_STATS[0]`.
    Unknown,
}

/// Loads the kit's harness and registers the test-run ifindex under [`SLOT`], as the server does
/// for an owned interface.
fn load_registered() -> Harness {
    let mut h = Harness::load();
    let lo = h.lo;
    register(&mut h, lo, SLOT);
    h
}

/// Enters `ifindex` in `INTERFACES` the way the server's attach does: VRF 0, MTU 1500, and no
/// address (flags: present only), so no fixture can be taken for traffic to the interface itself.
fn register(h: &mut Harness, ifindex: u32, slot: u32) {
    let cfg = InterfaceConfig {
        slot,
        vrf: 0,
        mtu: 1500,
        flags: IFACE_PRESENT,
        mac: MAC_DST,
        _pad: [0; 2],
        ipv4: [0; 4],
        ipv6: [0; 16],
        table: 0,
    };
    h.interface_entry(ifindex, cfg);
}

/// Runs `fx` and checks its verdict and that exactly one packet of its length was counted, under
/// exactly its reason, in the `counted` entry and nowhere else.
fn check(h: &Harness, fx: &Fixture, counted: Counted) -> Result<(), String> {
    let obs = h.observe(SLOT, &fx.frame);
    let expected = counted_once(fx.frame.len(), fx.reason);
    let (want_slot, want_unknown) = match counted {
        Counted::Slot => (expected, InterfaceStats::ZERO),
        Counted::Unknown => (InterfaceStats::ZERO, expected),
    };
    if obs.verdict() == Some(fx.verdict) && obs.iface == want_slot && obs.unknown == want_unknown {
        return Ok(());
    }
    Err(format!(
        "{} ({} bytes): expected verdict {} and {} counted in {counted:?}; observed {}, slot \
         delta {}, unknown delta {}",
        fx.description,
        fx.frame.len(),
        fx.verdict,
        fx.reason.name(),
        obs.describe_result(),
        describe_stats(&obs.iface),
        describe_stats(&obs.unknown),
    ))
}

/// Checks that the kernel refuses to run `frame` and that nothing was counted.
///
/// BPF_PROG_TEST_RUN for XDP rejects data shorter than an Ethernet header (ETH_HLEN) with
/// EINVAL before the program runs, so the parser's `EthTruncated` path cannot be reached this
/// way; what can be checked is that such input never reaches the counters.
fn check_refused(h: &Harness, description: &str, frame: &[u8]) -> Result<(), String> {
    let obs = h.observe(SLOT, frame);
    let refused = matches!(
        &obs.result,
        Err(ProgramError::SyscallError(SyscallError { io_error, .. }))
            if io_error.raw_os_error() == Some(libc::EINVAL)
    );
    if refused && obs.iface == InterfaceStats::ZERO && obs.unknown == InterfaceStats::ZERO {
        return Ok(());
    }
    Err(format!(
        "{description} ({} bytes): expected the kernel to refuse the run with EINVAL and no \
         counter to change; observed {}, slot delta {}, unknown delta {}",
        frame.len(),
        obs.describe_result(),
        describe_stats(&obs.iface),
        describe_stats(&obs.unknown),
    ))
}

/// Runs every fixture (not stopping at the first failure) and fails listing every mismatch.
fn check_all(h: &Harness, group: &str, fixtures: &[Fixture], counted: Counted) {
    harness::check_all(group, fixtures, |fx| check(h, fx, counted));
}

// ---------------------------------------------------------------------------------------------
// Well-formed frames.
// ---------------------------------------------------------------------------------------------

#[test]
fn xdp_ingress_well_formed_ip_without_route_counts_no_route() {
    let h = load_registered();
    // Parsed all the way, unicast, not for the (address-less) interface: the route lookup is the
    // stage that lets each of these go. Any parse reason here means the parser rejected a
    // well-formed frame.
    let v4 = |proto: u8, l4: Vec<u8>| concat(&[&eth(ETH_P_IPV4), &ipv4(proto).build(&l4)]);
    let v6 = |next: u8, rest: Vec<u8>| concat(&[&eth(ETH_P_IPV6), &ipv6(next).build(&rest)]);
    let fixtures = [
        pass("IPv4 UDP (DNS query)", v4(IPPROTO_UDP, udp(53000, 53, &payload(32))), Reason::NoRoute),
        pass("IPv4 UDP with empty payload", v4(IPPROTO_UDP, udp(40000, 9, &[])), Reason::NoRoute),
        pass("IPv4 TCP SYN", v4(IPPROTO_TCP, tcp(40000, 443, TCP_SYN, &[])), Reason::NoRoute),
        pass(
            "IPv4 TCP PSH/ACK with data",
            v4(IPPROTO_TCP, tcp(443, 40000, TCP_PSH | TCP_ACK, &payload(100))),
            Reason::NoRoute,
        ),
        pass("IPv4 ICMP echo request", v4(IPPROTO_ICMP, icmp_echo_request(&payload(56))), Reason::NoRoute),
        pass(
            // The parser only reads upper layers it knows; GRE's payload is never looked at.
            "IPv4 GRE with no payload (upper layer the parser does not read)",
            v4(IPPROTO_GRE, Vec::new()),
            Reason::NoRoute,
        ),
        pass(
            "IPv4 with IHL 6 (Router Alert) then UDP",
            concat(&[
                &eth(ETH_P_IPV4),
                &ipv4(IPPROTO_UDP).options(&IPV4_OPT_ROUTER_ALERT).build(&udp(1000, 2000, &payload(8))),
            ]),
            Reason::NoRoute,
        ),
        pass(
            "IPv4 with IHL 15 (full Record Route) then TCP",
            concat(&[
                &eth(ETH_P_IPV4),
                &ipv4(IPPROTO_TCP).options(&ipv4_opt_record_route_full()).build(&tcp(1, 2, TCP_SYN, &[])),
            ]),
            Reason::NoRoute,
        ),
        pass(
            // A first fragment (offset 0, MF set) still carries the upper-layer header.
            "IPv4 first fragment (MF, offset 0) UDP",
            concat(&[&eth(ETH_P_IPV4), &ipv4(IPPROTO_UDP).fragment(0, true).build(&udp(5000, 6000, &payload(64)))]),
            Reason::NoRoute,
        ),
        pass(
            // Short IPv4 packets are padded to the 60-byte Ethernet minimum; the total length,
            // not the frame, ends the packet.
            "IPv4 UDP padded to the 60-byte Ethernet minimum",
            {
                let mut f = v4(IPPROTO_UDP, udp(7, 7, &[0xab; 2]));
                f.resize(60, 0);
                f
            },
            Reason::NoRoute,
        ),
        pass("IPv6 UDP", v6(IPPROTO_UDP, udp(53000, 53, &payload(32))), Reason::NoRoute),
        pass("IPv6 TCP SYN", v6(IPPROTO_TCP, tcp(40000, 443, TCP_SYN, &[])), Reason::NoRoute),
        pass("IPv6 ICMPv6 echo request", v6(IPPROTO_ICMPV6, icmpv6_echo_request(&payload(56))), Reason::NoRoute),
        pass(
            "IPv6 hop-by-hop then TCP",
            v6(IPPROTO_HOPOPTS, concat(&[&ipv6_options(IPPROTO_TCP, 0), &tcp(40000, 80, TCP_SYN, &[])])),
            Reason::NoRoute,
        ),
        pass(
            "IPv6 hop-by-hop (24 bytes) then UDP",
            v6(IPPROTO_HOPOPTS, concat(&[&ipv6_options(IPPROTO_UDP, 2), &udp(1, 2, &payload(4))])),
            Reason::NoRoute,
        ),
        pass(
            "IPv6 hop-by-hop, routing, destination options then UDP",
            v6(
                IPPROTO_HOPOPTS,
                concat(&[
                    &ipv6_options(IPPROTO_ROUTING, 0),
                    &ipv6_routing(IPPROTO_DSTOPTS),
                    &ipv6_options(IPPROTO_UDP, 1),
                    &udp(1, 2, &payload(16)),
                ]),
            ),
            Reason::NoRoute,
        ),
        pass(
            // AH counts its length in 32-bit words minus 2, unlike the 8-byte-unit headers: a
            // parser using the wrong unit lands inside the ICV instead of on the TCP header.
            "IPv6 AH then TCP",
            v6(IPPROTO_AH, concat(&[&ipv6_ah(IPPROTO_TCP, 0x0000_1000), &tcp(22, 40000, TCP_ACK, &payload(10))])),
            Reason::NoRoute,
        ),
        pass(
            "IPv6 first fragment (offset 0, M set) then UDP",
            v6(
                IPPROTO_FRAGMENT,
                concat(&[&ipv6_fragment(IPPROTO_UDP, 0, true, 0xdead_beef), &udp(1, 2, &payload(32))]),
            ),
            Reason::NoRoute,
        ),
        pass(
            "IPv6 five chained destination options headers then UDP",
            v6(IPPROTO_DSTOPTS, {
                let mut rest = Vec::new();
                for i in 0..5 {
                    rest.extend(ipv6_options(if i < 4 { IPPROTO_DSTOPTS } else { IPPROTO_UDP }, 0));
                }
                rest.extend(udp(1, 2, &payload(8)));
                rest
            }),
            Reason::NoRoute,
        ),
    ];
    check_all(&h, "well-formed IP, no route", &fixtures, Counted::Slot);
}

#[test]
fn xdp_ingress_ipv4_with_options_without_route_counts_no_route() {
    let h = load_registered();
    // Every IHL with options, so the options bound check is exercised at each possible header end.
    let fixtures: Vec<Fixture> = (6u8..=15)
        .map(|ihl| {
            let options = vec![1u8; (usize::from(ihl) - 5) * 4]; // NOPs
            pass(
                format!("IPv4 IHL {ihl} ({} option bytes) then TCP", options.len()),
                concat(&[&eth(ETH_P_IPV4), &ipv4(IPPROTO_TCP).options(&options).build(&tcp(1, 2, TCP_SYN, &[]))]),
                Reason::NoRoute,
            )
        })
        .collect();
    check_all(&h, "IPv4 options", &fixtures, Counted::Slot);
}

#[test]
fn xdp_ingress_non_first_fragments_without_route_count_no_route() {
    let h = load_registered();
    // Non-first fragments have no upper-layer header, yet they are routed on their addresses
    // like any other packet: the parser must stop before looking for an L4 header (the short
    // ones would count L4Truncated otherwise) and hand them on to routing, which finds nothing.
    // A tagged one stops at the VLAN check first, like any tagged IP packet.
    let fixtures = [
        pass(
            "IPv4 middle fragment (offset 185, MF) of a UDP datagram",
            concat(&[&eth(ETH_P_IPV4), &ipv4(IPPROTO_UDP).fragment(185, true).build(&payload(1480))]),
            Reason::NoRoute,
        ),
        pass(
            // Shorter than any L4 header: shows the parser does not look for one in a fragment.
            "IPv4 last fragment (offset 1, no MF) with 3 data bytes",
            concat(&[&eth(ETH_P_IPV4), &ipv4(IPPROTO_TCP).fragment(1, false).build(&payload(3))]),
            Reason::NoRoute,
        ),
        pass(
            "IPv4 last fragment with options (IHL 6)",
            concat(&[
                &eth(ETH_P_IPV4),
                &ipv4(IPPROTO_UDP).options(&IPV4_OPT_ROUTER_ALERT).fragment(2, false).build(&payload(16)),
            ]),
            Reason::NoRoute,
        ),
        pass(
            "IPv6 middle fragment (offset 181, M) of a UDP datagram",
            concat(&[
                &eth(ETH_P_IPV6),
                &ipv6(IPPROTO_FRAGMENT)
                    .build(&concat(&[&ipv6_fragment(IPPROTO_UDP, 181, true, 0xdead_beef), &payload(1448)])),
            ]),
            Reason::NoRoute,
        ),
        pass(
            "IPv6 last fragment with 2 data bytes",
            concat(&[
                &eth(ETH_P_IPV6),
                &ipv6(IPPROTO_FRAGMENT)
                    .build(&concat(&[&ipv6_fragment(IPPROTO_TCP, 3, false, 0xdead_beef), &payload(2)])),
            ]),
            Reason::NoRoute,
        ),
        pass(
            "IPv6 hop-by-hop then non-first fragment of an ICMPv6 message",
            concat(&[
                &eth(ETH_P_IPV6),
                &ipv6(IPPROTO_HOPOPTS).build(&concat(&[
                    &ipv6_options(IPPROTO_FRAGMENT, 0),
                    &ipv6_fragment(IPPROTO_ICMPV6, 10, true, 0xdead_beef),
                    &payload(64),
                ])),
            ]),
            Reason::NoRoute,
        ),
        pass(
            "802.1Q VLAN 10 IPv4 non-first fragment",
            concat(&[
                &eth_tagged(&[(ETH_P_8021Q, 10)], ETH_P_IPV4),
                &ipv4(IPPROTO_UDP).fragment(100, true).build(&payload(64)),
            ]),
            Reason::PassVlan,
        ),
    ];
    check_all(&h, "non-first fragments", &fixtures, Counted::Slot);
}

#[test]
fn xdp_ingress_vlan_tagged_frames_up_to_two_tags_count_pass_vlan() {
    let h = load_registered();
    // Sub-interfaces are not routed: tagged IP parses (one or two tags, IPv6 extension headers
    // behind them) and is then handed to the kernel as PassVlan; tagged non-IP is PassNonIp, the
    // non-IP check coming first. VID 0 (priority tag) still counts as a tag.
    let fixtures = [
        pass(
            "802.1Q VLAN 100 IPv4 UDP",
            concat(&[
                &eth_tagged(&[(ETH_P_8021Q, 100)], ETH_P_IPV4),
                &ipv4(IPPROTO_UDP).build(&udp(1, 2, &payload(20))),
            ]),
            Reason::PassVlan,
        ),
        pass(
            "802.1ad S-tag only, IPv4 ICMP",
            concat(&[
                &eth_tagged(&[(ETH_P_8021AD, 7)], ETH_P_IPV4),
                &ipv4(IPPROTO_ICMP).build(&icmp_echo_request(&payload(8))),
            ]),
            Reason::PassVlan,
        ),
        pass(
            "QinQ (802.1ad 100 + 802.1Q 200) IPv6 UDP",
            concat(&[
                &eth_tagged(&[(ETH_P_8021AD, 100), (ETH_P_8021Q, 200)], ETH_P_IPV6),
                &ipv6(IPPROTO_UDP).build(&udp(1, 2, &payload(20))),
            ]),
            Reason::PassVlan,
        ),
        pass(
            "QinQ IPv6 hop-by-hop then TCP",
            concat(&[
                &eth_tagged(&[(ETH_P_8021AD, 100), (ETH_P_8021Q, 200)], ETH_P_IPV6),
                &ipv6(IPPROTO_HOPOPTS).build(&concat(&[&ipv6_options(IPPROTO_TCP, 0), &tcp(1, 2, TCP_SYN, &[])])),
            ]),
            Reason::PassVlan,
        ),
        pass(
            "QinQ ARP",
            concat(&[&eth_tagged(&[(ETH_P_8021AD, 100), (ETH_P_8021Q, 200)], ETH_P_ARP), &arp_request()]),
            Reason::PassNonIp,
        ),
        pass(
            "802.1Q VLAN 0 (priority tag) IPv6 ICMPv6",
            concat(&[
                &eth_tagged(&[(ETH_P_8021Q, 0)], ETH_P_IPV6),
                &ipv6(IPPROTO_ICMPV6).build(&icmpv6_echo_request(&[])),
            ]),
            Reason::PassVlan,
        ),
    ];
    check_all(&h, "VLAN", &fixtures, Counted::Slot);
}

#[test]
fn xdp_ingress_three_vlan_tags_count_vlan_too_deep() {
    let h = load_registered();
    let fixtures = [
        pass(
            "802.1ad + 802.1Q + 802.1Q IPv4 UDP",
            concat(&[
                &eth_tagged(&[(ETH_P_8021AD, 1), (ETH_P_8021Q, 2), (ETH_P_8021Q, 3)], ETH_P_IPV4),
                &ipv4(IPPROTO_UDP).build(&udp(1, 2, &payload(8))),
            ]),
            Reason::VlanTooDeep,
        ),
        pass(
            "three 802.1Q tags IPv6 UDP",
            concat(&[
                &eth_tagged(&[(ETH_P_8021Q, 1), (ETH_P_8021Q, 2), (ETH_P_8021Q, 3)], ETH_P_IPV6),
                &ipv6(IPPROTO_UDP).build(&udp(1, 2, &payload(8))),
            ]),
            Reason::VlanTooDeep,
        ),
        pass(
            // The third TPID is already in the second tag, so the third tag's absence does not
            // matter: the stack is too deep whatever follows.
            "two tags announcing a third that is cut off",
            eth_tagged(&[(ETH_P_8021AD, 1), (ETH_P_8021Q, 2)], ETH_P_8021Q),
            Reason::VlanTooDeep,
        ),
    ];
    check_all(&h, "VLAN too deep", &fixtures, Counted::Slot);
}

#[test]
fn xdp_ingress_non_ip_frames_pass_as_non_ip() {
    let h = load_registered();
    let fixtures = [
        pass("ARP request", concat(&[&eth(ETH_P_ARP), &arp_request()]), Reason::PassNonIp),
        pass(
            "ARP request padded to 60 bytes",
            {
                let mut f = concat(&[&eth(ETH_P_ARP), &arp_request()]);
                f.resize(60, 0);
                f
            },
            Reason::PassNonIp,
        ),
        pass("LLDP", concat(&[&eth(ETH_P_LLDP), &lldp_pdu()]), Reason::PassNonIp),
        pass("bare Ethernet header with an unknown ethertype", eth(0x88b5), Reason::PassNonIp),
        pass(
            "802.1Q VLAN 5 ARP",
            concat(&[&eth_tagged(&[(ETH_P_8021Q, 5)], ETH_P_ARP), &arp_request()]),
            Reason::PassNonIp,
        ),
    ];
    check_all(&h, "non-IP", &fixtures, Counted::Slot);
}

/// `frame` with its Ethernet destination replaced by `mac`.
fn to_mac(mac: [u8; 6], mut frame: Vec<u8>) -> Vec<u8> {
    frame[..6].copy_from_slice(&mac);
    frame
}

#[test]
fn xdp_ingress_frames_for_another_mac_count_other_host_only_when_routable() {
    let h = load_registered();
    // The interface is registered with MAC_DST; these differ from it in the last byte, the first
    // byte, everywhere (broadcast), and in being a group address.
    const NEIGHBOUR: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x03];
    const FIRST_BYTE: [u8; 6] = [0x06, 0x00, 0x00, 0x00, 0x00, 0x02];
    const BROADCAST: [u8; 6] = [0xff; 6];
    const V4_MCAST_MAC: [u8; 6] = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01];
    const V6_MCAST_MAC: [u8; 6] = [0x33, 0x33, 0x00, 0x00, 0x00, 0x01];
    let v4 = || concat(&[&eth(ETH_P_IPV4), &ipv4(IPPROTO_UDP).build(&udp(1, 2, &payload(8)))]);
    let v6 = || concat(&[&eth(ETH_P_IPV6), &ipv6(IPPROTO_UDP).build(&udp(1, 2, &payload(8)))]);
    // The same packets to a multicast group (the IPv4 header checksum refreshed).
    let v4_group = || {
        let mut f = v4();
        f[ETH_HLEN + 16..ETH_HLEN + 20].copy_from_slice(&[224, 0, 0, 1]);
        f[ETH_HLEN + 10..ETH_HLEN + 12].copy_from_slice(&[0, 0]);
        let csum = checksum::internet(&f[ETH_HLEN..ETH_HLEN + IPV4_HLEN]);
        f[ETH_HLEN + 10..ETH_HLEN + 12].copy_from_slice(&csum.to_be_bytes());
        f
    };
    let v6_group = || {
        let mut f = v6();
        f[ETH_HLEN + 24..ETH_HLEN + 40].copy_from_slice(&"ff02::1".parse::<Ipv6Addr>().unwrap().octets());
        f
    };
    let other = |d: &str, f: Vec<u8>| pass(d, f, Reason::PassOtherHost);
    let fixtures = [
        other("IPv4 UDP to a neighbour's MAC", to_mac(NEIGHBOUR, v4())),
        other("IPv4 UDP to a MAC differing in its first byte", to_mac(FIRST_BYTE, v4())),
        other("IPv4 UDP (unicast address) to the broadcast MAC", to_mac(BROADCAST, v4())),
        other("IPv4 UDP (unicast address) to a multicast MAC", to_mac(V4_MCAST_MAC, v4())),
        other("IPv6 UDP to a neighbour's MAC", to_mac(NEIGHBOUR, v6())),
        other("IPv6 UDP (unicast address) to the broadcast MAC", to_mac(BROADCAST, v6())),
        other("IPv6 UDP (unicast address) to a multicast MAC", to_mac(V6_MCAST_MAC, v6())),
        other(
            "IPv6 non-first fragment to a neighbour's MAC",
            to_mac(
                NEIGHBOUR,
                concat(&[
                    &eth(ETH_P_IPV6),
                    &ipv6(IPPROTO_FRAGMENT)
                        .build(&concat(&[&ipv6_fragment(IPPROTO_UDP, 8, true, 0xdead_beef), &payload(64)])),
                ]),
            ),
        ),
        // Decided before the MAC check.
        pass("IPv4 to 224.0.0.1 in its group's MAC", to_mac(V4_MCAST_MAC, v4_group()), Reason::PassMulticast),
        pass("IPv4 to 224.0.0.1 to a neighbour's MAC", to_mac(NEIGHBOUR, v4_group()), Reason::PassMulticast),
        pass("IPv6 to ff02::1 in its group's MAC", to_mac(V6_MCAST_MAC, v6_group()), Reason::PassMulticast),
        pass(
            "ARP request to the broadcast MAC",
            to_mac(BROADCAST, concat(&[&eth(ETH_P_ARP), &arp_request()])),
            Reason::PassNonIp,
        ),
        pass(
            "LLDP to the nearest-bridge group MAC",
            to_mac([0x01, 0x80, 0xc2, 0x00, 0x00, 0x0e], concat(&[&eth(ETH_P_LLDP), &lldp_pdu()])),
            Reason::PassNonIp,
        ),
        pass(
            "802.1Q VLAN 100 IPv4 UDP to a neighbour's MAC",
            to_mac(
                NEIGHBOUR,
                concat(&[
                    &eth_tagged(&[(ETH_P_8021Q, 100)], ETH_P_IPV4),
                    &ipv4(IPPROTO_UDP).build(&udp(1, 2, &payload(8))),
                ]),
            ),
            Reason::PassVlan,
        ),
        pass(
            "IPv4 version 5 to a neighbour's MAC",
            to_mac(NEIGHBOUR, concat(&[&eth(ETH_P_IPV4), &ipv4(IPPROTO_UDP).version(5).build(&udp(1, 2, &[]))])),
            Reason::Ipv4Malformed,
        ),
        pass(
            "IPv6 UDP header cut after 7 bytes to the broadcast MAC",
            to_mac(BROADCAST, concat(&[&eth(ETH_P_IPV6), &ipv6(IPPROTO_UDP).build(&udp(1, 2, &[])[..7])])),
            Reason::L4Truncated,
        ),
        // And the interface's own MAC goes on to the route lookup.
        pass("IPv4 UDP to the interface's MAC", to_mac(MAC_DST, v4()), Reason::NoRoute),
        pass("IPv6 UDP to the interface's MAC", to_mac(MAC_DST, v6()), Reason::NoRoute),
    ];
    check_all(&h, "frames for another MAC", &fixtures, Counted::Slot);
}

// ---------------------------------------------------------------------------------------------
// Malformed frames.
// ---------------------------------------------------------------------------------------------

#[test]
fn xdp_ingress_malformed_ipv4_counts_ipv4_malformed() {
    let h = load_registered();
    let udp_payload = udp(1, 2, &payload(16));
    let v4 = |hdr: Ipv4| concat(&[&eth(ETH_P_IPV4), &hdr.build(&udp_payload)]);
    let full_total = (IPV4_HLEN + udp_payload.len()) as u16;
    let fixtures = [
        pass("IPv4 version 5", v4(ipv4(IPPROTO_UDP).version(5)), Reason::Ipv4Malformed),
        pass("IPv6 version nibble in an 0x0800 frame", v4(ipv4(IPPROTO_UDP).version(6)), Reason::Ipv4Malformed),
        pass("IPv4 IHL 4", v4(ipv4(IPPROTO_UDP).ihl(4)), Reason::Ipv4Malformed),
        pass("IPv4 IHL 0", v4(ipv4(IPPROTO_UDP).ihl(0)), Reason::Ipv4Malformed),
        pass(
            "IPv4 total length one byte beyond the frame",
            v4(ipv4(IPPROTO_UDP).total_len(full_total + 1)),
            Reason::Ipv4Malformed,
        ),
        pass(
            "IPv4 total length 65535 in a short frame",
            v4(ipv4(IPPROTO_UDP).total_len(u16::MAX)),
            Reason::Ipv4Malformed,
        ),
        pass(
            "IPv4 total length 19, below the header length",
            v4(ipv4(IPPROTO_UDP).total_len(19)),
            Reason::Ipv4Malformed,
        ),
        pass("IPv4 total length 0", v4(ipv4(IPPROTO_UDP).total_len(0)), Reason::Ipv4Malformed),
        pass(
            "IPv4 IHL 15 with total length 40, below the header length",
            concat(&[
                &eth(ETH_P_IPV4),
                &ipv4(IPPROTO_UDP).options(&ipv4_opt_record_route_full()).total_len(40).build(&udp_payload),
            ]),
            Reason::Ipv4Malformed,
        ),
        pass(
            "802.1Q IPv4 total length beyond the frame",
            concat(&[
                &eth_tagged(&[(ETH_P_8021Q, 9)], ETH_P_IPV4),
                &ipv4(IPPROTO_UDP).total_len(full_total + 8).build(&udp_payload),
            ]),
            Reason::Ipv4Malformed,
        ),
    ];
    check_all(&h, "malformed IPv4", &fixtures, Counted::Slot);
}

#[test]
fn xdp_ingress_malformed_ipv6_counts_ipv6_malformed() {
    let h = load_registered();
    let udp_payload = udp(1, 2, &payload(16));
    let chained_dstopts = |count: usize| {
        let mut rest = Vec::new();
        for i in 0..count {
            rest.extend(ipv6_options(if i + 1 < count { IPPROTO_DSTOPTS } else { IPPROTO_UDP }, 0));
        }
        rest.extend(udp(1, 2, &payload(8)));
        concat(&[&eth(ETH_P_IPV6), &ipv6(IPPROTO_DSTOPTS).build(&rest)])
    };
    let fixtures = [
        pass(
            "IPv4 version nibble in an 0x86dd frame",
            concat(&[&eth(ETH_P_IPV6), &ipv6(IPPROTO_UDP).version(4).build(&udp_payload)]),
            Reason::Ipv6Malformed,
        ),
        pass(
            "IPv6 version 0",
            concat(&[&eth(ETH_P_IPV6), &ipv6(IPPROTO_UDP).version(0).build(&udp_payload)]),
            Reason::Ipv6Malformed,
        ),
        pass(
            "IPv6 payload length one byte beyond the frame",
            concat(&[
                &eth(ETH_P_IPV6),
                &ipv6(IPPROTO_UDP).payload_len(udp_payload.len() as u16 + 1).build(&udp_payload),
            ]),
            Reason::Ipv6Malformed,
        ),
        pass(
            "IPv6 payload length 65535 in a short frame",
            concat(&[&eth(ETH_P_IPV6), &ipv6(IPPROTO_UDP).payload_len(u16::MAX).build(&udp_payload)]),
            Reason::Ipv6Malformed,
        ),
        pass("IPv6 seven chained destination options headers", chained_dstopts(7), Reason::Ipv6Malformed),
        pass(
            // The chain is walked only within the first 512 bytes of the frame: a chain that ends
            // beyond that is one "longer than we walk".
            "IPv6 hop-by-hop of 512 bytes putting the upper layer past the walk limit",
            concat(&[
                &eth(ETH_P_IPV6),
                &ipv6(IPPROTO_HOPOPTS).build(&concat(&[&ipv6_options(IPPROTO_UDP, 63), &udp(1, 2, &[])])),
            ]),
            Reason::Ipv6Malformed,
        ),
        pass(
            "QinQ IPv6 payload length beyond the frame",
            concat(&[
                &eth_tagged(&[(ETH_P_8021AD, 1), (ETH_P_8021Q, 2)], ETH_P_IPV6),
                &ipv6(IPPROTO_UDP).payload_len(udp_payload.len() as u16 + 8).build(&udp_payload),
            ]),
            Reason::Ipv6Malformed,
        ),
    ];
    check_all(&h, "malformed IPv6", &fixtures, Counted::Slot);
}

#[test]
fn xdp_ingress_header_cut_within_consistent_ip_length_counts_truncated() {
    let h = load_registered();
    // The IP length fields agree with the (short) frame, so the L3 header is consistent and the
    // packet simply ends inside the next header.
    let fixtures = [
        pass(
            "IPv4 UDP header cut after 4 bytes, total length 24",
            concat(&[&eth(ETH_P_IPV4), &ipv4(IPPROTO_UDP).build(&udp(1, 2, &[])[..4])]),
            Reason::L4Truncated,
        ),
        pass(
            "IPv4 UDP with no L4 bytes, total length 20",
            concat(&[&eth(ETH_P_IPV4), &ipv4(IPPROTO_UDP).build(&[])]),
            Reason::L4Truncated,
        ),
        pass(
            "IPv4 TCP header cut after 19 bytes",
            concat(&[&eth(ETH_P_IPV4), &ipv4(IPPROTO_TCP).build(&tcp(1, 2, TCP_SYN, &[])[..19])]),
            Reason::L4Truncated,
        ),
        pass(
            "IPv4 with options, TCP header cut after 10 bytes",
            concat(&[
                &eth(ETH_P_IPV4),
                &ipv4(IPPROTO_TCP).options(&ipv4_opts_two_words()).build(&tcp(1, 2, TCP_SYN, &[])[..10]),
            ]),
            Reason::L4Truncated,
        ),
        pass(
            "IPv4 ICMP header cut after 3 bytes",
            concat(&[&eth(ETH_P_IPV4), &ipv4(IPPROTO_ICMP).build(&icmp_echo_request(&[])[..3])]),
            Reason::L4Truncated,
        ),
        pass(
            "IPv6 UDP header cut after 7 bytes",
            concat(&[&eth(ETH_P_IPV6), &ipv6(IPPROTO_UDP).build(&udp(1, 2, &[])[..7])]),
            Reason::L4Truncated,
        ),
        pass(
            "IPv6 ICMPv6 header cut after 2 bytes",
            concat(&[&eth(ETH_P_IPV6), &ipv6(IPPROTO_ICMPV6).build(&icmpv6_echo_request(&[])[..2])]),
            Reason::L4Truncated,
        ),
        pass(
            "IPv6 hop-by-hop then TCP header cut after 12 bytes",
            concat(&[
                &eth(ETH_P_IPV6),
                &ipv6(IPPROTO_HOPOPTS).build(&concat(&[&ipv6_options(IPPROTO_TCP, 0), &tcp(1, 2, TCP_SYN, &[])[..12]])),
            ]),
            Reason::L4Truncated,
        ),
        pass(
            "QinQ IPv6 UDP with no L4 bytes, payload length 0",
            concat(&[&eth_tagged(&[(ETH_P_8021AD, 1), (ETH_P_8021Q, 2)], ETH_P_IPV6), &ipv6(IPPROTO_UDP).build(&[])]),
            Reason::L4Truncated,
        ),
        pass(
            "IPv6 hop-by-hop header cut after 1 byte, payload length 1",
            concat(&[&eth(ETH_P_IPV6), &ipv6(IPPROTO_HOPOPTS).build(&ipv6_options(IPPROTO_TCP, 0)[..1])]),
            Reason::Ipv6Truncated,
        ),
        pass(
            "IPv6 fragment header cut after 7 bytes, payload length 7",
            concat(&[
                &eth(ETH_P_IPV6),
                &ipv6(IPPROTO_FRAGMENT).build(&ipv6_fragment(IPPROTO_UDP, 0, true, 0xdead_beef)[..7]),
            ]),
            Reason::Ipv6Truncated,
        ),
        pass(
            "IPv6 hop-by-hop with no bytes of it, payload length 0",
            concat(&[&eth(ETH_P_IPV6), &ipv6(IPPROTO_HOPOPTS).build(&[])]),
            Reason::Ipv6Truncated,
        ),
    ];
    check_all(&h, "cut within consistent IP length", &fixtures, Counted::Slot);
}

// ---------------------------------------------------------------------------------------------
// Truncation sweeps.
// ---------------------------------------------------------------------------------------------

/// A well-formed frame and, for each header boundary, the reason for cutting the frame before it.
struct Sweep {
    description: &'static str,
    frame: Vec<u8>,
    /// `(end, reason)` in increasing `end`: a frame cut to `len < end` bytes (and not to an
    /// earlier region) counts `reason`. The last region must end at the full frame length.
    regions: Vec<(usize, Reason)>,
    /// How to make the frame's length fields describe a frame cut to `len` bytes; `None` leaves
    /// the original (now too long) lengths in place.
    fix_lengths: Option<fn(&mut Vec<u8>)>,
    /// What the whole, uncut frame counts: it parses, so the stage after the parser decides
    /// (`NoRoute` untagged, `PassVlan` tagged).
    uncut: Reason,
}

impl Sweep {
    fn expected_at(&self, len: usize) -> Reason {
        self.regions
            .iter()
            .find(|(end, _)| len < *end)
            .map(|(_, reason)| *reason)
            .unwrap_or_else(|| panic!("{}: no region covers length {len}", self.description))
    }
}

/// Cuts each sweep's frame at every length from 0 to its full length minus one and checks the
/// counted reason; cuts shorter than an Ethernet header must be refused by the kernel.
fn run_sweeps(h: &Harness, group: &str, sweeps: &[Sweep]) {
    let mut failures = Vec::new();
    let mut checked = 0;
    for sweep in sweeps {
        assert_eq!(
            sweep.regions.last().map(|r| r.0),
            Some(sweep.frame.len()),
            "{}: regions must end at the frame length",
            sweep.description
        );
        // Every sweep starts from a well-formed IP frame; if that already fails, the cuts'
        // expectations mean nothing.
        checked += 1;
        let uncut = pass(format!("{} uncut", sweep.description), sweep.frame.clone(), sweep.uncut);
        failures.extend(check(h, &uncut, Counted::Slot).err());
        for len in 0..sweep.frame.len() {
            checked += 1;
            let mut frame = sweep.frame[..len].to_vec();
            if let Some(fix) = sweep.fix_lengths {
                fix(&mut frame);
            }
            let description = format!("{} cut to {len} bytes", sweep.description);
            let result = if len < ETH_HLEN {
                check_refused(h, &description, &frame)
            } else {
                check(h, &pass(description, frame, sweep.expected_at(len)), Counted::Slot)
            };
            failures.extend(result.err());
        }
    }
    assert!(failures.is_empty(), "{group}: {} of {checked} cuts failed:\n  {}", failures.len(), failures.join("\n  "));
}

/// Untagged IPv4 with two option words (IHL 7) and TCP with data.
fn ipv4_tcp_with_options_frame() -> (Vec<u8>, usize) {
    let ip = ipv4(IPPROTO_TCP).options(&ipv4_opts_two_words());
    let hlen = ip.header_len();
    (concat(&[&eth(ETH_P_IPV4), &ip.build(&tcp(40000, 443, TCP_PSH | TCP_ACK, &payload(12)))]), hlen)
}

const QINQ_L3: usize = ETH_HLEN + 2 * VLAN_HLEN;

fn qinq_ipv6_udp_frame() -> Vec<u8> {
    concat(&[
        &eth_tagged(&[(ETH_P_8021AD, 100), (ETH_P_8021Q, 200)], ETH_P_IPV6),
        &ipv6(IPPROTO_UDP).build(&udp(5353, 5353, &payload(12))),
    ])
}

fn ipv6_hbh_tcp_frame() -> Vec<u8> {
    concat(&[
        &eth(ETH_P_IPV6),
        &ipv6(IPPROTO_HOPOPTS)
            .build(&concat(&[&ipv6_options(IPPROTO_TCP, 0), &tcp(40000, 80, TCP_PSH | TCP_ACK, &payload(6))])),
    ])
}

const VLAN_L3: usize = ETH_HLEN + VLAN_HLEN;

fn vlan_ipv6_icmpv6_frame() -> Vec<u8> {
    concat(&[
        &eth_tagged(&[(ETH_P_8021Q, 42)], ETH_P_IPV6),
        &ipv6(IPPROTO_ICMPV6).build(&icmpv6_echo_request(&payload(8))),
    ])
}

#[test]
fn xdp_ingress_truncated_frames_count_the_cut_header() {
    let h = load_registered();
    let (v4, v4_hlen) = ipv4_tcp_with_options_frame();
    let qinq = qinq_ipv6_udp_frame();
    let hbh = ipv6_hbh_tcp_frame();
    // The length fields still describe the whole frame. Until the L3 header is complete the cut
    // header is what is missing; from then on the header is intact but its total length /
    // payload length claims bytes the frame does not have, which the parser checks before it
    // looks at anything behind the header (IPv6 extension headers included): L3 malformed.
    let sweeps = [
        Sweep {
            description: "IPv4 (IHL 7) TCP",
            regions: vec![(ETH_HLEN + v4_hlen, Reason::Ipv4Truncated), (v4.len(), Reason::Ipv4Malformed)],
            frame: v4,
            fix_lengths: None,
            uncut: Reason::NoRoute,
        },
        Sweep {
            description: "QinQ IPv6 UDP",
            regions: vec![
                (ETH_HLEN + VLAN_HLEN, Reason::VlanTruncated),
                (QINQ_L3, Reason::VlanTruncated),
                (QINQ_L3 + IPV6_HLEN, Reason::Ipv6Truncated),
                (qinq.len(), Reason::Ipv6Malformed),
            ],
            frame: qinq,
            fix_lengths: None,
            // Parse errors inside tagged frames count their parse reason (above); only a frame
            // that parses reaches the VLAN check.
            uncut: Reason::PassVlan,
        },
        Sweep {
            description: "IPv6 hop-by-hop TCP",
            regions: vec![(ETH_HLEN + IPV6_HLEN, Reason::Ipv6Truncated), (hbh.len(), Reason::Ipv6Malformed)],
            frame: hbh,
            fix_lengths: None,
            uncut: Reason::NoRoute,
        },
    ];
    run_sweeps(&h, "truncation sweep", &sweeps);
}

#[test]
fn xdp_ingress_truncated_frames_with_fixed_up_lengths_count_the_cut_header() {
    let h = load_registered();
    let (v4, v4_hlen) = ipv4_tcp_with_options_frame();
    let vlan6 = vlan_ipv6_icmpv6_frame();
    // As a sender of the shorter packet would have written them: the L3 header is consistent, so
    // every cut after it is reported at the header that is actually cut off. TCP and ICMPv6 carry
    // no length of their own, so a cut in their data leaves a well-formed, shorter packet, which
    // then goes as far as the whole frame does (NoRoute untagged, PassVlan tagged).
    let sweeps = [
        Sweep {
            description: "IPv4 (IHL 7) TCP, total length fixed up",
            regions: vec![
                (ETH_HLEN + v4_hlen, Reason::Ipv4Truncated),
                (ETH_HLEN + v4_hlen + TCP_HLEN, Reason::L4Truncated),
                (v4.len(), Reason::NoRoute),
            ],
            frame: v4,
            fix_lengths: Some(|f| {
                let total = f.len().saturating_sub(ETH_HLEN) as u16;
                set_ipv4_total_len(f, ETH_HLEN, total);
            }),
            uncut: Reason::NoRoute,
        },
        Sweep {
            description: "802.1Q IPv6 ICMPv6, payload length fixed up",
            regions: vec![
                (VLAN_L3, Reason::VlanTruncated),
                (VLAN_L3 + IPV6_HLEN, Reason::Ipv6Truncated),
                (VLAN_L3 + IPV6_HLEN + 4, Reason::L4Truncated),
                (vlan6.len(), Reason::PassVlan),
            ],
            frame: vlan6,
            fix_lengths: Some(|f| {
                let payload_len = f.len().saturating_sub(VLAN_L3 + IPV6_HLEN) as u16;
                set_ipv6_payload_len(f, VLAN_L3, payload_len);
            }),
            uncut: Reason::PassVlan,
        },
    ];
    run_sweeps(&h, "truncation sweep with consistent lengths", &sweeps);
}

// ---------------------------------------------------------------------------------------------
// Unregistered interface.
// ---------------------------------------------------------------------------------------------

#[test]
fn xdp_ingress_unregistered_ifindex_counts_unknown_interface() {
    let mut h = Harness::load();
    // A slot exists for some other ifindex, so a program that ignored the ifindex in its lookup
    // (or counted every packet in the first registered slot) would show up in IFACE_STATS[SLOT].
    let other_ifindex = h.lo + 1000;
    register(&mut h, other_ifindex, SLOT);
    let unknown = |description: &str, frame: Vec<u8>| pass(description, frame, Reason::UnknownInterface);
    // The parser's own reason is irrelevant here: without a slot the packet is counted only as
    // coming from an unknown interface, whatever its shape.
    let fixtures = [
        unknown("IPv4 UDP", concat(&[&eth(ETH_P_IPV4), &ipv4(IPPROTO_UDP).build(&udp(1, 2, &payload(8)))])),
        unknown("ARP", concat(&[&eth(ETH_P_ARP), &arp_request()])),
        unknown("IPv4 version 5", concat(&[&eth(ETH_P_IPV4), &ipv4(IPPROTO_UDP).version(5).build(&udp(1, 2, &[]))])),
        unknown(
            "three VLAN tags",
            concat(&[&eth_tagged(&[(ETH_P_8021Q, 1), (ETH_P_8021Q, 2), (ETH_P_8021Q, 3)], ETH_P_ARP), &arp_request()]),
        ),
        unknown(
            "IPv6 non-first fragment",
            concat(&[
                &eth(ETH_P_IPV6),
                &ipv6(IPPROTO_FRAGMENT)
                    .build(&concat(&[&ipv6_fragment(IPPROTO_UDP, 8, true, 0xdead_beef), &payload(64)])),
            ]),
        ),
    ];
    check_all(&h, "unregistered ifindex", &fixtures, Counted::Unknown);
    assert_eq!(
        h.iface_stats(map_names::IFACE_STATS, SLOT),
        InterfaceStats::ZERO,
        "IFACE_STATS[{SLOT}] must stay untouched"
    );
}

// ---------------------------------------------------------------------------------------------
// Pseudo-random frames.
// ---------------------------------------------------------------------------------------------

fn put_be16(frame: &mut [u8], at: usize, value: u16) {
    if frame.len() >= at + 2 {
        frame[at..at + 2].copy_from_slice(&value.to_be_bytes());
    }
}

fn put(frame: &mut [u8], at: usize, value: u8) {
    if let Some(b) = frame.get_mut(at) {
        *b = value;
    }
}

/// Random bytes of random length below 200. Pure noise almost never carries an IPv4, IPv6 or
/// VLAN ethertype, so most frames get just enough structure (ethertype, version, sometimes a
/// self-consistent length or a known next header) to reach the deeper parsers with random data.
/// Likewise a random destination MAC is never the interface's, so half the frames are addressed
/// to it (and some to broadcast) to reach the stages behind the MAC check.
fn garbage_frame(rng: &mut Rng) -> Vec<u8> {
    let len = rng.index(200);
    let mut f: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
    match rng.index(4) {
        0 => {} // a random destination MAC
        1 => f.iter_mut().take(6).for_each(|b| *b = 0xff),
        _ => f.iter_mut().zip(MAC_DST).for_each(|(b, m)| *b = m),
    }
    let mut l3 = ETH_HLEN;
    if rng.index(3) == 0 {
        let tags = 1 + rng.index(3);
        let mut at = 12;
        for _ in 0..tags {
            put_be16(&mut f, at, rng.pick(&[ETH_P_8021Q, ETH_P_8021AD]));
            at += VLAN_HLEN;
        }
        l3 = at + 2;
    }
    let ethertype_at = l3 - 2;
    match rng.index(5) {
        0 => {} // whatever the random bytes say
        1 | 2 => {
            put_be16(&mut f, ethertype_at, ETH_P_IPV4);
            let ihl = if rng.index(2) == 0 { 5 + rng.index(11) as u8 } else { rng.next() as u8 & 0x0f };
            put(&mut f, l3, 0x40 | ihl);
            if rng.index(2) == 0 {
                put_be16(&mut f, l3 + 2, len.saturating_sub(l3) as u16);
            }
            if rng.index(2) == 0 {
                put_be16(&mut f, l3 + 6, 0); // not a fragment
            }
            put(&mut f, l3 + 9, rng.pick(&[IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, IPPROTO_GRE]));
        }
        _ => {
            put_be16(&mut f, ethertype_at, ETH_P_IPV6);
            put(&mut f, l3, 0x60 | (rng.next() as u8 & 0x0f));
            if rng.index(4) != 0 {
                put_be16(&mut f, l3 + 4, len.saturating_sub(l3 + IPV6_HLEN) as u16);
            }
            put(
                &mut f,
                l3 + 6,
                rng.pick(&[
                    IPPROTO_HOPOPTS,
                    IPPROTO_ROUTING,
                    IPPROTO_FRAGMENT,
                    IPPROTO_AH,
                    IPPROTO_DSTOPTS,
                    IPPROTO_TCP,
                    IPPROTO_UDP,
                    IPPROTO_ICMPV6,
                ]),
            );
            // Short extension headers, so a walk through random bytes does not just jump out of
            // the frame at once.
            put(&mut f, l3 + IPV6_HLEN + 1, rng.index(2) as u8);
        }
    }
    f
}

/// The reasons a frame can leave with on an address-less interface with no route, next hop or TX
/// port installed: a parse error (bar `EthTruncated`, which the kernel refuses to run), or one of
/// the stages up to the route lookup (`PassOtherHost` for IP in a frame whose destination MAC is
/// not the interface's). Anything else (forwarded, dropped, ICMP, local, ...) would mean the
/// program acted on state that does not exist.
fn reachable_without_routes(r: Reason) -> bool {
    use dataplane_common::reason::ReasonKind;
    match r {
        Reason::EthTruncated => false,
        Reason::PassNonIp | Reason::PassVlan | Reason::PassMulticast | Reason::PassOtherHost | Reason::NoRoute => true,
        r => r.kind() == ReasonKind::ParseError,
    }
}

/// Whether `reason` agrees with the frame's destination MAC: `PassOtherHost` only for frames not
/// addressed to the interface, and `NoRoute` (the route lookup, behind the MAC check) only for
/// frames that are.
fn consistent_with_mac(frame: &[u8], reason: Reason) -> bool {
    let ours = frame[..6] == MAC_DST;
    match reason {
        Reason::PassOtherHost => !ours,
        Reason::NoRoute => ours,
        _ => true,
    }
}

#[test]
fn xdp_ingress_garbage_frames_pass_with_exactly_one_reason() {
    const FRAMES: usize = 600;
    let h = load_registered();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut failures = Vec::new();
    let mut seen = [0usize; dataplane_common::reason::REASON_SLOTS];
    let mut refused = 0;
    for i in 0..FRAMES {
        let frame = garbage_frame(&mut rng);
        let description = format!("garbage frame #{i} {frame:02x?}");
        if frame.len() < ETH_HLEN {
            refused += 1;
            failures.extend(check_refused(&h, &description, &frame).err());
            continue;
        }
        let obs = h.observe(SLOT, &frame);
        let moved: Vec<usize> = (0..obs.iface.reasons.len()).filter(|&r| obs.iface.reasons[r] != 0).collect();
        let reason_sum: u64 = obs.iface.reasons.iter().sum();
        let ok = obs.verdict() == Some(XDP_PASS)
            && obs.iface.rx_packets == 1
            && obs.iface.rx_bytes == frame.len() as u64
            && obs.iface.tx_packets == 0
            && obs.iface.tx_bytes == 0
            && reason_sum == obs.iface.rx_packets
            && moved.len() == 1
            && Reason::from_u32(moved[0] as u32)
                .is_some_and(|r| reachable_without_routes(r) && consistent_with_mac(&frame, r))
            && obs.unknown == InterfaceStats::ZERO;
        if ok {
            seen[moved[0]] += 1;
        } else {
            failures.push(format!(
                "{description} ({} bytes): expected XDP_PASS, one packet counted under exactly one \
                 reason reachable without routes (pass_other_host exactly when the destination \
                 MAC is not the interface's, if the frame gets that far); observed {}, slot delta \
                 {}, unknown delta {}",
                frame.len(),
                obs.describe_result(),
                describe_stats(&obs.iface),
                describe_stats(&obs.unknown),
            ));
        }
    }
    assert!(failures.is_empty(), "{} of {FRAMES} garbage frames failed:\n  {}", failures.len(), failures.join("\n  "));
    // The generator is deterministic, so this only guards against it being changed into one that
    // no longer reaches every exit a frame of at least ETH_HLEN bytes can take without routes.
    assert!(refused > 0, "no garbage frame was shorter than an Ethernet header");
    let missing: Vec<&str> = Reason::ALL
        .iter()
        .filter(|r| reachable_without_routes(**r) && seen[**r as usize] == 0)
        .map(|r| r.name())
        .collect();
    assert!(missing.is_empty(), "garbage frames never reached: {missing:?} (seen: {seen:?})");
}

// ---------------------------------------------------------------------------------------------
// Regressions: frames an earlier parser counted wrongly.
// ---------------------------------------------------------------------------------------------

/// Each of these once got the wrong reason: L4 and extension headers bounded by the frame instead
/// of the IP length (Ethernet padding read as header bytes), extension headers bounds-checked on
/// their first 2 bytes only, an off-by-one in the extension header limit, and extension headers
/// walked inside non-first fragments.
#[test]
fn xdp_ingress_parser_regressions_count_the_correct_reason() {
    let h = load_registered();
    let fixtures = [
        pass(
            // The UDP header ends at the IPv4 total length; the 32 bytes after it are Ethernet
            // padding, which parse_l4 reads as the rest of the UDP header because it bounds the
            // read by the frame, not by the packet.
            "IPv4 UDP header cut after 4 bytes (total length 24), frame padded to 60 bytes",
            {
                let mut f = concat(&[&eth(ETH_P_IPV4), &ipv4(IPPROTO_UDP).build(&udp(1, 2, &[])[..4])]);
                f.resize(60, 0);
                f
            },
            Reason::L4Truncated,
        ),
        pass(
            // Only the first 2 bytes of an extension header are bounds-checked; the cut-off
            // header is then skipped by its stated length and the miss is blamed on the TCP
            // header behind it.
            "IPv6 hop-by-hop header cut after 2 of its 8 bytes (payload length 2)",
            concat(&[&eth(ETH_P_IPV6), &ipv6(IPPROTO_HOPOPTS).build(&ipv6_options(IPPROTO_TCP, 0)[..2])]),
            Reason::Ipv6Truncated,
        ),
        pass(
            // MAX_IPV6_EXT (6) is documented as how many extension headers are walked, but the
            // walk gives up after the sixth even when it has found the upper layer behind it.
            "IPv6 six chained destination options headers then UDP",
            concat(&[
                &eth(ETH_P_IPV6),
                &ipv6(IPPROTO_DSTOPTS).build(&{
                    let mut rest = Vec::new();
                    for i in 0..6 {
                        rest.extend(ipv6_options(if i < 5 { IPPROTO_DSTOPTS } else { IPPROTO_UDP }, 0));
                    }
                    rest.extend(udp(1, 2, &payload(8)));
                    rest
                }),
            ]),
            Reason::NoRoute,
        ),
        pass(
            // The fragment header's next header names the first header of the fragmentable part,
            // which may be a destination options header (RFC 8200 4.5); in a non-first fragment
            // that header is in another fragment, yet the walk goes on into the fragment data.
            "IPv6 last fragment (offset 3) announcing destination options, 1 data byte",
            concat(&[
                &eth(ETH_P_IPV6),
                &ipv6(IPPROTO_FRAGMENT)
                    .build(&concat(&[&ipv6_fragment(IPPROTO_DSTOPTS, 3, false, 0xdead_beef), &[0x11]])),
            ]),
            Reason::NoRoute,
        ),
        pass(
            "IPv6 middle fragment announcing destination options, data starting 3c ff",
            concat(&[
                &eth(ETH_P_IPV6),
                &ipv6(IPPROTO_FRAGMENT).build(&concat(&[
                    &ipv6_fragment(IPPROTO_DSTOPTS, 3, true, 0xdead_beef),
                    &[0x3c, 0xff],
                    &payload(30),
                ])),
            ]),
            Reason::NoRoute,
        ),
    ];
    check_all(&h, "parser regressions", &fixtures, Counted::Slot);
}
