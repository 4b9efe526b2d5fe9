//! `mecgw replay`, driven as an operator would: the real binary, a tables file and pcap files.
//!
//! Needs root (CAP_BPF) for the main cases; one case drops privileges on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{os::unix::fs::PermissionsExt, path::Path, process::Command};

use mecgw::pcap;
use mecgw_tests::{mecgw_bin, packet::*};

/// Sessions and rules after the shared test interfaces ([`mecgw_tests::tables_with`]).
const TABLE_ENTRIES: &str = r#"
[[sessions]]
id = 7
uplink_teid = 0x100
downlink_teid = 0x200
ue_ipv4 = "10.45.0.1"
ue_ipv6 = "2001:db8:45:1::/64"
gnb = "198.18.1.1"
qfi = 9

[[rules]]
id = 1
priority = 0
action = "LOCAL"
dst = ["192.0.2.0/24"]

[[rules]]
id = 2
priority = 0
action = "DROP"
dst = ["198.51.100.0/24"]

[[rules]]
id = 3
priority = 0
action = "LOCAL"
dst = ["2001:db8:e::/48"]
"#;

fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let mut w = pcap::Writer::new(Vec::new(), false).unwrap();
    for (i, f) in frames.iter().enumerate() {
        w.write(1_700_000_000, i as u32, f).unwrap();
    }
    std::fs::write(path, w.finish().unwrap()).unwrap();
}

fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let mut r = pcap::Reader::new(&bytes[..]).unwrap();
    let mut out = Vec::new();
    while let Some(rec) = r.next_record().unwrap() {
        out.push(rec.data);
    }
    out
}

fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        dir.path().join("tables.toml"),
        mecgw_tests::tables_with(TABLE_ENTRIES),
    )
    .unwrap();
    dir
}

fn replay(dir: &Path, direction: &str) -> std::process::Output {
    Command::new(mecgw_bin().unwrap())
        .arg("replay")
        .arg("--tables")
        .arg(dir.join("tables.toml"))
        .arg("--in")
        .arg(dir.join("in.pcap"))
        .arg("--out")
        .arg(dir.join("out.pcap"))
        .arg("--verdicts")
        .arg(dir.join("v.jsonl"))
        .arg("--direction")
        .arg(direction)
        .output()
        .unwrap()
}

fn verdict_lines(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("v.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn uplink_replay_writes_surviving_frames_in_order_and_one_verdict_per_frame() {
    let dir = workdir();
    let inner_local = ipv4(
        v4("10.45.0.1"),
        v4("192.0.2.10"),
        17,
        64,
        0,
        &udp(1, 53, b"q"),
    );
    let local = n3_v4(
        v4("198.18.1.1"),
        v4("198.18.0.1"),
        &gtp(255, 0x100, None, &[ul_container(9)], &inner_local),
    );
    let inner_drop = ipv4(
        v4("10.45.0.1"),
        v4("198.51.100.1"),
        17,
        64,
        0,
        &udp(1, 53, b"q"),
    );
    let dropped = n3_v4(
        v4("198.18.1.1"),
        v4("198.18.0.1"),
        &gtp(255, 0x100, None, &[], &inner_drop),
    );
    let mut not_gtp = eth(MAC_A, MAC_B, 0x0806);
    not_gtp.extend_from_slice(&[0; 28]);
    let runt = vec![0u8; 10];
    write_pcap(
        &dir.path().join("in.pcap"),
        &[local.clone(), dropped.clone(), not_gtp.clone(), runt],
    );

    let out = replay(dir.path(), "uplink");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("4 frames (uplink): 1 passed, 1 dropped, 1 redirected, 1 not run"),
        "{stderr}"
    );

    let mut decapsulated = eth([2, 0, 0, 0, 4, 2], [2, 0, 0, 0, 4, 1], 0x0800);
    decapsulated.extend_from_slice(&ttl_minus_one(&inner_local));
    assert_eq!(
        read_pcap(&dir.path().join("out.pcap")),
        vec![decapsulated.clone(), not_gtp.clone()]
    );

    let v = verdict_lines(dir.path());
    let want = serde_json::json!([
        {"index": 0, "verdict": "redirect", "rule": 1, "session": 7, "reason": "rule_local",
         "len_in": local.len(), "len_out": decapsulated.len()},
        {"index": 1, "verdict": "drop", "rule": 2, "session": 7, "reason": "rule_drop",
         "len_in": dropped.len(), "len_out": 0},
        {"index": 2, "verdict": "pass", "rule": null, "session": null, "reason": "not_gtp",
         "len_in": not_gtp.len(), "len_out": not_gtp.len()},
        {"index": 3, "verdict": "not_run", "rule": null, "session": null,
         "reason": "shorter_than_ethernet_header", "len_in": 10, "len_out": 0},
    ]);
    assert_eq!(serde_json::Value::Array(v), want);
}

