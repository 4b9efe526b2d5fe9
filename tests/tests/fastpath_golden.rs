//! Golden tests of the XDP fast path: hand-assembled packets through BPF_PROG_TEST_RUN, with
//! byte-exact expected outputs built independently of the code under test (see
//! `mecgw_tests::packets`), and the same cases through the reference model.
//!
//! Needs root (CAP_BPF). CI runs as root, so this is never skipped there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;

use mecgw::datapath::{
    BenchTarget, CompiledTables, Direction, FastPath, Judged,
    model::{Model, TEST_RUN_LINEAR, test_run_linear},
};
use mecgw_ebpf::{Reason, Verdict};
use mecgw_tests::packet::*;

const TABLES: &str = r#"
[n3]
ifindex = 11
mac = "02:00:00:00:03:01"
next_hop_mac = "02:00:00:00:03:02"
ipv4 = "198.18.0.1"
ipv6 = "2001:db8:3::1"
mtu = 1500

[local]
ifindex = 12
mac = "02:00:00:00:04:01"
next_hop_mac = "02:00:00:00:04:02"

[defaults]
unknown_teid = "pass"
spoofed_source = "drop"
malformed = "drop"

[[sessions]]
id = 1
uplink_teid = 0x100
downlink_teid = 0x200
ue_ipv4 = "10.45.0.1"
ue_ipv6 = "2001:db8:45:1::/64"
gnb = "198.18.1.1"
qfi = 9

[[sessions]]
id = 2
uplink_teid = 0x101
downlink_teid = 0x201
ue_ipv4 = "10.45.0.2"
ue_ipv6 = "2001:db8:45:2::/64"
gnb = "2001:db8:3::100"
qfi = 5

[[rules]]
id = 10
priority = 10
action = "LOCAL"
dst = ["192.0.2.0/24", "2001:db8:e::/48"]

[[rules]]
id = 11
priority = 5
action = "DROP"
dst = ["192.0.2.66/32"]

[[rules]]
id = 12
priority = 20
action = "DROP"
dst = ["192.0.2.77/32"]

[[rules]]
id = 13
priority = 1
action = "LOCAL"
dst = ["198.51.100.0/24"]
protocols = ["tcp", "udp"]
dst_ports = ["8000-8100"]

[[rules]]
id = 14
priority = 2
action = "DROP"
dst = ["198.51.100.0/24"]
protocols = ["icmp"]

[[rules]]
id = 15
priority = 3
action = "PASSTHROUGH"
dst = ["198.51.100.0/24"]

[[rules]]
id = 16
priority = 1
action = "LOCAL"
dst = ["203.0.113.0/24"]
qfi = 9

[[rules]]
id = 17
priority = 2
action = "DROP"
dst = ["203.0.113.0/24"]
teid = 0x101

[[rules]]
id = 18
priority = 0
state = "INACTIVE"
action = "DROP"
dst = ["203.0.113.0/24"]

[[rules]]
id = 19
priority = 1
action = "LOCAL"
dst = ["2001:db8:f::/48"]
protocols = ["udp"]
dst_ports = ["8000-8100"]

[[rules]]
id = 20
priority = 2
action = "DROP"
dst = ["2001:db8:f::/48"]
protocols = [50]

[[rules]]
id = 21
priority = 3
action = "PASSTHROUGH"
dst = ["2001:db8:f::/48"]
"#;

const LOCAL_MAC: [u8; 6] = [2, 0, 0, 0, 4, 1];
const LOCAL_NEXT_HOP: [u8; 6] = [2, 0, 0, 0, 4, 2];
const N3_MAC: [u8; 6] = [2, 0, 0, 0, 3, 1];
const N3_NEXT_HOP: [u8; 6] = [2, 0, 0, 0, 3, 2];
const GNB1: &str = "198.18.1.1";
const GNB2: &str = "2001:db8:3::100";
const UE1: &str = "10.45.0.1";
const UE1_V6: &str = "2001:db8:45:1::7";
const UE2: &str = "10.45.0.2";
const UE2_V6: &str = "2001:db8:45:2::9";

fn tables() -> CompiledTables {
    mecgw::datapath::compile::from_toml(TABLES, "golden").unwrap()
}

/// One fast path for the whole file, loaded with the golden tables.
fn fast_path() -> &'static FastPath {
    static FP: OnceLock<FastPath> = OnceLock::new();
    FP.get_or_init(|| {
        let fp = FastPath::load().expect("load the XDP programs (are we root?)");
        fp.install(&tables()).unwrap();
        fp
    })
}

fn model() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| Model::new(&tables()))
}

fn judged(
    verdict: Verdict,
    reason: Reason,
    rule: Option<u32>,
    session: Option<u32>,
    packet: Vec<u8>,
) -> Judged {
    Judged {
        verdict,
        reason,
        rule,
        session,
        pdr: None,
        packet,
    }
}

/// Runs `frame` through the kernel and the model; both must give exactly `want`.
fn check(direction: Direction, frame: &[u8], want: &Judged) {
    let kernel = fast_path().judge(direction, frame).unwrap();
    assert_eq!(&kernel, want, "kernel, {direction:?}, frame {frame:02x?}");
    let model = match direction {
        Direction::Uplink => model().uplink_split(frame, test_run_linear(frame.len())),
        Direction::Downlink => model().downlink(frame),
    };
    assert_eq!(
        &Judged::from(model),
        want,
        "model, {direction:?}, frame {frame:02x?}"
    );
}

fn unchanged(
    frame: &[u8],
    verdict: Verdict,
    reason: Reason,
    rule: Option<u32>,
    session: Option<u32>,
) -> Judged {
    judged(verdict, reason, rule, session, frame.to_vec())
}

/// What LOCAL must emit: the next-hop Ethernet header and the inner packet, TTL - 1.
fn decapsulated(inner: &[u8]) -> Vec<u8> {
    let ethertype = if inner[0] >> 4 == 4 { 0x0800 } else { 0x86dd };
    let mut f = eth(LOCAL_NEXT_HOP, LOCAL_MAC, ethertype);
    f.extend_from_slice(&ttl_minus_one(inner));
    f
}

fn local(inner: &[u8], rule: u32, session: u32) -> Judged {
    judged(
        Verdict::Redirect,
        Reason::RuleLocal,
        Some(rule),
        Some(session),
        decapsulated(inner),
    )
}

fn udp4_inner(src: &str, dst: &str, dport: u16) -> Vec<u8> {
    ipv4(
        v4(src),
        v4(dst),
        17,
        64,
        0,
        &udp(40000, dport, b"hello edge"),
    )
}

fn gpdu_v4(teid: u32, exts: &[Ext], inner: &[u8]) -> Vec<u8> {
    n3_v4(
        v4(GNB1),
        v4("198.18.0.1"),
        &gtp(255, teid, None, exts, inner),
    )
}

// ---------------------------------------------------------------- uplink: outer and inner

#[test]
fn ipv4_outer_ipv4_inner_local_is_decapsulated_with_ttl_decremented() {
    let inner = udp4_inner(UE1, "192.0.2.10", 53);
    let frame = gpdu_v4(0x100, &[ul_container(9)], &inner);
    check(Direction::Uplink, &frame, &local(&inner, 10, 1));
}

#[test]
fn ipv6_outer_ipv6_inner_local() {
    let inner = ipv6(v6(UE1_V6), v6("2001:db8:e::5"), 6, 64, &tcp(40000, 443));
    let frame = n3_v6(
        v6(GNB2),
        v6("2001:db8:3::1"),
        &gtp(255, 0x100, None, &[ul_container(9)], &inner),
    );
    check(Direction::Uplink, &frame, &local(&inner, 10, 1));
}

