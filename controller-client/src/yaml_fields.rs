//! Field types for the YAML files this crate reads (dpctl's policy file, the controller's
//! desired-state file). Each one validates inside its serde visitor, while the parser still
//! stands on the value: serde_yaml then reports the error with the value's path
//! (`nodes.a.routes[3].prefix`) and its line and column, which a check made after
//! deserialization could no longer name.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use serde::{
    de::{self, Visitor},
    Deserialize, Deserializer,
};

use crate::pb;

/// The visitor of [`de_str`] and [`de_scalar`]: a string through `parse`, and numbers as their
/// text when `numbers` allows them.
struct TextVisitor<F> {
    expecting: &'static str,
    numbers: bool,
    parse: F,
}

impl<'de, T, F: FnOnce(&str) -> Result<T, String>> Visitor<'de> for TextVisitor<F> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
        (self.parse)(s).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<T, E> {
        if !self.numbers {
            return Err(E::invalid_type(de::Unexpected::Unsigned(n), &self));
        }
        (self.parse)(&n.to_string()).map_err(E::custom)
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<T, E> {
        if !self.numbers {
            return Err(E::invalid_type(de::Unexpected::Signed(n), &self));
        }
        (self.parse)(&n.to_string()).map_err(E::custom)
    }
}

/// Deserializes a string scalar through `parse` (whose error becomes the value's error).
pub(crate) fn de_str<'de, D, T>(
    d: D,
    expecting: &'static str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    d.deserialize_str(TextVisitor { expecting, numbers: false, parse })
}

/// Deserializes a scalar that may be written as a number or a string (`80`, `"80-89"`,
/// `tcp`), handing `parse` its text.
pub(crate) fn de_scalar<'de, D, T>(
    d: D,
    expecting: &'static str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    d.deserialize_any(TextVisitor { expecting, numbers: true, parse })
}

/// Deserializes an unsigned integer through `check`.
pub(crate) fn de_u32<'de, D, T>(
    d: D,
    expecting: &'static str,
    check: impl FnOnce(u32) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct V<F>(&'static str, F);
    impl<'de, T, F: FnOnce(u32) -> Result<T, String>> Visitor<'de> for V<F> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<T, E> {
            let n = u32::try_from(n).map_err(|_| E::custom(format!("{n} is out of range (at most {})", u32::MAX)))?;
            (self.1)(n).map_err(E::custom)
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<T, E> {
            match u64::try_from(n) {
                Ok(n) => self.visit_u64(n),
                Err(_) => Err(E::custom(format!("{n} is negative"))),
            }
        }
    }
    d.deserialize_u64(V(expecting, check))
}

/// Deserializes a mapping as `T`, then runs `check` on it while the parser is still inside the
/// mapping (so the error is placed at the item, `next_hops[3]`, not at its list).
pub(crate) fn de_map<'de, D, T, U>(
    d: D,
    expecting: &'static str,
    check: impl FnOnce(T) -> Result<U, String>,
) -> Result<U, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct V<T, F>(&'static str, F, std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>, U, F: FnOnce(T) -> Result<U, String>> Visitor<'de> for V<T, F> {
        type Value = U;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<U, A::Error> {
            let t = T::deserialize(de::value::MapAccessDeserializer::new(map))?;
            (self.1)(t).map_err(de::Error::custom)
        }
    }
    d.deserialize_map(V(expecting, check, std::marker::PhantomData))
}

/// A field's short form: a scalar standing for a common value of its long form, a mapping.
pub(crate) enum Short<'a> {
    Bool(bool),
    Str(&'a str),
}

/// Deserializes a field written either short, as a scalar (`tcp_flags: syn-only`), or long, as
/// a mapping read as `M` (`tcp_flags: {mask, value}`). `short` answers `None` for a kind of
/// scalar the field does not take, which is then refused as serde refuses a wrong type.
pub(crate) fn de_short_or_long<'de, D, T, M>(
    d: D,
    expecting: &'static str,
    short: impl FnOnce(Short) -> Option<Result<T, String>>,
    long: impl FnOnce(M) -> T,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    M: Deserialize<'de>,
{
    struct V<S, L, M>(&'static str, S, L, std::marker::PhantomData<M>);
    impl<'de, T, M, S, L> Visitor<'de> for V<S, L, M>
    where
        M: Deserialize<'de>,
        S: FnOnce(Short) -> Option<Result<T, String>>,
        L: FnOnce(M) -> T,
    {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_bool<E: de::Error>(self, b: bool) -> Result<T, E> {
            match (self.1)(Short::Bool(b)) {
                Some(r) => r.map_err(E::custom),
                None => Err(E::invalid_type(de::Unexpected::Bool(b), &self.0)),
            }
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
            match (self.1)(Short::Str(s)) {
                Some(r) => r.map_err(E::custom),
                None => Err(E::invalid_type(de::Unexpected::Str(s), &self.0)),
            }
        }
        fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            M::deserialize(de::value::MapAccessDeserializer::new(map)).map(self.2)
        }
    }
    d.deserialize_any(V(expecting, short, long, std::marker::PhantomData))
}

