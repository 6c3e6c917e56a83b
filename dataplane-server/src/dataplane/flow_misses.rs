//! The flow-miss ring buffer, read as plain [`FlowMiss`] values.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, RawFd},
};

use aya::maps::{MapData, RingBuf};
use dataplane_common::{flow::FlowMissEvent, maps as names};

use super::{DataplaneError, FlowKey, KernelDataplane};

/// One flow miss as the XDP program reported it.
#[derive(Clone, Debug)]
pub struct FlowMiss {
    pub request_id: u64,
    pub ifindex: u32,
    /// Interface slot.
    pub slot: u32,
    pub key: FlowKey,
    pub reason: u32,
    /// Length on the wire, and the captured frame (whole up to `flow::FLOW_CAPTURE` bytes).
    pub packet_len: u32,
    pub frame: bytes::Bytes,
}

/// Reader of `FLOW_MISSES`; poll its fd for readability, then [`FlowMissReader::drain`].
pub struct FlowMissReader {
    ring: RingBuf<MapData>,
}

impl KernelDataplane {
    /// The flow-miss reader; there is one, so a second call fails.
    pub fn flow_miss_reader(&self) -> Result<FlowMissReader, DataplaneError> {
        let map = self
            .lock()
            .ebpf
            .take_map(names::FLOW_MISSES)
            .ok_or(DataplaneError::Missing { what: "map", name: names::FLOW_MISSES })?;
        let ring = RingBuf::try_from(map).map_err(DataplaneError::map(names::FLOW_MISSES, "open"))?;
        Ok(FlowMissReader { ring })
    }
}

impl FlowMissReader {
    /// Hands every queued miss to `f`; returns how many. Records too short to be events (none
    /// are written) are skipped.
    pub fn drain(&mut self, mut f: impl FnMut(FlowMiss)) -> usize {
        let mut n = 0;
        while let Some(item) = self.ring.next() {
            if let Some(miss) = parse(&item) {
                f(miss);
                n += 1;
            }
        }
        n
    }
}

impl AsRawFd for FlowMissReader {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

fn parse(bytes: &[u8]) -> Option<FlowMiss> {
    if bytes.len() < std::mem::size_of::<FlowMissEvent>() {
        return None;
    }
    // SAFETY: the record is at least one FlowMissEvent long; read unaligned (ring records are
    // 8-byte aligned, but do not rely on it).
    let e: FlowMissEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const FlowMissEvent) };
    let (src, dst) = if e.family == 4 {
        let a = |b: [u8; 16]| IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]));
        (a(e.src), a(e.dst))
    } else {
        (IpAddr::V6(Ipv6Addr::from(e.src)), IpAddr::V6(Ipv6Addr::from(e.dst)))
    };
    let captured = (e.captured as usize).min(e.data.len());
    Some(FlowMiss {
        request_id: e.request_id,
        ifindex: e.ifindex,
        slot: e.slot,
        key: FlowKey { vrf: e.vrf, src, dst, proto: e.proto as u8, sport: e.sport, dport: e.dport },
        reason: e.reason,
        packet_len: e.pkt_len,
        frame: bytes::Bytes::copy_from_slice(&e.data[..captured]),
    })
}
