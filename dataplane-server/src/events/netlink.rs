//! The kernel's link, address, route and neighbour changes in the server's network namespace
//! (rtnetlink multicast groups), turned into typed [`NetlinkEvent`]s for subscribers and fed to
//! the domain: owned links that disappear or change, and neighbours that gateway next hops
//! resolve to. Also asks the kernel to resolve gateways (managed neighbour entries) and takes
//! snapshots of the current state for new subscribers.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    os::fd::AsRawFd,
    sync::{Arc, Mutex},
};

use rtnetlink::{
    packet_core::{NetlinkMessage, NetlinkPayload},
    packet_route::{
        address::{AddressAttribute, AddressMessage},
        link::{LinkAttribute, LinkFlags, LinkMessage},
        neighbour::{
            NeighbourAddress, NeighbourAttribute, NeighbourExtFlags, NeighbourFlags, NeighbourMessage, NeighbourState,
        },
        route::{RouteAddress, RouteAttribute, RouteMessage},
        AddressFamily, RouteNetlinkMessage,
    },
    Handle, MulticastGroup,
};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tracing::{debug, info, warn};

use super::Hub;
use crate::{
    dataplane::Dataplane,
    domain::{Domain, NeighbourRequest},
    net::Mac,
};

/// Which part of the kernel's state an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    Link,
    Address,
    Route,
    Neighbour,
    /// Not a kind one subscribes to: every subscriber receives it.
    Overrun,
}

/// What happened to the link, address, route or neighbour (snapshot entries are `Added`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Added,
    Removed,
    Changed,
}

/// One change in the kernel, or one entry of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetlinkEvent {
    pub action: Action,
    pub ifindex: u32,
    /// The interface's name ("" if unknown, e.g. a route without an output interface).
    pub interface: String,
    pub detail: Detail,
}

/// What the event says about its link, address, route or neighbour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Detail {
    Link {
        up: bool,
        running: bool,
        mtu: u32,
        mac: Option<Mac>,
        changes: Vec<&'static str>,
        owned: bool,
    },
    Address {
        address: IpAddr,
        prefix_len: u8,
    },
    Route {
        destination: String,
        gateway: Option<IpAddr>,
        table: u32,
        metric: u32,
        /// Who installed it (`rtm_protocol`), by name: see `route_protocol_name`.
        protocol: String,
        /// `rtm_type` by name: see `route_type_name`.
        route_type: String,
    },
    Neighbour {
        address: IpAddr,
        mac: Option<Mac>,
        state: &'static str,
        router: bool,
    },
    /// The kernel dropped events (receive buffer overrun); subscribers should resync (subscribe
    /// again with a snapshot). The server itself has already re-read the kernel's state.
    Overrun,
}

impl NetlinkEvent {
    /// The kind subscribers filter on.
    pub fn kind(&self) -> EventKind {
        match self.detail {
            Detail::Link { .. } => EventKind::Link,
            Detail::Address { .. } => EventKind::Address,
            Detail::Route { .. } => EventKind::Route,
            Detail::Neighbour { .. } => EventKind::Neighbour,
            Detail::Overrun => EventKind::Overrun,
        }
    }
}

/// Why listening or a snapshot failed.
#[derive(Debug, Error)]
pub enum NetlinkError {
    /// The rtnetlink socket could not be opened or subscribed to the groups.
    #[error("opening the rtnetlink socket: {source}")]
    Socket { source: std::io::Error },
    /// Reading the kernel's current links, addresses, routes or neighbours failed.
    #[error("netlink {what} dump: {source}")]
    Dump { what: &'static str, source: rtnetlink::Error },
}

/// A link as last seen, to tell additions from changes and name removed links.
#[derive(Clone, Debug, PartialEq, Eq)]
struct LinkState {
    name: String,
    up: bool,
    running: bool,
    mtu: u32,
    mac: Option<Mac>,
}

/// Handle on the running listener: snapshots for new subscribers.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
    links: Arc<Mutex<HashMap<u32, LinkState>>>,
}

