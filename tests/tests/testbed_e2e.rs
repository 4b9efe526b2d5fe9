//! End to end on the four-namespace testbed: `mecgw run` with its XDP programs attached
//! natively on veth, real traffic from the gNB simulator, real edge services and a core.
//!
//! The testbed's namespace names are fixed, so the scenarios take turns (a lock). Needs root;
//! CI runs as root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Mutex,
    time::Duration,
};

use mecgw_tests::testbed::{self, DatapathChoice, EDGE, Gateway, LOCAL, N3, UPF, metric};

static TESTBED: Mutex<()> = Mutex::new(());

const UES: u32 = 4;

/// Lines of a hex file, as a multiset.
fn hex_lines(path: &Path) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for l in std::fs::read_to_string(path).unwrap_or_default().lines() {
        *m.entry(l.to_string()).or_default() += 1;
    }
    m
}

fn probe(report: &serde_json::Value, name: &str) -> (u64, u64) {
    let r = &report[name];
    (r["sent"].as_u64().unwrap(), r["ok"].as_u64().unwrap())
}

/// A gateway running on a fresh testbed. Fields drop in order: processes, then namespaces.
struct Run {
    gw: Gateway,
    _bed: testbed::Testbed,
    bin: PathBuf,
    /// Every datagram the core received, as hex lines.
    core_seen: PathBuf,
    dir: tempfile::TempDir,
}

fn start_with(ues: u32, rules: &str, datapath: DatapathChoice) -> Run {
    start_configured(ues, rules, datapath, |_| {})
}

/// [`start_with`], with `edit` run on the configuration directory before the gateway starts.
fn start_configured(
    ues: u32,
    rules: &str,
    datapath: DatapathChoice,
    edit: impl FnOnce(&Path),
) -> Run {
    let bin = mecgw_tests::bin_dir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bed = testbed::up().unwrap();
    testbed::write_gateway_config_for(dir.path(), ues, rules, datapath).unwrap();
    edit(dir.path());
    let core_seen = dir.path().join("core.hex");
    let gw = Gateway::start(
        &bin,
        dir.path(),
        1,
        &["--record", &core_seen.to_string_lossy()],
    )
    .unwrap();
    Run {
        gw,
        _bed: bed,
        bin,
        core_seen,
        dir,
    }
}

/// A tshark capture on the gNB's link, in the `ran` namespace.
struct Tshark {
    capture: testbed::Capture,
}

impl Tshark {
    fn start(file: &Path) -> Tshark {
        Tshark {
            capture: testbed::Capture::start(&testbed::GNB, file).unwrap(),
        }
    }

    /// Stops the capture and returns (TEID, PDU type, QFI, inner destination) of every
    /// G-PDU the gateway sent to the gNB, as tshark's GTP dissector reads them.
    fn stop_and_dissect(self) -> Vec<(u32, u8, u8, String)> {
        let file = self.capture.stop().unwrap();
        let out = std::process::Command::new("tshark")
            .arg("-r")
            .arg(&file)
            .args(["-Y", &format!("ip.src == {} && gtp.message == 255", N3.v4)])
            .args(["-T", "fields", "-E", "occurrence=l", "-E", "separator=,"])
            .args(["-e", "gtp.teid", "-e", "gtp.ext_hdr.pdu_ses_con.pdu_type"])
            .args([
                "-e",
                "gtp.ext_hdr.pdu_ses_con.qos_flow_id",
                "-e",
                "ip.dst",
                "-e",
                "ipv6.dst",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                let num = |s: &str| -> u32 {
                    match s.strip_prefix("0x") {
                        Some(h) => u32::from_str_radix(h, 16),
                        None => s.parse(),
                    }
                    .unwrap_or_else(|_| panic!("tshark field {s:?} in {l:?}"))
                };
                let inner = if f[4].is_empty() { f[3] } else { f[4] };
                (
                    num(f[0]),
                    num(f[1]) as u8,
                    num(f[2]) as u8,
                    inner.to_string(),
                )
            })
            .collect()
    }
}

const LOCAL_EDGE_RULE: &str = "[[rules]]\nid = 10\npriority = 10\naction = \"LOCAL\"\n\
                               dst = [\"198.18.1.0/24\", \"2001:db8:0:1::/64\"]\n";

#[test]
fn local_breakout_of_udp_icmp_and_tcp_over_ipv4_and_ipv6() {
    let _turn = TESTBED.lock().unwrap_or_else(|p| p.into_inner());
    local_breakout(DatapathChoice::Native);
}

