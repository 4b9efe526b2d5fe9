//! Flow accounting through BPF_PROG_TEST_RUN: exact per-flow packet and byte counts, the
//! normalisation that puts both directions of a connection in one sample, the rule, harvests
//! that never lose or double-count a packet while traffic flows, LRU evictions counted, the
//! model giving the same samples, and nothing counted when accounting is off.
//!
//! Needs root (CAP_BPF). CI runs as root, so this is never skipped there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    sync::atomic::{AtomicBool, Ordering},
};

use mecgw::datapath::{
    CompiledTables, Counter, Direction, FastPath, FastPathOptions, FlowKey, FlowSample, Reason,
    flow_counters::FlowTable, model::Model,
};
use mecgw_ebpf::MAX_FLOWS;
use mecgw_tests::{packet::*, pin_to_cpu, sorted_flows, tables_with};

const TABLES: &str = r#"
[[sessions]]
id = 1
uplink_teid = 0x1001
downlink_teid = 0x2001
ue_ipv4 = "10.45.0.1"
ue_ipv6 = "2001:db8:45:1::/64"
gnb = "198.18.1.1"
qfi = 9
imsi = "001010000000001"

[[sessions]]
id = 2
uplink_teid = 0x1002
downlink_teid = 0x2002
ue_ipv4 = "10.45.0.2"
gnb = "198.18.1.2"
qfi = 5

[[rules]]
id = 10
priority = 0
action = "LOCAL"
dst = ["192.0.2.0/24", "2001:db8:e::/48"]

[[rules]]
id = 20
priority = 0
action = "DROP"
dst = ["198.51.100.0/24"]
"#;

fn tables() -> CompiledTables {
    mecgw::datapath::compile::from_toml(&tables_with(TABLES), "flows test").unwrap()
}

fn accounting() -> FastPath {
    let fp = FastPath::load_with(FastPathOptions {
        flow_accounting: true,
        ..FastPathOptions::default()
    })
    .expect("load (are we root?)");
    fp.install(&tables()).unwrap();
    fp
}

/// A G-PDU of the session with uplink TEID `teid` carrying `inner`.
fn up(teid: u32, inner: &[u8]) -> Vec<u8> {
    n3_v4(
        v4("198.18.1.1"),
        v4("198.18.0.1"),
        &gtp(255, teid, None, &[ul_container(9)], inner),
    )
}

/// A packet from a local service to a UE.
fn down(ip: &[u8]) -> Vec<u8> {
    let ethertype = if ip[0] >> 4 == 6 { 0x86dd } else { 0x0800 };
    let mut f = eth(MAC_A, MAC_B, ethertype);
    f.extend_from_slice(ip);
    f
}

fn udp4(src: &str, dst: &str, sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    ipv4(
        v4(src),
        v4(dst),
        17,
        64,
        0,
        &udp(sport, dport, &vec![0x5a; payload]),
    )
}

fn key(session: u32, ue: &str, peer: &str, protocol: u8, ports: (u16, u16)) -> FlowKey {
    FlowKey {
        session,
        ue: ue.parse().unwrap(),
        peer: peer.parse().unwrap(),
        protocol,
        ue_port: ports.0,
        peer_port: ports.1,
    }
}

fn counter(packets: u64, bytes: usize) -> Counter {
    Counter {
        packets,
        bytes: bytes as u64,
    }
}

