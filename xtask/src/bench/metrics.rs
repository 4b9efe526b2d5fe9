//! `cargo xtask bench metrics [--rounds N] [--sessions N] [--rules N]`: what one `/metrics`
//! scrape costs the daemon at 100,000 sessions and 5,000 rules (reading the fast path's
//! counters, encoding OpenMetrics text), as ratios to 1 session and 10 rules measured in the
//! same run.
//!
//! Builds and runs the `metrics_bench` binary of the bench crate in release mode (it needs
//! root to load BPF); see that binary for the method.

pub fn run(args: &[String]) -> anyhow::Result<()> {
    super::run_bench_bin("metrics_bench", args, "metrics benchmark")
}