/// What an operator's N3 capture holds (#18): two stacked 802.1Q tags in front of the outer
/// IPv4, G-PDUs with IPv6/UDP and IPv6/ESP inside. Both are the UE's traffic to an edge
/// prefix, so both are broken out: ESP has no ports, but a prefix rule matches it.
#[test]
fn a_double_tagged_n3_capture_with_ipv6_inside_is_broken_out() {
    let dir = workdir();
    let ue = v6("2001:db8:45:1::5");
    let edge = v6("2001:db8:e::10");
    let inner_udp = ipv6(ue, edge, 17, 64, &udp(40000, 443, &[7; 32]));
    let inner_esp = ipv6(ue, edge, 50, 64, &[0x11; 48]);
    let n3 = |inner: &[u8]| {
        n3_v4_tagged(
            &[(0x8100, 100), (0x8100, 200)],
            v4("198.18.1.1"),
            v4("198.18.0.1"),
            &gtp(255, 0x100, None, &[ul_container(9)], inner),
        )
    };
    let frames = [n3(&inner_udp), n3(&inner_esp)];
    write_pcap(&dir.path().join("in.pcap"), &frames);

    let out = replay(dir.path(), "uplink");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("2 frames (uplink): 0 passed, 0 dropped, 2 redirected, 0 not run"),
        "{stderr}"
    );
    let decapsulated = |inner: &[u8]| {
        let mut f = eth([2, 0, 0, 0, 4, 2], [2, 0, 0, 0, 4, 1], 0x86dd);
        f.extend_from_slice(&ttl_minus_one(inner));
        f
    };
    assert_eq!(
        read_pcap(&dir.path().join("out.pcap")),
        vec![decapsulated(&inner_udp), decapsulated(&inner_esp)]
    );
    for (i, v) in verdict_lines(dir.path()).iter().enumerate() {
        assert_eq!(v["reason"], "rule_local", "frame {i}: {v}");
        assert_eq!(v["rule"], 3, "frame {i}: {v}");
        assert_eq!(v["session"], 7, "frame {i}: {v}");
    }
}

#[test]
fn downlink_replay_encapsulates_towards_the_gnb() {
    let dir = workdir();
    let ip = ipv4(
        v4("192.0.2.10"),
        v4("10.45.0.1"),
        17,
        64,
        0,
        &udp(53, 1, b"a"),
    );
    let mut frame = eth([2, 0, 0, 0, 4, 1], [2, 0, 0, 0, 4, 2], 0x0800);
    frame.extend_from_slice(&ip);
    write_pcap(&dir.path().join("in.pcap"), &[frame.clone()]);

    let out = replay(dir.path(), "downlink");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let frames = read_pcap(&dir.path().join("out.pcap"));
    assert_eq!(frames.len(), 1);
    let f = &frames[0];
    assert_eq!(f.len(), frame.len() + 44);
    assert_eq!(
        &f[30..34],
        &v4("198.18.1.1"),
        "outer destination is the session's gNB"
    );
    assert_eq!(&f[46..50], &0x200u32.to_be_bytes(), "downlink TEID");
    assert_eq!(
        internet_checksum(&f[14..34]),
        0,
        "outer IPv4 header checksum"
    );
    assert_eq!(&f[58..], &ttl_minus_one(&ip)[..]);
    let v = verdict_lines(dir.path());
    assert_eq!(v[0]["reason"], "encapsulated");
    assert_eq!(v[0]["session"], 7);
}

#[test]
fn a_bad_tables_file_is_reported_with_file_line_and_column() {
    let dir = workdir();
    std::fs::write(
        dir.path().join("tables.toml"),
        mecgw_tests::tables_with(TABLE_ENTRIES).replace("mtu = 1500", "mtu = 1500\nspeed = 10"),
    )
    .unwrap();
    write_pcap(&dir.path().join("in.pcap"), &[]);
    let out = replay(dir.path(), "uplink");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("tables.toml:8:1: unknown field `speed`"),
        "{stderr}"
    );

    std::fs::write(
        dir.path().join("tables.toml"),
        mecgw_tests::tables_with(TABLE_ENTRIES),
    )
    .unwrap();
    std::fs::write(dir.path().join("in.pcap"), b"not a capture at all, sorry").unwrap();
    let out = replay(dir.path(), "uplink");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("in.pcap: not a pcap file"), "{stderr}");
}

