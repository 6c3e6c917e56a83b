//! The controller's declarative file: per node, its server and the state it should have.
//!
//! ```yaml
//! nodes:
//!   node-a:
//!     server: unix:/run/dataplane/dataplane.sock     # or http://HOST:PORT
//!     vrfs:                                          # VRF 0 always exists
//!       - id: 1
//!       - {id: 2, mode: kernel-fib, kernel_table: 100}
//!     interfaces:
//!       - name: eth0
//!         vrf: 0                                     # default 0
//!         xdp_mode: auto                             # auto | native | generic
//!         flows: true                                # flow mode; or {miss_action, hold_cap, punt_rate, punt_burst}
//!         ingress_policy: web                        # or {policy: web, default: deny}
//!       - name: eth1
//!     next_hops:
//!       - {id: 1, interface: eth1, dst_mac: "02:00:5e:00:53:02"}   # src_mac defaults to eth1's
//!       - {id: 2, interface: eth1, gateway: 198.51.100.254}         # MAC from the kernel
//!       - {id: 3, ecmp: [1, 2]}
//!       - {id: 4, discard: true}
//!       - {id: 5, receive: true}
//!     routes:
//!       - {prefix: 198.51.100.0/24, next_hop: 1}                   # vrf default 0
//!     policies:
//!       web:
//!         - {priority: 10, protocol: tcp, dst_ports: 22, action: deny}
//!     flow_rules:                                    # first match decides a flow miss
//!       - {protocol: tcp, dst: 198.51.100.0/24, dst_ports: 80, action: forward}
//!       - {action: drop}                             # no rule matching: drop as well
//! ```
//!
//! Loading is two passes over the same text. The first checks the shape and every value on its
//! own, and collects what each node declares; the second runs the same deserialization with
//! those declarations in scope, so a reference (a route's next hop, an interface's VRF, an ECMP
//! member) is checked while the parser stands on it, and the error carries its line and column.

use std::{
    cell::RefCell,
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
    path::Path,
};

use serde::{Deserialize, Deserializer};

use super::desired::{Desired, FlowDecision, FlowModeDesired, FlowRule, IfaceDesired, NodeDesired};
use crate::{
    pb,
    yaml_fields::{de_map, de_str, de_u32, split_location, Addr, Cidr, IfName, Mac, Ports, Protocol, RuleDoc},
    ServerAddress,
};

/// Why a file was refused: `FILE:LINE:COLUMN: PATH: REASON`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {message}")]
    Field { file: String, line: usize, column: usize, message: String },
    #[error("{file}: {message}")]
    Whole { file: String, message: String },
}

impl ConfigError {
    fn from_yaml(file: &str, e: &serde_yaml::Error) -> Self {
        match split_location(e) {
            (message, Some((line, column))) => Self::Field { file: file.to_owned(), line, column, message },
            (message, None) => Self::Whole { file: file.to_owned(), message },
        }
    }
}

/// Reads and validates the file.
pub fn load(path: &Path) -> Result<Desired, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
    parse(&file, &text)
}

/// Validates `text` (named `file` in errors).
pub fn parse(file: &str, text: &str) -> Result<Desired, ConfigError> {
    let first: FileDoc = serde_yaml::from_str(text).map_err(|e| ConfigError::from_yaml(file, &e))?;
    let symbols = Symbols::of(&first);
    SCOPE.with(|s| *s.borrow_mut() = Some(Scope { symbols, node: String::new(), seen: Seen::default() }));
    let second = serde_yaml::from_str::<FileDoc>(text);
    SCOPE.with(|s| *s.borrow_mut() = None);
    let doc = second.map_err(|e| ConfigError::from_yaml(file, &e))?;
    if doc.nodes.is_empty() {
        return Err(ConfigError::Whole { file: file.to_owned(), message: "nodes: no node declared".into() });
    }
    Ok(doc.into_desired())
}

// ---------------------------------------------------------------------------------------------
// The second pass's scope.

/// What one node declares (from the first pass).
#[derive(Default)]
struct NodeSymbols {
    /// VRF id -> forwarded by the API's routes (not the kernel FIB).
    vrfs: HashMap<u32, bool>,
    interfaces: HashSet<String>,
    /// Next-hop id -> is an ECMP group.
    next_hops: HashMap<u32, bool>,
    policies: HashSet<String>,
}

#[derive(Default)]
struct Symbols(HashMap<String, NodeSymbols>);

