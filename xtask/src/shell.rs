//! Running commands: each step is printed before it runs, and a failure names the step.
//! Starting the commands is `mecgw-cmd`'s, shared with the testbed.

use std::path::PathBuf;

use anyhow::Context as _;
pub use mecgw_cmd::{capture, run, succeeds};

/// Runs `argv` with inherited stdio as a named step; fails if it exits non-zero.
pub fn step(name: &str, argv: &[&str]) -> anyhow::Result<()> {
    println!("==> {name}: {}", argv.join(" "));
    run(argv).with_context(|| format!("step {name:?} failed"))
}

/// The cargo target directory (CARGO_TARGET_DIR, or the workspace's `target/`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// Builds `mecgw` and the testbed tools in release mode and returns the directory they are
/// in. Every task that runs the gateway builds exactly this set: the tests' own build of
/// the binaries they drive (tests/src/binaries.rs) asks for the same packages, so cargo
/// resolves the same features and never builds a second copy of the gateway.
pub fn build_gateway_and_tools_release() -> anyhow::Result<PathBuf> {
    step(
        "build mecgw and the testbed tools (release)",
        &[
            "cargo",
            "build",
            "--release",
            "--package",
            "mecgw",
            "--package",
            "mecgw-testbed",
            "--bins",
        ],
    )?;
    Ok(target_dir().join("release"))
}