/// The frames of the exact-count test, each with its direction and expected reason.
fn traffic() -> Vec<(Direction, Vec<u8>, Reason)> {
    let mut t = Vec::new();
    // Session 1, UDP 40000 → 192.0.2.5:443 (LOCAL, rule 10): 3 up, 2 down.
    for payload in [10, 200, 30] {
        let ip = udp4("10.45.0.1", "192.0.2.5", 40000, 443, payload);
        t.push((Direction::Uplink, up(0x1001, &ip), Reason::RuleLocal));
    }
    for payload in [100, 1000] {
        let ip = udp4("192.0.2.5", "10.45.0.1", 443, 40000, payload);
        t.push((Direction::Downlink, down(&ip), Reason::Encapsulated));
    }
    // Session 1, TCP 5555 → 198.51.100.7:80 (DROP, rule 20): 2 up.
    for _ in 0..2 {
        let ip = ipv4(
            v4("10.45.0.1"),
            v4("198.51.100.7"),
            6,
            64,
            0,
            &tcp(5555, 80),
        );
        t.push((Direction::Uplink, up(0x1001, &ip), Reason::RuleDrop));
    }
    // Session 2, ICMP → 203.0.113.9 (no rule): 1 up; the reply: 1 down. No ports.
    let ip = ipv4(v4("10.45.0.2"), v4("203.0.113.9"), 1, 64, 0, &icmp_echo());
    t.push((Direction::Uplink, up(0x1002, &ip), Reason::NoRule));
    let ip = ipv4(v4("203.0.113.9"), v4("10.45.0.2"), 1, 64, 0, &icmp_echo());
    t.push((Direction::Downlink, down(&ip), Reason::Encapsulated));
    // Session 1 over IPv6, UDP 7000 ↔ [2001:db8:e::5]:53 (LOCAL): 1 up, 1 down.
    let ue6 = v6("2001:db8:45:1::abcd");
    let svc6 = v6("2001:db8:e::5");
    let ip = ipv6(ue6, svc6, 17, 64, &udp(7000, 53, &[1; 40]));
    t.push((Direction::Uplink, up(0x1001, &ip), Reason::RuleLocal));
    let ip = ipv6(svc6, ue6, 17, 64, &udp(53, 7000, &[2; 80]));
    t.push((Direction::Downlink, down(&ip), Reason::Encapsulated));
    // Session 1 over IPv6 downlink behind hop-by-hop (8 bytes) and destination options (16
    // bytes) headers, on a QinQ-tagged frame: the flow is the UDP one, with its ports.
    let ip = ipv6_ext(
        svc6,
        ue6,
        &[
            V6Ext::Options { kind: 0, len8: 0 },
            V6Ext::Options { kind: 60, len8: 1 },
        ],
        17,
        64,
        &udp(5353, 7001, &[3; 20]),
    );
    let mut f = eth_tags(MAC_A, MAC_B, &[(0x88a8, 100), (0x8100, 7)], 0x86dd);
    f.extend_from_slice(&ip);
    t.push((Direction::Downlink, f, Reason::Encapsulated));
    // Session 2 downlink whose TTL would expire: passed, but still the UE's flow.
    let ip = ipv4(
        v4("192.0.2.9"),
        v4("10.45.0.2"),
        17,
        1,
        0,
        &udp(8080, 1234, &[0; 8]),
    );
    t.push((Direction::Downlink, down(&ip), Reason::TtlExpired));
    // Not counted: a spoofed source, an unknown TEID, a packet for no UE.
    let ip = udp4("10.45.0.99", "192.0.2.5", 40000, 443, 10);
    t.push((Direction::Uplink, up(0x1001, &ip), Reason::SpoofedSource));
    let ip = udp4("10.45.0.1", "192.0.2.5", 40000, 443, 10);
    t.push((Direction::Uplink, up(0x7777, &ip), Reason::UnknownTeid));
    let ip = udp4("192.0.2.5", "10.99.0.1", 443, 40000, 10);
    t.push((Direction::Downlink, down(&ip), Reason::NotForUe));
    t
}

