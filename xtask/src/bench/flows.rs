//! `cargo xtask bench flows [--flows N] [--rounds N] [--interval SECS]`: the flow harvest at
//! site scale (default 1,000,000 flows per window): wall and CPU time of a harvest of a full
//! window against reading it key by key (the previous harvest) in the same run, the share of
//! a core at the harvest interval, and the kernel memory per flow (needs root).
//!
//! Runs the `flow_harvest` binary of the bench crate in release mode; see that binary for
//! the method.

pub fn run(args: &[String]) -> anyhow::Result<()> {
    super::run_bench_bin("flow_harvest", args, "flow-harvest benchmark")
}
