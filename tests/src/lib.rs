//! What the integration tests (`tests/tests/`) share: the fixtures that drive the gateway
//! through the interfaces a user has, and the `mecgw` binary they drive.
//!
//! - [`api`]: certificates, the API site and the tables its tests serve, a backend over a
//!   real fast path, mTLS clients;
//! - [`bed`]: two namespaces for `mecgw run` as an operator drives it (config, signals,
//!   the operations port);
//! - [`egress`], [`nats`]: egress items and configurations, a real JetStream server;
//! - [`privacy`]: the privacy plane of `mecgw run` end to end;
//! - [`testbed`] and [`packet`]: the four-namespace testbed and the independent packet code,
//!   from `mecgw-testbed` (re-exported here, so tests have one crate to import from).
//!
//! The benchmarks (`bench/`) use these fixtures too.

pub mod api;
pub mod bed;
pub mod egress;
pub mod nats;
pub mod privacy;

pub use mecgw_testbed as testbed;
pub use mecgw_testbed::{in_netns, packet};

use std::path::PathBuf;

/// Path of the `mecgw` binary built in the same target directory as the running test.
///
/// `cargo xtask test` builds it before running the tests. Tests drive the binary exactly as a
/// user would, so they need it rather than the library.
pub fn mecgw_bin() -> anyhow::Result<PathBuf> {
    // A test executable lives in <target>/<profile>/deps/, a benchmark binary of this crate
    // in <target>/<profile>/ itself; the gateway's binary in <target>/<profile>/.
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow::anyhow!("cannot locate the target directory from {exe:?}"))?;
    let profile_dir = if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent()
            .ok_or_else(|| anyhow::anyhow!("cannot locate the target directory from {exe:?}"))?
    } else {
        dir
    };
    let bin = profile_dir.join("mecgw");
    if !bin.exists() {
        anyhow::bail!(
            "{} does not exist: build it first with `cargo build -p mecgw` (cargo xtask test does)",
            bin.display()
        );
    }
    Ok(bin)
}

/// The `[n3]` and `[local]` sections the table-driven tests share (BPF_PROG_TEST_RUN needs no
/// real interfaces, so the indexes and MACs are arbitrary).
pub const TEST_INTERFACES: &str = r#"
[n3]
ifindex = 11
mac = "02:00:00:00:03:01"
next_hop_mac = "02:00:00:00:03:02"
ipv4 = "198.18.0.1"
mtu = 1500

[local]
ifindex = 12
mac = "02:00:00:00:04:01"
next_hop_mac = "02:00:00:00:04:02"
"#;

/// A tables file: [`TEST_INTERFACES`] followed by `entries` (sessions, rules, defaults).
pub fn tables_with(entries: &str) -> String {
    format!("{TEST_INTERFACES}{entries}")
}