#[test]
fn ipv4_outer_ipv6_inner_and_ipv6_outer_ipv4_inner() {
    let inner6 = ipv6(v6(UE2_V6), v6("2001:db8:e::1"), 17, 9, &udp(1, 2, b"x"));
    let frame = gpdu_v4(0x101, &[], &inner6);
    check(Direction::Uplink, &frame, &local(&inner6, 10, 2));

    let inner4 = udp4_inner(UE2, "192.0.2.200", 9);
    let frame = n3_v6(
        v6(GNB2),
        v6("2001:db8:3::1"),
        &gtp(255, 0x101, None, &[ul_container(5)], &inner4),
    );
    check(Direction::Uplink, &frame, &local(&inner4, 10, 2));
}

// ---------------------------------------------------------------- GTP-U optional fields and extension headers

#[test]
fn sequence_number_without_extension_headers_is_skipped_exactly() {
    // S=1, E=0: 4 optional bytes, no container, so no QFI.
    let inner = udp4_inner(UE1, "192.0.2.10", 53);
    let frame = n3_v4(
        v4(GNB1),
        v4("198.18.0.1"),
        &gtp(255, 0x100, Some(0x4242), &[], &inner),
    );
    assert_eq!(frame[42] & 0x07, 0x02, "S=1, E=0");
    check(Direction::Uplink, &frame, &local(&inner, 10, 1));

    // Rule 16 wants QFI 9; without a container it does not match, and nothing else does.
    let inner = udp4_inner(UE1, "203.0.113.5", 53);
    let frame = n3_v4(
        v4(GNB1),
        v4("198.18.0.1"),
        &gtp(255, 0x100, Some(7), &[], &inner),
    );
    check(
        Direction::Uplink,
        &frame,
        &unchanged(&frame, Verdict::Pass, Reason::NoRule, None, Some(1)),
    );
}

#[test]
fn qfi_is_found_in_the_middle_of_a_chain_of_extension_headers() {
    let inner = udp4_inner(UE1, "203.0.113.5", 53);
    let udp_port = Ext {
        kind: 0x40,
        content: vec![0x08, 0x68],
    };
    let long_pdcp = Ext {
        kind: 0x82,
        content: vec![0, 1, 2, 3, 4, 5],
    };
    let frame = gpdu_v4(
        0x100,
        &[udp_port.clone(), ul_container(9), long_pdcp.clone()],
        &inner,
    );
    check(Direction::Uplink, &frame, &local(&inner, 16, 1));

    // Four headers is the limit and still fine; a wrong QFI falls through to no rule.
    let frame = gpdu_v4(
        0x100,
        &[
            udp_port.clone(),
            long_pdcp.clone(),
            udp_port.clone(),
            ul_container(8),
        ],
        &inner,
    );
    check(
        Direction::Uplink,
        &frame,
        &unchanged(&frame, Verdict::Pass, Reason::NoRule, None, Some(1)),
    );
}

#[test]
fn a_fifth_extension_header_is_an_over_long_chain() {
    let inner = udp4_inner(UE1, "203.0.113.5", 53);
    let e = Ext {
        kind: 0x40,
        content: vec![0x08, 0x68],
    };
    let frame = gpdu_v4(
        0x100,
        &[e.clone(), e.clone(), e.clone(), e.clone(), ul_container(9)],
        &inner,
    );
    check(
        Direction::Uplink,
        &frame,
        &unchanged(&frame, Verdict::Drop, Reason::ExtChainTooLong, None, None),
    );
}

#[test]
fn uplink_and_downlink_pdu_session_containers_both_give_the_qfi() {
    let inner = udp4_inner(UE1, "203.0.113.5", 53);
    for container in [
        ul_container(9),
        dl_container(9),
        ul_container(0x40 | 9),
        dl_container(0x80 | 9),
    ] {
        // The high bits of the QFI octet are flags (PPP/RQI), not part of the QFI.
        let frame = gpdu_v4(0x100, &[container], &inner);
        check(Direction::Uplink, &frame, &local(&inner, 16, 1));
    }
}

#[test]
fn teid_filter_selects_its_session_only() {
    let inner = udp4_inner(UE2, "203.0.113.5", 53);
    let frame = gpdu_v4(0x101, &[ul_container(5)], &inner);
    check(
        Direction::Uplink,
        &frame,
        &unchanged(&frame, Verdict::Drop, Reason::RuleDrop, Some(17), Some(2)),
    );
}

// ---------------------------------------------------------------- truncation and malformed GTP-U

/// The kernel refuses to test-run a frame shorter than an Ethernet header (no NIC delivers
/// one); the model calls it not GTP-U.
fn short_frames_cannot_be_test_run(frame: &[u8]) {
    for n in 0..14 {
        assert!(
            fast_path().judge(Direction::Uplink, &frame[..n]).is_err(),
            "{n} bytes"
        );
        let m = model().uplink(&frame[..n]);
        assert_eq!((m.verdict, m.reason), (Verdict::Pass, Reason::NotGtp));
    }
}

#[test]
fn every_truncation_of_a_valid_packet_has_a_defined_verdict() {
    let inner = udp4_inner(UE1, "192.0.2.10", 53);
    let frame = gpdu_v4(0x100, &[ul_container(9)], &inner);
    short_frames_cannot_be_test_run(&frame);
    for n in 14..frame.len() {
        let cut = &frame[..n];
        // Until the UDP header is complete we cannot tell it is GTP-U: pass to the kernel.
        // After that the IP/UDP lengths disagree with the frame: malformed, dropped.
        let want = if n < 14 + 20 + 8 {
            unchanged(cut, Verdict::Pass, Reason::NotGtp, None, None)
        } else {
            unchanged(cut, Verdict::Drop, Reason::MalformedGtp, None, None)
        };
        check(Direction::Uplink, cut, &want);
    }
    check(Direction::Uplink, &frame, &local(&inner, 10, 1));
}

#[test]
fn every_truncation_of_a_valid_ipv6_packet_has_a_defined_verdict() {
    let inner = ipv6(v6(UE1_V6), v6("2001:db8:e::5"), 6, 64, &tcp(1, 443));
    let frame = n3_v6(
        v6(GNB2),
        v6("2001:db8:3::1"),
        &gtp(255, 0x100, Some(1), &[ul_container(9)], &inner),
    );
    for n in 14..frame.len() {
        let cut = &frame[..n];
        let want = if n < 14 + 40 + 8 {
            unchanged(cut, Verdict::Pass, Reason::NotGtp, None, None)
        } else {
            unchanged(cut, Verdict::Drop, Reason::MalformedGtp, None, None)
        };
        check(Direction::Uplink, cut, &want);
    }
}

#[test]
fn malformed_gtp_u_is_counted_and_dropped_by_default() {
    let inner = udp4_inner(UE1, "192.0.2.10", 53);
    let good = gpdu_v4(0x100, &[ul_container(9)], &inner);
    let gtp_at = 14 + 20 + 8;

    let mut version2 = good.clone();
    version2[gtp_at] = (version2[gtp_at] & 0x1f) | 0x40;
    let mut gtp_len = good.clone();
    gtp_len[gtp_at + 3] -= 1;
    let mut pt0 = good.clone();
    pt0[gtp_at] &= !0x10;
    let mut ext_len0 = good.clone();
    ext_len0[gtp_at + 12] = 0;
    let mut ext_too_long = good.clone();
    ext_too_long[gtp_at + 12] = 9;
    for frame in [version2, gtp_len, pt0, ext_len0, ext_too_long] {
        check(
            Direction::Uplink,
            &frame,
            &unchanged(&frame, Verdict::Drop, Reason::MalformedGtp, None, None),
        );
    }

    let inner_at = gtp_at + 16;
    let mut inner_len = good.clone();
    inner_len[inner_at + 3] += 1;
    let mut inner_version = good.clone();
    inner_version[inner_at] = 0x55;
    let mut inner_ihl = good.clone();
    inner_ihl[inner_at] = 0x44;
    for frame in [inner_len, inner_version, inner_ihl] {
        check(
            Direction::Uplink,
            &frame,
            &unchanged(&frame, Verdict::Drop, Reason::MalformedInner, None, None),
        );
    }
    // An empty G-PDU has no inner packet at all.
    let empty = gpdu_v4(0x100, &[], &[]);
    check(
        Direction::Uplink,
        &empty,
        &unchanged(&empty, Verdict::Drop, Reason::MalformedInner, None, None),
    );
}

