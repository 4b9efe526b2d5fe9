//! Hot update under load: one thread keeps switching the fast path between two table sets
//! while others run packets through the kernel programs. Every output must be exactly what
//! the model gives for one of the two sets (never a mixture, never a half-written rule), and
//! the kernel's counters must add up to what the workers saw.
//!
//! Needs root (CAP_BPF). CI runs as root, so this is never skipped there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    sync::atomic::{AtomicBool, Ordering},
};

use mecgw::datapath::{CompiledTables, Direction, FastPath, FastPathOptions, Judged, model::Model};
use mecgw_ebpf::{Counter, Verdict};
use mecgw_tests::packet::*;

const COMMON: &str = r#"
[n3]
ifindex = 11
mac = "02:00:00:00:03:01"
next_hop_mac = "02:00:00:00:03:02"
ipv4 = "198.18.0.1"
ipv6 = "2001:db8:3::1"
mtu = 1500
"#;

/// Set A: rule 1 (LOCAL) outranks rule 2 (DROP); rule 3 passes 198.51.100.0/24 through;
/// sessions 1 and 2 exist.
const A: &str = r#"
[local]
ifindex = 12
mac = "02:00:00:00:0a:01"
next_hop_mac = "02:00:00:00:0a:02"

[[sessions]]
id = 1
uplink_teid = 0x100
downlink_teid = 0x200
ue_ipv4 = "10.45.0.1"
gnb = "198.18.1.1"
qfi = 9

[[sessions]]
id = 2
uplink_teid = 0x101
downlink_teid = 0x201
ue_ipv4 = "10.45.0.2"
gnb = "198.18.1.2"
qfi = 1

[[rules]]
id = 1
priority = 0
action = "LOCAL"
dst = ["192.0.2.0/24"]

[[rules]]
id = 2
priority = 1
action = "DROP"
dst = ["192.0.2.0/24"]

[[rules]]
id = 3
priority = 0
action = "PASSTHROUGH"
dst = ["198.51.100.0/24"]
"#;

/// Set B: the priorities of rules 1 and 2 swap (so their order in the rule array swaps), and
/// both fall behind rule 3 (so that no rule keeps its place in the array: an index cached
/// under A names another rule under B, and the other way round),
/// rule 3 becomes LOCAL, session 1 moves to another gNB and TEID, session 2 is gone, and the
/// local next hop changes.
const B: &str = r#"
[local]
ifindex = 13
mac = "02:00:00:00:0b:01"
next_hop_mac = "02:00:00:00:0b:02"

[[sessions]]
id = 1
uplink_teid = 0x100
downlink_teid = 0x300
ue_ipv4 = "10.45.0.1"
gnb = "2001:db8:3::7"
qfi = 5

[[rules]]
id = 1
priority = 2
action = "LOCAL"
dst = ["192.0.2.0/24"]

[[rules]]
id = 2
priority = 1
action = "DROP"
dst = ["192.0.2.0/24"]

[[rules]]
id = 3
priority = 0
action = "LOCAL"
dst = ["198.51.100.0/24"]
"#;

fn tables(which: &str) -> CompiledTables {
    mecgw::datapath::compile::from_toml(&format!("{COMMON}{which}"), "concurrency").unwrap()
}

fn packets() -> Vec<(Direction, Vec<u8>)> {
    let up = |teid: u32, src: &str, dst: &str| {
        let inner = ipv4(v4(src), v4(dst), 17, 64, 0, &udp(1, 53, b"concurrent"));
        n3_v4(
            v4("198.18.1.1"),
            v4("198.18.0.1"),
            &gtp(255, teid, None, &[ul_container(9)], &inner),
        )
    };
    let down = |dst: &str| {
        let mut f = eth(MAC_A, MAC_B, 0x0800);
        f.extend_from_slice(&ipv4(
            v4("192.0.2.10"),
            v4(dst),
            17,
            64,
            0,
            &udp(53, 1, b"reply"),
        ));
        f
    };
    vec![
        (Direction::Uplink, up(0x100, "10.45.0.1", "192.0.2.10")),
        (Direction::Uplink, up(0x100, "10.45.0.1", "198.51.100.1")),
        (Direction::Uplink, up(0x101, "10.45.0.2", "192.0.2.20")),
        (Direction::Downlink, down("10.45.0.1")),
        (Direction::Downlink, down("10.45.0.2")),
    ]
}

fn expect(model: &Model, direction: Direction, frame: &[u8]) -> Judged {
    Judged::from(match direction {
        Direction::Uplink => model.uplink(frame),
        Direction::Downlink => model.downlink(frame),
    })
}

#[test]
fn every_packet_is_judged_wholly_by_the_old_or_the_new_tables_and_counters_add_up() {
    let fp = FastPath::load().expect("load the XDP programs (are we root?)");
    judged_wholly_by_old_or_new(fp);
}

/// The same with flow accounting, so with the flow verdict cache: the workers repeat a few
/// flows, so most packets find their flow's classification cached, and every install must
/// make it stale for the very next packet.
#[test]
fn with_the_flow_verdict_cache_every_packet_is_judged_wholly_by_the_old_or_the_new_tables() {
    let fp = FastPath::load_with(FastPathOptions {
        flow_accounting: true,
        ..FastPathOptions::default()
    })
    .expect("load the XDP programs (are we root?)");
    judged_wholly_by_old_or_new(fp);
}

