//! `cargo xtask demo`: the README's main job.
//!
//! Builds mecgw (with its eBPF object), brings up a two-namespace testbed (`ran` and `mec`,
//! joined over N3 by a veth pair), attaches the XDP program natively on the gateway's N3
//! interface with `mecgw attach`, drives ICMP echo from `ran` through it, stops the gateway
//! with SIGTERM and prints what the program counted. It exits non-zero if any expectation
//! fails, and always removes the testbed.

use std::{
    io::Read as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use crate::{
    netns::{self, Endpoint, Testbed},
    shell,
};

const NS_RAN: &str = "mecgw-demo-ran";
const NS_MEC: &str = "mecgw-demo-mec";
const LINK_RAN: &str = "mgw-demo-gnb";
const LINK_N3: &str = "mgw-demo-n3";
/// Benchmark range (RFC 2544), used only inside our own namespaces.
const ADDR_RAN: &str = "198.18.0.1/24";
const ADDR_MEC: &str = "198.18.0.2";
const PINGS: u64 = 20;

pub fn run() -> anyhow::Result<()> {
    netns::catch_interrupts();
    shell::step(
        "build mecgw (release, with the eBPF object)",
        &["cargo", "build", "--release", "--package", "mecgw"],
    )?;
    let mecgw = target_dir().join("release").join("mecgw");

    println!("==> testbed: namespaces {NS_RAN} and {NS_MEC}, N3 over veth");
    let bed = Testbed::new(&[NS_RAN, NS_MEC])?;
    bed.link(
        &Endpoint {
            netns: NS_RAN,
            link: LINK_RAN,
            mac: None,
            addrs: &[ADDR_RAN],
        },
        &Endpoint {
            netns: NS_MEC,
            link: LINK_N3,
            mac: None,
            addrs: &[&format!("{ADDR_MEC}/24")],
        },
    )?;

    println!("==> gateway: mecgw attach --iface {LINK_N3} --mode native (in {NS_MEC})");
    let gateway = Command::new("ip")
        .args(["netns", "exec", NS_MEC])
        .arg(&mecgw)
        .args(["attach", "--iface", LINK_N3, "--mode", "native"])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting mecgw")?;
    let mut gateway = KillOnDrop(gateway);
    wait_for_xdp(&mut gateway.0)?;

    println!("==> traffic: {PINGS} ICMP echo requests from {NS_RAN} to {ADDR_MEC}");
    let ping = shell::capture(&[
        "ip", "netns", "exec", NS_RAN, "ping", "-c", "20", "-i", "0.05", "-W", "1", ADDR_MEC,
    ])?;
    let ping_out = String::from_utf8_lossy(&ping.stdout);
    let received = ping_out
        .lines()
        .find_map(|l| l.split(", ").find_map(|p| p.strip_suffix(" received")))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let rtt = ping_out
        .lines()
        .find(|l| l.starts_with("rtt"))
        .unwrap_or("rtt: none")
        .to_string();
    ensure!(!netns::interrupted(), "interrupted");

    // SIGTERM is how an operator stops the gateway: it must detach and report.
    let pid = libc::pid_t::try_from(gateway.0.id()).context("pid out of range")?;
    // SAFETY: kill(2) on a child we spawned and have not reaped; no memory is involved.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = wait_timeout(&mut gateway.0, Duration::from_secs(10))?;
    let mut report = String::new();
    if let Some(mut out) = gateway.0.stdout.take() {
        out.read_to_string(&mut report)?;
    }
    ensure!(status.success(), "mecgw exited with {status}");
    let xdp_after = xdp_attached()?;

    let passed = report
        .lines()
        .find(|l| l.contains(" pass "))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("packets="))
        })
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);

    println!();
    println!("================ mecgw demo summary ================");
    println!("XDP program        mecgw_pass, native mode on {LINK_N3} ({NS_MEC})");
    println!("ICMP echo          {received}/{PINGS} replies; {rtt}");
    println!("fast-path counters (per verdict, summed over CPUs):");
    for line in report.lines() {
        println!("    {line}");
    }
    println!(
        "after SIGTERM      {}",
        if xdp_after {
            "program STILL attached"
        } else {
            "program detached"
        }
    );
    println!("=====================================================");

    ensure!(
        received == PINGS,
        "expected {PINGS} echo replies, got {received}"
    );
    ensure!(
        passed >= PINGS,
        "the XDP program counted {passed} passed frames, expected at least the {PINGS} echo requests"
    );
    ensure!(
        !xdp_after,
        "the XDP program was still attached after mecgw exited"
    );
    drop(bed);
    println!("demo: all expectations met; testbed removed");
    Ok(())
}

/// Waits until the N3 link shows an XDP program, or mecgw exits, or 20 s pass.
fn wait_for_xdp(gateway: &mut Child) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        ensure!(!netns::interrupted(), "interrupted");
        if let Some(status) = gateway.try_wait()? {
            bail!("mecgw exited before attaching ({status}); see its log above");
        }
        if xdp_attached()? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("mecgw did not attach its XDP program within 20 s")
}

/// True if the gateway's N3 link has an XDP program attached (as `ip` reports it).
fn xdp_attached() -> anyhow::Result<bool> {
    let out = shell::capture(&["ip", "-netns", NS_MEC, "-details", "link", "show", LINK_N3])?;
    Ok(String::from_utf8_lossy(&out.stdout).contains("prog/xdp"))
}

fn wait_timeout(child: &mut Child, limit: Duration) -> anyhow::Result<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if start.elapsed() > limit {
            child.kill()?;
            bail!("mecgw did not exit within {limit:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills the child if the demo fails part-way, so nothing is left running.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}
