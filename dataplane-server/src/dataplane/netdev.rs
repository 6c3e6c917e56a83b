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