#[test]
fn without_the_privilege_to_load_bpf_it_says_so_plainly() {
    let dir = workdir();
    write_pcap(&dir.path().join("in.pcap"), &[]);
    for f in ["tables.toml", "in.pcap"] {
        std::fs::set_permissions(dir.path().join(f), std::fs::Permissions::from_mode(0o644))
            .unwrap();
    }
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(mecgw_bin().unwrap())
        .arg("replay")
        .arg("--tables")
        .arg(dir.path().join("tables.toml"))
        .arg("--in")
        .arg(dir.path().join("in.pcap"))
        .arg("--out")
        .arg(dir.path().join("out.pcap"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("cannot load the XDP programs into the kernel"),
        "{stderr}"
    );
    assert!(stderr.contains("needs root or CAP_BPF"), "{stderr}");
}

/// `--out` (or `--verdicts`) naming the input is refused before anything is written: the
/// capture is left as it was.
#[test]
fn an_output_that_is_the_input_is_refused_and_the_input_kept() {
    let dir = workdir();
    let mut frame = eth(MAC_A, MAC_B, 0x0806);
    frame.extend_from_slice(&[0; 28]);
    let input = dir.path().join("in.pcap");
    write_pcap(&input, &[frame]);
    let before = std::fs::read(&input).unwrap();
    // The same file by another name, too.
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    for (out, verdicts) in [
        (input.clone(), dir.path().join("v.jsonl")),
        (
            dir.path().join("sub/../in.pcap"),
            dir.path().join("v.jsonl"),
        ),
        (dir.path().join("out.pcap"), input.clone()),
        (dir.path().join("out.pcap"), dir.path().join("out.pcap")),
    ] {
        let o = Command::new(mecgw_bin().unwrap())
            .arg("replay")
            .arg("--tables")
            .arg(dir.path().join("tables.toml"))
            .arg("--in")
            .arg(&input)
            .arg("--out")
            .arg(&out)
            .arg("--verdicts")
            .arg(&verdicts)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{out:?} {verdicts:?}: {stderr}");
        assert!(
            stderr.contains("is the same file as")
                && stderr.contains("give the output another name"),
            "{stderr}"
        );
        assert_eq!(
            std::fs::read(&input).unwrap(),
            before,
            "the input was changed"
        );
    }
}

/// Jumbo G-PDUs are judged whole (the programs are multi-buffer aware): one just at the
/// linear part's limit and an 8000-byte one, which the test run splits into fragments, are
/// both decapsulated; only a frame the kernel truly refuses (more fragments than it takes)
/// is reported as not run, and not written.
#[test]
fn jumbo_frames_are_judged_and_only_what_the_kernel_refuses_is_not_run() {
    let dir = workdir();
    let frame_of = |payload: usize| {
        let inner = ipv4(
            v4("10.45.0.1"),
            v4("192.0.2.10"),
            17,
            64,
            0,
            &udp(1, 53, &vec![0x5a; payload]),
        );
        n3_v4(
            v4("198.18.1.1"),
            v4("198.18.0.1"),
            &gtp(255, 0x100, None, &[ul_container(9)], &inner),
        )
    };
    // Headers: Ethernet 14, IPv4 20, UDP 8, GTP-U 8 + 8 with the container, inner 20 + 8.
    let fits = frame_of(3520 - 86);
    assert_eq!(fits.len(), 3520);
    let jumbo = frame_of(8000);
    // Past 3,520 + 17 fragments of 4,096 bytes: the kernel refuses to run it.
    let refused = vec![0x5a; 80_000];
    write_pcap(
        &dir.path().join("in.pcap"),
        &[fits.clone(), jumbo.clone(), refused.clone()],
    );
    let out = replay(dir.path(), "uplink");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v = verdict_lines(dir.path());
    for i in [0, 1] {
        assert_eq!(v[i]["verdict"], "redirect", "{v:?}");
        assert_eq!(v[i]["reason"], "rule_local", "{v:?}");
    }
    // Decapsulated: the outer headers (14 + 20 + 8 + 16) gone, a new Ethernet header on.
    assert_eq!(v[1]["len_in"], jumbo.len());
    assert_eq!(v[1]["len_out"], jumbo.len() - 58 + 14);
    assert_eq!(v[2]["verdict"], "not_run", "{v:?}");
    assert_eq!(v[2]["reason"], "too_large_for_test_run", "{v:?}");
    assert_eq!(v[2]["len_in"], refused.len());
    let written = read_pcap(&dir.path().join("out.pcap"));
    assert_eq!(written.len(), 2);
    assert_eq!(written[1].len(), jumbo.len() - 58 + 14);
    assert_eq!(&written[1][14..], &ttl_minus_one(&jumbo[58..])[..]);
}
