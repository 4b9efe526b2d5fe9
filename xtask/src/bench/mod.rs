//! `cargo xtask bench NAME`: benchmarks. Each reports medians and ratios against a baseline
//! measured in the same run, and never fails on a figure (these machines are shared and noisy).
//! Each benchmark lives in its own module here and exposes `run(args)`.

use std::process::Command;

use anyhow::{Context as _, bail};

mod api;
mod e2e;
mod egress;
mod fastpath;
mod policy;

/// Names of the benchmarks, for `--help` and errors.
pub const NAMES: &[&str] = &["fastpath", "egress", "policy", "api", "e2e"];

pub fn run(name: &str, args: &[String]) -> anyhow::Result<()> {
    match name {
        "fastpath" => fastpath::run(args),
        "egress" => egress::run(args),
        "policy" => policy::run(args),
        "api" => api::run(args),
        "e2e" => e2e::run(args),
        other => bail!(
            "unknown benchmark {other:?}; available: {}",
            NAMES.join(", ")
        ),
    }
}

/// `cargo build --release --quiet PACKAGES…`: the binaries a benchmark starts beside itself.
fn build_release(packages: &[&str], what: &str) -> anyhow::Result<()> {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet"])
        .args(packages)
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("building {what} failed ({status})");
    }
    Ok(())
}

/// Runs the release binary `bin` of the bench crate (mecgw-bench) with `args`.
fn run_bench_bin(bin: &str, args: &[String], what: &str) -> anyhow::Result<()> {
    let status = Command::new(env!("CARGO"))
        .args([
            "run",
            "--release",
            "--quiet",
            "-p",
            "mecgw-bench",
            "--bin",
            bin,
            "--",
        ])
        .args(args)
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("the {what} failed ({status})");
    }
    Ok(())
}
