//! Compiles [`Tables`] into the entries the kernel maps hold.
//!
//! Rules become an array in precedence order (lowest priority value first, ties by lowest
//! rule id; INACTIVE rules are left out) plus, per address family, a longest-prefix-match
//! trie from destination prefix to the bounded list of rules that may apply there. A packet
//! looks up its destination once and walks at most [`MAX_CANDIDATES`] rules.
//!
//! Why the list of the longest matching prefix is enough: if rule prefix `q` contains address
//! `a` and `p` is the longest rule prefix containing `a`, then `q` contains `p`; so the list
//! of `p` holds every rule whose destination covers `p`, which is every rule that can match `a`.
//!
//! Pure code: no kernel access, so it is tested directly and shared with the loader.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use mecgw_ebpf::{
    CONFIG_N3_V4, CONFIG_N3_V6, Candidates, Config, MATCH_PORTS, MATCH_PROTO, MATCH_QFI, MATCH_SRC,
    MATCH_TEID, MAX_CANDIDATES, MAX_DST_PREFIXES, PortRange as PortEntry, PrefixV4, PrefixV6,
    RuleEntry, SESSION_GNB_V6, SESSION_HAS_UE_V4, SESSION_HAS_UE_V6, SessionEntry, action,
    disposition,
};

use super::tables::{
    Disposition, IpPrefix, Place, Problem, RuleAction, RuleState, Tables, mask_v4, mask_v6,
};

/// The contents of one generation of the kernel tables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompiledTables {
    pub config: Config,
    /// Uplink TEID → session.
    pub sessions: HashMap<u32, SessionEntry>,
    /// UE IPv4 address → session.
    pub ue_v4: HashMap<[u8; 4], SessionEntry>,
    /// (UE IPv6 prefix, length) → session.
    pub ue_v6: HashMap<([u8; 16], u32), SessionEntry>,
    /// Active rules in precedence order.
    pub rules: Vec<RuleEntry>,
    /// (destination prefix, length) → candidate rule indices.
    pub dst_v4: HashMap<([u8; 4], u32), Candidates>,
    pub dst_v6: HashMap<([u8; 16], u32), Candidates>,
}

/// The rule precedence and the candidate lists of every destination prefix.
pub struct CandidateLists {
    /// Indices into `tables.rules` of the active rules, in precedence order.
    pub order: Vec<usize>,
    pub v4: BTreeMap<(u8, u32), Vec<u32>>,
    pub v6: BTreeMap<(u8, u128), Vec<u32>>,
}

