//! Tables at the scale the performance goals name (100,000 sessions, 5,000 rules), built in
//! code for the fast-path benchmark and written as a tables file for `mecgw run`.
//!
//! One generator for both, so the fast-path figures and the daemon's memory figures are for
//! the same tables.

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use mecgw::datapath::{
    Tables,
    tables::{
        Defaults, Disposition, IpPrefix, LocalInterface, Mac, N3Interface, NextHop, Protocol, Qfi,
        RuleAction, RuleState, Session, Teid, TrafficRule,
    },
};

/// Uplink TEID of session `i` (downlink: `DOWNLINK_TEID_BASE + i`).
pub const UPLINK_TEID_BASE: u32 = 0x10_0000;
/// Downlink TEID of session 0.
pub const DOWNLINK_TEID_BASE: u32 = 0x20_0000;

/// The IPv4 address of the UE of session `i` (10.0.0.1 onwards).
pub fn ue(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000 | (i + 1))
}

/// `sessions` sessions and `rules` rules. Packets meant to be measured use the last session;
/// their destinations sit behind candidate lists that start with several rules that do not
/// match (so the walk is not trivially short): 192.0.2.0/24 is LOCAL, 198.51.100.0/24 DROP,
/// 203.0.113.0/24 PASSTHROUGH. Filler rules with their own /24s in 100.64.0.0/10 make up the
/// count.
pub fn tables(sessions: u32, rules: u32) -> Tables {
    const QFI: Qfi = match Qfi::new(9) {
        Some(q) => q,
        None => panic!("9 is a valid QFI"),
    };
    let sessions = (0..sessions)
        .map(|i| Session {
            id: i,
            uplink_teid: Teid(UPLINK_TEID_BASE + i),
            downlink_teid: Teid(DOWNLINK_TEID_BASE + i),
            ue_ipv4: Some(ue(i)),
            ue_ipv6: None,
            gnb: IpAddr::V4(Ipv4Addr::new(198, 18, 1, (i % 250) as u8)),
            qfi: QFI,
            imsi: None,
        })
        .collect();
    let v4 = |a: [u8; 4], len| {
        // Invariant: every prefix below has a length of at most 32.
        IpPrefix::new(IpAddr::V4(Ipv4Addr::from(a)), len)
            .unwrap_or_else(|| unreachable!("IPv4 prefix length {len} is at most 32"))
    };
    let rule =
        |id: u32, priority: u8, action, dst: IpPrefix, protocols: Vec<Protocol>| TrafficRule {
            id,
            priority,
            state: RuleState::Active,
            action,
            dst: vec![dst],
            src: vec![],
            protocols,
            dst_ports: vec![],
            teid: None,
            qfi: None,
        };
    let misses = if rules >= 1000 { 8 } else { 4 };
    let mut list: Vec<TrafficRule> = (0..misses)
        .map(|i| {
            rule(
                i,
                0,
                RuleAction::Drop,
                v4([0, 0, 0, 0], 0),
                vec![Protocol(1)],
            )
        })
        .collect();
    list.push(rule(
        100,
        10,
        RuleAction::Local,
        v4([192, 0, 2, 0], 24),
        vec![],
    ));
    list.push(rule(
        101,
        10,
        RuleAction::Drop,
        v4([198, 51, 100, 0], 24),
        vec![],
    ));
    list.push(rule(
        102,
        10,
        RuleAction::Passthrough,
        v4([203, 0, 113, 0], 24),
        vec![],
    ));
    let mut i = 0u32;
    while (list.len() as u32) < rules {
        let Some(net) = IpPrefix::new(IpAddr::V4(Ipv4Addr::from(0x6440_0000 + (i << 8))), 24)
        else {
            break;
        };
        list.push(rule(1000 + i, 20, RuleAction::Local, net, vec![]));
        i += 1;
    }
    Tables {
        n3: N3Interface {
            ifindex: 1,
            mac: Mac([2, 0, 0, 0, 3, 1]),
            next_hop: NextHop::Mac(Mac([2, 0, 0, 0, 3, 2])),
            ipv4: Some(Ipv4Addr::new(198, 18, 0, 1)),
            ipv6: Some(Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 1)),
            mtu: 1500,
            vlan: Vec::new(),
        },
        local: LocalInterface {
            ifindex: 1,
            mac: Mac([2, 0, 0, 0, 4, 1]),
            next_hop: NextHop::Mac(Mac([2, 0, 0, 0, 4, 2])),
            vlan: Vec::new(),
        },
        defaults: Defaults {
            unknown_teid: Disposition::Pass,
            spoofed_source: Disposition::Drop,
            malformed: Disposition::Drop,
        },
        sessions,
        rules: list,
    }
}

