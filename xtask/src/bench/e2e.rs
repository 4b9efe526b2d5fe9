//! `cargo xtask bench e2e [--runs N] [--flat-ms MS] [--no-echo] [--step-ms MS] [--loss F]
//! [--blast PACKETS]`: packets per second at kernel speed (live-frames sender, XDP sink) and
//! RTT p50/p99 through the echo, for native XDP, generic XDP and the userspace datapath,
//! medians of several runs, ratios to the userspace datapath.
//!
//! Builds the gateway and the testbed tools in release mode and runs the `e2e_bench` binary
//! of the tests crate (it needs root for the namespaces); see that binary for the method.

use std::process::Command;

use anyhow::{Context, bail};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "mecgw",
            "-p",
            "mecgw-tests",
            "--bins",
        ])
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("building the gateway and the testbed tools failed ({status})");
    }
    let status = Command::new(env!("CARGO"))
        .args([
            "run",
            "--release",
            "--quiet",
            "-p",
            "mecgw-tests",
            "--bin",
            "e2e_bench",
            "--",
        ])
        .args(args)
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("the end-to-end benchmark failed ({status})");
    }
    Ok(())
}
