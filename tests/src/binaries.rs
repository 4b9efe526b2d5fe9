//! The binaries the tests drive as a user would: `mecgw`, and the testbed tools
//! (`mecgw-gnbsim`, `mecgw-edge`, `mecgw-core`), which live in other packages of the
//! workspace, so `cargo test -p mecgw-tests` alone would not rebuild them.
//!
//! The first call in a test process runs `cargo build -p mecgw -p mecgw-testbed --bins` in
//! the profile of the running executable and takes the paths cargo reports. When nothing
//! changed that is a no-op of about a second; when the gateway's sources changed, the tests
//! drive the new gateway, never a stale one. The build's own output (progress, errors) goes
//! to stderr.
//!
//! A benchmark comparing two builds in one session sets `MECGW_BIN_DIR` to the directory of
//! the other build's binaries (e.g. a copy of `target/release` at the baseline commit): they
//! are then taken as they are, without a build. Tests never set it.

use std::{
    io::BufRead as _,
    path::{Path, PathBuf},
    process::Stdio,
    sync::OnceLock,
};

use anyhow::{Context as _, bail};

/// Path of the `mecgw` binary, built fresh (see the module doc).
pub fn mecgw_bin() -> anyhow::Result<PathBuf> {
    Ok(bin_dir()?.join("mecgw"))
}

/// The directory holding `mecgw` and the testbed tools, built fresh (see the module doc).
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| match std::env::var_os("MECGW_BIN_DIR") {
            Some(dir) => Ok(PathBuf::from(dir)),
            None => build().map_err(|e| format!("{e:#}")),
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// The cargo profile the running executable was built in, from its directory:
/// `<target>/<profile dir>/deps/<test>` for a test, `<target>/<profile dir>/<bin>` for a
/// benchmark.
fn profile() -> anyhow::Result<String> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent();
    if dir.and_then(Path::file_name).is_some_and(|n| n == "deps") {
        dir = dir.and_then(Path::parent);
    }
    let name = dir
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .with_context(|| format!("no profile directory above {}", exe.display()))?;
    // The dev profile's directory is `debug`; every other profile's is its name.
    Ok(if name == "debug" { "dev" } else { name }.to_string())
}

fn build() -> anyhow::Result<PathBuf> {
    let profile = profile()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    // The environment a shell has (mecgw-cmd): with the variables cargo sets for this test,
    // this build and the next `cargo test` would each rebuild what the other built.
    let mut command = mecgw_cmd::command(&cargo);
    let mut child = command
        .args(["build", "--profile", &profile, "--bins"])
        .args(["--package", "mecgw", "--package", "mecgw-testbed"])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--message-format=json-render-diagnostics")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", Path::new(&cargo).display()))?;
    let mut mecgw = None;
    if let Some(out) = child.stdout.take() {
        for line in std::io::BufReader::new(out).lines() {
            let message: serde_json::Value = match serde_json::from_str(&line?) {
                Ok(m) => m,
                Err(_) => continue,
            };
            if message["reason"] == "compiler-artifact"
                && message["target"]["name"] == "mecgw"
                && let Some(exe) = message["executable"].as_str()
            {
                mecgw = Some(PathBuf::from(exe));
            }
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!(
            "`cargo build --profile {profile} -p mecgw -p mecgw-testbed --bins` failed \
             ({status}); its errors are above"
        );
    }
    let mecgw = mecgw.context("cargo built no mecgw executable")?;
    mecgw
        .parent()
        .map(Path::to_path_buf)
        .with_context(|| format!("no directory above {}", mecgw.display()))
}
