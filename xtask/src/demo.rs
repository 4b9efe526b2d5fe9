//! `cargo xtask demo`: the README's main job.
//!
//! 1. Builds mecgw (with its eBPF object) and the testbed tools, and brings the four-namespace
//!    testbed up (see `testbed.rs`).
//! 2. Writes an example configuration and tables — UE sessions and a LOCAL rule steering the
//!    edge subnet to the local services — and starts `mecgw run` in the `mec` namespace.
//! 3. Starts the edge services and the delayed core, then drives mixed traffic (UDP, ICMP and
//!    whole TCP connections, IPv4 and IPv6) from several UEs with the gNB simulator.
//! 4. Prints a summary: packets steered locally vs passed to the core, RTT p50/p99 local vs
//!    core, per-rule counters. It exits non-zero if an expectation fails, and always tears the
//!    testbed down, also on Ctrl-C.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use crate::{
    netns, shell,
    testbed::{self, EDGE, GNB, LOCAL, N3, NS_CORE, NS_EDGE, NS_MEC, NS_RAN, UPF},
};

/// UEs the simulator runs.
const UES: u32 = 8;
/// Rounds of every probe per UE.
const ROUNDS: u32 = 10;
/// The core stand-in's answer delay: the long way to a distant cloud.
const CORE_DELAY_MS: u64 = 20;
const UL_TEID_BASE: u32 = 0x1000;
const DL_TEID_BASE: u32 = 0x2000;
const QFI: u8 = 9;
/// The LOCAL rule's id.
const RULE_EDGE: u32 = 10;
/// Operations port inside the `mec` namespace.
const METRICS: &str = "127.0.0.1:9464";

