//! The flow tables (`FLOWS_V4`, `FLOWS_V6`), flow mode per interface (`FLOW_CONFIG`), the HOLD
//! accounting the server shares with the programs, and the re-injection of held first packets.

use std::net::IpAddr;

use aya::maps::{Array, HashMap, MapData, MapError};
use dataplane_common::{
    flow::{FlowConfig, FlowKeyV4, FlowKeyV6, FlowValue, HoldRef, HoldSweep, FLOW_HOLD, SWEEP_MAX},
    globals::{HOLDS_CREATED, HOLDS_RESOLVED},
    maps as names,
};

use super::{loader::open_map, DataplaneError, KernelDataplane};

/// A flow's key, either family (ports 0 where the protocol has none).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub vrf: u32,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
}

impl FlowKey {
    /// The key of the reply direction.
    pub fn reversed(&self) -> Self {
        Self { src: self.dst, dst: self.src, sport: self.dport, dport: self.sport, ..*self }
    }
}

/// The kernel side of flows.
pub trait Flows {
    /// Flow mode settings of interface `slot`.
    fn set_flow_config(&self, slot: u32, cfg: &dataplane_common::flow::FlowConfig) -> Result<(), DataplaneError>;
    /// The flow configuration of interface slot `slot` as the kernel has it.
    fn flow_config(&self, slot: u32) -> Result<dataplane_common::flow::FlowConfig, DataplaneError>;
    /// Creates or replaces a flow.
    fn put_flow(&self, key: &FlowKey, value: &dataplane_common::flow::FlowValue) -> Result<(), DataplaneError>;
    fn get_flow(&self, key: &FlowKey) -> Result<Option<dataplane_common::flow::FlowValue>, DataplaneError>;
    /// Removes a flow (absent is fine).
    fn remove_flow(&self, key: &FlowKey) -> Result<(), DataplaneError>;
    /// Removes each `(key, request id)`'s entry that is still the HOLD of that request (not a
    /// flow installed since, nor a later miss's HOLD); returns how many went.
    fn remove_holds(&self, holds: &[(FlowKey, u64)]) -> Result<usize, DataplaneError> {
        let mut gone = 0;
        for (key, id) in holds {
            if self.get_flow(key)?.is_some_and(|v| v.action == FLOW_HOLD && v.request_id == *id) {
                self.remove_flow(key)?;
                gone += 1;
            }
        }
        Ok(gone)
    }
    /// Every flow in both tables (read a page at a time, as [`Self::walk_flows`] does).
    fn flows(&self) -> Result<Vec<(FlowKey, dataplane_common::flow::FlowValue)>, DataplaneError>;
    /// Every flow in both tables, handed to `each` a page at a time, with nothing held between
    /// pages (a caller may pause there). A table that changes during the walk may have flows
    /// skipped or seen twice.
    fn walk_flows(
        &self,
        each: &mut dyn FnMut(Vec<(FlowKey, dataplane_common::flow::FlowValue)>),
    ) -> Result<(), DataplaneError> {
        each(self.flows()?);
        Ok(())
    }
    /// Publishes how many HOLDs the server has resolved in total (`globals::HOLDS_RESOLVED`).
    fn set_holds_resolved(&self, resolved: u64) -> Result<(), DataplaneError>;
    /// HOLDs the XDP program created in total (`globals::HOLDS_CREATED`).
    fn holds_created(&self) -> Result<u64, DataplaneError>;
    /// Runs `frame` through the attached XDP program as if received on `ifindex`, for real
    /// (BPF_PROG_TEST_RUN with live frames: its redirect or XDP_PASS happens). Returns the verdict.
    fn reinject(&self, ifindex: u32, frame: &[u8]) -> Result<u32, DataplaneError>;
    /// Sends a whole Ethernet frame out of `ifindex` (a controller's packet-out).
    fn transmit(&self, ifindex: u32, frame: &[u8]) -> Result<(), DataplaneError>;
    /// [`Self::reinject`] for a frame whose flow forwards out of `egress`: the attached program
    /// runs on it (a plain test run: counters, flow state, rewrite) and its output is sent as its
    /// verdict says (XDP_REDIRECT out of `egress`, XDP_TX back out of `ifindex`, bypassing the
    /// qdisc and TC egress as an XDP transmit does). Returns the verdict.
    /// `egress` [`NO_EGRESS`]: the flow drops; the run counts the packet, nothing is sent.
    fn reinject_via(&self, ifindex: u32, egress: u32, frame: &[u8]) -> Result<u32, DataplaneError>;
}

