//! Figures from BPF_PROG_TEST_RUN, shared by the fast-path and PFCP benchmarks: nanoseconds
//! per packet as the kernel reports them, and the reason counter that proves which path ran.

use std::time::Duration;

use mecgw::datapath::{FastPath, Reason};

use crate::median;

/// A duration in nanoseconds.
pub fn ns(d: Duration) -> f64 {
    d.as_nanos() as f64
}

/// Median over `runs` calls of `run(repeat)`, in nanoseconds.
pub fn batch(
    runs: usize,
    repeat: u32,
    mut run: impl FnMut(u32) -> anyhow::Result<Duration>,
) -> anyhow::Result<f64> {
    let mut v = Vec::with_capacity(runs);
    for _ in 0..runs {
        v.push(ns(run(repeat)?));
    }
    Ok(median(v))
}

/// Packets the programs have counted under `reason` (all CPUs).
pub fn reason_count(fp: &FastPath, reason: Reason) -> anyhow::Result<u64> {
    Ok(fp
        .reason_counters()?
        .into_iter()
        .find(|(r, _)| *r == reason)
        .map_or(0, |(_, c)| c.packets))
}
