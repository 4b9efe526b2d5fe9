//! `mecgw-demo`: the README's main job, run by `cargo xtask demo` after it has set up and
//! built everything.
//!
//! 1. Brings the four-namespace testbed up (see `mecgw_testbed`).
//! 2. Writes an example configuration with a `[pfcp]` section and a tables file without
//!    sessions, and starts `mecgw run` in the `mec` namespace, with the edge services and a
//!    core (the PSA) that answers after a delay.
//! 3. Starts the test SMF (`testbed/pfcp/smf.py`, scapy's PFCP layers) in the core
//!    namespace, which associates with mecgw and sets up a UL CL session per UE over N4: the
//!    edge subnet broken out locally, the rest re-tunnelled to the PSA, a URR reporting every
//!    few seconds.
//! 4. Drives mixed traffic (UDP, ICMP and whole TCP connections, IPv4 and IPv6) from several
//!    UEs with the gNB simulator, to the TEIDs mecgw chose.
//! 5. Deletes the sessions (final usage reports) and prints a summary: packets steered locally
//!    vs re-tunnelled to the core, RTT p50/p99 local vs core, the PFCP side (association,
//!    sessions, heartbeats, usage reports next to the volumes the simulator counted), and the
//!    privacy half: the fast path's flow records run through the example policy
//!    (examples/policies/flow-records.yaml), what was released to which destination (file
//!    sinks) and what was withheld. It exits non-zero if an expectation fails (including any
//!    usage report that differs from the traffic, or any subscriber IMSI in any byte that
//!    left), and always tears the testbed down, also on Ctrl-C.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail, ensure};
use mecgw_testbed::{
    self as testbed, DatapathChoice, EDGE, GNB, Gateway, LOCAL, N3, PfcpSettings, UPF,
    smf::{Established, MECGW_PFCP_ADDR, Smf, UlclSession, usage_totals},
};
use serde_json::{Value, json};

/// UEs the simulator runs.
const UES: u32 = 8;
/// Rounds of every probe per UE.
const ROUNDS: u32 = 10;
/// The core stand-in's answer delay: the long way to a distant cloud.
const CORE_DELAY_MS: u64 = 20;
/// The edge subnets: each UE's session breaks them out locally; the rest goes to the PSA.
const EDGE_PREFIXES: [&str; 2] = ["198.18.1.0/24", "2001:db8:0:1::/64"];
/// Seconds between a session's periodic usage reports.
const REPORT_PERIOD: u32 = 3;