// ---------------------------------------------------------------- not ours: passed untouched

#[test]
fn non_gtp_traffic_and_gtp_signalling_pass_untouched() {
    let mut dns = eth(MAC_A, MAC_B, 0x0800);
    dns.extend_from_slice(&udp4_inner("198.18.1.1", "198.18.0.1", 53));
    let mut arp = eth([0xff; 6], MAC_B, 0x0806);
    arp.extend_from_slice(&[
        0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 198, 18, 1, 1, 0, 0, 0, 0, 0, 0, 198, 18, 0, 1,
    ]);
    let mut tcp_to_2152 = eth(MAC_A, MAC_B, 0x0800);
    tcp_to_2152.extend_from_slice(&ipv4(
        v4(GNB1),
        v4("198.18.0.1"),
        6,
        64,
        0,
        &tcp(2152, 2152),
    ));
    // An outer fragment is for the kernel to reassemble.
    let inner = udp4_inner(UE1, "192.0.2.10", 53);
    let mut outer_fragment = eth(MAC_A, MAC_B, 0x0800);
    outer_fragment.extend_from_slice(&ipv4(
        v4(GNB1),
        v4("198.18.0.1"),
        17,
        64,
        0x2000,
        &udp(2152, 2152, &gtp(255, 0x100, None, &[], &inner)),
    ));
    for frame in [dns, arp, tcp_to_2152] {
        check(
            Direction::Uplink,
            &frame,
            &unchanged(&frame, Verdict::Pass, Reason::NotGtp, None, None),
        );
    }
    // Passed as well, and counted apart (outer_ipv6_extension_headers_… has more).
    check(
        Direction::Uplink,
        &outer_fragment,
        &unchanged(
            &outer_fragment,
            Verdict::Pass,
            Reason::OuterFragment,
            None,
            None,
        ),
    );

    let echo = n3_v4(v4(GNB1), v4("198.18.0.1"), &gtp(1, 0, Some(1), &[], &[]));
    let echo_response = n3_v4(
        v4(GNB1),
        v4("198.18.0.1"),
        &gtp(2, 0, Some(1), &[], &[14, 0]),
    );
    let end_marker = n3_v4(v4(GNB1), v4("198.18.0.1"), &gtp(254, 0x100, None, &[], &[]));
    let error_indication = n3_v4(
        v4(GNB1),
        v4("198.18.0.1"),
        &gtp(26, 0, Some(1), &[], &[16, 0, 0, 1, 0]),
    );
    for frame in [echo, echo_response, end_marker, error_indication] {
        check(
            Direction::Uplink,
            &frame,
            &unchanged(&frame, Verdict::Pass, Reason::GtpSignalling, None, None),
        );
    }
}

// ---------------------------------------------------------------- sessions and defaults

#[test]
fn unknown_teid_passes_and_spoofed_source_drops_by_default() {
    let inner = udp4_inner(UE1, "192.0.2.10", 53);
    let frame = gpdu_v4(0x999, &[], &inner);
    check(
        Direction::Uplink,
        &frame,
        &unchanged(&frame, Verdict::Pass, Reason::UnknownTeid, None, None),
    );

    // Session 1's TEID carrying session 2's UE address, and an address outside any UE.
    for src in [UE2, "10.45.0.99"] {
        let inner = udp4_inner(src, "192.0.2.10", 53);
        let frame = gpdu_v4(0x100, &[], &inner);
        check(
            Direction::Uplink,
            &frame,
            &unchanged(&frame, Verdict::Drop, Reason::SpoofedSource, None, Some(1)),
        );
    }
    // IPv6: anything inside the UE's /64 is the UE; outside is spoofed.
    let inner = ipv6(
        v6("2001:db8:45:1:ffff::1"),
        v6("2001:db8:e::5"),
        17,
        64,
        &udp(1, 2, b""),
    );
    let frame = gpdu_v4(0x100, &[], &inner);
    check(Direction::Uplink, &frame, &local(&inner, 10, 1));
    let inner = ipv6(
        v6("2001:db8:45:3::1"),
        v6("2001:db8:e::5"),
        17,
        64,
        &udp(1, 2, b""),
    );
    let frame = gpdu_v4(0x100, &[], &inner);
    check(
        Direction::Uplink,
        &frame,
        &unchanged(&frame, Verdict::Drop, Reason::SpoofedSource, None, Some(1)),
    );
}

#[test]
fn expiring_ttl_goes_to_the_kernel_unchanged() {
    for ttl in [0, 1] {
        let inner = ipv4(v4(UE1), v4("192.0.2.10"), 17, ttl, 0, &udp(1, 2, b"x"));
        let frame = gpdu_v4(0x100, &[], &inner);
        check(
            Direction::Uplink,
            &frame,
            &unchanged(&frame, Verdict::Pass, Reason::TtlExpired, Some(10), Some(1)),
        );
    }
    let inner = ipv6(v6(UE1_V6), v6("2001:db8:e::5"), 17, 1, &udp(1, 2, b""));
    let frame = gpdu_v4(0x100, &[], &inner);
    check(
        Direction::Uplink,
        &frame,
        &unchanged(&frame, Verdict::Pass, Reason::TtlExpired, Some(10), Some(1)),
    );
    // TTL 2 is forwarded with TTL 1.
    let inner = ipv4(v4(UE1), v4("192.0.2.10"), 17, 2, 0, &udp(1, 2, b"x"));
    let frame = gpdu_v4(0x100, &[], &inner);
    check(Direction::Uplink, &frame, &local(&inner, 10, 1));
}

// ---------------------------------------------------------------- rules: precedence, protocols, ports, fragments

#[test]
fn priority_beats_prefix_length() {
    // 192.0.2.66/32 (DROP, priority 5) beats 192.0.2.0/24 (LOCAL, priority 10).
    let inner = udp4_inner(UE1, "192.0.2.66", 53);
    let frame = gpdu_v4(0x100, &[], &inner);
    check(
        Direction::Uplink,
        &frame,
        &unchanged(&frame, Verdict::Drop, Reason::RuleDrop, Some(11), Some(1)),
    );
    // 192.0.2.77/32 (DROP, priority 20) is more specific but loses to the /24 (priority 10).
    let inner = udp4_inner(UE1, "192.0.2.77", 53);
    let frame = gpdu_v4(0x100, &[], &inner);
    check(Direction::Uplink, &frame, &local(&inner, 10, 1));
    // Nothing covers 8.8.8.8: passthrough.
    let inner = udp4_inner(UE1, "8.8.8.8", 53);
    let frame = gpdu_v4(0x100, &[], &inner);
    check(
        Direction::Uplink,
        &frame,
        &unchanged(&frame, Verdict::Pass, Reason::NoRule, None, Some(1)),
    );
}

