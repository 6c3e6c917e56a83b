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
    hash::Hash,
    path::Path,
};

use serde::{Deserialize, Deserializer};

use super::desired::{Desired, FlowDecision, FlowModeDesired, FlowRule, IfaceDesired, NodeDesired};
use crate::{
    pb,
    yaml_fields::{
        de_map, de_short_or_long, de_str, de_u32, split_location, Addr, Cidr, IfName, Mac, Ports, Protocol, RuleDoc,
        Short,
    },
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
            s.interfaces.extend(n.interfaces.iter().map(|i| i.name.0.clone()));
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
// Declarations and references.
//
// Each kind of symbol a node declares (VRF, interface, policy, next hop) is read the same way:
// a declaration must be new in its node, a reference must name a declaration. What differs is
// the value's type and its own checks, and for some references a condition on what they name
// (a route's VRF forwards by routes, an ECMP member is not a group): such a reference is a kind
// of its own over the same declarations.

/// How a symbol's value is written: a number or a name.
trait Id: Clone + Eq + Hash + fmt::Display {
    /// Reads one and hands it to `then` while the parser still stands on it, so that `then`'s
    /// error carries the value's position.
    fn read<'de, D: Deserializer<'de>, T>(
        d: D,
        expecting: &'static str,
        then: impl FnOnce(Self) -> Result<T, String>,
    ) -> Result<T, D::Error>;
}

impl Id for u32 {
    fn read<'de, D: Deserializer<'de>, T>(
        d: D,
        expecting: &'static str,
        then: impl FnOnce(Self) -> Result<T, String>,
    ) -> Result<T, D::Error> {
        de_u32(d, expecting, then)
    }
}

impl Id for String {
    fn read<'de, D: Deserializer<'de>, T>(
        d: D,
        expecting: &'static str,
        then: impl FnOnce(Self) -> Result<T, String>,
    ) -> Result<T, D::Error> {
        de_str(d, expecting, |s| then(s.to_owned()))
    }
}

/// A kind of reference: its value, and which of the node's declarations it may name.
trait Kind {
    type Id: Id;
    /// What the parser expects, in a type error.
    const EXPECTING: &'static str;
    /// The symbol in messages: `next hop 3 is ...`.
    const NOUN: &'static str;
    /// The node's list that declares it: `... not declared in this node's next_hops`.
    const LIST: &'static str;

    /// Checks the value on its own, before any lookup (a name's characters).
    fn valid(_id: &Self::Id) -> Result<(), String> {
        Ok(())
    }

    /// `None` when the node does not declare `id`; otherwise whether this reference may use it.
    fn usable(node: &NodeSymbols, id: &Self::Id) -> Option<Result<(), String>>;

    /// Reads a valid value and hands it to `then` (see [`Id::read`]).
    fn read<'de, D: Deserializer<'de>, T>(
        d: D,
        then: impl FnOnce(Self::Id) -> Result<T, String>,
    ) -> Result<T, D::Error> {
        Self::Id::read(d, Self::EXPECTING, |id| {
            Self::valid(&id)?;
            then(id)
        })
    }
}

/// A kind that is declared, not only referred to ([`RoutesVrf`] and [`Member`] refer to
/// declarations of [`Vrf`] and [`NextHop`]).
trait Declared: Kind {
    /// Refuses values that exist without being declared (VRF 0) or cannot be (next hop 0).
    fn declarable(_id: &Self::Id) -> Result<(), String> {
        Ok(())
    }
    /// This kind's declarations met so far in the node.
    fn seen(seen: &mut Seen) -> &mut HashSet<Self::Id>;
}

/// A symbol being declared: refused when its node already declares it.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Decl<K: Kind>(K::Id);

impl<'de, K: Declared> Deserialize<'de> for Decl<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        K::read(d, |id| {
            K::declarable(&id)?;
            in_scope(|_, seen| match K::seen(seen).insert(id.clone()) {
                true => Ok(()),
                false => Err(format!("{} {id} is declared twice", K::NOUN)),
            })?;
            Ok(Decl(id))
        })
    }
}

/// A symbol in use: declared in its node, and usable as its kind says.
struct Ref<K: Kind>(K::Id);

