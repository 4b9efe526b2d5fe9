//! Helpers shared by the integration tests: locating the `mecgw` binary, and (later)
//! network-namespace guards and process runners.

pub mod api;
pub mod egress;
pub mod nats;

pub mod packet;

use std::path::PathBuf;

pub mod packets;

/// Path of the `mecgw` binary built in the same target directory as the running test.
///
/// `cargo xtask test` builds it before running the tests. Tests drive the binary exactly as a
/// user would, so they need it rather than the library.
pub fn mecgw_bin() -> anyhow::Result<PathBuf> {
    // The test executable lives in <target>/<profile>/deps/; the binary in <target>/<profile>/.
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .ok_or_else(|| anyhow::anyhow!("cannot locate the target directory from {exe:?}"))?;
    let bin = profile_dir.join("mecgw");
    if !bin.exists() {
        anyhow::bail!(
            "{} does not exist: build it first with `cargo build -p mecgw` (cargo xtask test does)",
            bin.display()
        );
    }
    Ok(bin)
}