/// What [`traffic`] must give, built from the inner packet lengths by hand.
fn expected() -> Vec<FlowSample> {
    let udp4_len = |payload: usize| 20 + 8 + payload;
    let mut v = vec![
        FlowSample {
            key: key(1, "10.45.0.1", "192.0.2.5", 17, (40000, 443)),
            uplink: counter(3, udp4_len(10) + udp4_len(200) + udp4_len(30)),
            downlink: counter(2, udp4_len(100) + udp4_len(1000)),
            rule: Some(10),
        },
        FlowSample {
            key: key(1, "10.45.0.1", "198.51.100.7", 6, (5555, 80)),
            uplink: counter(2, 2 * (20 + tcp(5555, 80).len())),
            downlink: counter(0, 0),
            rule: Some(20),
        },
        FlowSample {
            key: key(2, "10.45.0.2", "203.0.113.9", 1, (0, 0)),
            uplink: counter(1, 20 + icmp_echo().len()),
            downlink: counter(1, 20 + icmp_echo().len()),
            rule: None,
        },
        FlowSample {
            key: key(1, "2001:db8:45:1::abcd", "2001:db8:e::5", 17, (7000, 53)),
            uplink: counter(1, 40 + 8 + 40),
            downlink: counter(1, 40 + 8 + 80),
            rule: Some(10),
        },
        FlowSample {
            key: key(1, "2001:db8:45:1::abcd", "2001:db8:e::5", 17, (7001, 5353)),
            uplink: counter(0, 0),
            downlink: counter(1, 40 + 8 + 16 + 8 + 20),
            rule: None,
        },
        FlowSample {
            key: key(2, "10.45.0.2", "192.0.2.9", 17, (1234, 8080)),
            uplink: counter(0, 0),
            downlink: counter(1, udp4_len(8)),
            rule: None,
        },
    ];
    v.sort_by_key(|s| s.key);
    v
}

#[test]
fn flows_are_counted_exactly_per_direction_with_the_rule_and_harvested_once() {
    let fp = accounting();
    assert!(fp.flow_accounting());
    assert!(
        fp.harvest_flows().unwrap().is_empty(),
        "nothing before traffic"
    );
    let model = Model::new(&tables());
    let mut table = FlowTable::default();
    for (direction, frame, reason) in traffic() {
        let judged = fp.judge(direction, &frame).unwrap();
        assert_eq!(judged.reason, reason, "{direction:?} {frame:02x?}");
        let m = match direction {
            Direction::Uplink => model.uplink(&frame),
            Direction::Downlink => model.downlink(&frame),
        };
        if let Some(hit) = &m.flow {
            table.record(hit);
        }
    }
    let harvested = sorted_flows(fp.harvest_flows().unwrap());
    assert_eq!(harvested, expected());
    assert_eq!(
        sorted_flows(table.harvest()),
        harvested,
        "the model (and so the userspace datapath) counts exactly as the kernel"
    );
    assert!(
        fp.harvest_flows().unwrap().is_empty(),
        "a second harvest has nothing new"
    );
    assert_eq!(fp.flow_losses().unwrap().refused_packets, 0);
    assert_eq!(fp.flow_losses().unwrap().failed_packets, 0);

    // Counting goes on after a harvest, into the other generation, and the harvest after
    // that one finds it (and only it).
    let (direction, frame, _) = traffic().remove(0);
    fp.judge(direction, &frame).unwrap();
    let again = fp.harvest_flows().unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].uplink, counter(1, 20 + 8 + 10));
    assert_eq!(again[0].rule, Some(10));
}

/// A restart: what one instance's programs counted and nobody harvested (its flow maps
/// pinned, its process gone) is taken over by the next instance and comes with that one's
/// first harvest, merged with what the new programs count: exactly once.
#[test]
fn a_new_instance_adopts_the_unharvested_flows_of_the_previous_one_exactly_once() {
    let root = std::path::Path::new(mecgw_tests::testbed::pin_root().unwrap())
        .join(format!("fastpath-flows-{}", std::process::id()));
    let (dir_a, dir_b) = (root.join("a"), root.join("b"));
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    let options = FastPathOptions {
        flow_accounting: true,
        ..FastPathOptions::default()
    };
    let traffic = traffic();
    let (first, second) = traffic.split_at(traffic.len() / 2);
    let a = FastPath::load_pinned(options, &dir_a).unwrap();
    a.install(&tables()).unwrap();
    for (direction, frame, _) in first {
        a.judge(*direction, frame).unwrap();
    }
    // The previous instance's process ends without a last harvest; its maps stay pinned.
    drop(a);
    let b = FastPath::load_pinned(options, &dir_b).unwrap();
    b.install(&tables()).unwrap();
    let adopted = b.adopt_flows(&dir_a).unwrap();
    assert!(adopted.flows > 0, "{adopted:?}");
    assert_eq!(adopted.unreadable_flows + adopted.unreadable_maps, 0);
    for (direction, frame, _) in second {
        b.judge(*direction, frame).unwrap();
    }
    assert_eq!(
        sorted_flows(b.harvest_flows().unwrap()),
        expected(),
        "every packet of both instances, each once"
    );
    assert!(b.harvest_flows().unwrap().is_empty());
    // Adopting again finds the previous maps empty: nothing can be counted twice.
    assert_eq!(b.adopt_flows(&dir_a).unwrap().flows, 0);
    assert!(b.harvest_flows().unwrap().is_empty());
    // A "previous build" whose FLOWS_0 is another kind of map: refused, counted, not read.
    let other = root.join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::rename(
        dir_a.join(mecgw_ebpf::names::MAP_UPLINK_PFCP),
        other.join(mecgw_ebpf::names::MAP_FLOWS_LEGACY[0]),
    )
    .unwrap();
    let refused = b.adopt_flows(&other).unwrap();
    assert_eq!((refused.flows, refused.unreadable_maps), (0, 1));
    drop(b);
    std::fs::remove_dir_all(&root).unwrap();
}

