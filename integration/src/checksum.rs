//! The Internet checksum (RFC 1071) and the pseudo-header sums of UDP/TCP/ICMPv6, for building
//! frames and for checking the ones the programs hand back.

use std::net::Ipv4Addr;

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
