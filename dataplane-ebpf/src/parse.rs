//! Parse stage: Ethernet, up to two VLAN tags (802.1ad/802.1Q), IPv4 with options, IPv6 with its
//! extension-header chain, and the first bytes of TCP/UDP/ICMP/ICMPv6.
//!
//! Every read goes through [`ptr_at`], whose comparison against `data_end` is the bounds check the
//! verifier needs before any packet byte is dereferenced. Offsets that depend on packet contents
//! (IPv4 IHL, IPv6 extension lengths) are clamped first so the verifier sees them bounded.

use core::mem::size_of;

use aya_ebpf::programs::{TcContext, XdpContext};
use dataplane_common::Reason;

/// A packet buffer with direct access: the XDP frame or the linear part of a TC skb.
pub trait Frame {
    fn data(&self) -> usize;
    fn data_end(&self) -> usize;
}

impl Frame for XdpContext {
    #[inline(always)]
    fn data(&self) -> usize {
        XdpContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        XdpContext::data_end(self)
    }
}

impl Frame for TcContext {
    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }
}

const ETH_HLEN: usize = 14;
pub const ETH_ALEN: usize = 6;
const VLAN_HLEN: usize = 4;
pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
/// 802.1ad outer + 802.1Q inner: deeper stacks are not something this dataplane forwards.
const MAX_VLAN_TAGS: usize = 2;
pub const IPV6_HLEN: usize = 40;
/// How many IPv6 extension headers we walk before giving up on finding the upper layer.
const MAX_IPV6_EXT: usize = 6;
/// Upper bound on the L4 offset; also keeps the offset provably bounded for the verifier.
const MAX_L4_OFFSET: usize = 512;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;

/// Network layer of a parsed frame.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum L3 {
    /// Not IP; the ethertype after any VLAN tags.
    Other(#[allow(dead_code)] u16),
    Ipv4,
    Ipv6,
}

/// What the parser learnt about a frame. Offsets are from the start of the frame; the later
/// stages (route, flow, policy) read addresses and ports at these offsets.
///
/// 8-byte aligned, with the addresses at 8-byte aligned offsets: the parser fills them with
/// word stores, and the stages that read them get word loads.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub struct Packet {
    /// Addresses; IPv4 in the first 4 bytes.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub l3: L3,
    /// VLAN tags in front of the network header (at most `MAX_VLAN_TAGS`).
    pub vlan_tags: u8,
    /// Outermost first; 0 where absent.
    pub vlan_ids: [u16; MAX_VLAN_TAGS],
    /// Offset of the network header (after the VLAN tags).
    pub l3_off: usize,
    /// Offset of the upper-layer header (after IPv4 options / IPv6 extension headers).
    pub l4_off: usize,
    /// Offset just past the IP datagram (from its total/payload length); what follows is padding.
    pub l3_end: usize,
    /// The upper-layer protocol (after IPv6 extension headers; for a non-first IPv6 fragment,
    /// the fragment header's next header).
    pub ip_proto: u8,
    /// A fragment other than the first: no upper-layer header in this packet, so no ports.
    pub non_first_fragment: bool,
    /// Any fragment, the first included: flow keys and hashes then use addresses only, so every
    /// fragment of a datagram takes the same path.
    pub is_fragment: bool,
    /// TTL / hop limit as received.
    pub ttl: u8,
    /// TCP/UDP ports, host order; ICMP type and code in `src_port` / `dst_port`.
    pub src_port: u16,
    pub dst_port: u16,
    /// TCP flags byte; 0 for other protocols.
    pub tcp_flags: u8,
}

/// Returns a pointer to a `T` at `off` bytes into the frame, or `None` if it does not fit.
#[inline(always)]
pub fn ptr_at<T, F: Frame>(ctx: &F, off: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    // Bounds check for the verifier: proves [start + off, start + off + size_of::<T>()) is inside
    // the packet before the caller dereferences it.
    if start + off + size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *const T)
}

/// `*(u32 *)(p + OFF)` as one BPF load, whatever `p`'s alignment: Rust (and LLVM's BPF
/// backend) would split an unaligned word access into byte accesses and shifts, several
/// nanoseconds per packet on the forwarding path. The verifier accepts an unaligned packet
/// access where the CPU handles it (x86-64, arm64), and the JIT emits one move.
///
/// # Safety
/// `p + OFF .. p + OFF + 4` must be verifier-checked packet bytes.
#[inline(always)]
pub unsafe fn load32<const OFF: i16>(p: *const u8) -> u32 {
    let v: u32;
    // SAFETY: the caller's contract; the asm only loads 4 bytes at `p + OFF`.
    unsafe {
        core::arch::asm!("{v} = *(u32 *)({p} + {off})", p = in(reg) p, v = lateout(reg) v, off = const OFF, options(nostack, readonly, preserves_flags))
    };
    v
}

