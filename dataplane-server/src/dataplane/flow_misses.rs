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

/// Where a [`FlowMissEvent`]'s captured frame starts.
const DATA: usize = std::mem::offset_of!(FlowMissEvent, data);

fn parse(bytes: &[u8]) -> Option<FlowMiss> {
    if bytes.len() < std::mem::size_of::<FlowMissEvent>() {
        return None;
    }
    // Field by field, not the whole ~1.6 KiB event: nearly all of it is frame room a short
    // packet leaves unused.
    macro_rules! field {
        ($f:ident: $t:ty) => {
            // SAFETY: the record holds a whole FlowMissEvent, so the field's bytes are inside
            // it; the field is plain data (any bits valid); read unaligned.
            unsafe {
                std::ptr::read_unaligned(bytes.as_ptr().add(std::mem::offset_of!(FlowMissEvent, $f)) as *const $t)
            }
        };
    }
    let (src, dst) = (field!(src: [u8; 16]), field!(dst: [u8; 16]));
    let (src, dst) = if field!(family: u32) == 4 {
        let a = |b: [u8; 16]| IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]));
        (a(src), a(dst))
    } else {
        (IpAddr::V6(Ipv6Addr::from(src)), IpAddr::V6(Ipv6Addr::from(dst)))
    };
    let captured = (field!(captured: u32) as usize).min(dataplane_common::flow::FLOW_CAPTURE);
    Some(FlowMiss {
        request_id: field!(request_id: u64),
        ifindex: field!(ifindex: u32),
        slot: field!(slot: u32),
        key: FlowKey {
            vrf: field!(vrf: u32),
            src,
            dst,
            proto: field!(proto: u32) as u8,
            sport: field!(sport: u16),
            dport: field!(dport: u16),
        },
        reason: field!(reason: u32),
        packet_len: field!(pkt_len: u32),
        frame: bytes::Bytes::copy_from_slice(&bytes[DATA..DATA + captured]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_event_fields_and_captured_frame_read_back() {
        let mut e: FlowMissEvent = unsafe { std::mem::zeroed() };
        (e.request_id, e.ifindex, e.slot, e.vrf, e.reason, e.family, e.proto) = ((3 << 48) | 9, 7, 2, 5, 1, 4, 17);
        e.src[..4].copy_from_slice(&[192, 0, 2, 1]);
        e.dst[..4].copy_from_slice(&[198, 51, 100, 2]);
        (e.sport, e.dport, e.pkt_len, e.captured) = (1000, 53, 60, 3);
        e.data[..4].copy_from_slice(&[1, 2, 3, 4]);
        // SAFETY: plain repr(C) data viewed as bytes, one byte off alignment as a ring could.
        let raw = unsafe {
            std::slice::from_raw_parts(&e as *const FlowMissEvent as *const u8, std::mem::size_of::<FlowMissEvent>())
        };
        let mut shifted = vec![0u8; raw.len() + 1];
        shifted[1..].copy_from_slice(raw);
        let m = parse(&shifted[1..]).unwrap();
        assert_eq!((m.request_id, m.ifindex, m.slot, m.reason, m.packet_len), ((3 << 48) | 9, 7, 2, 1, 60));
        assert_eq!(
            m.key,
            FlowKey {
                vrf: 5,
                src: "192.0.2.1".parse().unwrap(),
                dst: "198.51.100.2".parse().unwrap(),
                proto: 17,
                sport: 1000,
                dport: 53
            }
        );
        assert_eq!(&m.frame[..], &[1, 2, 3]);
        assert!(parse(&raw[..raw.len() - 1]).is_none(), "a record cut short is no event");
    }
}