fn main() -> std::process::ExitCode {
    testbed::catch_interrupts();
    let bin = match std::env::args().nth(1) {
        Some(dir) => PathBuf::from(dir),
        None => {
            eprintln!(
                "usage: mecgw-demo BIN_DIR (the directory holding mecgw and the testbed tools)"
            );
            return std::process::ExitCode::FAILURE;
        }
    };
    match demo(&bin) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mecgw-demo: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn demo(bin: &Path) -> anyhow::Result<()> {
    let work = tempfile::tempdir().context("temporary directory")?;
    let bed = testbed::up()?;
    testbed::write_gateway_config_pfcp(
        work.path(),
        "",
        DatapathChoice::Native,
        &PfcpSettings::default(),
    )?;
    add_privacy(work.path())?;
    println!(
        "==> gateway: mecgw run --config {} (sessions over PFCP from {})",
        work.path().join("mecgw.toml").display(),
        testbed::smf::SMF_ADDR
    );
    // The core is the PSA: it answers re-tunnelled uplink straight to the gNB.
    let mut gw = Gateway::start(bin, work.path(), CORE_DELAY_MS, &["--gnb", GNB.v4])?;

    println!("==> SMF: association and {UES} UL CL sessions over N4 (scapy's PFCP layers)");
    let mut smf = Smf::start()?;
    let association = smf.associate(None)?;
    let mut sessions = Vec::new();
    for i in 0..UES {
        let mut s = UlclSession::numbered(i, &EDGE_PREFIXES, true).with_ipv6(i);
        s.report_period_secs = Some(REPORT_PERIOD);
        sessions.push(smf.establish(&s)?);
    }
    let teids: Vec<String> = sessions.iter().map(|s| format!("{:#x}", s.teid)).collect();
    let teids = teids.join(",");

    println!("==> traffic: {UES} UEs × {ROUNDS} rounds of UDP, ICMP and TCP, IPv4 and IPv6");
    let edge6 = format!("[{}]", EDGE.v6);
    let probes = [
        format!("local-udp=udp:{}:7", EDGE.v4),
        format!("local-udp6=udp:{edge6}:7"),
        format!("local-icmp=icmp:{}", EDGE.v4),
        format!("local-tcp=tcp:{}:8080", EDGE.v4),
        format!("local-tcp6=tcp:{edge6}:8080"),
        format!("core-udp=udp:{}:9", UPF.v4),
        format!("core-icmp=icmp:{}", UPF.v4),
    ];
    let ues = UES.to_string();
    let rounds = ROUNDS.to_string();
    // The gNB sends to the F-TEIDs mecgw chose: its N3 address and a TEID per session.
    let mut args = vec![
        "--upf",
        N3.v4,
        "--ul-teids",
        &teids,
        "--ues",
        &ues,
        "--count",
        &rounds,
        "--timeout-ms",
        "1000",
        "--drain-ms",
        "300",
    ];
    for p in &probes {
        args.extend(["--probe", p.as_str()]);
    }
    let report = testbed::gnbsim(bin, &args)?;
    ensure!(!testbed::interrupted(), "interrupted");
    // The daemon harvests flow counters every FLOW_INTERVAL seconds: wait for the harvest
    // that covers the end of the traffic.
    std::thread::sleep(std::time::Duration::from_secs(FLOW_INTERVAL + 1));
    let metrics = testbed::ops_get("/metrics")?.context("scraping /metrics failed")?;
    // Deleting the sessions gives their final usage reports.
    let mut finals = Vec::new();
    for i in 0..UES {
        let out = smf.call(json!({"cmd": "delete", "name": format!("ue{}", i + 1)}))?;
        finals.push(out);
    }
    let reports = smf.call(json!({"cmd": "reports"}))?;
    let smf_stats = smf.call(json!({"cmd": "stats"}))?;
    let after_delete = testbed::ops_get("/metrics")?.context("scraping /metrics failed")?;
    drop(smf);

    // SIGTERM is how an operator stops the gateway: it must detach and exit cleanly.
    let status = gw.stop()?;
    let still_attached = testbed::xdp_attached(&N3)? || testbed::xdp_attached(&LOCAL)?;

    println!("\n{}", summarise(&report, &metrics));
    let pfcp = pfcp_outcome(&PfcpSide {
        association: &association,
        sessions: &sessions,
        report: &report,
        finals: &finals,
        reports: &reports,
        smf_stats: &smf_stats,
        metrics: &metrics,
        after_delete: &after_delete,
    });
    println!("{}", pfcp.summary);
    let privacy = privacy_outcome(bin, work.path(), &metrics)?;
    println!("{}", privacy.summary);
    println!(
        "after SIGTERM      mecgw exited {status}; XDP programs {}",
        if still_attached {
            "STILL ATTACHED"
        } else {
            "detached"
        }
    );

    let mut failures = Vec::new();
    if let Some(probes) = report.as_object() {
        for (name, r) in probes {
            let Some(sent) = r.get("sent").and_then(|v| v.as_u64()) else {
                continue;
            };
            let ok = r.get("ok").and_then(|v| v.as_u64()).unwrap_or(0);
            if ok != sent {
                failures.push(format!("{name}: {ok}/{sent} answered correctly ({r})"));
            }
        }
    }
    if testbed::metric(
        &metrics,
        "mecgw_fastpath_reason_packets_total",
        "reason=\"pdr_local\"",
    ) == 0
    {
        failures.push("the sessions' edge PDRs steered no packet locally".to_string());
    }
    failures.extend(pfcp.failures);
    if !status.success() {
        failures.push(format!("mecgw exited with {status}"));
    }
    if still_attached {
        failures.push("an XDP program was still attached after mecgw exited".to_string());
    }
    failures.extend(privacy.failures);
    drop(gw);
    drop(bed);
    if !failures.is_empty() {
        bail!("demo expectations failed:\n  {}", failures.join("\n  "));
    }
    println!("demo: all expectations met; testbed removed");
    Ok(())
}

/// Seconds between flow harvests in the demo (a production default is 10).
const FLOW_INTERVAL: u64 = 2;
/// The example policy the demo runs, as shipped.
const POLICY: &str = include_str!("../../../examples/policies/flow-records.yaml");

/// Adds the privacy half to the demo's configuration: the example flow-records policy with a
/// fresh key, flow records every FLOW_INTERVAL seconds, and its two destinations as file
/// sinks in `outbox/`.
fn add_privacy(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(dir.join("policy.yaml"), POLICY)?;
    std::fs::create_dir_all(dir.join("keys"))?;
    let key: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    let key_file = dir.join("keys/subscriber.key");
    std::fs::write(&key_file, format!("{key}\n"))?;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))?;
    let mut config = std::fs::read_to_string(dir.join("mecgw.toml"))?;
    let _ = write!(
        config,
        "\n[policy]\nfile = \"policy.yaml\"\n\n[flows]\nenabled = true\ninterval_secs = {FLOW_INTERVAL}\n\n\
         [egress]\n[[egress.destinations]]\nname = \"analytics\"\nregion = \"EU-DE\"\n\
         sink = {{ type = \"file\", dir = \"outbox\" }}\n\n[[egress.destinations]]\n\
         name = \"national_statistics\"\nregion = \"EU-DE\"\nsink = {{ type = \"file\", dir = \"outbox\" }}\n"
    );
    std::fs::write(dir.join("mecgw.toml"), config)?;
    Ok(())
}