/// `*(u64 *)(p + OFF)` as one BPF load; see [`load32`].
///
/// # Safety
/// `p + OFF .. p + OFF + 8` must be verifier-checked packet bytes.
#[inline(always)]
pub unsafe fn load64<const OFF: i16>(p: *const u8) -> u64 {
    let v: u64;
    // SAFETY: the caller's contract; the asm only loads 8 bytes at `p + OFF`.
    unsafe {
        core::arch::asm!("{v} = *(u64 *)({p} + {off})", p = in(reg) p, v = lateout(reg) v, off = const OFF, options(nostack, readonly, preserves_flags))
    };
    v
}

/// `*(u32 *)(p + OFF) = v` as one BPF store; see [`load32`].
///
/// # Safety
/// `p + OFF .. p + OFF + 4` must be verifier-checked writable packet bytes.
#[inline(always)]
pub unsafe fn store32<const OFF: i16>(p: *mut u8, v: u32) {
    // SAFETY: the caller's contract; the asm only stores 4 bytes at `p + OFF`.
    unsafe {
        core::arch::asm!("*(u32 *)({p} + {off}) = {v}", p = in(reg) p, v = in(reg) v, off = const OFF, options(nostack, preserves_flags))
    };
}

#[inline(always)]
fn read<T: Copy, F: Frame>(ctx: &F, off: usize) -> Option<T> {
    // SAFETY: ptr_at checked the bounds; T is a byte array (alignment 1), so any address is fine.
    ptr_at::<T, F>(ctx, off).map(|p| unsafe { *p })
}

/// Like [`read`], but the `T` must also end at or before `limit` (an offset into the frame): the
/// end of the IP datagram, so Ethernet padding after it is never taken for header bytes.
#[inline(always)]
fn read_within<T: Copy, F: Frame>(ctx: &F, off: usize, limit: usize) -> Option<T> {
    // `limit` was checked against the frame length earlier; hidden from LLVM so it cannot chain
    // `off + size <= limit <= frame length` into proof that the packet bounds check in `read` is
    // redundant and delete it: the verifier cannot follow that chain and rejects the load.
    let limit = core::hint::black_box(limit);
    if off + size_of::<T>() > limit {
        return None;
    }
    read(ctx, off)
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

const _: () = assert!(core::mem::offset_of!(Packet, src) % 8 == 0 && core::mem::offset_of!(Packet, dst) % 8 == 0);

impl Packet {
    /// Nothing parsed yet.
    pub const fn new() -> Self {
        Self {
            l3: L3::Other(0),
            vlan_tags: 0,
            vlan_ids: [0; MAX_VLAN_TAGS],
            l3_off: ETH_HLEN,
            l4_off: 0,
            l3_end: 0,
            ip_proto: 0,
            non_first_fragment: false,
            is_fragment: false,
            ttl: 0,
            src: [0; 16],
            dst: [0; 16],
            src_port: 0,
            dst_port: 0,
            tcp_flags: 0,
        }
    }
}

/// Parses the frame in `ctx` into `pkt` (fresh from [`Packet::new`]), or says which header was
/// malformed or cut off. Fills the caller's `Packet` in place: returning one by value would put a
/// second copy on the entry point's small stack.
#[inline(always)]
pub fn parse<F: Frame>(ctx: &F, pkt: &mut Packet) -> Result<(), Reason> {
    match Reason::from_u32(parse_into(ctx, pkt)) {
        Some(r) => Err(r),
        None => Ok(()),
    }
}

/// `parse` proper, returning a reason code or [`PARSED`].
///
/// Not inlined: as a BPF-to-BPF call its temporaries live in its own stack frame, released
/// before the forwarding stages run; inlined, they crowd the 512-byte stack of the entry point.
/// Plain integer and pointer types at the call boundary: the kernel rejects the BTF rustc emits
/// for a `Result` returned by value.
#[inline(never)]
fn parse_into<F: Frame>(ctx: &F, pkt: &mut Packet) -> u32 {
    match parse_frame(ctx, pkt) {
        Ok(()) => PARSED,
        Err(r) => r as u32,
    }
}

/// The reason for an IP header found shorter than a later stage needs: never the case for a
/// parsed frame (the parser read further), but those stages' bounds checks, which the verifier
/// needs, must exit with some reason, and it is the packet's family's.
#[inline(always)]
pub fn ip_truncated(l3: L3) -> Reason {
    match l3 {
        L3::Ipv6 => Reason::Ipv6Truncated,
        _ => Reason::Ipv4Truncated,
    }
}

/// Not a [`Reason`]: the frame parsed.
const PARSED: u32 = u32::MAX;

#[inline(always)]
fn parse_frame<F: Frame>(ctx: &F, pkt: &mut Packet) -> Result<(), Reason> {
    let frame_len = ctx.data_end() - ctx.data();
    let eth: [u8; ETH_HLEN] = read(ctx, 0).ok_or(Reason::EthTruncated)?;
    let mut ethertype = be16([eth[12], eth[13]]);

    // Unrolled: at most two tags, each a constant offset, which the verifier follows trivially.
    let mut i = 0;
    while i < MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let tag: [u8; VLAN_HLEN] = read(ctx, pkt.l3_off).ok_or(Reason::VlanTruncated)?;
        pkt.vlan_ids[i] = be16([tag[0], tag[1]]) & 0x0fff;
        ethertype = be16([tag[2], tag[3]]);
        pkt.l3_off += VLAN_HLEN;
        pkt.vlan_tags += 1;
        i += 1;
    }
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        return Err(Reason::VlanTooDeep);
    }

    match ethertype {
        ETH_P_IPV4 => parse_ipv4(ctx, pkt, frame_len)?,
        ETH_P_IPV6 => parse_ipv6(ctx, pkt, frame_len)?,
        other => {
            pkt.l3 = L3::Other(other);
            return Ok(());
        }
    }
    if !pkt.non_first_fragment {
        parse_l4(ctx, pkt)?;
    }
    Ok(())
}

