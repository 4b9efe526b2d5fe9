//! `cargo xtask bench pfcp [--sessions N] [--samples N] [--runs N] [--repeat N] [--window N]`:
//! the PFCP (N4) endpoint driven over loopback by an SMF in the benchmark's process, on the
//! real fast path: establishment rate, closed-loop latency as ratios to heartbeats, and kernel
//! nanoseconds per packet of PFCP sessions as ratios to tables-file sessions.
//!
//! Builds and runs the `pfcp_bench` binary of the bench crate in release mode (it needs root
//! to load BPF); see that binary for the method and the proofs.

pub fn run(args: &[String]) -> anyhow::Result<()> {
    super::run_bench_bin("pfcp_bench", args, "PFCP benchmark")
}