/// What a part of the demo did (the privacy half, read after the gateway stopped, when its
/// last windows close; the PFCP side): its summary and the expectations it failed.
struct Outcome {
    summary: String,
    failures: Vec<String>,
}

/// The items of every batch a file sink received for `destination`.
fn sink_items(dir: &Path, destination: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let path = dir.join("outbox").join(format!("{destination}.jsonl"));
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(Vec::new());
    };
    let mut items = Vec::new();
    for line in text.lines() {
        let batch: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{}", path.display()))?;
        items.extend(batch["items"].as_array().cloned().unwrap_or_default());
    }
    Ok(items)
}

/// Every file's bytes under `dir`, with its path.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            out.push((p, b));
        }
    }
    out
}

fn privacy_outcome(bin: &Path, dir: &Path, metrics: &str) -> anyhow::Result<Outcome> {
    let mut failures = Vec::new();
    let mut s = String::new();
    let flows_in = testbed::metric(metrics, "mecgw_records_in_total", "source=\"flow\"");
    let records = sink_items(dir, "analytics")?;
    let cells = sink_items(dir, "national_statistics")?;
    let _ = writeln!(
        s,
        "---------------- privacy (examples/policies/flow-records.yaml) ----------------"
    );
    let _ = writeln!(
        s,
        "flow records from the fast path        {flows_in}   (one per flow per {FLOW_INTERVAL} s harvest)"
    );
    let _ = writeln!(
        s,
        "released to analytics (EU-DE)          {} transformed records: IMSI/MSISDN pseudonymised, UE and peer addresses truncated, start bucketed to 15 min, IMEI/TEID/QFI dropped",
        records.len()
    );
    if let Some(r) = records.first() {
        let _ = writeln!(s, "    e.g. {}", r["record"]);
    }
    // The identities come from the control plane: each session's User ID, sent by the SMF.
    let pseudonyms: std::collections::BTreeSet<&str> = records
        .iter()
        .filter_map(|r| r["record"]["imsi"].as_str())
        .collect();
    let _ = writeln!(
        s,
        "subscribers named by the SMF          {} distinct IMSI pseudonyms (the User ID of each PFCP session)",
        pseudonyms.len()
    );
    if pseudonyms.len() != UES as usize {
        failures.push(format!(
            "{} distinct IMSI pseudonyms in the released records, not one per UE ({UES})",
            pseudonyms.len()
        ));
    }
    if records
        .iter()
        .any(|r| r["record"]["imsi"].as_str().is_none())
    {
        failures.push("a released flow record has no IMSI pseudonym".to_string());
    }
    let _ = writeln!(
        s,
        "released to national_statistics (EU-DE) {} cells of traffic_per_cell; the demo has {UES} subscribers, fewer than the release's k = 20, so its cell is withheld (the hour's window closed at shutdown)",
        cells.len()
    );
    let _ = writeln!(
        s,
        "privacy budget left today              ε {}",
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("mecgw_budget_left{param=\"epsilon\"} "))
            .unwrap_or("?")
    );
    if flows_in == 0 {
        failures.push("no flow record reached the policy engine".to_string());
    }
    if records.is_empty() {
        failures.push("no transformed flow record reached the analytics sink".to_string());
    }
    if !cells.is_empty() {
        failures.push(format!(
            "{} cells with fewer than k subscribers were released",
            cells.len()
        ));
    }
    // Canaries: no subscriber IMSI in any byte that left, nor in the spool or audit log.
    let mut leaks = Vec::new();
    let mut places = files_under(&dir.join("outbox"));
    places.extend(files_under(&dir.join("state")));
    for n in 1..=UES {
        let imsi = testbed::imsi(n);
        for (path, bytes) in &places {
            if bytes.windows(imsi.len()).any(|w| w == imsi.as_bytes()) {
                leaks.push(format!("{imsi} in {}", path.display()));
            }
        }
    }
    let _ = writeln!(
        s,
        "subscriber IMSIs in egress/spool/audit {}",
        if leaks.is_empty() {
            "none (checked every byte)"
        } else {
            "FOUND"
        }
    );
    failures.extend(leaks);
    let verify = std::process::Command::new(bin.join("mecgw"))
        .args(["audit", "verify"])
        .arg(dir.join("state/audit"))
        .output()
        .context("running mecgw audit verify")?;
    let _ = write!(
        s,
        "audit chain                            {}",
        String::from_utf8_lossy(&verify.stdout).trim()
    );
    if !verify.status.success() {
        failures.push(format!(
            "mecgw audit verify failed: {}",
            String::from_utf8_lossy(&verify.stderr).trim()
        ));
    }
    Ok(Outcome {
        summary: s,
        failures,
    })
}