#[inline(always)]
fn parse_ipv4<F: Frame>(ctx: &F, pkt: &mut Packet, frame_len: usize) -> Result<(), Reason> {
    let off = pkt.l3_off;
    let p = ptr_at::<[u8; 20], F>(ctx, off).ok_or(Reason::Ipv4Truncated)? as *const u8;
    // SAFETY: bounds-checked by ptr_at.
    let h: [u8; 20] = unsafe { *(p as *const [u8; 20]) };
    if h[0] >> 4 != 4 {
        return Err(Reason::Ipv4Malformed);
    }
    // IHL is 4 bits, so hlen <= 60: bounded for the verifier by construction.
    let hlen = ((h[0] & 0x0f) as usize) * 4;
    if hlen < 20 {
        return Err(Reason::Ipv4Malformed);
    }
    // Options present: the whole header must be in the frame. Checked byte-wise at the last
    // option byte so the verifier sees a bounds check at a bounded variable offset.
    if hlen > 20 && read::<[u8; 1], F>(ctx, off + hlen - 1).is_none() {
        return Err(Reason::Ipv4Truncated);
    }
    let total = be16([h[2], h[3]]) as usize;
    if total < hlen || off + total > frame_len {
        return Err(Reason::Ipv4Malformed);
    }
    pkt.l3 = L3::Ipv4;
    pkt.ip_proto = h[9];
    let frag = be16([h[6], h[7]]);
    pkt.non_first_fragment = frag & 0x1fff != 0;
    // MF set or a non-zero offset.
    pkt.is_fragment = frag & 0x3fff != 0;
    pkt.ttl = h[8];
    // SAFETY: bytes 12..20 were bounds-checked with the header; the fields are 8-byte aligned
    // (asserted below).
    unsafe {
        (pkt.src.as_mut_ptr() as *mut u32).write(load32::<12>(p));
        (pkt.dst.as_mut_ptr() as *mut u32).write(load32::<16>(p));
    }
    pkt.l4_off = off + hlen;
    pkt.l3_end = off + total;
    Ok(())
}

