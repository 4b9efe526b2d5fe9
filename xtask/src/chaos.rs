//! `cargo xtask chaos`: the slower fault scenarios (a full disk, damaged or vanished state,
//! …), run at a larger scale than CI runs them, with a report of what each scenario did to
//! mecgw, what mecgw did, and whether that is what it must do.
//!
//! A scenario is a test in a target `tests/tests/chaos_*.rs` of the mecgw-tests crate that
//! reports through `mecgw_tests::chaos::Scenario`: one `CHAOS {json}` line on stdout with
//! `scenario`, `did`, `mecgw` and `pass`. Plain `cargo test` runs every scenario once at
//! scale 1 (the bounded subset CI runs); this command runs them one at a time with
//! `MECGW_CHAOS_SCALE` set, so that scenarios that can repeat or grow their fault do.
//!
//! To add scenarios (PFCP floods, …): write a
//! `tests/tests/chaos_<area>.rs` whose tests use `Scenario`, and add its target to
//! [`SUITES`]. Nothing else here needs to change.

use std::process::Command;

use anyhow::{Context as _, bail};

use crate::shell;

/// One test target of scenarios.
struct Suite {
    /// The test target in the mecgw-tests crate.
    target: &'static str,
    /// What its scenarios do, for `--list`.
    about: &'static str,
}

/// Every suite, in the order they run.
const SUITES: &[Suite] = &[
    Suite {
        target: "chaos_disk_full",
        about: "the state directory's file system fills up under load and frees again (tmpfs)",
    },
    Suite {
        target: "chaos_state",
        about: "spool, audit log and GTP-U restart counter damaged or vanished while mecgw is stopped",
    },
    Suite {
        target: "chaos_slow_clients",
        about: "slow-loris clients on the operations port; gRPC streams opened and never read",
    },
    // To come: PFCP (floods).
];

/// The variable the scenarios read their scale from (`mecgw_tests::chaos::SCALE_VAR`).
const SCALE_VAR: &str = "MECGW_CHAOS_SCALE";

/// What one scenario reported.
struct Outcome {
    suite: &'static str,
    scenario: String,
    did: Vec<String>,
    mecgw: Vec<String>,
    pass: bool,
}

/// Lists the suites.
pub fn list() {
    for s in SUITES {
        println!("{:<20} {}", s.target, s.about);
    }
}

/// Runs the suites (all, or the one named `only`) at `scale` and prints the report; fails
/// if a scenario failed or a suite did not report.
pub fn run(scale: u64, only: Option<&str>) -> anyhow::Result<()> {
    if scale == 0 {
        bail!("--scale must be at least 1");
    }
    let suites: Vec<&Suite> = SUITES
        .iter()
        .filter(|s| only.is_none_or(|o| o == s.target))
        .collect();
    if suites.is_empty() {
        bail!(
            "no chaos suite {:?}; `cargo xtask chaos --list` lists them",
            only.unwrap_or_default()
        );
    }
    // The scenarios drive the real binary.
    shell::step("build mecgw", &["cargo", "build", "-p", "mecgw", "--bins"])?;
    let mut outcomes = Vec::new();
    let mut broken = Vec::new();
    for suite in suites {
        println!(
            "==> chaos {} (scale {scale}): {}",
            suite.target, suite.about
        );
        let out = Command::new("cargo")
            .args(["test", "-p", "mecgw-tests", "--test", suite.target, "--"])
            .args(["--nocapture", "--test-threads=1"])
            .env(SCALE_VAR, scale.to_string())
            .output()
            .with_context(|| format!("running the {} scenarios", suite.target))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let reported = parse(suite.target, &stdout, &mut outcomes);
        if !out.status.success() || reported == 0 {
            // Show why: the end of the test output (panics go to stdout under libtest).
            let tail: Vec<&str> = stdout.lines().rev().take(40).collect();
            for line in tail.into_iter().rev() {
                println!("    | {line}");
            }
            for line in String::from_utf8_lossy(&out.stderr).lines().rev().take(10) {
                println!("    ! {line}");
            }
            broken.push(suite.target);
        }
    }
    report(&outcomes);
    let failed = outcomes.iter().filter(|o| !o.pass).count();
    if failed > 0 || !broken.is_empty() {
        bail!(
            "{failed} scenario(s) failed; suite(s) that failed or did not report: {}",
            if broken.is_empty() {
                "none".to_string()
            } else {
                broken.join(", ")
            }
        );
    }
    Ok(())
}

/// Collects the `CHAOS {json}` lines of a suite's output; returns how many there were.
fn parse(suite: &'static str, stdout: &str, outcomes: &mut Vec<Outcome>) -> usize {
    let mut n = 0;
    for line in stdout.lines() {
        // libtest may print a progress mark before the line.
        let Some(json) = line.find("CHAOS {").map(|i| &line[i + "CHAOS ".len()..]) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
            continue;
        };
        let strings = |key: &str| -> Vec<String> {
            v[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        outcomes.push(Outcome {
            suite,
            scenario: v["scenario"].as_str().unwrap_or("?").to_string(),
            did: strings("did"),
            mecgw: strings("mecgw"),
            pass: v["pass"].as_bool().unwrap_or(false),
        });
        n += 1;
    }
    n
}

fn report(outcomes: &[Outcome]) {
    println!("\n---------------- chaos report ----------------");
    for o in outcomes {
        println!(
            "{} {} ({})",
            if o.pass { "PASS" } else { "FAIL" },
            o.scenario,
            o.suite
        );
        for d in &o.did {
            println!("    did:   {d}");
        }
        for m in &o.mecgw {
            println!("    mecgw: {m}");
        }
    }
    let passed = outcomes.iter().filter(|o| o.pass).count();
    println!(
        "chaos: {} scenario(s), {passed} passed, {} failed",
        outcomes.len(),
        outcomes.len() - passed
    );
}