impl Symbols {
    fn of(doc: &FileDoc) -> Self {
        let mut out = HashMap::new();
        for (name, n) in &doc.nodes {
            let mut s = NodeSymbols::default();
            s.vrfs.insert(0, true);
            for v in &n.vrfs {
                s.vrfs.insert(v.id.0, v.mode == VrfModeDoc::Routes);
            }
            s.interfaces.extend(n.interfaces.iter().map(|i| i.name.0 .0.clone()));
            for h in &n.next_hops {
                s.next_hops.insert(h.id.0, h.ecmp.is_some());
            }
            s.policies.extend(n.policies.keys().map(|p| p.0.clone()));
            out.insert(name.0.clone(), s);
        }
        Self(out)
    }
}

/// Declarations met so far in the current node (duplicates are refused where they appear).
#[derive(Default)]
struct Seen {
    vrfs: HashSet<u32>,
    interfaces: HashSet<String>,
    next_hops: HashSet<u32>,
    routes: HashSet<(u32, Cidr)>,
    policies: HashSet<String>,
}

struct Scope {
    symbols: Symbols,
    node: String,
    seen: Seen,
}

thread_local! {
    /// Set during the second pass only; the first pass checks values, not references.
    static SCOPE: RefCell<Option<Scope>> = const { RefCell::new(None) };
}

/// Runs `f` on the current node's declarations and what was seen so far (second pass only).
fn in_scope(f: impl FnOnce(&NodeSymbols, &mut Seen) -> Result<(), String>) -> Result<(), String> {
    SCOPE.with(|s| match s.borrow_mut().as_mut() {
        Some(scope) => match scope.symbols.0.get(&scope.node) {
            Some(node) => f(node, &mut scope.seen),
            None => Ok(()),
        },
        None => Ok(()),
    })
}

// ---------------------------------------------------------------------------------------------
// The document.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    nodes: BTreeMap<NodeName, NodeDoc>,
}

/// A node's name (a map key); entering it starts that node's scope.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct NodeName(String);

impl<'de> Deserialize<'de> for NodeName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_str(d, "a node name", |s| {
            if s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
                return Err(format!("{s:?} is not a node name (letters, digits, '-', '_', '.')"));
            }
            SCOPE.with(|sc| {
                if let Some(scope) = sc.borrow_mut().as_mut() {
                    scope.node = s.to_owned();
                    scope.seen = Seen::default();
                }
            });
            Ok(NodeName(s.to_owned()))
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeDoc {
    server: ServerDoc,
    #[serde(default)]
    vrfs: Vec<VrfDoc>,
    #[serde(default)]
    interfaces: Vec<InterfaceDoc>,
    #[serde(default)]
    next_hops: Vec<NextHopDoc>,
    #[serde(default)]
    routes: Vec<RouteDoc>,
    #[serde(default)]
    policies: BTreeMap<PolicyDecl, Vec<RuleDoc>>,
    #[serde(default)]
    flow_rules: Vec<FlowRuleDoc>,
}

struct ServerDoc(ServerAddress);

impl<'de> Deserialize<'de> for ServerDoc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_str(d, "unix:PATH or http://HOST:PORT", |s| {
            s.parse().map(ServerDoc).map_err(|e: crate::ConnectError| e.to_string())
        })
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum VrfModeDoc {
    #[default]
    Routes,
    KernelFib,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VrfDocRaw {
    id: VrfDecl,
    #[serde(default)]
    mode: VrfModeDoc,
    #[serde(default)]
    kernel_table: Option<u32>,
}

struct VrfDoc {
    id: VrfDecl,
    mode: VrfModeDoc,
    kernel_table: u32,
}

impl<'de> Deserialize<'de> for VrfDoc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_map(d, "a VRF", |r: VrfDocRaw| {
            if r.kernel_table.is_some() && r.mode != VrfModeDoc::KernelFib {
                return Err("kernel_table: only for mode: kernel-fib".into());
            }
            Ok(VrfDoc { id: r.id, mode: r.mode, kernel_table: r.kernel_table.unwrap_or(0) })
        })
    }
}

/// A VRF id being declared.
struct VrfDecl(u32);