impl<K: Kind> Ref<K> {
    /// Checks a valid value against the node's declarations (second pass only).
    fn check(id: K::Id) -> Result<Self, String> {
        in_scope(|node, _| {
            K::usable(node, &id)
                .unwrap_or_else(|| Err(format!("{} {id} is not declared in this node's {}", K::NOUN, K::LIST)))
        })?;
        Ok(Ref(id))
    }
}

impl<'de, K: Kind> Deserialize<'de> for Ref<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        K::read(d, Ref::check)
    }
}

/// A VRF omitted is VRF 0, which always exists.
impl<K: Kind<Id = u32>> Default for Ref<K> {
    fn default() -> Self {
        Ref(0)
    }
}

/// A VRF id; VRF 0 always exists.
enum Vrf {}

impl Kind for Vrf {
    type Id = u32;
    const EXPECTING: &'static str = "a VRF id";
    const NOUN: &'static str = "VRF";
    const LIST: &'static str = "vrfs";
    fn usable(node: &NodeSymbols, id: &u32) -> Option<Result<(), String>> {
        node.vrfs.contains_key(id).then_some(Ok(()))
    }
}

impl Declared for Vrf {
    fn declarable(&id: &u32) -> Result<(), String> {
        match id {
            0 => Err("VRF 0 always exists: do not declare it".into()),
            _ => Ok(()),
        }
    }
    fn seen(seen: &mut Seen) -> &mut HashSet<u32> {
        &mut seen.vrfs
    }
}

/// A route's VRF: one that forwards by the API's routes, not the kernel FIB.
enum RoutesVrf {}

impl Kind for RoutesVrf {
    type Id = u32;
    const EXPECTING: &'static str = Vrf::EXPECTING;
    const NOUN: &'static str = Vrf::NOUN;
    const LIST: &'static str = Vrf::LIST;
    fn usable(node: &NodeSymbols, id: &u32) -> Option<Result<(), String>> {
        node.vrfs.get(id).map(|&routes| match routes {
            true => Ok(()),
            false => Err(format!("VRF {id} forwards by the kernel FIB: it takes no routes (use ip route)")),
        })
    }
}

/// An interface, by its kernel name.
enum Interface {}

impl Kind for Interface {
    type Id = String;
    const EXPECTING: &'static str = "an interface name";
    const NOUN: &'static str = "interface";
    const LIST: &'static str = "interfaces";
    fn valid(name: &String) -> Result<(), String> {
        IfName::check(name).map(drop)
    }
    fn usable(node: &NodeSymbols, name: &String) -> Option<Result<(), String>> {
        node.interfaces.contains(name).then_some(Ok(()))
    }
}

impl Declared for Interface {
    fn seen(seen: &mut Seen) -> &mut HashSet<String> {
        &mut seen.interfaces
    }
}

/// A policy, by its name (a key of `policies`).
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Policy {}

impl Kind for Policy {
    type Id = String;
    const EXPECTING: &'static str = "a policy name";
    const NOUN: &'static str = "policy";
    const LIST: &'static str = "policies";
    fn valid(s: &String) -> Result<(), String> {
        if s.is_empty() || s.len() > 64 || !s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(format!("{s:?} is not a policy name (1 to 64 letters, digits, '-', '_', '.')"));
        }
        Ok(())
    }
    fn usable(node: &NodeSymbols, name: &String) -> Option<Result<(), String>> {
        node.policies.contains(name).then_some(Ok(()))
    }
}

impl Declared for Policy {
    fn seen(seen: &mut Seen) -> &mut HashSet<String> {
        &mut seen.policies
    }
}

/// A next-hop id; ids start at 1.
enum NextHop {}

impl Kind for NextHop {
    type Id = u32;
    const EXPECTING: &'static str = "a next-hop id";
    const NOUN: &'static str = "next hop";
    const LIST: &'static str = "next_hops";
    fn usable(node: &NodeSymbols, id: &u32) -> Option<Result<(), String>> {
        node.next_hops.contains_key(id).then_some(Ok(()))
    }
}

