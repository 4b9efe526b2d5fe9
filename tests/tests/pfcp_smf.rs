//! mecgw programmed over PFCP (N4, TS 29.244) by an independent SMF, on the four-namespace
//! testbed: `mecgw run` with a `[pfcp]` section and a tables file without sessions, the test
//! SMF (`testbed/pfcp/smf.py`, scapy's PFCP layers only) in the core namespace, and real
//! GTP-U from the gNB simulator steered by the sessions the SMF set up.
//!
//! The UL CL session shape is REFERENCE.md §1 (see `mecgw_testbed::smf::UlclSession`): edge
//! traffic (an SDF filter for the edge prefix) is decapsulated to the local services, whose
//! answers mecgw encapsulates towards the gNB; the rest goes to the core stand-in, re-tunnelled
//! to it as a PSA ("psa": the gNB sends to mecgw's N3 address and TEID) or unchanged ("pass":
//! the gNB addresses the PSA with mecgw's TEID, mecgw a bump in the wire). Downlink G-PDUs
//! the gNB receives from mecgw's N3 address were encapsulated by mecgw; those from the core's
//! address came straight from the PSA.
//!
//! The testbed's names are fixed, so the scenarios take turns (a lock). Needs root and
//! python3 with scapy (`cargo xtask setup`); CI runs as root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant},
};

use mecgw_pfcp::{
    ie::{ApplyAction, FTeid, Interface},
    message::Message,
};
use mecgw_tests::{
    packet::{Gtpu, IpPacket},
    testbed::{
        self, DatapathChoice, EDGE, GNB, Gateway, N3, PfcpSettings, UL_TEID_BASE, UPF,
        smf::{CatchAll, Established, SMF_ADDR, Smf, UlclSession, usage_totals},
    },
};
use serde_json::{Value, json};

static TESTBED: Mutex<()> = Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TESTBED.lock().unwrap_or_else(|p| p.into_inner())
}

const EDGE4: &str = "198.18.1.0/24";
const EDGE6: &str = "2001:db8:0:1::/64";
/// Addresses of the core namespace besides the SMF's: a second SMF node for the fuzz run,
/// and a node that is not a configured peer.
const FUZZER: &str = "198.18.2.3";
const STRANGER: &str = "198.18.2.9";

// ---------------------------------------------------------------------------------------
// The SMF's messages, offline: both decoders agree they are PFCP.

/// Every request the SMF sends in these tests decodes with mecgw's own codec (which the SMF
/// never uses) to what the SMF was asked to say, and tshark dissects it without an error: the
/// SMF is a fair witness before it is used against the daemon.
#[test]
fn the_smfs_requests_decode_with_mecgws_codec_and_dissect_cleanly_in_tshark() {
    let mut smf = Smf::offline().unwrap();
    let psa = UlclSession::numbered(0, &[EDGE4, EDGE6], true).with_ipv6(0);
    let mut pass = UlclSession::numbered(1, &[EDGE4], false);
    pass.report_period_secs = Some(5);
    pass.volume_threshold = Some(100_000);
    let requests = [
        json!({"cmd": "associate", "recovery_ts": 3_900_000_000u32}),
        json!({"cmd": "heartbeat"}),
        json!({"cmd": "association_update"}),
        psa.to_json(),
        pass.to_json(),
        json!({"cmd": "modify", "seid": 77, "add_edge": ["198.18.1.2/32"], "remove_pdr": [1],
               "update_far": {"far_id": 2, "mode": "psa", "teid": 4096, "addr": UPF.v4},
               "query_urr": [1]}),
        json!({"cmd": "delete", "seid": 77}),
        json!({"cmd": "release"}),
        json!({"cmd": "modify", "seid": 77,
               "update_qer": {"qer_id": 1, "gate": {"ul": "CLOSED", "dl": "OPEN"}, "qfi": 5},
               "remove_qer": [2], "update_urr": {"urr_id": 1, "volume_threshold": 1000}}),
        open5gs(&UlclSession::numbered(2, &[EDGE4], true)),
        json!({"cmd": "modify", "seid": 77,
               "update_far": {"far_id": 3, "mode": "gnb", "teid": 4097, "addr": GNB.v4},
               "update_bar": true, "remove_bar": true}),
    ];
    let mut datagrams = Vec::new();
    for r in &requests {
        let out = smf.call(json!({"cmd": "build", "request": r})).unwrap();
        datagrams.push(hex(out["hex"].as_str().unwrap()));
    }
    let decoded: Vec<Message> = datagrams
        .iter()
        .map(|d| {
            mecgw_pfcp::decode(d)
                .unwrap_or_else(|e| panic!("{e:?}: {}", to_hex(d)))
                .1
        })
        .collect();

    let Message::AssociationSetupRequest(a) = &decoded[0] else {
        panic!("{:?}", decoded[0])
    };
    assert_eq!(a.recovery_time_stamp, 3_900_000_000);
    assert_eq!(
        a.node_id,
        mecgw_pfcp::ie::NodeId::Ipv4("127.0.0.1".parse().unwrap())
    );
    assert!(matches!(decoded[1], Message::HeartbeatRequest(_)));
    assert!(matches!(decoded[2], Message::AssociationUpdateRequest(_)));

    let Message::SessionEstablishmentRequest(e) = &decoded[3] else {
        panic!("{:?}", decoded[3])
    };
    // Two edge PDRs, the catch-all and the downlink PDR; one FAR each kind; a URR; a QER.
    assert_eq!(e.create_pdr.len(), 4);
    assert_eq!((e.create_far.len(), e.create_urr.len()), (3, 1));
    assert_eq!(e.create_qer[0].qfi, Some(testbed::QFI));
    assert_eq!(e.pdn_type, Some(3), "IPv4v6 is 3 (TS 29.244 §8.2.79)");
    assert_eq!(
        e.user_id.as_ref().and_then(|u| u.imsi.clone()),
        Some(testbed::imsi(1))
    );
    let edge = &e.create_pdr[0];
    assert_eq!(edge.pdi.source_interface, Interface::Access);
    assert_eq!(
        edge.pdi.local_f_teid,
        Some(FTeid::Choose {
            ipv4: true,
            ipv6: false,
            choose_id: Some(1)
        })
    );
    assert_eq!(
        edge.pdi.sdf_filters[0].flow_description.as_deref(),
        Some("permit out ip from 198.18.1.0/24 to assigned")
    );
    assert_eq!(
        edge.outer_header_removal.map(|o| o.description),
        Some(0),
        "GTP-U/UDP/IPv4"
    );
    let ue = &edge.pdi.ue_ip_address[0];
    assert_eq!(ue.ipv4, Some("198.19.0.1".parse().unwrap()));
    assert!(!ue.is_destination);
    let downlink = e
        .create_pdr
        .iter()
        .find(|p| p.pdi.source_interface == Interface::SgiLan)
        .unwrap();
    assert!(downlink.pdi.ue_ip_address[0].is_destination);
    let dl_far = e
        .create_far
        .iter()
        .find(|f| Some(f.far_id) == downlink.far_id)
        .unwrap();
    let ohc = dl_far
        .forwarding_parameters
        .as_ref()
        .unwrap()
        .outer_header_creation
        .unwrap();
    assert_eq!(
        (ohc.teid, ohc.ipv4),
        (Some(testbed::DL_TEID_BASE), Some(GNB.v4.parse().unwrap()))
    );
    let catch_far = e.create_far.iter().find(|f| f.far_id == 2).unwrap();
    let psa_ohc = catch_far
        .forwarding_parameters
        .as_ref()
        .unwrap()
        .outer_header_creation
        .unwrap();
    assert_eq!(psa_ohc.teid, Some(UL_TEID_BASE));

    let Message::SessionEstablishmentRequest(e) = &decoded[4] else {
        panic!("{:?}", decoded[4])
    };
    assert_eq!(e.pdn_type, Some(1), "IPv4 is 1 (TS 29.244 §8.2.79)");
    let urr = &e.create_urr[0];
    assert_eq!(urr.measurement_period, Some(5));
    assert_eq!(urr.volume_threshold.and_then(|v| v.total), Some(100_000));
    let catch_far = e.create_far.iter().find(|f| f.far_id == 2).unwrap();
    assert_eq!(
        catch_far
            .forwarding_parameters
            .as_ref()
            .unwrap()
            .outer_header_creation,
        None,
        "the pass catch-all forwards without outer header creation"
    );

    let Message::SessionModificationRequest(m) = &decoded[5] else {
        panic!("{:?}", decoded[5])
    };
    assert_eq!(
        (
            m.remove_pdr.clone(),
            m.create_pdr.len(),
            m.query_urr.clone()
        ),
        (vec![1], 1, vec![1])
    );
    assert_eq!(m.update_far[0].far_id, 2);
    assert!(matches!(decoded[6], Message::SessionDeletionRequest));
    assert!(matches!(decoded[7], Message::AssociationReleaseRequest(_)));
    let Message::SessionModificationRequest(m) = &decoded[8] else {
        panic!("{:?}", decoded[8])
    };
    let q = &m.update_qer[0];
    assert_eq!(
        (q.qer_id, q.gate_status, q.qfi),
        (
            1,
            Some(mecgw_pfcp::ie::GateStatus {
                uplink_open: false,
                downlink_open: true
            }),
            Some(5)
        )
    );
    assert_eq!(m.remove_qer, vec![2]);
    let u = &m.update_urr[0];
    assert_eq!(
        (u.urr_id, u.volume_threshold.and_then(|v| v.total)),
        (1, Some(1000))
    );

    // As Open5GS establishes: the downlink PDR on Core with the UE's address and no F-TEID,
    // its FAR BUFF|NOCP with a BAR ID and no Outer Header Creation (the Create BAR is an IE
    // mecgw's codec skips).
    let Message::SessionEstablishmentRequest(e) = &decoded[9] else {
        panic!("{:?}", decoded[9])
    };
    let dl = e.create_pdr.iter().find(|p| p.pdr_id == 200).unwrap();
    assert_eq!(dl.pdi.source_interface, Interface::Core);
    assert_eq!(dl.pdi.local_f_teid, None);
    assert!(dl.pdi.ue_ip_address[0].is_destination);
    let far = e.create_far.iter().find(|f| f.far_id == 3).unwrap();
    assert_eq!(
        far.apply_action,
        ApplyAction(ApplyAction::BUFF | ApplyAction::NOCP)
    );
    assert_eq!(far.bar_id, Some(1));
    assert_eq!(
        far.forwarding_parameters
            .as_ref()
            .unwrap()
            .outer_header_creation,
        None
    );
    assert!(
        datagrams[9].windows(4).any(|w| w == [0, 85, 0, 10]),
        "a Create BAR (85) holding a BAR ID and a Suggested Buffering Packets Count"
    );
    // ... then forwards once the gNB's tunnel is known.
    let Message::SessionModificationRequest(m) = &decoded[10] else {
        panic!("{:?}", decoded[10])
    };
    let u = &m.update_far[0];
    assert_eq!(
        (u.far_id, u.apply_action),
        (3, Some(ApplyAction(ApplyAction::FORW)))
    );
    let ohc = u
        .update_forwarding_parameters
        .as_ref()
        .unwrap()
        .outer_header_creation
        .unwrap();
    assert_eq!(ohc.ipv4, Some(GNB.v4.parse().unwrap()));

    // tshark, a third implementation: every message dissected, nothing malformed.
    let dir = tempfile::tempdir().unwrap();
    let dump: String = datagrams
        .iter()
        .map(|d| {
            let bytes: Vec<String> = d.iter().map(|b| format!("{b:02x}")).collect();
            format!("000000 {}\n", bytes.join(" "))
        })
        .collect();
    let text = dir.path().join("smf.txt");
    let pcap = dir.path().join("smf.pcap");
    std::fs::write(&text, dump).unwrap();
    let out = std::process::Command::new("text2pcap")
        .args(["-q", "-u", "8805,8805", "-4", "198.18.2.2,198.18.2.1"])
        .arg(&text)
        .arg(&pcap)
        .output()
        .expect("text2pcap (with tshark, installed by cargo xtask setup)");
    assert!(out.status.success(), "{out:?}");
    let out = std::process::Command::new("tshark")
        .arg("-r")
        .arg(&pcap)
        .arg("-V")
        .output()
        .unwrap();
    let dissected = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    for bad in ["Malformed", "Expert Info (Error", "Expert Info (Warning"] {
        assert!(!dissected.contains(bad), "tshark: {bad}:\n{dissected}");
    }
    for name in [
        "PFCP Association Setup Request",
        "PFCP Heartbeat Request",
        "PFCP Association Update Request",
        "PFCP Session Establishment Request",
        "PFCP Session Modification Request",
        "PFCP Session Deletion Request",
        "PFCP Association Release Request",
    ] {
        assert!(dissected.contains(name), "tshark did not see a {name}");
    }
    assert!(dissected.contains("IMSI: 001010000000001"));
    assert!(
        dissected.contains("Flow Description: permit out ip from 2001:db8:0:1::/64 to assigned")
    );
}

