//! The one packet builder of tests and benchmarks (Cilium's `pktgen.h`, Katran's
//! `PacketBuilder`): a builder per header, each defaulting to a well-formed value with correct
//! lengths and IPv4 header checksum, and an override per field a malformed fixture needs.
//!
//! Headers compose by nesting: `Eth::new(dst, src, ETH_P_IPV4).frame(&Ipv4::new(s, d,
//! IPPROTO_UDP).build(&udp(1, 2, &payload(32))))`. Upper-layer checksums are left zero unless a
//! function says otherwise: the parsing and forwarding paths under test never read them (a zero
//! UDP checksum is "none" on IPv4), and the fixtures' expected bytes depend on them staying so.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::checksum;

/// Ethernet header length.
pub const ETH_HLEN: usize = 14;
/// 802.1Q / 802.1ad tag length.
pub const VLAN_HLEN: usize = 4;
/// IPv4 header length without options.
pub const IPV4_HLEN: usize = 20;
/// IPv6 fixed header length.
pub const IPV6_HLEN: usize = 40;
/// TCP header length without options.
pub const TCP_HLEN: usize = 20;
/// UDP header length.
pub const UDP_HLEN: usize = 8;

/// Ethertype of IPv4.
pub const ETH_P_IPV4: u16 = 0x0800;
/// Ethertype of ARP.
pub const ETH_P_ARP: u16 = 0x0806;
/// TPID of an 802.1Q VLAN tag.
pub const ETH_P_8021Q: u16 = 0x8100;
/// Ethertype of IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;
/// TPID of an 802.1ad (QinQ service) tag.
pub const ETH_P_8021AD: u16 = 0x88a8;
/// Ethertype of LLDP.
pub const ETH_P_LLDP: u16 = 0x88cc;

/// IPv6 hop-by-hop options.
pub const IPPROTO_HOPOPTS: u8 = 0;
/// ICMP.
pub const IPPROTO_ICMP: u8 = 1;
/// TCP.
pub const IPPROTO_TCP: u8 = 6;
/// UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IPv6 routing header.
pub const IPPROTO_ROUTING: u8 = 43;
/// IPv6 fragment header.
pub const IPPROTO_FRAGMENT: u8 = 44;
/// GRE (an upper layer nothing parses).
pub const IPPROTO_GRE: u8 = 47;
/// Authentication header.
pub const IPPROTO_AH: u8 = 51;
/// ICMPv6.
pub const IPPROTO_ICMPV6: u8 = 58;
/// IPv6 destination options.
pub const IPPROTO_DSTOPTS: u8 = 60;

/// TCP SYN flag.
pub const TCP_SYN: u8 = 0x02;
/// TCP PSH flag.
pub const TCP_PSH: u8 = 0x08;
/// TCP ACK flag.
pub const TCP_ACK: u8 = 0x10;

/// Ethernet header with optional VLAN tags.
#[derive(Clone, Debug)]
pub struct Eth {
    dst: [u8; 6],
    src: [u8; 6],
    /// `(tpid, vid)`, outermost first.
    tags: Vec<(u16, u16)>,
    ethertype: u16,
}

impl Eth {
    /// An untagged header.
    pub fn new(dst: [u8; 6], src: [u8; 6], ethertype: u16) -> Self {
        Self { dst, src, tags: Vec::new(), ethertype }
    }

    /// VLAN tags `(tpid, vid)`, outermost first; the ethertype follows the last.
    pub fn tags(mut self, tags: &[(u16, u16)]) -> Self {
        self.tags = tags.to_vec();
        self
    }

    /// The header alone.
    pub fn build(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(ETH_HLEN + self.tags.len() * VLAN_HLEN);
        f.extend_from_slice(&self.dst);
        f.extend_from_slice(&self.src);
        for &(tpid, vid) in &self.tags {
            f.extend_from_slice(&tpid.to_be_bytes());
            // A non-zero priority: only the TPID may decide how the tag is parsed.
            f.extend_from_slice(&((3 << 13) | (vid & 0x0fff)).to_be_bytes());
        }
        f.extend_from_slice(&self.ethertype.to_be_bytes());
        f
    }

    /// The header followed by `payload`.
    pub fn frame(&self, payload: &[u8]) -> Vec<u8> {
        [self.build().as_slice(), payload].concat()
    }
}

