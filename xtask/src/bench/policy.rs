//! `cargo xtask bench policy [--records N] [--runs R]`: the privacy policy engine.
//!
//! Runs `policy/examples/policy_bench.rs` (release build) three times, each in a fresh
//! process: throughput (records/s per core, JSON lines in and out and in memory, HMAC/s, and
//! a bare serde_json parse-and-serialise baseline in the same run, medians and ratios); peak
//! RSS for one window of 1,000,000 privacy units across 10,000 groups (bytes per pair); and
//! the same window with a 100,000-pair state cap, to show memory stays bounded and what
//! happens to the window.

use crate::shell;

/// The throughput run's options (the example reads only these two).
#[derive(clap::Args)]
pub struct Options {
    /// Flow records per run (the example's default: 200,000).
    #[arg(long)]
    records: Option<u64>,
    /// Runs; the median is reported (the example's default: 5).
    #[arg(long)]
    runs: Option<u64>,
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    let bench = |extra: &[&str]| -> anyhow::Result<()> {
        let mut argv = vec![
            "cargo",
            "run",
            "--quiet",
            "--release",
            "-p",
            "mecgw-policy",
            "--example",
            "policy_bench",
            "--",
        ];
        argv.extend_from_slice(extra);
        shell::step("bench policy", &argv)
    };
    let mut throughput = vec!["throughput".to_string()];
    for (flag, value) in [("--records", options.records), ("--runs", options.runs)] {
        if let Some(v) = value {
            throughput.extend([flag.to_string(), v.to_string()]);
        }
    }
    bench(&throughput.iter().map(String::as_str).collect::<Vec<_>>())?;
    bench(&["memory", "--units", "1000000", "--groups", "10000"])?;
    bench(&[
        "memory",
        "--units",
        "1000000",
        "--groups",
        "10000",
        "--max-state",
        "100000",
    ])
}
