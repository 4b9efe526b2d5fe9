//! `cargo xtask bench policy [--records N] [--runs R]`: the privacy policy engine.
//!
//! Runs `policy/examples/policy_bench.rs` (release build) three times, each in a fresh
//! process: throughput (records/s per core, JSON lines in and out and in memory, HMAC/s, and
//! a bare serde_json parse-and-serialise baseline in the same run, medians and ratios); peak
//! RSS for one window of 1,000,000 privacy units across 10,000 groups (bytes per pair); and
//! the same window with a 100,000-pair state cap, to show memory stays bounded and what
//! happens to the window.

use crate::shell;

pub fn run(args: &[String]) -> anyhow::Result<()> {
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
    let mut throughput = vec!["throughput"];
    throughput.extend(args.iter().map(String::as_str));
    bench(&throughput)?;
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