/// Starts listening: subscribes to the groups, loads the current links and neighbours (the
/// latter into the domain), registers the gateway resolver with the domain, and spawns the task
/// that turns every message into events and domain updates.
pub async fn start<D: Dataplane>(domain: Arc<Domain<D>>, hub: Arc<Hub<NetlinkEvent>>) -> Result<Netlink, NetlinkError> {
    use MulticastGroup as G;
    let groups = [G::Link, G::Ipv4Ifaddr, G::Ipv6Ifaddr, G::Ipv4Route, G::Ipv6Route, G::Neigh];
    let (mut conn, handle, mut messages) =
        rtnetlink::new_multicast_connection(&groups).map_err(|source| NetlinkError::Socket { source })?;
    grow_receive_buffer(conn.socket_mut().as_raw_fd());
    tokio::spawn(conn);

    // Subscribed first, then dumped: nothing falls between the two.
    let mut links = HashMap::new();
    let mut dump = handle.link().get().execute();
    while let Some(l) = dump.next().await {
        let l = l.map_err(|source| NetlinkError::Dump { what: "link", source })?;
        links.insert(l.header.index, link_state(&l));
    }
    let links = Arc::new(Mutex::new(links));
    let mut neighbours: HashMap<(u32, IpAddr), (Option<Mac>, NeighbourState)> = HashMap::new();
    let mut dump = handle.neighbours().get().execute();
    while let Some(n) = dump.next().await {
        let n = n.map_err(|source| NetlinkError::Dump { what: "neighbour", source })?;
        if let Some(nb) = decode_neighbour(&n) {
            domain.neighbour_changed(nb.ifindex, nb.address, nb.usable_mac());
            neighbours.insert((nb.ifindex, nb.address), (nb.mac, nb.state));
        }
    }

    let (resolve_tx, mut resolve_rx) = mpsc::unbounded_channel::<NeighbourRequest>();
    domain.set_neighbour_resolver(resolve_tx);
    let netlink = Netlink { handle: handle.clone(), links: links.clone() };
    tokio::spawn(async move {
        let mut listener = Listener { domain, hub, links, neighbours, handle: handle.clone(), managed: HashSet::new() };
        loop {
            tokio::select! {
                m = messages.next() => match m {
                    Some((msg, _)) => listener.message(msg).await,
                    None => {
                        warn!("netlink socket closed; netlink events stop");
                        return;
                    }
                },
                Some(req) = resolve_rx.recv() => listener.neighbour_request(req).await,
            }
        }
    });
    info!("listening to netlink: links, addresses, routes, neighbours");
    Ok(netlink)
}

struct Listener<D: Dataplane> {
    domain: Arc<Domain<D>>,
    hub: Arc<Hub<NetlinkEvent>>,
    links: Arc<Mutex<HashMap<u32, LinkState>>>,
    neighbours: HashMap<(u32, IpAddr), (Option<Mac>, NeighbourState)>,
    handle: Handle,
    /// Managed neighbour entries this server created, removed when no gateway needs them.
    managed: HashSet<(u32, IpAddr)>,
}

impl<D: Dataplane> Listener<D> {
    async fn neighbour_request(&mut self, req: NeighbourRequest) {
        let key = (req.ifindex, req.address);
        if req.keep {
            if resolve(&self.handle, req).await {
                self.managed.insert(key);
            }
        } else if self.managed.remove(&key) {
            release(&self.handle, req).await;
        }
    }

    async fn message(&mut self, msg: NetlinkMessage<RouteNetlinkMessage>) {
        let m = match msg.payload {
            NetlinkPayload::InnerMessage(m) => m,
            NetlinkPayload::Overrun(_) => return self.overrun().await,
            _ => return,
        };
        match m {
            RouteNetlinkMessage::NewLink(l) => self.link_added_or_changed(&l).await,
            RouteNetlinkMessage::DelLink(l) => self.link_removed(&l).await,
            RouteNetlinkMessage::NewAddress(a) => self.address(&a, Action::Added).await,
            RouteNetlinkMessage::DelAddress(a) => self.address(&a, Action::Removed).await,
            RouteNetlinkMessage::NewRoute(r) => self.route(&r, Action::Added),
            RouteNetlinkMessage::DelRoute(r) => self.route(&r, Action::Removed),
            RouteNetlinkMessage::NewNeighbour(n) => self.neighbour(&n, false).await,
            RouteNetlinkMessage::DelNeighbour(n) => self.neighbour(&n, true).await,
            _ => {}
        }
    }

