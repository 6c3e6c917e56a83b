//! The desired state, per node, in a canonical form: ordered maps keyed the way the server
//! keys its objects, so two versions compare entry by entry (the diff) and replay in a stable
//! order. Also the flow rules and how a miss is decided by them.

use std::{collections::BTreeMap, net::IpAddr};

use crate::{
    pb,
    yaml_fields::{Cidr, Ports},
    ServerAddress,
};

/// Every node of the file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Desired {
    pub nodes: BTreeMap<String, NodeDesired>,
}

/// One node's desired state.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeDesired {
    pub server: ServerAddress,
    /// VRF id (not 0) -> mode and kernel table.
    pub vrfs: BTreeMap<u32, (pb::VrfMode, u32)>,
    pub interfaces: BTreeMap<String, IfaceDesired>,
    /// Flow mode of every declared interface (disabled ones too, so a stale mode is turned off).
    pub flow_modes: BTreeMap<String, FlowModeDesired>,
    pub next_hops: BTreeMap<u32, pb::next_hop::Kind>,
    /// (VRF, prefix) -> next hop.
    pub routes: BTreeMap<(u32, Cidr), u32>,
    pub policies: BTreeMap<String, Vec<pb::Rule>>,
    /// (interface, pb::Direction) -> (policy, default deny).
    pub attachments: BTreeMap<(String, i32), (String, bool)>,
    pub flow_rules: Vec<FlowRule>,
}

impl Default for NodeDesired {
    fn default() -> Self {
        Self {
            server: ServerAddress::Unix(crate::DEFAULT_SERVER.trim_start_matches("unix:").into()),
            vrfs: BTreeMap::new(),
            interfaces: BTreeMap::new(),
            flow_modes: BTreeMap::new(),
            next_hops: BTreeMap::new(),
            routes: BTreeMap::new(),
            policies: BTreeMap::new(),
            attachments: BTreeMap::new(),
            flow_rules: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IfaceDesired {
    pub vrf: u32,
    pub xdp_mode: pb::XdpMode,
}

/// Flow mode of an interface; zeros ask for the server's defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowModeDesired {
    pub enabled: bool,
    pub miss_forward: bool,
    pub hold_cap: u32,
    pub punt_rate: u32,
    pub punt_burst: u32,
}

impl FlowModeDesired {
    pub fn request(&self, interface: &str) -> pb::SetFlowModeRequest {
        pb::SetFlowModeRequest {
            interface: interface.to_owned(),
            enabled: self.enabled,
            miss_action: if self.miss_forward { pb::MissAction::ForwardByRoute } else { pb::MissAction::Drop } as i32,
            hold_cap: self.hold_cap,
            punt_rate: self.punt_rate,
            punt_burst: self.punt_burst,
        }
    }
}

/// A flow rule: what it matches (absent = anything) and what it decides.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowRule {
    pub interface: Option<String>,
    pub vrf: Option<u32>,
    pub src: Option<Cidr>,
    pub dst: Option<Cidr>,
    pub protocol: Option<u32>,
    pub src_ports: Option<Ports>,
    pub dst_ports: Option<Ports>,
    pub decision: FlowDecision,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowDecision {
    /// Forward by `next_hop`, or by the node's route to the destination; install the reply
    /// direction too (by `reverse_next_hop`, or the route back to the source).
    Forward {
        next_hop: Option<u32>,
        reverse: bool,
        reverse_next_hop: Option<u32>,
    },
    Drop,
}

/// What a miss became.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Install this flow (key and request id filled in by the caller). `rule` is the index of
    /// the matching rule.
    Install { flow: pb::Flow, rule: Option<usize> },
    /// Forward was decided but the node has no route for the destination: dropped instead.
    NoRoute { flow: pb::Flow, rule: usize },
}

impl FlowRule {
    fn matches(&self, interface: &str, key: &pb::FlowKey, src: IpAddr, dst: IpAddr) -> bool {
        self.interface.as_deref().is_none_or(|i| i == interface)
            && self.vrf.is_none_or(|v| v == key.vrf)
            && self.src.is_none_or(|c| c.contains(src))
            && self.dst.is_none_or(|c| c.contains(dst))
            && self.protocol.is_none_or(|p| p == key.protocol)
            && self.src_ports.is_none_or(|p| p.contains(key.src_port))
            && self.dst_ports.is_none_or(|p| p.contains(key.dst_port))
    }
}

impl NodeDesired {
    /// The longest-prefix match among this node's routes.
    pub fn route(&self, vrf: u32, addr: IpAddr) -> Option<u32> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (0..=max).rev().find_map(|len| {
            let c = mask(addr, len)?;
            self.routes.get(&(vrf, c)).copied()
        })
    }