#[test]
fn protocols_ports_and_fragments() {
    let dst = v4("198.51.100.7");
    let cases: Vec<(Vec<u8>, Judged)> = vec![];
    drop(cases);
    let tcp_in = ipv4(v4(UE1), dst, 6, 64, 0, &tcp(1234, 8050));
    let frame = gpdu_v4(0x100, &[], &tcp_in);
    check(Direction::Uplink, &frame, &local(&tcp_in, 13, 1));

    let udp_in = ipv4(v4(UE1), dst, 17, 64, 0, &udp(1234, 8100, b"q"));
    let frame = gpdu_v4(0x100, &[], &udp_in);
    check(Direction::Uplink, &frame, &local(&udp_in, 13, 1));

    let udp_out_of_range = ipv4(v4(UE1), dst, 17, 64, 0, &udp(1234, 8101, b"q"));
    let frame = gpdu_v4(0x100, &[], &udp_out_of_range);
    check(
        Direction::Uplink,
        &frame,
        &unchanged(
            &frame,
            Verdict::Pass,
            Reason::RulePassthrough,
            Some(15),
            Some(1),
        ),
    );

    let icmp = ipv4(v4(UE1), dst, 1, 64, 0, &icmp_echo());
    let frame = gpdu_v4(0x100, &[], &icmp);
    check(
        Direction::Uplink,
        &frame,
        &unchanged(&frame, Verdict::Drop, Reason::RuleDrop, Some(14), Some(1)),
    );

    // Fragments never match a port filter (first fragment with MF, and a later fragment):
    // every fragment of a datagram gets the same treatment.
    for frag in [0x2000, 0x0010, 0x2010] {
        let f = ipv4(v4(UE1), dst, 17, 64, frag, &udp(1234, 8050, b"q"));
        let frame = gpdu_v4(0x100, &[], &f);
        check(
            Direction::Uplink,
            &frame,
            &unchanged(
                &frame,
                Verdict::Pass,
                Reason::RulePassthrough,
                Some(15),
                Some(1),
            ),
        );
    }
    // DF alone is not a fragment.
    let df = ipv4(v4(UE1), dst, 17, 64, 0x4000, &udp(1234, 8050, b"q"));
    let frame = gpdu_v4(0x100, &[], &df);
    check(Direction::Uplink, &frame, &local(&df, 13, 1));
    // A UDP header cut short has no ports.
    let short = ipv4(v4(UE1), dst, 17, 64, 0, &[0x04, 0xd2, 0x1f]);
    let frame = gpdu_v4(0x100, &[], &short);
    check(
        Direction::Uplink,
        &frame,
        &unchanged(
            &frame,
            Verdict::Pass,
            Reason::RulePassthrough,
            Some(15),
            Some(1),
        ),
    );
}

// ---------------------------------------------------------------- framing: VLAN and padding

#[test]
fn vlan_tagged_uplink_is_decapsulated_to_an_untagged_frame() {
    let inner = udp4_inner(UE1, "192.0.2.10", 53);
    let mut frame = eth_vlan(MAC_A, MAC_B, 100, 0x0800);
    frame.extend_from_slice(&ipv4(
        v4(GNB1),
        v4("198.18.0.1"),
        17,
        64,
        0,
        &udp(
            2152,
            2152,
            &gtp(255, 0x100, None, &[ul_container(9)], &inner),
        ),
    ));
    check(Direction::Uplink, &frame, &local(&inner, 10, 1));
}

/// Ethernet / the tags / IPv4 / UDP 2152 / a G-PDU of session 1 carrying `inner`.
fn tagged_gpdu(tags: &[(u16, u16)], inner: &[u8]) -> Vec<u8> {
    n3_v4_tagged(
        tags,
        v4(GNB1),
        v4("198.18.0.1"),
        &gtp(255, 0x100, None, &[ul_container(9)], inner),
    )
}

#[test]
fn qinq_and_double_tagged_uplink_is_decapsulated_and_a_third_tag_is_not_gtp() {
    let inner = udp4_inner(UE1, "192.0.2.10", 53);
    // 802.1ad S-tag over an 802.1Q C-tag, and two stacked 802.1Q tags (as in an operator's
    // N3 capture): both are G-PDUs.
    for tags in [
        [(0x88a8, 100), (0x8100, 200)],
        [(0x8100, 100), (0x8100, 200)],
    ] {
        let frame = tagged_gpdu(&tags, &inner);
        check(Direction::Uplink, &frame, &local(&inner, 10, 1));
    }
    let frame = tagged_gpdu(&[(0x88a8, 1), (0x8100, 2), (0x8100, 3)], &inner);
    check(
        Direction::Uplink,
        &frame,
        &unchanged(&frame, Verdict::Pass, Reason::NotGtp, None, None),
    );
}

#[test]
fn the_local_side_takes_up_to_two_tags_and_a_third_is_not_for_a_ue() {
    let ip = ipv4(
        v4("192.0.2.10"),
        v4(UE1),
        17,
        64,
        0,
        &udp(53, 40000, b"answer"),
    );
    // One 802.1Q tag, an 802.1ad S-tag alone, QinQ and two 802.1Q tags: the tags stay on the
    // local side; the encapsulated frame carries N3's (none configured here).
    for tags in [
        vec![(0x8100, 7)],
        vec![(0x88a8, 7)],
        vec![(0x88a8, 7), (0x8100, 8)],
        vec![(0x8100, 7), (0x8100, 8)],
    ] {
        let mut frame = eth_tags(MAC_A, MAC_B, &tags, 0x0800);
        frame.extend_from_slice(&ip);
        check(
            Direction::Downlink,
            &frame,
            &encapsulated_v4(&ip, GNB1, 0x200, 9, 1),
        );
    }
    let mut frame = eth_tags(
        MAC_A,
        MAC_B,
        &[(0x88a8, 7), (0x8100, 8), (0x8100, 9)],
        0x0800,
    );
    frame.extend_from_slice(&ip);
    check(
        Direction::Downlink,
        &frame,
        &unchanged(&frame, Verdict::Pass, Reason::NotForUe, None, None),
    );
}

#[test]
fn outer_ipv4_options_are_skipped() {
    let inner = udp4_inner(UE1, "192.0.2.10", 53);
    let g = udp(
        2152,
        2152,
        &gtp(255, 0x100, None, &[ul_container(9)], &inner),
    );
    // 4 and 40 bytes of options (a NOP-padded record-route, and the largest header).
    for options in [vec![1, 1, 1, 0], [vec![7, 39, 4], vec![0; 37]].concat()] {
        let mut frame = eth(MAC_A, MAC_B, 0x0800);
        frame.extend_from_slice(&ipv4_options(v4(GNB1), v4("198.18.0.1"), 17, &options, &g));
        check(Direction::Uplink, &frame, &local(&inner, 10, 1));
    }
}

#[test]
fn outer_ipv6_extension_headers_are_walked_and_outer_fragments_go_to_the_kernel() {
    let inner = ipv6(v6(UE1_V6), v6("2001:db8:e::5"), 6, 64, &tcp(40000, 443));
    let g = udp(
        2152,
        2152,
        &gtp(255, 0x100, None, &[ul_container(9)], &inner),
    );
    let hbh = V6Ext::Options { kind: 0, len8: 0 };
    let dst_opts = V6Ext::Options { kind: 60, len8: 2 };
    let n3 = |exts: &[V6Ext]| {
        let mut f = eth(MAC_A, MAC_B, 0x86dd);
        f.extend_from_slice(&ipv6_ext(v6(GNB2), v6("2001:db8:3::1"), exts, 17, 64, &g));
        f
    };
    check(
        Direction::Uplink,
        &n3(&[hbh.clone(), dst_opts.clone()]),
        &local(&inner, 10, 1),
    );
    // An atomic fragment (offset 0, no more fragments) is a whole packet.
    let atomic = V6Ext::Fragment {
        offset: 0,
        more: false,
    };
    check(Direction::Uplink, &n3(&[atomic]), &local(&inner, 10, 1));
    // A real fragment, first or later: the kernel reassembles.
    for (offset, more) in [(0, true), (185, false)] {
        let frame = n3(&[hbh.clone(), V6Ext::Fragment { offset, more }]);
        check(
            Direction::Uplink,
            &frame,
            &unchanged(&frame, Verdict::Pass, Reason::OuterFragment, None, None),
        );
    }
    // IPv4 too: a fragment of a UDP datagram (here the first, with MF).
    let mut frame = eth(MAC_A, MAC_B, 0x0800);
    frame.extend_from_slice(&ipv4(v4(GNB1), v4("198.18.0.1"), 17, 64, 0x2000, &g));
    check(
        Direction::Uplink,
        &frame,
        &unchanged(&frame, Verdict::Pass, Reason::OuterFragment, None, None),
    );
    // UDP only behind a fifth extension header: not looked for, not GTP-U.
    let frame = n3(&vec![hbh.clone(); 5]);
    check(
        Direction::Uplink,
        &frame,
        &unchanged(&frame, Verdict::Pass, Reason::NotGtp, None, None),
    );
}