    fn name(&self, ifindex: u32) -> String {
        lock(&self.links).get(&ifindex).map(|l| l.name.clone()).unwrap_or_default()
    }

    async fn link_added_or_changed(&mut self, l: &LinkMessage) {
        let ifindex = l.header.index;
        let now = link_state(l);
        let before = lock(&self.links).insert(ifindex, now.clone());
        let (action, changes) = match &before {
            None => (Action::Added, Vec::new()),
            Some(b) => {
                let c = link_changes(b, &now);
                if c.is_empty() {
                    return; // statistics or attributes nobody asked about
                }
                (Action::Changed, c)
            }
        };
        let owned = self.domain.interface_by_ifindex(ifindex).is_some();
        if owned && changes.iter().any(|c| matches!(*c, "mtu" | "mac")) {
            let d = self.domain.clone();
            match tokio::task::spawn_blocking(move || d.link_changed(ifindex)).await {
                Ok(Err(e)) => warn!(ifindex, error = %e, "updating an owned interface failed"),
                Err(e) => warn!(ifindex, error = %e, "updating an owned interface panicked"),
                Ok(Ok(_)) => {}
            }
        }
        self.publish(NetlinkEvent {
            action,
            ifindex,
            interface: now.name.clone(),
            detail: link_detail(&now, changes, owned),
        });
    }

    async fn link_removed(&mut self, l: &LinkMessage) {
        let ifindex = l.header.index;
        let state = lock(&self.links).remove(&ifindex).unwrap_or_else(|| link_state(l));
        self.neighbours.retain(|(i, _), _| *i != ifindex);
        let d = self.domain.clone();
        let owned = match tokio::task::spawn_blocking(move || d.link_removed(ifindex)).await {
            Ok(Ok(name)) => name.is_some(),
            Ok(Err(e)) => {
                warn!(ifindex, error = %e, "removing a vanished interface from the dataplane failed");
                true
            }
            Err(e) => {
                warn!(ifindex, error = %e, "removing a vanished interface panicked");
                true
            }
        };
        self.publish(NetlinkEvent {
            action: Action::Removed,
            ifindex,
            interface: state.name.clone(),
            detail: link_detail(&state, Vec::new(), owned),
        });
    }

