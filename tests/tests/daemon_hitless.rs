//! Hitless restart and upgrade on the four-namespace testbed: a steady stream of local
//! breakout traffic from the gNB simulator (uplink decapsulated to the edge echo service,
//! its answers encapsulated back downlink) keeps flowing, with not one packet lost, while
//! `mecgw run` is killed with SIGKILL and started again, and while it is stopped with
//! keep_datapath and replaced by a daemon whose programs differ (flow accounting on: other
//! code paths survive the verifier), and while that one is killed with SIGKILL in turn (its
//! successor adopts the flows it counted and did not harvest). Every answer must come back
//! through the gateway's own local breakout (outer source N3), none through the core. Afterwards `mecgw datapath detach`
//! takes the programs off. Needs root; CI runs as root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use mecgw_tests::testbed::{self, DatapathChoice, EDGE, Gateway, LOCAL, N3, NS_MEC, UPF};

const UES: u32 = 4;
const RULES: &str = "[[rules]]\nid = 10\npriority = 10\naction = \"LOCAL\"\n\
                     dst = [\"198.18.1.0/24\", \"2001:db8:0:1::/64\"]\n";
/// Offered rate and length of the stream: long enough for both restarts on a loaded
/// 2-core machine (checked below, so that a slow start fails loudly instead of proving
/// nothing).
const RATE: u64 = 2_000;
const SECONDS: u64 = 20;

/// A policy that takes `flow` records: with it the daemon loads its programs with flow
/// accounting, a different program from the one without.
const FLOW_POLICY: &str = r#"version: 1
name: hitless upgrade test
budget: {period: 1d, epsilon: 1.0, delta: 1e-6}
keys:
  subscriber: {path: keys/app.key, rotation: 1d}
kinds:
  flow:
    privacy_unit: imsi
    time: start
    fields:
      imsi: string
      packets_up: integer
      start: timestamp
    transforms:
      imsi: {pseudonymise: {key: subscriber}}
      packets_up: keep
      start: {bucket: {width: 1m}}
destinations:
  analytics: {region: EU-DE, kinds: [flow]}
"#;

/// What `ip -details link show` says of `link`'s XDP program: its id, if one is attached.
fn xdp_program(netns: &str, link: &str) -> Option<u32> {
    let out = Command::new("ip")
        .args(["-netns", netns, "-details", "link", "show", link])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let after = text.split("prog/xdp id ").nth(1)?;
    after.split_whitespace().next()?.parse().ok()
}

fn programs() -> (Option<u32>, Option<u32>) {
    (
        xdp_program(NS_MEC, N3.link),
        xdp_program(NS_MEC, LOCAL.link),
    )
}

