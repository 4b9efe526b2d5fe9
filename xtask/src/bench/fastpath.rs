//! `cargo xtask bench fastpath [--repeat N] [--runs N] [--calls N]`: kernel nanoseconds per
//! packet of the XDP fast path, as ratios to an empty XDP program measured in the same run.
//!
//! Builds and runs the `fastpath_bench` binary of the bench crate in release mode (it needs
//! root to load BPF); see that binary for the method and the counter proof.

pub fn run(args: &[String]) -> anyhow::Result<()> {
    super::run_bench_bin("fastpath_bench", args, "fast-path benchmark")
}