impl<'de> Deserialize<'de> for VrfDecl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_u32(d, "a VRF id", |id| {
            if id == 0 {
                return Err("VRF 0 always exists: do not declare it".into());
            }
            in_scope(|_, seen| if seen.vrfs.insert(id) { Ok(()) } else { Err(format!("VRF {id} is declared twice")) })?;
            Ok(VrfDecl(id))
        })
    }
}

/// A VRF in use by an interface or flow rule: 0 or declared.
#[derive(Clone, Copy, Default)]
struct VrfRef(u32);

impl<'de> Deserialize<'de> for VrfRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_u32(d, "a VRF id", |id| {
            in_scope(|n, _| {
                if n.vrfs.contains_key(&id) {
                    Ok(())
                } else {
                    Err(format!("VRF {id} is not declared in this node's vrfs"))
                }
            })?;
            Ok(VrfRef(id))
        })
    }
}

/// A route's VRF: 0 or declared, and forwarded by routes (not the kernel FIB).
#[derive(Clone, Copy, Default)]
struct RoutesVrfRef(u32);

impl<'de> Deserialize<'de> for RoutesVrfRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_u32(d, "a VRF id", |id| {
            in_scope(|n, _| match n.vrfs.get(&id) {
                Some(true) => Ok(()),
                Some(false) => Err(format!("VRF {id} forwards by the kernel FIB: it takes no routes (use ip route)")),
                None => Err(format!("VRF {id} is not declared in this node's vrfs")),
            })?;
            Ok(RoutesVrfRef(id))
        })
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum XdpModeDoc {
    #[default]
    Auto,
    Native,
    Generic,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InterfaceDoc {
    name: IfDecl,
    #[serde(default)]
    vrf: VrfRef,
    #[serde(default)]
    xdp_mode: XdpModeDoc,
    #[serde(default)]
    flows: Option<FlowModeDoc>,
    #[serde(default)]
    ingress_policy: Option<AttachDoc>,
    #[serde(default)]
    egress_policy: Option<AttachDoc>,
}

/// An interface being declared.
struct IfDecl(IfName);

impl<'de> Deserialize<'de> for IfDecl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_str(d, "an interface name", |s| {
            let name = IfName::check(s)?;
            in_scope(|_, seen| {
                if seen.interfaces.insert(s.to_owned()) {
                    Ok(())
                } else {
                    Err(format!("interface {s} is declared twice"))
                }
            })?;
            Ok(IfDecl(name))
        })
    }
}

/// An interface in use: declared in this node's interfaces.
#[derive(Clone)]
struct IfRef(IfName);

impl<'de> Deserialize<'de> for IfRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_str(d, "an interface name", |s| {
            let name = IfName::check(s)?;
            in_scope(|n, _| {
                if n.interfaces.contains(s) {
                    Ok(())
                } else {
                    Err(format!("interface {s} is not declared in this node's interfaces"))
                }
            })?;
            Ok(IfRef(name))
        })
    }
}

/// Flow mode: `true`/`false`, or its parameters (which imply `true`).
enum FlowModeDoc {
    Off,
    On(FlowParams),
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlowParams {
    #[serde(default)]
    miss_action: MissActionDoc,
    #[serde(default)]
    hold_cap: Option<u32>,
    #[serde(default)]
    punt_rate: Option<u32>,
    #[serde(default)]
    punt_burst: Option<u32>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum MissActionDoc {
    #[default]
    Drop,
    ForwardByRoute,
}

impl<'de> Deserialize<'de> for FlowModeDoc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = FlowModeDoc;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true, false or {miss_action, hold_cap, punt_rate, punt_burst}")
            }
            fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<FlowModeDoc, E> {
                Ok(if b { FlowModeDoc::On(FlowParams::default()) } else { FlowModeDoc::Off })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<FlowModeDoc, A::Error> {
                FlowParams::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(FlowModeDoc::On)
            }
        }
        d.deserialize_any(V)
    }
}

/// A policy attachment: the policy's name, or `{policy, default: allow|deny}`.
struct AttachDoc {
    policy: PolicyRef,
    default_deny: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum DefaultDoc {
    #[default]
    Allow,
    Deny,
}

impl<'de> Deserialize<'de> for AttachDoc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = AttachDoc;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a policy name or {policy, default}")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<AttachDoc, E> {
                Ok(AttachDoc { policy: PolicyRef::check(s).map_err(E::custom)?, default_deny: false })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<AttachDoc, A::Error> {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct M {
                    policy: PolicyRef,
                    #[serde(default)]
                    default: DefaultDoc,
                }
                let m = M::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(AttachDoc { policy: m.policy, default_deny: m.default == DefaultDoc::Deny })
            }
        }
        d.deserialize_any(V)
    }
}

