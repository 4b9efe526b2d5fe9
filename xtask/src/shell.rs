//! Running commands: each is printed before it runs, and a failure names the step.

use std::{
    path::PathBuf,
    process::{Command, Output},
};

use anyhow::{Context as _, bail};

/// Runs `argv` with inherited stdio as a named step; fails if it exits non-zero.
pub fn step(name: &str, argv: &[&str]) -> anyhow::Result<()> {
    println!("==> {name}: {}", argv.join(" "));
    run(argv).with_context(|| format!("step {name:?} failed"))
}

/// Runs `argv` with inherited stdio; fails if it exits non-zero.
pub fn run(argv: &[&str]) -> anyhow::Result<()> {
    let (program, args) = argv.split_first().context("empty command")?;
    let status = Command::new(program)
        .args(args)
        .status()
        .with_context(|| format!("cannot start {program}"))?;
    if !status.success() {
        bail!("`{}` exited with {status}", argv.join(" "));
    }
    Ok(())
}

/// Runs `argv` quietly and returns its output, whatever its exit status.
pub fn capture(argv: &[&str]) -> anyhow::Result<Output> {
    let (program, args) = argv.split_first().context("empty command")?;
    Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot start {program}"))
}

/// True if `argv` runs and exits zero.
pub fn succeeds(argv: &[&str]) -> bool {
    capture(argv).map(|o| o.status.success()).unwrap_or(false)
}

/// The cargo target directory (CARGO_TARGET_DIR, or the workspace's `target/`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}
