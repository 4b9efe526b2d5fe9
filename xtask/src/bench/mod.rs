//! `cargo xtask bench NAME`: benchmarks. Each reports medians and ratios against a baseline
//! measured in the same run, and never fails on a figure (these machines are shared and noisy).

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};

mod api;
mod e2e;
mod egress;
mod fastpath;
mod flows;
mod metrics;
mod pfcp;
mod policy;

/// The benchmarks. Each lives in its own module here and exposes `run`; except for
/// `policy`, the options are the benchmark binary's own (`cargo xtask bench NAME --help`
/// lists them).
#[derive(Subcommand)]
pub enum Bench {
    /// Fast path: kernel ns per packet, as ratios to an empty XDP program (needs root).
    #[command(disable_help_flag = true)]
    Fastpath(Passed),
    /// Flow harvest: time and CPU of harvesting a full window of flows against reading it key
    /// by key, and kernel memory per flow (needs root).
    #[command(disable_help_flag = true)]
    Flows(Passed),
    /// End to end: packet rates and RTTs through the testbed for native XDP, generic XDP and
    /// the userspace datapath (needs root).
    #[command(disable_help_flag = true)]
    E2e(Passed),
    /// gRPC API: mTLS unary latency and Publish ingest against bare tonic, then the daemon's
    /// memory (that part needs root).
    #[command(disable_help_flag = true)]
    Api(Passed),
    /// Egress: spool → JetStream against a bare async-nats loop (needs nats-server).
    #[command(disable_help_flag = true)]
    Egress(Passed),
    /// PFCP (N4): establishment rate, closed-loop latency against heartbeats, and fast-path
    /// ns per packet of PFCP sessions against tables-file sessions (needs root).
    #[command(disable_help_flag = true)]
    Pfcp(Passed),
    /// /metrics: reading and encoding one scrape at 100,000 sessions and 5,000 rules, as
    /// ratios to 1 session and 10 rules (needs root).
    #[command(disable_help_flag = true)]
    Metrics(Passed),
    /// Policy engine: records/s against bare serde_json, and window memory.
    Policy(policy::Options),
}

/// Options handed to the benchmark binary as they are.
#[derive(Args)]
pub struct Passed {
    /// The benchmark's options (`--help`: its own help).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

pub fn run(bench: Bench) -> anyhow::Result<()> {
    match bench {
        Bench::Fastpath(p) => fastpath::run(&p.args),
        Bench::Flows(p) => flows::run(&p.args),
        Bench::E2e(p) => e2e::run(&p.args),
        Bench::Api(p) => api::run(&p.args),
        Bench::Egress(p) => egress::run(&p.args),
        Bench::Pfcp(p) => pfcp::run(&p.args),
        Bench::Metrics(p) => metrics::run(&p.args),
        Bench::Policy(o) => policy::run(&o),
    }
}

/// Runs the release binary `bin` of the bench crate (mecgw-bench) with `args`.
fn run_bench_bin(bin: &str, args: &[String], what: &str) -> anyhow::Result<()> {
    let status = mecgw_cmd::command(env!("CARGO"))
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