/// IPv4 header; every field defaults to what a well-formed packet has.
#[derive(Clone, Debug)]
pub struct Ipv4 {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    version: u8,
    /// `None`: derived from the options.
    ihl: Option<u8>,
    /// `None`: header plus payload.
    total_len: Option<u16>,
    tos: u8,
    id: u16,
    /// Flags and fragment offset, as on the wire.
    frag: u16,
    ttl: u8,
    proto: u8,
    options: Vec<u8>,
}

impl Ipv4 {
    /// Version 4, no options, identification 0x1234, TTL 64, not fragmented.
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, proto: u8) -> Self {
        Self {
            src,
            dst,
            version: 4,
            ihl: None,
            total_len: None,
            tos: 0,
            id: 0x1234,
            frag: 0,
            ttl: 64,
            proto,
            options: Vec::new(),
        }
    }

    /// Source address.
    pub fn src(mut self, src: Ipv4Addr) -> Self {
        self.src = src;
        self
    }

    /// Time to live.
    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = ttl;
        self
    }

    /// Identification.
    pub fn id(mut self, id: u16) -> Self {
        self.id = id;
        self
    }

    /// Type of service (DSCP and ECN).
    pub fn tos(mut self, tos: u8) -> Self {
        self.tos = tos;
        self
    }

    /// A fragment at `offset` (8-byte units), with more fragments to follow or not.
    pub fn fragment(mut self, offset: u16, more: bool) -> Self {
        self.frag = (offset & 0x1fff) | if more { 0x2000 } else { 0 };
        self
    }

    /// Sets DF.
    pub fn dont_fragment(mut self) -> Self {
        self.frag |= 0x4000;
        self
    }

    /// Options, whole 32-bit words, at most 40 bytes.
    pub fn options(mut self, options: &[u8]) -> Self {
        assert!(options.len().is_multiple_of(4) && options.len() <= 40, "IPv4 options must fill 32-bit words");
        self.options = options.to_vec();
        self
    }

    /// Malformed: a version other than 4.
    pub fn version(mut self, version: u8) -> Self {
        self.version = version;
        self
    }

    /// Malformed: an IHL that disagrees with the options.
    pub fn ihl(mut self, ihl: u8) -> Self {
        self.ihl = Some(ihl);
        self
    }

    /// Malformed: a total length that disagrees with the payload.
    pub fn total_len(mut self, total_len: u16) -> Self {
        self.total_len = Some(total_len);
        self
    }

    /// Length of the header as built (options included).
    pub fn header_len(&self) -> usize {
        IPV4_HLEN + self.options.len()
    }

    /// Header (with a correct header checksum) followed by `payload`.
    pub fn build(&self, payload: &[u8]) -> Vec<u8> {
        let hlen = self.header_len();
        let ihl = self.ihl.unwrap_or((hlen / 4) as u8);
        let total = self.total_len.unwrap_or((hlen + payload.len()) as u16);
        let mut p = Vec::with_capacity(hlen + payload.len());
        p.push((self.version << 4) | (ihl & 0x0f));
        p.push(self.tos);
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&self.id.to_be_bytes());
        p.extend_from_slice(&self.frag.to_be_bytes());
        p.push(self.ttl);
        p.push(self.proto);
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(&self.src.octets());
        p.extend_from_slice(&self.dst.octets());
        p.extend_from_slice(&self.options);
        let csum = checksum::internet(&p[..hlen]);
        p[10..12].copy_from_slice(&csum.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    /// Header followed by `datagram` (a UDP header and payload) with its UDP checksum filled in.
    pub fn build_udp_checksummed(&self, datagram: &[u8]) -> Vec<u8> {
        let mut d = datagram.to_vec();
        d[6..8].copy_from_slice(&[0, 0]);
        let sum = checksum::udp_v4(self.src, self.dst, &d);
        d[6..8].copy_from_slice(&sum.to_be_bytes());
        self.build(&d)
    }
}

/// IPv6 fixed header.
#[derive(Clone, Debug)]
pub struct Ipv6 {
    src: Ipv6Addr,
    dst: Ipv6Addr,
    version: u8,
    traffic_class: u8,
    flow_label: u32,
    /// `None`: the length of what follows the fixed header.
    payload_len: Option<u16>,
    next: u8,
    hop_limit: u8,
}

impl Ipv6 {
    /// Version 6, traffic class and flow label 0, hop limit 64.
    pub fn new(src: Ipv6Addr, dst: Ipv6Addr, next: u8) -> Self {
        Self { src, dst, version: 6, traffic_class: 0, flow_label: 0, payload_len: None, next, hop_limit: 64 }
    }

