//! The fast-path tables as an operator writes them: sessions, traffic rules, interfaces and
//! defaults, read from a TOML file (`examples/tables.toml` documents the format).
//!
//! This module owns the typed tables and their validation; it never touches the kernel.
//! [`Tables::from_toml`] reports *every* problem in a file, each with its line and column.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    str::FromStr,
};

use mecgw_ebpf::{
    MAX_N3_MTU, MAX_PORT_RANGES, MAX_RULES, MAX_SESSIONS, MAX_SRC_PREFIXES, MIN_N3_MTU,
};
use serde::Deserialize;

/// Largest tables file accepted (bytes): untrusted input has a size limit.
pub const MAX_TABLES_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// A GTP-U tunnel endpoint identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(transparent)]
pub struct Teid(pub u32);

/// A QoS flow identifier (0-63).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "u8")]
pub struct Qfi(u8);

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
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct Imsi(String);

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(try_from = "String")]
pub struct Mac(pub [u8; 6]);

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "ProtoSpec")]
pub struct Protocol(pub u8);

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Disposition {
    /// Hand it to the kernel unchanged (towards the core).
    #[default]
    Pass,
    /// Drop it.
    Drop,
}

/// MEC 011 rule state: only ACTIVE rules are compiled into the fast path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Deserialize)]
pub enum RuleState {
    #[default]
    #[serde(rename = "ACTIVE")]
    Active,
    #[serde(rename = "INACTIVE")]
    Inactive,
}

/// What a matching rule does with an uplink G-PDU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
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

/// The N3 interface (facing the gNBs).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct N3Interface {
    /// Interface index the downlink program redirects encapsulated packets to.
    pub ifindex: u32,
    /// Our MAC on N3 (source of encapsulated frames).
    pub mac: Mac,
    /// MAC of the next hop towards the gNBs (destination of encapsulated frames).
    pub next_hop_mac: Mac,
    /// Our IPv4 address on N3: outer source towards IPv4 gNBs.
    #[serde(default)]
    pub ipv4: Option<Ipv4Addr>,
    /// Our IPv6 address on N3: outer source towards IPv6 gNBs.
    #[serde(default)]
    pub ipv6: Option<Ipv6Addr>,
    /// Largest outer IP packet on N3, bytes (1280-9000).
    pub mtu: u32,
}

/// The local-services interface (towards the edge applications).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalInterface {
    /// Interface index LOCAL traffic is redirected to.
    pub ifindex: u32,
    /// Our MAC on the local network (source of decapsulated frames).
    pub mac: Mac,
    /// MAC of the next hop for decapsulated frames (the local router or service host).
    pub next_hop_mac: Mac,
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
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    /// Unique session id (shown in counters and replay output).
    pub id: u32,
    /// TEID the gNB sends uplink G-PDUs with.
    pub uplink_teid: Teid,
    /// TEID we put on downlink G-PDUs towards the gNB.
    pub downlink_teid: Teid,
    /// The UE's IPv4 address.
    #[serde(default)]
    pub ue_ipv4: Option<Ipv4Addr>,
    /// The UE's IPv6 prefix (e.g. a /64).
    #[serde(default)]
    pub ue_ipv6: Option<IpPrefix>,
    /// The gNB's N3 address (IPv4 or IPv6): outer destination of downlink packets.
    pub gnb: IpAddr,
    /// QFI written into downlink PDU Session Containers.
    pub qfi: Qfi,
    /// The subscriber's IMSI, if known: carried into flow records (never into the fast path).
    #[serde(default)]
    pub imsi: Option<Imsi>,
}