/// A CIDR prefix with no host bits set: `198.51.100.0/24`, `2001:db8::/32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl Cidr {
    /// Whether `a` lies inside (same family).
    pub fn contains(&self, a: IpAddr) -> bool {
        match (self.addr, a) {
            (IpAddr::V4(p), IpAddr::V4(a)) => mask_v4(u32::from(a), self.len) == u32::from(p),
            (IpAddr::V6(p), IpAddr::V6(a)) => mask_v6(u128::from(a), self.len) == u128::from(p),
            _ => false,
        }
    }
}

fn mask_v4(a: u32, len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        a & (u32::MAX << (32 - u32::from(len)))
    }
}

fn mask_v6(a: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        a & (u128::MAX << (128 - u32::from(len)))
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = s.split_once('/').ok_or_else(|| format!("{s:?} is not ADDRESS/LENGTH"))?;
        let addr: IpAddr = a.parse().map_err(|_| format!("{s:?}: {a:?} is not an IPv4 or IPv6 address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len: u8 =
            l.parse().ok().filter(|&n| n <= max).ok_or_else(|| format!("{s:?}: length must be 0 to {max}"))?;
        let masked = match addr {
            IpAddr::V4(v) => IpAddr::V4(Ipv4Addr::from(mask_v4(u32::from(v), len))),
            IpAddr::V6(v) => IpAddr::V6(Ipv6Addr::from(mask_v6(u128::from(v), len))),
        };
        if masked != addr {
            return Err(format!("{s:?} has host bits set (the prefix is {masked}/{len})"));
        }
        Ok(Self { addr, len })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_str(d, "a CIDR prefix such as 198.51.100.0/24", str::parse)
    }
}

/// An IPv4 or IPv6 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Addr(pub IpAddr);

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_str(d, "an IPv4 or IPv6 address", |s| {
            s.parse().map(Addr).map_err(|_| format!("{s:?} is not an IPv4 or IPv6 address"))
        })
    }
}

/// A MAC address, kept in the canonical lower-case colon form the server reports.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub String);

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_str(d, "a MAC address such as 02:00:5e:00:53:01", |s| {
            let parts: Vec<&str> = s.split([':', '-']).collect();
            let bytes: Option<Vec<u8>> =
                parts.iter().map(|p| if p.len() == 2 { u8::from_str_radix(p, 16).ok() } else { None }).collect();
            match bytes {
                Some(b) if b.len() == 6 => Ok(Mac(b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":"))),
                _ => Err(format!("{s:?} is not a MAC address (six hex bytes separated by ':')")),
            }
        })
    }
}

/// A kernel interface name: 1 to 15 bytes, no '/', no whitespace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IfName(pub String);

impl IfName {
    pub fn check(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > 15 || s.contains('/') || s.contains(char::is_whitespace) || s == "." || s == ".." {
            return Err(format!("{s:?} is not an interface name (1 to 15 bytes, no '/' or spaces)"));
        }
        Ok(Self(s.to_owned()))
    }
}

impl<'de> Deserialize<'de> for IfName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_str(d, "an interface name", IfName::check)
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An IP protocol: `tcp`, `udp`, `icmp`, `icmpv6` or a number 0-255.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Protocol(pub u32);

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_scalar(d, "tcp, udp, icmp, icmpv6 or a protocol number", |t| {
            Ok(Protocol(match t.to_ascii_lowercase().as_str() {
                "tcp" => 6,
                "udp" => 17,
                "icmp" => 1,
                "icmpv6" | "ipv6-icmp" => 58,
                other => other
                    .parse::<u32>()
                    .ok()
                    .filter(|&n| n <= 255)
                    .ok_or_else(|| format!("{t:?} is not tcp, udp, icmp, icmpv6 or a number 0-255"))?,
            }))
        })
    }
}

/// A port or an inclusive range `FIRST-LAST`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    pub first: u16,
    pub last: u16,
}

impl Ports {
    pub fn contains(&self, p: u32) -> bool {
        (u32::from(self.first)..=u32::from(self.last)).contains(&p)
    }
}

impl<'de> Deserialize<'de> for Ports {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_scalar(d, "a port or FIRST-LAST", |t| {
            let (a, b) = t.split_once('-').unwrap_or((t, t));
            let num = |v: &str| {
                v.trim().parse::<u16>().map_err(|_| format!("{t:?} is not PORT or FIRST-LAST (ports 0-65535)"))
            };
            let (first, last) = (num(a)?, num(b)?);
            if first > last {
                return Err(format!("{t:?}: the first port is above the last"));
            }
            Ok(Ports { first, last })
        })
    }
}