/// The same scenario with the reference model over AF_PACKET: the same answers, counters and
/// encapsulation, nothing for the edge reaching the core (the kernel's copies of redirected
/// frames are blackholed), and no XDP program anywhere.
#[test]
fn local_breakout_of_udp_icmp_and_tcp_over_ipv4_and_ipv6_with_the_userspace_datapath() {
    let _turn = TESTBED.lock().unwrap_or_else(|p| p.into_inner());
    local_breakout(DatapathChoice::Userspace);
}

fn local_breakout(datapath: DatapathChoice) {
    let mut run = start_with(UES, LOCAL_EDGE_RULE, datapath);
    assert_eq!(
        testbed::xdp_attached(&N3).unwrap(),
        datapath != DatapathChoice::Userspace,
        "XDP on N3 with the {} datapath",
        datapath.name()
    );

    // tshark dissects what reaches the gNB: an independent check of our encapsulation.
    let capture = run.dir.path().join("gnb.pcapng");
    let tshark = Tshark::start(&capture);

    let edge6 = format!("[{}]", EDGE.v6);
    let probes = [
        format!("udp4=udp:{}:7", EDGE.v4),
        format!("udp6=udp:{edge6}:7"),
        format!("icmp4=icmp:{}", EDGE.v4),
        format!("icmp6=icmp:{}", EDGE.v6),
        format!("tcp4=tcp:{}:8080", EDGE.v4),
        format!("tcp6=tcp:{edge6}:8080"),
    ];
    let mut args = vec!["--upf", UPF.v4, "--ues", "4", "--count", "5"];
    for p in &probes {
        args.extend(["--probe", p.as_str()]);
    }
    let report = testbed::gnbsim(&run.bin, &args).unwrap();

    for name in ["udp4", "udp6", "icmp4", "icmp6", "tcp4", "tcp6"] {
        let (sent, ok) = probe(&report, name);
        assert_eq!(sent, 20, "{name}");
        assert_eq!(
            ok, sent,
            "{name}: every answer must arrive, checked: {report}"
        );
    }
    let metrics = testbed::ops_get("/metrics").unwrap().unwrap();
    // UDP and ICMP: one uplink packet each; a TCP connection: SYN, data, FIN, last ACK.
    let uplink = 4 * 20 + 2 * 20 * 4;
    assert_eq!(
        metric(&metrics, "mecgw_rule_packets_total", "rule=\"10\""),
        uplink
    );
    assert!(
        hex_lines(&run.core_seen).is_empty(),
        "traffic for the edge must not reach the core"
    );
    let downlink = tshark.stop_and_dissect();
    // Every answer (UDP, ICMP: one each; TCP: SYN-ACK, data, FIN at least) came back encapsulated.
    assert!(
        downlink.len() >= 4 * 20 + 2 * 20 * 3,
        "{} frames",
        downlink.len()
    );
    for (teid, pdu_type, qfi, inner_dst) in &downlink {
        let ue = teid - testbed::DL_TEID_BASE;
        assert!(ue < UES, "TEID {teid:#x} is no session's downlink TEID");
        let v4 = std::net::IpAddr::from([198, 19, 0, (ue + 1) as u8]);
        let v6 = std::net::IpAddr::from([0x2001, 0xdb8, 0x100, ue as u16, 0, 0, 0, 1]);
        let dst: std::net::IpAddr = inner_dst.parse().unwrap();
        assert!(
            dst == v4 || dst == v6,
            "TEID {teid:#x} carried a packet for {inner_dst}"
        );
        assert_eq!(
            (*pdu_type, *qfi),
            (0, testbed::QFI),
            "container of TEID {teid:#x}"
        );
    }
    assert!(run.gw.stop().unwrap().success());
    if datapath == DatapathChoice::Userspace {
        assert_userspace_arrangement_removed();
    }
}