/// A traffic rule (ETSI MEC 011 TrafficRule with TEID and QFI filters added).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
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
    #[serde(default)]
    pub dst: Vec<IpPrefix>,
    /// Source (UE) prefixes, at most 4 per family. Empty: any source.
    #[serde(default)]
    pub src: Vec<IpPrefix>,
    /// IP protocols. Empty: any.
    #[serde(default)]
    pub protocols: Vec<Protocol>,
    /// Destination port ranges, at most 4. Empty: any (also packets without ports).
    #[serde(default)]
    pub dst_ports: Vec<PortRange>,
    /// Only G-PDUs with this uplink TEID.
    #[serde(default)]
    pub teid: Option<Teid>,
    /// Only G-PDUs whose PDU Session Container carries this QFI.
    #[serde(default)]
    pub qfi: Option<Qfi>,
}

/// Everything the fast path needs: the validated contents of a tables file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tables {
    pub n3: N3Interface,
    pub local: LocalInterface,
    pub defaults: Defaults,
    pub sessions: Vec<Session>,
    pub rules: Vec<TrafficRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TablesFile {
    n3: N3Interface,
    local: LocalInterface,
    #[serde(default)]
    defaults: Defaults,
    #[serde(default)]
    sessions: Vec<toml::Spanned<Session>>,
    #[serde(default)]
    rules: Vec<toml::Spanned<TrafficRule>>,
}

/// A tables file without its `[[sessions]]` and `[[rules]]` blocks (see [`Parsed::in_pieces`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Frame {
    n3: N3Interface,
    local: LocalInterface,
    #[serde(default)]
    defaults: Defaults,
    /// Present only if the frame itself defines sessions (`sessions = [...]`): then the
    /// blocks cannot be parsed apart from it.
    #[serde(default)]
    sessions: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    rules: Option<serde::de::IgnoredAny>,
}

/// A run of consecutive `[[sessions]]` / `[[rules]]` blocks.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entries {
    #[serde(default)]
    sessions: Vec<toml::Spanned<Session>>,
    #[serde(default)]
    rules: Vec<toml::Spanned<TrafficRule>>,
}

/// About this many bytes of `[[sessions]]` / `[[rules]]` blocks are parsed at a time. The
/// `toml` crate's document tree is some 27 times its text, so this bounds the parse's peak
/// to a few MiB whatever the file's size.
const ENTRIES_PER_PARSE_BYTES: usize = 64 * 1024;

/// What a line starting with `[` is, in the pieces parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Header {
    /// `[[sessions]]` or `[[rules]]`.
    Entry,
    /// `[n3]`, `[local]` or `[defaults]`.
    Table,
    /// Anything else (another header, a nested array's line, a typo): the file is parsed whole.
    Other,
}

/// The header a line starts, if it starts with `[` (after blanks).
fn header(line: &str) -> Option<Header> {
    let t = line.trim_start_matches([' ', '\t']);
    if !t.starts_with('[') {
        return None;
    }
    let (entry, close) = if t.starts_with("[[") {
        (true, "]]")
    } else {
        (false, "]")
    };
    let Some((name, after)) = t[if entry { 2 } else { 1 }..].split_once(close) else {
        return Some(Header::Other);
    };
    let after = after.trim_start_matches([' ', '\t', '\r', '\n']);
    if !(after.is_empty() || after.starts_with('#')) {
        return Some(Header::Other);
    }
    Some(match (entry, name.trim_matches([' ', '\t'])) {
        (true, "sessions" | "rules") => Header::Entry,
        (false, "n3" | "local" | "defaults") => Header::Table,
        _ => Header::Other,
    })
}

/// A tables file deserialised, before validation; `*_at` are the byte offsets of each entry.
#[cfg_attr(test, derive(Debug, PartialEq))]
struct Parsed {
    n3: N3Interface,
    local: LocalInterface,
    defaults: Defaults,
    sessions: Vec<Session>,
    session_at: Vec<usize>,
    rules: Vec<TrafficRule>,
    rule_at: Vec<usize>,
}