/// The `egress` of [`Flows::reinject_via`] for a flow that drops (no interface has index 0).
pub const NO_EGRESS: u32 = 0;

impl Flows for KernelDataplane {
    fn set_flow_config(&self, slot: u32, cfg: &dataplane_common::flow::FlowConfig) -> Result<(), DataplaneError> {
        let mut inner = self.lock();
        inner.flows.config.set(slot, cfg, 0).map_err(DataplaneError::map(names::FLOW_CONFIG, "update"))?;
        // After the config: the packet path enters the flow stage on the entry's flag.
        inner.interfaces.set_flag(Some(slot), dataplane_common::route::IFACE_FLOWS, cfg.enabled != 0)
    }

    fn flow_config(&self, slot: u32) -> Result<dataplane_common::flow::FlowConfig, DataplaneError> {
        self.lock().flows.config.get(&slot, 0).map_err(DataplaneError::map(names::FLOW_CONFIG, "lookup"))
    }

    fn put_flow(&self, key: &super::FlowKey, value: &dataplane_common::flow::FlowValue) -> Result<(), DataplaneError> {
        self.lock().flows.put(key, value)
    }

    fn get_flow(&self, key: &super::FlowKey) -> Result<Option<dataplane_common::flow::FlowValue>, DataplaneError> {
        self.lock().flows.get(key)
    }

    fn remove_flow(&self, key: &super::FlowKey) -> Result<(), DataplaneError> {
        self.lock().flows.remove(key)
    }

    fn remove_holds(&self, holds: &[(super::FlowKey, u64)]) -> Result<usize, DataplaneError> {
        let mut inner = self.lock();
        let mut gone = 0;
        for chunk in holds.chunks(SWEEP_MAX) {
            gone += inner.sweep_holds(chunk)?;
        }
        Ok(gone)
    }

    fn flows(&self) -> Result<Vec<(super::FlowKey, dataplane_common::flow::FlowValue)>, DataplaneError> {
        let mut all = Vec::new();
        self.walk_pages(&mut |page| all.extend(page))?;
        Ok(all)
    }

    fn walk_flows(
        &self,
        each: &mut dyn FnMut(Vec<(super::FlowKey, dataplane_common::flow::FlowValue)>),
    ) -> Result<(), DataplaneError> {
        self.walk_pages(each)
    }

    fn set_holds_resolved(&self, resolved: u64) -> Result<(), DataplaneError> {
        self.lock().globals.set(HOLDS_RESOLVED, resolved)
    }

    fn holds_created(&self) -> Result<u64, DataplaneError> {
        self.lock().globals.get(HOLDS_CREATED)
    }

    fn reinject(&self, ifindex: u32, frame: &[u8]) -> Result<u32, DataplaneError> {
        self.test_run_live(ifindex, frame)
    }

    fn transmit(&self, ifindex: u32, frame: &[u8]) -> Result<(), DataplaneError> {
        super::netdev::transmit(ifindex, frame)
    }

    fn reinject_via(&self, ifindex: u32, egress: u32, frame: &[u8]) -> Result<u32, DataplaneError> {
        const XDP_TX: u32 = 3;
        const XDP_REDIRECT: u32 = 4;
        let (verdict, out) = self.test_run_at(ifindex, frame)?;
        match verdict {
            // The flow was replaced by one that forwards since the caller looked (a race with
            // another decision): where the program redirected it is not known here.
            XDP_REDIRECT if egress == NO_EGRESS => {
                return Err(DataplaneError::Reinject { reason: "redirected where its flow was to drop it" })
            }
            XDP_REDIRECT => super::netdev::transmit_direct(egress, &out)?,
            XDP_TX => super::netdev::transmit_direct(ifindex, &out)?,
            // Dropped (and counted) by the program, or nothing to send.
            _ => {}
        }
        Ok(verdict)
    }
}