/// The next hop from the kernel's FIB on both sides (`next_hop = "fib"`, issue #15): the
/// gateway starts without neighbour entries, so the first packets each way go to the kernel
/// (`next_hop_unresolved`), which resolves the neighbours; then the edge service's host is
/// replaced by one with another MAC while the gateway runs, and its neighbour entry changes
/// (IPv4: `ip neigh replace`, as a gratuitous ARP would; IPv6: deleted, so resolved anew).
/// Every probe after the change is answered: the breakout follows the new MAC, with nothing
/// reloaded. With a fixed `next_hop_mac` the edge would drop every frame still sent to the old
/// MAC, and no probe after the change would be answered.
#[test]
fn with_the_fib_next_hop_breakout_follows_the_edges_new_mac() {
    let _turn = TESTBED.lock().unwrap_or_else(|p| p.into_inner());
    let mut run = start_configured(UES, LOCAL_EDGE_RULE, DatapathChoice::Native, |dir| {
        let path = dir.join("tables.toml");
        let tables = std::fs::read_to_string(&path).unwrap();
        let fib = tables
            .replace(
                &format!("next_hop_mac = \"{}\"", testbed::GNB.mac),
                "next_hop = \"fib\"",
            )
            .replace(
                &format!("next_hop_mac = \"{}\"", EDGE.mac),
                "next_hop = \"fib\"",
            );
        assert_eq!(fib.matches("next_hop = \"fib\"").count(), 2, "{fib}");
        std::fs::write(&path, fib).unwrap();
    });
    // What the kernel needs to forward what the fast path passes it unresolved
    // (docs/fastpath.md, "Next hop from the FIB"): a decapsulated packet from a UE, which
    // the gateway host has no route back to, on N3; an encapsulated one from our own N3
    // address on the local side.
    let mec = testbed::NS_MEC;
    for knob in [
        "net.ipv4.conf.all.rp_filter=0".to_string(),
        format!("net.ipv4.conf.{}.rp_filter=0", N3.link),
        format!("net.ipv4.conf.{}.rp_filter=0", LOCAL.link),
        format!("net.ipv4.conf.{}.accept_local=1", LOCAL.link),
    ] {
        testbed::run(&["ip", "netns", "exec", mec, "sysctl", "-qw", &knob]).unwrap();
    }
    let edge6 = format!("[{}]", EDGE.v6);
    let probes = [
        format!("udp4=udp:{}:7", EDGE.v4),
        format!("udp6=udp:{edge6}:7"),
        format!("icmp4=icmp:{}", EDGE.v4),
    ];
    let round = |run: &Run, which: &str| {
        let mut args = vec!["--upf", UPF.v4, "--ues", "4", "--count", "5"];
        for p in &probes {
            args.extend(["--probe", p.as_str()]);
        }
        let report = testbed::gnbsim(&run.bin, &args).unwrap();
        for name in ["udp4", "udp6", "icmp4"] {
            let (sent, ok) = probe(&report, name);
            assert_eq!(sent, 20, "{name}");
            assert_eq!(
                ok, sent,
                "{which}, {name}: every answer must arrive: {report}"
            );
        }
        let metrics = testbed::ops_get("/metrics").unwrap().unwrap();
        let reason = |r: &str| {
            metric(
                &metrics,
                "mecgw_fastpath_reason_packets_total",
                &format!("reason=\"{r}\""),
            )
        };
        (
            reason("rule_local"),
            reason("encapsulated"),
            reason("next_hop_unresolved"),
        )
    };
    // The kernel sends a Neighbour Solicitation only from a link-local address that is no
    // longer tentative: on links made a moment ago, wait for its duplicate-address detection,
    // or the first IPv6 packet waits a retransmission (1 s) for its neighbour.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = testbed::capture(&[
            "ip",
            "-n",
            mec,
            "-6",
            "addr",
            "show",
            "dev",
            LOCAL.link,
            "tentative",
        ])
        .unwrap();
        if out.stdout.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} still has a tentative address",
            LOCAL.link
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (local, encapsulated, unresolved) = round(&run, "before the change");
    assert!(
        unresolved >= 1,
        "the first packets found no neighbour and went to the kernel"
    );
    assert!(local > 0 && encapsulated > 0, "{local} {encapsulated}");

    // The daemon's fast path keeps the FIB's answers, and listens to the kernel's reports
    // in its namespace to drop them.
    let fib_changes = || {
        let metrics = testbed::ops_get("/metrics").unwrap().unwrap();
        assert_eq!(
            testbed::sample_value(&metrics, "mecgw_fastpath_fib_watch"),
            Some(1),
            "the FIB watch runs"
        );
        testbed::sample_value(&metrics, "mecgw_fastpath_fib_changes_total").unwrap()
    };
    let changes = fib_changes();
    let new_mac = "02:6d:67:00:01:77";
    testbed::run(&[
        "ip", "-n", EDGE.netns, "link", "set", "dev", EDGE.link, "address", new_mac,
    ])
    .unwrap();
    testbed::run(&[
        "ip",
        "-n",
        mec,
        "neigh",
        "replace",
        EDGE.v4,
        "lladdr",
        new_mac,
        "dev",
        LOCAL.link,
        "nud",
        "reachable",
    ])
    .unwrap();
    testbed::run(&["ip", "-n", mec, "neigh", "del", EDGE.v6, "dev", LOCAL.link]).unwrap();
    let (local_after, encapsulated_after, _) = round(&run, "after the change");
    // Broken out by the fast path itself after the change, not only by the kernel.
    assert!(local_after > local, "{local} -> {local_after}");
    assert!(
        fib_changes() > changes,
        "the FIB watch saw reports while the neighbour changed"
    );
    assert!(encapsulated_after > encapsulated);
    assert!(
        hex_lines(&run.core_seen).is_empty(),
        "traffic for the edge must not reach the core"
    );
    assert!(run.gw.stop().unwrap().success());
}