#[inline(always)]
fn parse_ipv6<F: Frame>(ctx: &F, pkt: &mut Packet, frame_len: usize) -> Result<(), Reason> {
    let off = pkt.l3_off;
    let p = ptr_at::<[u8; IPV6_HLEN], F>(ctx, off).ok_or(Reason::Ipv6Truncated)? as *const u8;
    // SAFETY: bounds-checked by ptr_at.
    let h: [u8; IPV6_HLEN] = unsafe { *(p as *const [u8; IPV6_HLEN]) };
    if h[0] >> 4 != 6 {
        return Err(Reason::Ipv6Malformed);
    }
    let payload = be16([h[4], h[5]]) as usize;
    if off + IPV6_HLEN + payload > frame_len {
        return Err(Reason::Ipv6Malformed);
    }
    pkt.l3 = L3::Ipv6;
    pkt.ttl = h[7];
    // SAFETY: bytes 8..40 were bounds-checked with the header; the fields are 8-byte aligned
    // (asserted below).
    unsafe {
        let (s, d) = (pkt.src.as_mut_ptr() as *mut u64, pkt.dst.as_mut_ptr() as *mut u64);
        s.write(load64::<8>(p));
        s.add(1).write(load64::<16>(p));
        d.write(load64::<24>(p));
        d.add(1).write(load64::<32>(p));
    }
    let end = off + IPV6_HLEN + payload;
    pkt.l3_end = end;
    let mut next = h[6];
    let mut l4 = off + IPV6_HLEN;
    let mut n = 0;
    // Walk at most MAX_IPV6_EXT extension headers; the loop ends early at the upper layer or at a
    // non-first fragment, whose remaining bytes are fragment data, not headers.
    while n < MAX_IPV6_EXT && is_ipv6_ext(next) && !pkt.non_first_fragment {
        // Clamp so the verifier knows `l4` is bounded before it is used as a packet offset.
        if l4 > MAX_L4_OFFSET {
            return Err(Reason::Ipv6Malformed);
        }
        let e: [u8; 2] = read_within(ctx, l4, end).ok_or(Reason::Ipv6Truncated)?;
        let len = match next {
            IPPROTO_FRAGMENT => 8,
            IPPROTO_AH => (e[1] as usize + 2) * 4,
            _ => (e[1] as usize + 1) * 8,
        };
        // The whole extension header must be inside the datagram (whose end is inside the
        // frame, checked above). A scalar comparison on purpose: a packet-pointer check of the
        // last byte would let LLVM drop the 2-byte check above as implied by it, and hoist the
        // read of `e` before any check the verifier can see.
        if l4 + len > end {
            return Err(Reason::Ipv6Truncated);
        }
        if next == IPPROTO_FRAGMENT {
            let f: [u8; 8] = read(ctx, l4).ok_or(Reason::Ipv6Truncated)?;
            pkt.non_first_fragment = be16([f[2], f[3]]) >> 3 != 0;
            pkt.is_fragment = true;
        }
        next = e[0];
        l4 += len;
        n += 1;
    }
    if (is_ipv6_ext(next) && !pkt.non_first_fragment) || l4 > MAX_L4_OFFSET {
        return Err(Reason::Ipv6Malformed);
    }
    pkt.ip_proto = next;
    pkt.l4_off = l4;
    Ok(())
}

#[inline(always)]
fn is_ipv6_ext(proto: u8) -> bool {
    matches!(proto, IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_FRAGMENT | IPPROTO_AH | IPPROTO_DSTOPTS)
}

#[inline(always)]
fn parse_l4<F: Frame>(ctx: &F, pkt: &mut Packet) -> Result<(), Reason> {
    let (off, end) = (pkt.l4_off, pkt.l3_end);
    // Re-clamp: the verifier loses the bound on `l4_off` across the parsers above. Unreachable
    // for IPv4 (at most 22 + 60) and rejected already for IPv6.
    if off > MAX_L4_OFFSET {
        return Err(Reason::L4Truncated);
    }
    match (pkt.l3, pkt.ip_proto) {
        (_, IPPROTO_TCP) => {
            let t: [u8; 20] = read_within(ctx, off, end).ok_or(Reason::L4Truncated)?;
            pkt.src_port = be16([t[0], t[1]]);
            pkt.dst_port = be16([t[2], t[3]]);
            pkt.tcp_flags = t[13];
        }
        (_, IPPROTO_UDP) => {
            let u: [u8; 8] = read_within(ctx, off, end).ok_or(Reason::L4Truncated)?;
            pkt.src_port = be16([u[0], u[1]]);
            pkt.dst_port = be16([u[2], u[3]]);
        }
        (L3::Ipv4, IPPROTO_ICMP) | (L3::Ipv6, IPPROTO_ICMPV6) => {
            let c: [u8; 4] = read_within(ctx, off, end).ok_or(Reason::L4Truncated)?;
            pkt.src_port = c[0] as u16;
            pkt.dst_port = c[1] as u16;
        }
        _ => {}
    }
    Ok(())
}