impl Parsed {
    /// The whole file parsed at once: exact, but the parse tree peaks at ~27 times the file.
    fn whole(text: &str, origin: &str) -> Result<Parsed, TablesError> {
        let file: TablesFile = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((1, 1), |s| line_col(text, s.start));
            TablesError::Syntax {
                path: origin.to_string(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;
        let (sessions, session_at) = file
            .sessions
            .into_iter()
            .map(|s| {
                let at = s.span().start;
                (s.into_inner(), at)
            })
            .unzip();
        let (rules, rule_at) = file
            .rules
            .into_iter()
            .map(|r| {
                let at = r.span().start;
                (r.into_inner(), at)
            })
            .unzip();
        Ok(Parsed {
            n3: file.n3,
            local: file.local,
            defaults: file.defaults,
            sessions,
            session_at,
            rules,
            rule_at,
        })
    }

    /// The file parsed in pieces, so that memory stays near the size of the result: the
    /// frame (root, `[n3]`, `[local]`, `[defaults]`, with every `[[sessions]]` /
    /// `[[rules]]` block's lines left empty), then runs of those blocks of about
    /// [`ENTRIES_PER_PARSE_BYTES`] each, in file order.
    ///
    /// `None` when the pieces might not mean what the whole file means, or when any piece
    /// fails: the caller then parses the whole file, which gives the exact error. A split
    /// is trusted only when every line starting with `[` is one of the five headers of the
    /// format (so no other table can own a block's keys), the file has no multi-line string
    /// (the only place a header-like line is not a header in valid TOML), and the frame
    /// does not itself define `sessions` or `rules`.
    fn in_pieces(text: &str) -> Option<Parsed> {
        if text.contains("\"\"\"") || text.contains("'''") {
            return None;
        }
        let mut frame = String::new();
        let mut runs: Vec<(usize, usize)> = Vec::new();
        let mut in_entry = false;
        let mut at = 0;
        for line in text.split_inclusive('\n') {
            match header(line) {
                Some(Header::Other) => return None,
                Some(Header::Entry) => {
                    match runs.last_mut() {
                        Some((start, _)) if in_entry && at - *start < ENTRIES_PER_PARSE_BYTES => {}
                        _ => runs.push((at, at)),
                    }
                    in_entry = true;
                }
                Some(Header::Table) => in_entry = false,
                None => {}
            }
            if in_entry {
                if let Some(run) = runs.last_mut() {
                    run.1 = at + line.len();
                }
                if line.ends_with('\n') {
                    frame.push('\n');
                }
            } else {
                frame.push_str(line);
            }
            at += line.len();
        }
        if runs.is_empty() {
            return None;
        }
        let head: Frame = toml::from_str(&frame).ok()?;
        std::mem::drop(frame);
        if head.sessions.is_some() || head.rules.is_some() {
            return None;
        }
        let mut sessions = Vec::new();
        let mut session_at = Vec::new();
        let mut rules = Vec::new();
        let mut rule_at = Vec::new();
        for (start, end) in runs {
            let run: Entries = toml::from_str(text.get(start..end)?).ok()?;
            for s in run.sessions {
                session_at.push(start + s.span().start);
                sessions.push(s.into_inner());
            }
            for r in run.rules {
                rule_at.push(start + r.span().start);
                rules.push(r.into_inner());
            }
        }
        Some(Parsed {
            n3: head.n3,
            local: head.local,
            defaults: head.defaults,
            sessions,
            session_at,
            rules,
            rule_at,
        })
    }
}

/// Where in the tables a problem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// The file as a whole (or the interface sections).
    Global,
    /// `sessions[i]`.
    Session(usize),
    /// `rules[i]`.
    Rule(usize),
}

/// One thing wrong with the tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub place: Place,
    pub message: String,
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
    /// The file is larger than [`MAX_TABLES_FILE_BYTES`].
    #[error(
        "{path}: {size} bytes is more than the {MAX_TABLES_FILE_BYTES} bytes a tables file may have"
    )]
    TooLarge { path: String, size: u64 },
    /// Not valid TOML, or not the tables format.
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// Well-formed but inconsistent: every problem, one per line.
    #[error("{path}: {} problem(s) in the tables:\n{}", problems.len(), problems.join("\n"))]
    Invalid { path: String, problems: Vec<String> },
}

/// 1-based line and column of byte offset `at` in `text`.
pub(crate) fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

