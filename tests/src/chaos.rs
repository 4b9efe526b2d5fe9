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

/// Driving `mecgw run` through a fault: publishing, the daemon's log and its exit.
pub mod daemon {
    // Test support: a failed setup step is a failed scenario.
    #![allow(clippy::expect_used)]

    use std::io::Read as _;
    use std::process::ExitStatus;
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    use crate::api::Site;
    use crate::bed::{Bed, Daemon};
    use crate::privacy::{self, APP};

    /// One Publish call per entry of `calls` (each a list of sequence numbers), in order, on
    /// one mTLS channel as [`APP`]; the outcome of each.
    pub fn publish(bed: &Bed, site: &Site, calls: &[Vec<u64>]) -> Vec<Result<(), tonic::Status>> {
        crate::in_netns(&bed.mec, || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async {
                let app = site.app(APP).expect("the app's certificate");
                let channel = privacy::connect_app(site, &app)
                    .await
                    .expect("connecting to the API");
                let mut out = Vec::new();
                for call in calls {
                    // A safety net only: a call the daemon never answers counts as failed.
                    let r = tokio::time::timeout(
                        Duration::from_secs(20),
                        privacy::publish(channel.clone(), call),
                    )
                    .await
                    .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("no answer in 20 s")));
                    out.push(r);
                }
                out
            })
        })
        .expect("entering the daemon's namespace")
    }

    /// Reads the daemon's log in the background (a full pipe must never block it).
    pub fn log(d: &mut Daemon) -> JoinHandle<String> {
        let mut stderr = d.child.stderr.take().expect("the daemon's stderr");
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        })
    }

    /// Waits for the daemon to exit on its own (at most `timeout`).
    pub fn exit(d: &mut Daemon, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = d.child.try_wait().expect("waiting for mecgw") {
                return status;
            }
            assert!(
                start.elapsed() < timeout,
                "mecgw did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
