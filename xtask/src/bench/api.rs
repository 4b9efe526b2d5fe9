//! `cargo xtask bench api [--rounds N] [--calls N] [--records N] [--batch N]`: the gRPC API
//! over mTLS on loopback: unary p50/p99 and streaming Publish records/s on one connection,
//! each as a ratio to a bare tonic service over the same mTLS measured in the same run.
//!
//! Then the memory of the real `mecgw run` with 100,000 sessions and 5,000 rules, idle and
//! under Publish ingest, and the kernel memory of its BPF maps (needs root; `--memory-rounds 0`
//! skips it, `--memory-only` runs only it).
//!
//! Builds the gateway and runs the `api_bench` binary of the bench crate in release mode; see
//! that binary for the method.

pub fn run(args: &[String]) -> anyhow::Result<()> {
    // The memory phase starts the release `mecgw` beside the benchmark binary.
    crate::shell::build_gateway_and_tools_release()?;
    super::run_bench_bin("api_bench", args, "API benchmark")
}
