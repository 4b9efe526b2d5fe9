//! Reports of the chaos scenarios (`tests/tests/chaos_*.rs`): what the test did to mecgw,
//! what mecgw did, and whether that is what it must do. Each scenario prints one line
//! `CHAOS {json}` on stdout, which `cargo xtask chaos` collects into its table; under plain
//! `cargo test` the lines are captured like any output. A scenario whose test panics before
//! [`Scenario::pass`] reports itself as failed.
//!
//! [`scale`] is 1 under `cargo test` (the bounded CI run) and larger under `cargo xtask
//! chaos` (`MECGW_CHAOS_SCALE`), for scenarios that can repeat or grow their fault.

use serde_json::json;

/// The environment variable `cargo xtask chaos` sets to run the scenarios at a larger scale.
pub const SCALE_VAR: &str = "MECGW_CHAOS_SCALE";

/// How many times larger than the CI run a scenario should be (1 in CI).
pub fn scale() -> u64 {
    std::env::var(SCALE_VAR)
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n >= 1)
        .unwrap_or(1)
}

/// One scenario's report.
pub struct Scenario {
    name: String,
    did: Vec<String>,
    saw: Vec<String>,
    done: bool,
}

impl Scenario {
    /// Starts the report of scenario `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            did: Vec::new(),
            saw: Vec::new(),
            done: false,
        }
    }

    /// Something the test did to mecgw (the fault).
    pub fn did(&mut self, what: impl Into<String>) {
        self.did.push(what.into());
    }

    /// Something mecgw did in answer, as observed (after it was checked).
    pub fn saw(&mut self, what: impl Into<String>) {
        self.saw.push(what.into());
    }

    /// Every check passed: prints the report.
    pub fn pass(mut self) {
        self.print(true);
        self.done = true;
    }

    fn print(&self, pass: bool) {
        println!(
            "CHAOS {}",
            json!({"scenario": self.name, "did": self.did, "mecgw": self.saw, "pass": pass})
        );
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        if !self.done {
            self.print(false);
        }
    }
}