    /// Source address.
    pub fn src(mut self, src: Ipv6Addr) -> Self {
        self.src = src;
        self
    }

    /// Hop limit.
    pub fn hop_limit(mut self, hop_limit: u8) -> Self {
        self.hop_limit = hop_limit;
        self
    }

    /// Traffic class and flow label (20 bits).
    pub fn flow(mut self, traffic_class: u8, flow_label: u32) -> Self {
        self.traffic_class = traffic_class;
        self.flow_label = flow_label & 0x000f_ffff;
        self
    }

    /// Malformed: a version other than 6.
    pub fn version(mut self, version: u8) -> Self {
        self.version = version;
        self
    }

    /// Malformed: a payload length that disagrees with what follows.
    pub fn payload_len(mut self, payload_len: u16) -> Self {
        self.payload_len = Some(payload_len);
        self
    }

    /// Fixed header followed by `payload` (extension headers and upper layer).
    pub fn build(&self, payload: &[u8]) -> Vec<u8> {
        let plen = self.payload_len.unwrap_or(payload.len() as u16);
        let word =
            (u32::from(self.version) << 28) | (u32::from(self.traffic_class) << 20) | (self.flow_label & 0x000f_ffff);
        let mut p = Vec::with_capacity(IPV6_HLEN + payload.len());
        p.extend_from_slice(&word.to_be_bytes());
        p.extend_from_slice(&plen.to_be_bytes());
        p.push(self.next);
        p.push(self.hop_limit);
        p.extend_from_slice(&self.src.octets());
        p.extend_from_slice(&self.dst.octets());
        p.extend_from_slice(payload);
        p
    }
}

/// Hop-by-hop or destination options header of `(hdr_ext_len + 1) * 8` bytes, filled with PadN.
pub fn ipv6_options(next: u8, hdr_ext_len: u8) -> Vec<u8> {
    let len = (usize::from(hdr_ext_len) + 1) * 8;
    let mut e = vec![next, hdr_ext_len];
    while e.len() < len {
        // One PadN carries at most 255 bytes of padding; a lone byte left over is a Pad1.
        match len - e.len() {
            1 => e.push(0),
            left => {
                let fill = left.min(257);
                e.extend_from_slice(&[1, (fill - 2) as u8]);
                e.resize(e.len() + fill - 2, 0);
            }
        }
    }
    e
}

/// Routing header of type 253 (RFC 4727 experimental) with no segments left: 8 bytes.
pub fn ipv6_routing(next: u8) -> Vec<u8> {
    vec![next, 0, 253, 0, 0, 0, 0, 0]
}

/// Fragment header; `offset` in 8-byte units.
pub fn ipv6_fragment(next: u8, offset: u16, more: bool, id: u32) -> Vec<u8> {
    [&[next, 0][..], &((offset << 3) | u16::from(more)).to_be_bytes(), &id.to_be_bytes()].concat()
}

/// Authentication header with a 96-bit ICV: 24 bytes, length field 4 (in 32-bit words minus 2),
/// the one extension header whose length is not counted in 8-byte units.
pub fn ipv6_ah(next: u8, spi: u32) -> Vec<u8> {
    [&[next, 4, 0, 0][..], &spi.to_be_bytes(), &1u32.to_be_bytes(), &[0xa5; 12]].concat()
}

/// UDP header (checksum 0) followed by `payload`.
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = (UDP_HLEN + payload.len()) as u16;
    [&sport.to_be_bytes()[..], &dport.to_be_bytes(), &len.to_be_bytes(), &[0, 0], payload].concat()
}

/// TCP header; no options unless given.
#[derive(Clone, Debug)]
pub struct Tcp {
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    options: Vec<u8>,
}

impl Tcp {
    /// Sequence number 1000, no flags, window 65535.
    pub fn new(sport: u16, dport: u16) -> Self {
        Self { sport, dport, seq: 1000, ack: 0, flags: 0, window: 65535, options: Vec::new() }
    }

    /// Flags (`TCP_SYN`, ...).
    pub fn flags(mut self, flags: u8) -> Self {
        self.flags = flags;
        self
    }

    /// Sequence number.
    pub fn seq(mut self, seq: u32) -> Self {
        self.seq = seq;
        self
    }

    /// Window.
    pub fn window(mut self, window: u16) -> Self {
        self.window = window;
        self
    }