/// `session`'s establishment as Open5GS's SMF sends it: the downlink PDR on Source Interface
/// Core with the UE IP Address (mecgw the PSA, no F-TEID), its FAR BUFF|NOCP without Outer
/// Header Creation (the gNB's tunnel is not known yet), a Create BAR and the FAR's BAR ID.
fn open5gs(session: &UlclSession) -> Value {
    let mut cmd = session.to_json();
    cmd["dl_action"] = json!(["BUFF", "NOCP"]);
    cmd["dl_source"] = json!("core");
    cmd["create_bar"] = json!(true);
    cmd
}

/// The SMF's `establish` result as an [`Established`], which must be accepted.
fn established(out: Value) -> Established {
    assert_eq!(out["cause"], 1, "{out}");
    Established {
        teid: u32::try_from(out["teid"].as_u64().unwrap()).unwrap(),
        n3_addr: out["ipv4"].as_str().unwrap().to_string(),
        up_seid: out["up_seid"].as_u64().unwrap(),
        answer: out,
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------
// The testbed.

/// mecgw with `[pfcp]` on a fresh testbed, its edge services and core, and the SMF. Fields
/// drop in order: the SMF, the processes, then the namespaces.
struct Run {
    smf: Smf,
    gw: Gateway,
    _bed: testbed::Testbed,
    bin: PathBuf,
    dir: tempfile::TempDir,
}

impl Run {
    fn start(pfcp: &PfcpSettings) -> Run {
        Run::start_with(pfcp, |_| ())
    }

    /// [`Run::start`], with `configure` changing the gateway's directory (its `mecgw.toml`
    /// written) before the gateway starts.
    fn start_with(pfcp: &PfcpSettings, configure: impl FnOnce(&Path)) -> Run {
        let bin = mecgw_tests::bin_dir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let bed = testbed::up().unwrap();
        testbed::write_gateway_config_pfcp(dir.path(), "", DatapathChoice::Native, pfcp).unwrap();
        configure(dir.path());
        let core_seen = dir.path().join("core.hex");
        // The core answers downlink straight to the gNB, on the TEID of the UE the answer
        // is for (it cannot know mecgw's TEIDs, which "pass" sessions carry to it).
        let gw = Gateway::start_logging(
            &bin,
            dir.path(),
            1,
            &[
                "--record",
                &core_seen.to_string_lossy(),
                "--gnb",
                GNB.v4,
                "--dl-teid-by-ue",
            ],
            &dir.path().join("mecgw.log"),
        )
        .unwrap();
        let smf = Smf::start().unwrap();
        Run {
            smf,
            gw,
            _bed: bed,
            bin,
            dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mecgw.log")).unwrap_or_default()
    }

    /// Every datagram the core received, as hex lines.
    fn core_seen(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("core.hex"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Adds `addr` to the core namespace's link and gives the SMF a socket on it.
    fn add_smf_address(&mut self, addr: &str) {
        testbed::run(&[
            "ip",
            "-n",
            testbed::NS_CORE,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            UPF.link,
        ])
        .unwrap();
        self.smf
            .call(json!({"cmd": "add_address", "addr": addr}))
            .unwrap();
    }

    fn alive(&mut self) -> bool {
        self.gw.children.exited(self.gw.mecgw).unwrap().is_none()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("---- mecgw's log (last lines) ----");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

fn metrics() -> String {
    testbed::ops_get("/metrics")
        .unwrap()
        .expect("/metrics answers")
}

/// The sum of the samples of `name` whose labels include every pair of `labels`.
fn sample_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (set, value) = match rest.strip_prefix('{') {
                Some(r) => r.split_once('}')?,
                None if rest.starts_with(' ') => ("", rest),
                None => return None,
            };
            let has = |(k, v): &(&str, &str)| set.split(',').any(|p| p == format!("{k}=\"{v}\""));
            labels
                .iter()
                .all(has)
                .then(|| value.trim().parse::<f64>().ok())
                .flatten()
        })
        .map(|v| v as u64)
        .sum()
}

/// Waits (up to 30 s, polling) until `done` says so; panics naming `what` otherwise.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "gave up waiting: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A probe of the simulator: `NAME=KIND:ADDR[:PORT]`.
fn probe(name: &str, spec: &str) -> String {
    format!("{name}={spec}")
}

/// UDP and ICMP to the edge service and to the core: one answer each.
fn edge_and_core_probes() -> Vec<String> {
    vec![
        probe("edge-udp", &format!("udp:{}:7", EDGE.v4)),
        probe("edge-icmp", &format!("icmp:{}", EDGE.v4)),
        probe("core-udp", &format!("udp:{}:9", UPF.v4)),
        probe("core-icmp", &format!("icmp:{}", UPF.v4)),
    ]
}

/// Runs the gNB simulator for UEs `first..first + sessions.len()` of the numbering, with the
/// uplink TEIDs mecgw chose, sending uplink G-PDUs to `to`. Returns its report.
fn gnbsim(
    run: &Run,
    first: u32,
    sessions: &[&Established],
    to: &str,
    probes: &[String],
    count: u32,
    timeout_ms: u32,
) -> Value {
    gnbsim_recording(
        run,
        first,
        sessions,
        to,
        probes,
        count,
        timeout_ms,
        None,
        &[],
    )
}

/// [`gnbsim`] for UE 0 of `session` sending to mecgw's N3 address with QFI `qfi` in its
/// uplink containers, and expecting it in every downlink one.
fn gnbsim_qfi(
    run: &Run,
    session: &Established,
    probes: &[String],
    count: u32,
    timeout_ms: u32,
    qfi: u8,
) -> Value {
    let qfi = qfi.to_string();
    gnbsim_recording(
        run,
        0,
        &[session],
        N3.v4,
        probes,
        count,
        timeout_ms,
        None,
        &["--qfi", &qfi],
    )
}

/// [`gnbsim`], recording every uplink datagram sent (hex lines) in `record`, with `extra`
/// arguments for the simulator.
#[allow(clippy::too_many_arguments)]
fn gnbsim_recording(
    run: &Run,
    first: u32,
    sessions: &[&Established],
    to: &str,
    probes: &[String],
    count: u32,
    timeout_ms: u32,
    record: Option<&Path>,
    extra: &[&str],
) -> Value {
    let teids: Vec<String> = sessions.iter().map(|s| format!("{:#x}", s.teid)).collect();
    let ue_v4 = format!("198.19.0.{}", first + 1);
    let dl_base = format!("{:#x}", testbed::DL_TEID_BASE + first);
    let ues = sessions.len().to_string();
    let (count, timeout) = (count.to_string(), timeout_ms.to_string());
    let teids = teids.join(",");
    let mut args = vec![
        "--upf",
        to,
        "--ues",
        &ues,
        "--ul-teids",
        &teids,
        "--ue-v4-base",
        &ue_v4,
        "--dl-teid-base",
        &dl_base,
        "--count",
        &count,
        "--timeout-ms",
        &timeout,
        "--drain-ms",
        "300",
    ];
    let record = record.map(|r| r.to_string_lossy().into_owned());
    if let Some(r) = &record {
        args.extend(["--record", r.as_str()]);
    }
    for p in probes {
        args.extend(["--probe", p.as_str()]);
    }
    args.extend(extra);
    testbed::gnbsim(&run.bin, &args).unwrap()
}

/// (sent, answered) of probe `name`.
fn answered(report: &Value, name: &str) -> (u64, u64) {
    let r = &report[name];
    (r["sent"].as_u64().unwrap(), r["ok"].as_u64().unwrap())
}

/// Asserts every probe of the report was answered, checked.
fn all_answered(report: &Value) {
    for (name, r) in report.as_object().unwrap() {
        if let Some(sent) = r.get("sent").and_then(Value::as_u64) {
            assert!(sent > 0, "{name}");
            assert_eq!(r["ok"].as_u64(), Some(sent), "{name}: {report}");
        }
    }
}

/// What the simulator counted for its UE `i`: (uplink packets, uplink octets), and downlink
/// (packets, octets) by outer source address.
struct UeVolume {
    ul: (u64, u64),
    dl: HashMap<String, (u64, u64)>,
}

impl UeVolume {
    fn of(report: &Value, i: usize) -> UeVolume {
        let ue = &report["ues"][i];
        let pair = |v: &Value| {
            (
                v["packets"].as_u64().unwrap(),
                v["octets"].as_u64().unwrap(),
            )
        };
        UeVolume {
            ul: pair(&ue["uplink"]),
            dl: ue["downlink"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), pair(v)))
                .collect(),
        }
    }

    /// Downlink (packets, octets) encapsulated by mecgw (from its N3 address).
    fn encapsulated_by_mecgw(&self) -> (u64, u64) {
        self.dl.get(N3.v4).copied().unwrap_or_default()
    }

    /// Downlink (packets, octets) straight from the core.
    fn straight_from_core(&self) -> (u64, u64) {
        self.dl.get(UPF.v4).copied().unwrap_or_default()
    }

    fn sources(&self) -> Vec<&str> {
        let mut s: Vec<&str> = self.dl.keys().map(String::as_str).collect();
        s.sort();
        s
    }
}

/// The inner IP packet of a G-PDU given as hex, with its TEID.
fn inner_of(hex_line: &str) -> Option<(u32, Vec<u8>)> {
    let bytes = hex(hex_line);
    let m = Gtpu::parse(&bytes).ok()?;
    (m.msg_type == 255).then(|| (m.teid, m.payload.clone()))
}

fn inner_dst(inner: &[u8]) -> IpAddr {
    IpPacket::parse(inner).unwrap().dst
}

// ---------------------------------------------------------------------------------------
// Node procedures.

/// Association Setup and Release, heartbeats both ways, and what mecgw says of them on
/// /metrics: the SMF answers mecgw's Heartbeat Requests (counted on both sides), mecgw answers
/// the SMF's with the Recovery Time Stamp of its Association Setup Response; Release deletes
/// the association's sessions, after which session messages get Cause 72.
#[test]
fn association_and_heartbeats_both_ways() {
    let _turn = turn();
    let mut run = Run::start(&PfcpSettings {
        heartbeat_interval_secs: 1,
        ..PfcpSettings::default()
    });

    let assoc = run.smf.associate(Some(3_900_000_001)).unwrap();
    assert_eq!(assoc["node_id"], testbed::smf::MECGW_PFCP_ADDR, "{assoc}");
    assert_eq!(assoc["ftup"], true, "mecgw advertises FTUP: {assoc}");
    // FTUP and nothing else (§8.2.25: FTUP is octet 5 bit 5).
    let features = hex(assoc["up_features"].as_str().unwrap());
    assert_eq!(features.first(), Some(&0x10), "{assoc}");
    assert!(features[1..].iter().all(|&b| b == 0), "{assoc}");
    let mecgw_ts = assoc["recovery_ts"].as_u64().unwrap();
    assert!(mecgw_ts > 3_000_000_000, "an NTP time stamp: {assoc}");

    // The SMF's heartbeat: answered with the same Recovery Time Stamp.
    let hb = run.smf.call(json!({"cmd": "heartbeat"})).unwrap();
    assert_eq!(hb["answered"], true, "{hb}");
    assert_eq!(hb["recovery_ts"].as_u64(), Some(mecgw_ts));
    assert_eq!(hb["type"], 2);

    // mecgw's heartbeats (every second here): answered by the SMF, which reads mecgw's
    // Recovery Time Stamp in them.
    let seen = run
        .smf
        .call(json!({"cmd": "wait", "heartbeats_answered": 3, "timeout_ms": 20_000}))
        .unwrap();
    assert_eq!(seen["reached"], true, "{seen}");
    assert_eq!(seen["mecgw_recovery_ts"].as_u64(), Some(mecgw_ts));

    let m = metrics();
    assert_eq!(sample_sum(&m, "mecgw_pfcp_associations", &[]), 1, "{m}");
    assert!(
        sample_sum(
            &m,
            "mecgw_pfcp_messages_total",
            &[("message", "heartbeat_request"), ("direction", "out")]
        ) >= 3,
        "{m}"
    );
    assert!(
        sample_sum(
            &m,
            "mecgw_pfcp_messages_total",
            &[("message", "heartbeat_response"), ("direction", "in")]
        ) >= 3,
        "{m}"
    );
    assert_eq!(
        sample_sum(
            &m,
            "mecgw_pfcp_messages_total",
            &[
                ("message", "association_setup_request"),
                ("direction", "in")
            ]
        ),
        1,
        "{m}"
    );

    let update = run.smf.call(json!({"cmd": "association_update"})).unwrap();
    assert_eq!(update["cause"], 1, "{update}");

    // An SMF that restarted shows it in its answers to mecgw's heartbeats (a new Recovery
    // Time Stamp): mecgw deletes its sessions by itself.
    for i in 0..2 {
        run.smf
            .establish(&UlclSession::numbered(i, &[EDGE4], true))
            .unwrap();
    }
    assert_eq!(sample_sum(&metrics(), "mecgw_pfcp_sessions", &[]), 2);
    run.smf
        .call(json!({"cmd": "restart", "recovery_ts": 3_900_000_002u32}))
        .unwrap();
    wait_until(
        "mecgw notices the SMF's restart in a Heartbeat Response",
        || sample_sum(&metrics(), "mecgw_pfcp_sessions", &[]) == 0,
    );

    // Release deletes the association's sessions.
    run.smf.associate(Some(3_900_000_002)).unwrap();
    for i in 0..2 {
        run.smf
            .establish(&UlclSession::numbered(i, &[EDGE4], true))
            .unwrap();
    }
    assert_eq!(sample_sum(&metrics(), "mecgw_pfcp_sessions", &[]), 2);
    let release = run.smf.call(json!({"cmd": "release"})).unwrap();
    assert_eq!(release["cause"], 1, "{release}");
    let m = metrics();
    assert_eq!(sample_sum(&m, "mecgw_pfcp_sessions", &[]), 0, "{m}");
    assert_eq!(sample_sum(&m, "mecgw_pfcp_associations", &[]), 0, "{m}");
    let after = run
        .smf
        .call(UlclSession::numbered(2, &[EDGE4], true).to_json())
        .unwrap();
    assert_eq!(after["cause"], 72, "no association any more: {after}");
    assert!(run.alive());
}

// ---------------------------------------------------------------------------------------
// Sessions and traffic.

/// Four UL CL sessions, two re-tunnelling the rest to the PSA and two passing it unchanged:
/// the gNB's edge traffic (UDP, ICMP, TCP; IPv4 and IPv6) is answered by the edge services
/// through mecgw's local breakout and encapsulation (every answer checked by the simulator:
/// the gNB's TEID, the QER's QFI, checksums); the rest reaches the core, re-tunnelled with the
/// PSA's TEID or byte for byte, and nothing for the edge reaches it.
#[test]
fn ulcl_sessions_steer_edge_traffic_locally_and_the_rest_to_the_core() {
    let _turn = turn();
    let mut run = Run::start(&PfcpSettings::default());
    run.smf.associate(None).unwrap();
    let psa: Vec<Established> = (0..2)
        .map(|i| {
            let s = UlclSession::numbered(i, &[EDGE4, EDGE6], true).with_ipv6(i);
            run.smf.establish(&s).unwrap()
        })
        .collect();
    let pass: Vec<Established> = (2..4)
        .map(|i| {
            let s = UlclSession::numbered(i, &[EDGE4], false);
            assert_eq!(s.catch_all, CatchAll::Pass);
            run.smf.establish(&s).unwrap()
        })
        .collect();
    let mut teids: Vec<u32> = psa.iter().chain(&pass).map(|e| e.teid).collect();
    for e in psa.iter().chain(&pass) {
        assert_eq!(
            e.answer["up_ipv4"],
            testbed::smf::MECGW_PFCP_ADDR,
            "the UP F-SEID's address: {}",
            e.answer
        );
        assert!(
            e.teid >= 0x8000_0000,
            "TEID {:#x} outside mecgw's range",
            e.teid
        );
        assert_eq!(
            e.n3_addr, N3.v4,
            "the F-TEID's address is mecgw's N3 address"
        );
        // Every uplink PDR got the same F-TEID (one CHOOSE ID).
        let created = e.answer["created_pdrs"].as_array().unwrap();
        assert!(created.len() >= 2, "{}", e.answer);
        assert!(created.iter().all(|c| c["teid"] == e.teid), "{}", e.answer);
    }
    teids.sort_unstable();
    teids.dedup();
    assert_eq!(teids.len(), 4, "one TEID per session");
    assert_eq!(sample_sum(&metrics(), "mecgw_pfcp_sessions", &[]), 4);

    let edge6 = format!("[{}]", EDGE.v6);
    let mut psa_probes = edge_and_core_probes();
    psa_probes.extend([
        probe("edge-tcp", &format!("tcp:{}:8080", EDGE.v4)),
        probe("edge-udp6", &format!("udp:{edge6}:7")),
        probe("edge-tcp6", &format!("tcp:{edge6}:8080")),
        probe("core-udp6", &format!("udp:[{}]:9", UPF.v6)),
    ]);
    let rounds = 4;
    let sent_psa = gnbsim(
        &run,
        0,
        &[&psa[0], &psa[1]],
        N3.v4,
        &psa_probes,
        rounds,
        1000,
    );
    all_answered(&sent_psa);
    let record = run.dir.path().join("pass-sent.hex");
    let mut pass_probes = edge_and_core_probes();
    pass_probes.push(probe("edge-tcp", &format!("tcp:{}:8080", EDGE.v4)));
    // The pass UEs address the PSA; their G-PDUs are recorded as sent, to compare with what
    // the core received.
    let sent_pass = gnbsim_recording(
        &run,
        2,
        &[&pass[0], &pass[1]],
        UPF.v4,
        &pass_probes,
        rounds,
        1000,
        Some(&record),
        &[],
    );
    all_answered(&sent_pass);

    // The fast path's own account: per round, a PSA UE's UDP, ICMP and UDP6 to the edge and
    // its two TCP connections (SYN, data, FIN, last ACK) broken out, its three core probes
    // re-tunnelled; a pass UE's six edge packets broken out, its two core probes forwarded.
    let m = metrics();
    let reason = |r: &str| sample_sum(&m, "mecgw_fastpath_reason_packets_total", &[("reason", r)]);
    let rounds64 = u64::from(rounds);
    assert_eq!(reason("pdr_local"), rounds64 * (2 * 11 + 2 * 6), "{m}");
    assert_eq!(reason("pdr_retunnel"), rounds64 * 2 * 3, "{m}");
    assert_eq!(reason("pdr_forward"), rounds64 * 2 * 2, "{m}");
    for r in [
        "no_pdr",
        "unknown_teid",
        "spoofed_source",
        "pdr_drop",
        "no_neighbour",
    ] {
        assert_eq!(reason(r), 0, "{r}: {m}");
    }
    let encapsulated: u64 = (0..2)
        .flat_map(|i| {
            [
                UeVolume::of(&sent_psa, i).encapsulated_by_mecgw().0,
                UeVolume::of(&sent_pass, i).encapsulated_by_mecgw().0,
            ]
        })
        .sum();
    assert_eq!(reason("encapsulated"), encapsulated, "{m}");
    // The PSA was probed (GTP-U Echo) when the first session started re-tunnelling to it.
    assert!(
        sample_sum(&m, "mecgw_pfcp_neighbour_probes_total", &[]) >= 1,
        "{m}"
    );

    // Downlink: the edge's answers were encapsulated by mecgw, the core's came from the core:
    // one answer per UDP/ICMP probe to the core, per UE.
    for (report, ues, core_probes) in [(&sent_psa, 2, 3), (&sent_pass, 2, 2)] {
        for i in 0..ues {
            let v = UeVolume::of(report, i);
            assert_eq!(v.sources(), vec![N3.v4, UPF.v4], "UE {i}: {report}");
            assert_eq!(
                v.straight_from_core().0,
                core_probes * u64::from(rounds),
                "UE {i}: {report}"
            );
            // UDP and ICMP one answer each, TCP at least three segments.
            assert!(
                v.encapsulated_by_mecgw().0 >= (2 + 3) * u64::from(rounds),
                "UE {i}: {report}"
            );
        }
    }

    // The core: the PSA sessions' G-PDUs re-tunnelled with the PSA's TEID, carrying the inner
    // packets the gNB sent to the core; the pass sessions' G-PDUs byte for byte; nothing for
    // the edge.
    let (echoes, seen): (Vec<String>, Vec<String>) = run
        .core_seen()
        .into_iter()
        .partition(|l| l.get(2..4) == Some("01"));
    // mecgw's neighbour probes (GTP-U Echo Requests) reached the PSA: its neighbour entry was
    // resolved before the first G-PDU had to be re-tunnelled.
    assert!(!echoes.is_empty(), "no Echo Request reached the PSA");
    assert!(
        echoes
            .iter()
            .all(|l| l.len() == 24 && l.starts_with("32010004")),
        "{echoes:?}"
    );
    let mut psa_inner: HashMap<u32, usize> = HashMap::new();
    let mut pass_seen: HashMap<String, usize> = HashMap::new();
    for line in &seen {
        let (teid, inner) = inner_of(line).unwrap_or_else(|| panic!("not a G-PDU: {line}"));
        let dst = inner_dst(&inner);
        assert!(
            dst != IpAddr::from(EDGE.v4.parse::<std::net::Ipv4Addr>().unwrap())
                && dst.to_string() != EDGE.v6,
            "edge traffic reached the core: {line}"
        );
        if teid == pass[0].teid || teid == pass[1].teid {
            *pass_seen.entry(line.clone()).or_default() += 1;
        } else {
            *psa_inner.entry(teid).or_default() += 1;
        }
    }
    // UDP, ICMP and UDP over IPv6, `rounds` each, per PSA session.
    let expected: HashMap<u32, usize> = (0..2)
        .map(|i| (UL_TEID_BASE + i, 3 * rounds as usize))
        .collect();
    assert_eq!(psa_inner, expected, "re-tunnelled to the PSA with its TEID");
    let mut pass_sent: HashMap<String, usize> = HashMap::new();
    for line in std::fs::read_to_string(&record).unwrap().lines() {
        let (_, inner) = inner_of(line).unwrap();
        if inner_dst(&inner).to_string() == UPF.v4 {
            *pass_sent.entry(line.to_string()).or_default() += 1;
        }
    }
    assert_eq!(pass_sent.values().sum::<usize>(), 2 * 2 * rounds as usize);
    assert_eq!(
        pass_seen, pass_sent,
        "the pass sessions' core traffic must reach the core exactly as sent"
    );
    assert!(run.alive());
}

/// A modification that adds an SDF filter PDR moves the edge host's traffic from the core to
/// the local services; an Update FAR that drops it stops it; one that forwards it again
/// brings it back; removing the PDR sends it to the core again.
/// Open5GS's session shape: the downlink FAR buffers (BUFF|NOCP, with a Create BAR) until the
/// gNB's tunnel is known, the downlink PDR on Source Interface Core with the UE's address. The
/// edge service's packet to the UE is dropped (a buffer of zero packets, counted as
/// `pdr_drop`), and the SMF gets one Downlink Data Report naming the downlink PDR; a second
/// packet gets none. Once the FAR forwards with Outer Header Creation, the downlink reaches
/// the gNB; buffering again is a new period, reported again.
#[test]
fn a_buffering_downlink_is_dropped_reported_once_and_delivered_once_it_forwards() {
    let _turn = turn();
    let mut run = Run::start(&PfcpSettings::default());
    run.smf.associate(None).unwrap();
    let a = established(
        run.smf
            .call(open5gs(&UlclSession::numbered(0, &[EDGE4], true)))
            .unwrap(),
    );
    // The edge service answers the UE: the downlink packet under test.
    let edge = [probe("edge-udp", &format!("udp:{}:7", EDGE.v4))];
    let drops = || {
        sample_sum(
            &metrics(),
            "mecgw_fastpath_reason_packets_total",
            &[("reason", "pdr_drop")],
        )
    };
    let reports = |run: &mut Run, name: &str| -> Vec<Value> {
        run.smf
            .call(json!({"cmd": "downlink_reports", "name": name}))
            .unwrap()["reports"]
            .as_array()
            .unwrap()
            .clone()
    };
    let wait_reports = |run: &mut Run, n: u64| {
        let out = run
            .smf
            .call(json!({"cmd": "wait", "downlink_data_reports": n, "timeout_ms": 30_000}))
            .unwrap();
        assert_eq!(out["reached"], true, "{n} Downlink Data Reports: {out}");
    };

    let buffered = gnbsim(&run, 0, &[&a], N3.v4, &edge, 1, 1000);
    assert_eq!(answered(&buffered, "edge-udp"), (1, 0), "{buffered}");
    assert_eq!(UeVolume::of(&buffered, 0).encapsulated_by_mecgw(), (0, 0));
    assert_eq!(drops(), 1, "the buffered packet is dropped, counted");
    wait_reports(&mut run, 1);
    let got = reports(&mut run, "ue1");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["report_type"], json!(["DLDR"]), "{got:?}");
    assert_eq!(got[0]["pdr_ids"], json!([200]), "the downlink PDR: {got:?}");
    let stats = run.smf.call(json!({"cmd": "stats"})).unwrap();
    assert_eq!(stats["reports_answered"], 1, "{stats}");

    // A second packet in the same buffering period: dropped, not reported.
    let again = gnbsim(&run, 0, &[&a], N3.v4, &edge, 1, 1000);
    assert_eq!(answered(&again, "edge-udp"), (1, 0), "{again}");
    wait_until("the second packet counted", || drops() == 2);
    // A second session's first buffered packet, counted after the first session's second:
    // once its report arrives, a check has run since; a heartbeat answered after it means
    // that check's reports were all sent (the endpoint does one thing at a time).
    let b = established(
        run.smf
            .call(open5gs(&UlclSession::numbered(1, &[EDGE4], true)))
            .unwrap(),
    );
    let other = gnbsim(&run, 1, &[&b], N3.v4, &edge, 1, 1000);
    assert_eq!(answered(&other, "edge-udp"), (1, 0), "{other}");
    wait_reports(&mut run, 2);
    let hb = run.smf.call(json!({"cmd": "heartbeat"})).unwrap();
    assert_eq!(hb["answered"], true, "{hb}");
    assert_eq!(reports(&mut run, "ue2").len(), 1);
    assert_eq!(
        reports(&mut run, "ue1").len(),
        1,
        "one report per buffering period"
    );
    assert_eq!(
        sample_sum(&metrics(), "mecgw_pfcp_downlink_data_reports_total", &[]),
        2
    );

    // The gNB's tunnel is known: FORW with Outer Header Creation (and the BAR removed).
    let out = run
        .smf
        .call(json!({"cmd": "modify", "name": "ue1",
                     "update_far": {"far_id": 3, "mode": "gnb"}, "remove_bar": true}))
        .unwrap();
    assert_eq!(out["cause"], 1, "{out}");
    let forwarded = gnbsim(&run, 0, &[&a], N3.v4, &edge, 3, 1000);
    all_answered(&forwarded);
    assert_eq!(
        UeVolume::of(&forwarded, 0).encapsulated_by_mecgw().0,
        3,
        "{forwarded}"
    );
    assert_eq!(drops(), 3, "nothing more dropped");

    // Buffering again starts a new period: its first packet is reported again.
    let out = run
        .smf
        .call(json!({"cmd": "modify", "name": "ue1",
                     "update_far": {"far_id": 3, "mode": "buffer"}}))
        .unwrap();
    assert_eq!(out["cause"], 1, "{out}");
    let rebuffered = gnbsim(&run, 0, &[&a], N3.v4, &edge, 1, 1000);
    assert_eq!(answered(&rebuffered, "edge-udp"), (1, 0), "{rebuffered}");
    wait_reports(&mut run, 3);
    let got = reports(&mut run, "ue1");
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1]["pdr_ids"], json!([200]), "{got:?}");
    assert!(run.alive());
}