#[test]
fn inner_ipv6_extension_headers_give_the_upper_layer_and_its_ports() {
    let dst = v6("2001:db8:f::9");
    let gpdu = |ip: &[u8]| gpdu_v4(0x100, &[ul_container(9)], ip);
    let pass = |frame: &[u8], rule: u32| {
        unchanged(
            frame,
            Verdict::Pass,
            Reason::RulePassthrough,
            Some(rule),
            Some(1),
        )
    };
    let hbh = V6Ext::Options { kind: 0, len8: 1 };
    let routing = V6Ext::Options { kind: 43, len8: 0 };
    let dst_opts = V6Ext::Options { kind: 60, len8: 0 };
    // UDP to port 8050 behind three extension headers: the port filter of rule 19 matches.
    let ip = ipv6_ext(
        v6(UE1_V6),
        dst,
        &[hbh.clone(), routing.clone(), dst_opts.clone()],
        17,
        64,
        &udp(1234, 8050, b"q"),
    );
    check(Direction::Uplink, &gpdu(&ip), &local(&ip, 19, 1));
    // A fragment, first or later, never matches a port filter: the prefix rule 21 does.
    for (offset, more) in [(0, true), (3, false)] {
        let ip = ipv6_ext(
            v6(UE1_V6),
            dst,
            &[V6Ext::Fragment { offset, more }],
            17,
            64,
            &udp(1234, 8050, b"q"),
        );
        let frame = gpdu(&ip);
        check(Direction::Uplink, &frame, &pass(&frame, 21));
    }
    // ESP behind a destination options header: an upper layer without ports, which a
    // protocol rule (20) matches.
    let esp = ipv6_ext(
        v6(UE1_V6),
        dst,
        std::slice::from_ref(&dst_opts),
        50,
        64,
        &[0; 24],
    );
    let frame = gpdu(&esp);
    check(
        Direction::Uplink,
        &frame,
        &unchanged(&frame, Verdict::Drop, Reason::RuleDrop, Some(20), Some(1)),
    );
    // Beyond four extension headers the protocol is the fifth header's type: no ports.
    let deep = ipv6_ext(
        v6(UE1_V6),
        dst,
        &vec![dst_opts.clone(); 5],
        17,
        64,
        &udp(1234, 8050, b"q"),
    );
    let frame = gpdu(&deep);
    check(Direction::Uplink, &frame, &pass(&frame, 21));
    // An extension header that runs past the packet is malformed.
    let mut cut = ipv6_ext(v6(UE1_V6), dst, &[hbh], 17, 64, &[]);
    cut.truncate(40 + 8);
    cut[4..6].copy_from_slice(&8u16.to_be_bytes());
    let frame = gpdu(&cut);
    check(
        Direction::Uplink,
        &frame,
        &unchanged(&frame, Verdict::Drop, Reason::MalformedInner, None, None),
    );
}

#[test]
fn configured_vlan_tags_are_pushed_on_decapsulated_and_encapsulated_frames() {
    // QinQ towards the gNBs, one tag towards the local services.
    let text = TABLES
        .replace("mtu = 1500\n", "mtu = 1500\nvlan = [100, 200]\n")
        .replace(
            "next_hop_mac = \"02:00:00:00:04:02\"\n",
            "next_hop_mac = \"02:00:00:00:04:02\"\nvlan = [300]\n",
        );
    let tables = mecgw::datapath::compile::from_toml(&text, "tagged tables").unwrap();
    assert_eq!((tables.n3.vlan.len(), tables.local.vlan.len()), (2, 1));
    let fp = FastPath::load().unwrap();
    fp.install(&tables).unwrap();
    let model = Model::new(&tables);
    let tagged = |frame: Vec<u8>, tags: &[u8]| {
        let mut f = frame;
        f.splice(12..12, tags.iter().copied());
        f
    };
    let both = |direction: Direction, frame: &[u8], want: &Judged| {
        assert_eq!(&fp.judge(direction, frame).unwrap(), want, "kernel");
        let m = match direction {
            Direction::Uplink => model.uplink(frame),
            Direction::Downlink => model.downlink(frame),
        };
        assert_eq!(&Judged::from(m), want, "model");
    };

    let inner = udp4_inner(UE1, "192.0.2.10", 53);
    let mut want = local(&inner, 10, 1);
    want.packet = tagged(want.packet, &[0x81, 0x00, 0x01, 0x2c]);
    both(Direction::Uplink, &gpdu_v4(0x100, &[], &inner), &want);

    let ip = ipv4(
        v4("192.0.2.10"),
        v4(UE1),
        17,
        64,
        0,
        &udp(53, 40000, b"answer"),
    );
    let mut want = encapsulated_v4(&ip, GNB1, 0x200, 9, 1);
    want.packet = tagged(
        want.packet,
        &[0x88, 0xa8, 0x00, 0x64, 0x81, 0x00, 0x00, 0xc8],
    );
    both(Direction::Downlink, &from_local(&ip), &want);
    let ip6 = ipv6(
        v6("2001:db8:e::5"),
        v6(UE2_V6),
        17,
        64,
        &udp(53, 40000, b"six"),
    );
    let mut want = encapsulated_v6(&ip6, GNB2, 0x201, 5, 2);
    want.packet = tagged(
        want.packet,
        &[0x88, 0xa8, 0x00, 0x64, 0x81, 0x00, 0x00, 0xc8],
    );
    both(Direction::Downlink, &from_local(&ip6), &want);
}

#[test]
fn vlan_ids_out_of_range_or_more_than_two_tags_are_refused() {
    for (line, message) in [
        (
            "vlan = [0]",
            "n3.vlan: VLAN id 0 is out of range: it must be 1-4094",
        ),
        ("vlan = [4095]", "n3.vlan: VLAN id 4095 is out of range"),
        ("vlan = [1, 2, 3]", "n3.vlan has 3 tags: at most 2 (QinQ)"),
    ] {
        let text = TABLES.replace("mtu = 1500\n", &format!("mtu = 1500\n{line}\n"));
        let e = mecgw::datapath::compile::from_toml(&text, "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains(message), "{line}: {e}");
    }
}

#[test]
fn ethernet_padding_after_the_ip_packet_is_not_forwarded() {
    let inner = udp4_inner(UE1, "192.0.2.10", 53);
    let mut frame = gpdu_v4(0x100, &[], &inner);
    frame.extend_from_slice(&[0xee; 10]);
    check(Direction::Uplink, &frame, &local(&inner, 10, 1));

    let mut frame = eth(MAC_A, MAC_B, 0x0800);
    let small = ipv4(v4("192.0.2.10"), v4(UE1), 17, 64, 0, &udp(53, 40000, b"ok"));
    frame.extend_from_slice(&small);
    frame.resize(60, 0);
    check(
        Direction::Downlink,
        &frame,
        &encapsulated_v4(&small, GNB1, 0x200, 9, 1),
    );
}

// ---------------------------------------------------------------- downlink encapsulation

/// What the downlink must emit towards an IPv4 gNB, assembled field by field.
fn encapsulated_v4(inner: &[u8], gnb: &str, teid: u32, qfi: u8, session: u32) -> Judged {
    let inner = ttl_minus_one(inner);
    let gtp_len = (8 + inner.len()) as u16;
    let udp_len = 8 + 16 + inner.len() as u16;
    let total = 20 + udp_len;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    ip.extend_from_slice(&v4("198.18.0.1"));
    ip.extend_from_slice(&v4(gnb));
    let c = internet_checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = eth(N3_NEXT_HOP, N3_MAC, 0x0800);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[0x08, 0x68, 0x08, 0x68]);
    f.extend_from_slice(&udp_len.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&[0x34, 0xff]);
    f.extend_from_slice(&gtp_len.to_be_bytes());
    f.extend_from_slice(&teid.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0x85, 1, 0x00, qfi, 0]);
    f.extend_from_slice(&inner);
    assert_eq!(f.len(), 14 + inner.len() + 44);
    judged(
        Verdict::Redirect,
        Reason::Encapsulated,
        None,
        Some(session),
        f,
    )
}