    /// Options, whole 32-bit words.
    pub fn options(mut self, options: &[u8]) -> Self {
        assert!(options.len().is_multiple_of(4) && options.len() <= 40, "TCP options must fill 32-bit words");
        self.options = options.to_vec();
        self
    }

    /// Header (checksum 0) followed by `payload`.
    pub fn build(&self, payload: &[u8]) -> Vec<u8> {
        let doff = ((TCP_HLEN + self.options.len()) / 4) as u8;
        let mut t = Vec::with_capacity(TCP_HLEN + self.options.len() + payload.len());
        t.extend_from_slice(&self.sport.to_be_bytes());
        t.extend_from_slice(&self.dport.to_be_bytes());
        t.extend_from_slice(&self.seq.to_be_bytes());
        t.extend_from_slice(&self.ack.to_be_bytes());
        t.push(doff << 4);
        t.push(self.flags);
        t.extend_from_slice(&self.window.to_be_bytes());
        t.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
        t.extend_from_slice(&self.options);
        t.extend_from_slice(payload);
        t
    }
}

/// TCP header with `flags` (see [`Tcp`] for the rest) followed by `payload`.
pub fn tcp(sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    Tcp::new(sport, dport).flags(flags).build(payload)
}

/// An ICMP or ICMPv6 message of `kind` and `code` with `rest` as its rest-of-header and `body`,
/// checksum 0.
pub fn icmp(kind: u8, code: u8, rest: u32, body: &[u8]) -> Vec<u8> {
    [&[kind, code, 0, 0][..], &rest.to_be_bytes(), body].concat()
}

/// `message` (ICMP) with its checksum filled in.
pub fn icmp_checksummed(mut message: Vec<u8>) -> Vec<u8> {
    message[2..4].copy_from_slice(&[0, 0]);
    let csum = checksum::internet(&message);
    message[2..4].copy_from_slice(&csum.to_be_bytes());
    message
}

/// `message` (ICMPv6) between `src` and `dst` with its checksum filled in.
pub fn icmpv6_checksummed(src: &[u8], dst: &[u8], mut message: Vec<u8>) -> Vec<u8> {
    message[2..4].copy_from_slice(&[0, 0]);
    let csum = checksum::icmpv6(src, dst, &message);
    message[2..4].copy_from_slice(&csum.to_be_bytes());
    message
}

/// ARP request (Ethernet/IPv4) "who has `target`, tell `sender_ip`" from `sender_mac`.
pub fn arp_request(sender_mac: [u8; 6], sender_ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    [&[0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01][..], &sender_mac, &sender_ip.octets(), &[0; 6], &target.octets()]
        .concat()
}

/// `parts` one after another: headers and payloads into one packet.
pub fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// `len` bytes of a recognisable, non-constant payload.
pub fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(7)).collect()
}

