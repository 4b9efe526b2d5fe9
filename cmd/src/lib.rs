//! Running external commands (`ip`, `ethtool`, `cargo`, `apt-get`, …) for the developer
//! tools: `cargo xtask` and the testbed (namespaces, veth pairs, the tools it starts).
//!
//! It owns how a command is started and how its failure reads: every error names the
//! command line and, for the quiet forms, what the command wrote to stderr. It never runs a
//! shell: arguments reach the program as given.
//!
//! A command gets the environment a shell has ([`command`]): without the variables cargo
//! sets for the package it is running (xtask, a test, a benchmark). Otherwise a `cargo build`
//! started from here would differ from one typed in a shell: build scripts that watch one of
//! them (ring watches `CARGO_MANIFEST_DIR`) would rebuild, and so would the next build from
//! the shell, back and forth.
//!
//! Its own crate so that xtask, which stays light on dependencies, and the testbed share it.
#![forbid(unsafe_code)]

use std::{
    ffi::OsStr,
    process::{Command, Output},
};

use anyhow::{Context as _, bail};

/// Runs `argv` with inherited stdio; fails if it exits non-zero.
pub fn run(argv: &[&str]) -> anyhow::Result<()> {
    let (mut command, program) = command_line(argv)?;
    let status = command
        .status()
        .with_context(|| format!("cannot start {program}"))?;
    if !status.success() {
        bail!("`{}` exited with {status}", argv.join(" "));
    }
    Ok(())
}

/// Runs `argv` quietly and returns its output, whatever its exit status.
pub fn capture(argv: &[&str]) -> anyhow::Result<Output> {
    let (mut command, program) = command_line(argv)?;
    command
        .output()
        .with_context(|| format!("cannot start {program}"))
}

/// Runs `argv` quietly; fails, with its stderr, if it exits non-zero.
pub fn run_quiet(argv: &[&str]) -> anyhow::Result<Output> {
    let out = capture(argv)?;
    if !out.status.success() {
        bail!(
            "`{}` exited with {}: {}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// True if `argv` runs and exits zero.
pub fn succeeds(argv: &[&str]) -> bool {
    capture(argv).is_ok_and(|o| o.status.success())
}

/// A command for `program` with the environment a shell has (see the crate doc): for
/// callers that set up stdio or arguments themselves.
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new(program);
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(set_by_cargo_for_a_package) {
            c.env_remove(name);
        }
    }
    c
}

/// The variables cargo sets for the package it runs (`cargo run`, `cargo test`), not those a
/// user sets to configure cargo (`CARGO_HOME`, `CARGO_TARGET_DIR`, `CARGO_PROFILE_*`, …).
fn set_by_cargo_for_a_package(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || [
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_PATH",
            "CARGO_CRATE_NAME",
            "CARGO_BIN_NAME",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
            "CARGO_RUSTC_CURRENT_DIR",
        ]
        .contains(&name)
}

/// The command for `argv`, and its program's name.
fn command_line<'a>(argv: &[&'a str]) -> anyhow::Result<(Command, &'a str)> {
    let (program, args) = argv.split_first().context("empty command")?;
    let mut c = command(program);
    c.args(args);
    Ok((c, program))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_failure_names_the_command_and_its_stderr() {
        assert!(succeeds(&["true"]));
        assert!(!succeeds(&["false"]));
        assert!(!succeeds(&["/nonexistent/mecgw-cmd-test"]));
        let e = run_quiet(&["sh", "-c", "echo oops >&2; exit 3"]).unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("`sh -c echo oops >&2; exit 3` exited with"),
            "{e}"
        );
        assert!(e.contains("oops"), "{e}");
        assert!(run(&[]).is_err());
    }

    #[test]
    fn only_the_variables_cargo_sets_for_a_package_are_removed() {
        for name in ["CARGO_MANIFEST_DIR", "CARGO_PKG_NAME", "CARGO_CRATE_NAME"] {
            assert!(set_by_cargo_for_a_package(name), "{name}");
        }
        for name in [
            "CARGO",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_PROFILE_DEV_DEBUG",
        ] {
            assert!(!set_by_cargo_for_a_package(name), "{name}");
        }
        // `cargo test` sets CARGO_MANIFEST_DIR for this test; the child must not see it.
        let out = run_quiet(&["sh", "-c", "echo \"${CARGO_MANIFEST_DIR-unset}\""]).unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "unset");
    }
}
