//! Compiling tables: the only way to get tables a datapath installs.
//!
//! [`compile`] checks a [`Tables`] description as a whole (unique ids, TEIDs and UE
//! addresses; UE prefixes that do not nest; the N3 address family of every gNB; the fast
//! path's capacities; at most [`MAX_CANDIDATES`] rules examined per destination) and returns
//! [`CompiledTables`], or every [`Problem`]. A tables file ([`load`], [`from_toml`]), an API
//! change and a control-plane change all go through it; the XDP writer, the userspace
//! datapath and the reference model take nothing else.
//!
//! Rules get their precedence here (lowest priority value first, ties by lowest rule id;
//! INACTIVE rules are left out), and per address family a longest-prefix-match map from
//! destination prefix to the bounded list of rules that may apply there: a packet looks up
//! its destination once and walks at most [`MAX_CANDIDATES`] rules.
//!
//! Why the list of the longest matching prefix is enough: if rule prefix `q` contains address
//! `a` and `p` is the longest rule prefix containing `a`, then `q` contains `p`; so the list
//! of `p` holds every rule whose destination covers `p`, which is every rule that can match `a`.
//!
//! Pure code: no kernel access.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
    path::Path,
};

use mecgw_ebpf::{
    MAX_CANDIDATES, MAX_DST_PREFIXES, MAX_N3_MTU, MAX_PORT_RANGES, MAX_RULES, MAX_SESSIONS,
    MAX_SRC_PREFIXES, MAX_VLAN_TAGS, MIN_N3_MTU,
};

pub use super::tables::problems::{MAX_REPORTED_PROBLEMS, Place, Problem, Problems};
use super::tables::{
    IpPrefix, MAX_TABLES_FILE_BYTES, NextHop, RuleState, Tables, TablesError, mask_v4, mask_v6,
    overlay::Overlay,
    toml::{self, LineIndex},
};

/// Tables that passed every check: what the datapaths install. Read-only (it derefs to the
/// [`Tables`] it was compiled from); [`CompiledTables::into_tables`] gives the description
/// back for editing, and editing means compiling again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledTables {
    tables: Tables,
    lists: CandidateLists,
}

impl std::ops::Deref for CompiledTables {
    type Target = Tables;
    fn deref(&self) -> &Tables {
        &self.tables
    }
}

impl CompiledTables {
    /// The description these tables were compiled from.
    pub fn into_tables(self) -> Tables {
        self.tables
    }

    /// The rule precedence and the candidate lists of every destination prefix.
    pub fn candidate_lists(&self) -> &CandidateLists {
        &self.lists
    }

    /// The same tables on other interfaces. Interface indexes are facts of the host the
    /// tables are installed on, not of their consistency, so no check is needed again.
    pub fn on_interfaces(mut self, n3_ifindex: u32, local_ifindex: u32) -> CompiledTables {
        self.tables.n3.ifindex = n3_ifindex;
        self.tables.local.ifindex = local_ifindex;
        self
    }
}

/// What the tables may not use besides what their own consistency forbids.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reserved {
    /// With PFCP on: session ids and uplink TEIDs from here up are PFCP sessions'
    /// (`pfcp.teid_min`).
    pub pfcp_from: Option<u32>,
}

/// Checks `tables` and compiles them, or returns every problem.
pub fn compile(tables: Tables) -> Result<CompiledTables, Problems> {
    compile_with(tables, Reserved::default())
}

/// [`compile`], also refusing what `reserved` keeps for others.
pub fn compile_with(tables: Tables, reserved: Reserved) -> Result<CompiledTables, Problems> {
    let mut problems = Vec::new();
    check(&tables, &mut problems);
    reserved_problems(&tables, reserved, &mut problems);
    match candidate_lists(&tables) {
        Ok(lists) if problems.is_empty() => Ok(CompiledTables { tables, lists }),
        Ok(_) => Err(Problems(problems)),
        Err(more) => {
            problems.extend(more);
            Err(Problems(problems))
        }
    }
}

/// Reads and compiles a tables file. Only a regular file of at most
/// [`MAX_TABLES_FILE_BYTES`] is read.
pub fn load(path: &Path) -> Result<CompiledTables, TablesError> {
    let text = mecgw_policy::files::read_text_limited(path, MAX_TABLES_FILE_BYTES)?;
    from_toml(&text, &path.display().to_string())
}

