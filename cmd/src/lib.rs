//! Running external commands (`ip`, `ethtool`, `cargo`, `apt-get`, …) for the developer
//! tools: `cargo xtask` and the testbed (namespaces, veth pairs, the tools it starts).
//!
//! It owns how a command is started and how its failure reads: every error names the
//! command line and, for the quiet forms, what the command wrote to stderr. It never runs a
//! shell: arguments reach the program as given.
//!
//! Its own crate so that xtask, which stays light on dependencies, and the testbed share it.
#![forbid(unsafe_code)]

use std::process::{Command, Output};

use anyhow::{Context as _, bail};

/// Runs `argv` with inherited stdio; fails if it exits non-zero.
pub fn run(argv: &[&str]) -> anyhow::Result<()> {
    let (mut command, program) = command(argv)?;
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
    let (mut command, program) = command(argv)?;
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

/// The command for `argv`, and its program's name.
fn command<'a>(argv: &[&'a str]) -> anyhow::Result<(Command, &'a str)> {
    let (program, args) = argv.split_first().context("empty command")?;
    let mut c = Command::new(program);
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
}