#[test]
fn modifications_add_and_remove_an_sdf_filter_and_update_a_far() {
    let _turn = turn();
    let mut run = Run::start(&PfcpSettings::default());
    run.smf.associate(None).unwrap();
    // No edge prefix yet: everything goes to the PSA, whose stand-in echoes UDP for any
    // address.
    let s = run
        .smf
        .establish(&UlclSession::numbered(0, &[], true))
        .unwrap();
    let probes = [probe("edge", &format!("udp:{}:7", EDGE.v4))];
    let rounds = 3;
    let step = |run: &Run, timeout| {
        let r = gnbsim(run, 0, &[&s], N3.v4, &probes, rounds, timeout);
        (answered(&r, "edge").1, UeVolume::of(&r, 0))
    };

    let (ok, v) = step(&run, 1000);
    assert_eq!(ok, 3);
    assert_eq!(
        (v.straight_from_core().0, v.encapsulated_by_mecgw().0),
        (3, 0),
        "to the core first"
    );

    let add = run
        .smf
        .call(json!({"cmd": "modify", "name": "ue1", "add_edge": [EDGE4]}))
        .unwrap();
    assert_eq!(add["cause"], 1, "{add}");
    let pdr = add["pdr_ids"][0].as_u64().unwrap();
    let (ok, v) = step(&run, 1000);
    assert_eq!(ok, 3);
    assert_eq!(
        (v.straight_from_core().0, v.encapsulated_by_mecgw().0),
        (0, 3),
        "broken out locally once the SDF filter PDR is in"
    );

    let drop = run
        .smf
        .call(json!({"cmd": "modify", "name": "ue1",
                     "update_far": {"far_id": 1, "mode": "drop"}}))
        .unwrap();
    assert_eq!(drop["cause"], 1, "{drop}");
    let (ok, v) = step(&run, 300);
    assert_eq!(ok, 0, "the edge FAR drops");
    assert!(v.dl.is_empty());

    let forward = run
        .smf
        .call(json!({"cmd": "modify", "name": "ue1",
                     "update_far": {"far_id": 1, "mode": "edge"}}))
        .unwrap();
    assert_eq!(forward["cause"], 1, "{forward}");
    let (ok, v) = step(&run, 1000);
    assert_eq!(
        (ok, v.encapsulated_by_mecgw().0),
        (3, 3),
        "forwarded to the edge again"
    );

    let remove = run
        .smf
        .call(json!({"cmd": "modify", "name": "ue1", "remove_pdr": [pdr]}))
        .unwrap();
    assert_eq!(remove["cause"], 1, "{remove}");
    let (ok, v) = step(&run, 1000);
    assert_eq!(ok, 3);
    assert_eq!(
        (v.straight_from_core().0, v.encapsulated_by_mecgw().0),
        (3, 0),
        "to the core again once the PDR is removed"
    );
    assert_eq!(sample_sum(&metrics(), "mecgw_pfcp_sessions", &[]), 1);
}

