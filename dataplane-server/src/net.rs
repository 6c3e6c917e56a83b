//! Plain network value types shared by the domain and the dataplane layer: prefixes and MAC
//! addresses, with the parsing and validation the API needs.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

/// An IP prefix with no host bits set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

/// Why a prefix or address string was rejected (the caller adds the field name).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("{0:?} is not an IP prefix (expected ADDR/LEN, e.g. 198.51.100.0/24 or 2001:db8::/32)")]
    NotPrefix(String),
    #[error("{0:?} is not an IP address")]
    NotAddress(String),
    #[error("prefix length {len} is longer than {max} for {family}")]
    BadLength { len: u32, max: u8, family: &'static str },
    #[error("{given} has host bits set (did you mean {masked}?)")]
    HostBits { given: String, masked: String },
    #[error("{0:?} is not a MAC address (expected 6 colon-separated hex bytes, e.g. 02:00:5e:00:53:01)")]
    NotMac(String),
}

impl Prefix {
    /// A prefix from an address and a length, rejecting host bits.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, ParseError> {
        let max = max_len(addr);
        if len > max {
            return Err(ParseError::BadLength { len: len.into(), max, family: family(addr) });
        }
        let masked = mask(addr, len);
        if masked != addr {
            return Err(ParseError::HostBits { given: format!("{addr}/{len}"), masked: format!("{masked}/{len}") });
        }
        Ok(Self { addr, len })
    }

    /// The prefix of length `len` containing `addr` (host bits cleared).
    pub fn containing(addr: IpAddr, len: u8) -> Self {
        Self { addr: mask(addr, len.min(max_len(addr))), len: len.min(max_len(addr)) }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    #[expect(clippy::len_without_is_empty, reason = "a prefix length, not a container size; /0 is a valid prefix")]
    pub fn len(&self) -> u8 {
        self.len
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// Whether `other` is equal to or inside this prefix.
    pub fn covers(&self, other: &Prefix) -> bool {
        self.addr.is_ipv4() == other.addr.is_ipv4() && other.len >= self.len && mask(other.addr, self.len) == self.addr
    }
}

impl FromStr for Prefix {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let (a, l) = s.split_once('/').ok_or_else(|| ParseError::NotPrefix(s.to_owned()))?;
        let addr: IpAddr = a.parse().map_err(|_| ParseError::NotPrefix(s.to_owned()))?;
        // Digits only: "+24" or " 24" are not lengths.
        if l.is_empty() || !l.bytes().all(|b| b.is_ascii_digit()) || l.len() > 3 {
            return Err(ParseError::NotPrefix(s.to_owned()));
        }
        let len: u32 = l.parse().map_err(|_| ParseError::NotPrefix(s.to_owned()))?;
        let max = max_len(addr);
        if len > u32::from(max) {
            return Err(ParseError::BadLength { len, max, family: family(addr) });
        }
        Prefix::new(addr, len as u8)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Parses a plain address.
pub fn parse_addr(s: &str) -> Result<IpAddr, ParseError> {
    s.parse().map_err(|_| ParseError::NotAddress(s.to_owned()))
}

fn max_len(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

fn family(addr: IpAddr) -> &'static str {
    if addr.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

/// A MAC address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl FromStr for Mac {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in out.iter_mut() {
            let p = parts.next().ok_or_else(|| ParseError::NotMac(s.to_owned()))?;
            if p.len() != 2 {
                return Err(ParseError::NotMac(s.to_owned()));
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| ParseError::NotMac(s.to_owned()))?;
        }
        if parts.next().is_some() {
            return Err(ParseError::NotMac(s.to_owned()));
        }
        Ok(Mac(out))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

/// As its text (`198.51.100.0/24`): what the state file holds. Read back strictly (host bits,
/// lengths), as from the API.
impl serde::Serialize for Prefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// As its text (`02:00:5e:00:53:01`).
impl serde::Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_parse_valid_round_trips() {
        for s in ["198.51.100.0/24", "0.0.0.0/0", "192.0.2.1/32", "2001:db8::/32", "::/0", "2001:db8::1/128"] {
            assert_eq!(s.parse::<Prefix>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn prefix_parse_malformed_rejected_with_reason() {
        assert!(matches!("198.51.100.1/24".parse::<Prefix>(), Err(ParseError::HostBits { .. })));
        assert!(matches!("198.51.100.0/33".parse::<Prefix>(), Err(ParseError::BadLength { .. })));
        assert!(matches!("2001:db8::/129".parse::<Prefix>(), Err(ParseError::BadLength { .. })));
        for bad in ["198.51.100.0", "198.51.100.0/", "/24", "x/24", "198.51.100.0/+24", "1.2.3.4/ 8", "1.2.3.4/08x"] {
            assert!(bad.parse::<Prefix>().is_err(), "{bad:?}");
        }
        let e = "198.51.100.7/24".parse::<Prefix>().unwrap_err().to_string();
        assert!(e.contains("did you mean 198.51.100.0/24"), "{e}");
    }

    #[test]
    fn prefix_covers_same_family_and_longer_only() {
        let p: Prefix = "198.51.100.0/24".parse().unwrap();
        assert!(p.covers(&"198.51.100.128/25".parse().unwrap()));
        assert!(p.covers(&p));
        assert!(!p.covers(&"198.51.0.0/16".parse().unwrap()));
        assert!(!p.covers(&"2001:db8::/32".parse().unwrap()));
    }

    #[test]
    fn mac_parse_and_display() {
        let m: Mac = "02:00:5E:00:53:01".parse().unwrap();
        assert_eq!(m.to_string(), "02:00:5e:00:53:01");
        for bad in ["", "02:00:5e:00:53", "02:00:5e:00:53:01:02", "2:00:5e:00:53:01", "zz:00:5e:00:53:01"] {
            assert!(bad.parse::<Mac>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prefix_and_mac_serde_as_text_and_malformed_rejected() {
        let p: Prefix = serde_json::from_str("\"198.51.100.0/24\"").unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"198.51.100.0/24\"");
        let e = serde_json::from_str::<Prefix>("\"198.51.100.7/24\"").unwrap_err().to_string();
        assert!(e.contains("did you mean 198.51.100.0/24"), "{e}");
        let m: Mac = serde_json::from_str("\"02:00:5e:00:53:01\"").unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"02:00:5e:00:53:01\"");
        assert!(serde_json::from_str::<Mac>("\"02:00:5e\"").is_err());
    }
}