/// Loads (verifies) `dp_sweep_holds` of `ebpf` unless it is loaded: when the object is, so that
/// no aging pass pays the verifier's ~ms under the dataplane's lock.
pub(super) fn load_sweeper(ebpf: &mut aya::Ebpf) -> Result<(), DataplaneError> {
    let name = dataplane_common::programs::SWEEP_HOLDS;
    let xdp: &mut aya::programs::Xdp = super::loader::program_mut(ebpf, name)?;
    if xdp.fd().is_err() {
        let t = std::time::Instant::now();
        xdp.load().map_err(DataplaneError::program(name, "load"))?;
        tracing::debug!(took = ?t.elapsed(), "{name} loaded");
    }
    Ok(())
}

impl super::loader::Inner {
    /// One run of `dp_sweep_holds` over up to [`SWEEP_MAX`] HOLDs (loaded on first use, from
    /// the object whose maps the attached programs use): two bpf(2) calls for them all.
    fn sweep_holds(&mut self, holds: &[(FlowKey, u64)]) -> Result<usize, DataplaneError> {
        use aya::programs::{TestRun, TestRunOptions, Xdp};
        let mut list =
            HoldSweep { count: holds.len().min(SWEEP_MAX) as u32, _pad: 0, holds: [HoldRef::default(); SWEEP_MAX] };
        for (slot, (k, id)) in list.holds.iter_mut().zip(holds) {
            slot.request_id = *id;
            match (k.src, k.dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => (slot.family, slot.k4) = (4, key4(k, s, d)),
                (IpAddr::V6(s), IpAddr::V6(d)) => (slot.family, slot.k6) = (6, key6(k, s, d)),
                // No such flow can exist: an entry that matches nothing.
                _ => slot.family = 0,
            }
        }
        let map = self
            .ebpf
            .map_mut(names::HOLD_SWEEP)
            .ok_or(DataplaneError::Missing { what: "map", name: names::HOLD_SWEEP })?;
        let mut array: Array<_, HoldSweep> =
            Array::try_from(map).map_err(DataplaneError::map(names::HOLD_SWEEP, "open"))?;
        array.set(0, list, 0).map_err(DataplaneError::map(names::HOLD_SWEEP, "update"))?;
        let name = dataplane_common::programs::SWEEP_HOLDS;
        load_sweeper(&mut self.ebpf)?;
        let xdp: &mut Xdp = super::loader::program_mut(&mut self.ebpf, name)?;
        // An Ethernet header's worth of frame, the least a test run takes; the count comes
        // back over its first bytes.
        let frame = [0u8; 14];
        let mut out = [0u8; 14];
        let r = xdp
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                data_out: Some(&mut out),
                repeat: 1,
                ..Default::default()
            })
            .map_err(DataplaneError::program(name, "test run"))?;
        // XDP_DROP: it ran to the end (XDP_ABORTED: its list or frame was not there).
        const XDP_DROP: u32 = 1;
        if r.return_value != XDP_DROP {
            return Err(DataplaneError::Verdict { program: name, verdict: r.return_value, expected: XDP_DROP });
        }
        Ok(u32::from_ne_bytes([out[0], out[1], out[2], out[3]]) as usize)
    }
}

/// The flow tables and flow-mode maps.
pub struct FlowMaps {
    pub v4: HashMap<MapData, FlowKeyV4, FlowValue>,
    pub v6: HashMap<MapData, FlowKeyV6, FlowValue>,
    pub config: Array<MapData, FlowConfig>,
}

fn key4(k: &FlowKey, src: std::net::Ipv4Addr, dst: std::net::Ipv4Addr) -> FlowKeyV4 {
    FlowKeyV4 {
        vrf: k.vrf,
        src: src.octets(),
        dst: dst.octets(),
        sport: k.sport,
        dport: k.dport,
        proto: k.proto,
        _pad: [0; 3],
    }
}

fn key6(k: &FlowKey, src: std::net::Ipv6Addr, dst: std::net::Ipv6Addr) -> FlowKeyV6 {
    FlowKeyV6 {
        vrf: k.vrf,
        src: src.octets(),
        dst: dst.octets(),
        sport: k.sport,
        dport: k.dport,
        proto: k.proto,
        _pad: [0; 3],
    }
}