/// What the downlink must emit towards an IPv6 gNB; the UDP checksum computed independently.
fn encapsulated_v6(inner: &[u8], gnb: &str, teid: u32, qfi: u8, session: u32) -> Judged {
    let inner = ttl_minus_one(inner);
    let gtp_len = (8 + inner.len()) as u16;
    let udp_len = 8 + 16 + inner.len() as u16;
    let mut udp = vec![0x08, 0x68, 0x08, 0x68];
    udp.extend_from_slice(&udp_len.to_be_bytes());
    udp.extend_from_slice(&[0, 0, 0x34, 0xff]);
    udp.extend_from_slice(&gtp_len.to_be_bytes());
    udp.extend_from_slice(&teid.to_be_bytes());
    udp.extend_from_slice(&[0, 0, 0, 0x85, 1, 0x00, qfi, 0]);
    udp.extend_from_slice(&inner);
    let c = udp6_checksum(&v6("2001:db8:3::1"), &v6(gnb), &udp);
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    let mut f = eth(N3_NEXT_HOP, N3_MAC, 0x86dd);
    f.extend_from_slice(&ipv6(v6("2001:db8:3::1"), v6(gnb), 17, 64, &udp));
    assert_eq!(f.len(), 14 + inner.len() + 64);
    judged(
        Verdict::Redirect,
        Reason::Encapsulated,
        None,
        Some(session),
        f,
    )
}

fn from_local(ip: &[u8]) -> Vec<u8> {
    let ethertype = if ip[0] >> 4 == 4 { 0x0800 } else { 0x86dd };
    let mut f = eth(LOCAL_MAC, LOCAL_NEXT_HOP, ethertype);
    f.extend_from_slice(ip);
    f
}

#[test]
fn downlink_ipv4_to_ipv4_gnb() {
    let ip = ipv4(
        v4("192.0.2.10"),
        v4(UE1),
        17,
        64,
        0,
        &udp(53, 40000, b"reply from the edge"),
    );
    check(
        Direction::Downlink,
        &from_local(&ip),
        &encapsulated_v4(&ip, GNB1, 0x200, 9, 1),
    );
}

#[test]
fn downlink_ipv6_to_ipv6_gnb_has_a_full_udp_checksum() {
    // Odd and even lengths, and lengths that use every chunk size of the checksum loop.
    for payload_len in [0usize, 1, 33, 511, 1000, 1380] {
        let payload: Vec<u8> = (0..payload_len).map(|i| (i * 7 + 3) as u8).collect();
        let ip = ipv6(
            v6("2001:db8:e::5"),
            v6(UE2_V6),
            17,
            64,
            &udp(443, 40000, &payload),
        );
        let want = encapsulated_v6(&ip, GNB2, 0x201, 5, 2);
        check(Direction::Downlink, &from_local(&ip), &want);
        // And the checksum verifies as a receiver would check it: sum including it is 0.
        let out = &want.packet;
        let udp = &out[14 + 40..];
        let mut data = out[14 + 8..14 + 40].to_vec();
        data.extend_from_slice(&(udp.len() as u32).to_be_bytes());
        data.extend_from_slice(&[0, 0, 0, 17]);
        data.extend_from_slice(udp);
        assert_eq!(internet_checksum(&data), 0, "payload {payload_len}");
    }
}

#[test]
fn downlink_across_families() {
    // Session 1: IPv6 UE prefix, IPv4 gNB.
    let ip = ipv6(
        v6("2001:db8:e::5"),
        v6("2001:db8:45:1::abcd"),
        6,
        64,
        &tcp(443, 5555),
    );
    check(
        Direction::Downlink,
        &from_local(&ip),
        &encapsulated_v4(&ip, GNB1, 0x200, 9, 1),
    );
    // Session 2: IPv4 UE, IPv6 gNB.
    let ip = ipv4(v4("192.0.2.10"), v4(UE2), 1, 64, 0, &icmp_echo());
    check(
        Direction::Downlink,
        &from_local(&ip),
        &encapsulated_v6(&ip, GNB2, 0x201, 5, 2),
    );
}

#[test]
fn downlink_over_the_n3_mtu_is_dropped_and_counted() {
    // MTU 1500: an IPv4 inner packet of 1456 bytes becomes exactly 1500 outer; 1457 is too big.
    let fits = ipv4(
        v4("192.0.2.10"),
        v4(UE1),
        17,
        64,
        0,
        &udp(1, 2, &vec![0xab; 1456 - 28]),
    );
    check(
        Direction::Downlink,
        &from_local(&fits),
        &encapsulated_v4(&fits, GNB1, 0x200, 9, 1),
    );
    let big = ipv4(
        v4("192.0.2.10"),
        v4(UE1),
        17,
        64,
        0,
        &udp(1, 2, &vec![0xab; 1457 - 28]),
    );
    let frame = from_local(&big);
    check(
        Direction::Downlink,
        &frame,
        &unchanged(&frame, Verdict::Drop, Reason::Oversize, None, Some(1)),
    );
    // IPv6 outer adds 64: 1436 fits, 1437 does not.
    let fits = ipv6(
        v6("2001:db8:e::5"),
        v6(UE2_V6),
        17,
        64,
        &udp(1, 2, &vec![1; 1436 - 48]),
    );
    check(
        Direction::Downlink,
        &from_local(&fits),
        &encapsulated_v6(&fits, GNB2, 0x201, 5, 2),
    );
    let big = ipv6(
        v6("2001:db8:e::5"),
        v6(UE2_V6),
        17,
        64,
        &udp(1, 2, &vec![1; 1437 - 48]),
    );
    let frame = from_local(&big);
    check(
        Direction::Downlink,
        &frame,
        &unchanged(&frame, Verdict::Drop, Reason::Oversize, None, Some(2)),
    );
}

#[test]
fn downlink_not_for_a_ue_ttl_and_malformed() {
    let other = from_local(&udp4_inner("192.0.2.10", "10.45.0.77", 53));
    let other6 = from_local(&ipv6(
        v6("2001:db8:e::5"),
        v6("2001:db8:45:3::1"),
        17,
        64,
        &udp(1, 2, b""),
    ));
    let mut arp = eth([0xff; 6], LOCAL_NEXT_HOP, 0x0806);
    arp.extend_from_slice(&[0; 28]);
    for frame in [other, other6, arp] {
        check(
            Direction::Downlink,
            &frame,
            &unchanged(&frame, Verdict::Pass, Reason::NotForUe, None, None),
        );
    }
    let ttl1 = from_local(&ipv4(v4("192.0.2.10"), v4(UE1), 17, 1, 0, &udp(1, 2, b"")));
    check(
        Direction::Downlink,
        &ttl1,
        &unchanged(&ttl1, Verdict::Pass, Reason::TtlExpired, None, Some(1)),
    );
    // Total length beyond the frame.
    let mut cut = from_local(&udp4_inner("192.0.2.10", UE1, 53));
    cut.truncate(cut.len() - 1);
    check(
        Direction::Downlink,
        &cut,
        &unchanged(&cut, Verdict::Drop, Reason::MalformedInner, None, Some(1)),
    );
}

#[test]
fn vlan_tagged_downlink_is_encapsulated_untagged() {
    let ip = ipv4(
        v4("192.0.2.10"),
        v4(UE1),
        17,
        64,
        0,
        &udp(53, 40000, b"tagged"),
    );
    let mut frame = eth_vlan(LOCAL_MAC, LOCAL_NEXT_HOP, 7, 0x0800);
    frame.extend_from_slice(&ip);
    check(
        Direction::Downlink,
        &frame,
        &encapsulated_v4(&ip, GNB1, 0x200, 9, 1),
    );
}

// ---------------------------------------------------------------- counters

