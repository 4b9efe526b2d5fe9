//! Jumbo frames end to end: the testbed's links at MTU 9000, the gateway's N3 at 9000 with
//! its programs attached in native XDP (which a veth at that MTU takes only from programs
//! that accept multi-buffer frames), and the gNB simulator's UEs sending UDP G-PDUs of about
//! 8 KB to the local services, whose answers come back through the downlink encapsulation.
//! The simulator checks every answer independently (TEID, container, inner checksums,
//! addresses, and the whole payload byte for byte).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use mecgw_tests::testbed::{self, DatapathChoice, EDGE, GNB, Gateway, N3, UPF, metric};

const UES: u32 = 2;
const ROUNDS: u64 = 5;
/// Pattern bytes after each probe's token: inner UDP packets of about 7.9 KB.
const PAD: &str = "7900";

const LOCAL_EDGE_RULE: &str = "[[rules]]\nid = 10\npriority = 10\naction = \"LOCAL\"\n\
                               dst = [\"198.18.1.0/24\", \"2001:db8:0:1::/64\"]\n";

#[test]
fn large_udp_gpdus_are_broken_out_and_answered_whole_at_mtu_9000() {
    let bin = mecgw_tests::bin_dir().unwrap();
    let _bed = testbed::up_with_mtu(Some(9000)).unwrap();
    // N3 over IPv4, then over IPv6: the gNB simulator sends to the UPF's address of that
    // family, and the sessions' gNB address (so the downlink's outer header) is of it too.
    // Over IPv6 the downlink's UDP checksum covers the whole inner packet, most of it in the
    // frame's fragments.
    for (upf, gnb, n3) in [(UPF.v4, GNB.v4, N3.v4), (UPF.v6, GNB.v6, N3.v6)] {
        let dir = tempfile::tempdir().unwrap();
        testbed::write_gateway_config_for(dir.path(), UES, LOCAL_EDGE_RULE, DatapathChoice::Native)
            .unwrap();
        let tables = dir.path().join("tables.toml");
        let text = std::fs::read_to_string(&tables).unwrap();
        assert!(text.contains("mtu = 1500\n"), "{text}");
        let text = text.replace("mtu = 1500\n", "mtu = 9000\n").replace(
            &format!("gnb = \"{}\"", GNB.v4),
            &format!("gnb = \"{gnb}\""),
        );
        std::fs::write(&tables, text).unwrap();
        round_trip(&bin, dir.path(), upf, n3);
    }
}

/// Starts the gateway on the configuration in `dir`, has the simulator's UEs send jumbo
/// G-PDUs to `upf`, and checks every answer came back whole from `n3`, by the fast path.
fn round_trip(bin: &std::path::Path, dir: &std::path::Path, upf: &str, n3: &str) {
    let mut gw = Gateway::start(bin, dir, 1, &[]).unwrap();
    assert!(
        testbed::xdp_attached(&N3).unwrap(),
        "native XDP on the 9000-MTU N3"
    );

    let edge6 = format!("[{}]", EDGE.v6);
    let probes = [
        format!("udp4=udp:{}:7", EDGE.v4),
        format!("udp6=udp:{edge6}:7"),
    ];
    let rounds = ROUNDS.to_string();
    let ues = UES.to_string();
    let mut args = vec![
        "--upf", upf, "--ues", &ues, "--count", &rounds, "--pad", PAD,
    ];
    for p in &probes {
        args.extend(["--probe", p.as_str()]);
    }
    let report = testbed::gnbsim(bin, &args).unwrap();
    for name in ["udp4", "udp6"] {
        let r = &report[name];
        let (sent, ok) = (r["sent"].as_u64().unwrap(), r["ok"].as_u64().unwrap());
        assert_eq!(sent, u64::from(UES) * ROUNDS, "{upf} {name}: {report}");
        assert_eq!(
            ok, sent,
            "{upf} {name}: every answer must arrive whole: {report}"
        );
    }

    // They were jumbo: every inner packet over 7,900 bytes each way, and every answer came
    // from the gateway's N3 address (the downlink encapsulation), none from the core.
    for ue in report["ues"].as_array().unwrap() {
        let octets = ue["uplink"]["octets"].as_u64().unwrap();
        assert!(octets > 2 * ROUNDS * 7900, "{report}");
        let down = ue["downlink"].as_object().unwrap();
        assert_eq!(down.keys().collect::<Vec<_>>(), [n3], "{report}");
        assert_eq!(down[n3]["octets"].as_u64().unwrap(), octets, "{report}");
    }

    // Every large G-PDU was decapsulated by the rule in the fast path (not handed to the
    // kernel), every answer encapsulated by it.
    let metrics = testbed::ops_get("/metrics").unwrap().unwrap();
    let uplink = 2 * u64::from(UES) * ROUNDS;
    assert_eq!(
        metric(&metrics, "mecgw_rule_packets_total", "rule=\"10\""),
        uplink,
        "{upf}: {metrics}"
    );
    let encapsulated = metric(
        &metrics,
        "mecgw_fastpath_reason_packets_total",
        "reason=\"encapsulated\"",
    );
    assert!(
        encapsulated >= uplink,
        "{upf}: {encapsulated} answers: {metrics}"
    );
    assert!(gw.stop().unwrap().success());
}