/// Reads a tables file, applies `overlay` (whose owner `owner` names in messages) and
/// compiles the result; also returns the file's own tables, before the overlay. Problems of
/// the file's entries are reported at their line and column; problems of the overlay's
/// entries under `owner`.
pub fn load_with(
    path: &Path,
    overlay: &Overlay,
    owner: &str,
    reserved: Reserved,
) -> Result<(Tables, CompiledTables), TablesError> {
    let text = mecgw_policy::files::read_text_limited(path, MAX_TABLES_FILE_BYTES)?;
    let (own, compiled) = read(
        &text,
        &path.display().to_string(),
        overlay,
        owner,
        true,
        reserved,
    )?;
    let own = own.unwrap_or_else(|| Tables::clone(&compiled));
    Ok((own, compiled))
}

/// Reads and compiles tables from TOML text; `origin` names it in errors, and each problem
/// is reported at the line and column of its entry.
pub fn from_toml(text: &str, origin: &str) -> Result<CompiledTables, TablesError> {
    read(
        text,
        origin,
        &Overlay::default(),
        "",
        false,
        Reserved::default(),
    )
    .map(|(_, compiled)| compiled)
}

/// Reads `text`, applies `overlay`, compiles. With `keep_own`, also the file's own tables
/// (`None` when the overlay changes nothing: then they are the compiled tables).
fn read(
    text: &str,
    origin: &str,
    overlay: &Overlay,
    owner: &str,
    keep_own: bool,
    reserved: Reserved,
) -> Result<(Option<Tables>, CompiledTables), TablesError> {
    let read = toml::read(text, origin)?;
    let (session_at, rule_at) = (read.session_at, read.rule_at);
    let own = (keep_own && overlay != &Overlay::default()).then(|| read.tables.clone());
    let problems = match overlay.apply(read.tables, owner) {
        Ok(tables) => match compile_with(tables, reserved) {
            Ok(compiled) => return Ok((own, compiled)),
            Err(Problems(p)) => p,
        },
        Err(p) => p,
    };
    let lines = LineIndex::new(text);
    let more = problems.len().saturating_sub(MAX_REPORTED_PROBLEMS);
    let problems = problems
        .into_iter()
        .take(MAX_REPORTED_PROBLEMS)
        .map(|p| {
            // Entries past the file's own are the overlay's (appended in order).
            let at = match p.place {
                Place::Global => None,
                Place::Session(i) => Some(session_at.get(i).copied().ok_or(())),
                Place::Rule(i) => Some(rule_at.get(i).copied().ok_or(())),
            };
            match at {
                None => format!("{origin}: {}", p.message),
                Some(Ok(at)) => {
                    let (l, c) = lines.line_col(at);
                    format!("{origin}:{l}:{c}: {}", p.message)
                }
                Some(Err(())) => format!("{owner}: {}", p.message),
            }
        })
        .collect();
    Err(TablesError::Invalid {
        path: origin.to_string(),
        problems,
        more,
    })
}

/// Every problem with `tables` except the candidate lists', added to `out`.
fn check(tables: &Tables, out: &mut Vec<Problem>) {
    let mut global = |message: String| {
        out.push(Problem {
            place: Place::Global,
            message,
        })
    };
    if !(MIN_N3_MTU..=MAX_N3_MTU).contains(&tables.n3.mtu) {
        global(format!(
            "n3.mtu = {} is out of range: it must be {MIN_N3_MTU}-{MAX_N3_MTU}",
            tables.n3.mtu
        ));
    }
    for (side, tags, hop) in [
        ("n3", &tables.n3.vlan, tables.n3.next_hop),
        ("local", &tables.local.vlan, tables.local.next_hop),
    ] {
        // The kernel routes a tagged network through a VLAN device, which the programs
        // cannot redirect to: the FIB's answer would never be the interface they tag for.
        if hop == NextHop::Fib && !tags.is_empty() {
            global(format!(
                "{side}: next_hop = \"fib\" cannot be combined with {side}.vlan (the kernel \
                 routes a tagged network through a VLAN device, which the fast path cannot \
                 redirect to): use next_hop_mac with vlan, or untagged with the FIB"
            ));
        }
        if tags.len() > MAX_VLAN_TAGS {
            global(format!(
                "{side}.vlan has {} tags: at most {MAX_VLAN_TAGS} (QinQ)",
                tags.len()
            ));
        }
        if let Some(bad) = tags.iter().find(|&&v| !(1..=4094).contains(&v)) {
            global(format!(
                "{side}.vlan: VLAN id {bad} is out of range: it must be 1-4094"
            ));
        }
    }
    if tables.sessions.len() > MAX_SESSIONS as usize {
        global(format!(
            "{} sessions: the fast path holds at most {MAX_SESSIONS}",
            tables.sessions.len()
        ));
    }
    if tables.rules.len() > MAX_RULES as usize {
        global(format!(
            "{} rules: the fast path holds at most {MAX_RULES}",
            tables.rules.len()
        ));
    }
    session_problems(tables, out);
    rule_problems(tables, out);
}

