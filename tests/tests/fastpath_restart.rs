//! Counters across restarts: an instance that takes over from a previous one (its maps pinned,
//! its process gone, as after kill -9) carries the previous counters over by what they count
//! (verdict, reason, rule id, session id and direction), through a chain of instances, once,
//! and only for the rules and sessions its tables still have.
//!
//! Needs root (CAP_BPF). CI runs as root, so this is never skipped there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use mecgw::datapath::{
    CompiledTables, Counter, Direction, FastPath, FastPathOptions, Reason, Verdict,
};
use mecgw_tests::{packet::*, tables_with};

const SESSION_1: &str = r#"
[[sessions]]
id = 1
uplink_teid = 0x1001
downlink_teid = 0x2001
ue_ipv4 = "10.45.0.1"
gnb = "198.18.1.1"
qfi = 9
"#;

const SESSION_2: &str = r#"
[[sessions]]
id = 2
uplink_teid = 0x1002
downlink_teid = 0x2002
ue_ipv4 = "10.45.0.2"
gnb = "198.18.1.2"
qfi = 5
"#;

const LOCAL_RULE: &str = r#"
[[rules]]
id = 10
priority = 0
action = "LOCAL"
dst = ["192.0.2.0/24"]
"#;

const DROP_RULE: &str = r#"
[[rules]]
id = 20
priority = 0
action = "DROP"
dst = ["198.51.100.0/24"]
"#;

fn tables(entries: &[&str]) -> CompiledTables {
    mecgw::datapath::compile::from_toml(&tables_with(&entries.concat()), "restart test").unwrap()
}

fn up(teid: u32, dst: &str) -> Vec<u8> {
    let inner = ipv4(
        v4("10.45.0.1"),
        v4(dst),
        17,
        64,
        0,
        &udp(40000, 443, &[0x5a; 30]),
    );
    n3_v4(
        v4("198.18.1.1"),
        v4("198.18.0.1"),
        &gtp(255, teid, None, &[ul_container(9)], &inner),
    )
}

fn down(ue: &str) -> Vec<u8> {
    let mut f = eth(MAC_A, MAC_B, 0x0800);
    f.extend_from_slice(&ipv4(
        v4("192.0.2.5"),
        v4(ue),
        17,
        64,
        0,
        &udp(443, 40000, &[0x5a; 50]),
    ));
    f
}

/// Everything an operator reads off the fast path.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    verdicts: Vec<(Verdict, Counter)>,
    reasons: Vec<(Reason, Counter)>,
    rule_10: Option<Counter>,
    rule_20: Option<Counter>,
    session_1: (Option<Counter>, Option<Counter>),
    session_2: (Option<Counter>, Option<Counter>),
}

fn seen(fp: &FastPath) -> Seen {
    let session = |id| {
        (
            fp.session_counter(id, Direction::Uplink).unwrap(),
            fp.session_counter(id, Direction::Downlink).unwrap(),
        )
    };
    let seen = Seen {
        verdicts: fp.verdict_counters().unwrap(),
        reasons: fp.reason_counters().unwrap(),
        rule_10: fp.rule_counter(10).unwrap(),
        rule_20: fp.rule_counter(20).unwrap(),
        session_1: session(1),
        session_2: session(2),
    };
    // What a scrape reads in batches (carried counts included) is the same.
    assert_eq!(
        fp.rule_counters(&[10, 20]).unwrap(),
        vec![
            (10, seen.rule_10.unwrap_or_default()),
            (20, seen.rule_20.unwrap_or_default())
        ]
    );
    let sum =
        |a: Option<Counter>, b: Option<Counter>| a.unwrap_or_default().plus(b.unwrap_or_default());
    assert_eq!(
        fp.session_totals(&[1, 2]).unwrap(),
        [
            sum(seen.session_1.0, seen.session_2.0),
            sum(seen.session_1.1, seen.session_2.1)
        ]
    );
    seen
}

fn reason(s: &Seen, r: Reason) -> u64 {
    s.reasons.iter().find(|(x, _)| *x == r).unwrap().1.packets
}

fn packets(c: Option<Counter>) -> Option<u64> {
    c.map(|c| c.packets)
}

fn instance(root: &Path, name: &str, entries: &[&str]) -> (FastPath, PathBuf) {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let fp = FastPath::load_pinned(FastPathOptions::default(), &dir).expect("load (root?)");
    fp.install(&tables(entries)).unwrap();
    (fp, dir)
}