fn mac(m: Mac) -> String {
    let [a, b, c, d, e, f] = m.0;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

/// A side's next-hop line in a tables file.
fn next_hop(h: NextHop) -> String {
    match h {
        NextHop::Mac(m) => format!("next_hop_mac = \"{}\"", mac(m)),
        NextHop::Fib => "next_hop = \"fib\"".to_string(),
    }
}

fn disposition(d: Disposition) -> &'static str {
    match d {
        Disposition::Pass => "pass",
        Disposition::Drop => "drop",
    }
}

fn quoted<T: std::fmt::Display>(items: &[T]) -> String {
    let items: Vec<String> = items.iter().map(|i| format!("\"{i}\"")).collect();
    format!("[{}]", items.join(", "))
}

/// `tables` as a tables file (the format of `examples/tables.toml`), for `mecgw run`.
pub fn to_toml(tables: &Tables) -> String {
    let Tables {
        n3,
        local,
        defaults,
        sessions,
        rules,
    } = tables;
    let mut out = String::with_capacity(128 * (sessions.len() + rules.len()) + 512);
    // Writing to a String cannot fail: the `let _ =` below discard an always-Ok result.
    let _ = writeln!(
        out,
        "[n3]\nifindex = {}\nmac = \"{}\"\n{}\nmtu = {}",
        n3.ifindex,
        mac(n3.mac),
        next_hop(n3.next_hop),
        n3.mtu
    );
    if let Some(a) = n3.ipv4 {
        let _ = writeln!(out, "ipv4 = \"{a}\"");
    }
    if let Some(a) = n3.ipv6 {
        let _ = writeln!(out, "ipv6 = \"{a}\"");
    }
    let _ = writeln!(
        out,
        "\n[local]\nifindex = {}\nmac = \"{}\"\n{}\n\n[defaults]\n\
         unknown_teid = \"{}\"\nspoofed_source = \"{}\"\nmalformed = \"{}\"",
        local.ifindex,
        mac(local.mac),
        next_hop(local.next_hop),
        disposition(defaults.unknown_teid),
        disposition(defaults.spoofed_source),
        disposition(defaults.malformed),
    );
    for s in sessions {
        let _ = write!(
            out,
            "\n[[sessions]]\nid = {}\nuplink_teid = {}\ndownlink_teid = {}\ngnb = \"{}\"\nqfi = {}\n",
            s.id,
            s.uplink_teid.0,
            s.downlink_teid.0,
            s.gnb,
            s.qfi.get()
        );
        if let Some(a) = s.ue_ipv4 {
            let _ = writeln!(out, "ue_ipv4 = \"{a}\"");
        }
        if let Some(p) = &s.ue_ipv6 {
            let _ = writeln!(out, "ue_ipv6 = \"{p}\"");
        }
        if let Some(imsi) = &s.imsi {
            let _ = writeln!(out, "imsi = \"{}\"", imsi.as_str());
        }
    }
    for r in rules {
        let state = match r.state {
            RuleState::Active => "ACTIVE",
            RuleState::Inactive => "INACTIVE",
        };
        let action = match r.action {
            RuleAction::Local => "LOCAL",
            RuleAction::Passthrough => "PASSTHROUGH",
            RuleAction::Drop => "DROP",
        };
        let protocols: Vec<String> = r.protocols.iter().map(|p| p.0.to_string()).collect();
        let ports: Vec<String> = r
            .dst_ports
            .iter()
            .map(|p| format!("\"{}-{}\"", p.lo, p.hi))
            .collect();
        let _ = writeln!(
            out,
            "\n[[rules]]\nid = {}\npriority = {}\nstate = \"{state}\"\naction = \"{action}\"\n\
             dst = {}\nsrc = {}\nprotocols = [{}]\ndst_ports = [{}]",
            r.id,
            r.priority,
            quoted(&r.dst),
            quoted(&r.src),
            protocols.join(", "),
            ports.join(", "),
        );
        if let Some(t) = r.teid {
            let _ = writeln!(out, "teid = {}", t.0);
        }
        if let Some(q) = r.qfi {
            let _ = writeln!(out, "qfi = {}", q.get());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use mecgw::datapath::compile::{compile, from_toml};

    #[test]
    fn the_file_reads_back_as_the_same_tables() {
        for (sessions, rules) in [(1, 10), (300, 1200)] {
            let t = tables(sessions, rules);
            assert_eq!(t.sessions.len(), sessions as usize);
            assert_eq!(t.rules.len(), rules as usize);
            compile(t.clone()).unwrap();
            let back = from_toml(&to_toml(&t), "scale.toml").unwrap();
            assert_eq!(*back, t);
        }
    }

    #[test]
    fn every_field_survives_the_round_trip() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/tables.toml"
        ))
        .unwrap();
        let example = from_toml(&text, "tables.toml").unwrap();
        let back = from_toml(&to_toml(&example), "again.toml").unwrap();
        assert_eq!(back, example);
    }
}