/// Stopping the userspace datapath removes its rules, routes and TUN.
fn assert_userspace_arrangement_removed() {
    for family in ["-4", "-6"] {
        let rules = testbed::capture(&["ip", "-netns", testbed::NS_MEC, family, "rule"]).unwrap();
        let rules = String::from_utf8_lossy(&rules.stdout);
        assert!(
            !rules.contains("blackhole") && !rules.contains("2152"),
            "{rules}"
        );
    }
    let tun = testbed::capture(&[
        "ip",
        "-netns",
        testbed::NS_MEC,
        "link",
        "show",
        "mgw-us-pass",
    ])
    .unwrap();
    assert!(!tun.status.success(), "the TUN mgw-us-pass is still there");
}

#[test]
fn passthrough_traffic_reaches_the_core_byte_for_byte() {
    let _turn = TESTBED.lock().unwrap_or_else(|p| p.into_inner());
    passthrough(DatapathChoice::Native);
}

/// With the userspace datapath, passed G-PDUs reach the kernel through its TUN (the kernel's
/// own copies are blackholed): they must still arrive at the core byte for byte, once each.
#[test]
fn passthrough_traffic_reaches_the_core_byte_for_byte_with_the_userspace_datapath() {
    let _turn = TESTBED.lock().unwrap_or_else(|p| p.into_inner());
    passthrough(DatapathChoice::Userspace);
}

fn passthrough(datapath: DatapathChoice) {
    let mut run = start_with(UES, LOCAL_EDGE_RULE, datapath);
    let sent = run.dir.path().join("sent.hex");

    let report = testbed::gnbsim(
        &run.bin,
        &[
            "--upf",
            UPF.v4,
            "--ues",
            "4",
            "--count",
            "5",
            "--record",
            &sent.to_string_lossy(),
            "--probe",
            &format!("udp=udp:{}:9", UPF.v4),
            "--probe",
            &format!("icmp=icmp:{}", UPF.v4),
            "--probe",
            &format!("udp6=udp:[{}]:9", UPF.v6),
        ],
    )
    .unwrap();
    for name in ["udp", "icmp", "udp6"] {
        let (sent, ok) = probe(&report, name);
        assert_eq!(ok, sent, "{name}: {report}");
    }
    let sent = hex_lines(&sent);
    let seen = hex_lines(&run.core_seen);
    assert_eq!(sent.values().sum::<usize>(), 60);
    assert_eq!(
        seen, sent,
        "the core must receive exactly what the gNB sent"
    );
    let metrics = testbed::ops_get("/metrics").unwrap().unwrap();
    assert_eq!(
        metric(
            &metrics,
            "mecgw_fastpath_reason_packets_total",
            "reason=\"no_rule\""
        ),
        60
    );
    assert!(run.gw.stop().unwrap().success());
}

#[test]
fn a_rule_switched_from_passthrough_to_local_mid_stream_loses_no_packet() {
    let _turn = TESTBED.lock().unwrap_or_else(|p| p.into_inner());
    rule_switch(DatapathChoice::Native);
}

/// SIGHUP swaps the userspace datapath's model as it swaps the XDP tables.
#[test]
fn a_rule_switched_from_passthrough_to_local_mid_stream_loses_no_packet_with_the_userspace_datapath()
 {
    let _turn = TESTBED.lock().unwrap_or_else(|p| p.into_inner());
    rule_switch(DatapathChoice::Userspace);
}

