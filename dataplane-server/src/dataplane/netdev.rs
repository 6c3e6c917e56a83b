//! Facts about kernel network devices in the server's network namespace: ifindex, MTU, MAC and
//! addresses (getifaddrs(3) and ioctl(2), both answered by the caller's network namespace).

use std::{
    ffi::{CStr, CString},
    net::{Ipv4Addr, Ipv6Addr},
};

use super::{DataplaneError, LinkInfo};
use crate::net::Mac;

/// Whether a link with this ifindex exists in the server's network namespace.
pub fn exists(ifindex: u32) -> bool {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has IF_NAMESIZE bytes, as if_indextoname requires.
    !unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) }.is_null()
}

/// The link called `name`, or `None` if there is none.
pub fn link(name: &str) -> Result<Option<LinkInfo>, DataplaneError> {
    let Ok(c) = CString::new(name) else { return Ok(None) };
    // SAFETY: `c` is a valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if ifindex == 0 {
        return Ok(None);
    }
    let mut info = LinkInfo { ifindex, mtu: mtu(name)?, mac: Mac::default(), ipv4: None, ipv6: None };
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io("getifaddrs", name));
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` walks the list getifaddrs returned; every node is valid until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || unsafe { CStr::from_ptr(ifa.ifa_name) }.to_bytes() != name.as_bytes() {
            continue;
        }
        // SAFETY: the family says which sockaddr type this is.
        unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_PACKET => {
                    let ll = &*(ifa.ifa_addr as *const libc::sockaddr_ll);
                    if ll.sll_halen == 6 {
                        info.mac.0.copy_from_slice(&ll.sll_addr[..6]);
                    }
                }
                libc::AF_INET if info.ipv4.is_none() => {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    info.ipv4 = Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
                }
                libc::AF_INET6 => {
                    let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    let a = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                    // Prefer a global address: ICMP errors from a link-local one do not route.
                    let link_local = a.segments()[0] & 0xffc0 == 0xfe80;
                    if info.ipv6.is_none() && !link_local {
                        info.ipv6 = Some(a);
                    }
                }
                _ => {}
            }
        }
    }
    // SAFETY: `head` came from getifaddrs.
    unsafe { libc::freeifaddrs(head) };
    Ok(Some(info))
}

fn mtu(name: &str) -> Result<u32, DataplaneError> {
    // SAFETY: a throwaway datagram socket for the ioctl; closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io("socket", name));
    }
    // SAFETY: ifreq is plain data; the name fits (interface names are at most 15 bytes).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes().take(libc::IFNAMSIZ - 1)) {
        *d = s as libc::c_char;
    }
    // SAFETY: SIOCGIFMTU reads ifr_name and writes ifr_mtu.
    let r = unsafe { libc::ioctl(fd, libc::SIOCGIFMTU, &mut req) };
    let err = (r < 0).then(|| io("ioctl SIOCGIFMTU", name));
    // SAFETY: closing the socket we opened.
    unsafe { libc::close(fd) };
    match err {
        Some(e) => Err(e),
        // SAFETY: the ioctl succeeded, so the union holds the MTU.
        None => Ok(unsafe { req.ifr_ifru.ifru_mtu } as u32),
    }
}

fn io(op: &'static str, name: &str) -> DataplaneError {
    DataplaneError::Io { path: name.into(), op, source: std::io::Error::last_os_error() }
}

/// The name of the link with this ifindex, `None` if there is none.
pub fn name(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has IF_NAMESIZE bytes, as if_indextoname requires; on success it holds a
    // NUL-terminated name.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    // SAFETY: non-null means `buf` holds a NUL-terminated string.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned())
}

/// The mode the XDP program attached to `ifindex` runs in, as the kernel reports it
/// (`IFLA_XDP_ATTACHED` of an RTM_GETLINK answer); `None` if nothing is attached. A restart that
/// has no record of an interface it adopts reads it here: the link itself does not say.
pub fn xdp_mode(ifindex: u32) -> Result<Option<super::XdpMode>, DataplaneError> {
    use rtnetlink::{
        packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_REQUEST},
        packet_route::{
            link::{LinkAttribute, LinkMessage, LinkXdp, XdpAttached},
            RouteNetlinkMessage,
        },
        sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr},
    };
    let err = |op: &'static str| {
        move |source: std::io::Error| DataplaneError::Io { path: format!("ifindex {ifindex}").into(), op, source }
    };
    let mut link = LinkMessage::default();
    link.header.index = ifindex;
    let mut req =
        NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(RouteNetlinkMessage::GetLink(link)));
    req.header.flags = NLM_F_REQUEST;
    req.header.sequence_number = 1;
    req.finalize();
    let mut buf = vec![0; req.buffer_len()];
    req.serialize(&mut buf);
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(err("netlink socket"))?;
    socket.bind_auto().map_err(err("netlink bind"))?;
    socket.connect(&SocketAddr::new(0, 0)).map_err(err("netlink connect"))?;
    socket.send(&buf, 0).map_err(err("netlink send"))?;
    let mut answer = Vec::with_capacity(64 * 1024);
    socket.recv(&mut answer, 0).map_err(err("netlink recv"))?;
    let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&answer).map_err(|e| DataplaneError::Io {
        path: format!("ifindex {ifindex}").into(),
        op: "netlink parse",
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
    })?;
    let link = match msg.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => l,
        NetlinkPayload::Error(e) => {
            let code = e.code.map_or(0, |c| -c.get());
            return Err(err("netlink getlink")(std::io::Error::from_raw_os_error(code)));
        }
        _ => return Ok(None),
    };
    let xdp: Vec<LinkXdp> = link
        .attributes
        .into_iter()
        .filter_map(|a| match a {
            LinkAttribute::Xdp(xdp) => Some(xdp),
            _ => None,
        })
        .flatten()
        .collect();
    let attached = xdp.iter().find_map(|x| match x {
        LinkXdp::Attached(a) => Some(*a),
        _ => None,
    });
    Ok(match attached {
        Some(XdpAttached::Driver | XdpAttached::Hardware) => Some(super::XdpMode::Native),
        Some(XdpAttached::SocketBuffer) => Some(super::XdpMode::Generic),
        // Programs in several modes: a driver-mode one is the one that sees packets first.
        Some(XdpAttached::Multiple) if xdp.iter().any(|x| matches!(x, LinkXdp::DrvProgId(_))) => {
            Some(super::XdpMode::Native)
        }
        Some(XdpAttached::Multiple) => Some(super::XdpMode::Generic),
        _ => None,
    })
}

/// The raw packet sockets frames are sent through, opened on first use (in the server's network
/// namespace, where its interfaces are) and kept: one through the qdisc (packet-outs, as the
/// stack sends), one past it (re-injected held packets, as an XDP transmit goes).
static PACKET_SOCKET: std::sync::OnceLock<std::os::fd::OwnedFd> = std::sync::OnceLock::new();
static DIRECT_SOCKET: std::sync::OnceLock<std::os::fd::OwnedFd> = std::sync::OnceLock::new();

/// Sends `frame` (a whole Ethernet frame) out of `ifindex` as it is: AF_PACKET, SOCK_RAW, so
/// the kernel adds nothing and the frame skips the interface's own XDP program.
pub fn transmit(ifindex: u32, frame: &[u8]) -> Result<(), DataplaneError> {
    send_on(&PACKET_SOCKET, false, ifindex, frame)
}

/// [`transmit`] past the qdisc and TC egress (`PACKET_QDISC_BYPASS`), as an XDP redirect or
/// XDP_TX sends: for frames the XDP program already forwarded.
pub fn transmit_direct(ifindex: u32, frame: &[u8]) -> Result<(), DataplaneError> {
    send_on(&DIRECT_SOCKET, true, ifindex, frame)
}

fn send_on(
    socket: &std::sync::OnceLock<std::os::fd::OwnedFd>,
    bypass: bool,
    ifindex: u32,
    frame: &[u8],
) -> Result<(), DataplaneError> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let io =
        |op, source| DataplaneError::Io { path: format!("AF_PACKET socket (ifindex {ifindex})").into(), op, source };
    if frame.len() < 14 {
        return Err(io("sendto", std::io::Error::from_raw_os_error(libc::EINVAL)));
    }
    let fd = match socket.get() {
        Some(fd) => fd,
        None => {
            // Protocol 0: a send-only socket, so no frame is ever queued to it for reading.
            // SAFETY: plain socket(2) call.
            let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
            if raw < 0 {
                return Err(io("socket", std::io::Error::last_os_error()));
            }
            // SAFETY: a descriptor we just opened and own.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            if bypass {
                let one: libc::c_int = 1;
                // SAFETY: setsockopt with a c_int value on a socket we own.
                let r = unsafe {
                    libc::setsockopt(
                        fd.as_raw_fd(),
                        libc::SOL_PACKET,
                        libc::PACKET_QDISC_BYPASS,
                        (&one as *const libc::c_int).cast(),
                        std::mem::size_of::<libc::c_int>() as u32,
                    )
                };
                if r != 0 {
                    return Err(io("setsockopt PACKET_QDISC_BYPASS", std::io::Error::last_os_error()));
                }
            }
            // Lost race: the other socket is kept, this one closed on drop.
            let _ = socket.set(fd);
            socket.get().expect("set just above")
        }
    };
    // SAFETY: zeroed sockaddr_ll is valid; the fields the kernel reads are set below.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = ifindex as i32;
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(&frame[..6]);
    // SAFETY: buffer and address valid for the lengths given.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if n < 0 {
        return Err(io("sendto", std::io::Error::last_os_error()));
    }
    Ok(())
}