impl FlowMaps {
    pub(super) fn open(ebpf: &mut aya::Ebpf) -> Result<Self, DataplaneError> {
        Ok(Self {
            v4: open_map(ebpf, names::FLOWS_V4)?,
            v6: open_map(ebpf, names::FLOWS_V6)?,
            config: open_map(ebpf, names::FLOW_CONFIG)?,
        })
    }

    /// Whether flow mode is on for interface slot `slot`.
    pub fn enabled(&self, slot: u32) -> Result<bool, DataplaneError> {
        Ok(self.config.get(&slot, 0).map_err(DataplaneError::map(names::FLOW_CONFIG, "lookup"))?.enabled != 0)
    }

    pub fn put(&mut self, k: &FlowKey, v: &FlowValue) -> Result<(), DataplaneError> {
        match (k.src, k.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                self.v4.insert(key4(k, s, d), v, 0).map_err(DataplaneError::map(names::FLOWS_V4, "insert"))
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                self.v6.insert(key6(k, s, d), v, 0).map_err(DataplaneError::map(names::FLOWS_V6, "insert"))
            }
            _ => Err(DataplaneError::Missing { what: "flow family", name: "mixed IPv4/IPv6 flow key" }),
        }
    }

    pub fn get(&self, k: &FlowKey) -> Result<Option<FlowValue>, DataplaneError> {
        let r = match (k.src, k.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => self.v4.get(&key4(k, s, d), 0),
            (IpAddr::V6(s), IpAddr::V6(d)) => self.v6.get(&key6(k, s, d), 0),
            _ => return Ok(None),
        };
        match r {
            Ok(v) => Ok(Some(v)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(DataplaneError::map(names::FLOWS_V4, "lookup")(e)),
        }
    }

    pub fn remove(&mut self, k: &FlowKey) -> Result<(), DataplaneError> {
        let r = match (k.src, k.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => self.v4.remove(&key4(k, s, d)),
            (IpAddr::V6(s), IpAddr::V6(d)) => self.v6.remove(&key6(k, s, d)),
            _ => return Ok(()),
        };
        match r {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(DataplaneError::map(names::FLOWS_V4, "remove")(e)),
        }
    }

    /// Up to about `max` flows of one table from `cursor` on, read with `BPF_MAP_LOOKUP_BATCH`
    /// (a syscall for many flows rather than two per flow), or the whole table entry by entry
    /// where the kernel has no batch lookups for the map. Returns the flows and whether the
    /// table's walk is complete.
    fn page(
        &self,
        family: Family,
        cursor: &mut WalkCursor,
        max: usize,
    ) -> Result<(Vec<(FlowKey, FlowValue)>, bool), DataplaneError> {
        use aya::maps::IterableMap;
        use std::os::fd::{AsFd, AsRawFd};
        fn key(vrf: u32, src: IpAddr, dst: IpAddr, proto: u8, ports: (u16, u16)) -> FlowKey {
            FlowKey { vrf, src, dst, proto, sport: ports.0, dport: ports.1 }
        }
        let v4 = |k: &FlowKeyV4| key(k.vrf, k.src.into(), k.dst.into(), k.proto, (k.sport, k.dport));
        let v6 = |k: &FlowKeyV6| key(k.vrf, k.src.into(), k.dst.into(), k.proto, (k.sport, k.dport));
        let (fd, name) = match family {
            Family::V4 => (self.v4.map().fd().as_fd().as_raw_fd(), names::FLOWS_V4),
            Family::V6 => (self.v6.map().fd().as_fd().as_raw_fd(), names::FLOWS_V6),
        };
        let io = |source| DataplaneError::Io { path: name.into(), op: "BPF_MAP_LOOKUP_BATCH", source };
        match family {
            Family::V4 => match lookup_batch::<FlowKeyV4>(fd, cursor, max) {
                Ok((entries, done)) => Ok((entries.iter().map(|(k, v)| (v4(k), *v)).collect(), done)),
                // An entry evicted or deleted during the walk is simply not listed.
                Err(e) if batch_unsupported(&e) => {
                    Ok((self.v4.iter().flatten().map(|(k, v)| (v4(&k), v)).collect(), true))
                }
                Err(e) => Err(io(e)),
            },
            Family::V6 => match lookup_batch::<FlowKeyV6>(fd, cursor, max) {
                Ok((entries, done)) => Ok((entries.iter().map(|(k, v)| (v6(k), *v)).collect(), done)),
                Err(e) if batch_unsupported(&e) => {
                    Ok((self.v6.iter().flatten().map(|(k, v)| (v6(&k), v)).collect(), true))
                }
                Err(e) => Err(io(e)),
            },
        }
    }
}