/// Rewrites the total length of the IPv4 header at `l3` in `frame`, as far as it is in the frame,
/// and refreshes the checksum when the whole header is.
pub fn set_ipv4_total_len(frame: &mut [u8], l3: usize, total: u16) {
    if frame.len() < l3 + 4 {
        return;
    }
    frame[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
    let hlen = usize::from(frame[l3] & 0x0f) * 4;
    if frame.len() >= l3 + hlen && hlen >= IPV4_HLEN {
        frame[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
        let csum = checksum::internet(&frame[l3..l3 + hlen]);
        frame[l3 + 10..l3 + 12].copy_from_slice(&csum.to_be_bytes());
    }
}

/// Rewrites the payload length of the IPv6 header at `l3` in `frame`, as far as it is in the frame.
pub fn set_ipv6_payload_len(frame: &mut [u8], l3: usize, payload_len: u16) {
    if frame.len() >= l3 + 6 {
        frame[l3 + 4..l3 + 6].copy_from_slice(&payload_len.to_be_bytes());
    }
}

/// Where two frames differ, for a failure message: lengths, the first few differing offsets and
/// both frames.
pub fn diff(expected: &[u8], observed: &[u8]) -> String {
    let offsets: Vec<String> = (0..expected.len().max(observed.len()))
        .filter(|&i| expected.get(i) != observed.get(i))
        .take(8)
        .map(|i| {
            let show = |b: Option<&u8>| b.map_or("--".to_string(), |b| format!("{b:02x}"));
            format!("@{i}: {} != {}", show(observed.get(i)), show(expected.get(i)))
        })
        .collect();
    format!(
        "differs ({} bytes, expected {}; observed != expected: {}):\n        observed {:02x?}\n        expected {:02x?}",
        observed.len(),
        expected.len(),
        offsets.join(", "),
        observed,
        expected
    )
}

/// Source MAC of [`l4_frame`]'s frames.
pub const L4_SENDER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
/// IPv4 source [`l4_frame`] uses when the families differ.
pub const L4_SENDER_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
/// IPv6 source [`l4_frame`] uses when the families differ.
pub const L4_SENDER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10);

/// A UDP datagram from 192.0.2.10 / 2001:db8:1::10 to `dst`, ports `sport` -> `dport`, in a
/// frame for the loopback's (all-zero) MAC.
pub fn udp_frame(dst: IpAddr, sport: u16, dport: u16) -> Vec<u8> {
    l4_frame(IpAddr::V4(L4_SENDER_V4), dst, IPPROTO_UDP, sport, dport, 0)
}

/// An IPv4/IPv6 frame for the loopback's (all-zero) MAC from `src` to `dst` with protocol
/// `proto` (identification 1, DF, TTL 64; no payload); for TCP/UDP `a`/`b` are the ports (and
/// `flags` the TCP flags: sequence number and window 0), for ICMP the type and code. `src` is
/// replaced by [`L4_SENDER_V4`] / [`L4_SENDER_V6`] when the families differ.
pub fn l4_frame(src: IpAddr, dst: IpAddr, proto: u8, a: u16, b: u16, flags: u8) -> Vec<u8> {
    let l4 = match proto {
        IPPROTO_TCP => Tcp::new(a, b).flags(flags).seq(0).window(0).build(&[]),
        IPPROTO_ICMP | IPPROTO_ICMPV6 => icmp(a as u8, b as u8, 0, &[]),
        _ => udp(a, b, &[]),
    };
    match dst {
        IpAddr::V4(d) => {
            let s = match src {
                IpAddr::V4(s) => s,
                IpAddr::V6(_) => L4_SENDER_V4,
            };
            let ip = Ipv4::new(s, d, proto).id(1).dont_fragment().build(&l4);
            Eth::new([0; 6], L4_SENDER_MAC, ETH_P_IPV4).frame(&ip)
        }
        IpAddr::V6(d) => {
            let s = match src {
                IpAddr::V6(s) => s,
                IpAddr::V4(_) => L4_SENDER_V6,
            };
            Eth::new([0; 6], L4_SENDER_MAC, ETH_P_IPV6).frame(&Ipv6::new(s, d, proto).build(&l4))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_build_with_options_has_valid_header_checksum_and_lengths() {
        let ip = Ipv4::new(Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(198, 51, 100, 2), IPPROTO_UDP)
            .options(&[148, 4, 0, 0])
            .build(&udp(1, 2, &payload(5)));
        assert_eq!(ip[0], 0x46);
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]) as usize, ip.len());
        assert_eq!(checksum::internet(&ip[..24]), 0);
        assert_eq!(u16::from_be_bytes([ip[28], ip[29]]), 13);
    }

    #[test]
    fn ipv6_options_any_length_fills_declared_length() {
        for n in [0u8, 1, 31, 32, 255] {
            let e = ipv6_options(IPPROTO_UDP, n);
            assert_eq!(e.len(), (usize::from(n) + 1) * 8, "hdr_ext_len {n}");
        }
    }

    #[test]
    fn l4_frame_ipv4_udp_is_the_42_byte_frame_tests_and_benches_share() {
        let f = udp_frame(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), 4000, 53);
        let expected: [u8; 42] = [
            0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0x99, 0x08, 0x00, // Ethernet
            0x45, 0, 0, 28, 0, 1, 0x40, 0, 64, 17, 0x4e, 0x8b, 192, 0, 2, 10, 198, 51, 100, 7, // IPv4
            0x0f, 0xa0, 0, 53, 0, 8, 0, 0, // UDP
        ];
        assert_eq!(f, expected);
    }

    #[test]
    fn udp_checksummed_datagram_sums_to_zero_with_pseudo_header() {
        let (s, d) = (Ipv4Addr::new(192, 0, 2, 2), Ipv4Addr::new(203, 0, 113, 10));
        let ip = Ipv4::new(s, d, IPPROTO_UDP).build_udp_checksummed(&udp(12345, 9, &[0x5a; 22]));
        assert_eq!(!checksum::ones_sum(&ip[20..], checksum::pseudo_v4(s, d, IPPROTO_UDP, 30)), 0);
    }
}
