//! `mecgw-demo`: the README's main job, run by `cargo xtask demo` after it has set up and
//! built everything.
//!
//! 1. Brings the four-namespace testbed up (see `mecgw_tests::testbed`).
//! 2. Writes an example configuration and tables — UE sessions and a LOCAL rule steering the
//!    edge subnet to the local services — and starts `mecgw run` in the `mec` namespace, with
//!    the edge services and a core that answers after a delay.
//! 3. Drives mixed traffic (UDP, ICMP and whole TCP connections, IPv4 and IPv6) from several
//!    UEs with the gNB simulator.
//! 4. Prints a summary: packets steered locally vs passed to the core, RTT p50/p99 local vs
//!    core, per-rule counters. It exits non-zero if an expectation fails, and always tears the
//!    testbed down, also on Ctrl-C.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail, ensure};
use mecgw_tests::testbed::{self, EDGE, Gateway, LOCAL, N3, UPF, metric};

/// UEs the simulator runs.
const UES: u32 = 8;
/// Rounds of every probe per UE.
const ROUNDS: u32 = 10;
/// The core stand-in's answer delay: the long way to a distant cloud.
const CORE_DELAY_MS: u64 = 20;
/// The LOCAL rule's id.
const RULE_EDGE: u32 = 10;

const RULES: &str = "# The edge subnet is broken out locally; everything else passes to the core.
[[rules]]
id = 10
priority = 10
action = \"LOCAL\"
dst = [\"198.18.1.0/24\", \"2001:db8:0:1::/64\"]
";

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
    testbed::write_gateway_config(work.path(), UES, RULES, "native")?;
    println!(
        "==> gateway: mecgw run --config {}",
        work.path().join("mecgw.toml").display()
    );
    let mut gw = Gateway::start(bin, work.path(), CORE_DELAY_MS, &[])?;

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
    let mut args = vec![
        "--upf",
        UPF.v4,
        "--ues",
        &ues,
        "--count",
        &rounds,
        "--timeout-ms",
        "1000",
    ];
    for p in &probes {
        args.extend(["--probe", p.as_str()]);
    }
    let report = testbed::gnbsim(bin, &args)?;
    ensure!(!testbed::interrupted(), "interrupted");
    let metrics = testbed::ops_get("/metrics")?.context("scraping /metrics failed")?;

    // SIGTERM is how an operator stops the gateway: it must detach and exit cleanly.
    let status = gw.stop()?;
    let still_attached = testbed::xdp_attached(&N3)? || testbed::xdp_attached(&LOCAL)?;

    println!("\n{}", summarise(&report, &metrics));
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
    if metric(
        &metrics,
        "mecgw_rule_packets_total",
        &format!("rule=\"{RULE_EDGE}\""),
    ) == 0
    {
        failures.push("the LOCAL rule steered no packet".to_string());
    }
    if !status.success() {
        failures.push(format!("mecgw exited with {status}"));
    }
    if still_attached {
        failures.push("an XDP program was still attached after mecgw exited".to_string());
    }
    drop(gw);
    drop(bed);
    if !failures.is_empty() {
        bail!("demo expectations failed:\n  {}", failures.join("\n  "));
    }
    println!("demo: all expectations met; testbed removed");
    Ok(())
}

fn summarise(report: &serde_json::Value, metrics: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "================ mecgw demo summary ================");
    let local = metric(
        metrics,
        "mecgw_fastpath_reason_packets_total",
        "reason=\"rule_local\"",
    );
    let no_rule = metric(
        metrics,
        "mecgw_fastpath_reason_packets_total",
        "reason=\"no_rule\"",
    );
    let pass_rule = metric(
        metrics,
        "mecgw_fastpath_reason_packets_total",
        "reason=\"rule_passthrough\"",
    );
    let encap = metric(
        metrics,
        "mecgw_fastpath_reason_packets_total",
        "reason=\"encapsulated\"",
    );
    let _ = writeln!(s, "uplink packets steered locally      {local}");
    let _ = writeln!(
        s,
        "uplink packets passed to the core   {}",
        no_rule + pass_rule
    );
    let _ = writeln!(s, "downlink packets encapsulated       {encap}");
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
    let _ = writeln!(s, "\nper-rule counters");
    for l in metrics.lines().filter(|l| l.starts_with("mecgw_rule_")) {
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