#[test]
fn counters_are_carried_over_by_id_through_a_chain_of_instances_once() {
    let root = Path::new(mecgw_tests::testbed::pin_root().unwrap())
        .join(format!("fastpath-restart-{}", std::process::id()));
    let all = [SESSION_1, SESSION_2, LOCAL_RULE, DROP_RULE];

    // A counts: 3 LOCAL (rule 10, session 1), 2 DROP (rule 20), 1 downlink to session 2,
    // 1 G-PDU of an unknown TEID.
    let (a, dir_a) = instance(&root, "a", &all);
    for _ in 0..3 {
        a.judge(Direction::Uplink, &up(0x1001, "192.0.2.5"))
            .unwrap();
    }
    for _ in 0..2 {
        a.judge(Direction::Uplink, &up(0x1001, "198.51.100.1"))
            .unwrap();
    }
    a.judge(Direction::Downlink, &down("10.45.0.2")).unwrap();
    a.judge(Direction::Uplink, &up(0x7777, "192.0.2.5"))
        .unwrap();
    let by_a = seen(&a);
    assert_eq!(reason(&by_a, Reason::RuleLocal), 3);
    assert_eq!(packets(by_a.rule_20), Some(2));
    assert_eq!(packets(by_a.session_1.0), Some(5));
    assert_eq!(packets(by_a.session_2.1), Some(1));
    // Its process ends without a word (kill -9): the pinned maps are all that is left.
    drop(a);

    // B's tables no longer have rule 20: its count is dropped, everything else carried.
    let (b, dir_b) = instance(&root, "b", &[SESSION_1, SESSION_2, LOCAL_RULE]);
    let adopted = b
        .adopt_counters(&dir_a)
        .unwrap()
        .expect("A pinned its counters");
    assert_eq!(adopted.packets, 7, "{adopted:?}");
    assert_eq!((adopted.rules, adopted.dropped), (1, 1), "{adopted:?}");
    // Session 1 uplink, session 2 downlink (the other directions counted nothing).
    assert_eq!(adopted.sessions, 2, "{adopted:?}");
    let by_b = seen(&b);
    assert_eq!(by_b.verdicts, by_a.verdicts);
    assert_eq!(by_b.reasons, by_a.reasons);
    assert_eq!(by_b.rule_10, by_a.rule_10);
    assert_eq!(by_b.rule_20, None, "rule 20 is not in B's tables");
    assert_eq!(by_b.session_1, by_a.session_1);
    assert_eq!(by_b.session_2, by_a.session_2);
    // A second adoption (a restart that died before removing A's pins) adds nothing.
    let again = b.adopt_counters(&dir_a).unwrap().unwrap();
    assert_eq!(again.packets + again.rules + again.sessions, 0, "{again:?}");
    assert_eq!(seen(&b), by_b);
    // B counts on top of what it carried.
    for _ in 0..2 {
        b.judge(Direction::Uplink, &up(0x1001, "192.0.2.5"))
            .unwrap();
    }
    let by_b = seen(&b);
    assert_eq!(packets(by_b.rule_10), Some(5));
    assert_eq!(reason(&by_b, Reason::RuleLocal), 5);
    drop(b);

    // C adopts B, which holds A's counts too; rule 20 comes back and starts from zero.
    let (c, _dir_c) = instance(&root, "c", &all);
    let adopted = c.adopt_counters(&dir_b).unwrap().unwrap();
    assert_eq!((adopted.packets, adopted.dropped), (9, 0), "{adopted:?}");
    let by_c = seen(&c);
    assert_eq!(by_c.verdicts, by_b.verdicts);
    assert_eq!(by_c.reasons, by_b.reasons);
    assert_eq!(packets(by_c.rule_10), Some(5));
    assert_eq!(packets(by_c.rule_20), Some(0));
    assert_eq!(packets(by_c.session_1.0), Some(7));
    assert_eq!(packets(by_c.session_2.1), Some(1));

    // A session removed from the tables loses its carried count; back, it starts from zero.
    c.install(&tables(&[SESSION_1, LOCAL_RULE, DROP_RULE]))
        .unwrap();
    assert_eq!(seen(&c).session_2, (None, None));
    c.install(&tables(&all)).unwrap();
    assert_eq!(packets(seen(&c).session_2.1), Some(0));
    assert_eq!(
        packets(seen(&c).session_1.0),
        Some(7),
        "session 1 kept its count"
    );
    assert_eq!(
        reason(&seen(&c), Reason::RuleLocal),
        5,
        "reason totals are not tied to tables"
    );

    // A directory without counters (a build from before they were pinned): nothing to carry.
    let older = root.join("older");
    std::fs::create_dir_all(&older).unwrap();
    assert_eq!(c.adopt_counters(&older).unwrap(), None);
    drop(c);
    std::fs::remove_dir_all(&root).unwrap();
}
