//! `cargo xtask`: the project's own set-up, test, demo and benchmark commands.
//!
//! A fresh Debian 12 machine of our kind is two commands from a running demo and a passing test
//! suite: `cargo xtask demo` and `cargo xtask test`. Both run `setup` first, which installs only
//! what is missing and says what it does.

mod bench;
mod chaos;
mod demo;
mod fuzz;
mod image;
mod package;
mod setup;
mod shell;
mod testbed;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "mecgw developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Long differential run: random tables and packets through the XDP fast path and its
    /// reference model, which must agree byte for byte.
    FuzzFastpath {
        /// Random table sets to try (each with 96 packets).
        #[arg(long, default_value_t = 5000)]
        cases: u32,
    },
    /// Install what this machine lacks to build and test mecgw (needs root). Idempotent.
    Setup,
    /// Set up, then run the whole check: fmt, clippy (host and eBPF), cargo-deny, all tests.
    Test,
    /// Set up, build, and run the demo on a network-namespace testbed.
    Demo,
    /// Bring the four-namespace testbed up (and leave it) or remove it.
    Testbed {
        #[arg(value_enum)]
        action: testbed::Action,
    },
    /// Run the slower fault scenarios (full disk, damaged state, …) and report what each did
    /// and what mecgw did (needs root). CI runs each once through `cargo test`.
    Chaos {
        /// How many times larger than the CI run (e.g. fill/free cycles of the full disk).
        #[arg(long, default_value_t = 5)]
        scale: u64,
        /// Run only this suite (a `chaos_*` test target).
        #[arg(long)]
        only: Option<String>,
        /// List the suites and exit.
        #[arg(long)]
        list: bool,
    },
    /// Run a benchmark. Each reports medians and ratios against a baseline measured in the
    /// same run, and never fails on a figure.
    Bench {
        #[command(subcommand)]
        bench: bench::Bench,
    },
    /// Build what mecgw ships as: the OCI image, the Debian package (`deb`, `--test`).
    Package {
        #[command(subcommand)]
        package: package::Package,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::FuzzFastpath { cases } => fuzz::fastpath(cases),
        Task::Setup => setup::run(),
        Task::Test => test(),
        Task::Demo => setup::run().and_then(|()| demo::run()),
        Task::Testbed { action } => testbed::command(action),
        Task::Bench { bench } => bench::run(bench),
        Task::Package { package } => package::run(package),
        Task::Chaos { list: true, .. } => {
            chaos::list();
            Ok(())
        }
        Task::Chaos { scale, only, .. } => chaos::run(scale, only.as_deref()),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The README's test command, and exactly what CI runs.
fn test() -> anyhow::Result<()> {
    setup::run()?;
    shell::step("format check", &["cargo", "fmt", "--all", "--", "--check"])?;
    shell::step(
        "clippy (userspace)",
        &[
            "cargo",
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    shell::step(
        "clippy (eBPF target)",
        &[
            "cargo",
            "+nightly",
            "clippy",
            "--package",
            "mecgw-ebpf",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    // Advisories need the RustSec database from GitHub, which these machines cannot reach.
    shell::step(
        "cargo-deny (licences, sources, duplicate versions)",
        &["cargo", "deny", "check", "licenses", "sources", "bans"],
    )?;
    // Integration tests drive the real `mecgw` binary, so build it first.
    shell::step(
        "build (including the eBPF object)",
        &["cargo", "build", "--workspace", "--bins"],
    )?;
    shell::step("tests", &["cargo", "test", "--workspace"])?;
    println!("xtask: all checks passed");
    Ok(())
}