fn mecgw_in_mec(bin: &Path, args: &[&str]) -> String {
    let out = testbed::netns_cmd(NS_MEC, &bin.join("mecgw"), args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mecgw {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_exit(gw: &mut Gateway) {
    let start = Instant::now();
    while gw.children.exited(gw.mecgw).unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "mecgw did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Turns flow accounting on: a policy with a `flow` kind, its key, a file sink.
fn enable_flow_accounting(dir: &Path) {
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    std::fs::write(
        dir.join("keys/app.key"),
        "6d656367772d6461656d6f6e2d746573742d6b65792d6e6f742d7265616c2121\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(
        dir.join("keys/app.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(dir.join("policy.yaml"), FLOW_POLICY).unwrap();
    let mut config = std::fs::read_to_string(dir.join("mecgw.toml")).unwrap();
    config.push_str(
        "\n[policy]\nfile = \"policy.yaml\"\n\n[flows]\nenabled = true\ninterval_secs = 1\n\n\
         [egress]\n[[egress.destinations]]\nname = \"analytics\"\nregion = \"EU-DE\"\n\
         sink = { type = \"file\", dir = \"out\" }\n",
    );
    std::fs::write(dir.join("mecgw.toml"), config).unwrap();
}

#[test]
fn no_packet_is_lost_across_kill_9_restart_and_an_upgrade_with_changed_programs() {
    let bin = mecgw_tests::bin_dir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let _bed = testbed::up().unwrap();
    testbed::write_gateway_config_for(dir.path(), UES, RULES, DatapathChoice::Native).unwrap();
    let config = std::fs::read_to_string(dir.path().join("mecgw.toml")).unwrap();
    let config = config.replace("[xdp]\n", "[xdp]\nkeep_datapath = true\n");
    std::fs::write(dir.path().join("mecgw.toml"), config).unwrap();
    let log = dir.path().join("mecgw.log");
    let mut gw = Gateway::start_logging(&bin, dir.path(), 1, &[], &log).unwrap();
    let (n3_first, local_first) = programs();
    assert!(n3_first.is_some() && local_first.is_some());

    // Warm up (neighbours resolved), and check that the path is the local breakout.
    let warm = blast(&bin, 200, 2_000);
    assert_eq!(warm.local, warm.sent, "warm-up: {warm:?}");

    let stream = {
        let bin = bin.clone();
        std::thread::spawn(move || blast(&bin, RATE * SECONDS, RATE))
    };
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(2));

    // 1. SIGKILL: nothing runs its shutdown; the pinned links keep the programs attached.
    gw.children.signal(gw.mecgw, libc::SIGKILL).unwrap();
    wait_exit(&mut gw);
    assert_eq!(
        programs(),
        (n3_first, local_first),
        "the programs must stay attached after kill -9"
    );
    std::thread::sleep(Duration::from_millis(500));
    gw.restart(&bin, dir.path()).unwrap();
    let (n3_second, local_second) = programs();
    assert!(
        n3_second != n3_first && local_second != local_first,
        "the restarted daemon's programs must replace the killed one's: {n3_first:?} {n3_second:?}"
    );
    let after_kill = started.elapsed();

    // 2. Upgrade: stop with keep_datapath, start a daemon whose programs differ.
    std::thread::sleep(Duration::from_secs(1));
    enable_flow_accounting(dir.path());
    let status = gw.stop().unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(
        programs(),
        (n3_second, local_second),
        "keep_datapath: the programs stay attached after SIGTERM"
    );
    gw.restart(&bin, dir.path()).unwrap();
    let (n3_third, local_third) = programs();
    assert!(n3_third != n3_second && local_third != local_second);
    let after_upgrade = started.elapsed();
    let metrics = testbed::ops_get("/metrics").unwrap().unwrap();
    assert!(
        metrics.contains("mecgw_flow"),
        "the upgraded daemon counts flows"
    );

    // 3. SIGKILL of a daemon that counts flows: the next one adopts what it counted since
    // its last harvest (fastpath_flows.rs checks the counts exactly).
    std::thread::sleep(Duration::from_millis(1500));
    gw.children.signal(gw.mecgw, libc::SIGKILL).unwrap();
    wait_exit(&mut gw);
    gw.restart(&bin, dir.path()).unwrap();
    let after_second_kill = started.elapsed();
    assert!(
        after_second_kill + Duration::from_secs(1) < Duration::from_secs(SECONDS),
        "the restarts took {after_second_kill:?}, too long for the {SECONDS} s stream to cover them"
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    let adopted = logged
        .lines()
        .rfind(|l| l.contains("flows counted by the previous instance adopted"))
        .unwrap_or_else(|| panic!("no adoption logged:\n{logged}"));
    assert!(
        !adopted.contains(" flows=0 ") && adopted.contains("unreadable_maps=0"),
        "{adopted}"
    );

    let report = stream.join().unwrap();
    eprintln!(
        "hitless: {report:?}; kill -9 + restart done at {after_kill:?}, upgrade at \
         {after_upgrade:?}, second kill -9 + restart at {after_second_kill:?}"
    );
    assert_eq!(
        report.sent,
        RATE * SECONDS,
        "the sender sent everything: {report:?}"
    );
    assert_eq!(
        report.local, report.sent,
        "every G-PDU must be answered through the gateway's local breakout: {report:?}"
    );
    assert_eq!(report.core, 0, "nothing may take the core path: {report:?}");

    // Every packet since the first start, counted by four instances, is on /metrics: each
    // carried the previous one's counters over (fastpath_restart.rs checks them per rule and
    // session).
    let metrics = testbed::ops_get("/metrics").unwrap().unwrap();
    let reason = |r: &str| {
        testbed::sample_value(
            &metrics,
            &format!("mecgw_fastpath_reason_packets_total{{reason=\"{r}\"}}"),
        )
    };
    assert_eq!(
        (reason("rule_local"), reason("encapsulated")),
        (
            Some(warm.sent + report.sent),
            Some(warm.local + report.local)
        ),
        "the fast path's counters across three restarts"
    );
    let carried = logged
        .lines()
        .filter(|l| l.contains("the previous instance's counters carried over"))
        .count();
    assert_eq!(carried, 3, "{logged}");

    // Only the running instance's pins are left; the previous three were released.
    let config = dir.path().join("mecgw.toml");
    let config = config.to_str().unwrap();
    let status = mecgw_in_mec(&bin, &["datapath", "status", "--config", config]);
    assert_eq!(status.matches("\ninstance ").count(), 1, "{status}");
    assert_eq!(status.matches("\nlink ").count(), 2, "{status}");

    // 3. Stopped with keep_datapath, then detached on purpose.
    gw.stop().unwrap();
    assert!(programs().0.is_some(), "keep_datapath leaves the programs");
    let out = mecgw_in_mec(&bin, &["datapath", "detach", "--config", config]);
    assert!(out.contains(N3.link) && out.contains(LOCAL.link), "{out}");
    assert_eq!(programs(), (None, None), "detach takes the programs off");
    let out = mecgw_in_mec(
        &bin,
        &["datapath", "detach", "--pin-dir", testbed::PIN_ROOT],
    );
    assert!(out.contains("nothing pinned"), "{out}");
}

#[derive(Debug)]
struct Blast {
    sent: u64,
    /// Answers whose downlink G-PDU came from the gateway's N3 address (local breakout).
    local: u64,
    /// Answers that came through the core instead.
    core: u64,
}

fn blast(bin: &Path, packets: u64, rate: u64) -> Blast {
    let probe = format!("blast=udp:{}:7", EDGE.v4);
    let report = testbed::gnbsim(
        bin,
        &[
            "--upf",
            UPF.v4,
            "--ues",
            &UES.to_string(),
            "--probe",
            &probe,
            "--blast",
            &packets.to_string(),
            "--rate",
            &rate.to_string(),
        ],
    )
    .unwrap();
    let b = &report["blast"];
    let from = |addr: &str| b["answered_from"][addr].as_u64().unwrap_or(0);
    Blast {
        sent: b["sent"].as_u64().unwrap(),
        local: from(N3.v4),
        core: from(UPF.v4),
    }
}