fn summarise(report: &serde_json::Value, metrics: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "================ mecgw demo summary ================");
    let reason = |r: &str| {
        testbed::metric(
            metrics,
            "mecgw_fastpath_reason_packets_total",
            &format!("reason=\"{r}\""),
        )
    };
    // Sessions from PFCP are judged by their PDRs; a tables-file session by rules.
    let local = reason("pdr_local") + reason("rule_local");
    let core = reason("pdr_retunnel")
        + reason("pdr_forward")
        + reason("no_rule")
        + reason("rule_passthrough");
    let _ = writeln!(s, "uplink packets steered locally      {local}");
    let _ = writeln!(s, "uplink packets sent to the core     {core}");
    let _ = writeln!(
        s,
        "downlink packets encapsulated       {}",
        reason("encapsulated")
    );
    let _ = writeln!(s, "\nprobe          answered   RTT p50     RTT p99");
    if let Some(probes) = report.as_object() {
        for (name, r) in probes {
            let Some(sent) = r.get("sent").and_then(|v| v.as_u64()) else {
                continue;
            };
            let ok = r.get("ok").and_then(|v| v.as_u64()).unwrap_or(0);
            let ms = |k: &str| {
                r.get(k)
                    .and_then(|v| v.as_f64())
                    .map_or("-".to_string(), |us| format!("{:.3} ms", us / 1000.0))
            };
            let _ = writeln!(
                s,
                "{name:<14} {:>4}/{:<4}  {:>10}  {:>10}",
                ok,
                sent,
                ms("rtt_p50_us"),
                ms("rtt_p99_us")
            );
        }
    }
    let _ = writeln!(
        s,
        "(the core stand-in answers after {CORE_DELAY_MS} ms: the distant cloud)"
    );
    // The sessions come over PFCP: their PDRs' counters are in the usage reports below; here
    // the fast path's reasons (pdr_local, pdr_retunnel, ...) say which path each packet took.
    let _ = writeln!(s, "\nfast-path reasons (those that counted)");
    for l in metrics.lines().filter(|l| {
        (l.starts_with("mecgw_fastpath_reason_packets_total") || l.starts_with("mecgw_rule_"))
            && !l.ends_with(" 0")
    }) {
        let _ = writeln!(s, "    {l}");
    }
    let _ = writeln!(s, "\nfast-path verdicts");
    for l in metrics
        .lines()
        .filter(|l| l.starts_with("mecgw_fastpath_packets_total"))
    {
        let _ = writeln!(s, "    {l}");
    }
    let _ = write!(s, "=====================================================");
    s
}