/// An upgrade from a build that counted into per-CPU LRU maps (`FLOWS_0`, `FLOWS_1`): what
/// those counted and nobody harvested is adopted, each flow's CPUs summed, and merged with
/// what the new programs count.
#[test]
fn an_older_builds_per_cpu_flow_maps_are_adopted_and_merged_with_new_counts() {
    use mecgw_ebpf::{FLOW_FAMILY_V4, FlowValue, names::MAP_FLOWS_LEGACY};
    let dir = std::path::Path::new(mecgw_tests::testbed::pin_root().unwrap())
        .join(format!("fastpath-flows-legacy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let raw = |peer: [u8; 4], ports: (u16, u16)| {
        let mut k = mecgw_ebpf::FlowKey {
            session: 1,
            ue_port: ports.0,
            peer_port: ports.1,
            protocol: 17,
            family: FLOW_FAMILY_V4,
            ..Default::default()
        };
        k.ue[..4].copy_from_slice(&[10, 45, 0, 1]);
        k.peer[..4].copy_from_slice(&peer);
        k
    };
    let value = |up: u64, down: u64, rule: u32| FlowValue {
        uplink: counter(up, 48 * up as usize),
        downlink: counter(down, 78 * down as usize),
        rule,
        pad: 0,
    };
    let cpus = aya::util::nr_cpus().unwrap();
    let per_cpu = |first: FlowValue, second: FlowValue| {
        let mut v = vec![FlowValue::default(); cpus];
        v[0] = first;
        if cpus > 1 {
            v[1] = second;
        }
        aya::maps::PerCpuValues::try_from(v).unwrap()
    };
    let mut old = mecgw_tests::legacy_flows::pin(&dir.join(MAP_FLOWS_LEGACY[0]), 64).unwrap();
    // The LOCAL flow: most uplink packets on the first CPU, under rule 20.
    old.insert(
        raw([192, 0, 2, 5], (1000, 443)),
        per_cpu(value(2, 0, 20), value(1, 3, 10)),
        0,
    )
    .unwrap();
    old.insert(
        raw([198, 51, 100, 9], (7, 9)),
        per_cpu(value(0, 1, mecgw_ebpf::NONE), FlowValue::default()),
        0,
    )
    .unwrap();
    drop(old);
    let fp = accounting();
    let adopted = fp.adopt_flows(&dir).unwrap();
    assert_eq!(
        (
            adopted.flows,
            adopted.unreadable_flows,
            adopted.unreadable_maps
        ),
        (2, 0, 0)
    );
    // The new programs count one more LOCAL packet of the first flow (rule 10).
    let local = up(0x1001, &udp4("10.45.0.1", "192.0.2.5", 1000, 443, 20));
    fp.test_run(Direction::Uplink, &local, 1).unwrap();
    let got = sorted_flows(fp.harvest_flows().unwrap());
    let second_cpu = u64::from(cpus > 1);
    let want = sorted_flows(vec![
        FlowSample {
            key: key(1, "10.45.0.1", "192.0.2.5", 17, (1000, 443)),
            uplink: counter(3 + second_cpu, 48 * (3 + second_cpu) as usize),
            downlink: counter(3 * second_cpu, 78 * 3 * second_cpu as usize),
            rule: Some(10),
        },
        FlowSample {
            key: key(1, "10.45.0.1", "198.51.100.9", 17, (7, 9)),
            uplink: counter(0, 0),
            downlink: counter(1, 78),
            rule: None,
        },
    ]);
    assert_eq!(
        got, want,
        "the old counts, once, with the new packet's rule"
    );
    assert!(fp.harvest_flows().unwrap().is_empty());
    assert_eq!(fp.adopt_flows(&dir).unwrap().flows, 0, "read once");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_rule_is_that_of_the_last_uplink_decision() {
    // One CPU, so "last" is well defined (CPUs writing one slot at once race for it).
    pin_to_cpu(0);
    let fp = accounting();
    let to = |dst: &str| up(0x1001, &udp4("10.45.0.1", dst, 1, 2, 0));
    // Same 5-tuple, the tables change between packets: LOCAL (rule 10), then no rule.
    fp.judge(Direction::Uplink, &to("192.0.2.1")).unwrap();
    let mut t = tables().into_tables();
    t.rules.retain(|r| r.id != 10);
    fp.install(&mecgw::datapath::compile::compile(t).unwrap())
        .unwrap();
    assert_eq!(
        fp.judge(Direction::Uplink, &to("192.0.2.1"))
            .unwrap()
            .reason,
        Reason::NoRule
    );
    let got = fp.harvest_flows().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].uplink.packets, 2);
    assert_eq!(got[0].rule, None, "the last decision matched no rule");
    fp.judge(Direction::Uplink, &to("198.51.100.3")).unwrap();
    fp.install(&tables()).unwrap();
    fp.judge(Direction::Uplink, &to("198.51.100.3")).unwrap();
    let got = fp.harvest_flows().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rule, Some(20));
}