/// Sessions that use an id or TEID `reserved` keeps for PFCP.
fn reserved_problems(tables: &Tables, reserved: Reserved, out: &mut Vec<Problem>) {
    let Some(from) = reserved.pfcp_from else {
        return;
    };
    for (i, s) in tables.sessions.iter().enumerate() {
        let mut bad = |what: &str, v: u32| {
            out.push(Problem {
                place: Place::Session(i),
                message: format!(
                    "session {}: {what} {v:#x} is in PFCP's range ({from:#x} and up, \
                     pfcp.teid_min): use a lower one, or raise pfcp.teid_min",
                    s.id
                ),
            })
        };
        if s.id >= from {
            bad("id", s.id);
        }
        if s.uplink_teid.0 >= from {
            bad("uplink_teid", s.uplink_teid.0);
        }
    }
}

fn session_problems(tables: &Tables, out: &mut Vec<Problem>) {
    let mut ids = HashMap::new();
    let mut teids = HashMap::new();
    let mut ue4 = HashMap::new();
    let mut ue6: HashMap<(u8, IpAddr), usize> = HashMap::new();
    for (i, s) in tables.sessions.iter().enumerate() {
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
            IpAddr::V4(_) if tables.n3.ipv4.is_none() => {
                bad(format!("gnb {} is IPv4 but n3 has no ipv4 address", s.gnb))
            }
            IpAddr::V6(_) if tables.n3.ipv6.is_none() => {
                bad(format!("gnb {} is IPv6 but n3 has no ipv6 address", s.gnb))
            }
            _ => {}
        }
    }
    // UE IPv6 prefixes must not nest: the downlink must find exactly one session.
    let lens: HashSet<u8> = ue6.keys().map(|k| k.0).collect();
    for (&(len, addr), &i) in &ue6 {
        let Some(p) = IpPrefix::containing(addr, len) else {
            continue;
        };
        for &l in lens.iter().filter(|&&l| l < len) {
            let Some(outer) = IpPrefix::containing(addr, l) else {
                continue;
            };
            if let Some(&j) = ue6.get(&(l, outer.addr())) {
                out.push(Problem {
                    place: Place::Session(i),
                    message: format!(
                        "session {}: ue_ipv6 {p} lies inside {outer} of sessions[{j}]",
                        tables.sessions[i].id
                    ),
                });
            }
        }
    }
}