#[test]
fn counters_add_up_per_verdict_reason_rule_and_session() {
    // A fast path of its own, so other tests' packets do not mix in.
    let fp = FastPath::load().unwrap();
    fp.install(&tables()).unwrap();
    let local_frame = gpdu_v4(0x100, &[], &udp4_inner(UE1, "192.0.2.10", 53));
    let drop_frame = gpdu_v4(0x100, &[], &udp4_inner(UE1, "192.0.2.66", 53));
    let down = from_local(&ipv4(
        v4("192.0.2.10"),
        v4(UE1),
        17,
        64,
        0,
        &udp(53, 1, b""),
    ));
    for _ in 0..3 {
        fp.test_run(Direction::Uplink, &local_frame, 1).unwrap();
    }
    for _ in 0..2 {
        fp.test_run(Direction::Uplink, &drop_frame, 1).unwrap();
    }
    fp.test_run(Direction::Downlink, &down, 1).unwrap();

    let n = |c: mecgw_ebpf::Counter| (c.packets, c.bytes);
    let (l, d, w) = (
        local_frame.len() as u64,
        drop_frame.len() as u64,
        down.len() as u64,
    );
    assert_eq!(fp.rule_counter(10).unwrap().map(n), Some((3, 3 * l)));
    assert_eq!(fp.rule_counter(11).unwrap().map(n), Some((2, 2 * d)));
    assert_eq!(fp.rule_counter(15).unwrap().map(n), Some((0, 0)));
    assert_eq!(
        fp.session_counter(1, Direction::Uplink).unwrap().map(n),
        Some((5, 3 * l + 2 * d))
    );
    assert_eq!(
        fp.session_counter(1, Direction::Downlink).unwrap().map(n),
        Some((1, w))
    );
    assert_eq!(
        fp.session_counter(2, Direction::Uplink).unwrap().map(n),
        Some((0, 0))
    );
    let reasons: std::collections::HashMap<_, _> =
        fp.reason_counters().unwrap().into_iter().collect();
    assert_eq!(n(reasons[&Reason::RuleLocal]), (3, 3 * l));
    assert_eq!(n(reasons[&Reason::RuleDrop]), (2, 2 * d));
    assert_eq!(n(reasons[&Reason::Encapsulated]), (1, w));
    let verdicts: std::collections::HashMap<_, _> =
        fp.verdict_counters().unwrap().into_iter().collect();
    assert_eq!(verdicts[&Verdict::Redirect].packets, 4);
    assert_eq!(verdicts[&Verdict::Drop].packets, 2);
    assert_eq!(verdicts[&Verdict::Pass].packets, 0);
}

// ---------------------------------------------------------------- configured defaults