/// Computes the rule order and candidate lists, or every destination where more than
/// [`MAX_CANDIDATES`] rules would apply.
pub fn candidate_lists(tables: &Tables) -> Result<CandidateLists, Vec<Problem>> {
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

/// Stable counter slots for ids (rules or sessions), so counters survive table updates.
///
/// A slot given up by an update becomes reusable only after the *next* update: by then the
/// generation that still referenced it has been retired behind an RCU grace period.
#[derive(Debug, Default)]
pub struct Slots {
    by_id: HashMap<u32, u32>,
    free: Vec<u32>,
    retired: Vec<u32>,
    next: u32,
}

impl Slots {
    /// Gives every id in `ids` a slot (keeping existing ones) and retires the rest.
    /// Returns the slots handed out fresh from reuse, whose counters must be zeroed.
    pub fn assign(&mut self, ids: &[u32]) -> Vec<u32> {
        self.free.append(&mut self.retired);
        let keep: std::collections::HashSet<u32> = ids.iter().copied().collect();
        let gone: Vec<u32> = self
            .by_id
            .keys()
            .filter(|id| !keep.contains(id))
            .copied()
            .collect();
        for id in gone {
            if let Some(slot) = self.by_id.remove(&id) {
                self.retired.push(slot);
            }
        }
        let mut reused = Vec::new();
        for &id in ids {
            if self.by_id.contains_key(&id) {
                continue;
            }
            let slot = match self.free.pop() {
                Some(s) => {
                    reused.push(s);
                    s
                }
                None => {
                    self.next += 1;
                    self.next - 1
                }
            };
            self.by_id.insert(id, slot);
        }
        reused
    }

    /// The slot of `id`, if it has one.
    pub fn get(&self, id: u32) -> Option<u32> {
        self.by_id.get(&id).copied()
    }
}

fn disposition(d: Disposition) -> u32 {
    match d {
        Disposition::Pass => disposition::PASS,
        Disposition::Drop => disposition::DROP,
    }
}

fn mask_bytes_v6(len: u8) -> [u8; 16] {
    mask_v6(len).to_be_bytes()
}

/// The session entry of `s`, counting into `slot`.
pub fn session_entry(s: &super::tables::Session, slot: u32) -> SessionEntry {
    let mut e = SessionEntry {
        id: s.id,
        counter: slot,
        uplink_teid: s.uplink_teid.0,
        downlink_teid: s.downlink_teid.0,
        qfi: u32::from(s.qfi.get()),
        ..SessionEntry::default()
    };
    if let Some(a) = s.ue_ipv4 {
        e.flags |= SESSION_HAS_UE_V4;
        e.ue_v4 = a.octets();
    }
    if let Some(p) = s.ue_ipv6
        && let IpAddr::V6(a) = p.addr()
    {
        e.flags |= SESSION_HAS_UE_V6;
        e.ue_v6 = a.octets();
        e.ue_v6_mask = mask_bytes_v6(p.len());
    }
    match s.gnb {
        IpAddr::V4(a) => e.gnb[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => {
            e.flags |= SESSION_GNB_V6;
            e.gnb = a.octets();
        }
    }
    e
}

fn rule_entry(r: &super::tables::TrafficRule, slot: u32) -> RuleEntry {
    let mut e = RuleEntry {
        id: r.id,
        counter: slot,
        action: match r.action {
            RuleAction::Passthrough => action::PASSTHROUGH,
            RuleAction::Drop => action::DROP,
            RuleAction::Local => action::LOCAL,
        },
        ..RuleEntry::default()
    };
    if let Some(t) = r.teid {
        e.match_flags |= MATCH_TEID;
        e.teid = t.0;
    }
    if let Some(q) = r.qfi {
        e.match_flags |= MATCH_QFI;
        e.qfi = u32::from(q.get());
    }
    if !r.protocols.is_empty() {
        e.match_flags |= MATCH_PROTO;
        for p in &r.protocols {
            e.protocols[usize::from(p.0 >> 5)] |= 1 << (p.0 & 31);
        }
    }
    if !r.dst_ports.is_empty() {
        e.match_flags |= MATCH_PORTS;
        for (slot, range) in e.ports.iter_mut().zip(&r.dst_ports) {
            *slot = PortEntry {
                lo: range.lo,
                hi: range.hi,
            };
        }
        e.port_count = r.dst_ports.len().min(e.ports.len()) as u32;
    }
    if !r.src.is_empty() {
        e.match_flags |= MATCH_SRC;
        for p in &r.src {
            add_src(&mut e, p);
        }
    }
    e
}

fn add_src(e: &mut RuleEntry, p: &IpPrefix) {
    match p.addr() {
        IpAddr::V4(a) => {
            if let Some(slot) = e.src_v4.get_mut(e.src_v4_count as usize) {
                *slot = PrefixV4 {
                    addr: a.octets(),
                    mask: mask_v4(p.len()).to_be_bytes(),
                };
                e.src_v4_count += 1;
            }
        }
        IpAddr::V6(a) => {
            if let Some(slot) = e.src_v6.get_mut(e.src_v6_count as usize) {
                *slot = PrefixV6 {
                    addr: a.octets(),
                    mask: mask_bytes_v6(p.len()),
                };
                e.src_v6_count += 1;
            }
        }
    }
}

fn candidates(list: &[u32]) -> Candidates {
    let mut c = Candidates::default();
    for (slot, &i) in c.rules.iter_mut().zip(list) {
        *slot = i;
    }
    c.count = list.len().min(MAX_CANDIDATES) as u32;
    c
}

/// Compiles validated tables. Counter slots come from `rule_slots` / `session_slots`, which
/// must already hold every rule and session id (see [`Slots::assign`]).
pub fn compile(
    tables: &Tables,
    rule_slots: &Slots,
    session_slots: &Slots,
) -> Result<CompiledTables, Vec<Problem>> {
    let problems = tables.problems();
    if !problems.is_empty() {
        return Err(problems);
    }
    let lists = candidate_lists(tables)?;
    let mut config = Config {
        local_ifindex: tables.local.ifindex,
        n3_ifindex: tables.n3.ifindex,
        n3_mtu: tables.n3.mtu,
        unknown_teid: disposition(tables.defaults.unknown_teid),
        spoofed_source: disposition(tables.defaults.spoofed_source),
        malformed: disposition(tables.defaults.malformed),
        local_mac: tables.local.mac.0,
        local_next_hop_mac: tables.local.next_hop_mac.0,
        n3_mac: tables.n3.mac.0,
        n3_next_hop_mac: tables.n3.next_hop_mac.0,
        ..Config::default()
    };
    if let Some(a) = tables.n3.ipv4 {
        config.flags |= CONFIG_N3_V4;
        config.n3_v4 = a.octets();
    }
    if let Some(a) = tables.n3.ipv6 {
        config.flags |= CONFIG_N3_V6;
        config.n3_v6 = a.octets();
    }
    let mut out = CompiledTables {
        config,
        ..CompiledTables::default()
    };
    for s in &tables.sessions {
        let e = session_entry(s, session_slots.get(s.id).unwrap_or(0));
        out.sessions.insert(e.uplink_teid, e);
        if let Some(a) = s.ue_ipv4 {
            out.ue_v4.insert(a.octets(), e);
        }
        if e.flags & SESSION_HAS_UE_V6 != 0 {
            let len = s.ue_ipv6.map_or(128, |p| u32::from(p.len()));
            out.ue_v6.insert((e.ue_v6, len), e);
        }
    }
    out.rules = lists
        .order
        .iter()
        .map(|&i| {
            let r = &tables.rules[i];
            rule_entry(r, rule_slots.get(r.id).unwrap_or(0))
        })
        .collect();
    out.dst_v4 = lists
        .v4
        .iter()
        .map(|(&(len, a), list)| ((a.to_be_bytes(), u32::from(len)), candidates(list)))
        .collect();
    out.dst_v6 = lists
        .v6
        .iter()
        .map(|(&(len, a), list)| ((a.to_be_bytes(), u32::from(len)), candidates(list)))
        .collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::tables::{RuleAction, TrafficRule};

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
        Tables::from_toml(crate::datapath::tables::tests::MINIMAL, "t")
            .map(|mut t| {
                t.rules = rules;
                t
            })
            .unwrap()
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
    fn slots_are_stable_and_reused_only_after_a_further_update() {
        let mut s = Slots::default();
        assert!(s.assign(&[1, 2, 3]).is_empty());
        let two = s.get(2).unwrap();
        s.assign(&[1, 3, 4]);
        assert_ne!(s.get(4), Some(two), "a retired slot is not reused at once");
        let reused = s.assign(&[1, 3, 4, 5]);
        assert_eq!(s.get(5), Some(two));
        assert_eq!(reused, vec![two]);
        assert_eq!(s.get(1), Some(0));
    }
}
