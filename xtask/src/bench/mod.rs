//! `cargo xtask bench NAME`: benchmarks. Each reports medians and ratios against a baseline
//! measured in the same run, and never fails on a figure (these machines are shared and noisy).
//! Each benchmark lives in its own module here and exposes `run(args)`.

use anyhow::bail;

/// Names of the benchmarks, for `--help` and errors.
pub const NAMES: &[&str] = &[];

pub fn run(name: &str, args: &[String]) -> anyhow::Result<()> {
    let _ = args;
    bail!(
        "unknown benchmark {name:?}; available: {}",
        if NAMES.is_empty() { "none yet" } else { "" }.to_string() + &NAMES.join(", ")
    )
}