/// What the PFCP side of the demo saw: the SMF's results, the simulator's report and the
/// gateway's metrics (during the traffic, and after the sessions were deleted).
struct PfcpSide<'a> {
    association: &'a Value,
    sessions: &'a [Established],
    report: &'a Value,
    finals: &'a [Value],
    reports: &'a Value,
    smf_stats: &'a Value,
    metrics: &'a str,
    after_delete: &'a str,
}

/// The PFCP section of the summary, and what in it is wrong: each session's usage reports
/// (periodic and final) must add up to the inner packets and octets the simulator sent
/// (uplink) and received through the gateway's encapsulation (downlink).
fn pfcp_outcome(p: &PfcpSide<'_>) -> Outcome {
    let mut failures = Vec::new();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "---------------- PFCP (N4, test SMF at {}) ----------------",
        testbed::smf::SMF_ADDR
    );
    let _ = writeln!(
        s,
        "association                 mecgw Node ID {}, Recovery Time Stamp {}, UP features {}",
        p.association["node_id"].as_str().unwrap_or("?"),
        p.association["recovery_ts"],
        p.association["up_features"].as_str().unwrap_or("?"),
    );
    if p.association["node_id"] != MECGW_PFCP_ADDR {
        failures.push(format!(
            "association answered by {}",
            p.association["node_id"]
        ));
    }
    let gauge = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .map_or("?".to_string(), |v| v.trim().to_string())
    };
    let _ = writeln!(
        s,
        "sessions established        {} (mecgw_pfcp_sessions {} during the traffic, {} after deletion)",
        p.sessions.len(),
        gauge(p.metrics, "mecgw_pfcp_sessions"),
        gauge(p.after_delete, "mecgw_pfcp_sessions"),
    );
    let _ = writeln!(
        s,
        "heartbeats from mecgw       {} answered by the SMF",
        p.smf_stats["heartbeats_answered"]
    );
    let periodic = p.reports["reports"].as_array().map_or(0, Vec::len);
    let _ = writeln!(
        s,
        "usage reports               {periodic} periodic (every {REPORT_PERIOD} s) + {} final, inner IP volumes:",
        p.finals.len()
    );
    let _ = writeln!(
        s,
        "    session  TEID         reported up/down (packets, octets)       simulator up/down"
    );
    for (i, (session, fin)) in p.sessions.iter().zip(p.finals).enumerate() {
        let name = format!("ue{}", i + 1);
        if fin["cause"] != 1 {
            failures.push(format!("deleting {name}: {fin}"));
        }
        let mut parts: Vec<Value> = p.reports["reports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["session"] == name.as_str())
            .cloned()
            .collect();
        parts.extend(
            fin["usage_reports"]
                .as_array()
                .into_iter()
                .flatten()
                .cloned(),
        );
        let (ul_o, dl_o, ul_p, dl_p) = usage_totals(&Value::Array(parts));
        let ue = &p.report["ues"][i];
        let n = |v: &Value| {
            (
                v["packets"].as_u64().unwrap_or(0),
                v["octets"].as_u64().unwrap_or(0),
            )
        };
        let sent = n(&ue["uplink"]);
        // Downlink through the gateway: what its N3 address encapsulated.
        let received = n(&ue["downlink"][N3.v4]);
        let _ = writeln!(
            s,
            "    {name:<8} {:#010x}   ({ul_p}, {ul_o}) / ({dl_p}, {dl_o})    ({}, {}) / ({}, {})",
            session.teid, sent.0, sent.1, received.0, received.1
        );
        if (ul_p, ul_o, dl_p, dl_o) != (sent.0, sent.1, received.0, received.1) {
            failures.push(format!(
                "{name}: usage reports say up ({ul_p}, {ul_o}) down ({dl_p}, {dl_o}), the simulator \
                 counted up {sent:?} down {received:?} (packets, octets)"
            ));
        }
    }
    let _ = write!(
        s,
        "(uplink: every G-PDU of the session; downlink: the edge's answers mecgw encapsulated; the PSA answers the gNB directly)"
    );
    Outcome {
        summary: s,
        failures,
    }
}