/// The SMF's Update QER and Remove QER, checked on traffic. Closing the uplink gate makes the
/// fast path drop the session's uplink (each packet counted as `pdr_drop`, none reaching the
/// edge or the core) and opening it again restores it; a new QFI is the QFI of the downlink
/// mecgw encapsulates (the simulator checks every container); removing the QER (its gate
/// closed again first) leaves the session's PDRs without one: gates open, QFI 0.
#[test]
fn qer_updates_gate_the_uplink_and_set_the_downlink_qfi_and_removing_the_qer_lifts_both() {
    let _turn = turn();
    let mut run = Run::start(&PfcpSettings::default());
    run.smf.associate(None).unwrap();
    let s = run
        .smf
        .establish(&UlclSession::numbered(0, &[EDGE4], true))
        .unwrap();
    let both = edge_and_core_probes();
    // The core stand-in answers with the simulator's default QFI: where the QFI changes,
    // only the edge's answers (encapsulated by mecgw) are probed.
    let edge = [
        probe("edge-udp", &format!("udp:{}:7", EDGE.v4)),
        probe("edge-icmp", &format!("icmp:{}", EDGE.v4)),
    ];
    let rounds = 2;
    let drops = || {
        sample_sum(
            &metrics(),
            "mecgw_fastpath_reason_packets_total",
            &[("reason", "pdr_drop")],
        )
    };
    // G-PDUs the core received (mecgw's GTP-U Echo Requests left out).
    let core_gpdus = |run: &Run| {
        run.core_seen()
            .iter()
            .filter(|l| inner_of(l).is_some())
            .count()
    };
    let modify = |run: &mut Run, change: Value| {
        let mut cmd = json!({"cmd": "modify", "name": "ue1"});
        for (k, v) in change.as_object().unwrap() {
            cmd[k] = v.clone();
        }
        let out = run.smf.call(cmd).unwrap();
        assert_eq!(out["cause"], 1, "{change}: {out}");
    };
    let none_answered = |report: &Value, probes: &[String]| {
        for p in probes {
            let name = p.split_once('=').unwrap().0;
            assert_eq!(
                answered(report, name),
                (u64::from(rounds), 0),
                "{name}: {report}"
            );
        }
    };

    let open = gnbsim_qfi(&run, &s, &both, rounds, 1000, testbed::QFI);
    all_answered(&open);
    assert_eq!(drops(), 0);
    let core_before = core_gpdus(&run);
    assert_eq!(core_before, 2 * rounds as usize, "UDP and ICMP to the core");

    modify(
        &mut run,
        json!({"update_qer": {"qer_id": 1, "gate": {"ul": "CLOSED", "dl": "OPEN"}}}),
    );
    let closed = gnbsim_qfi(&run, &s, &both, rounds, 300, testbed::QFI);
    none_answered(&closed, &both);
    let sent = UeVolume::of(&closed, 0).ul.0;
    assert_eq!(sent, 4 * u64::from(rounds));
    assert_eq!(
        drops(),
        sent,
        "every uplink packet dropped by the closed gate"
    );
    assert_eq!(core_gpdus(&run), core_before, "nothing reached the core");
    assert!(UeVolume::of(&closed, 0).dl.is_empty(), "{closed}");

    modify(
        &mut run,
        json!({"update_qer": {"qer_id": 1, "gate": {"ul": "OPEN", "dl": "OPEN"}}}),
    );
    let reopened = gnbsim_qfi(&run, &s, &both, rounds, 1000, testbed::QFI);
    all_answered(&reopened);
    assert_eq!(drops(), sent, "nothing dropped once the gate is open again");
    assert_eq!(core_gpdus(&run), core_before + 2 * rounds as usize);

    // A new QFI: the edge's answers come back with it, and no longer with the old one.
    modify(&mut run, json!({"update_qer": {"qer_id": 1, "qfi": 5}}));
    let new_qfi = gnbsim_qfi(&run, &s, &edge, rounds, 1000, 5);
    all_answered(&new_qfi);
    let old_qfi = gnbsim_qfi(&run, &s, &edge, rounds, 1000, testbed::QFI);
    for p in &edge {
        let name = p.split_once('=').unwrap().0;
        assert_eq!(answered(&old_qfi, name).1, 0, "{name}: {old_qfi}");
        let bad = old_qfi[name]["bad"].as_object().unwrap();
        assert!(
            bad.keys().all(|k| k.contains("expected downlink QFI 9")),
            "answers arrived with another QFI: {old_qfi}"
        );
    }
    assert_eq!(
        UeVolume::of(&old_qfi, 0).encapsulated_by_mecgw().0,
        2 * u64::from(rounds),
        "every edge answer came back, encapsulated by mecgw: {old_qfi}"
    );

    // Closed again, then the QER removed: no QER, no gate, no QFI.
    modify(
        &mut run,
        json!({"update_qer": {"qer_id": 1, "gate": {"ul": "CLOSED", "dl": "CLOSED"}}}),
    );
    let closed = gnbsim_qfi(&run, &s, &edge, rounds, 300, 5);
    none_answered(&closed, &edge);
    modify(&mut run, json!({"remove_qer": [1]}));
    let removed = gnbsim_qfi(&run, &s, &edge, rounds, 1000, 0);
    all_answered(&removed);
    assert_eq!(sample_sum(&metrics(), "mecgw_pfcp_sessions", &[]), 1);
    assert!(run.alive());
}

