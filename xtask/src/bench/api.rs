//! `cargo xtask bench api [--rounds N] [--calls N] [--records N] [--batch N]`: the gRPC API
//! over mTLS on loopback: unary p50/p99 and streaming Publish records/s on one connection,
//! each as a ratio to a bare tonic service over the same mTLS measured in the same run.
//!
//! Builds and runs the `api_bench` binary of the tests crate in release mode; see that
//! binary for the method.

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
            "api_bench",
            "--",
        ])
        .args(args)
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("the API benchmark failed ({status})");
    }
    Ok(())
}
