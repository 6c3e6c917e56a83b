//! The flow tables (`FLOWS_V4`, `FLOWS_V6`), flow mode per interface (`FLOW_CONFIG`), the HOLD
//! accounting the server shares with the programs, and the re-injection of held first packets.

use std::net::IpAddr;

use aya::maps::{Array, HashMap, MapData, MapError};
use dataplane_common::{
    flow::{FlowConfig, FlowKeyV4, FlowKeyV6, FlowValue},
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
    /// Every flow in both tables.
    fn flows(&self) -> Result<Vec<(FlowKey, dataplane_common::flow::FlowValue)>, DataplaneError>;
    /// Publishes how many HOLDs the server has resolved in total (`globals::HOLDS_RESOLVED`).
    fn set_holds_resolved(&self, resolved: u64) -> Result<(), DataplaneError>;
    /// HOLDs the XDP program created in total (`globals::HOLDS_CREATED`).
    fn holds_created(&self) -> Result<u64, DataplaneError>;
    /// Runs `frame` through the attached XDP program as if received on `ifindex`, for real
    /// (BPF_PROG_TEST_RUN with live frames: its redirect or XDP_PASS happens). Returns the verdict.
    fn reinject(&self, ifindex: u32, frame: &[u8]) -> Result<u32, DataplaneError>;
    /// Sends a whole Ethernet frame out of `ifindex` (a controller's packet-out).
    fn transmit(&self, ifindex: u32, frame: &[u8]) -> Result<(), DataplaneError>;
}

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

    fn flows(&self) -> Result<Vec<(super::FlowKey, dataplane_common::flow::FlowValue)>, DataplaneError> {
        self.lock().flows.all()
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

    pub fn all(&self) -> Result<Vec<(FlowKey, FlowValue)>, DataplaneError> {
        fn key(vrf: u32, src: IpAddr, dst: IpAddr, proto: u8, ports: (u16, u16)) -> FlowKey {
            FlowKey { vrf, src, dst, proto, sport: ports.0, dport: ports.1 }
        }
        // An entry evicted or deleted during the walk is simply not listed (`flatten` skips it).
        let v4 = self.v4.iter().flatten();
        let v4 = v4.map(|(k, v)| (key(k.vrf, k.src.into(), k.dst.into(), k.proto, (k.sport, k.dport)), v));
        let v6 = self.v6.iter().flatten();
        let v6 = v6.map(|(k, v)| (key(k.vrf, k.src.into(), k.dst.into(), k.proto, (k.sport, k.dport)), v));
        Ok(v4.chain(v6).collect())
    }
}