fn policy_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 64 || !s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(format!("{s:?} is not a policy name (1 to 64 letters, digits, '-', '_', '.')"));
    }
    Ok(())
}

/// A policy being declared (a key of `policies`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct PolicyDecl(String);

impl<'de> Deserialize<'de> for PolicyDecl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_str(d, "a policy name", |s| {
            policy_name(s)?;
            in_scope(|_, seen| {
                if seen.policies.insert(s.to_owned()) {
                    Ok(())
                } else {
                    Err(format!("policy {s} is declared twice"))
                }
            })?;
            Ok(PolicyDecl(s.to_owned()))
        })
    }
}

/// A policy in use: declared in this node's policies.
struct PolicyRef(String);

impl PolicyRef {
    fn check(s: &str) -> Result<Self, String> {
        policy_name(s)?;
        in_scope(|n, _| {
            if n.policies.contains(s) {
                Ok(())
            } else {
                Err(format!("policy {s} is not declared in this node's policies"))
            }
        })?;
        Ok(PolicyRef(s.to_owned()))
    }
}

impl<'de> Deserialize<'de> for PolicyRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_str(d, "a policy name", PolicyRef::check)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NextHopRaw {
    id: NhDecl,
    #[serde(default)]
    interface: Option<IfRef>,
    #[serde(default)]
    dst_mac: Option<Mac>,
    #[serde(default)]
    src_mac: Option<Mac>,
    #[serde(default)]
    gateway: Option<Addr>,
    #[serde(default)]
    ecmp: Option<Vec<MemberRef>>,
    #[serde(default)]
    discard: bool,
    #[serde(default)]
    receive: bool,
}

struct NextHopDoc {
    id: NhDecl,
    kind: pb::next_hop::Kind,
    /// Kept for the symbol table (groups cannot be members).
    ecmp: Option<()>,
}

impl<'de> Deserialize<'de> for NextHopDoc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_map(d, "a next hop", next_hop)
    }
}

fn next_hop(r: NextHopRaw) -> Result<NextHopDoc, String> {
    let kinds = [r.interface.is_some(), r.ecmp.is_some(), r.discard, r.receive].iter().filter(|&&b| b).count();
    if kinds != 1 {
        return Err(format!(
            "next hop {}: exactly one of interface (with dst_mac or gateway), ecmp, discard: true, receive: true",
            r.id.0
        ));
    }
    let ecmp = r.ecmp.as_ref().map(|_| ());
    let kind = if let Some(iface) = r.interface {
        match (&r.dst_mac, &r.gateway) {
            (Some(_), None) | (None, Some(_)) => {}
            _ => return Err(format!("next hop {}: interface needs exactly one of dst_mac and gateway", r.id.0)),
        }
        pb::next_hop::Kind::Encap(pb::EncapNextHop {
            interface: iface.0 .0,
            dst_mac: r.dst_mac.map(|m| m.0).unwrap_or_default(),
            src_mac: r.src_mac.map(|m| m.0).unwrap_or_default(),
            gateway: r.gateway.map(|a| a.0.to_string()).unwrap_or_default(),
        })
    } else if r.dst_mac.is_some() || r.src_mac.is_some() || r.gateway.is_some() {
        return Err(format!("next hop {}: dst_mac, src_mac and gateway need interface", r.id.0));
    } else if let Some(members) = r.ecmp {
        if members.is_empty() || members.len() > 16 {
            return Err(format!("next hop {}: ecmp takes 1 to 16 members", r.id.0));
        }
        pb::next_hop::Kind::Ecmp(pb::EcmpNextHop { members: members.iter().map(|m| m.0).collect() })
    } else if r.discard {
        pb::next_hop::Kind::Discard(pb::Discard {})
    } else {
        pb::next_hop::Kind::Receive(pb::Receive {})
    };
    Ok(NextHopDoc { id: r.id, kind, ecmp })
}

/// A next-hop id being declared.
struct NhDecl(u32);

impl<'de> Deserialize<'de> for NhDecl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_u32(d, "a next-hop id", |id| {
            if id == 0 {
                return Err("next-hop ids start at 1".into());
            }
            in_scope(
                |_, seen| {
                    if seen.next_hops.insert(id) {
                        Ok(())
                    } else {
                        Err(format!("next hop {id} is declared twice"))
                    }
                },
            )?;
            Ok(NhDecl(id))
        })
    }
}

