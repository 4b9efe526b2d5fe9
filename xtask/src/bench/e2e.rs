//! `cargo xtask bench e2e [--runs N] [--flat-ms MS] [--no-echo] [--step-ms MS] [--loss F]
//! [--blast PACKETS]`: packets per second at kernel speed (live-frames sender, XDP sink) and
//! RTT p50/p99 through the echo, for native XDP, generic XDP and the userspace datapath,
//! medians of several runs, ratios to the userspace datapath.
//!
//! Builds the gateway and the testbed tools in release mode and runs the `e2e_bench` binary
//! of the bench crate (it needs root for the namespaces); see that binary for the method.

pub fn run(args: &[String]) -> anyhow::Result<()> {
    crate::shell::build_gateway_and_tools_release()?;
    super::run_bench_bin("e2e_bench", args, "end-to-end benchmark")
}
