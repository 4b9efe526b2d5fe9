//! The map entries of one generation of the kernel tables, from [`CompiledTables`]: what
//! `writer` puts into the kernel, byte for byte. Pure code: no kernel access.

use std::{collections::HashMap, net::IpAddr};

use mecgw_ebpf::{
    CONFIG_LOCAL_FIB, CONFIG_N3_FIB, CONFIG_N3_V4, CONFIG_N3_V6, Candidates, Config, MATCH_PORTS,
    MATCH_PROTO, MATCH_QFI, MATCH_SRC, MATCH_TEID, MAX_CANDIDATES, PortRange as PortEntry,
    PrefixV4, PrefixV6, RuleEntry, SESSION_GNB_V6, SESSION_HAS_UE_V4, SESSION_HAS_UE_V6,
    SessionEntry, action, disposition,
};

use super::{
    compile::CompiledTables,
    tables::{Disposition, IpPrefix, NextHop, RuleAction, mask_v4, mask_v6},
};

/// The contents of one generation of the kernel tables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GenerationEntries {
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
                    addr: u32::from_ne_bytes(a.octets()),
                    mask: u32::from_ne_bytes(mask_v4(p.len()).to_be_bytes()),
                };
                e.src_v4_count += 1;
            }
        }
        IpAddr::V6(a) => {
            if let Some(slot) = e.src_v6.get_mut(e.src_v6_count as usize) {
                *slot = PrefixV6 {
                    addr: words(a.octets()),
                    mask: words(mask_bytes_v6(p.len())),
                };
                e.src_v6_count += 1;
            }
        }
    }
}

/// Sixteen address bytes as the four native-order words the programs compare.
pub fn words(b: [u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
        u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
        u32::from_ne_bytes([b[12], b[13], b[14], b[15]]),
    ]
}

fn candidates(list: &[u32]) -> Candidates {
    let mut c = Candidates::default();
    for (slot, &i) in c.rules.iter_mut().zip(list) {
        *slot = i;
    }
    c.count = list.len().min(MAX_CANDIDATES) as u32;
    c
}

impl GenerationEntries {
    /// The map entries of `tables`. Counter slots come from `rule_slots` / `session_slots`,
    /// which must already hold every rule and session id (see [`Slots::assign`]).
    pub fn build(
        tables: &CompiledTables,
        rule_slots: &Slots,
        session_slots: &Slots,
    ) -> GenerationEntries {
        let lists = tables.candidate_lists();
        let mut config = Config {
            local_ifindex: tables.local.ifindex,
            n3_ifindex: tables.n3.ifindex,
            n3_mtu: tables.n3.mtu,
            unknown_teid: disposition(tables.defaults.unknown_teid),
            spoofed_source: disposition(tables.defaults.spoofed_source),
            malformed: disposition(tables.defaults.malformed),
            local_mac: tables.local.mac.0,
            local_next_hop_mac: tables.local.next_hop.mac().map_or([0; 6], |m| m.0),
            n3_mac: tables.n3.mac.0,
            n3_next_hop_mac: tables.n3.next_hop.mac().map_or([0; 6], |m| m.0),
            n3_tags: mecgw_ebpf::vlan_tags(&tables.n3.vlan),
            n3_tag_count: tables.n3.vlan.len() as u32,
            local_tags: mecgw_ebpf::vlan_tags(&tables.local.vlan),
            local_tag_count: tables.local.vlan.len() as u32,
            ..Config::default()
        };
        if tables.n3.next_hop == NextHop::Fib {
            config.flags |= CONFIG_N3_FIB;
        }
        if tables.local.next_hop == NextHop::Fib {
            config.flags |= CONFIG_LOCAL_FIB;
        }
        if let Some(a) = tables.n3.ipv4 {
            config.flags |= CONFIG_N3_V4;
            config.n3_v4 = a.octets();
        }
        if let Some(a) = tables.n3.ipv6 {
            config.flags |= CONFIG_N3_V6;
            config.n3_v6 = a.octets();
        }
        let mut out = GenerationEntries {
            config,
            ..GenerationEntries::default()
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
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
