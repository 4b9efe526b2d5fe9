//! `cargo xtask bench egress [--batches N] [--items K] [--runs R]`: spool → JetStream
//! throughput of the egress forwarder against a bare async-nats publish-and-ack loop of the
//! same payloads, in the same run (see `bench/src/bin/egress_bench.rs`). Needs `nats-server`
//! (`cargo xtask setup` installs it). Built and run in release mode.

pub fn run(args: &[String]) -> anyhow::Result<()> {
    super::run_bench_bin("egress_bench", args, "egress benchmark")
}