#[test]
fn configured_defaults_are_obeyed() {
    let text = TABLES
        .replace(r#"unknown_teid = "pass""#, r#"unknown_teid = "drop""#)
        .replace(r#"spoofed_source = "drop""#, r#"spoofed_source = "pass""#)
        .replace(r#"malformed = "drop""#, r#"malformed = "pass""#);
    let t = mecgw::datapath::compile::from_toml(&text, "defaults").unwrap();
    let fp = FastPath::load().unwrap();
    fp.install(&t).unwrap();
    let m = Model::new(&t);

    let inner = udp4_inner(UE1, "192.0.2.10", 53);
    let unknown = gpdu_v4(0x999, &[], &inner);
    let spoofed = gpdu_v4(0x100, &[], &udp4_inner(UE2, "192.0.2.10", 53));
    let mut version2 = gpdu_v4(0x100, &[], &inner);
    version2[14 + 20 + 8] = 0x50;
    let e = Ext {
        kind: 0x40,
        content: vec![8, 0x68],
    };
    let chain = gpdu_v4(
        0x100,
        &[e.clone(), e.clone(), e.clone(), e.clone(), e],
        &inner,
    );
    let cases = [
        (unknown, Verdict::Drop, Reason::UnknownTeid, None),
        (spoofed, Verdict::Pass, Reason::SpoofedSource, Some(1)),
        (version2, Verdict::Pass, Reason::MalformedGtp, None),
        (chain, Verdict::Pass, Reason::ExtChainTooLong, None),
    ];
    for (frame, verdict, reason, session) in cases {
        let want = unchanged(&frame, verdict, reason, None, session);
        assert_eq!(
            fp.judge(Direction::Uplink, &frame).unwrap(),
            want,
            "kernel {reason:?}"
        );
        assert_eq!(Judged::from(m.uplink(&frame)), want, "model {reason:?}");
    }
}

// ---------------------------------------------------------------- jumbo frames (MTU 9000)

/// The golden tables with a 9000-byte N3 MTU, loaded once for the jumbo cases.
fn jumbo() -> &'static (FastPath, Model) {
    static J: OnceLock<(FastPath, Model)> = OnceLock::new();
    J.get_or_init(|| {
        let text = TABLES.replace("mtu = 1500\n", "mtu = 9000\n");
        let tables = mecgw::datapath::compile::from_toml(&text, "jumbo tables").unwrap();
        assert_eq!(tables.n3.mtu, 9000);
        let fp = FastPath::load().expect("load the XDP programs (are we root?)");
        fp.install(&tables).unwrap();
        (fp, Model::new(&tables))
    })
}

/// [`check`] against the 9000-MTU tables. Frames longer than [`TEST_RUN_LINEAR`] are
/// multi-buffer frames in the test run: the model is given the same linear part.
fn check_jumbo(direction: Direction, frame: &[u8], want: &Judged) {
    let (fp, model) = jumbo();
    let kernel = fp.judge(direction, frame).unwrap();
    assert_eq!(
        (kernel.verdict, kernel.reason, kernel.rule, kernel.session),
        (want.verdict, want.reason, want.rule, want.session),
        "kernel, {direction:?}, {} bytes",
        frame.len()
    );
    assert!(kernel.packet == want.packet, "kernel bytes, {direction:?}");
    let model = match direction {
        Direction::Uplink => model.uplink_split(frame, test_run_linear(frame.len())),
        Direction::Downlink => model.downlink(frame),
    };
    let model = Judged::from(model);
    assert_eq!(
        (model.verdict, model.reason, model.rule, model.session),
        (want.verdict, want.reason, want.rule, want.session),
        "model, {direction:?}, {} bytes",
        frame.len()
    );
    assert!(model.packet == want.packet, "model bytes, {direction:?}");
}

/// An IPv4 UDP packet of exactly `len` bytes with a patterned payload.
fn udp4_of(src: &str, dst: &str, sport: u16, dport: u16, len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..len - 28).map(|i| (i * 13 + 1) as u8).collect();
    ipv4(v4(src), v4(dst), 17, 64, 0, &udp(sport, dport, &payload))
}

#[test]
fn jumbo_uplink_gpdu_is_decapsulated_whole() {
    // 14 + 20 + 8 + 8 bytes of headers: an 8000-byte frame, most of it in fragments.
    let inner = udp4_of(UE1, "192.0.2.10", 40000, 53, 8000 - 50);
    let frame = gpdu_v4(0x100, &[], &inner);
    assert_eq!(frame.len(), 8000);
    assert!(frame.len() > TEST_RUN_LINEAR);
    check_jumbo(Direction::Uplink, &frame, &local(&inner, 10, 1));
    // With Ethernet padding after it (trimmed from the last fragment) and a container.
    let inner = udp4_of(UE1, "192.0.2.10", 40000, 53, 7001);
    let mut frame = gpdu_v4(0x100, &[ul_container(9)], &inner);
    frame.extend_from_slice(&[0xee; 7]);
    check_jumbo(Direction::Uplink, &frame, &local(&inner, 10, 1));
    // Lengths are the whole frame's: a G-PDU whose IP length says more than it has is
    // still malformed.
    let mut short = gpdu_v4(0x100, &[], &udp4_of(UE1, "192.0.2.10", 1, 53, 6000));
    short.truncate(5000);
    check_jumbo(
        Direction::Uplink,
        &short,
        &unchanged(&short, Verdict::Drop, Reason::MalformedGtp, None, None),
    );
}

#[test]
fn jumbo_uplink_headers_past_the_linear_part_go_to_the_kernel() {
    // Two 2048-byte destination options headers in the inner IPv6 packet put its UDP ports
    // past the 3520 bytes a test run keeps linear.
    let big = V6Ext::Options {
        kind: 60,
        len8: 255,
    };
    let ip = ipv6_ext(
        v6(UE1_V6),
        v6("2001:db8:f::9"),
        &[big.clone(), big],
        17,
        64,
        &udp(40000, 8050, &[7; 2000]),
    );
    let frame = gpdu_v4(0x100, &[ul_container(9)], &ip);
    assert!(frame.len() > TEST_RUN_LINEAR);
    check_jumbo(
        Direction::Uplink,
        &frame,
        &unchanged(&frame, Verdict::Pass, Reason::HeadersNotLinear, None, None),
    );
    // The same packet in one buffer (as the userspace datapath has it) is classified.
    let (_, model) = jumbo();
    let whole = model.uplink(&frame);
    assert_eq!(whole.reason, Reason::RuleLocal, "{:?}", whole.reason);
}

#[test]
fn jumbo_downlink_is_encapsulated_over_ipv4_and_ipv6_with_a_correct_checksum() {
    let ip = udp4_of("192.0.2.10", UE1, 53, 40000, 8000);
    check_jumbo(
        Direction::Downlink,
        &from_local(&ip),
        &encapsulated_v4(&ip, GNB1, 0x200, 9, 1),
    );
    // IPv6 outer: the UDP checksum covers the bytes in the fragments too. Odd and even
    // lengths, and the largest that fits 9000 (8936 + 64).
    for len in [8000usize, 7999, 4097, 8936] {
        let ip = udp4_of("192.0.2.10", UE2, 53, 40000, len);
        let want = encapsulated_v6(&ip, GNB2, 0x201, 5, 2);
        check_jumbo(Direction::Downlink, &from_local(&ip), &want);
        let out = &want.packet;
        let udp = &out[14 + 40..];
        let mut data = out[14 + 8..14 + 40].to_vec();
        data.extend_from_slice(&(udp.len() as u32).to_be_bytes());
        data.extend_from_slice(&[0, 0, 0, 17]);
        data.extend_from_slice(udp);
        assert_eq!(internet_checksum(&data), 0, "inner {len}");
    }
    // An IPv6 inner packet to the IPv6 gNB, with Ethernet padding.
    let payload: Vec<u8> = (0..7000).map(|i| (i * 3) as u8).collect();
    let ip = ipv6(
        v6("2001:db8:e::5"),
        v6(UE2_V6),
        17,
        64,
        &udp(443, 40000, &payload),
    );
    let mut frame = from_local(&ip);
    frame.extend_from_slice(&[0; 5]);
    check_jumbo(
        Direction::Downlink,
        &frame,
        &encapsulated_v6(&ip, GNB2, 0x201, 5, 2),
    );
}

#[test]
fn jumbo_downlink_over_the_mtu_is_oversize_and_small_frames_are_unchanged() {
    // 8956 + 44 = 9000 fits; 8957 does not.
    let fits = udp4_of("192.0.2.10", UE1, 53, 40000, 8956);
    check_jumbo(
        Direction::Downlink,
        &from_local(&fits),
        &encapsulated_v4(&fits, GNB1, 0x200, 9, 1),
    );
    let big = from_local(&udp4_of("192.0.2.10", UE1, 53, 40000, 8957));
    check_jumbo(
        Direction::Downlink,
        &big,
        &unchanged(&big, Verdict::Drop, Reason::Oversize, None, Some(1)),
    );
    // Small frames are what they were: a non-GTP frame passes unchanged, a small G-PDU is
    // decapsulated, a small reply encapsulated.
    let mut other = eth(MAC_A, MAC_B, 0x0800);
    other.extend_from_slice(&udp4_of("192.0.2.1", "192.0.2.2", 1, 2, 100));
    check_jumbo(
        Direction::Uplink,
        &other,
        &unchanged(&other, Verdict::Pass, Reason::NotGtp, None, None),
    );
    let inner = udp4_inner(UE1, "192.0.2.10", 53);
    check_jumbo(
        Direction::Uplink,
        &gpdu_v4(0x100, &[], &inner),
        &local(&inner, 10, 1),
    );
    let ip = udp4_of("192.0.2.10", UE2, 53, 40000, 200);
    check_jumbo(
        Direction::Downlink,
        &from_local(&ip),
        &encapsulated_v6(&ip, GNB2, 0x201, 5, 2),
    );
}

/// Loaded as the daemon loads it, without the per-frame decision record: the programs still
/// judge and count every frame, and `judge` (which reads the record) refuses rather than
/// report nothing.
#[test]
fn without_decision_records_frames_are_still_judged_and_counted_and_judge_refuses() {
    let fp = FastPath::load_with(mecgw::datapath::FastPathOptions {
        record_decisions: false,
        ..Default::default()
    })
    .expect("load (are we root?)");
    // Plain UDP, not to the GTP-U port: passed, reason not_gtp.
    let mut frame = eth([2; 6], [4; 6], 0x0800);
    frame.extend(ipv4(
        v4("192.0.2.9"),
        v4("198.51.100.1"),
        17,
        64,
        0,
        &udp(1000, 53, &[0; 8]),
    ));
    let err = fp.judge(Direction::Uplink, &frame).unwrap_err();
    assert!(err.to_string().contains("record_decisions"), "{err}");
    let before = reason(&fp, Reason::NotGtp);
    let out = fp.test_run(Direction::Uplink, &frame, 3).unwrap();
    assert_eq!(Verdict::from_xdp_action(out.action), Some(Verdict::Pass));
    assert_eq!(reason(&fp, Reason::NotGtp), before + 3);
}

fn reason(fp: &FastPath, which: Reason) -> u64 {
    fp.reason_counters()
        .unwrap()
        .into_iter()
        .find(|(r, _)| *r == which)
        .map_or(0, |(_, c)| c.packets)
}

// ---------------------------------------------------------------- the benchmark's floor

/// `mecgw_bench_floor`, the floor of `cargo xtask bench fastpath`, must do the uplink's LOCAL
/// work and nothing less: the same inner packet with its TTL decremented behind an Ethernet
/// header (all-zero MACs: its config is all zero), redirected, once per repetition behind
/// the restore wrapper, and counted once each.
#[test]
fn the_benchmark_floor_decapsulates_as_the_uplink_does_once_per_repetition() {
    const XDP_REDIRECT: u32 = 4;
    let fp = fast_path();
    // The restore wrapper takes frames of a multiple of 8 bytes.
    let frame = (0..8)
        .map(|pad| {
            let inner = ipv4(
                v4(UE1),
                v4("192.0.2.10"),
                17,
                64,
                0,
                &udp(40000, 53, &vec![0x5a; 10 + pad]),
            );
            gpdu_v4(0x100, &[ul_container(9)], &inner)
        })
        .find(|f| f.len() % 8 == 0)
        .unwrap();
    let uplink = fp.test_run(Direction::Uplink, &frame, 1).unwrap();
    assert_eq!(uplink.action, XDP_REDIRECT, "the frame is a LOCAL one");
    let shift = frame.len() as i32 - uplink.data_out.len() as i32;
    let before = fp.bench_sink_counter().unwrap().packets;

    let floor = fp
        .bench_restored(BenchTarget::Floor, &frame, shift, 5)
        .unwrap();

    assert_eq!(floor.action, XDP_REDIRECT);
    assert_eq!(fp.bench_sink_counter().unwrap().packets - before, 5);
    assert_eq!(floor.data_out.len(), uplink.data_out.len());
    assert_eq!(floor.data_out[..12], [0; 12]);
    assert_eq!(floor.data_out[12..], uplink.data_out[12..]);
}
