//! `cargo xtask package …`: what mecgw ships as.
//!
//! - `image [--test]`: the OCI image ([`crate::image`]).
//! - `deb [--test]`: the Debian package, built by cargo-deb from `[package.metadata.deb]` in
//!   gateway/Cargo.toml (binary, systemd unit, example configuration as conffiles, the
//!   postinst that creates the `mecgw` user), then checked by lintian. `--test` installs it
//!   with dpkg into a fresh Debian 12 chroot (mmdebstrap, about a minute) and runs
//!   `mecgw --version` and `mecgw policy check` on the shipped example policy there. Not part
//!   of `cargo xtask test`: it needs cargo-deb, lintian and mmdebstrap, which only this
//!   command installs (`setup::package_tools`).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::{setup, shell};

#[derive(clap::Subcommand)]
pub enum Package {
    /// Build the OCI image (buildah, FROM scratch) and save it under target/.
    Image {
        /// Then run it with podman on the testbed.
        #[arg(long)]
        test: bool,
    },
    /// Build target/debian/mecgw_<version>_<arch>.deb and run lintian on it.
    Deb {
        /// Then install it into a fresh Debian 12 chroot and run mecgw there.
        #[arg(long)]
        test: bool,
    },
}

pub fn run(package: Package) -> anyhow::Result<()> {
    match package {
        Package::Image { test } => crate::image::run(test),
        Package::Deb { test } => {
            setup::run()?;
            setup::package_tools()?;
            let deb = build_deb()?;
            lintian(&deb)?;
            if test {
                test_in_chroot(&deb)?;
            }
            let size = std::fs::metadata(&deb).map(|m| m.len()).unwrap_or(0);
            println!(
                "xtask: package {} ({} KiB)",
                deb.display(),
                size.div_ceil(1024)
            );
            Ok(())
        }
    }
}

/// Runs cargo-deb (which builds mecgw in release mode) and returns the .deb's path.
fn build_deb() -> anyhow::Result<PathBuf> {
    let out_dir = shell::target_dir().join("debian");
    let out = out_dir.to_string_lossy().into_owned();
    println!("==> cargo-deb: cargo deb -p mecgw --output {out}");
    let output = mecgw_cmd::command("cargo")
        .args(["deb", "-p", "mecgw", "--output", &out])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot start cargo deb")?;
    if !output.status.success() {
        bail!("cargo deb failed ({}); its errors are above", output.status);
    }
    // cargo-deb prints the path of the package it wrote as its last line.
    let stdout = String::from_utf8_lossy(&output.stdout);
    let deb = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .with_context(|| format!("cargo deb named no .deb in its output: {stdout}"))?;
    Ok(deb)
}

/// lintian's findings are printed; errors fail the command, warnings are counted. Two remain,
/// knowingly: `no-manual-page` (mecgw has `--help`, no man page yet) and
/// `initial-upload-closes-no-bugs` (the package is not uploaded to Debian, so no ITP bug).
fn lintian(deb: &Path) -> anyhow::Result<()> {
    let deb = deb.to_string_lossy();
    println!("==> lintian: lintian --info {deb}");
    let out = shell::capture(&["lintian", "--info", &deb])?;
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    let errors = text.lines().filter(|l| l.starts_with("E: ")).count();
    let warnings = text.lines().filter(|l| l.starts_with("W: ")).count();
    println!("    lintian: {errors} error(s), {warnings} warning(s)");
    if errors > 0 {
        bail!("lintian found {errors} error(s) in {deb}");
    }
    Ok(())
}

/// Installs `deb` into a fresh Debian 12 (minbase) chroot and runs mecgw there.
fn test_in_chroot(deb: &Path) -> anyhow::Result<()> {
    let work = shell::target_dir().join("debian").join("chroot-test");
    // A previous run's chroot is thrown away: each test starts from a fresh system.
    if work.exists() {
        std::fs::remove_dir_all(&work)
            .with_context(|| format!("removing the old chroot {}", work.display()))?;
    }
    std::fs::create_dir_all(&work)?;
    let root = work.join("root");
    let root_s = root.to_string_lossy().into_owned();
    shell::step(
        "chroot: mmdebstrap a minimal Debian 12",
        &[
            "mmdebstrap",
            "--variant=minbase",
            "--include=adduser",
            "bookworm",
            &root_s,
        ],
    )?;
    let inside = root.join("tmp").join("mecgw.deb");
    std::fs::copy(deb, &inside)
        .with_context(|| format!("copying {} into the chroot", deb.display()))?;
    let result = (|| {
        shell::step(
            "chroot: dpkg -i mecgw.deb",
            &["chroot", &root_s, "dpkg", "-i", "/tmp/mecgw.deb"],
        )?;
        expect_output(&root_s, &["mecgw", "--version"], "mecgw ")?;
        expect_output(
            &root_s,
            &[
                "mecgw",
                "policy",
                "check",
                "/etc/mecgw/policies/flow-records.yaml",
            ],
            ": ok",
        )?;
        // The postinst made the system user; the unit and conffiles are where they belong.
        expect_output(&root_s, &["getent", "passwd", "mecgw"], "/usr/sbin/nologin")?;
        expect_output(
            &root_s,
            &["dpkg-query", "--showformat=${Conffiles}", "-W", "mecgw"],
            "/etc/mecgw/mecgw.toml",
        )?;
        expect_output(
            &root_s,
            &["ls", "/lib/systemd/system/mecgw.service"],
            "mecgw.service",
        )?;
        shell::step(
            "chroot: dpkg --purge mecgw",
            &["chroot", &root_s, "dpkg", "--purge", "mecgw"],
        )
    })();
    // The chroot is ~200 MB: keep it only when the test failed, to look into.
    if result.is_ok() {
        std::fs::remove_dir_all(&work)
            .with_context(|| format!("removing the chroot {}", work.display()))?;
        println!("xtask: the package installs and runs in a fresh Debian 12 chroot");
    } else {
        println!("xtask: the chroot is kept for a look: {root_s}");
    }
    result
}

/// Runs `argv` in the chroot at `root`; fails unless it succeeds and prints `want`.
fn expect_output(root: &str, argv: &[&str], want: &str) -> anyhow::Result<()> {
    let mut full = vec!["chroot", root];
    full.extend(argv);
    println!("==> chroot: {}", argv.join(" "));
    let out = shell::capture(&full)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    if !out.status.success() || !stdout.contains(want) {
        bail!(
            "`{}` in the chroot: {} (wanted {want:?} in its output); stderr: {}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
