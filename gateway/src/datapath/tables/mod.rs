//! The fast-path tables as an operator writes them: sessions, traffic rules, interfaces and
//! defaults (`examples/tables.toml` documents the file format).
//!
//! These types *describe* tables; they may be inconsistent (two sessions with one TEID, a
//! rule with too many ports). Only [`super::compile`] turns a description into something a
//! datapath installs, after checking everything. This module never touches the kernel.
//! - [`values`]: identifiers, addresses, prefixes, ports, protocols (checked as read);
//! - [`toml`]: reading a tables file, with the position of every entry;
//! - [`overlay`]: what another owner (the operator API) adds on top of the file;
//! - [`problems`]: what can be wrong with a description, and where.

pub mod overlay;
pub mod problems;
pub mod toml;
pub mod values;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

pub use values::*;

/// Largest tables file accepted (bytes): untrusted input has a size limit.
pub const MAX_TABLES_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Where a side's frames go at layer 2: a fixed MAC, or whatever the kernel's FIB says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextHop {
    /// Every frame to this MAC (`next_hop_mac = "…"`): no lookup per packet.
    Mac(Mac),
    /// `next_hop = "fib"`: `bpf_fib_lookup` per packet for its next destination (uplink LOCAL:
    /// the inner destination; downlink: the gNB). The MACs come from the kernel's route and
    /// neighbour entry, so a router failover or a neighbour's new MAC is followed at once.
    Fib,
}

impl NextHop {
    /// The fixed MAC, if there is one.
    pub fn mac(self) -> Option<Mac> {
        match self {
            NextHop::Mac(m) => Some(m),
            NextHop::Fib => None,
        }
    }
}

/// The value `next_hop` may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum NextHopMode {
    Fib,
}

/// Exactly one of `next_hop_mac` and `next_hop`, as written.
fn next_hop(mac: Option<Mac>, mode: Option<NextHopMode>, side: &str) -> Result<NextHop, String> {
    match (mac, mode) {
        (Some(m), None) => Ok(NextHop::Mac(m)),
        (None, Some(NextHopMode::Fib)) => Ok(NextHop::Fib),
        (Some(_), Some(_)) => Err(format!(
            "[{side}] has both `next_hop_mac` and `next_hop`: keep one (a fixed MAC, or \
             `next_hop = \"fib\"` for the kernel's FIB)"
        )),
        (None, None) => Err(format!(
            "[{side}] needs its next hop: `next_hop_mac = \"…\"` (a fixed MAC) or \
             `next_hop = \"fib\"` (the kernel's FIB)"
        )),
    }
}

/// `[n3]` as written (see [`N3Interface`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct N3File {
    ifindex: u32,
    mac: Mac,
    #[serde(default)]
    next_hop_mac: Option<Mac>,
    #[serde(default)]
    next_hop: Option<NextHopMode>,
    #[serde(default)]
    ipv4: Option<Ipv4Addr>,
    #[serde(default)]
    ipv6: Option<Ipv6Addr>,
    mtu: u32,
    #[serde(default)]
    vlan: Vec<u16>,
}

impl TryFrom<N3File> for N3Interface {
    type Error = String;
    fn try_from(f: N3File) -> Result<Self, String> {
        Ok(N3Interface {
            ifindex: f.ifindex,
            mac: f.mac,
            next_hop: next_hop(f.next_hop_mac, f.next_hop, "n3")?,
            ipv4: f.ipv4,
            ipv6: f.ipv6,
            mtu: f.mtu,
            vlan: f.vlan,
        })
    }
}

/// `[local]` as written (see [`LocalInterface`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LocalFile {
    ifindex: u32,
    mac: Mac,
    #[serde(default)]
    next_hop_mac: Option<Mac>,
    #[serde(default)]
    next_hop: Option<NextHopMode>,
    #[serde(default)]
    vlan: Vec<u16>,
}

impl TryFrom<LocalFile> for LocalInterface {
    type Error = String;
    fn try_from(f: LocalFile) -> Result<Self, String> {
        Ok(LocalInterface {
            ifindex: f.ifindex,
            mac: f.mac,
            next_hop: next_hop(f.next_hop_mac, f.next_hop, "local")?,
            vlan: f.vlan,
        })
    }
}

/// The N3 interface (facing the gNBs).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "N3File")]
pub struct N3Interface {
    /// Interface index the downlink program redirects encapsulated packets to.
    pub ifindex: u32,
    /// Our MAC on N3 (source of encapsulated frames).
    pub mac: Mac,
    /// The next hop towards the gNBs (destination of encapsulated frames): `next_hop_mac`
    /// (a fixed MAC) or `next_hop = "fib"` in the file, exactly one of them.
    pub next_hop: NextHop,
    /// Our IPv4 address on N3: outer source towards IPv4 gNBs.
    #[serde(default)]
    pub ipv4: Option<Ipv4Addr>,
    /// Our IPv6 address on N3: outer source towards IPv6 gNBs.
    #[serde(default)]
    pub ipv6: Option<Ipv6Addr>,
    /// Largest outer IP packet on N3, bytes (1280-9000).
    pub mtu: u32,
    /// VLAN ids tagged onto encapsulated frames, outermost first: none (untagged), one
    /// (802.1Q) or two (an 802.1ad S-tag over an 802.1Q C-tag: QinQ).
    #[serde(default)]
    pub vlan: Vec<u16>,
}