fn rule_problems(tables: &Tables, out: &mut Vec<Problem>) {
    let mut ids = HashMap::new();
    for (i, r) in tables.rules.iter().enumerate() {
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

/// The rule precedence and the candidate lists of every destination prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CandidateLists {
    /// Indices into `tables.rules` of the active rules, in precedence order.
    pub order: Vec<usize>,
    pub v4: BTreeMap<(u8, u32), Vec<u32>>,
    pub v6: BTreeMap<(u8, u128), Vec<u32>>,
}

/// Computes the rule order and candidate lists, or every destination where more than
/// [`MAX_CANDIDATES`] rules would apply.
fn candidate_lists(tables: &Tables) -> Result<CandidateLists, Vec<Problem>> {
    let mut order: Vec<usize> = (0..tables.rules.len())
        .filter(|&i| tables.rules[i].state == RuleState::Active)
        .collect();
    order.sort_by_key(|&i| (tables.rules[i].priority, tables.rules[i].id));
    // Exact prefix → rules (by precedence index) that list it.
    let mut by_v4: HashMap<(u8, u32), Vec<u32>> = HashMap::new();
    let mut by_v6: HashMap<(u8, u128), Vec<u32>> = HashMap::new();
    for (index, &i) in order.iter().enumerate() {
        let r = &tables.rules[i];
        let index = index as u32;
        if r.dst.is_empty() {
            by_v4.entry((0, 0)).or_default().push(index);
            by_v6.entry((0, 0)).or_default().push(index);
        }
        for p in &r.dst {
            match p.addr() {
                IpAddr::V4(a) => by_v4.entry((p.len(), a.into())).or_default().push(index),
                IpAddr::V6(a) => by_v6.entry((p.len(), a.into())).or_default().push(index),
            }
        }
    }
    let mut problems: Vec<Overflow> = Vec::new();
    let v4 = lists(
        &by_v4,
        |a, l| a & mask_v4(l),
        &mut problems,
        |a, l| format!("{}/{l}", std::net::Ipv4Addr::from(a)),
    );
    let v6 = lists(
        &by_v6,
        |a, l| a & mask_v6(l),
        &mut problems,
        |a, l| format!("{}/{l}", std::net::Ipv6Addr::from(a)),
    );
    for (n, family) in [(v4.len(), "IPv4"), (v6.len(), "IPv6")] {
        if n > MAX_DST_PREFIXES as usize {
            problems.push(Overflow::Message(Problem {
                place: Place::Global,
                message: format!(
                    "{n} distinct {family} destination prefixes: the fast path holds at most {MAX_DST_PREFIXES}"
                ),
            }));
        }
    }
    let ids = |list: &[u32]| {
        list.iter()
            .map(|&x| tables.rules[order[x as usize]].id.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let problems: Vec<Problem> = problems
        .into_iter()
        .map(|p| match p {
            Overflow::Message(p) => p,
            Overflow::Prefix(name, list) => Problem {
                place: Place::Global,
                message: format!(
                    "destination {name}: {} active rules apply (ids {}); the fast path examines at most {MAX_CANDIDATES} per packet — narrow or merge rules",
                    list.len(),
                    ids(&list)
                ),
            },
        })
        .collect();
    if problems.is_empty() {
        Ok(CandidateLists { order, v4, v6 })
    } else {
        Err(problems)
    }
}

enum Overflow {
    Message(Problem),
    Prefix(String, Vec<u32>),
}

fn lists<A: Copy + Ord + std::hash::Hash>(
    exact: &HashMap<(u8, A), Vec<u32>>,
    mask: impl Fn(A, u8) -> A,
    problems: &mut Vec<Overflow>,
    name: impl Fn(A, u8) -> String,
) -> BTreeMap<(u8, A), Vec<u32>> {
    let mut lens: Vec<u8> = exact.keys().map(|k| k.0).collect();
    lens.sort_unstable();
    lens.dedup();
    let mut out = BTreeMap::new();
    for &(len, addr) in exact.keys() {
        let mut list: Vec<u32> = lens
            .iter()
            .filter(|&&l| l <= len)
            .filter_map(|&l| exact.get(&(l, mask(addr, l))))
            .flatten()
            .copied()
            .collect();
        list.sort_unstable();
        list.dedup();
        if list.len() > MAX_CANDIDATES {
            problems.push(Overflow::Prefix(name(addr, len), list.clone()));
        }
        out.insert((len, addr), list);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::datapath::tables::{
        Disposition, Imsi, NextHop, Qfi, RuleAction, Session, Teid, TrafficRule, tests::MINIMAL,
    };

    fn rule(id: u32, priority: u8, dst: &[&str]) -> TrafficRule {
        TrafficRule {
            id,
            priority,
            state: RuleState::Active,
            action: RuleAction::Local,
            dst: dst.iter().map(|d| d.parse().unwrap()).collect(),
            src: vec![],
            protocols: vec![],
            dst_ports: vec![],
            teid: None,
            qfi: None,
        }
    }

    fn tables(rules: Vec<TrafficRule>) -> Tables {
        let mut t = from_toml(MINIMAL, "t").unwrap().into_tables();
        t.rules = rules;
        t
    }

    #[test]
    fn candidate_lists_hold_every_covering_rule_in_precedence_order() {
        let t = tables(vec![
            rule(5, 10, &["10.0.0.0/8"]),
            rule(3, 10, &["10.1.0.0/16"]),
            rule(9, 0, &[]),
            rule(1, 200, &["10.1.2.0/24", "2001:db8::/32"]),
        ]);
        let l = candidate_lists(&t).unwrap();
        let ids: Vec<u32> = l.order.iter().map(|&i| t.rules[i].id).collect();
        assert_eq!(ids, vec![9, 3, 5, 1], "priority first, then id");
        let at = |len: u8, a: [u8; 4]| l.v4[&(len, u32::from_be_bytes(a))].clone();
        assert_eq!(at(24, [10, 1, 2, 0]), vec![0, 1, 2, 3]);
        assert_eq!(at(16, [10, 1, 0, 0]), vec![0, 1, 2]);
        assert_eq!(at(8, [10, 0, 0, 0]), vec![0, 2]);
        assert_eq!(at(0, [0, 0, 0, 0]), vec![0]);
        assert_eq!(l.v6[&(32, 0x2001_0db8u128 << 96)], vec![0, 3]);
    }

    #[test]
    fn too_many_rules_on_one_destination_is_reported_with_their_ids() {
        let rules = (0..=MAX_CANDIDATES as u32)
            .map(|i| rule(i, 1, &["192.0.2.0/24"]))
            .collect();
        let problems = candidate_lists(&tables(rules)).err().unwrap();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].message.contains("192.0.2.0/24"), "{problems:?}");
        assert!(
            problems[0].message.contains("17 active rules"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_next_hop_is_a_fixed_mac_or_the_fib_and_exactly_one_of_them() {
        let fib = MINIMAL.replace("next_hop_mac = \"02:00:00:00:01:02\"", "next_hop = \"fib\"");
        let t = from_toml(&fib, "t.toml").unwrap();
        assert_eq!(t.local.next_hop, NextHop::Fib);
        assert!(matches!(t.n3.next_hop, NextHop::Mac(_)));
        let both = MINIMAL.replace(
            "next_hop_mac = \"02:00:00:00:00:02\"",
            "next_hop_mac = \"02:00:00:00:00:02\"\nnext_hop = \"fib\"",
        );
        let neither = MINIMAL.replace("next_hop_mac = \"02:00:00:00:01:02\"\n", "");
        let unknown = MINIMAL.replace("next_hop_mac = \"02:00:00:00:01:02\"", "next_hop = \"arp\"");
        for (text, at, want) in [
            (
                both,
                "t.toml:2:1: ",
                "[n3] has both `next_hop_mac` and `next_hop`",
            ),
            (neither, "t.toml:10:1: ", "[local] needs its next hop"),
            (
                unknown,
                "t.toml:13:12: ",
                "unknown variant `arp`, expected `fib`",
            ),
        ] {
            let e = from_toml(&text, "t.toml").unwrap_err().to_string();
            assert!(e.starts_with(at), "{e}");
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn the_fib_next_hop_and_vlan_tags_on_one_side_are_refused() {
        let text = MINIMAL.replace(
            "next_hop_mac = \"02:00:00:00:00:02\"",
            "next_hop = \"fib\"\nvlan = [100]",
        );
        let e = from_toml(&text, "t.toml").unwrap_err().to_string();
        assert!(
            e.contains("n3: next_hop = \"fib\" cannot be combined with n3.vlan"),
            "{e}"
        );
    }

    #[test]
    fn minimal_file_loads_with_documented_defaults() {
        let t = from_toml(MINIMAL, "t.toml").unwrap();
        assert_eq!(t.defaults.unknown_teid, Disposition::Pass);
        assert_eq!(t.defaults.spoofed_source, Disposition::Drop);
        assert_eq!(t.defaults.malformed, Disposition::Drop);
        assert!(t.sessions.is_empty() && t.rules.is_empty());
    }

    #[test]
    fn the_commented_example_is_valid() {
        let text = include_str!("../../../examples/tables.toml");
        let t = from_toml(text, "examples/tables.toml").unwrap();
        assert!(!t.sessions.is_empty() && !t.rules.is_empty());
    }

    #[test]
    fn unknown_field_is_reported_with_line_and_column() {
        let text = format!(
            "{MINIMAL}\n[[rules]]\nid = 1\npriority = 0\naction = \"DROP\"\ncolour = \"red\"\n"
        );
        let e = from_toml(&text, "t.toml").unwrap_err().to_string();
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
            let e = from_toml(&text, "t.toml").unwrap_err().to_string();
            assert!(e.contains(want), "{line}: {e}");
            assert!(e.starts_with("t.toml:1"), "{line}: no line:column in {e}");
        }
    }

    #[test]
    fn with_pfcp_on_a_session_in_its_range_is_refused_at_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        let text = format!(
            "{MINIMAL}\n[[sessions]]\nid = 1\nuplink_teid = 0x80000001\ndownlink_teid = 8\n\
             ue_ipv4 = \"10.0.0.1\"\ngnb = \"198.18.1.1\"\nqfi = 1\n"
        );
        std::fs::write(&path, &text).unwrap();
        let reserved = Reserved {
            pfcp_from: Some(0x8000_0000),
        };
        let e = load_with(&path, &Overlay::default(), "api", reserved)
            .unwrap_err()
            .to_string();
        let line = text.lines().position(|l| l == "[[sessions]]").unwrap() + 1;
        assert!(
            e.contains(&format!(
                "t.toml:{line}:1: session 1: uplink_teid 0x80000001 is in PFCP's range"
            )),
            "{e}"
        );
        // Without PFCP the same tables are fine.
        load_with(&path, &Overlay::default(), "api", Reserved::default()).unwrap();
    }

    #[test]
    fn an_imsi_is_5_to_15_digits_and_a_bad_one_is_reported_where_it_is() {
        let session = |imsi: &str| {
            format!(
                "{MINIMAL}\n[[sessions]]\nid = 1\nuplink_teid = 7\ndownlink_teid = 8\n\
                 ue_ipv4 = \"10.0.0.1\"\ngnb = \"198.18.1.1\"\nqfi = 1\nimsi = {imsi}\n"
            )
        };
        let t = from_toml(&session("\"001010123456789\""), "t.toml").unwrap();
        assert_eq!(
            t.sessions[0].imsi.as_ref().map(Imsi::as_str),
            Some("001010123456789")
        );
        assert!(from_toml(&session("\"00101\""), "t.toml").is_ok());
        for bad in ["\"0010\"", "\"0010101234567890\"", "\"00101a\"", "\"\""] {
            let e = from_toml(&session(bad), "t.toml").unwrap_err().to_string();
            assert!(
                e.contains("is not an IMSI (expected 5-15 decimal digits"),
                "{bad}: {e}"
            );
            assert!(e.starts_with("t.toml:22:8: "), "{bad}: {e}");
        }
        let e = from_toml(&session("1010123456"), "t.toml")
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
        let e = from_toml(&text, "t.toml").unwrap_err();
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
        let mut t = from_toml(MINIMAL, "t").unwrap().into_tables();
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
        let e = compile(t).unwrap_err().to_string();
        assert!(
            e.contains("2001:db8:1:2::/64 lies inside 2001:db8:1::/48"),
            "{e}"
        );
        assert!(
            e.contains("gnb 2001:db8::9 is IPv6 but n3 has no ipv6 address"),
            "{e}"
        );
    }

    /// 20,000 sessions with one id: every one of them is a problem. The error lists the
    /// first [`MAX_REPORTED_PROBLEMS`] with their positions and counts the rest (finding
    /// positions used to rescan the text per problem: 41 s for this file).
    #[test]
    fn many_problems_are_capped_and_counted() {
        let mut text = MINIMAL.to_string();
        for i in 0..20_000u32 {
            text.push_str(&format!(
                "[[sessions]]\nid = 1\nuplink_teid = {i}\ndownlink_teid = 1\n\
                 ue_ipv4 = \"10.{}.{}.{}\"\ngnb = \"198.18.1.1\"\nqfi = 9\n",
                i >> 16,
                (i >> 8) & 255,
                i & 255
            ));
        }
        let e = from_toml(&text, "big.toml").unwrap_err();
        let TablesError::Invalid { problems, more, .. } = &e else {
            panic!("{e}")
        };
        assert_eq!(problems.len(), MAX_REPORTED_PROBLEMS);
        assert_eq!(*more, 19_999 - MAX_REPORTED_PROBLEMS);
        // The second session starts after MINIMAL's lines and the first session's 7.
        let first_line = MINIMAL.lines().count() + 7 + 1;
        assert!(
            problems[0].starts_with(&format!(
                "big.toml:{first_line}:1: session 1: id 1 is also used"
            )),
            "{}",
            problems[0]
        );
        let shown = e.to_string();
        assert!(shown.contains("19999 problem(s)"), "{shown}");
        assert!(
            shown.contains("… and 19899 more problem(s), not listed"),
            "{shown}"
        );
    }
}
