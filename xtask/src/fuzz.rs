//! `cargo xtask fuzz-fastpath [--cases N]`: a long differential run of the XDP fast path
//! against its reference model (the same test CI runs with fewer cases), in release mode.

use anyhow::{Context, ensure};

pub fn fastpath(cases: u32) -> anyhow::Result<()> {
    println!("xtask: {cases} random table sets x 96 packets through kernel and model");
    let status = mecgw_cmd::command(env!("CARGO"))
        .args([
            "test",
            "--release",
            "-p",
            "mecgw-tests",
            "--test",
            "fastpath_differential",
            "--",
            "--nocapture",
        ])
        .env("MECGW_DIFF_CASES", cases.to_string())
        .status()
        .context("running cargo test")?;
    ensure!(
        status.success(),
        "kernel and model disagreed (the seed is printed above; MECGW_DIFF_SEED=<seed> replays it)"
    );
    Ok(())
}