/// The SMF's Update URR moves the volume threshold, and with it the Session Report Request.
/// Under a threshold far above the traffic, mecgw reports nothing; lowered below what was
/// counted, the next threshold check sends a VOLTH report holding all of it (so nothing was
/// reported before); raised again, the next traffic is not reported until the SMF queries it,
/// and the query's report holds all of that traffic.
#[test]
fn an_update_urr_moves_the_volume_threshold_and_with_it_the_report() {
    let _turn = turn();
    let mut run = Run::start(&PfcpSettings::default());
    run.smf.associate(None).unwrap();
    const HIGH: u64 = 1 << 40;
    let mut session = UlclSession::numbered(0, &[EDGE4], true);
    session.volume_threshold = Some(HIGH);
    let s = run.smf.establish(&session).unwrap();
    let volume = |report: &Value| {
        let v = UeVolume::of(report, 0);
        let dl = v.encapsulated_by_mecgw();
        (v.ul.0, v.ul.1, dl.0, dl.1)
    };
    let reported = |reports: &Value| {
        let (ul_octets, dl_octets, ul_packets, dl_packets) = usage_totals(reports);
        (ul_packets, ul_octets, dl_packets, dl_octets)
    };

    let first = gnbsim(&run, 0, &[&s], N3.v4, &edge_and_core_probes(), 5, 1000);
    all_answered(&first);
    let lower = run
        .smf
        .call(json!({"cmd": "modify", "name": "ue1",
                     "update_urr": {"urr_id": 1, "volume_threshold": 1000}}))
        .unwrap();
    assert_eq!(lower["cause"], 1, "{lower}");
    let waited = run
        .smf
        .call(json!({"cmd": "wait", "usage_reports": 1, "timeout_ms": 20_000}))
        .unwrap();
    assert_eq!(
        waited["reached"], true,
        "a report once the threshold is lowered: {waited}"
    );
    let reports = run.smf.call(json!({"cmd": "reports"})).unwrap()["reports"].clone();
    assert_eq!(reports.as_array().unwrap().len(), 1, "{reports}");
    assert_eq!(reports[0]["triggers"], json!(["VOLTH"]), "{reports}");
    assert_eq!(
        reported(&reports),
        volume(&first),
        "the threshold report holds all the traffic before it: {reports}"
    );

    let raise = run
        .smf
        .call(json!({"cmd": "modify", "name": "ue1",
                     "update_urr": {"urr_id": 1, "volume_threshold": HIGH}}))
        .unwrap();
    assert_eq!(raise["cause"], 1, "{raise}");
    let second = gnbsim(&run, 0, &[&s], N3.v4, &edge_and_core_probes(), 5, 1000);
    all_answered(&second);
    let query = run
        .smf
        .call(json!({"cmd": "modify", "name": "ue1", "query_urr": [1]}))
        .unwrap();
    assert_eq!(query["cause"], 1, "{query}");
    assert_eq!(
        query["usage_reports"][0]["triggers"],
        json!(["IMMER"]),
        "{query}"
    );
    assert_eq!(
        reported(&query["usage_reports"]),
        volume(&second),
        "under the raised threshold nothing was reported before the query: {query}"
    );
    let reports = run.smf.call(json!({"cmd": "reports"})).unwrap();
    assert_eq!(reports["reports"].as_array().unwrap().len(), 1, "{reports}");
    assert!(run.alive());
}

/// The test policy for flow records: every identity the SMF can name pseudonymised, the TEID
/// kept to tell the sessions apart.
const IDENTITY_POLICY: &str = r#"version: 1
name: PFCP identities in flow records
description: Test policy. The SMF's User ID pseudonymised; the TEID kept to tell sessions apart.
budget:
  period: 1d
  epsilon: 1.0
  delta: 1e-6