/// Tables for the verdict cache test: `TABLES`' sessions with `rules` instead of its rules.
fn with_rules(rules: &str) -> CompiledTables {
    let sessions = &TABLES[..TABLES.find("[[rules]]").unwrap()];
    mecgw::datapath::compile::from_toml(&tables_with(&format!("{sessions}{rules}")), "cache test")
        .unwrap()
}

/// A G-PDU of session 1 to 192.0.2.1 (or `dst`) with QFI `qfi`: one flow for a given `dst`.
fn up_qfi(dst: &str, qfi: u8) -> Vec<u8> {
    n3_v4(
        v4("198.18.1.1"),
        v4("198.18.0.1"),
        &gtp(
            255,
            0x1001,
            None,
            &[ul_container(qfi)],
            &udp4("10.45.0.1", dst, 4000, 443, 32),
        ),
    )
}

#[test]
fn a_flows_cached_classification_serves_its_later_packets_and_no_install_after_it() {
    // Each install moves the rules in the rule array, so that a classification kept from an
    // earlier install (a rule index) would name another rule, or none.
    const LOCAL: &str =
        "[[rules]]\nid = 10\npriority = 1\naction = \"LOCAL\"\ndst = [\"192.0.2.0/24\"]\n";
    const DROP: &str =
        "[[rules]]\nid = 10\npriority = 1\naction = \"DROP\"\ndst = [\"192.0.2.0/24\"]\n";
    // Outranks rule 10 and comes before it; matches other destinations.
    const ELSEWHERE: &str =
        "[[rules]]\nid = 7\npriority = 0\naction = \"PASSTHROUGH\"\ndst = [\"198.51.100.0/24\"]\n";
    // Outranks rule 10 for half of its destinations.
    const AHEAD: &str =
        "[[rules]]\nid = 5\npriority = 0\naction = \"PASSTHROUGH\"\ndst = [\"192.0.2.0/25\"]\n";
    // Matches only packets with QFI 9: the flow key does not hold the QFI.
    const QFI_9: &str =
        "[[rules]]\nid = 40\npriority = 0\naction = \"DROP\"\ndst = [\"192.0.2.0/24\"]\nqfi = 9\n";
    let (a9, a5, b9) = (
        up_qfi("192.0.2.1", 9),
        up_qfi("192.0.2.1", 5),
        up_qfi("192.0.2.200", 9),
    );
    // Each install, with the packets then sent and the reason each must get.
    type Step<'a> = (CompiledTables, Vec<(&'a Vec<u8>, Reason)>);
    let steps: Vec<Step> = vec![
        (with_rules(LOCAL), vec![(&a9, Reason::RuleLocal); 3]),
        // The flow's rule changes action and place in the array.
        (
            with_rules(&format!("{ELSEWHERE}{DROP}")),
            vec![(&a9, Reason::RuleDrop); 2],
        ),
        (
            with_rules(&format!("{LOCAL}{AHEAD}")),
            vec![(&a9, Reason::RulePassthrough), (&b9, Reason::RuleLocal)],
        ),
        // The same tables again: a new install all the same.
        (
            with_rules(&format!("{LOCAL}{AHEAD}")),
            vec![(&a9, Reason::RulePassthrough), (&b9, Reason::RuleLocal)],
        ),
        // One flow, its QFI alternating: rule 40 matches every other packet.
        (
            with_rules(&format!("{LOCAL}{QFI_9}")),
            vec![
                (&a9, Reason::RuleDrop),
                (&a5, Reason::RuleLocal),
                (&a9, Reason::RuleDrop),
                (&a5, Reason::RuleLocal),
                (&a9, Reason::RuleDrop),
            ],
        ),
        // No rule at all: the flow's cached rule must not survive.
        (with_rules(""), vec![(&a9, Reason::NoRule); 2]),
    ];
    for cache in [true, false] {
        let fp = FastPath::load_with(FastPathOptions {
            flow_accounting: true,
            verdict_cache: cache,
            ..FastPathOptions::default()
        })
        .expect("load (are we root?)");
        let mut packets = 0;
        for (step, (tables, frames)) in steps.iter().enumerate() {
            fp.install(tables).unwrap();
            let model = Model::new(tables);
            for (i, (frame, reason)) in frames.iter().enumerate() {
                let got = fp.judge(Direction::Uplink, frame).unwrap();
                let want = mecgw::datapath::Judged::from(model.uplink(frame));
                assert_eq!(got, want, "cache {cache}, step {step}, packet {i}");
                assert_eq!(
                    got.reason, *reason,
                    "cache {cache}, step {step}, packet {i}"
                );
                packets += 1;
            }
        }
        // Every packet was counted, against the flows it belongs to.
        let flows = fp.harvest_flows().unwrap();
        let counted: u64 = flows.iter().map(|f| f.uplink.packets).sum();
        assert_eq!(counted, packets, "cache {cache}: {flows:?}");
        assert_eq!(flows.len(), 2, "cache {cache}: two destinations, two flows");
    }
}

