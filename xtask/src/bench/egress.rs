//! `cargo xtask bench egress [--batches N] [--items K] [--runs R]`: spool → JetStream
//! throughput of the egress forwarder against a bare async-nats publish-and-ack loop of the
//! same payloads, in the same run (see `tests/src/bin/egress_bench.rs`). Needs `nats-server`
//! (`cargo xtask setup` installs it). Built and run in release mode.

use crate::shell;

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut argv = vec![
        "cargo",
        "run",
        "--quiet",
        "--release",
        "-p",
        "mecgw-tests",
        "--bin",
        "egress_bench",
        "--",
    ];
    argv.extend(args.iter().map(String::as_str));
    shell::step("bench egress", &argv)
}