/// A next hop in use: declared in this node's next_hops.
#[derive(Clone, Copy)]
struct NhRef(u32);

impl<'de> Deserialize<'de> for NhRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_u32(d, "a next-hop id", |id| {
            in_scope(|n, _| {
                if n.next_hops.contains_key(&id) {
                    Ok(())
                } else {
                    Err(format!("next hop {id} is not declared in this node's next_hops"))
                }
            })?;
            Ok(NhRef(id))
        })
    }
}

/// An ECMP member: a declared next hop that is not a group itself.
struct MemberRef(u32);

impl<'de> Deserialize<'de> for MemberRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_u32(d, "a next-hop id", |id| {
            in_scope(|n, _| match n.next_hops.get(&id) {
                Some(false) => Ok(()),
                Some(true) => Err(format!("next hop {id} is an ECMP group: groups cannot be members")),
                None => Err(format!("next hop {id} is not declared in this node's next_hops")),
            })?;
            Ok(MemberRef(id))
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteRaw {
    #[serde(default)]
    vrf: RoutesVrfRef,
    prefix: Cidr,
    next_hop: NhRef,
}

struct RouteDoc {
    vrf: u32,
    prefix: Cidr,
    next_hop: u32,
}

impl<'de> Deserialize<'de> for RouteDoc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_map(d, "a route", |r: RouteRaw| {
            let key = (r.vrf.0, r.prefix);
            in_scope(|_, seen| {
                if seen.routes.insert(key) {
                    Ok(())
                } else {
                    Err(format!("route {} in VRF {} is declared twice", r.prefix, r.vrf.0))
                }
            })?;
            Ok(RouteDoc { vrf: r.vrf.0, prefix: r.prefix, next_hop: r.next_hop.0 })
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum FlowActionDoc {
    Forward,
    Drop,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlowRuleRaw {
    #[serde(default)]
    interface: Option<IfRef>,
    #[serde(default)]
    vrf: Option<VrfRef>,
    #[serde(default)]
    src: Option<Cidr>,
    #[serde(default)]
    dst: Option<Cidr>,
    #[serde(default)]
    protocol: Option<Protocol>,
    #[serde(default)]
    src_ports: Option<Ports>,
    #[serde(default)]
    dst_ports: Option<Ports>,
    action: FlowActionDoc,
    #[serde(default)]
    next_hop: Option<NhRef>,
    #[serde(default)]
    reverse: Option<bool>,
    #[serde(default)]
    reverse_next_hop: Option<NhRef>,
}

struct FlowRuleDoc(FlowRule);

impl<'de> Deserialize<'de> for FlowRuleDoc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_map(d, "a flow rule", flow_rule)
    }
}

fn flow_rule(r: FlowRuleRaw) -> Result<FlowRuleDoc, String> {
    if (r.src_ports.is_some() || r.dst_ports.is_some()) && !matches!(r.protocol, Some(Protocol(6 | 17))) {
        return Err("src_ports/dst_ports need protocol tcp or udp".into());
    }
    if let (Some(s), Some(d)) = (r.src, r.dst) {
        if s.addr.is_ipv4() != d.addr.is_ipv4() {
            return Err("src and dst are of different address families".into());
        }
    }
    let decision = match r.action {
        FlowActionDoc::Drop => {
            if r.next_hop.is_some() || r.reverse.is_some() || r.reverse_next_hop.is_some() {
                return Err("next_hop, reverse and reverse_next_hop are for action: forward".into());
            }
            FlowDecision::Drop
        }
        FlowActionDoc::Forward => {
            let reverse = r.reverse.unwrap_or(true);
            if !reverse && r.reverse_next_hop.is_some() {
                return Err("reverse_next_hop with reverse: false".into());
            }
            FlowDecision::Forward {
                next_hop: r.next_hop.map(|n| n.0),
                reverse,
                reverse_next_hop: r.reverse_next_hop.map(|n| n.0),
            }
        }
    };
    Ok(FlowRuleDoc(FlowRule {
        interface: r.interface.map(|i| i.0 .0),
        vrf: r.vrf.map(|v| v.0),
        src: r.src,
        dst: r.dst,
        protocol: r.protocol.map(|p| p.0),
        src_ports: r.src_ports,
        dst_ports: r.dst_ports,
        decision,
    }))
}

impl FileDoc {
    fn into_desired(self) -> Desired {
        let nodes = self.nodes.into_iter().map(|(name, n)| (name.0, n.into_desired())).collect();
        Desired { nodes }
    }
}

impl NodeDoc {
    fn into_desired(self) -> NodeDesired {
        let mut d = NodeDesired { server: self.server.0, ..Default::default() };
        for v in self.vrfs {
            let mode = match v.mode {
                VrfModeDoc::Routes => pb::VrfMode::Routes,
                VrfModeDoc::KernelFib => pb::VrfMode::KernelFib,
            };
            d.vrfs.insert(v.id.0, (mode, v.kernel_table));
        }
        for i in self.interfaces {
            let name = i.name.0 .0;
            let xdp_mode = match i.xdp_mode {
                XdpModeDoc::Auto => pb::XdpMode::Auto,
                XdpModeDoc::Native => pb::XdpMode::Native,
                XdpModeDoc::Generic => pb::XdpMode::Generic,
            };
            d.interfaces.insert(name.clone(), IfaceDesired { vrf: i.vrf.0, xdp_mode });
            let flows = match i.flows {
                None | Some(FlowModeDoc::Off) => FlowModeDesired::default(),
                Some(FlowModeDoc::On(p)) => FlowModeDesired {
                    enabled: true,
                    miss_forward: p.miss_action == MissActionDoc::ForwardByRoute,
                    hold_cap: p.hold_cap.unwrap_or(0),
                    punt_rate: p.punt_rate.unwrap_or(0),
                    punt_burst: p.punt_burst.unwrap_or(0),
                },
            };
            d.flow_modes.insert(name.clone(), flows);
            for (dir, a) in [(pb::Direction::Ingress, i.ingress_policy), (pb::Direction::Egress, i.egress_policy)] {
                if let Some(a) = a {
                    d.attachments.insert((name.clone(), dir as i32), (a.policy.0, a.default_deny));
                }
            }
        }
        for h in self.next_hops {
            d.next_hops.insert(h.id.0, h.kind);
        }
        for r in self.routes {
            d.routes.insert((r.vrf, r.prefix), r.next_hop);
        }
        for (name, rules) in self.policies {
            d.policies.insert(name.0, rules.iter().map(pb::Rule::from).collect());
        }
        d.flow_rules = self.flow_rules.into_iter().map(|r| r.0).collect();
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
nodes:
  a:
    server: unix:/run/a.sock
    vrfs:
      - id: 1
      - {id: 2, mode: kernel-fib, kernel_table: 100}
    interfaces:
      - {name: eth0, flows: true, ingress_policy: web}
      - {name: eth1, vrf: 1, egress_policy: {policy: web, default: deny}}
    next_hops:
      - {id: 1, interface: eth1, dst_mac: "02:00:5E:00:53:02"}
      - {id: 2, interface: eth1, gateway: 198.51.100.254}
      - {id: 3, ecmp: [1, 2]}
      - {id: 4, discard: true}
    routes:
      - {prefix: 198.51.100.0/24, next_hop: 3}
      - {vrf: 1, prefix: "2001:db8::/32", next_hop: 4}
    policies:
      web:
        - {priority: 10, protocol: tcp, dst_ports: 22, action: deny}
    flow_rules:
      - {protocol: tcp, dst: 198.51.100.0/24, dst_ports: 80, action: forward}
      - {action: drop}
  b:
    server: http://127.0.0.1:50051
"#;

    fn err(text: &str) -> String {
        parse("f.yaml", text).unwrap_err().to_string()
    }

    #[test]
    fn config_good_file_loads_every_kind() {
        let d = parse("f.yaml", GOOD).unwrap();
        let a = &d.nodes["a"];
        assert_eq!(a.vrfs.len(), 2);
        assert_eq!(a.interfaces["eth1"].vrf, 1);
        assert!(a.flow_modes["eth0"].enabled && !a.flow_modes["eth1"].enabled);
        assert_eq!(a.attachments.len(), 2);
        assert_eq!(
            a.next_hops[&1],
            pb::next_hop::Kind::Encap(pb::EncapNextHop {
                interface: "eth1".into(),
                dst_mac: "02:00:5e:00:53:02".into(),
                ..Default::default()
            })
        );
        assert_eq!(a.routes.len(), 2);
        assert_eq!(a.policies["web"].len(), 1);
        assert_eq!(a.flow_rules.len(), 2);
        assert!(d.nodes["b"].routes.is_empty());
    }

    #[test]
    fn config_bad_reference_names_file_line_column_and_field() {
        let bad = GOOD.replace("{prefix: 198.51.100.0/24, next_hop: 3}", "{prefix: 198.51.100.0/24, next_hop: 9}");
        assert_eq!(
            err(&bad),
            "f.yaml:17:45: nodes.a.routes[0].next_hop: next hop 9 is not declared in this node's next_hops"
        );
        let bad = GOOD.replace("{id: 3, ecmp: [1, 2]}", "{id: 3, ecmp: [1, 3]}");
        assert_eq!(
            err(&bad),
            "f.yaml:14:27: nodes.a.next_hops[2].ecmp[1]: next hop 3 is an ECMP group: groups cannot be members"
        );
        let bad = GOOD.replace("{name: eth1, vrf: 1,", "{name: eth1, vrf: 7,");
        assert_eq!(err(&bad), "f.yaml:10:27: nodes.a.interfaces[1].vrf: VRF 7 is not declared in this node's vrfs");
        let bad = GOOD.replace("{vrf: 1, prefix", "{vrf: 2, prefix");
        assert!(
            err(&bad).starts_with("f.yaml:18:15: nodes.a.routes[1].vrf: VRF 2 forwards by the kernel FIB"),
            "{}",
            err(&bad)
        );
        let bad = GOOD.replace("ingress_policy: web", "ingress_policy: api");
        assert_eq!(
            err(&bad),
            "f.yaml:9:51: nodes.a.interfaces[0].ingress_policy: policy api is not declared in this node's policies"
        );
    }

    #[test]
    fn config_bad_values_and_duplicates_name_the_place() {
        let bad = GOOD.replace("{prefix: 198.51.100.0/24", "{prefix: 198.51.100.1/24");
        assert!(
            err(&bad).starts_with("f.yaml:17:18: nodes.a.routes[0].prefix: \"198.51.100.1/24\" has host bits set"),
            "{}",
            err(&bad)
        );
        let bad = GOOD.replace("{id: 4, discard: true}", "{id: 1, discard: true}");
        assert_eq!(err(&bad), "f.yaml:15:14: nodes.a.next_hops[3].id: next hop 1 is declared twice");
        let bad = GOOD.replace("dst_mac: \"02:00:5E:00:53:02\"", "dst_mac: \"02:00:5E:00:53\"");
        assert!(err(&bad).starts_with("f.yaml:12:43: nodes.a.next_hops[0].dst_mac: "), "{}", err(&bad));
        let bad = GOOD.replace("server: http://127.0.0.1:50051", "server: 127.0.0.1:50051");
        assert!(err(&bad).starts_with("f.yaml:26:13: nodes.b.server: "), "{}", err(&bad));
        let bad = GOOD.replace("{action: drop}", "{action: reject}");
        assert!(
            err(&bad).starts_with("f.yaml:24:18: nodes.a.flow_rules[1].action: unknown variant `reject`"),
            "{}",
            err(&bad)
        );
        let bad = GOOD.replace("{id: 4, discard: true}", "{id: 4, discard: true, receive: true}");
        assert!(err(&bad).contains("nodes.a.next_hops[3]: next hop 4: exactly one of"), "{}", err(&bad));
        let bad =
            GOOD.replace("      - {action: drop}", "      - {action: drop}\n      - {dst_ports: 80, action: drop}");
        assert!(
            err(&bad).contains("nodes.a.flow_rules[2]: src_ports/dst_ports need protocol tcp or udp"),
            "{}",
            err(&bad)
        );
        let bad = GOOD.replace(
            "      - {vrf: 1, prefix",
            "      - {prefix: 198.51.100.0/24, next_hop: 1}\n      - {vrf: 1, prefix",
        );
        assert!(
            err(&bad).contains("nodes.a.routes[1]: route 198.51.100.0/24 in VRF 0 is declared twice"),
            "{}",
            err(&bad)
        );
        assert!(err("nodes:\n  a:\n    server: unix:/x\n    colour: red\n")
            .starts_with("f.yaml:4:5: nodes.a: unknown field `colour`"));
        assert!(err("nodes: {}\n").contains("no node declared"));
    }
}