impl Declared for NextHop {
    fn declarable(&id: &u32) -> Result<(), String> {
        match id {
            0 => Err("next-hop ids start at 1".into()),
            _ => Ok(()),
        }
    }
    fn seen(seen: &mut Seen) -> &mut HashSet<u32> {
        &mut seen.next_hops
    }
}

/// An ECMP member: a next hop that is not a group itself (groups are one level deep).
enum Member {}

impl Kind for Member {
    type Id = u32;
    const EXPECTING: &'static str = NextHop::EXPECTING;
    const NOUN: &'static str = NextHop::NOUN;
    const LIST: &'static str = NextHop::LIST;
    fn usable(node: &NodeSymbols, id: &u32) -> Option<Result<(), String>> {
        node.next_hops.get(id).map(|&group| match group {
            false => Ok(()),
            true => Err(format!("next hop {id} is an ECMP group: groups cannot be members")),
        })
    }
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
    policies: BTreeMap<Decl<Policy>, Vec<RuleDoc>>,
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
    id: Decl<Vrf>,
    #[serde(default)]
    mode: VrfModeDoc,
    #[serde(default)]
    kernel_table: Option<u32>,
}

struct VrfDoc {
    id: Decl<Vrf>,
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
    name: Decl<Interface>,
    #[serde(default)]
    vrf: Ref<Vrf>,
    #[serde(default)]
    xdp_mode: XdpModeDoc,
    #[serde(default)]
    flows: Option<FlowModeDoc>,
    #[serde(default)]
    ingress_policy: Option<AttachDoc>,
    #[serde(default)]
    egress_policy: Option<AttachDoc>,
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
        let short = |s: Short| match s {
            Short::Bool(on) => Some(Ok(if on { FlowModeDoc::On(FlowParams::default()) } else { FlowModeDoc::Off })),
            Short::Str(_) => None,
        };
        de_short_or_long(d, "true, false or {miss_action, hold_cap, punt_rate, punt_burst}", short, FlowModeDoc::On)
    }
}

/// A policy attachment: the policy's name, or `{policy, default: allow|deny}`.
struct AttachDoc {
    policy: Ref<Policy>,
    default_deny: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum DefaultDoc {
    #[default]
    Allow,
    Deny,
}

/// `{policy, default}`, the long form of [`AttachDoc`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttachMap {
    policy: Ref<Policy>,
    #[serde(default)]
    default: DefaultDoc,
}

impl<'de> Deserialize<'de> for AttachDoc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let short = |s: Short| match s {
            Short::Str(name) => {
                let name = name.to_owned();
                let policy = Policy::valid(&name).and_then(|()| Ref::check(name));
                Some(policy.map(|policy| AttachDoc { policy, default_deny: false }))
            }
            Short::Bool(_) => None,
        };
        let long = |m: AttachMap| AttachDoc { policy: m.policy, default_deny: m.default == DefaultDoc::Deny };
        de_short_or_long(d, "a policy name or {policy, default}", short, long)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NextHopRaw {
    id: Decl<NextHop>,
    #[serde(default)]
    interface: Option<Ref<Interface>>,
    #[serde(default)]
    dst_mac: Option<Mac>,
    #[serde(default)]
    src_mac: Option<Mac>,
    #[serde(default)]
    gateway: Option<Addr>,
    #[serde(default)]
    ecmp: Option<Vec<Ref<Member>>>,
    #[serde(default)]
    discard: bool,
    #[serde(default)]
    receive: bool,
}

struct NextHopDoc {
    id: Decl<NextHop>,
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
            interface: iface.0,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteRaw {
    #[serde(default)]
    vrf: Ref<RoutesVrf>,
    prefix: Cidr,
    next_hop: Ref<NextHop>,
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
    interface: Option<Ref<Interface>>,
    #[serde(default)]
    vrf: Option<Ref<Vrf>>,
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
    next_hop: Option<Ref<NextHop>>,
    #[serde(default)]
    reverse: Option<bool>,
    #[serde(default)]
    reverse_next_hop: Option<Ref<NextHop>>,
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
        interface: r.interface.map(|i| i.0),
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
            let name = i.name.0;
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