    /// Decides a flow miss by the rules (first match); no match, or an unparsable key: drop.
    pub fn decide(&self, interface: &str, key: &pb::FlowKey) -> Verdict {
        let drop = pb::Flow { action: pb::FlowAction::Drop as i32, ..Default::default() };
        let (Ok(src), Ok(dst)) = (key.src.parse::<IpAddr>(), key.dst.parse::<IpAddr>()) else {
            return Verdict::Install { flow: drop, rule: None };
        };
        let Some((index, rule)) = self.flow_rules.iter().enumerate().find(|(_, r)| r.matches(interface, key, src, dst))
        else {
            return Verdict::Install { flow: drop, rule: None };
        };
        match rule.decision {
            FlowDecision::Drop => Verdict::Install { flow: drop, rule: Some(index) },
            FlowDecision::Forward { next_hop, reverse, reverse_next_hop } => {
                let Some(nh) = next_hop.or_else(|| self.route(key.vrf, dst)) else {
                    return Verdict::NoRoute { flow: drop, rule: index };
                };
                let mut flow = pb::Flow { action: pb::FlowAction::Forward as i32, next_hop: nh, ..Default::default() };
                if reverse {
                    if let Some(back) = reverse_next_hop.or_else(|| self.route(key.vrf, src)) {
                        flow.reverse_action = pb::FlowAction::Forward as i32;
                        flow.reverse_next_hop = back;
                    }
                }
                Verdict::Install { flow, rule: Some(index) }
            }
        }
    }
}

fn mask(addr: IpAddr, len: u8) -> Option<Cidr> {
    let masked = match addr {
        IpAddr::V4(v) => {
            let bits = if len == 0 { 0 } else { u32::from(v) & (u32::MAX << (32 - u32::from(len))) };
            IpAddr::V4(bits.into())
        }
        IpAddr::V6(v) => {
            let bits = if len == 0 { 0 } else { u128::from(v) & (u128::MAX << (128 - u32::from(len))) };
            IpAddr::V6(bits.into())
        }
    };
    Some(Cidr { addr: masked, len })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeDesired {
        let text = r#"
nodes:
  a:
    server: unix:/x
    interfaces: [{name: eth0, flows: true}, {name: eth1}]
    next_hops:
      - {id: 1, interface: eth1, dst_mac: "02:00:00:00:00:01"}
      - {id: 2, interface: eth0, dst_mac: "02:00:00:00:00:02"}
      - {id: 3, discard: true}
    routes:
      - {prefix: 198.51.100.0/24, next_hop: 1}
      - {prefix: 198.51.100.128/25, next_hop: 3}
      - {prefix: 192.0.2.0/24, next_hop: 2}
      - {prefix: "2001:db8:2::/64", next_hop: 1}
    flow_rules:
      - {interface: eth0, protocol: tcp, dst: 198.51.100.0/24, dst_ports: 80, action: forward}
      - {protocol: udp, dst_ports: 5000-5999, action: forward, reverse: false}
      - {protocol: tcp, dst_ports: 81, action: forward, next_hop: 3, reverse_next_hop: 2}
      - {protocol: tcp, dst_ports: 82, action: forward}
      - {action: drop}
"#;
        super::super::config::parse("t", text).unwrap().nodes.remove("a").unwrap()
    }

    fn key(proto: u32, src: &str, dst: &str, dport: u32) -> pb::FlowKey {
        pb::FlowKey { vrf: 0, src: src.into(), dst: dst.into(), protocol: proto, src_port: 40000, dst_port: dport }
    }

    #[test]
    fn route_longest_prefix_wins_per_family() {
        let n = node();
        assert_eq!(n.route(0, "198.51.100.7".parse().unwrap()), Some(1));
        assert_eq!(n.route(0, "198.51.100.200".parse().unwrap()), Some(3));
        assert_eq!(n.route(0, "203.0.113.1".parse().unwrap()), None);
        assert_eq!(n.route(0, "2001:db8:2::9".parse().unwrap()), Some(1));
        assert_eq!(n.route(1, "198.51.100.7".parse().unwrap()), None);
    }

    #[test]
    fn decide_first_matching_rule_sets_action_and_next_hops() {
        let n = node();
        let fwd = |nh, rev| pb::Flow {
            action: pb::FlowAction::Forward as i32,
            next_hop: nh,
            reverse_action: if rev == 0 { 0 } else { pb::FlowAction::Forward as i32 },
            reverse_next_hop: rev,
            ..Default::default()
        };
        let drop = pb::Flow { action: pb::FlowAction::Drop as i32, ..Default::default() };
        assert_eq!(
            n.decide("eth0", &key(6, "192.0.2.2", "198.51.100.2", 80)),
            Verdict::Install { flow: fwd(1, 2), rule: Some(0) }
        );
        // Same flow from the other interface: rule 0 does not apply; no later rule for port 80.
        assert_eq!(
            n.decide("eth1", &key(6, "192.0.2.2", "198.51.100.2", 80)),
            Verdict::Install { flow: drop.clone(), rule: Some(4) }
        );
        assert_eq!(
            n.decide("eth0", &key(17, "192.0.2.2", "198.51.100.2", 5001)),
            Verdict::Install { flow: fwd(1, 0), rule: Some(1) }
        );
        assert_eq!(
            n.decide("eth0", &key(6, "192.0.2.2", "203.0.113.5", 81)),
            Verdict::Install { flow: fwd(3, 2), rule: Some(2) }
        );
        assert_eq!(
            n.decide("eth0", &key(6, "192.0.2.2", "203.0.113.5", 82)),
            Verdict::NoRoute { flow: drop.clone(), rule: 3 }
        );
        assert_eq!(
            n.decide("eth0", &key(6, "192.0.2.2", "198.51.100.2", 8080)),
            Verdict::Install { flow: drop, rule: Some(4) }
        );
    }
}