pub fn run() -> anyhow::Result<()> {
    netns::catch_interrupts();
    shell::step(
        "build mecgw and the testbed tools (release)",
        &[
            "cargo",
            "build",
            "--release",
            "--package",
            "mecgw",
            "--package",
            "mecgw-tests",
            "--bins",
        ],
    )?;
    let bin = target_dir().join("release");
    let work = std::env::temp_dir().join(format!("mecgw-demo-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let _work_guard = RemoveDir(work.clone());

    let bed = testbed::up()?;
    write_config(&work)?;

    let mut children = Children::default();
    children.spawn(
        "edge services",
        netns_cmd(NS_EDGE, &bin.join("mecgw-edge"), &[]),
    )?;
    children.spawn(
        "core stand-in",
        netns_cmd(
            NS_CORE,
            &bin.join("mecgw-core"),
            &["--delay-ms", &CORE_DELAY_MS.to_string()],
        ),
    )?;
    println!(
        "==> gateway: mecgw run --config {}",
        work.join("mecgw.toml").display()
    );
    let gateway = children.spawn(
        "mecgw",
        netns_cmd(
            NS_MEC,
            &bin.join("mecgw"),
            &[
                "run",
                "--config",
                &work.join("mecgw.toml").to_string_lossy(),
            ],
        ),
    )?;
    wait_ready(&mut children, gateway)?;

    println!("==> traffic: {UES} UEs × {ROUNDS} rounds of UDP, ICMP and TCP, IPv4 and IPv6");
    let edge6 = format!("[{}]", EDGE.v6);
    let sim = shell::capture(&[
        "ip",
        "netns",
        "exec",
        NS_RAN,
        &bin.join("mecgw-gnbsim").to_string_lossy(),
        "--upf",
        UPF.v4,
        "--ues",
        &UES.to_string(),
        "--count",
        &ROUNDS.to_string(),
        "--timeout-ms",
        "1000",
        "--probe",
        &format!("local-udp=udp:{}:7", EDGE.v4),
        "--probe",
        &format!("local-udp6=udp:{edge6}:7"),
        "--probe",
        &format!("local-icmp=icmp:{}", EDGE.v4),
        "--probe",
        &format!("local-tcp=tcp:{}:8080", EDGE.v4),
        "--probe",
        &format!("local-tcp6=tcp:{edge6}:8080"),
        "--probe",
        &format!("core-udp=udp:{}:9", UPF.v4),
        "--probe",
        &format!("core-icmp=icmp:{}", UPF.v4),
    ])?;
    ensure!(!netns::interrupted(), "interrupted");
    ensure!(
        sim.status.success(),
        "the gNB simulator failed: {}",
        String::from_utf8_lossy(&sim.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&sim.stdout).with_context(|| {
        format!(
            "simulator output {:?}",
            String::from_utf8_lossy(&sim.stdout)
        )
    })?;
    let metrics = scrape()?;

    // SIGTERM is how an operator stops the gateway: it must detach and exit cleanly.
    let status = children.terminate(gateway, Duration::from_secs(10))?;
    let still_attached = xdp_attached(&N3)? || xdp_attached(&LOCAL)?;

    let summary = summarise(&report, &metrics);
    println!("\n{summary}");
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
    let local = metric(
        &metrics,
        "mecgw_rule_packets_total",
        &format!("rule=\"{RULE_EDGE}\""),
    );
    if local == 0 {
        failures.push("the LOCAL rule steered no packet".to_string());
    }
    if !status.success() {
        failures.push(format!("mecgw exited with {status}"));
    }
    if still_attached {
        failures.push("an XDP program was still attached after mecgw exited".to_string());
    }
    drop(children);
    drop(bed);
    if !failures.is_empty() {
        bail!("demo expectations failed:\n  {}", failures.join("\n  "));
    }
    println!("demo: all expectations met; testbed removed");
    Ok(())
}

/// Writes `mecgw.toml` and `tables.toml` for the testbed into `dir`.
fn write_config(dir: &Path) -> anyhow::Result<()> {
    let state = dir.join("state");
    let config = format!(
        r#"# Written by cargo xtask demo.
[interfaces]
n3 = "{n3}"
local = "{local}"

[xdp]
mode = "native"

[datapath]
tables = "tables.toml"

[state]
dir = "{state}"

[metrics]
listen = "{METRICS}"
"#,
        n3 = N3.link,
        local = LOCAL.link,
        state = state.display(),
    );
    std::fs::write(dir.join("mecgw.toml"), config)?;

    let mut t = format!(
        r#"# Written by cargo xtask demo: sessions follow mecgw-gnbsim's numbering.
[n3]
ifindex = 0   # replaced by the daemon from [interfaces]
mac = "{n3_mac}"
next_hop_mac = "{gnb_mac}"
ipv4 = "{n3_v4}"
ipv6 = "{n3_v6}"
mtu = 1500

[local]
ifindex = 0
mac = "{local_mac}"
next_hop_mac = "{edge_mac}"

[defaults]
unknown_teid = "pass"
spoofed_source = "drop"
malformed = "drop"

# The edge subnet is broken out locally; everything else passes to the core.
[[rules]]
id = {RULE_EDGE}
priority = 10
action = "LOCAL"
dst = ["198.18.1.0/24", "2001:db8:0:1::/64"]
"#,
        n3_mac = N3.mac,
        gnb_mac = GNB.mac,
        n3_v4 = N3.v4,
        n3_v6 = N3.v6,
        local_mac = LOCAL.mac,
        edge_mac = EDGE.mac,
    );
    for i in 0..UES {
        let _ = write!(
            t,
            r#"
[[sessions]]
id = {id}
uplink_teid = {ul}
downlink_teid = {dl}
ue_ipv4 = "198.19.{hi}.{lo}"
ue_ipv6 = "2001:db8:100:{i:x}::/64"
gnb = "{gnb}"
qfi = {QFI}
"#,
            id = i + 1,
            ul = UL_TEID_BASE + i,
            dl = DL_TEID_BASE + i,
            hi = (i + 1) >> 8,
            lo = (i + 1) & 0xff,
            gnb = GNB.v4,
        );
    }
    std::fs::write(dir.join("tables.toml"), t)?;
    Ok(())
}

/// Waits until mecgw reports ready on /readyz, or exits, or 30 s pass.
fn wait_ready(children: &mut Children, gateway: usize) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        ensure!(!netns::interrupted(), "interrupted");
        if let Some(status) = children.exited(gateway)? {
            bail!("mecgw exited before it was ready ({status}); see its log above");
        }
        let probe = shell::capture(&[
            "ip",
            "netns",
            "exec",
            NS_MEC,
            "curl",
            "-sf",
            &format!("http://{METRICS}/readyz"),
        ])?;
        if probe.status.success() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("mecgw was not ready within 30 s")
}

fn scrape() -> anyhow::Result<String> {
    let out = shell::capture(&[
        "ip",
        "netns",
        "exec",
        NS_MEC,
        "curl",
        "-sf",
        &format!("http://{METRICS}/metrics"),
    ])?;
    ensure!(out.status.success(), "scraping /metrics failed");
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The value of `name{labels}` in Prometheus text, or 0.
fn metric(text: &str, name: &str, labels: &str) -> u64 {
    let prefix = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
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

fn netns_cmd(ns: &str, program: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(program).args(args);
    c
}

/// True if `ip` shows an XDP program on `port`'s link.
fn xdp_attached(port: &testbed::Port) -> anyhow::Result<bool> {
    let out = shell::capture(&[
        "ip", "-netns", port.netns, "-details", "link", "show", port.link,
    ])?;
    Ok(String::from_utf8_lossy(&out.stdout).contains("prog/xdp"))
}

/// The demo's background processes; every one still running is killed on drop.
#[derive(Default)]
struct Children(Vec<(String, Child)>);

impl Children {
    fn spawn(&mut self, name: &str, mut cmd: Command) -> anyhow::Result<usize> {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        self.0.push((name.to_string(), child));
        Ok(self.0.len() - 1)
    }

    fn exited(&mut self, i: usize) -> anyhow::Result<Option<std::process::ExitStatus>> {
        Ok(self.0[i].1.try_wait()?)
    }

    /// Sends SIGTERM and waits up to `limit` for the exit.
    fn terminate(&mut self, i: usize, limit: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let (name, child) = &mut self.0[i];
        // `ip netns exec` execs the program, so the pid is mecgw's own.
        let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
        // SAFETY: kill(2) on a child we spawned and have not reaped; no memory is involved.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                bail!("{name} did not exit within {limit:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child) in self.0.iter_mut().rev() {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}
