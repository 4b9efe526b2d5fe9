//! Helpers shared by the integration tests: locating the `mecgw` binary, and (later)
//! network-namespace guards and process runners.

pub mod api;
pub mod bed;
pub mod egress;
pub mod nats;

pub mod packet;
pub mod privacy;
pub mod procmem;
pub mod scale;
pub mod testbed;

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

/// Runs `f` on a thread that has entered network namespace `name` (from `ip netns add`).
/// Sockets that `f` creates stay in that namespace; the calling thread's namespace is
/// untouched.
pub fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
    use std::os::fd::AsRawFd as _;
    let ns = std::fs::File::open(format!("/run/netns/{name}"))
        .map_err(|e| anyhow::anyhow!("network namespace {name}: {e}"))?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                // SAFETY: setns(2) on a namespace fd we own, for this thread only; no memory
                // is shared with the kernel.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    anyhow::bail!("setns {name}: {}", std::io::Error::last_os_error());
                }
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the thread in {name} panicked"))?
    })
}

/// Parses a decimal or `0x`-prefixed hexadecimal u32 (TEIDs on the tools' command lines).
pub fn parse_u32(s: &str) -> Result<u32, String> {
    match s.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    }
    .map_err(|e| format!("{s:?}: {e}"))
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