    async fn address(&mut self, a: &AddressMessage, action: Action) {
        let Some((address, prefix_len)) = decode_address(a) else { return };
        let ifindex = a.header.index;
        if self.domain.interface_by_ifindex(ifindex).is_some() {
            // Owned: its addresses are the source of the ICMP errors XDP sends and decide what is
            // local.
            let d = self.domain.clone();
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || d.link_changed(ifindex)).await {
                warn!(ifindex, error = %e, "updating an owned interface's addresses failed");
            }
        }
        let interface = self.name(ifindex);
        self.publish(NetlinkEvent { action, ifindex, interface, detail: Detail::Address { address, prefix_len } });
    }

    fn route(&mut self, r: &RouteMessage, action: Action) {
        let Some((ifindex, detail)) = decode_route(r) else { return };
        let interface = self.name(ifindex);
        self.publish(NetlinkEvent { action, ifindex, interface, detail });
    }

    async fn neighbour(&mut self, n: &NeighbourMessage, removed: bool) {
        let Some(nb) = decode_neighbour(n) else { return };
        let key = (nb.ifindex, nb.address);
        let action = if removed {
            self.neighbours.remove(&key);
            Action::Removed
        } else {
            match self.neighbours.insert(key, (nb.mac, nb.state)) {
                None => Action::Added,
                Some(before) if before == (nb.mac, nb.state) => return,
                Some(_) => Action::Changed,
            }
        };
        let mac = if removed { None } else { nb.usable_mac() };
        let d = self.domain.clone();
        let address = nb.address;
        // Cheap unless a gateway uses it; off the async threads all the same (it takes the
        // domain's lock).
        let _ = tokio::task::spawn_blocking(move || d.neighbour_changed(nb.ifindex, address, mac)).await;
        let interface = self.name(nb.ifindex);
        self.publish(NetlinkEvent { action, ifindex: nb.ifindex, interface, detail: nb.detail() });
    }

    /// The kernel dropped messages (the socket's buffer overflowed): the caches and the domain
    /// may have missed changes. Everything is read again and applied as differences, and
    /// subscribers are told to resync.
    async fn overrun(&mut self) {
        warn!("netlink receive buffer overrun: events were lost; reading the kernel's state again");
        self.publish(NetlinkEvent {
            action: Action::Changed,
            ifindex: 0,
            interface: String::new(),
            detail: Detail::Overrun,
        });
        let mut links = HashMap::new();
        let mut dump = self.handle.link().get().execute();
        while let Some(l) = dump.next().await {
            match l {
                Ok(l) => {
                    links.insert(l.header.index, link_state(&l));
                }
                Err(e) => return warn!(error = %e, "link dump after an overrun failed"),
            }
        }
        let gone: Vec<u32> = lock(&self.links).keys().filter(|i| !links.contains_key(i)).copied().collect();
        *lock(&self.links) = links.clone();
        for ifindex in gone {
            let d = self.domain.clone();
            let _ = tokio::task::spawn_blocking(move || d.link_removed(ifindex)).await;
        }
        for ifindex in links.keys().copied() {
            let d = self.domain.clone();
            let _ = tokio::task::spawn_blocking(move || d.link_changed(ifindex)).await;
        }
        let mut now = HashMap::new();
        let mut dump = self.handle.neighbours().get().execute();
        while let Some(n) = dump.next().await {
            match n {
                Ok(n) => {
                    if let Some(nb) = decode_neighbour(&n) {
                        now.insert((nb.ifindex, nb.address), (nb.mac, nb.state, nb.usable_mac()));
                    }
                }
                Err(e) => return warn!(error = %e, "neighbour dump after an overrun failed"),
            }
        }
        let stale: Vec<(u32, IpAddr)> = self.neighbours.keys().filter(|k| !now.contains_key(k)).copied().collect();
        let d = self.domain.clone();
        let updates: Vec<((u32, IpAddr), Option<Mac>)> =
            stale.iter().map(|k| (*k, None)).chain(now.iter().map(|(k, v)| (*k, v.2))).collect();
        let _ = tokio::task::spawn_blocking(move || {
            for ((ifindex, address), mac) in updates {
                d.neighbour_changed(ifindex, address, mac);
            }
        })
        .await;
        self.neighbours = now.into_iter().map(|(k, (mac, state, _))| (k, (mac, state))).collect();
    }

    fn publish(&self, event: NetlinkEvent) {
        let seq = self.hub.publish(event);
        debug!(seq, "netlink event");
    }
}