fn judged_wholly_by_old_or_new(fp: FastPath) {
    let (ta, tb) = (tables(A), tables(B));
    let (ma, mb) = (Model::new(&ta), Model::new(&tb));
    let packets = packets();
    let expected: Vec<(Judged, Judged)> = packets
        .iter()
        .map(|(d, f)| (expect(&ma, *d, f), expect(&mb, *d, f)))
        .collect();
    for (i, (a, b)) in expected.iter().enumerate() {
        assert_ne!(
            (a.verdict, &a.packet),
            (b.verdict, &b.packet),
            "packet {i} must tell A from B"
        );
    }

    fp.install(&ta).unwrap();
    let done = AtomicBool::new(false);
    const UPDATES: usize = 60;
    let results: Vec<Vec<(usize, bool)>> = std::thread::scope(|s| {
        let updater = s.spawn(|| {
            for i in 0..UPDATES {
                fp.install(if i % 2 == 0 { &tb } else { &ta }).unwrap();
            }
            done.store(true, Ordering::SeqCst);
        });
        let workers: Vec<_> = (0..3)
            .map(|w| {
                let (packets, expected, done, fp) = (&packets, &expected, &done, &fp);
                s.spawn(move || {
                    let mut seen = Vec::new();
                    let mut i = w;
                    // Keep going until the updates are over, and at least 2,000 packets.
                    while !done.load(Ordering::SeqCst) || seen.len() < 2000 {
                        let k = i % packets.len();
                        let (direction, frame) = &packets[k];
                        let out = fp.test_run(*direction, frame, 1).unwrap();
                        let verdict = Verdict::from_xdp_action(out.action).unwrap();
                        let (a, b) = &expected[k];
                        let is_a = verdict == a.verdict && out.data_out == a.packet;
                        let is_b = verdict == b.verdict && out.data_out == b.packet;
                        assert!(
                            is_a || is_b,
                            "packet {k}: output matches neither table set: {verdict:?} {:02x?}",
                            out.data_out
                        );
                        seen.push((k, is_a));
                        i += 1;
                    }
                    seen
                })
            })
            .collect();
        updater.join().unwrap();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });

    // Both table sets were really seen by the workers.
    let all: Vec<(usize, bool)> = results.into_iter().flatten().collect();
    let from_a = all.iter().filter(|(_, a)| *a).count();
    assert!(
        from_a > 0 && from_a < all.len(),
        "{from_a} of {} from A",
        all.len()
    );

    // Counters: what the kernel counted is exactly what the workers saw.
    let mut verdicts: HashMap<Verdict, u64> = HashMap::new();
    let mut rules: HashMap<u32, Counter> = HashMap::new();
    let mut sessions: HashMap<(u32, Direction), u64> = HashMap::new();
    for &(k, is_a) in &all {
        let want = if is_a { &expected[k].0 } else { &expected[k].1 };
        *verdicts.entry(want.verdict).or_default() += 1;
        let len = packets[k].1.len() as u64;
        if let Some(r) = want.rule {
            let c = rules.entry(r).or_default();
            c.packets += 1;
            c.bytes += len;
        }
        if let Some(s) = want.session {
            *sessions.entry((s, packets[k].0)).or_default() += 1;
        }
    }
    for (v, c) in fp.verdict_counters().unwrap() {
        assert_eq!(c.packets, verdicts.get(&v).copied().unwrap_or(0), "{v:?}");
    }
    let reasons: u64 = fp
        .reason_counters()
        .unwrap()
        .iter()
        .map(|(_, c)| c.packets)
        .sum();
    assert_eq!(reasons, all.len() as u64, "one reason per packet");
    for id in [1, 2, 3] {
        let got = fp.rule_counter(id).unwrap().unwrap();
        assert_eq!(
            got,
            rules.get(&id).copied().unwrap_or_default(),
            "rule {id}"
        );
    }
    // Session 2 left with B; its counters are gone with it. Session 1 stayed throughout.
    for direction in [Direction::Uplink, Direction::Downlink] {
        let got = fp.session_counter(1, direction).unwrap().unwrap();
        assert_eq!(
            got.packets,
            sessions.get(&(1, direction)).copied().unwrap_or(0),
            "{direction:?}"
        );
    }
    // What a scrape reads in batches is what the lookups one by one say (a rule and a
    // session that are not installed, 99, read 0 and add nothing).
    let batched = fp.rule_counters(&[1, 2, 3, 99]).unwrap();
    for (id, c) in batched {
        let one = fp.rule_counter(id).unwrap().unwrap_or_default();
        assert_eq!(c, one, "rule {id}");
    }
    let ids = [1, 2, 99];
    let totals = fp.session_totals(&ids).unwrap();
    for direction in [Direction::Uplink, Direction::Downlink] {
        let one_by_one = ids.iter().fold(Counter::default(), |sum, &id| {
            sum.plus(
                fp.session_counter(id, direction)
                    .unwrap()
                    .unwrap_or_default(),
            )
        });
        assert_eq!(
            totals[direction.index() as usize],
            one_by_one,
            "{direction:?}"
        );
        assert!(
            one_by_one.packets > 0,
            "{direction:?}: not a comparison of zeros"
        );
    }
}