fn rule_switch(datapath: DatapathChoice) {
    let bin = mecgw_tests::bin_dir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let _bed = testbed::up().unwrap();
    // Rule 20 (priority 5) passes the edge host to the core; rule 10 would steer it locally.
    let passthrough = format!(
        "{LOCAL_EDGE_RULE}\n[[rules]]\nid = 20\npriority = 5\naction = \"PASSTHROUGH\"\n\
         dst = [\"198.18.1.2/32\"]\n"
    );
    testbed::write_gateway_config_for(dir.path(), 1, &passthrough, datapath).unwrap();
    let mut gw = Gateway::start(&bin, dir.path(), 1, &[]).unwrap();

    let sim_bin = bin.clone();
    let sim = std::thread::spawn(move || {
        testbed::gnbsim(
            &sim_bin,
            &[
                "--upf",
                UPF.v4,
                "--ues",
                "1",
                "--count",
                "400",
                "--interval-ms",
                "5",
                "--probe",
                &format!("edge=udp:{}:7", EDGE.v4),
            ],
        )
    });
    // Switch while the stream runs: the same file with rule 20 now INACTIVE.
    std::thread::sleep(Duration::from_millis(800));
    let switched = passthrough.replace(
        "id = 20\npriority = 5\n",
        "id = 20\npriority = 5\nstate = \"INACTIVE\"\n",
    );
    assert_ne!(switched, passthrough);
    testbed::write_tables(dir.path(), 1, &switched).unwrap();
    gw.children.signal(gw.mecgw, libc::SIGHUP).unwrap();
    let report = sim.join().unwrap().unwrap();

    let (sent, ok) = probe(&report, "edge");
    assert_eq!(
        (sent, ok),
        (400, 400),
        "a packet was lost across the switch: {report}"
    );
    let metrics = testbed::ops_get("/metrics").unwrap().unwrap();
    let before = metric(&metrics, "mecgw_rule_packets_total", "rule=\"20\"");
    let after = metric(&metrics, "mecgw_rule_packets_total", "rule=\"10\"");
    assert_eq!(metric(&metrics, "mecgw_reloads_total", "result=\"ok\""), 1);
    assert!(
        before > 0 && after > 0,
        "both rules must have judged part of the stream"
    );
    assert_eq!(
        before + after,
        400,
        "every packet judged by exactly one of the two"
    );
    assert!(gw.stop().unwrap().success());
}

#[test]
fn restarting_or_killing_the_gateway_leaves_nothing_behind_once_the_testbed_goes() {
    let _turn = TESTBED.lock().unwrap_or_else(|p| p.into_inner());
    let bin = mecgw_tests::bin_dir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bed = testbed::up().unwrap();
    testbed::write_gateway_config(dir.path(), 1, LOCAL_EDGE_RULE, "native").unwrap();
    let mut gw = Gateway::start(&bin, dir.path(), 1, &[]).unwrap();
    assert!(testbed::xdp_attached(&N3).unwrap() && testbed::xdp_attached(&LOCAL).unwrap());

    assert!(gw.stop().unwrap().success());
    assert!(!testbed::xdp_attached(&N3).unwrap() && !testbed::xdp_attached(&LOCAL).unwrap());

    // A restart attaches again (nothing stale is in the way). SIGKILL leaves the programs
    // forwarding (their links are pinned: daemon_hitless.rs), and the testbed's teardown
    // removes the pins with the namespaces, so nothing stays in the kernel.
    gw.restart(&bin, dir.path()).unwrap();
    assert!(testbed::xdp_attached(&N3).unwrap());
    gw.children.signal(gw.mecgw, libc::SIGKILL).unwrap();
    let start = std::time::Instant::now();
    while gw.children.exited(gw.mecgw).unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(testbed::xdp_attached(&N3).unwrap() && testbed::xdp_attached(&LOCAL).unwrap());
    use std::os::unix::fs::MetadataExt as _;
    let inode = std::fs::metadata(Path::new("/run/netns").join(testbed::NS_MEC))
        .unwrap()
        .ino();
    let pins = Path::new(testbed::PIN_ROOT).join(format!("net-{inode}"));
    assert!(pins.join("links").join(N3.link).exists(), "{pins:?}");

    drop(gw);
    drop(bed);
    for ns in testbed::NAMESPACES {
        let out = testbed::capture(&["ip", "netns", "pids", ns]).unwrap();
        assert!(!out.status.success(), "namespace {ns} left behind");
    }
    assert!(!pins.exists(), "pins left behind: {pins:?}");
}