#[test]
fn harvests_during_traffic_lose_and_double_count_nothing() {
    let fp = accounting();
    // Three flows of session 1: LOCAL (rewrites, one packet a run), DROP and downlink
    // encapsulation (rewrites). The DROP frame is not rewritten, so a run may repeat it.
    let local = up(0x1001, &udp4("10.45.0.1", "192.0.2.5", 1000, 443, 20));
    let drop = up(0x1001, &udp4("10.45.0.1", "198.51.100.1", 1001, 80, 20));
    let encap = down(&udp4("192.0.2.5", "10.45.0.1", 443, 1000, 50));
    const ROUNDS: u64 = 300;
    const DROP_REPEAT: u32 = 7;
    let (fp, local, drop, encap) = (&fp, &local, &drop, &encap);
    let done = AtomicBool::new(false);
    let mut sums: HashMap<FlowKey, (Counter, Counter)> = HashMap::new();
    let mut harvests = 0;
    std::thread::scope(|s| {
        let senders: Vec<_> = (0..2)
            .map(|cpu| {
                s.spawn(move || {
                    // One sender per CPU: the harvest adds up both CPUs' values.
                    pin_to_cpu(cpu);
                    for _ in 0..ROUNDS {
                        fp.test_run(Direction::Uplink, local, 1).unwrap();
                        fp.test_run(Direction::Uplink, drop, DROP_REPEAT).unwrap();
                        fp.test_run(Direction::Downlink, encap, 1).unwrap();
                    }
                })
            })
            .collect();
        let watcher = s.spawn(|| {
            for t in senders {
                t.join().unwrap();
            }
            done.store(true, Ordering::SeqCst);
        });
        while !done.load(Ordering::SeqCst) {
            for sample in fp.harvest_flows().unwrap() {
                let e = sums.entry(sample.key).or_default();
                e.0 = e.0.plus(sample.uplink);
                e.1 = e.1.plus(sample.downlink);
            }
            harvests += 1;
        }
        watcher.join().unwrap();
    });
    for sample in fp.harvest_flows().unwrap() {
        let e = sums.entry(sample.key).or_default();
        e.0 = e.0.plus(sample.uplink);
        e.1 = e.1.plus(sample.downlink);
    }
    assert!(
        harvests >= 2,
        "the harvests ran during the traffic ({harvests})"
    );
    let n = 2 * ROUNDS;
    let l = |payload: usize| 20 + 8 + payload;
    let want: HashMap<FlowKey, (Counter, Counter)> = [
        (
            key(1, "10.45.0.1", "192.0.2.5", 17, (1000, 443)),
            (
                counter(n, n as usize * l(20)),
                counter(n, n as usize * l(50)),
            ),
        ),
        (
            key(1, "10.45.0.1", "198.51.100.1", 17, (1001, 80)),
            (
                counter(
                    n * u64::from(DROP_REPEAT),
                    (n * u64::from(DROP_REPEAT)) as usize * l(20),
                ),
                counter(0, 0),
            ),
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(sums, want, "after {harvests} harvests during the traffic");
    assert_eq!(fp.flow_losses().unwrap().refused_packets, 0);
    assert_eq!(fp.flow_losses().unwrap().failed_packets, 0);
}

#[test]
fn a_full_window_refuses_new_flows_keeps_the_others_and_counts_the_refused_packets() {
    let fp = accounting();
    let extra = 1_000u32;
    let sent = MAX_FLOWS + extra;
    let frame = |i: u32| {
        // Distinct flows: UE port and peer address vary.
        let peer = [192, 0, 2, (i % 200) as u8];
        let ip = ipv4(
            v4("10.45.0.1"),
            peer,
            17,
            64,
            0,
            &udp((i / 200) as u16, 443, &[]),
        );
        up(0x1001, &ip)
    };
    for i in 0..sent {
        fp.test_run(Direction::Uplink, &frame(i), 1).unwrap();
    }
    // A flow counted before the window filled up goes on being counted (one run each: a
    // LOCAL decision rewrites the frame, so a repeat would not see a G-PDU again).
    for _ in 0..2 {
        fp.test_run(Direction::Uplink, &frame(0), 1).unwrap();
    }
    let got = fp.harvest_flows().unwrap();
    let losses = fp.flow_losses().unwrap();
    assert_eq!(
        got.len(),
        MAX_FLOWS as usize,
        "the window holds max_flows flows"
    );
    assert_eq!(
        losses.refused_packets,
        u64::from(extra),
        "the packet of every flow beyond them is refused and counted"
    );
    let peer: std::net::IpAddr = "192.0.2.0".parse().unwrap();
    let first = got
        .iter()
        .find(|s| s.key.ue_port == 0 && s.key.peer == peer);
    assert_eq!(first.map(|s| s.uplink.packets), Some(3), "{first:?}");
    assert_eq!(
        got.iter().map(|s| s.uplink.packets).sum::<u64>(),
        u64::from(MAX_FLOWS) + 2
    );
    assert_eq!(losses.failed_packets, 0);
    // The next window has room again.
    fp.test_run(Direction::Uplink, &frame(sent - 1), 1).unwrap();
    assert_eq!(fp.harvest_flows().unwrap().len(), 1);
}

#[test]
fn with_accounting_off_nothing_is_counted() {
    let fp = FastPath::load().expect("load (are we root?)");
    fp.install(&tables()).unwrap();
    assert!(!fp.flow_accounting());
    for (direction, frame, reason) in traffic() {
        assert_eq!(fp.judge(direction, &frame).unwrap().reason, reason);
    }
    assert!(fp.harvest_flows().unwrap().is_empty());
    assert!(fp.harvest_flows().unwrap().is_empty());
    assert_eq!(fp.flow_losses().unwrap(), Default::default());
}
