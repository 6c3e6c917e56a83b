//! Next hops (`NEXTHOPS`, by slot) and their counters (`NEXTHOP_STATS`).

use aya::maps::{Array, MapData};
use dataplane_common::{maps as names, route::nexthop_kind, route::ECMP_MAX, NextHop, NextHopStats};

use super::{loader::open_map, DataplaneError, KernelDataplane};
use crate::net::Mac;

/// A next hop as the kernel stores it (slots, not the API's ids).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NextHopParams {
    Encap {
        tx_slot: u32,
        ifindex: u32,
        mtu: u32,
        dst_mac: Mac,
        src_mac: Mac,
    },
    /// A gateway whose MAC the kernel has not resolved yet: packets go to the kernel stack.
    Unresolved {
        tx_slot: u32,
        ifindex: u32,
        mtu: u32,
        src_mac: Mac,
    },
    Ecmp {
        members: Vec<u32>,
    },
    Discard,
    Receive,
}

/// The kernel side of next hops.
pub trait NextHops {
    /// Writes next hop `slot`; `fresh` zeroes its counters (a newly allocated slot).
    fn set_nexthop(&self, slot: u32, nh: &NextHopParams, fresh: bool) -> Result<(), DataplaneError>;

    /// Empties next hop `slot`.
    fn clear_nexthop(&self, slot: u32) -> Result<(), DataplaneError>;

    /// Counters of next hop `slot`, summed over CPUs.
    fn nexthop_stats(&self, slot: u32) -> Result<NextHopStats, DataplaneError>;

    /// Every next hop the kernel holds, by slot (what a restart compares its state file with).
    fn kernel_nexthops(&self) -> Result<Vec<(u32, NextHopParams)>, DataplaneError>;
}

impl NextHops for KernelDataplane {
    fn set_nexthop(&self, slot: u32, nh: &NextHopParams, fresh: bool) -> Result<(), DataplaneError> {
        let mut inner = self.lock();
        if fresh {
            inner.nexthop_stats.reset(slot)?;
        }
        inner.nexthops.set(slot, &nexthop_value(nh))
    }

    fn clear_nexthop(&self, slot: u32) -> Result<(), DataplaneError> {
        self.lock().nexthops.set(slot, &NextHop::EMPTY)
    }

    fn kernel_nexthops(&self) -> Result<Vec<(u32, NextHopParams)>, DataplaneError> {
        let inner = self.lock();
        let mut out = Vec::new();
        for slot in 0..dataplane_common::MAX_NEXTHOPS {
            let v = inner.nexthops.0.get(&slot, 0).map_err(DataplaneError::map(names::NEXTHOPS, "lookup"))?;
            if let Some(p) = nexthop_params(&v) {
                out.push((slot, p));
            }
        }
        Ok(out)
    }

    fn nexthop_stats(&self, slot: u32) -> Result<NextHopStats, DataplaneError> {
        self.lock().nexthop_stats.sum(slot)
    }
}

/// `NEXTHOPS`: next-hop slot -> next hop.
pub struct NextHopMap(pub Array<MapData, NextHop>);

impl NextHopMap {
    pub(super) fn open(ebpf: &mut aya::Ebpf) -> Result<Self, DataplaneError> {
        Ok(Self(open_map(ebpf, names::NEXTHOPS)?))
    }

    pub fn set(&mut self, slot: u32, nh: &NextHop) -> Result<(), DataplaneError> {
        self.0.set(slot, nh, 0).map_err(DataplaneError::map(names::NEXTHOPS, "update"))
    }
}

/// What `v` says, the inverse of [`nexthop_value`]; `None` for an empty slot (or a kind this build
/// does not write).
fn nexthop_params(v: &NextHop) -> Option<NextHopParams> {
    let (tx_slot, ifindex, mtu) = (v.tx_slot, v.ifindex, v.mtu);
    Some(match v.kind {
        nexthop_kind::ENCAP => {
            NextHopParams::Encap { tx_slot, ifindex, mtu, dst_mac: Mac(v.dst_mac), src_mac: Mac(v.src_mac) }
        }
        nexthop_kind::UNRESOLVED => NextHopParams::Unresolved { tx_slot, ifindex, mtu, src_mac: Mac(v.src_mac) },
        nexthop_kind::ECMP => {
            NextHopParams::Ecmp { members: v.members[..(v.member_count as usize).min(ECMP_MAX)].to_vec() }
        }
        nexthop_kind::DISCARD => NextHopParams::Discard,
        nexthop_kind::RECEIVE => NextHopParams::Receive,
        _ => return None,
    })
}

fn nexthop_value(nh: &NextHopParams) -> NextHop {
    let mut v = NextHop::EMPTY;
    match nh {
        NextHopParams::Encap { tx_slot, ifindex, mtu, dst_mac, src_mac } => {
            v.kind = nexthop_kind::ENCAP;
            v.tx_slot = *tx_slot;
            v.ifindex = *ifindex;
            v.mtu = *mtu;
            v.dst_mac = dst_mac.0;
            v.src_mac = src_mac.0;
        }
        NextHopParams::Unresolved { tx_slot, ifindex, mtu, src_mac } => {
            v.kind = nexthop_kind::UNRESOLVED;
            v.tx_slot = *tx_slot;
            v.ifindex = *ifindex;
            v.mtu = *mtu;
            v.src_mac = src_mac.0;
        }
        NextHopParams::Ecmp { members } => {
            v.kind = nexthop_kind::ECMP;
            v.member_count = members.len().min(ECMP_MAX) as u32;
            for (d, s) in v.members.iter_mut().zip(members) {
                *d = *s;
            }
        }
        NextHopParams::Discard => v.kind = nexthop_kind::DISCARD,
        NextHopParams::Receive => v.kind = nexthop_kind::RECEIVE,
    }
    v
}