impl Tables {
    /// Reads and validates a tables file.
    pub fn load(path: &Path) -> Result<Tables, TablesError> {
        let name = path.display().to_string();
        let io = |source| TablesError::Io {
            path: name.clone(),
            source,
        };
        let size = std::fs::metadata(path).map_err(io)?.len();
        if size > MAX_TABLES_FILE_BYTES {
            return Err(TablesError::TooLarge { path: name, size });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Tables::from_toml(&text, &name)
    }

    /// Parses and validates tables from TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Tables, TablesError> {
        let file = match Parsed::in_pieces(text) {
            Some(file) => file,
            None => Parsed::whole(text, origin)?,
        };
        let (session_at, rule_at) = (file.session_at, file.rule_at);
        let tables = Tables {
            n3: file.n3,
            local: file.local,
            defaults: file.defaults,
            sessions: file.sessions,
            rules: file.rules,
        };
        let problems = tables.problems();
        if problems.is_empty() {
            return Ok(tables);
        }
        let problems = problems
            .into_iter()
            .map(|p| {
                let at = match p.place {
                    Place::Global => None,
                    Place::Session(i) => session_at.get(i).copied(),
                    Place::Rule(i) => rule_at.get(i).copied(),
                };
                match at {
                    Some(at) => {
                        let (l, c) = line_col(text, at);
                        format!("{origin}:{l}:{c}: {}", p.message)
                    }
                    None => format!("{origin}: {}", p.message),
                }
            })
            .collect();
        Err(TablesError::Invalid {
            path: origin.to_string(),
            problems,
        })
    }

    /// Validates tables built in code (tests, a control plane); `Ok` when usable.
    pub fn validate(&self) -> Result<(), TablesError> {
        let problems = self.problems();
        if problems.is_empty() {
            return Ok(());
        }
        Err(TablesError::Invalid {
            path: "<tables>".to_string(),
            problems: problems
                .into_iter()
                .map(|p| match p.place {
                    Place::Global => p.message,
                    Place::Session(i) => format!("sessions[{i}]: {}", p.message),
                    Place::Rule(i) => format!("rules[{i}]: {}", p.message),
                })
                .collect(),
        })
    }