/// The local-services interface (towards the edge applications).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "LocalFile")]
pub struct LocalInterface {
    /// Interface index LOCAL traffic is redirected to.
    pub ifindex: u32,
    /// Our MAC on the local network (source of decapsulated frames).
    pub mac: Mac,
    /// The next hop for decapsulated frames (the local router or service host):
    /// `next_hop_mac` or `next_hop = "fib"` in the file, exactly one of them.
    pub next_hop: NextHop,
    /// VLAN ids tagged onto decapsulated frames, as for N3; none: untagged (whatever tags
    /// the G-PDU came with on N3 are not carried over).
    #[serde(default)]
    pub vlan: Vec<u16>,
}

/// What happens to packets no rule speaks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// A G-PDU whose TEID belongs to no session (default: pass).
    #[serde(default)]
    pub unknown_teid: Disposition,
    /// A G-PDU whose inner source address is not its session's UE (default: drop).
    #[serde(default = "drop")]
    pub spoofed_source: Disposition,
    /// Malformed GTP-U: bad version or lengths, truncated, over-long chain, bad inner
    /// packet (default: drop).
    #[serde(default = "drop")]
    pub malformed: Disposition,
}

fn drop() -> Disposition {
    Disposition::Drop
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            unknown_teid: Disposition::Pass,
            spoofed_source: Disposition::Drop,
            malformed: Disposition::Drop,
        }
    }
}

/// A PDU session.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    /// Unique session id (shown in counters and replay output).
    pub id: u32,
    /// TEID the gNB sends uplink G-PDUs with.
    pub uplink_teid: Teid,
    /// TEID we put on downlink G-PDUs towards the gNB.
    pub downlink_teid: Teid,
    /// The UE's IPv4 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ue_ipv4: Option<Ipv4Addr>,
    /// The UE's IPv6 prefix (e.g. a /64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ue_ipv6: Option<IpPrefix>,
    /// The gNB's N3 address (IPv4 or IPv6): outer destination of downlink packets.
    pub gnb: IpAddr,
    /// QFI written into downlink PDU Session Containers.
    pub qfi: Qfi,
    /// The subscriber's IMSI, if known: carried into flow records (never into the fast path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imsi: Option<Imsi>,
}

/// A traffic rule (ETSI MEC 011 TrafficRule with TEID and QFI filters added).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficRule {
    /// Unique rule id.
    pub id: u32,
    /// 0-255, 0 highest.
    pub priority: u8,
    #[serde(default)]
    pub state: RuleState,
    pub action: RuleAction,
    /// Destination prefixes (IPv4 and/or IPv6). Empty: any destination of either family.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dst: Vec<IpPrefix>,
    /// Source (UE) prefixes, at most 4 per family. Empty: any source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub src: Vec<IpPrefix>,
    /// IP protocols. Empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protocols: Vec<Protocol>,
    /// Destination port ranges, at most 4. Empty: any (also packets without ports).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dst_ports: Vec<PortRange>,
    /// Only G-PDUs with this uplink TEID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teid: Option<Teid>,
    /// Only G-PDUs whose PDU Session Container carries this QFI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qfi: Option<Qfi>,
}

/// Everything the fast path needs, as described (see [`super::compile`] for the checks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tables {
    pub n3: N3Interface,
    pub local: LocalInterface,
    pub defaults: Defaults,
    pub sessions: Vec<Session>,
    pub rules: Vec<TrafficRule>,
}

/// Why tables could not be read or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TablesError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a regular file, is larger than [`MAX_TABLES_FILE_BYTES`], or is not
    /// UTF-8.
    #[error(transparent)]
    Read(#[from] mecgw_policy::files::ReadError),
    /// Not valid TOML, or not the tables format.
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// Well-formed but inconsistent: every problem, one per line (at most
    /// [`super::compile::MAX_REPORTED_PROBLEMS`] of them; `more` were not listed).
    #[error("{path}: {} problem(s) in the tables:\n{}{}", problems.len() + more, problems.join("\n"), more_line(*more))]
    Invalid {
        path: String,
        problems: Vec<String>,
        more: usize,
    },
}

fn more_line(more: usize) -> String {
    if more == 0 {
        String::new()
    } else {
        format!("\n… and {more} more problem(s), not listed (fix these first)")
    }
}

#[cfg(test)]
pub(crate) mod tests {

    /// The smallest valid tables file.
    pub(crate) const MINIMAL: &str = r#"
[n3]
ifindex = 2
mac = "02:00:00:00:00:01"
next_hop_mac = "02:00:00:00:00:02"
ipv4 = "198.18.0.1"
ipv6 = "2001:db8::1"
mtu = 1500

[local]
ifindex = 3
mac = "02:00:00:00:01:01"
next_hop_mac = "02:00:00:00:01:02"
"#;
}