keys:
  subscriber:
    path: keys/subscriber.key
    rotation: 1d
kinds:
  flow:
    description: one record per flow, harvested from the XDP fast path
    privacy_unit: imsi
    time: start
    window: 1h
    fields:
      imsi: string
      imei: string
      msisdn: string
      teid: integer
      start: timestamp
    transforms:
      imsi: {pseudonymise: {key: subscriber}}
      msisdn: {pseudonymise: {key: subscriber}}
      imei: {pseudonymise: {key: subscriber}}
      teid: keep
      start: {bucket: {width: 15m}}
destinations:
  analytics:
    region: EU-DE
    kinds: [flow]
"#;

/// The items of every batch the file sink `dir/outbox` received for `analytics`.
fn analytics_items(dir: &Path) -> Vec<Value> {
    let Ok(text) = std::fs::read_to_string(dir.join("outbox/analytics.jsonl")) else {
        return Vec::new();
    };
    text.lines()
        .flat_map(|l| {
            let batch: Value = serde_json::from_str(l).unwrap();
            batch["items"].as_array().unwrap().clone()
        })
        .collect()
}

/// The User ID the SMF sends is the identity of the session's flow records: two sessions, one
/// naming IMSI, MSISDN and IMEI, one only an IMSI, carry traffic; the flow records the daemon
/// harvests reach the policy engine with those identities, and the file sink receives each
/// pseudonymised as the policy says: equal to what `mecgw policy apply` makes of the SMF's
/// values under the same key, per session (told apart by the TEID mecgw chose). The raw
/// identities reach no byte the sink or the state directory holds.
#[test]
fn flow_records_carry_the_user_id_of_their_pfcp_session_pseudonymised() {
    const KEY: &str = "6d656367772d706663702d746573742d6b65792d6e6f742d7265616c2121212121";
    let _turn = turn();
    let mut run = Run::start_with(&PfcpSettings::default(), |dir| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::write(dir.join("policy.yaml"), IDENTITY_POLICY).unwrap();
        std::fs::create_dir_all(dir.join("keys")).unwrap();
        let key = dir.join("keys/subscriber.key");
        std::fs::write(&key, format!("{KEY}\n")).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut config = std::fs::read_to_string(dir.join("mecgw.toml")).unwrap();
        config.push_str(
            "\n[policy]\nfile = \"policy.yaml\"\nwindow_grace_secs = 0\n\n\
             [flows]\nenabled = true\ninterval_secs = 1\n\n\
             [egress]\n[[egress.destinations]]\nname = \"analytics\"\nregion = \"EU-DE\"\n\
             sink = { type = \"file\", dir = \"outbox\" }\n",
        );
        std::fs::write(dir.join("mecgw.toml"), config).unwrap();
    });
    run.smf.associate(None).unwrap();
    let mut named = UlclSession::numbered(0, &[EDGE4], true);
    named.msisdn = Some("4915112345678".into());
    named.imei = Some("353490061234560".into());
    let imsi_only = UlclSession::numbered(1, &[EDGE4], true);
    let sessions = [
        run.smf.establish(&named).unwrap(),
        run.smf.establish(&imsi_only).unwrap(),
    ];
    let report = gnbsim(
        &run,
        0,
        &[&sessions[0], &sessions[1]],
        N3.v4,
        &edge_and_core_probes(),
        2,
        1000,
    );
    all_answered(&report);

    let dir = run.dir.path().to_path_buf();
    let teid = |r: &Value| r["record"]["teid"].as_u64();
    wait_until("flow records of both sessions reach the sink", || {
        let items = analytics_items(&dir);
        sessions
            .iter()
            .all(|s| items.iter().any(|r| teid(r) == Some(u64::from(s.teid))))
    });
    let m = metrics();
    assert!(
        sample_sum(&m, "mecgw_records_in_total", &[("source", "flow")]) > 0,
        "{m}"
    );
    let items = analytics_items(&dir);

    // What the policy makes of the SMF's values, by the same tool an operator has.
    for (s, e) in [&named, &imsi_only].into_iter().zip(&sessions) {
        let mine: Vec<&Value> = items
            .iter()
            .filter(|r| teid(r) == Some(u64::from(e.teid)))
            .collect();
        let start = mine[0]["record"]["start"].clone();
        let mut input = json!({"imsi": s.imsi, "teid": e.teid, "start": start});
        if let Some(m) = &s.msisdn {
            input["msisdn"] = m.clone().into();
        }
        if let Some(i) = &s.imei {
            input["imei"] = i.clone().into();
        }
        std::fs::write(dir.join("in.jsonl"), format!("{input}\n")).unwrap();
        let out = std::process::Command::new(run.bin.join("mecgw"))
            .current_dir(&dir)
            .args([
                "policy",
                "apply",
                "policy.yaml",
                "--in",
                "in.jsonl",
                "--out",
                "expected.jsonl",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.jsonl")).unwrap())
                .unwrap();
        let expected = &expected["record"];
        assert!(
            expected["imsi"].as_str().is_some_and(|p| p != s.imsi),
            "a pseudonym: {expected}"
        );
        for r in &mine {
            for field in ["imsi", "msisdn", "imei"] {
                assert_eq!(
                    r["record"][field], expected[field],
                    "{}: {field} of a flow record vs the policy's pseudonym of the User ID's",
                    s.name
                );
            }
        }
    }

    // The SMF's identities themselves left nothing behind.
    let mut places = Vec::new();
    for sub in ["outbox", "state"] {
        let mut stack = vec![dir.join(sub)];
        while let Some(p) = stack.pop() {
            if p.is_dir() {
                stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            } else if let Ok(b) = std::fs::read(&p) {
                places.push((p, b));
            }
        }
    }
    assert!(!places.is_empty());
    for id in [
        named.imsi.as_str(),
        imsi_only.imsi.as_str(),
        "4915112345678",
        "353490061234560",
    ] {
        for (p, b) in &places {
            assert!(
                !b.windows(id.len()).any(|w| w == id.as_bytes()),
                "{id} in {}",
                p.display()
            );
        }
    }
    assert!(run.alive());
}

/// Usage reports add up to what the simulator sent and received: inner IP octets and packets,
/// uplink over every Access-side PDR (edge and core traffic), downlink over the SGi-LAN PDR
/// (the edge's answers mecgw encapsulated). Three URRs: final report only (with a Query URR
/// between two bursts of traffic), periodic every second, and a volume threshold; for each
/// session the reports (query, periodic, threshold, final) sum to the traffic exactly.
#[test]
fn usage_reports_add_up_to_the_inner_volumes_sent_and_received() {
    let _turn = turn();
    let mut run = Run::start(&PfcpSettings::default());
    // tshark reads every N4 message of the test: mecgw's reports too.
    let n4 = testbed::Capture::start(&UPF, &run.dir.path().join("n4.pcapng")).unwrap();
    run.smf.associate(None).unwrap();
    let plain = UlclSession::numbered(0, &[EDGE4], true);
    let mut periodic = UlclSession::numbered(1, &[EDGE4], true);
    periodic.report_period_secs = Some(1);
    let mut threshold = UlclSession::numbered(2, &[EDGE4], true);
    threshold.volume_threshold = Some(2_000);
    let sessions: Vec<Established> = [&plain, &periodic, &threshold]
        .iter()
        .map(|s| run.smf.establish(s).unwrap())
        .collect();
    let all: Vec<&Established> = sessions.iter().collect();

    let first = gnbsim(&run, 0, &all, N3.v4, &edge_and_core_probes(), 5, 1000);
    all_answered(&first);
    let query = run
        .smf
        .call(json!({"cmd": "modify", "name": "ue1", "query_urr": [1]}))
        .unwrap();
    assert_eq!(query["cause"], 1, "{query}");
    assert_eq!(
        query["usage_reports"].as_array().unwrap().len(),
        1,
        "{query}"
    );
    assert!(
        query["usage_reports"][0]["triggers"]
            .as_array()
            .unwrap()
            .contains(&json!("IMMER")),
        "{query}"
    );
    let second = gnbsim(&run, 0, &all, N3.v4, &edge_and_core_probes(), 5, 1000);
    all_answered(&second);
    // Periodic reports for ue2 keep coming: wait for a few.
    let waited = run
        .smf
        .call(json!({"cmd": "wait", "usage_reports": 3, "timeout_ms": 20_000}))
        .unwrap();
    assert_eq!(waited["reached"], true, "{waited}");

    let mut finals = Vec::new();
    for s in [&plain, &periodic, &threshold] {
        let out = run
            .smf
            .call(json!({"cmd": "delete", "name": s.name}))
            .unwrap();
        assert_eq!(out["cause"], 1, "{out}");
        assert_eq!(out["usage_reports"].as_array().unwrap().len(), 1, "{out}");
        assert!(
            out["usage_reports"][0]["triggers"]
                .as_array()
                .unwrap()
                .contains(&json!("TERMR")),
            "{out}"
        );
        finals.push(out);
    }
    let reports = run.smf.call(json!({"cmd": "reports"})).unwrap();
    for (i, s) in [&plain, &periodic, &threshold].iter().enumerate() {
        let (a, b) = (UeVolume::of(&first, i), UeVolume::of(&second, i));
        let ul = (a.ul.0 + b.ul.0, a.ul.1 + b.ul.1);
        let dl = (
            a.encapsulated_by_mecgw().0 + b.encapsulated_by_mecgw().0,
            a.encapsulated_by_mecgw().1 + b.encapsulated_by_mecgw().1,
        );
        let reported: Vec<Value> = reports["reports"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["session"] == s.name.as_str())
            .cloned()
            .collect();
        let parts = parts_of(&reported, &finals[i], (i == 0).then_some(&query));
        let (ul_octets, dl_octets, ul_packets, dl_packets) = usage_totals(&Value::Array(parts));
        assert_eq!(
            (ul_packets, ul_octets, dl_packets, dl_octets),
            (ul.0, ul.1, dl.0, dl.1),
            "{}: reported (uplink packets, octets, downlink packets, octets) vs sent/received; \
             reports {reported:?}, final {}",
            s.name,
            finals[i]
        );
        let triggers: Vec<String> = reported
            .iter()
            .flat_map(|r| r["triggers"].as_array().unwrap().clone())
            .map(|t| t.as_str().unwrap().to_string())
            .collect();
        match i {
            0 => assert!(reported.is_empty(), "no trigger, no report: {reported:?}"),
            1 => assert!(triggers.iter().all(|t| t == "PERIO") && reported.len() >= 2),
            _ => assert!(triggers.contains(&"VOLTH".to_string()), "{reported:?}"),
        }
        // Every report has its measurement's Start and End Time (TS 29.244 Table
        // 7.5.8.3-1), and UR-SEQN counts the URR's reports from 0 (§8.2.77).
        let mut seqns = Vec::new();
        for r in parts_of(&reported, &finals[i], (i == 0).then_some(&query)) {
            let (start, end) = (r["start_time"].as_u64(), r["end_time"].as_u64());
            assert!(
                start.is_some() && end >= start,
                "{}: start/end time in {r}",
                s.name
            );
            seqns.push(r["ur_seqn"].as_u64().unwrap());
        }
        seqns.sort_unstable();
        assert_eq!(
            seqns,
            (0..seqns.len() as u64).collect::<Vec<_>>(),
            "{}: UR-SEQN",
            s.name
        );
    }
    let m = metrics();
    assert_eq!(sample_sum(&m, "mecgw_pfcp_sessions", &[]), 0);
    for (trigger, at_least) in [
        ("periodic", 2),
        ("volume_threshold", 1),
        ("modification_response", 1),
        ("deletion_response", 3),
    ] {
        assert!(
            sample_sum(
                &m,
                "mecgw_pfcp_usage_reports_total",
                &[("trigger", trigger)]
            ) >= at_least,
            "{trigger}: {m}"
        );
    }

    // The deleted sessions' TEIDs steer nothing any more.
    let edge_only = [probe("edge-udp", &format!("udp:{}:7", EDGE.v4))];
    let gone = gnbsim(&run, 0, &all, N3.v4, &edge_only, 1, 300);
    assert_eq!(answered(&gone, "edge-udp"), (3, 0), "{gone}");

    dissects_cleanly(
        &n4.stop().unwrap(),
        &["PFCP Session Report Request", "Usage Report"],
    );
}

/// A session's reports: those of Session Report Requests, the final one, the query's.
fn parts_of(reported: &[Value], fin: &Value, query: Option<&Value>) -> Vec<Value> {
    let mut parts = reported.to_vec();
    parts.extend(fin["usage_reports"].as_array().unwrap().iter().cloned());
    if let Some(q) = query {
        parts.extend(q["usage_reports"].as_array().unwrap().iter().cloned());
    }
    parts
}

/// tshark dissects every PFCP message of the capture `pcap` without an error or a warning,
/// and sees each of `expected` (text of its dissection) at least once.
fn dissects_cleanly(pcap: &Path, expected: &[&str]) {
    let out = std::process::Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args(["-Y", "pfcp", "-V"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for bad in ["Malformed", "Expert Info (Error", "Expert Info (Warning"] {
        if let Some(at) = text.find(bad) {
            panic!(
                "tshark: {bad} in the N4 capture:\n{}",
                &text[at.saturating_sub(3000)..at]
            );
        }
    }
    for e in expected {
        assert!(text.contains(e), "tshark saw no {e:?} on N4");
    }
}

/// A retransmitted request (same sequence number) gets the first answer again, byte for byte,
/// and is applied once: the establishment allocates no second TEID (the session count is
/// unchanged), the modification creates no second PDR, the deletion's final report is not
/// lost to "session not found".
#[test]
fn retransmitted_requests_are_answered_identically_and_applied_once() {
    let _turn = turn();
    let mut run = Run::start(&PfcpSettings::default());
    run.smf.associate(None).unwrap();
    let s = run
        .smf
        .establish(&UlclSession::numbered(0, &[EDGE4], true))
        .unwrap();
    let again = run.smf.call(json!({"cmd": "retransmit"})).unwrap();
    assert_eq!(
        (&again["answered"], &again["identical"]),
        (&json!(true), &json!(true)),
        "{again}"
    );
    assert_eq!(sample_sum(&metrics(), "mecgw_pfcp_sessions", &[]), 1);

    // A different request that reuses the sequence number is no retransmission: a Heartbeat
    // Request gets a Heartbeat Response, not the cached Session Establishment Response (TS
    // 29.244 §6.4: a retransmitted request is a copy of the original).
    let mut hb = hex(run
        .smf
        .call(json!({"cmd": "build", "request": {"cmd": "heartbeat"}}))
        .unwrap()["hex"]
        .as_str()
        .unwrap());
    let seq = u32::try_from(s.answer["seq"].as_u64().unwrap()).unwrap();
    hb[4..7].copy_from_slice(&seq.to_be_bytes()[1..]);
    let out = run
        .smf
        .call(json!({"cmd": "raw", "hex": to_hex(&hb)}))
        .unwrap();
    let types: Vec<&Value> = out["answers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["type"])
        .collect();
    assert_eq!(
        types,
        vec![&json!(2)],
        "a heartbeat with a used sequence number: {out}"
    );

    let add = run
        .smf
        .call(json!({"cmd": "modify", "name": "ue1", "add_edge": ["198.18.1.2/32"]}))
        .unwrap();
    assert_eq!(add["cause"], 1, "{add}");
    let again = run.smf.call(json!({"cmd": "retransmit"})).unwrap();
    assert_eq!(again["identical"], true, "{again}");

    let traffic = gnbsim(&run, 0, &[&s], N3.v4, &edge_and_core_probes(), 2, 1000);
    all_answered(&traffic);

    let delete = run
        .smf
        .call(json!({"cmd": "delete", "name": "ue1"}))
        .unwrap();
    assert_eq!(delete["cause"], 1, "{delete}");
    let again = run.smf.call(json!({"cmd": "retransmit"})).unwrap();
    assert_eq!(
        again["identical"], true,
        "the cached deletion answer: {again}"
    );
    let m = metrics();
    assert_eq!(sample_sum(&m, "mecgw_pfcp_sessions", &[]), 0);
    assert_eq!(
        sample_sum(
            &m,
            "mecgw_pfcp_messages_total",
            &[
                ("message", "session_establishment_request"),
                ("direction", "in")
            ]
        ),
        2,
        "both copies arrived: {m}"
    );
    assert_eq!(
        sample_sum(&m, "mecgw_pfcp_retransmissions_total", &[]),
        3,
        "three retransmissions answered from the cache: {m}"
    );
}

// ---------------------------------------------------------------------------------------
// A lost peer.

/// Settings under which a silent SMF is lost within a few seconds.
fn quick_loss(on_peer_lost: &'static str) -> PfcpSettings {
    PfcpSettings {
        heartbeat_interval_secs: 1,
        response_timeout_ms: 200,
        retries: 2,
        on_peer_lost,
        ..PfcpSettings::default()
    }
}

/// The SMF goes silent: mecgw retries its heartbeats, then logs and counts the peer as lost.
/// With `keep` the sessions stay in force (the fast path still steers); the SMF coming back
/// and associating with the same Recovery Time Stamp keeps them; a Heartbeat with a new one
/// (the SMF restarted) deletes them, after which the edge traffic is no longer steered.
#[test]
fn a_silent_smf_is_lost_and_with_keep_its_sessions_still_forward() {
    let _turn = turn();
    let mut run = Run::start(&quick_loss("keep"));
    run.smf.associate(Some(3_900_000_100)).unwrap();
    let sessions: Vec<Established> = (0..2)
        .map(|i| {
            run.smf
                .establish(&UlclSession::numbered(i, &[EDGE4], true))
                .unwrap()
        })
        .collect();
    let all: Vec<&Established> = sessions.iter().collect();

    run.smf.call(json!({"cmd": "silent", "on": true})).unwrap();
    wait_until("mecgw counts the SMF as lost", || {
        sample_sum(&metrics(), "mecgw_pfcp_peers_lost_total", &[]) == 1
    });
    let log = run.log();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains(SMF_ADDR) && l.contains("heartbeats")),
        "mecgw warns of the SMF that stopped answering heartbeats:\n{log}"
    );
    let stats = run.smf.call(json!({"cmd": "stats"})).unwrap();
    assert!(
        stats["ignored_while_silent"].as_u64().unwrap() >= 3,
        "mecgw retried its heartbeat: {stats}"
    );
    assert_eq!(sample_sum(&metrics(), "mecgw_pfcp_sessions", &[]), 2);
    let report = gnbsim(&run, 0, &all, N3.v4, &edge_and_core_probes(), 2, 1000);
    all_answered(&report);
    assert_eq!(UeVolume::of(&report, 0).encapsulated_by_mecgw().0, 2 * 2);

    // Back, not restarted: the association is set up again, the sessions kept.
    run.smf.call(json!({"cmd": "silent", "on": false})).unwrap();
    let again = run.smf.associate(Some(3_900_000_100)).unwrap();
    assert_eq!(again["cause"], 1);
    assert_eq!(sample_sum(&metrics(), "mecgw_pfcp_sessions", &[]), 2);
    let report = gnbsim(&run, 0, &all, N3.v4, &edge_and_core_probes(), 1, 1000);
    all_answered(&report);

    // Restarted (a new Recovery Time Stamp in its heartbeat): its sessions are deleted.
    let hb = run
        .smf
        .call(json!({"cmd": "heartbeat", "recovery_ts": 3_900_000_200u32}))
        .unwrap();
    assert_eq!(hb["answered"], true, "{hb}");
    wait_until("the restarted SMF's sessions are deleted", || {
        sample_sum(&metrics(), "mecgw_pfcp_sessions", &[]) == 0
    });
    let edge_only = [probe("edge-udp", &format!("udp:{}:7", EDGE.v4))];
    let report = gnbsim(&run, 0, &all, N3.v4, &edge_only, 1, 300);
    assert_eq!(
        answered(&report, "edge-udp"),
        (2, 0),
        "no session, no local breakout: {report}"
    );
    assert!(run.alive());
}

/// With `keep`, a lost SMF's sessions go once `lost_session_timeout_secs` passed without it
/// coming back: the edge traffic stops being steered.
#[test]
fn a_lost_smfs_kept_sessions_go_after_the_lost_session_timeout() {
    let _turn = turn();
    let mut run = Run::start(&PfcpSettings {
        lost_session_timeout_secs: 2,
        ..quick_loss("keep")
    });
    run.smf.associate(None).unwrap();
    let s = run
        .smf
        .establish(&UlclSession::numbered(0, &[EDGE4], true))
        .unwrap();
    run.smf.call(json!({"cmd": "silent", "on": true})).unwrap();
    wait_until("mecgw counts the SMF as lost", || {
        sample_sum(&metrics(), "mecgw_pfcp_peers_lost_total", &[]) == 1
    });
    wait_until("the lost SMF's kept sessions time out", || {
        sample_sum(&metrics(), "mecgw_pfcp_sessions", &[]) == 0
    });
    let edge_only = [probe("edge-udp", &format!("udp:{}:7", EDGE.v4))];
    let report = gnbsim(&run, 0, &[&s], N3.v4, &edge_only, 1, 300);
    assert_eq!(answered(&report, "edge-udp"), (1, 0), "{report}");
    assert!(run.alive());
}

/// With `release`, a lost SMF's sessions are deleted at once: the edge traffic stops being
/// steered.
#[test]
fn a_silent_smf_is_lost_and_with_release_its_sessions_go() {
    let _turn = turn();
    let mut run = Run::start(&quick_loss("release"));
    run.smf.associate(None).unwrap();
    let s = run
        .smf
        .establish(&UlclSession::numbered(0, &[EDGE4], true))
        .unwrap();
    let edge_only = [probe("edge-udp", &format!("udp:{}:7", EDGE.v4))];
    let report = gnbsim(&run, 0, &[&s], N3.v4, &edge_only, 1, 1000);
    all_answered(&report);

    run.smf.call(json!({"cmd": "silent", "on": true})).unwrap();
    wait_until("mecgw counts the SMF as lost", || {
        sample_sum(&metrics(), "mecgw_pfcp_peers_lost_total", &[]) == 1
    });
    wait_until("the lost SMF's sessions are released", || {
        sample_sum(&metrics(), "mecgw_pfcp_sessions", &[]) == 0
    });
    assert_eq!(sample_sum(&metrics(), "mecgw_pfcp_associations", &[]), 0);
    let report = gnbsim(&run, 0, &[&s], N3.v4, &edge_only, 1, 300);
    assert_eq!(answered(&report, "edge-udp"), (1, 0), "{report}");
    assert!(run.alive());
}

// ---------------------------------------------------------------------------------------
// Hostile input.

/// A bounded fuzz run from a second SMF node: scapy's fuzz() of every message class, then
/// byte mutations of valid messages. Afterwards mecgw is alive and healthy, answers a fresh
/// heartbeat with the same Recovery Time Stamp (it did not restart), every answer it sent was
/// well-formed PFCP, and the first SMF's sessions steer the same traffic the same way.
#[test]
fn a_bounded_fuzz_leaves_the_daemon_alive_and_the_fast_path_unchanged() {
    let _turn = turn();
    let mut run = Run::start(&PfcpSettings {
        peers: vec![SMF_ADDR.to_string(), FUZZER.to_string()],
        ..PfcpSettings::default()
    });
    let assoc = run.smf.associate(None).unwrap();
    let sessions: Vec<Established> = (0..2)
        .map(|i| {
            run.smf
                .establish(&UlclSession::numbered(i, &[EDGE4], true))
                .unwrap()
        })
        .collect();
    let all: Vec<&Established> = sessions.iter().collect();
    let before = gnbsim(&run, 0, &all, N3.v4, &edge_and_core_probes(), 3, 1000);
    all_answered(&before);

    run.add_smf_address(FUZZER);
    let fuzz = run
        .smf
        .call(
            json!({"cmd": "fuzz", "count": 300, "seed": 20261206, "from": FUZZER,
                     "associate": true}),
        )
        .unwrap();
    eprintln!("fuzz: {fuzz}");
    assert_eq!(fuzz["sent"], 600);
    assert_eq!(fuzz["bad_answers"], 0, "every answer well-formed: {fuzz}");
    assert!(
        fuzz["answered"].as_u64().unwrap() > 0,
        "some fuzzed requests were answered (refused): {fuzz}"
    );

    assert!(run.alive(), "mecgw died under fuzzing");
    assert!(testbed::ops_get("/healthz").unwrap().is_some());
    let hb = run.smf.call(json!({"cmd": "heartbeat"})).unwrap();
    assert_eq!(hb["answered"], true, "{hb}");
    assert_eq!(
        hb["recovery_ts"], assoc["recovery_ts"],
        "mecgw did not restart"
    );

    let after = gnbsim(&run, 0, &all, N3.v4, &edge_and_core_probes(), 3, 1000);
    all_answered(&after);
    for i in 0..2 {
        let (b, a) = (UeVolume::of(&before, i), UeVolume::of(&after, i));
        assert_eq!(
            (a.encapsulated_by_mecgw(), a.straight_from_core()),
            (b.encapsulated_by_mecgw(), b.straight_from_core()),
            "UE {i}: the same traffic steered the same way"
        );
    }
}

/// Requests mecgw must refuse, each with the Cause (and Offending IE) of TS 29.244 and
/// without changing anything: no association (72), a missing mandatory IE (66), an invalid
/// length (68), an incorrect mandatory IE (69), a CHOOSE-less TEID outside mecgw's range (71),
/// a PDR naming a FAR that does not exist (73, Create PDR), duplication (76), an unknown SEID
/// (65); and node messages it must not answer (unknown type, an address not among its peers)
/// or answer with Version Not Supported.
#[test]
fn malformed_and_refused_requests_get_their_cause_and_offending_ie() {
    let _turn = turn();
    let mut run = Run::start(&PfcpSettings::default());
    let n4 = testbed::Capture::start(&UPF, &run.dir.path().join("n4.pcapng")).unwrap();
    let session = |i| UlclSession::numbered(i, &[EDGE4], true);

    let out = run.smf.call(session(0).to_json()).unwrap();
    assert_eq!(out["cause"], 72, "before any association: {out}");

    run.smf.associate(None).unwrap();
    let refuse = |run: &mut Run, extra: Value, cause: u64, offending: Option<u64>| {
        let mut cmd = session(0).to_json();
        for (k, v) in extra.as_object().unwrap() {
            cmd[k] = v.clone();
        }
        let out = run.smf.call(cmd.clone()).unwrap();
        assert_eq!(out["cause"], cause, "{extra}: {out}");
        if let Some(ie) = offending {
            assert_eq!(out["offending_ie"], ie, "{extra}: {out}");
        }
        assert_eq!(out["type"], 51, "{out}");
        assert_eq!(
            sample_sum(&metrics(), "mecgw_pfcp_sessions", &[]),
            0,
            "a refused establishment changed nothing ({extra})"
        );
    };
    // F-SEID (57) left out.
    refuse(&mut run, json!({"mutate": [{"omit": 57}]}), 66, Some(57));
    // Create PDR without its PDI (2).
    refuse(&mut run, json!({"mutate": [{"omit": [1, 2]}]}), 66, Some(2));
    // Node ID (60) one octet long: its type and no address.
    refuse(
        &mut run,
        json!({"mutate": [{"bad_length": 60}]}),
        68,
        Some(60),
    );
    // Node ID of type 5 (spare).
    refuse(
        &mut run,
        json!({"mutate": [{"replace": 60, "hex": "05c6120202"}]}),
        69,
        Some(60),
    );
    refuse(
        &mut run,
        json!({"explicit_teid": {"teid": 0x1234, "ipv4": N3.v4}}),
        71,
        None,
    );
    refuse(&mut run, json!({"dangling_far": true}), 73, Some(1));
    // Duplication (Apply Action, 44): 76.
    refuse(
        &mut run,
        json!({"dl_action": ["FORW", "DUPL"]}),
        76,
        Some(44),
    );

    // Unknown SEIDs.
    for cmd in [
        json!({"cmd": "modify", "seid": 0x0bad_5e1d_u64, "query_urr": [1]}),
        json!({"cmd": "delete", "seid": 0x0bad_5e1d_u64}),
    ] {
        let out = run.smf.call(cmd.clone()).unwrap();
        assert_eq!(out["cause"], 65, "{cmd}: {out}");
    }

    // After all that, a good establishment is accepted.
    let good = run.smf.establish(&session(0)).unwrap();
    assert!(good.teid >= 0x8000_0000);
    assert_eq!(sample_sum(&metrics(), "mecgw_pfcp_sessions", &[]), 1);

    // Version 2: Version Not Supported Response (11), same sequence number. The heartbeat's
    // bytes with the version bits set to 2.
    let mut hb = hex(run
        .smf
        .call(json!({"cmd": "build", "request": {"cmd": "heartbeat"}}))
        .unwrap()["hex"]
        .as_str()
        .unwrap());
    hb[0] = (hb[0] & 0x1f) | (2 << 5);
    let out = run
        .smf
        .call(json!({"cmd": "raw", "hex": to_hex(&hb)}))
        .unwrap();
    let answers = out["answers"].as_array().unwrap();
    assert_eq!(answers.len(), 1, "{out}");
    assert_eq!(answers[0]["type"], 11, "{out}");
    let seq = u64::from(u32::from_be_bytes([0, hb[4], hb[5], hb[6]]));
    assert_eq!(answers[0]["seq"], seq, "{out}");

    // An unknown message type (99): no answer.
    let mut unknown = hb.clone();
    unknown[0] = 0x20;
    unknown[1] = 99;
    let out = run
        .smf
        .call(json!({"cmd": "raw", "hex": to_hex(&unknown)}))
        .unwrap();
    assert_eq!(out["answers"], json!([]), "{out}");

    // A node that is not a peer: no answer, counted.
    run.add_smf_address(STRANGER);
    let out = run
        .smf
        .call(json!({"cmd": "heartbeat", "from": STRANGER}))
        .unwrap();
    assert_eq!(out["answered"], false, "{out}");

    let m = metrics();
    for reason in ["not_a_peer", "unknown_message_type"] {
        assert_eq!(
            sample_sum(&m, "mecgw_pfcp_ignored_total", &[("reason", reason)]),
            1,
            "{reason}: {m}"
        );
    }
    for cause in [
        "mandatory_ie_missing",
        "invalid_length",
        "mandatory_ie_incorrect",
        "rule_creation_modification_failure",
        "service_not_supported",
        "session_context_not_found",
        "no_established_pfcp_association",
    ] {
        assert!(
            sample_sum(&m, "mecgw_pfcp_rejected_total", &[("cause", cause)]) >= 1,
            "{cause}: {m}"
        );
    }
    assert!(run.alive());
    // mecgw's answers, refusals included, are well-formed PFCP to tshark too (the SMF's
    // deliberately malformed requests are left out of the check).
    let all = n4.stop().unwrap();
    let mecgw_only = run.dir.path().join("mecgw-n4.pcapng");
    let out = std::process::Command::new("tshark")
        .arg("-r")
        .arg(&all)
        .args([
            "-Y",
            &format!("pfcp && ip.src == {}", testbed::smf::MECGW_PFCP_ADDR),
        ])
        .arg("-w")
        .arg(&mecgw_only)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    dissects_cleanly(
        &mecgw_only,
        &["Offending IE", "PFCP Version Not Supported Response"],
    );
}