impl From<Ports> for pb::PortRange {
    fn from(p: Ports) -> Self {
        pb::PortRange { first: p.first.into(), last: p.last.into() }
    }
}

/// TCP flags to match: `syn-only`, or `{mask, value}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpFlags {
    pub mask: u32,
    pub value: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TcpFlagsMap {
    mask: u32,
    value: u32,
}

impl<'de> Deserialize<'de> for TcpFlags {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let short = |s: Short| match s {
            // SYN set, ACK clear: the first segment of a connection.
            Short::Str("syn-only" | "syn") => Some(Ok(TcpFlags { mask: 0x12, value: 0x02 })),
            Short::Str(other) => Some(Err(format!("{other:?} is not syn-only or {{mask, value}}"))),
            Short::Bool(_) => None,
        };
        de_short_or_long(d, "syn-only or {mask, value}", short, |m: TcpFlagsMap| TcpFlags {
            mask: m.mask,
            value: m.value,
        })
    }
}

/// A policy rule's action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleAction(pub pb::Action);

impl<'de> Deserialize<'de> for RuleAction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_str(d, "allow, deny or punt", |s| match s.to_ascii_lowercase().as_str() {
            "allow" => Ok(RuleAction(pb::Action::Allow)),
            "deny" | "drop" => Ok(RuleAction(pb::Action::Deny)),
            "punt" => Ok(RuleAction(pb::Action::Punt)),
            other => Err(format!("{other:?} is not allow, deny or punt")),
        })
    }
}

/// One policy rule as the files write it (the server validates combinations, such as ports
/// without TCP/UDP, and names the rule's field).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDoc {
    pub priority: u32,
    #[serde(default)]
    pub src: Option<Cidr>,
    #[serde(default)]
    pub dst: Option<Cidr>,
    #[serde(default)]
    pub protocol: Option<Protocol>,
    #[serde(default)]
    pub src_ports: Option<Ports>,
    #[serde(default)]
    pub dst_ports: Option<Ports>,
    #[serde(default)]
    pub icmp_type: Option<u32>,
    #[serde(default)]
    pub icmp_code: Option<u32>,
    #[serde(default)]
    pub tcp_flags: Option<TcpFlags>,
    pub action: RuleAction,
}

impl From<&RuleDoc> for pb::Rule {
    fn from(r: &RuleDoc) -> Self {
        pb::Rule {
            priority: r.priority,
            src_prefix: r.src.map(|c| c.to_string()).unwrap_or_default(),
            dst_prefix: r.dst.map(|c| c.to_string()).unwrap_or_default(),
            protocol: r.protocol.map(|p| p.0),
            src_ports: r.src_ports.map(Into::into),
            dst_ports: r.dst_ports.map(Into::into),
            icmp_type: r.icmp_type,
            icmp_code: r.icmp_code,
            tcp_flags: r.tcp_flags.map(|t| pb::TcpFlags { mask: t.mask, value: t.value }),
            action: r.action.0 as i32,
            ..Default::default()
        }
    }
}

/// serde_yaml's message without its trailing " at line L column C" (callers print the
/// location in front, compiler style), and the location.
pub fn split_location(e: &serde_yaml::Error) -> (String, Option<(usize, usize)>) {
    let text = e.to_string();
    match e.location() {
        Some(l) => {
            let suffix = format!(" at line {} column {}", l.line(), l.column());
            (text.strip_suffix(&suffix).unwrap_or(&text).to_owned(), Some((l.line(), l.column())))
        }
        None => (text, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parse_rejects_host_bits_and_bad_lengths() {
        assert_eq!("198.51.100.0/24".parse::<Cidr>().unwrap().to_string(), "198.51.100.0/24");
        assert_eq!("2001:db8::/32".parse::<Cidr>().unwrap().len, 32);
        for bad in ["198.51.100.1/24", "198.51.100.0/33", "198.51.100.0", "x/8", "2001:db8::1/32"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        let c: Cidr = "198.51.100.0/24".parse().unwrap();
        assert!(c.contains("198.51.100.9".parse().unwrap()));
        assert!(!c.contains("198.51.101.9".parse().unwrap()));
        assert!(!c.contains("2001:db8::1".parse().unwrap()));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains("203.0.113.1".parse().unwrap()));
    }

    #[test]
    fn field_error_names_path_line_and_column() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Doc {
            routes: Vec<RuleDoc>,
        }
        let e = serde_yaml::from_str::<Doc>("routes:\n  - priority: 1\n    dst: 198.51.100.1/24\n    action: allow\n")
            .unwrap_err();
        let (msg, at) = split_location(&e);
        assert_eq!(at, Some((3, 10)));
        assert!(msg.starts_with("routes[0].dst: \"198.51.100.1/24\" has host bits set"), "{msg}");
    }
}