#[derive(Clone, Copy)]
enum Family {
    V4,
    V6,
}

/// Where a walk of a flow table stands: the kernel's cursor (a bucket index for hash maps;
/// room for more, zeroed), none before the first call.
#[derive(Default)]
struct WalkCursor(Option<[u64; 2]>);

impl KernelDataplane {
    /// Walks both flow tables a page of [`WALK_PAGE`] flows at a time, handing each page to
    /// `each`; the dataplane's lock is held for one page's syscall at a time, never across
    /// `each`, so writes (installs, HOLD resolutions) wait for a page at most, not for a walk.
    fn walk_pages(&self, each: &mut dyn FnMut(Vec<(FlowKey, FlowValue)>)) -> Result<(), DataplaneError> {
        for family in [Family::V4, Family::V6] {
            let mut cursor = WalkCursor::default();
            loop {
                let (page, done) = self.lock().flows.page(family, &mut cursor, WALK_PAGE)?;
                each(page);
                if done {
                    break;
                }
            }
        }
        Ok(())
    }
}

/// Flows per page of a walk: a page is ~0.1 ms of kernel time (and what the aging pass does
/// with it about as much again), so a walk, whatever the table's size, never holds the
/// dataplane's lock or a CPU for longer than that at a stretch.
const WALK_PAGE: usize = 1024;

fn batch_unsupported(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOTSUP) | Some(524))
}

/// Up to about `max` entries of the hash map `fd` (keys `K`, values `FlowValue`) from `cursor`
/// on (the kernel walks its buckets in order, hands back as many whole buckets as fit and a
/// cursor), and whether the walk is complete.
fn lookup_batch<K: Copy>(fd: i32, cursor: &mut WalkCursor, max: usize) -> std::io::Result<(Vec<(K, FlowValue)>, bool)> {
    let (ks, vs) = (std::mem::size_of::<K>(), std::mem::size_of::<FlowValue>());
    let mut chunk = max.max(1);
    let mut keys = vec![0u8; chunk * ks];
    let mut values = vec![0u8; chunk * vs];
    let mut cursor_out = [0u64; 2];
    loop {
        let mut attr = [0u64; 16];
        attr[0] = cursor.0.as_ref().map_or(0, |c| c.as_ptr() as u64);
        attr[1] = cursor_out.as_mut_ptr() as u64;
        attr[2] = keys.as_mut_ptr() as u64;
        attr[3] = values.as_mut_ptr() as u64;
        // SAFETY: the buffers hold `chunk` keys and values and the cursors outlive the call; the
        // kernel writes back entries, the count and the cursor.
        let (got, err) =
            unsafe { super::routes::batch_call(super::routes::BPF_MAP_LOOKUP_BATCH, &mut attr, fd, chunk as u32) };
        let got = got as usize;
        match &err {
            Some(e) if e.raw_os_error() == Some(libc::ENOSPC) && got == 0 => {
                // One bucket holds more entries than a chunk: a bigger chunk.
                chunk *= 2;
                keys.resize(chunk * ks, 0);
                values.resize(chunk * vs, 0);
                continue;
            }
            Some(e) if e.raw_os_error() != Some(libc::ENOENT) => {
                return Err(std::io::Error::from_raw_os_error(e.raw_os_error().unwrap_or(libc::EIO)))
            }
            _ => {}
        }
        let mut out = Vec::with_capacity(got.min(chunk));
        for i in 0..got.min(chunk) {
            // SAFETY: entry i lies within the buffers; read unaligned (packed by the kernel).
            let k = unsafe { std::ptr::read_unaligned(keys[i * ks..].as_ptr() as *const K) };
            let v = unsafe { std::ptr::read_unaligned(values[i * vs..].as_ptr() as *const FlowValue) };
            out.push((k, v));
        }
        // ENOENT: the walk is complete.
        let done = err.is_some();
        cursor.0 = Some(cursor_out);
        return Ok((out, done));
    }
}