    /// Every problem with these tables.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut global = |message: String| {
            out.push(Problem {
                place: Place::Global,
                message,
            })
        };
        if !(MIN_N3_MTU..=MAX_N3_MTU).contains(&self.n3.mtu) {
            global(format!(
                "n3.mtu = {} is out of range: it must be {MIN_N3_MTU}-{MAX_N3_MTU}",
                self.n3.mtu
            ));
        }
        if self.sessions.len() > MAX_SESSIONS as usize {
            global(format!(
                "{} sessions: the fast path holds at most {MAX_SESSIONS}",
                self.sessions.len()
            ));
        }
        if self.rules.len() > MAX_RULES as usize {
            global(format!(
                "{} rules: the fast path holds at most {MAX_RULES}",
                self.rules.len()
            ));
        }
        self.session_problems(&mut out);
        self.rule_problems(&mut out);
        if let Err(errors) = super::compile::candidate_lists(self) {
            out.extend(errors);
        }
        out
    }

    fn session_problems(&self, out: &mut Vec<Problem>) {
        let mut ids = HashMap::new();
        let mut teids = HashMap::new();
        let mut ue4 = HashMap::new();
        let mut ue6: HashMap<(u8, IpAddr), usize> = HashMap::new();
        for (i, s) in self.sessions.iter().enumerate() {
            let mut bad = |message: String| {
                out.push(Problem {
                    place: Place::Session(i),
                    message: format!("session {}: {message}", s.id),
                })
            };
            if let Some(j) = ids.insert(s.id, i) {
                bad(format!("id {} is also used by sessions[{j}]", s.id));
            }
            if let Some(j) = teids.insert(s.uplink_teid, i) {
                bad(format!(
                    "uplink_teid {} is also used by sessions[{j}]",
                    s.uplink_teid.0
                ));
            }
            if s.ue_ipv4.is_none() && s.ue_ipv6.is_none() {
                bad("has neither ue_ipv4 nor ue_ipv6".to_string());
            }
            if let Some(a) = s.ue_ipv4
                && let Some(j) = ue4.insert(a, i)
            {
                bad(format!("ue_ipv4 {a} is also used by sessions[{j}]"));
            }
            if let Some(p) = s.ue_ipv6 {
                if !p.is_ipv6() || p.len() == 0 {
                    bad(format!(
                        "ue_ipv6 {p} must be an IPv6 prefix of length 1-128"
                    ));
                } else if let Some(j) = ue6.insert((p.len(), p.addr()), i) {
                    bad(format!("ue_ipv6 {p} is also used by sessions[{j}]"));
                }
            }
            match s.gnb {
                IpAddr::V4(_) if self.n3.ipv4.is_none() => {
                    bad(format!("gnb {} is IPv4 but n3 has no ipv4 address", s.gnb))
                }
                IpAddr::V6(_) if self.n3.ipv6.is_none() => {
                    bad(format!("gnb {} is IPv6 but n3 has no ipv6 address", s.gnb))
                }
                _ => {}
            }
        }
        // UE IPv6 prefixes must not nest: the downlink must find exactly one session.
        let lens: HashSet<u8> = ue6.keys().map(|k| k.0).collect();
        for (&(len, addr), &i) in &ue6 {
            let p = IpPrefix { addr, len };
            for &l in lens.iter().filter(|&&l| l < len) {
                let outer = IpPrefix {
                    addr: IpPrefix { addr, len: l }.masked(addr),
                    len: l,
                };
                if let Some(&j) = ue6.get(&(l, outer.addr)) {
                    out.push(Problem {
                        place: Place::Session(i),
                        message: format!(
                            "session {}: ue_ipv6 {p} lies inside {outer} of sessions[{j}]",
                            self.sessions[i].id
                        ),
                    });
                }
            }
        }
    }

    fn rule_problems(&self, out: &mut Vec<Problem>) {
        let mut ids = HashMap::new();
        for (i, r) in self.rules.iter().enumerate() {
            let mut bad = |message: String| {
                out.push(Problem {
                    place: Place::Rule(i),
                    message: format!("rule {}: {message}", r.id),
                })
            };
            if let Some(j) = ids.insert(r.id, i) {
                bad(format!("id {} is also used by rules[{j}]", r.id));
            }
            let v4 = r.src.iter().filter(|p| !p.is_ipv6()).count();
            let v6 = r.src.len() - v4;
            if v4 > MAX_SRC_PREFIXES || v6 > MAX_SRC_PREFIXES {
                bad(format!(
                    "{v4} IPv4 and {v6} IPv6 source prefixes: at most {MAX_SRC_PREFIXES} per family"
                ));
            }
            if r.dst_ports.len() > MAX_PORT_RANGES {
                bad(format!(
                    "{} destination port ranges: at most {MAX_PORT_RANGES}",
                    r.dst_ports.len()
                ));
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

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

    #[test]
    fn minimal_file_loads_with_documented_defaults() {
        let t = Tables::from_toml(MINIMAL, "t.toml").unwrap();
        assert_eq!(t.defaults.unknown_teid, Disposition::Pass);
        assert_eq!(t.defaults.spoofed_source, Disposition::Drop);
        assert_eq!(t.defaults.malformed, Disposition::Drop);
        assert!(t.sessions.is_empty() && t.rules.is_empty());
    }

    #[test]
    fn the_commented_example_is_valid() {
        let text = include_str!("../../../examples/tables.toml");
        let t = Tables::from_toml(text, "examples/tables.toml").unwrap();
        assert!(!t.sessions.is_empty() && !t.rules.is_empty());
    }

    /// `n` sessions and `n / 10` rules, interleaved, with `[defaults]` and comments between.
    fn many_entries(n: u32) -> String {
        let mut text = MINIMAL.to_string();
        for i in 0..n {
            text.push_str(&format!(
                "\n# session {i}\n[[sessions]]\nid = {i}\nuplink_teid = {}\n\
                 downlink_teid = {}\nue_ipv4 = \"10.{}.{}.{}\"\ngnb = \"198.18.1.1\"\nqfi = 9\n",
                i + 1,
                i + 1,
                i >> 16,
                (i >> 8) & 255,
                i & 255
            ));
            if i % 10 == 0 {
                text.push_str(&format!(
                    "  [[ rules ]] # indented\r\nid = {i}\npriority = 1\naction = \"DROP\"\n\
                     dst = [\n  \"192.0.2.0/24\",\n]\n"
                ));
            }
            if i == n / 2 {
                text.push_str("[defaults]\nunknown_teid = \"drop\"\n");
            }
        }
        text
    }

    #[test]
    fn parsing_in_pieces_gives_what_parsing_whole_gives() {
        let example = include_str!("../../../examples/tables.toml");
        for text in [example.to_string(), many_entries(3), many_entries(3000)] {
            let whole = Parsed::whole(&text, "t").unwrap();
            let pieces = Parsed::in_pieces(&text).expect("an unambiguous file is split");
            assert_eq!(pieces, whole);
        }
        assert!(many_entries(3000).len() > 4 * ENTRIES_PER_PARSE_BYTES);
    }

    #[test]
    fn an_ambiguous_split_parses_the_whole_file() {
        let session = "[[sessions]]\nid = 1\nuplink_teid = 1\ndownlink_teid = 1\n\
                       ue_ipv4 = \"10.0.0.1\"\ngnb = \"198.18.1.1\"\nqfi = 9\n";
        let cases = [
            // A header-like line inside a multi-line string is not a header.
            format!("{MINIMAL}\n[defaults]\nunknown_teid = \"\"\"\n{session}\"\"\"\n"),
            // A table the format does not know could own the keys after it.
            format!("{MINIMAL}\n{session}[sessions.extra]\nx = 1\n"),
            // The frame defines sessions itself: they conflict with the blocks.
            format!("sessions = []\n{MINIMAL}\n{session}"),
            format!("rules = []\n{MINIMAL}\n[[rules]]\nid = 1\npriority = 0\naction = \"DROP\"\n"),
            // A nested array's line starts with `[`.
            format!(
                "{MINIMAL}\n[[rules]]\nid = 1\npriority = 0\naction = \"DROP\"\nx = [\n[1],\n]\n"
            ),
        ];
        for text in cases {
            assert_eq!(Parsed::in_pieces(&text), None, "{text}");
            let e = Tables::from_toml(&text, "t.toml").unwrap_err().to_string();
            assert!(e.starts_with("t.toml:"), "{e}");
        }
    }

    #[test]
    fn unknown_field_is_reported_with_line_and_column() {
        let text = format!(
            "{MINIMAL}\n[[rules]]\nid = 1\npriority = 0\naction = \"DROP\"\ncolour = \"red\"\n"
        );
        let e = Tables::from_toml(&text, "t.toml").unwrap_err().to_string();
        assert!(e.starts_with("t.toml:19:1: "), "{e}");
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn bad_values_name_what_is_wrong_and_where() {
        let cases = [
            (
                "dst = [\"10.0.0.1/8\"]",
                "host bits set: did you mean 10.0.0.0/8",
            ),
            ("dst = [\"10.0.0.0/33\"]", "prefix length must be 0-32"),
            ("dst_ports = [\"90-80\"]", "is empty: 90 > 80"),
            ("protocols = [\"gre\"]", "unknown protocol \"gre\""),
            ("qfi = 64", "QFI 64 is out of range"),
            ("priority = 256", "256"),
        ];
        for (line, want) in cases {
            let text = format!(
                "{MINIMAL}\n[[rules]]\nid = 1\naction = \"DROP\"\n{}{line}\n",
                if line.starts_with("priority") {
                    ""
                } else {
                    "priority = 0\n"
                }
            );
            let e = Tables::from_toml(&text, "t.toml").unwrap_err().to_string();
            assert!(e.contains(want), "{line}: {e}");
            assert!(e.starts_with("t.toml:1"), "{line}: no line:column in {e}");
        }
    }

    #[test]
    fn an_imsi_is_5_to_15_digits_and_a_bad_one_is_reported_where_it_is() {
        let session = |imsi: &str| {
            format!(
                "{MINIMAL}\n[[sessions]]\nid = 1\nuplink_teid = 7\ndownlink_teid = 8\n\
                 ue_ipv4 = \"10.0.0.1\"\ngnb = \"198.18.1.1\"\nqfi = 1\nimsi = {imsi}\n"
            )
        };
        let t = Tables::from_toml(&session("\"001010123456789\""), "t.toml").unwrap();
        assert_eq!(
            t.sessions[0].imsi.as_ref().map(Imsi::as_str),
            Some("001010123456789")
        );
        assert!(Tables::from_toml(&session("\"00101\""), "t.toml").is_ok());
        for bad in ["\"0010\"", "\"0010101234567890\"", "\"00101a\"", "\"\""] {
            let e = Tables::from_toml(&session(bad), "t.toml")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("is not an IMSI (expected 5-15 decimal digits"),
                "{bad}: {e}"
            );
            assert!(e.starts_with("t.toml:22:8: "), "{bad}: {e}");
        }
        let e = Tables::from_toml(&session("1010123456"), "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.toml:22:8: "), "a number: {e}");
    }

    #[test]
    fn every_inconsistency_is_reported_at_its_entry() {
        let text = format!(
            r#"{MINIMAL}
[[sessions]]
id = 1
uplink_teid = 7
downlink_teid = 8
ue_ipv4 = "10.0.0.1"
gnb = "198.18.1.1"
qfi = 1

[[sessions]]
id = 1
uplink_teid = 7
downlink_teid = 9
gnb = "198.18.1.2"
qfi = 1

[[rules]]
id = 4
priority = 0
action = "LOCAL"
dst_ports = [1, 2, 3, 4, 5]
"#
        );
        let e = Tables::from_toml(&text, "t.toml").unwrap_err();
        let TablesError::Invalid { problems, .. } = &e else {
            panic!("{e}")
        };
        let joined = problems.join("\n");
        assert_eq!(problems.len(), 4, "{joined}");
        assert!(
            joined.contains("t.toml:23:1: session 1: id 1 is also used by sessions[0]"),
            "{joined}"
        );
        assert!(
            joined.contains("t.toml:23:1: session 1: uplink_teid 7 is also used"),
            "{joined}"
        );
        assert!(
            joined.contains("has neither ue_ipv4 nor ue_ipv6"),
            "{joined}"
        );
        assert!(
            joined.contains("t.toml:30:1: rule 4: 5 destination port ranges"),
            "{joined}"
        );
    }

    #[test]
    fn nested_ue_prefixes_and_missing_n3_family_are_refused() {
        let mut t = Tables::from_toml(MINIMAL, "t").unwrap();
        t.n3.ipv6 = None;
        let s = |id, p: &str, gnb: &str| Session {
            id,
            uplink_teid: Teid(id),
            downlink_teid: Teid(id),
            ue_ipv4: None,
            ue_ipv6: Some(p.parse().unwrap()),
            gnb: gnb.parse().unwrap(),
            qfi: Qfi::new(1).unwrap(),
            imsi: None,
        };
        t.sessions = vec![
            s(1, "2001:db8:1::/48", "198.18.1.1"),
            s(2, "2001:db8:1:2::/64", "2001:db8::9"),
        ];
        let e = t.validate().unwrap_err().to_string();
        assert!(
            e.contains("2001:db8:1:2::/64 lies inside 2001:db8:1::/48"),
            "{e}"
        );
        assert!(
            e.contains("gnb 2001:db8::9 is IPv6 but n3 has no ipv6 address"),
            "{e}"
        );
    }
}
