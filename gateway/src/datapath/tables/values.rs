//! The value types of the tables: identifiers, addresses, prefixes, ports and protocols as
//! an operator writes them, each checked when it is read (a bad value never gets this far).

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use serde::{Deserialize, Serialize};

/// A GTP-U tunnel endpoint identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Teid(pub u32);

/// A QoS flow identifier (0-63).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Qfi(u8);

impl From<Qfi> for u8 {
    fn from(q: Qfi) -> u8 {
        q.0
    }
}

impl Qfi {
    /// The QFI, if `v` is at most 63.
    pub const fn new(v: u8) -> Option<Qfi> {
        if v <= 63 { Some(Qfi(v)) } else { None }
    }
    pub const fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<u8> for Qfi {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, Self::Error> {
        Qfi::new(v).ok_or_else(|| format!("QFI {v} is out of range: a QFI is 0-63"))
    }
}

/// An IMSI (TS 23.003): 5-15 decimal digits, written as a string (`"001010123456789"`) so
/// that leading zeros survive.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Imsi(String);

impl From<Imsi> for String {
    fn from(i: Imsi) -> String {
        i.0
    }
}

impl Imsi {
    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Imsi {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if (5..=15).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Imsi(s.to_string()))
        } else {
            Err(format!(
                "{s:?} is not an IMSI (expected 5-15 decimal digits, as a string)"
            ))
        }
    }
}

impl TryFrom<String> for Imsi {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for Imsi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An Ethernet MAC address, written `02:00:00:00:00:01`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl From<Mac> for String {
    fn from(m: Mac) -> String {
        m.to_string()
    }
}

impl FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!("{s:?} is not a MAC address (expected six hex bytes like 02:00:00:00:00:01)")
        };
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut out {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 {
                return Err(bad());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Mac(out))
    }
}

impl TryFrom<String> for Mac {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// An IPv4 or IPv6 prefix with its host bits zero, written `192.0.2.0/24` or `2001:db8::/32`
/// (a bare address means a host prefix).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

impl IpPrefix {
    /// The prefix `addr/len`; `None` if `len` is too long or host bits are set.
    pub fn new(addr: IpAddr, len: u8) -> Option<IpPrefix> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return None;
        }
        let p = IpPrefix { addr, len };
        (p.masked(addr) == addr).then_some(p)
    }
    /// The prefix of length `len` that contains `addr` (its host bits cleared); `None` if
    /// `len` is too long for the family.
    pub fn containing(addr: IpAddr, len: u8) -> Option<IpPrefix> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (len <= max).then(|| {
            let p = IpPrefix { addr, len };
            IpPrefix {
                addr: p.masked(addr),
                len,
            }
        })
    }
    pub const fn addr(&self) -> IpAddr {
        self.addr
    }
    /// The prefix length in bits.
    #[allow(clippy::len_without_is_empty)] // a length in bits, not a collection size
    pub const fn len(&self) -> u8 {
        self.len
    }
    pub const fn is_ipv6(&self) -> bool {
        self.addr.is_ipv6()
    }
    /// `addr` with the bits beyond this prefix's length cleared (same family assumed).
    pub fn masked(&self, addr: IpAddr) -> IpAddr {
        match addr {
            IpAddr::V4(a) => {
                let m = mask_v4(self.len);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
            }
            IpAddr::V6(a) => {
                let m = mask_v6(self.len);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
            }
        }
    }
    /// Whether `addr` lies in this prefix (false across families).
    pub fn contains(&self, addr: IpAddr) -> bool {
        addr.is_ipv6() == self.is_ipv6() && self.masked(addr) == self.addr
    }
    /// Whether `other` lies entirely inside this prefix.
    pub fn covers(&self, other: &IpPrefix) -> bool {
        other.len >= self.len && self.contains(other.addr)
    }
}

/// The IPv4 netmask of a prefix length, as an integer.
pub fn mask_v4(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

/// The IPv6 netmask of a prefix length, as an integer.
pub fn mask_v6(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len.min(128)))
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for IpPrefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| {
            format!("{s:?} is not an IP prefix (expected e.g. 192.0.2.0/24 or 2001:db8::/32)")
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|&l| l <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0-{max}"))?,
        };
        IpPrefix::new(addr, len).ok_or_else(|| {
            let p = IpPrefix { addr, len };
            format!(
                "{s:?} has host bits set: did you mean {}/{len}?",
                p.masked(addr)
            )
        })
    }
}

impl From<IpPrefix> for String {
    fn from(p: IpPrefix) -> String {
        p.to_string()
    }
}

impl TryFrom<String> for IpPrefix {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// An inclusive destination port range, written `443` or `"8000-8100"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "PortSpec")]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl Serialize for PortRange {
    /// As read: a number for one port, `"lo-hi"` for a range.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.lo == self.hi {
            s.serialize_u16(self.lo)
        } else {
            s.serialize_str(&format!("{}-{}", self.lo, self.hi))
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PortSpec {
    One(u16),
    Range(String),
}

impl TryFrom<PortSpec> for PortRange {
    type Error = String;
    fn try_from(p: PortSpec) -> Result<Self, Self::Error> {
        match p {
            PortSpec::One(p) => Ok(PortRange { lo: p, hi: p }),
            PortSpec::Range(s) => {
                let bad =
                    || format!("{s:?} is not a port range (expected e.g. \"8000-8100\" or 443)");
                let (lo, hi) = s.split_once('-').unwrap_or((&s, &s));
                let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
                let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
                if lo > hi {
                    return Err(format!("port range {s:?} is empty: {lo} > {hi}"));
                }
                Ok(PortRange { lo, hi })
            }
        }
    }
}

/// An IP protocol number, written as a number or `"tcp"`, `"udp"`, `"icmp"`, `"icmpv6"`, `"sctp"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(try_from = "ProtoSpec", into = "u8")]
pub struct Protocol(pub u8);

impl From<Protocol> for u8 {
    fn from(p: Protocol) -> u8 {
        p.0
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ProtoSpec {
    Number(u8),
    Name(String),
}

impl TryFrom<ProtoSpec> for Protocol {
    type Error = String;
    fn try_from(p: ProtoSpec) -> Result<Self, Self::Error> {
        match p {
            ProtoSpec::Number(n) => Ok(Protocol(n)),
            ProtoSpec::Name(s) => match s.to_ascii_lowercase().as_str() {
                "icmp" => Ok(Protocol(1)),
                "tcp" => Ok(Protocol(6)),
                "udp" => Ok(Protocol(17)),
                "icmpv6" => Ok(Protocol(58)),
                "sctp" => Ok(Protocol(132)),
                _ => Err(format!(
                    "unknown protocol {s:?}: use a number (0-255) or tcp, udp, icmp, icmpv6, sctp"
                )),
            },
        }
    }
}

/// What to do with a packet a default applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Disposition {
    /// Hand it to the kernel unchanged (towards the core).
    #[default]
    Pass,
    /// Drop it.
    Drop,
}

/// MEC 011 rule state: only ACTIVE rules are compiled into the fast path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
pub enum RuleState {
    #[default]
    #[serde(rename = "ACTIVE")]
    Active,
    #[serde(rename = "INACTIVE")]
    Inactive,
}

/// What a matching rule does with an uplink G-PDU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum RuleAction {
    /// Decapsulate and forward to the local-services interface (MEC 011 FORWARD_DECAPSULATED).
    #[serde(rename = "LOCAL")]
    Local,
    /// Forward unchanged towards the core.
    #[serde(rename = "PASSTHROUGH")]
    Passthrough,
    /// Drop.
    #[serde(rename = "DROP")]
    Drop,
}
