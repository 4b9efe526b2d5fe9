//! `cargo xtask bench fastpath [--repeat N] [--runs N] [--calls N]`: kernel nanoseconds per
//! packet of the XDP fast path, as ratios to an empty XDP program measured in the same run.
//!
//! Builds and runs the `fastpath_bench` binary of the tests crate in release mode (it needs
//! root to load BPF); see that binary for the method and the counter proof.

use std::process::Command;

use anyhow::{Context, bail};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let status = Command::new(env!("CARGO"))
        .args([
            "run",
            "--release",
            "--quiet",
            "-p",
            "mecgw-tests",
            "--bin",
            "fastpath_bench",
            "--",
        ])
        .args(args)
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("the fast-path benchmark failed ({status})");
    }
    Ok(())
}