impl Netlink {
    /// The current links, addresses, neighbours and routes of `kinds`, as ADDED events.
    pub async fn snapshot(&self, kinds: &[EventKind]) -> Result<Vec<NetlinkEvent>, NetlinkError> {
        let mut out = Vec::new();
        let names: HashMap<u32, String> = lock(&self.links).iter().map(|(i, l)| (*i, l.name.clone())).collect();
        let name = |i: u32| names.get(&i).cloned().unwrap_or_default();
        if kinds.contains(&EventKind::Link) {
            let mut dump = self.handle.link().get().execute();
            while let Some(l) = dump.next().await {
                let l = l.map_err(|source| NetlinkError::Dump { what: "link", source })?;
                let s = link_state(&l);
                // `owned` is filled in by the caller, which knows the domain.
                out.push(NetlinkEvent {
                    action: Action::Added,
                    ifindex: l.header.index,
                    interface: s.name.clone(),
                    detail: link_detail(&s, Vec::new(), false),
                });
            }
        }
        if kinds.contains(&EventKind::Address) {
            let mut dump = self.handle.address().get().execute();
            while let Some(a) = dump.next().await {
                let a = a.map_err(|source| NetlinkError::Dump { what: "address", source })?;
                if let Some((address, prefix_len)) = decode_address(&a) {
                    let ifindex = a.header.index;
                    out.push(NetlinkEvent {
                        action: Action::Added,
                        ifindex,
                        interface: name(ifindex),
                        detail: Detail::Address { address, prefix_len },
                    });
                }
            }
        }
        if kinds.contains(&EventKind::Neighbour) {
            let mut dump = self.handle.neighbours().get().execute();
            while let Some(n) = dump.next().await {
                let n = n.map_err(|source| NetlinkError::Dump { what: "neighbour", source })?;
                if let Some(nb) = decode_neighbour(&n) {
                    out.push(NetlinkEvent {
                        action: Action::Added,
                        ifindex: nb.ifindex,
                        interface: name(nb.ifindex),
                        detail: nb.detail(),
                    });
                }
            }
        }
        if kinds.contains(&EventKind::Route) {
            for family in [AddressFamily::Inet, AddressFamily::Inet6] {
                let mut msg = RouteMessage::default();
                msg.header.address_family = family;
                let mut dump = self.handle.route().get(msg).execute();
                while let Some(r) = dump.next().await {
                    let r = r.map_err(|source| NetlinkError::Dump { what: "route", source })?;
                    if let Some((ifindex, detail)) = decode_route(&r) {
                        out.push(NetlinkEvent { action: Action::Added, ifindex, interface: name(ifindex), detail });
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Asks the kernel to resolve `req` and keep it resolved: a neighbour entry with the "managed"
/// flag (Linux 5.16+), which the kernel probes right away and refreshes on its own, so a gateway
/// resolves even when nothing routed by the kernel ever sends to it (XDP forwards the traffic;
/// the kernel's forwarding may be off). An existing entry is left alone. Returns whether an
/// entry was created.
async fn resolve(handle: &Handle, req: NeighbourRequest) -> bool {
    let mut add = handle.neighbours().add(req.ifindex, req.address).state(NeighbourState::None);
    add.message_mut().attributes.push(NeighbourAttribute::ExtFlags(NeighbourExtFlags::Managed));
    match add.execute().await {
        Ok(()) => {
            info!(ifindex = req.ifindex, address = %req.address, "asked the kernel to resolve a gateway");
            true
        }
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => false,
        Err(e) => {
            warn!(ifindex = req.ifindex, address = %req.address, error = %e, "asking the kernel to resolve a gateway failed");
            false
        }
    }
}

/// Removes a managed entry this server created for a gateway no next hop uses any more.
async fn release(handle: &Handle, req: NeighbourRequest) {
    let mut msg = NeighbourMessage::default();
    msg.header.family = if req.address.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    msg.header.ifindex = req.ifindex;
    msg.attributes.push(NeighbourAttribute::Destination(match req.address {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    }));
    match handle.neighbours().del(msg).execute().await {
        Ok(()) => info!(ifindex = req.ifindex, address = %req.address, "released a gateway's managed neighbour entry"),
        // Already gone (its link went, or someone deleted it).
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENOENT || e.raw_code() == -libc::ENODEV => {}
        Err(e) => {
            warn!(ifindex = req.ifindex, address = %req.address, error = %e, "releasing a managed neighbour entry failed")
        }
    }
}

/// 8 MiB of receive buffer (SO_RCVBUFFORCE: the server runs privileged, past rmem_max), so a
/// burst of changes (a link with thousands of routes going away) does not overrun it.
fn grow_receive_buffer(fd: std::os::fd::RawFd) {
    let size: libc::c_int = 8 << 20;
    // SAFETY: plain setsockopt on a socket we own, with a c_int option value.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as u32,
        )
    };
    if rc != 0 {
        warn!(error = %std::io::Error::last_os_error(), "could not grow the netlink receive buffer");
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn link_state(l: &LinkMessage) -> LinkState {
    let mut s = LinkState {
        name: String::new(),
        up: l.header.flags.contains(LinkFlags::Up),
        running: l.header.flags.contains(LinkFlags::Running),
        mtu: 0,
        mac: None,
    };
    for a in &l.attributes {
        match a {
            LinkAttribute::IfName(n) => s.name = n.clone(),
            LinkAttribute::Mtu(m) => s.mtu = *m,
            LinkAttribute::Address(b) if b.len() == 6 => s.mac = Some(Mac([b[0], b[1], b[2], b[3], b[4], b[5]])),
            _ => {}
        }
    }
    s
}

fn link_changes(before: &LinkState, now: &LinkState) -> Vec<&'static str> {
    let mut c = Vec::new();
    if before.up != now.up {
        c.push(if now.up { "up" } else { "down" });
    }
    if before.running != now.running {
        c.push(if now.running { "carrier_up" } else { "carrier_down" });
    }
    if before.mtu != now.mtu {
        c.push("mtu");
    }
    if before.mac != now.mac {
        c.push("mac");
    }
    if before.name != now.name {
        c.push("name");
    }
    c
}

fn link_detail(s: &LinkState, changes: Vec<&'static str>, owned: bool) -> Detail {
    Detail::Link { up: s.up, running: s.running, mtu: s.mtu, mac: s.mac, changes, owned }
}

/// The address of an address message, and its prefix length.
fn decode_address(a: &AddressMessage) -> Option<(IpAddr, u8)> {
    // IPv4 puts the interface's own address in IFA_LOCAL (IFA_ADDRESS is the peer on
    // point-to-point links); IPv6 only has IFA_ADDRESS.
    let local = a.attributes.iter().find_map(|x| match x {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let addr = a.attributes.iter().find_map(|x| match x {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    });
    local.or(addr).map(|ip| (ip, a.header.prefix_len))
}

/// The output interface and the event detail of an IPv4 or IPv6 route message.
fn decode_route(r: &RouteMessage) -> Option<(u32, Detail)> {
    let family = r.header.address_family;
    if family != AddressFamily::Inet && family != AddressFamily::Inet6 {
        return None;
    }
    let ip = |a: &RouteAddress| match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    };
    let (mut dst, mut gateway, mut oif, mut table, mut metric) = (None, None, 0, u32::from(r.header.table), 0);
    for a in &r.attributes {
        match a {
            RouteAttribute::Destination(d) => dst = ip(d),
            RouteAttribute::Gateway(g) => gateway = ip(g),
            RouteAttribute::Oif(i) => oif = *i,
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Priority(p) => metric = *p,
            _ => {}
        }
    }
    let dst = dst.unwrap_or(if family == AddressFamily::Inet {
        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    });
    let destination = format!("{dst}/{}", r.header.destination_prefix_length);
    let protocol = route_protocol_name(u8::from(r.header.protocol));
    let route_type = route_type_name(u8::from(r.header.kind));
    Some((oif, Detail::Route { destination, gateway, table, metric, protocol, route_type }))
}

/// The API's name of a route's protocol (`rtm_protocol`, the kernel's `RTPROT_*`), or its number.
/// Mapped from the number, not from the netlink crate's enum: the names are part of the API and
/// must not change when the crate renames or adds a variant.
fn route_protocol_name(protocol: u8) -> String {
    let name = match protocol {
        0 => "unspec",
        1 => "icmpredirect",
        2 => "kernel",
        3 => "boot",
        4 => "static",
        8 => "gated",
        9 => "ra",
        10 => "mrt",
        11 => "zebra",
        12 => "bird",
        13 => "dnrouted",
        14 => "xorp",
        15 => "ntk",
        16 => "dhcp",
        17 => "mrouted",
        18 => "keepalived",
        42 => "babel",
        186 => "bgp",
        187 => "isis",
        188 => "ospf",
        189 => "rip",
        192 => "eigrp",
        n => return n.to_string(),
    };
    name.to_owned()
}

/// The API's name of a route's type (`rtm_type`, the kernel's `RTN_*`), or its number; see
/// [`route_protocol_name`].
fn route_type_name(kind: u8) -> String {
    let name = match kind {
        0 => "unspec",
        1 => "unicast",
        2 => "local",
        3 => "broadcast",
        4 => "anycast",
        5 => "multicast",
        6 => "blackhole",
        7 => "unreachable",
        8 => "prohibit",
        9 => "throw",
        10 => "nat",
        11 => "externalresolve",
        n => return n.to_string(),
    };
    name.to_owned()
}

struct Neighbour {
    ifindex: u32,
    address: IpAddr,
    mac: Option<Mac>,
    state: NeighbourState,
    router: bool,
}

impl Neighbour {
    /// The MAC if the kernel would send to it (a valid entry, `NUD_VALID`).
    fn usable_mac(&self) -> Option<Mac> {
        use NeighbourState as S;
        match self.state {
            S::Reachable | S::Stale | S::Delay | S::Probe | S::Permanent | S::Noarp => self.mac,
            _ => None,
        }
    }

    fn detail(&self) -> Detail {
        use NeighbourState as S;
        let state = match self.state {
            S::Incomplete => "incomplete",
            S::Reachable => "reachable",
            S::Stale => "stale",
            S::Delay => "delay",
            S::Probe => "probe",
            S::Failed => "failed",
            S::Noarp => "noarp",
            S::Permanent => "permanent",
            S::None => "none",
            _ => "other",
        };
        Detail::Neighbour { address: self.address, mac: self.mac, state, router: self.router }
    }
}

/// An IPv4 or IPv6 neighbour message's entry.
fn decode_neighbour(n: &NeighbourMessage) -> Option<Neighbour> {
    let mut address = None;
    let mut mac = None;
    for a in &n.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => address = Some(IpAddr::V4(*v4)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => address = Some(IpAddr::V6(*v6)),
            NeighbourAttribute::LinkLayerAddress(b) if b.len() == 6 => {
                mac = Some(Mac([b[0], b[1], b[2], b[3], b[4], b[5]]))
            }
            _ => {}
        }
    }
    Some(Neighbour {
        ifindex: n.header.ifindex,
        address: address?,
        mac,
        state: n.header.state,
        router: n.header.flags.contains(NeighbourFlags::Router),
    })
}

#[cfg(test)]
mod tests {
    use rtnetlink::packet_route::route::{RouteProtocol, RouteType};

    use super::*;

    #[test]
    fn route_protocol_name_known_numbers_kernel_names_others_decimal() {
        let cases = [
            (RouteProtocol::Unspec, "unspec"),
            (RouteProtocol::IcmpRedirect, "icmpredirect"),
            (RouteProtocol::Kernel, "kernel"),
            (RouteProtocol::Boot, "boot"),
            (RouteProtocol::Static, "static"),
            (RouteProtocol::Ra, "ra"),
            (RouteProtocol::Dhcp, "dhcp"),
            (RouteProtocol::KeepAlived, "keepalived"),
            (RouteProtocol::Babel, "babel"),
            (RouteProtocol::Bgp, "bgp"),
            (RouteProtocol::Ospf, "ospf"),
            (RouteProtocol::Eigrp, "eigrp"),
            (RouteProtocol::Other(99), "99"),
            (RouteProtocol::Other(250), "250"),
        ];
        for (protocol, name) in cases {
            assert_eq!(route_protocol_name(u8::from(protocol)), name, "{protocol:?}");
        }
    }

    #[test]
    fn route_type_name_known_numbers_kernel_names_others_decimal() {
        let cases = [
            (RouteType::Unspec, "unspec"),
            (RouteType::Unicast, "unicast"),
            (RouteType::Local, "local"),
            (RouteType::Broadcast, "broadcast"),
            (RouteType::Anycast, "anycast"),
            (RouteType::Multicast, "multicast"),
            (RouteType::BlackHole, "blackhole"),
            (RouteType::Unreachable, "unreachable"),
            (RouteType::Prohibit, "prohibit"),
            (RouteType::Throw, "throw"),
            (RouteType::Nat, "nat"),
            (RouteType::ExternalResolve, "externalresolve"),
            (RouteType::Other(12), "12"),
        ];
        for (kind, name) in cases {
            assert_eq!(route_type_name(u8::from(kind)), name, "{kind:?}");
        }
    }
}
