//! The Internet checksum (RFC 1071) and the pseudo-header sums of UDP/TCP/ICMPv6, for building
//! frames and for checking the ones the programs hand back.

use std::net::Ipv4Addr;

use crate::packet::{ETH_HLEN, IPV4_HLEN, IPV6_HLEN};

/// One's-complement sum of big-endian 16-bit words (an odd byte is padded with zero), added to
/// `initial` and folded to 16 bits.
pub fn ones_sum(bytes: &[u8], initial: u32) -> u16 {
    let mut sum =
        initial + bytes.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum::<u32>();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The Internet checksum of `bytes`: over data whose checksum field holds a correct value, 0.
pub fn internet(bytes: &[u8]) -> u16 {
    !ones_sum(bytes, 0)
}

/// The IPv4 pseudo-header sum (RFC 768 / 793) of an upper-layer message of `len` bytes.
pub fn pseudo_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u16) -> u32 {
    let words = [&src.octets()[..], &dst.octets()[..], &[0, proto], &len.to_be_bytes()].concat();
    u32::from(ones_sum(&words, 0))
}

/// The IPv6 pseudo-header sum (RFC 8200 8.1) of an upper-layer message of `len` bytes.
pub fn pseudo_v6(src: &[u8], dst: &[u8], proto: u8, len: u32) -> u32 {
    let words = [src, dst, &len.to_be_bytes(), &[0, 0, 0, proto]].concat();
    u32::from(ones_sum(&words, 0))
}

/// The ICMPv6 checksum of `message` between `src` and `dst`: 0 over a message whose checksum
/// field is correct.
pub fn icmpv6(src: &[u8], dst: &[u8], message: &[u8]) -> u16 {
    !ones_sum(message, pseudo_v6(src, dst, crate::packet::IPPROTO_ICMPV6, message.len() as u32))
}

/// The UDP checksum of `datagram` (header and payload) from `src` to `dst`; a computed 0 is sent
/// as 0xffff (RFC 768: 0 means "no checksum").
pub fn udp_v4(src: Ipv4Addr, dst: Ipv4Addr, datagram: &[u8]) -> u16 {
    match !ones_sum(datagram, pseudo_v4(src, dst, crate::packet::IPPROTO_UDP, datagram.len() as u16)) {
        0 => 0xffff,
        s => s,
    }
}

/// A checksum verified over an (untagged) output frame from scratch, independently of any
/// expected byte string, so a failure names the broken property rather than just an offset.
#[derive(Clone, Copy, Debug)]
pub enum Checksum {
    /// The IPv4 header at ETH_HLEN (IHL words) sums to zero: checksum valid.
    Ipv4Header,
    /// The ICMP message after the IPv4 header, up to the total length, sums to zero.
    Icmpv4,
    /// The ICMPv6 message after the fixed IPv6 header sums to zero with the pseudo-header.
    Icmpv6,
}

impl Checksum {
    /// `Ok` if the checksum holds over `out`, else what is wrong.
    pub fn verify(self, out: &[u8]) -> Result<(), String> {
        let short = || format!("{self:?}: output of {} bytes too short", out.len());
        match self {
            Checksum::Ipv4Header => {
                let hlen = usize::from(*out.get(ETH_HLEN).ok_or_else(short)? & 0x0f) * 4;
                let hdr = out.get(ETH_HLEN..ETH_HLEN + hlen).ok_or_else(short)?;
                match internet(hdr) {
                    0 => Ok(()),
                    c => Err(format!("IPv4 header checksum invalid (residue {c:#06x})")),
                }
            }
            Checksum::Icmpv4 => {
                let ip = out.get(ETH_HLEN..ETH_HLEN + IPV4_HLEN).ok_or_else(short)?;
                let hlen = usize::from(ip[0] & 0x0f) * 4;
                let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
                let msg = out.get(ETH_HLEN + hlen..ETH_HLEN + total).ok_or_else(short)?;
                match internet(msg) {
                    0 => Ok(()),
                    c => Err(format!("ICMP checksum invalid (residue {c:#06x})")),
                }
            }
            Checksum::Icmpv6 => {
                let ip = out.get(ETH_HLEN..ETH_HLEN + IPV6_HLEN).ok_or_else(short)?;
                let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
                let start = ETH_HLEN + IPV6_HLEN;
                let msg = out.get(start..start + plen).ok_or_else(short)?;
                match icmpv6(&ip[8..24], &ip[24..40], msg) {
                    0 => Ok(()),
                    c => Err(format!("ICMPv6 checksum invalid (residue {c:#06x})")),
                }
            }
        }
    }
}
